"""Shared fixtures: a small but complete project (params.yaml + dvc.yaml) in tmp_path."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models on a 2-core machine: one intra-op thread avoids oversubscription (much faster
    when anything else runs), and no result depends on it. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RunsCode:
    """What a tampered checkpoint carries: unpickling it runs `Path.touch(marker)`, creating the marker file
    (plain pickle runs it; a weights-only load must refuse it first)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def tamper(path: Path, marker: Path) -> None:
    """Rewrite the checkpoint (a dict) at `path` with one more entry, a `RunsCode(marker)`."""
    payload = torch.load(path, weights_only=True)
    payload["payload"] = RunsCode(marker)
    torch.save(payload, path)


def small_params() -> dict:
    """The repository's params.yaml shrunk to a dataset and models that run in seconds."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["generate"]["media"].update(seconds=1.0, fps=8, size=32)
    params["generate"]["synthetic_sentiment"].update(n_clips=36, monte_carlo=2000)
    params["generate"]["synthetic_av"]["n_clips"] = 36
    params["extract"]["video"]["frames"] = 4
    params["teacher"]["video_tokens"] = 4
    params["extract"]["audio"]["n_mels"] = 32
    params["teacher"]["train"].update(epochs=3, batch_size=8, min_epochs=0)
    params["distill"]["train"].update(epochs=2, batch_size=8, min_epochs=0)
    params["distill"]["student"].update(hidden_size=32, intermediate_size=64, vocab_size=300, max_length=32)
    return params


def with_edits(params: dict, edits: dict[str, object]) -> dict:
    """A copy of `params` with dotted keys (`distill.train.lr`) set to new values."""
    edited = yaml.safe_load(yaml.safe_dump(params))
    for dotted, value in edits.items():
        *parents, leaf = dotted.split(".")
        node = edited
        for key in parents:
            node = node[key]
        node[leaf] = value
    return edited


def write_project(root: Path, params: dict, with_code: bool = False) -> Path:
    """params.yaml (and, for DVC runs, dvc.yaml, .dvcignore and the pipeline code its deps name) under root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if with_code:
        shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
        shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")
        shutil.copytree(ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with the small params.yaml, as the working directory."""
    root = write_project(tmp_path / "project", small_params())
    monkeypatch.chdir(root)
    return root


def run_dag(students: list[str] | tuple[str, ...], generated: str | None = None) -> None:
    """Every stage's main(), in DAG order, in the working directory (generate only for `generated`)."""
    from pipeline import check, distill, evaluate, extract, floor, generate, prepare, report, teacher
    from pipeline.core.config import MODALITIES

    check.main([])
    if generated:
        generate.main([generated])
    prepare.main([])
    for modality in MODALITIES:
        extract.main([modality])
    teacher.main([])
    floor.main([])
    for name in students:
        distill.main([name])
    evaluate.main([])
    report.main([])


def write_mmsa_pickle(path: Path, aligned: bool = False, protocol: int = pickle.DEFAULT_PROTOCOL) -> dict:
    """A small unaligned_50.pkl / aligned_50.pkl with MMSA's keys (COVAREP 5, FACET 20 as in its MOSI files)."""
    rng = np.random.default_rng(0)
    data = {}
    for split, n in (("train", 4), ("valid", 2), ("test", 3)):
        part = {"id": np.array([f"vid{split}$_${i + 1}" for i in range(n)], dtype=object),
                "raw_text": [f"words {i}" for i in range(n)],
                "text": rng.normal(size=(n, 50, 768)).astype(np.float32),
                "text_bert": rng.integers(0, 100, size=(n, 3, 50)).astype(np.float32),
                "audio": rng.normal(size=(n, 50 if aligned else 60, 5)).astype(np.float32),
                "vision": rng.normal(size=(n, 50 if aligned else 40, 20)).astype(np.float32),
                "regression_labels": rng.uniform(-3, 3, size=n).astype(np.float32),
                "annotations": ["Positive"] * n}
        if not aligned:
            part["audio_lengths"] = [int(x) for x in rng.integers(1, 60, size=n)]
            part["vision_lengths"] = [int(x) for x in rng.integers(1, 40, size=n)]
        data[split] = part
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return data
