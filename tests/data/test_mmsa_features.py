"""MMSA's processed pickles: the documented layout is read, trimmed to the lengths, and nothing in the file
but plain data and numpy arrays is ever unpickled (a tampered file is refused before any of it runs)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import RunsCode, write_mmsa_pickle

from pipeline.data.errors import DatasetError
from pipeline.data.mmsa_features import read_mmsa_features, safe_load_pickle


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_unaligned_pickle_is_read_and_trimmed_to_the_lengths(tmp_path: Path, protocol: int) -> None:
    data = write_mmsa_pickle(tmp_path / "unaligned_50.pkl", protocol=protocol)
    audio = read_mmsa_features(tmp_path / "unaligned_50.pkl", "audio")
    assert len(audio) == 9
    n = data["valid"]["audio_lengths"][1]
    np.testing.assert_array_equal(audio["vidvalid$_$2"], data["valid"]["audio"][1, :n])
    vision = read_mmsa_features(tmp_path / "unaligned_50.pkl", "vision")
    assert vision["vidtest$_$3"].shape == (data["test"]["vision_lengths"][2], 20)


def test_aligned_pickle_keeps_every_row(tmp_path: Path) -> None:
    write_mmsa_pickle(tmp_path / "aligned_50.pkl", aligned=True)
    assert {v.shape for v in read_mmsa_features(tmp_path / "aligned_50.pkl", "audio").values()} == {(50, 5)}


@pytest.mark.parametrize("payload", ["object", "system"])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "ran"
    data = write_mmsa_pickle(tmp_path / "clean.pkl")
    data["train"]["extra"] = RunsCode(marker) if payload == "object" else _System(f"touch {marker}")
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
