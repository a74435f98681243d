"""Tests of the dataset readers and the manifest (pipeline.datasets)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import ConfigError
from pipeline.datasets import (
    DATASETS,
    MANIFEST_COLUMNS,
    DatasetError,
    read_dataset,
    read_manifest,
    read_mmsa,
    write_manifest,
)
from pipeline.synthetic import SyntheticNoise, generate_sentiment

SPEC = DATASETS.get("synthetic_sentiment")
N_CLIPS = 12


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mmsa") / "synthetic_sentiment"
    generate_sentiment(root, n_clips=N_CLIPS, seed=0, splits={"train": 0.7, "valid": 0.15, "test": 0.15},
                       seconds=1.0, fps=4, size=32, sample_rate=16000, noise=SyntheticNoise())
    return root


@pytest.fixture
def root(generated: Path, tmp_path: Path) -> Path:
    """A private copy of the generated dataset that a test may break."""
    return Path(shutil.copytree(generated, tmp_path / "synthetic_sentiment"))


def _labels(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "label.csv", dtype=str, keep_default_na=False)


def _write_labels(root: Path, table: pd.DataFrame) -> None:
    table.to_csv(root / "label.csv", index=False)


# --------------------------------------------------------------------------- read_mmsa


def test_read_mmsa_manifest(root: Path) -> None:
    labels = _labels(root)
    manifest = read_mmsa(root, SPEC)
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == N_CLIPS
    assert manifest["id"].tolist() == [f"{v}$_${c}" for v, c in zip(labels["video_id"], labels["clip_id"], strict=True)]
    assert manifest["split"].tolist() == labels["mode"].tolist()
    assert manifest["text"].tolist() == labels["text"].tolist()
    assert manifest["label"].tolist() == pytest.approx(labels["label"].astype(float).tolist())
    assert manifest["video_id"].tolist() == labels["video_id"].tolist()
    assert manifest["clip_id"].tolist() == labels["clip_id"].tolist()
    for row in manifest.itertuples():
        assert Path(row.video) == root / "Raw" / row.video_id / f"{row.clip_id}.mp4"
        assert Path(row.video).is_file()
    assert set(manifest["split"]) == {"train", "valid", "test"}


def test_read_dataset_with_explicit_root(root: Path) -> None:
    spec, manifest = read_dataset("synthetic_sentiment", root)
    assert spec.name == "synthetic_sentiment" and spec.label_range == (-3.0, 3.0)
    assert len(manifest) == N_CLIPS


def test_read_dataset_unknown_name_lists_datasets() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'nope'.*mosei.*mosi.*synthetic_sentiment"):
        read_dataset("nope")


def test_ids_and_clip_ids_stay_strings(root: Path) -> None:
    labels = _labels(root)
    original = root / "Raw" / labels.loc[0, "video_id"] / f"{labels.loc[0, 'clip_id']}.mp4"
    (root / "Raw" / "007").mkdir()
    shutil.copy(original, root / "Raw" / "007" / "01.mp4")
    labels.loc[0, "video_id"] = "007"
    labels.loc[0, "clip_id"] = "01"
    _write_labels(root, labels)
    manifest = read_mmsa(root, SPEC)
    assert manifest.loc[0, "id"] == "007$_$01"
    assert manifest.loc[0, "video_id"] == "007" and manifest.loc[0, "clip_id"] == "01"
    assert manifest.loc[0, "video"] == str(root / "Raw" / "007" / "01.mp4")


# --------------------------------------------------------------------------- read_mmsa errors


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "raw" / "mosi"
    with pytest.raises(DatasetError) as err:
        read_mmsa(missing, DATASETS.get("mosi"))
    message = str(err.value)
    assert str(missing) in message
    assert "ln -s" in message and "dvc add" in message


def test_missing_label_csv(root: Path) -> None:
    (root / "label.csv").unlink()
    with pytest.raises(DatasetError, match=re.escape(str(root / "label.csv")) + ".*not found"):
        read_mmsa(root, SPEC)


@pytest.mark.parametrize("drop", [["mode"], ["text", "label"]])
def test_missing_columns_are_named(root: Path, drop: list[str]) -> None:
    _write_labels(root, _labels(root).drop(columns=drop))
    with pytest.raises(DatasetError, match="missing columns") as err:
        read_mmsa(root, SPEC)
    assert str(drop) in str(err.value)


def test_missing_video_file_is_named_with_count(root: Path) -> None:
    labels = _labels(root)
    gone = root / "Raw" / labels.loc[3, "video_id"] / f"{labels.loc[3, 'clip_id']}.mp4"
    gone.unlink()
    with pytest.raises(DatasetError, match="video files missing") as err:
        read_mmsa(root, SPEC)
    assert str(gone) in str(err.value)
    assert "(1 in all)" in str(err.value)


def test_many_missing_videos_are_summarised(root: Path) -> None:
    shutil.rmtree(root / "Raw")
    with pytest.raises(DatasetError, match=rf"and {N_CLIPS - 5} more \({N_CLIPS} in all\)"):
        read_mmsa(root, SPEC)


def test_duplicate_ids(root: Path) -> None:
    labels = _labels(root)
    labels = pd.concat([labels, labels.iloc[[2]]], ignore_index=True)
    _write_labels(root, labels)
    dup = f"{labels.loc[2, 'video_id']}$_${labels.loc[2, 'clip_id']}"
    with pytest.raises(DatasetError, match="duplicate clip ids") as err:
        read_mmsa(root, SPEC)
    assert dup in str(err.value)


def test_invalid_mode(root: Path) -> None:
    labels = _labels(root)
    labels.loc[1, "mode"] = "training"
    _write_labels(root, labels)
    bad = f"{labels.loc[1, 'video_id']}$_${labels.loc[1, 'clip_id']}"
    with pytest.raises(DatasetError, match=r"split/mode must be one of \['train', 'valid', 'test'\]") as err:
        read_mmsa(root, SPEC)
    assert bad in str(err.value)


@pytest.mark.parametrize("value", ["3.5", "-3.01", "abc", ""])
def test_label_out_of_range_or_not_a_number(root: Path, value: str) -> None:
    labels = _labels(root)
    labels.loc[4, "label"] = value
    _write_labels(root, labels)
    bad = f"{labels.loc[4, 'video_id']}$_${labels.loc[4, 'clip_id']}"
    with pytest.raises(DatasetError, match=r"labels must be numbers in \[-3.0, 3.0\]") as err:
        read_mmsa(root, SPEC)
    assert bad in str(err.value)


def test_slash_in_id(root: Path) -> None:
    labels = _labels(root)
    labels.loc[5, "clip_id"] = "a/b"
    _write_labels(root, labels)
    with pytest.raises(DatasetError, match=r"clip ids may not contain '/'") as err:
        read_mmsa(root, SPEC)
    assert f"{labels.loc[5, 'video_id']}$_$a/b" in str(err.value)


def test_label_bounds_are_inclusive(root: Path) -> None:
    labels = _labels(root)
    labels.loc[0, "label"], labels.loc[1, "label"] = "-3.0", "3"
    _write_labels(root, labels)
    assert read_mmsa(root, SPEC)["label"].tolist()[:2] == [-3.0, 3.0]


def test_empty_split(root: Path) -> None:
    labels = _labels(root)
    _write_labels(root, labels[labels["mode"] != "test"])
    with pytest.raises(DatasetError, match=r"splits \['test'\] have no clips"):
        read_mmsa(root, SPEC)


def test_no_clips(root: Path) -> None:
    _write_labels(root, _labels(root).iloc[:0])
    with pytest.raises(DatasetError, match="no clips"):
        read_mmsa(root, SPEC)


# --------------------------------------------------------------------------- manifest round trip


def test_manifest_round_trip(tmp_path: Path) -> None:
    manifest = pd.DataFrame({
        "id": ["007$_$1", "vid_1$_$2", "x$_$3"],
        "split": ["train", "valid", "test"],
        "label": [-2.6667, 0.0, 3.0],
        "text": ['he said "hi, there", then left', "a, b,, c\nsecond line", "NA"],
        "video": ["/data/a b/007/1.mp4", "/data/x,y/vid_1/2.mp4", "/data/z/x/3.mp4"],
        "video_id": ["007", "vid_1", "x"],
        "clip_id": ["1", "2", "3"],
        "extra": ["dropped", "dropped", "dropped"],
    })
    path = tmp_path / "prepared" / "ds" / "manifest.csv"
    write_manifest(manifest, path)
    back = read_manifest(path)
    assert tuple(back.columns) == MANIFEST_COLUMNS
    for column in ("id", "split", "text", "video", "video_id", "clip_id"):
        assert back[column].tolist() == manifest[column].tolist(), column
    assert back["label"].tolist() == manifest["label"].tolist()


def test_manifest_numeric_looking_ids_stay_strings(tmp_path: Path) -> None:
    manifest = pd.DataFrame({"id": ["007", "010"], "split": ["train", "test"], "label": [1.0, -1.0],
                             "text": ["12", ""], "video": ["a.mp4", "b.mp4"], "video_id": ["007", "010"],
                             "clip_id": ["00", "1"]})
    path = tmp_path / "manifest.csv"
    write_manifest(manifest, path)
    back = read_manifest(path)
    assert back["id"].tolist() == ["007", "010"]
    assert back["video_id"].tolist() == ["007", "010"]
    assert back["clip_id"].tolist() == ["00", "1"]
    assert back["text"].tolist() == ["12", ""]


def test_manifest_from_read_mmsa_round_trips(root: Path, tmp_path: Path) -> None:
    manifest = read_mmsa(root, SPEC)
    path = tmp_path / "m.csv"
    write_manifest(manifest, path)
    pd.testing.assert_frame_equal(read_manifest(path), manifest, check_dtype=False)


def test_read_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"not found: run `dvc repro prepare`"):
        read_manifest(tmp_path / "nope" / "manifest.csv")


def test_read_manifest_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    path.write_text("id,split,label\nx,train,1.0\n")
    with pytest.raises(DatasetError, match=r"missing columns \['text', 'video', 'video_id', 'clip_id'\]"):
        read_manifest(path)
