"""MMSA's processed pickles: the documented layout is read, trimmed to the lengths, and nothing in the file
but plain data and numpy arrays is ever unpickled (a tampered file is refused before any of it runs)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.errors import DatasetError
from pipeline.data.mmsa_features import read_mmsa_features, safe_load_pickle


def mmsa_pickle(path: Path, aligned: bool = False, protocol: int = pickle.DEFAULT_PROTOCOL) -> dict:
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


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_unaligned_pickle_is_read_and_trimmed_to_the_lengths(tmp_path: Path, protocol: int) -> None:
    data = mmsa_pickle(tmp_path / "unaligned_50.pkl", protocol=protocol)
    audio = read_mmsa_features(tmp_path / "unaligned_50.pkl", "audio")
    assert len(audio) == 9
    n = data["valid"]["audio_lengths"][1]
    np.testing.assert_array_equal(audio["vidvalid$_$2"], data["valid"]["audio"][1, :n])
    vision = read_mmsa_features(tmp_path / "unaligned_50.pkl", "vision")
    assert vision["vidtest$_$3"].shape == (data["test"]["vision_lengths"][2], 20)


def test_aligned_pickle_keeps_every_row(tmp_path: Path) -> None:
    mmsa_pickle(tmp_path / "aligned_50.pkl", aligned=True)
    assert {v.shape for v in read_mmsa_features(tmp_path / "aligned_50.pkl", "audio").values()} == {(50, 5)}


class Payload:
    """Unpickling this would create `marker`: what a tampered file's code could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("payload", ["object", "system"])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "ran"
    data = mmsa_pickle(tmp_path / "clean.pkl")
    data["train"]["extra"] = Payload(marker) if payload == "object" else _System(f"touch {marker}")
    path = tmp_path / "unaligned_50.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(DatasetError, match=r"unaligned_50\.pkl: refused: the pickle refers to "):
        read_mmsa_features(path, "audio")
    assert not marker.exists()
    pickle.loads(path.read_bytes()) if payload == "object" else None  # the control: plain pickle would run it
    assert marker.exists() == (payload == "object")


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_layout_problems_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"train": {"id": np.array(["a"], dtype=object)}}))
    with pytest.raises(DatasetError, match=r"x\.pkl: split 'train' has no \['audio'\]"):
        read_mmsa_features(path, "audio")
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DatasetError, match="expected a dict with the splits"):
        read_mmsa_features(path, "audio")
    path.write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="x.pkl"):
        safe_load_pickle(path)
    with pytest.raises(DatasetError, match="unknown MMSA feature key 'text'"):
        read_mmsa_features(path, "text")
