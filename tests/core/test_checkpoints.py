"""pipeline.core.checkpoints: checkpoints hold tensors and plain data only, and reading one never runs code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RunsCode, tamper

from pipeline.core import paths
from pipeline.core.checkpoints import (
    FORCE,
    FORCE_NO,
    TEACHER_FIX,
    UnsafeCheckpoint,
    check_plain,
    load_checkpoint,
    save_checkpoint,
    student_fix,
    weights_only_loads,
)
from pipeline.core.errors import UserError

PAYLOAD = {"config": {"dim": 4, "names": ["a", "b"], "rate": 0.5, "on": True, "none": None, "pair": (1, 2)},
           "state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "state": {0: {"step": torch.tensor(3.0)}}}


def test_the_tampered_file_runs_code_under_plain_pickle(tmp_path: Path) -> None:
    """The tests' tampered checkpoint (conftest `tamper`) is a real threat: plain unpickling creates the marker."""
    path, marker = tmp_path / "ckpt.pt", tmp_path / "marker"
    save_checkpoint(PAYLOAD, path)
    tamper(path, marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_save_then_load_round_trips_tensors_and_plain_data(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(PAYLOAD, path)
    assert not path.with_name("ckpt.pt.tmp").exists()  # written atomically, the temporary file renamed
    for loaded in (load_checkpoint(path, TEACHER_FIX), torch.load(path, weights_only=True)):
        assert loaded["config"] == PAYLOAD["config"]
        assert torch.equal(loaded["state_dict"]["w"], PAYLOAD["state_dict"]["w"])
        assert torch.equal(loaded["state"][0]["step"], PAYLOAD["state"][0]["step"])


def test_a_pickled_object_is_refused_and_never_runs(tmp_path: Path) -> None:
    path, marker = tmp_path / "teacher.pt", tmp_path / "marker"
    save_checkpoint(PAYLOAD, path)
    tamper(path, marker)
    with pytest.raises(UnsafeCheckpoint) as err:
        load_checkpoint(path, TEACHER_FIX)
    assert not marker.exists()
    assert isinstance(err.value, UserError)
    message = str(err.value)
    assert message.startswith(f"{path} holds pickled Python objects")
    assert "mmdistill will not unpickle" in message and "could run code" in message
    assert "torch: Unsupported global: GLOBAL getattr" in message  # torch's diagnosis, not its boilerplate
    assert "add_safe_globals" not in message and "weights_only=False" not in message  # no advice to bypass
    assert message.endswith("`dvc repro -f teacher` (or delete it and run `dvc repro teacher`)")
    assert "\n" not in message  # the CLI prints it as one line


@pytest.mark.parametrize(("value", "where"), [
    ({"best": {"mae": np.float64(0.5)}}, "['best']['mae']: numpy.float64"),
    ({"rng": [np.zeros(3)]}, "['rng'][0]: numpy.ndarray"),
    ({"path": Path("x")}, "['path']: pathlib.PosixPath"),
    ({"obj": RunsCode(Path("never"))}, "['obj']: conftest.RunsCode"),
])
def test_save_refuses_what_a_weights_only_load_cannot_read(tmp_path: Path, value: dict, where: str) -> None:
    path = tmp_path / "ckpt.pt"
    with pytest.raises(TypeError, match=r"is not plain data") as err:
        save_checkpoint({"state_dict": {"w": torch.zeros(1)}, **value}, path)
    assert str(err.value).startswith(f"{path}{where}")
    assert not path.exists() and not path.with_name("ckpt.pt.tmp").exists()


def test_provenance_must_be_json_able() -> None:
    check_plain({"seed": 0, "classes": ["a", "b"], "best": {"epoch": 2, "valid_mae": 0.25}}, "extra")
    with pytest.raises(TypeError, match=r"^extra\['w'\]: torch.Tensor is not plain data"):
        check_plain({"w": torch.zeros(1)}, "extra")
    with pytest.raises(TypeError, match=r"^extra: key 0 of type builtins.int is not plain data"):
        check_plain({0: "a"}, "extra")


def test_weights_only_loads_whatever_the_environment_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library's `torch.load(path)` without weights_only (open_clip's fallback) stays weights-only in the
    block, even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD set; the environment is restored afterwards."""
    path, marker = tmp_path / "clip.pt", tmp_path / "marker"
    save_checkpoint(PAYLOAD, path)
    tamper(path, marker)
    monkeypatch.setenv(FORCE_NO, "1")
    monkeypatch.delenv(FORCE, raising=False)
    with pytest.raises(pickle.UnpicklingError), weights_only_loads():
        torch.load(path)
    assert not marker.exists()
    assert os.environ.get(FORCE_NO) == "1" and FORCE not in os.environ


def test_student_fix_names_the_stage() -> None:
    assert paths.student_name(paths.student_dir("ds", "va-videoadviser", 2)) == "va-videoadviser"
    assert paths.student_name(Path("somewhere/else")) is None
    assert student_fix(paths.student_dir("ds", "text-kd", 0)) == "rebuild it with `dvc repro -f distill@text-kd`"
    assert student_fix(Path("x/y")) == "rebuild it with `dvc repro -f distill@<student>`"
