"""The DVC contract, run as a user would: `dvc repro` on a fresh small project (two seeds, one
student: fewer processes than the default, the same DAG), a second `dvc repro` that does
nothing, a distill parameter that makes only the students stale, a switch to the retrieval dataset and back,
`dvc metrics show` listing every model with the mean and std of the eight metrics, and the
report; a team sharing the extracted features through a DVC remote (README, "Sharing features")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import small_params, with_edits, write_project

from pipeline.evaluation.metrics import METRIC_NAMES

METHODS = ["msd-learned"]  # one student: the chain test covers both families; this one the DVC contract
MODELS = ["teacher", "teacher_self", "floor", *METHODS]


def sh(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def init_repo(root: Path) -> Path:
    """A user's project: git and DVC initialised, outputs ignored by git."""
    (root / ".gitignore").write_text("/data/\n/models/\n/predictions/\n/dvclive/\n/reports/\n/checkpoints/\n"
                                     "__pycache__/\n")
    sh("git", "init", "-q", cwd=root)
    sh("git", "config", "user.email", "test@example.com", cwd=root)
    sh("git", "config", "user.name", "test", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = small_params()
    params["seeds"] = [0, 1]
    params["distill"]["students"] = METHODS
    root = init_repo(write_project(tmp_path_factory.mktemp("dvc") / "project", params, with_code=True))
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "project", cwd=root)  # a clone has commits (dvclive needs one)
    sh("dvc", "repro", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "first repro", cwd=root)
    return root


def test_second_repro_does_nothing(repo: Path) -> None:
    out = sh("dvc", "repro", cwd=repo)
    assert "Data and pipelines are up to date." in out
    assert "Running stage" not in out


def test_metrics_show_lists_every_model_with_all_metrics(repo: Path) -> None:
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo))
    files = next(iter(shown.values()))["data"]
    names = {Path(path).stem: entry["data"] for path, entry in files.items()}
    assert set(names) == set(MODELS)
    for metrics in names.values():
        assert list(metrics["mean"]) == list(METRIC_NAMES) and list(metrics["std"]) == list(METRIC_NAMES)
        assert list(metrics["seeds"]) == ["0", "1"]


def test_report_lists_every_model(repo: Path) -> None:
    text = (repo / "reports" / "synthetic_sentiment" / "report.md").read_text()
    for name in METHODS:
        assert f"| {name} " in text
    assert "| teacher (all modalities) " in text and "| floor (linear) " in text


def test_plots_show_renders_every_curve(repo: Path) -> None:
    shown = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo))
    assert not shown.get("errors"), shown.get("errors")
    files = set(shown["data"])
    for name in ("teacher", "teacher_self", *(f"student_{m}" for m in METHODS)):
        for seed in (0, 1):
            assert f"dvclive/synthetic_sentiment/{name}/seed_{seed}/plots/metrics/valid/mae.tsv" in files
    assert "dvclive/synthetic_sentiment/student_msd-learned/seed_0/plots/metrics/train/w_text.tsv" in files


def test_a_distill_param_makes_only_the_students_stale(repo: Path) -> None:
    """`dvc exp run -S distill.train.lr=...` re-runs the students and what reads them, nothing upstream:
    `dvc status` after the edit lists exactly the check and the distill stages (evaluate and report follow
    from their outputs; the check's output does not change, so it makes nothing stale; the retrieval test
    below runs `dvc exp run -S` itself)."""
    path = repo / "params.yaml"
    original = path.read_bytes()
    params = yaml.safe_load(original)
    params["distill"]["train"]["lr"] = 0.002
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        stale = json.loads(sh("dvc", "status", "--json", cwd=repo))
    finally:
        path.write_bytes(original)
    assert sorted(stale) == sorted(["check", *(f"distill@{m}" for m in METHODS)]), stale
    assert json.loads(sh("dvc", "status", "--json", cwd=repo)) == {}


def test_switching_dataset_runs_retrieval_and_switching_back_recomputes_nothing(repo: Path) -> None:
    """`dataset` is the one params change that swaps tasks; every output path carries it, so the
    default's outputs stay in the DVC cache (and run-cache) and come back without running anything."""
    before = {p: p.read_bytes() for p in sorted((repo / "metrics" / "synthetic_sentiment").glob("*.json"))}
    out = sh("dvc", "exp", "run", "-S", "dataset=synthetic_av", "-S", "seeds=[0]", cwd=repo)
    for stage in ("prepare", "extract@video", "teacher", "floor", *(f"distill@{m}" for m in METHODS), "evaluate",
                  "report"):
        assert f"Running stage '{stage}'" in out
    for name in MODELS:
        metrics = json.loads((repo / "metrics" / "synthetic_av" / f"{name}.json").read_text())
        assert list(metrics["mean"]) == ["map_a2v", "map_v2a", "map_mean"] and list(metrics["seeds"]) == ["0"]
        assert 0.0 < metrics["mean"]["map_mean"] <= 1.0
        assert (repo / "predictions" / "synthetic_av" / name / "seed_0.csv").is_file()
    assert "map" in (repo / "reports" / "synthetic_av" / "report.md").read_text().lower()

    out = sh("dvc", "exp", "run", "-S", "dataset=synthetic_sentiment", "-S", "seeds=[0,1]", cwd=repo)
    assert "Running stage" not in out, out
    assert "skipping run, checking out outputs" in out  # restored from the run-cache, not recomputed
    assert {p: p.read_bytes() for p in before} == before
    assert (repo / "models" / "synthetic_sentiment" / "teacher" / "seed_1" / "teacher.pt").is_file()


def _outputs(repo: Path, contents: bool = False) -> dict[str, object]:
    """Every output file of the project (but the check's own) with its size and modification time (or content)."""
    return {str(p.relative_to(repo)): p.read_bytes() if contents else (p.stat().st_size, p.stat().st_mtime_ns)
            for top in ("data", "models", "predictions", "metrics", "reports", "dvclive")
            for p in sorted((repo / top).rglob("*")) if p.is_file() and p.name != "checked.txt"}


@pytest.mark.parametrize(("command", "message"), [
    (["exp", "run", "-S", "distill.train.lr=-1"], "error: distill.train.lr: must be > 0, got -1.0"),
    (["exp", "run", "-S", "clip.model=ViT-B-99"],
     "error: clip.model 'ViT-B-99' is not an open_clip model. Did you mean 'ViT-B-"),
    (["repro"], "error: dataset 'mosi': data/raw/mosi not found. Put CMU-MOSI"),  # params.yaml edited by hand
    (["exp", "run", "-S", "dataset=mosi"], "error: dataset 'mosi': data/raw/mosi not found. Put CMU-MOSI"),
], ids=["lr", "clip-model", "dataset-absent-repro", "dataset-absent-exp-run"])
def test_a_bad_setting_fails_in_seconds_with_one_line_and_deletes_nothing(repo: Path, command: list[str],
                                                                          message: str) -> None:
    """A mistake stops the DAG in its first stage, `check`, with the project's one-line message (no
    traceback), before any stage with outputs runs: every output is left as it was. The one exception is
    DVC's own: `dvc exp run -S dataset=...` first checks out the outputs of the new dataset's paths, which
    takes the current dataset's out of the workspace (not out of the cache): `git checkout params.yaml
    metrics` and `dvc checkout` put them back, byte for byte, without running anything (README)."""
    before, contents = _outputs(repo), _outputs(repo, contents=True)
    params = (repo / "params.yaml").read_bytes()
    if command == ["repro"]:
        (repo / "params.yaml").write_text(params.decode().replace("dataset: synthetic_sentiment", "dataset: mosi"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    try:
        done = subprocess.run(["dvc", *command], cwd=repo, env=env, capture_output=True, text=True)
    finally:
        (repo / "params.yaml").write_bytes(params)  # DVC leaves the bad value in the file (README)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert [line for line in out.splitlines() if line.startswith("error: ")] == [next(
        line for line in out.splitlines() if line.startswith(message))], out
    assert "Traceback" not in out and "Running stage 'check'" in out
    assert out.count("Running stage") == 1, out  # no other stage started
    if "dataset=mosi" in command:
        sh("git", "checkout", "metrics", cwd=repo)
        restored = sh("dvc", "checkout", cwd=repo)
        assert "Running stage" not in restored
        assert _outputs(repo, contents=True) == contents
    else:
        sh("dvc", "checkout", "data/checked.txt", cwd=repo)
        assert _outputs(repo) == before


def test_generate_reruns_only_the_dataset_whose_params_changed(tmp_path: Path) -> None:
    """Each synthetic dataset depends on generate.seed, generate.media and its own block only."""
    params = small_params()
    params["generate"]["synthetic_sentiment"].update(n_clips=12, monte_carlo=200)
    params["generate"]["synthetic_av"]["n_clips"] = 10
    root = init_repo(write_project(tmp_path / "project", params, with_code=True))
    stages = ["generate@synthetic_sentiment", "generate@synthetic_av"]
    sh("dvc", "repro", *stages, cwd=root)
    assert (root / "data" / "raw" / "synthetic_sentiment" / "limits.json").is_file()

    def changed(edit: dict) -> list[str]:
        (root / "params.yaml").write_text(yaml.safe_dump(with_edits(params, edit), sort_keys=False))
        return sorted(json.loads(sh("dvc", "status", "--json", *stages, cwd=root)))

    assert changed({}) == []
    assert changed({"generate.synthetic_av.noise.audio": 0.7}) == ["generate@synthetic_av"]
    assert changed({"generate.synthetic_sentiment.irony": 0.2}) == ["generate@synthetic_sentiment"]
    assert changed({"generate.media.fps": 4}) == sorted(stages)


EXTRACT = ["extract@video", "extract@audio", "extract@text"]


@pytest.fixture(scope="module")
def clones(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The project above pushes its features to a shared remote; a teammate clones it."""
    base = tmp_path_factory.mktemp("remote")
    sh("dvc", "remote", "add", "-d", "shared", str(base / "dvc-remote"), cwd=repo)
    sh("git", "commit", "-qm", "remote", ".dvc/config", cwd=repo)
    sh("dvc", "push", *EXTRACT, "--with-deps", cwd=repo)
    second = base / "second"
    sh("git", "clone", "-q", str(repo), str(second), cwd=base)
    return repo, second


def test_pull_restores_the_features(clones: tuple[Path, Path]) -> None:
    first, second = clones
    assert not (second / "data").exists()
    out = sh("dvc", "pull", *EXTRACT, "--with-deps", cwd=second)
    assert "fetched" in out.lower() or "added" in out.lower()
    for modality in ("video", "audio", "text"):
        path = Path("data/features/synthetic_sentiment") / f"{modality}.h5"
        assert (second / path).read_bytes() == (first / path).read_bytes()


def test_repro_after_pull_skips_extraction(clones: tuple[Path, Path]) -> None:
    _, second = clones
    sh("dvc", "pull", *EXTRACT, "--with-deps", cwd=second)
    out = sh("dvc", "repro", *EXTRACT, cwd=second)
    assert "Running stage" not in out
    for stage in ["generate@synthetic_sentiment", "prepare", *EXTRACT]:
        assert f"Stage '{stage}' didn't change, skipping" in out


def test_without_the_remote_the_clone_has_nothing(clones: tuple[Path, Path], tmp_path: Path) -> None:
    """The control: a clone that cannot reach the cache must recompute (so the test above proves the pull)."""
    first, _ = clones
    third = tmp_path / "third"
    sh("git", "clone", "-q", str(first), str(third), cwd=tmp_path)
    shutil.rmtree(third / ".dvc" / "cache", ignore_errors=True)
    out = sh("dvc", "status", *EXTRACT, cwd=third)
    assert "deleted" in out or "changed" in out
