"""The stages' entry point (user errors as one line, exit code 2, tracebacks on request) and the
input and code digests that decide whether a checkpoint may be resumed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.config import ConfigError
from pipeline.core.errors import UserError
from pipeline.core.identity import file_digest, input_identity
from pipeline.core.runtime import entry_point

ROOT = Path(__file__).resolve().parents[2]


def _run(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        entry_point(main, argv)
    return done.value.code, capsys.readouterr().err


def test_a_user_error_is_one_line_and_exit_code_2(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMDISTILL_DEBUG", raising=False)

    def main(argv: list[str]) -> None:
        raise ConfigError("distill.train.lr: must be > 0, got -1.0")

    code, err = _run(main, [], capsys)
    assert code == 2 and err == "error: distill.train.lr: must be > 0, got -1.0\n"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def main(argv: list[str]) -> None:
        seen.append(argv)
        raise ConfigError("bad")

    if how == "env":
        monkeypatch.setenv("MMDISTILL_DEBUG", "1")
    else:
        monkeypatch.delenv("MMDISTILL_DEBUG", raising=False)
    with pytest.raises(ConfigError, match="bad"):
        entry_point(main, ["x", "--debug"] if how == "flag" else ["x"])
    assert seen == [["x"]]  # --debug is the entry point's, not the stage's


def test_other_errors_keep_their_traceback_and_success_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(argv: list[str]) -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        entry_point(broken, [])
    assert _run(lambda argv: None, [], capsys) == (0, "")


def test_a_stage_prints_one_line_through_python_m(tmp_path: Path) -> None:
    """The command DVC runs: no traceback, exit code 2, the message on stderr."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text().replace(
        "dataset: synthetic_sentiment", "dataset: mosii", 1))
    done = subprocess.run([sys.executable, "-m", "pipeline.prepare"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: dataset: unknown value 'mosii'. Did you mean 'mosi'? Available: "
                                        "['synthetic_sentiment', 'synthetic_av', 'mosi', 'mosei', 'sims', 'csv', "
                                        "'vegas', 'vegas_features']"]


def test_a_user_error_in_a_seed_worker_reaches_the_stage() -> None:
    from pipeline.core.runtime import run_seeds

    def train(seed: int) -> None:
        if seed == 1:
            raise ConfigError("distill.student.pretrained '/x' is not a directory")

    with pytest.raises(UserError, match=r"^(seed 1: )?distill\.student\.pretrained '/x' is not a directory$"):
        run_seeds(train, [0, 1], "cpu")


# --------------------------------------------------------------------------- identity


def test_input_identity_follows_content_not_time(tmp_path: Path) -> None:
    a = tmp_path / "a.h5"
    a.write_bytes(b"features v1")
    first = input_identity([a])
    assert list(first) == [f"input:{a}"]
    a.write_bytes(b"features v1")  # rewritten, same bytes
    assert input_identity([a]) == first
    a.write_bytes(b"features v2")
    assert input_identity([a]) != first
    assert file_digest(a) == input_identity([a])[f"input:{a}"]


def test_code_version_covers_the_stage_import_closure_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage's code digest changes with a module it imports, not with one it does not import."""
    import shutil

    from pipeline.core import identity

    package = tmp_path / "pipeline"
    shutil.copytree(identity.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(identity, "PACKAGE", package)

    def versions() -> tuple[str, str]:
        return identity.code_version("pipeline.prepare"), identity.code_version("pipeline.report")

    prepare, report = versions()
    with (package / "evaluation" / "report.py").open("a") as f:
        f.write("\n# an edit\n")
    assert versions()[0] == prepare and versions()[1] != report  # prepare does not import the report
    with (package / "data" / "datasets.py").open("a") as f:
        f.write("\n# an edit\n")
    assert versions()[0] != prepare
