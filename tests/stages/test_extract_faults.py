"""Extraction under faults and at scale, run as a user would run it (subprocesses):

- SIGKILL mid-run, then a rerun: only the missing clips are encoded, the result equals an
  uninterrupted run, and no file ever reads as complete before it is;
- bad clips of every kind are listed in the failures CSVs and the downstream stages mask
  them without crashing;
- `torchrun --nproc-per-node 2` (gloo, CPU): the merged file equals the single-process one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import distill, evaluate, extract, floor, generate, prepare, teacher
from pipeline.core import paths
from pipeline.core.config import MODALITIES
from pipeline.data.synthetic import write_mp4
from pipeline.features import media
from pipeline.features.store import FeatureReader, StoreError

DS = "synthetic_sentiment"
# decode slowly so that the kill lands mid-run, whatever the machine's speed
SLOW_EXTRACT = """
import sys, time
import pipeline.features.media as media
real = media.read_frames
def slow(*args, **kwargs):
    time.sleep(0.1)
    return real(*args, **kwargs)
media.read_frames = slow
from pipeline.extract import main
main(sys.argv[1:])
"""


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "OMP_NUM_THREADS": "1"}


def set_params(root: Path, **run) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["extract"]["run"].update(run)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def assert_same_features(path: Path, reference: Path) -> None:
    a, b = FeatureReader(path), FeatureReader(reference)
    assert a.config == b.config and a.ids() == b.ids()
    for clip_id in b.ids():
        for name, array in b.read(clip_id).items():
            np.testing.assert_allclose(a.read(clip_id)[name], array, rtol=1e-5, atol=1e-6, err_msg=clip_id)


@pytest.fixture
def prepared(project: Path) -> Path:
    generate.main([DS])
    prepare.main([])
    return project


def test_sigkill_then_resume_equals_an_uninterrupted_run(prepared: Path, tmp_path: Path) -> None:
    set_params(prepared, batch_size=2)
    out = prepared / paths.features(DS, "video")
    extract.main(["video"])
    reference = tmp_path / "reference.h5"
    shutil.move(out, reference)

    proc = subprocess.Popen([sys.executable, "-c", SLOW_EXTRACT, "video"], cwd=prepared, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out.with_name(out.name + ".partial")
    deadline = time.monotonic() + 120
    while len(list(partial.glob("rank0-*.h5"))) < 3:
        assert proc.poll() is None, "extraction ended before it could be killed"
        assert time.monotonic() < deadline, "no chunk was written in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert not out.exists()  # never complete-looking before it is
    with pytest.raises(StoreError, match="unfinished"):
        FeatureReader(out)

    decoded: list[str] = []
    real = media.read_frames

    def counting(path, *args, **kwargs):
        decoded.append(Path(path).name)
        return real(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(media, "read_frames", counting)
        extract.main(["video"])
    n_clips = len(pd.read_csv(prepared / paths.manifest(DS)))
    assert 0 < len(decoded) <= n_clips - 6  # at least the 3 chunks of 2 clips were not re-encoded
    assert_same_features(out, reference)
    assert not partial.exists()


def test_two_process_torchrun_equals_one_process(prepared: Path, tmp_path: Path) -> None:
    set_params(prepared, batch_size=4)
    extract.main(["video"])
    reference = tmp_path / "reference.h5"
    shutil.move(prepared / paths.features(DS, "video"), reference)
    single_failures = (prepared / paths.failures(DS, "video")).read_text()

    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "pipeline.extract", "video"], cwd=prepared, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rank 1/2" in done.stderr and "rank 0/2" in done.stderr
    assert_same_features(prepared / paths.features(DS, "video"), reference)
    assert (prepared / paths.failures(DS, "video")).read_text() == single_failures


def add_bad_clips(root: Path) -> dict[str, str]:
    """Append one clip of each bad kind to the raw MMSA dataset; returns id -> expected failing modality."""
    raw = root / paths.raw_dir(DS)
    bad = raw / "Raw" / "bad"
    bad.mkdir(parents=True)
    frames = np.full((8, 32, 32, 3), 128, np.uint8)
    tone = (0.1 * np.sin(np.linspace(0, 400 * np.pi, 16000))).astype(np.float32)
    (bad / "corrupt.mp4").write_bytes(os.urandom(4096))
    (bad / "empty.mp4").write_bytes(b"")
    write_mp4(bad / "silent.mp4", frames, 8, None, 16000)  # no audio track
    write_mp4(bad / "short.mp4", frames[:2], 8, tone, 16000)  # 2 frames < extract.video.frames = 4
    write_mp4(bad / "notext.mp4", frames, 8, tone, 16000)
    write_mp4(bad / "latin1.mp4", frames, 8, tone, 16000)
    rows = [("corrupt", "it was good"), ("empty", "it was bad"), ("silent", "it was fine"),
            ("short", "it was great"), ("notext", ""), ("latin1", None)]
    with open(raw / "label.csv", "ab") as f:
        for clip, text in rows:
            body = b"caf\xe9 was awful" if text is None else text.encode()  # latin-1 bytes: not UTF-8
            f.write(b"bad," + clip.encode() + b"," + body + b",1.0,1.0,1.0,1.0,Positive,train\n")
    return {"bad$_$corrupt": "video audio", "bad$_$empty": "video audio", "bad$_$silent": "audio",
            "bad$_$short": "video", "bad$_$notext": "text", "bad$_$latin1": "text"}


def test_bad_clips_are_listed_and_masked_downstream(prepared: Path) -> None:
    expected = add_bad_clips(prepared)
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["extract"]["max_failure_ratio"] = 0.2
    params["distill"]["students"] = ["va-none", "msd-none"]
    (prepared / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    prepare.main([])
    for modality in MODALITIES:
        extract.main([modality])
        failures = pd.read_csv(prepared / paths.failures(DS, modality), dtype=str)
        assert set(failures["id"]) == {i for i, m in expected.items() if modality in m}, modality
        assert failures["reason"].str.len().min() > 5 and failures["path"].str.endswith(".mp4").all()
    reasons = {}
    for modality in MODALITIES:
        table = pd.read_csv(prepared / paths.failures(DS, modality), dtype=str)
        reasons.update({(modality, i): r for i, r in zip(table["id"], table["reason"], strict=True)})
    assert "no audio track" in reasons[("audio", "bad$_$silent")]
    assert "fewer than" in reasons[("video", "bad$_$short")]
    assert reasons[("text", "bad$_$notext")] == "empty transcript"
    assert "UTF-8" in reasons[("text", "bad$_$latin1")]

    teacher.main([])  # the masked modalities do not crash the teacher ...
    floor.main([])
    distill.main(["va-none"])  # ... nor the students
    distill.main(["msd-none"])
    evaluate.main([])
