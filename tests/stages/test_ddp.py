"""fit() under `torchrun --nproc-per-node 2` (gloo, CPU) computes the same training as one process
with the same global batch, with and without gradient accumulation (tests/ddp_fit.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_fit.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The script's final weights for grad_accum 1 and 2, as one process and as two (both launched at once)."""
    root = tmp_path_factory.mktemp("ddp")
    commands = {"single": [sys.executable, str(SCRIPT)], "ddp": TORCHRUN + [str(SCRIPT)]}
    procs = {}
    for name, command in commands.items():
        (root / name).mkdir()
        procs[name] = subprocess.Popen([*command, name, "--grad-accum", "1", "2"], cwd=root, env=env(),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = {name: proc.communicate(timeout=120)[0] for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}:\n{outputs[name]}"
    assert not list(root.glob("*/*.state")), "the resumable state is deleted once fit finishes"
    return {f"{name}_accum{n}": {**torch.load(root / name / f"accum{n}.pt"), "log": outputs[name],
                                 "loss": curve(root / name / f"accum{n}_curves")}
            for name in commands for n in (1, 2)}


def curve(curves: Path) -> list[float]:
    """The logged training loss of each epoch."""
    return pd.read_csv(curves / "plots" / "metrics" / "train" / "loss.tsv", sep="\t")["loss"].tolist()


@pytest.mark.parametrize("name", ["single_accum2", "ddp_accum1", "ddp_accum2"])
def test_same_global_batch_gives_the_same_weights(runs: dict[str, dict], name: str) -> None:
    reference, run = runs["single_accum1"], runs[name]
    assert run["world"] == (2 if name.startswith("ddp") else 1)
    assert run["state_dict"].keys() == reference["state_dict"].keys()
    for k, v in reference["state_dict"].items():
        torch.testing.assert_close(run["state_dict"][k], v, rtol=0, atol=1e-5, msg=k)
    assert run["best"]["epoch"] == reference["best"]["epoch"]
    # Adam hides a gradient scaled by a constant; the logged loss (the same weights) does not
    assert run["loss"] == pytest.approx(reference["loss"], rel=1e-5)


def test_only_rank_0_logs(runs: dict[str, dict]) -> None:
    log = runs["ddp_accum1"]["log"]
    assert "ddp_fit rank 0: best epoch" in log and "ddp_fit rank 1: best epoch" not in log


# --------------------------------------------------------------------------- the stages under torchrun


@pytest.fixture(scope="module")
def stage_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small project with its features extracted, dropout and modality dropout off (their masks differ per
    rank)."""
    from conftest import small_params, write_project

    from pipeline import extract, generate, prepare, teacher

    params = small_params()
    params["seeds"] = [0]
    params["teacher"]["dropout"] = 0.0
    params["teacher"]["modality_dropout"] = 0.0
    params["distill"]["student"]["dropout"] = 0.0
    root = write_project(tmp_path_factory.mktemp("ddp_stages") / "project", params)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        generate.main(["synthetic_sentiment"])
        prepare.main([])
        for modality in ("video", "audio", "text"):
            extract.main([modality])
        teacher.main([])  # the students' teacher
    return root


@pytest.mark.parametrize("stage", [["pipeline.teacher"], ["pipeline.distill", "va-videoadviser"]],
                         ids=["teacher", "distill"])
def test_stage_under_torchrun_matches_one_process(stage_project: Path, stage: list[str]) -> None:
    """The same global batch: two gloo processes train the same model as one (rank 0 writes)."""
    from pipeline.core import paths
    from pipeline.features.store import read_table

    ds = "synthetic_sentiment"

    def outputs() -> dict[str, torch.Tensor]:
        if stage[0] == "pipeline.teacher":
            columns, _ = read_table(stage_project / paths.teacher_predictions(ds, 0), stage="teacher")
            return {"reg": torch.as_tensor(columns["reg"]), "logits": torch.as_tensor(columns["logits"])}
        from pipeline.models.students import load_student

        model, _, _ = load_student(stage_project / paths.student_dir(ds, stage[1], 0))
        return {k: v.clone() for k, v in model.state_dict().items()}

    if stage[0] == "pipeline.distill":  # one process, in this one (the teacher's ran in the fixture)
        from pipeline import distill

        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(stage_project)
            distill.main(stage[1:])
    reference = outputs()
    ddp = subprocess.run([*TORCHRUN, "-m", *stage], cwd=stage_project, env=env(), capture_output=True, text=True)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    for k, v in outputs().items():
        torch.testing.assert_close(v, reference[k], rtol=1e-4, atol=1e-4, msg=k)
