"""Tests of the VEGAS readers (pipeline.data.vegas): raw layout, fold files, precomputed features."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.data.errors import DatasetError
from pipeline.data.vegas import (
    FEATURE_KEYS,
    FEATURE_MANIFEST_COLUMNS,
    MANIFEST_COLUMNS,
    fold_path,
    read_folds,
    read_vegas,
    read_vegas_features,
    valid_split,
    video_path,
    write_fold_files,
)
from pipeline.features.store import StoreError, read_arrays

CLASSES = ("dog", "baby_cry", "chainsaw")  # sorted: baby_cry 0, chainsaw 1, dog 2
PER_CLASS = 5


def _layout(root: Path) -> Path:
    """3 classes x 5 (empty) videos, 5 folds with one video of each class: the reader never decodes."""
    folds: list[list[str]] = [[] for _ in range(5)]
    for c, name in enumerate(CLASSES):
        for j in range(PER_CLASS):
            video_id = f"{name[:3]}{j}"
            video_path(root, name, video_id).parent.mkdir(parents=True, exist_ok=True)
            video_path(root, name, video_id).touch()
            folds[(j + c) % 5].append(video_id)
    write_fold_files(root, folds)
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return _layout(tmp_path / "vegas")


# --------------------------------------------------------------------------- raw layout


def test_read_vegas_manifest(root: Path) -> None:
    manifest = read_vegas(root, test_fold=2, valid_fraction=0.25, seed=0)
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 15
    assert manifest.groupby("class_name")["label"].first().to_dict() == {"baby_cry": 0, "chainsaw": 1, "dog": 2}
    assert manifest["label"].is_monotonic_increasing
    assert (manifest["fold"] == manifest["id"].map(read_folds(root))).all()
    assert set(manifest.loc[manifest["split"] == "test", "id"]) == set(fold_path(root, 2).read_text().split())
    # 12 clips outside the test fold, a quarter (3) to valid, one per class (stratified)
    valid = manifest[manifest["split"] == "valid"]
    assert len(valid) == 3 and sorted(valid["label"]) == [0, 1, 2]
    assert (manifest["split"] == "train").sum() == 9
    for row in manifest.itertuples():
        assert Path(row.video) == video_path(root, row.class_name, row.id)


def test_read_vegas_validation_split_is_seeded(root: Path) -> None:
    def valid_ids(seed: int) -> list[str]:
        manifest = read_vegas(root, test_fold=1, valid_fraction=0.5, seed=seed)
        return sorted(manifest.loc[manifest["split"] == "valid", "id"])

    assert valid_ids(0) == valid_ids(0)
    assert any(valid_ids(0) != valid_ids(s) for s in range(1, 6))


def test_read_vegas_ignores_hidden_folders_other_files_and_comments(root: Path) -> None:
    (root / ".cache").mkdir()
    (root / "dog" / "notes.txt").write_text("not a video")
    (root / "README.md").write_text("VEGAS")
    path = fold_path(root, 1)
    path.write_text("# fold 1\n\n" + path.read_text() + "   \n")
    assert len(read_vegas(root, 1, 0.25, 0)) == 15


def _raises(match: str, root: Path, **kwargs: object) -> None:
    args = {"test_fold": 1, "valid_fraction": 0.25, "seed": 0, **kwargs}
    with pytest.raises(DatasetError, match=match):
        read_vegas(root, **args)  # type: ignore[arg-type]


def test_missing_root(tmp_path: Path) -> None:
    _raises("raw VEGAS directory .* not found", tmp_path / "absent")


def test_missing_fold_file(root: Path) -> None:
    fold_path(root, 4).unlink()
    _raises(re.escape(str(fold_path(root, 4))), root)
    (root / "folds" / "fold_1.txt").unlink()
    (root / "folds" / "fold_2.txt").unlink()
    _raises("fold files missing: .*fold_1.txt.*fold_2.txt.*fold_4.txt", root)


def test_extra_fold_file(root: Path) -> None:
    fold_path(root, 6).write_text("dog0\n")
    _raises(r"fold files \['fold_6.txt'\] beyond the 5 folds", root)


def test_empty_fold(root: Path) -> None:
    fold_path(root, 3).write_text("# nothing\n")
    _raises("fold_3.txt lists no video id", root)


def test_id_in_two_folds(root: Path) -> None:
    with fold_path(root, 5).open("a") as f:
        f.write("dog0\n")
    _raises(r"listed more than once .*dog0 in \['fold_\d.txt', 'fold_5.txt'\]", root)


def test_id_twice_in_one_fold(root: Path) -> None:
    first = fold_path(root, 1).read_text().split()[0]
    with fold_path(root, 1).open("a") as f:
        f.write(f"{first}\n")
    _raises(rf"{first} in \['fold_1.txt', 'fold_1.txt'\]", root)


def test_id_in_fold_without_video(root: Path) -> None:
    with fold_path(root, 2).open("a") as f:
        f.write("ghost7\n")
    _raises(r"ids listed in \['fold_2.txt'\] without a video .*ghost7", root)


def test_video_in_no_fold(root: Path) -> None:
    video_path(root, "chainsaw", "extra9").touch()
    _raises(r"videos in no fold file: .*chainsaw/extra9.mp4", root)


def test_duplicate_id_across_classes(root: Path) -> None:
    video_path(root, "dog", "bab0").touch()
    _raises(r"used in several class folders .*bab0: .*baby_cry/bab0.mp4.*dog/bab0.mp4", root)


def test_empty_class_folder(root: Path) -> None:
    (root / "helicopter").mkdir()
    (root / "helicopter" / "readme.txt").write_text("")
    _raises(r"class folders without any .mp4 video: .*helicopter", root)


def test_no_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "vegas"
    write_fold_files(root, [[f"v{k}"] for k in range(5)])
    _raises("no class folders", root)


def test_bad_test_fold_and_valid_fraction(root: Path) -> None:
    with pytest.raises(ValueError, match="test_fold must be in 1..5"):
        read_vegas(root, 6, 0.25, 0)
    _raises("valid_fraction must be in", root, valid_fraction=0.0)
    _raises("leaves none for training", root, valid_fraction=0.99)


def test_valid_split_stratified_and_seeded() -> None:
    labels = np.repeat([0, 1, 2, 3], [10, 20, 30, 40])  # (100,)
    mask = valid_split(labels, 0.1, seed=0)
    assert mask.sum() == 10
    assert np.bincount(labels[mask], minlength=4).tolist() == [1, 2, 3, 4]
    assert np.array_equal(mask, valid_split(labels, 0.1, seed=0))
    assert not np.array_equal(mask, valid_split(labels, 0.1, seed=1))
    uneven = valid_split(np.repeat([0, 1, 2], [3, 3, 4]), 0.3, seed=0)  # 3 of 10: one per class
    assert uneven.sum() == 3 and np.bincount(np.repeat([0, 1, 2], [3, 3, 4])[uneven]).tolist() == [1, 1, 1]


# --------------------------------------------------------------------------- precomputed features


def _features(path: Path, n_train: int = 12, n_test: int = 6, labels: str = "int", **overrides: np.ndarray) -> Path:
    """A small vegas_feature.h5: 128-d audio, 1024-d visual, 4 classes."""
    rng = np.random.default_rng(0)
    data: dict[str, np.ndarray] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        classes = np.arange(n) % 4
        data[f"audio_{split}"] = rng.integers(0, 256, size=(n, 128)).astype(np.uint8)  # VGGish: quantised
        data[f"visual_{split}"] = rng.normal(size=(n, 1024)).astype(np.float32)
        data[f"lab_{split}"] = {"int": classes, "column": classes[:, None], "float": classes.astype(np.float64),
                                "onehot": np.eye(4)[classes]}[labels]
    data.update(overrides)
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            f.create_dataset(key, data=value)
    return path


@pytest.mark.parametrize("labels", ["int", "column", "float", "onehot"])
def test_read_features(tmp_path: Path, labels: str) -> None:
    features = read_vegas_features(_features(tmp_path / "vegas_feature.h5", labels=labels))
    assert features.audio.shape == (18, 128) and features.audio.dtype == np.float32
    assert features.visual.shape == (18, 1024) and features.visual.dtype == np.float32
    assert features.labels.dtype == np.int64
    assert features.labels.tolist() == (np.arange(12) % 4).tolist() + (np.arange(6) % 4).tolist()
    assert features.num_classes == 4
    manifest = features.manifest
    assert tuple(manifest.columns) == FEATURE_MANIFEST_COLUMNS
    assert manifest["id"].tolist()[:2] == ["train_000000", "train_000001"]
    assert manifest["id"].tolist()[-1] == "test_000005"
    assert manifest["split"].tolist() == ["train"] * 12 + ["test"] * 6
    assert manifest["label"].tolist() == features.labels.tolist()


def test_read_features_values_and_valid_split(tmp_path: Path) -> None:
    path = _features(tmp_path / "f.h5")
    with h5py.File(path, "r") as f:
        audio_test = f["audio_test"][()]
    features = read_vegas_features(path, valid_fraction=1 / 3, seed=0)
    assert np.array_equal(features.audio[12:], audio_test.astype(np.float32))
    valid = features.manifest[features.manifest["split"] == "valid"]
    assert len(valid) == 4 and sorted(valid["label"]) == [0, 1, 2, 3]
    assert valid["id"].str.startswith("train_").all()
    assert (features.manifest["split"] == "test").sum() == 6


def test_read_features_missing_key(tmp_path: Path) -> None:
    path = _features(tmp_path / "f.h5")
    with h5py.File(path, "a") as f:
        del f["lab_test"]
    with pytest.raises(DatasetError, match=r"missing datasets \['lab_test'\]"):
        read_vegas_features(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"audio_train": np.zeros((12, 127))}, "audio_train has 127 features per clip, expected 128"),
        ({"visual_test": np.zeros((6, 512))}, "visual_test has 512 features per clip, expected 1024"),
        ({"audio_test": np.zeros(6)}, "audio_test has shape \\(6,\\); expected 2-D"),
        ({"visual_train": np.zeros((11, 1024))}, "train row counts differ: audio_train 12, visual_train 11"),
        ({"lab_train": np.full(12, 0.5)}, "lab_train must hold class indices"),
        ({"lab_test": -np.ones(6)}, "lab_test must hold class indices"),
        ({"lab_test": np.ones((6, 4))}, "lab_test looks one-hot .* rows"),
        ({"lab_test": np.zeros((6, 2, 2))}, "lab_test has shape"),
        ({"visual_train": np.full((12, 1024), np.nan)}, "visual_train has 12288 non-finite values"),
    ],
)
def test_read_features_rejects_bad_arrays(tmp_path: Path, overrides: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        read_vegas_features(_features(tmp_path / "f.h5", **overrides))


def test_read_features_dimensions_and_classes(tmp_path: Path) -> None:
    path = _features(tmp_path / "f.h5", audio_train=np.zeros((12, 64)), audio_test=np.zeros((6, 64)))
    assert read_vegas_features(path, audio_dim=None).audio.shape == (18, 64)
    with pytest.raises(DatasetError, match="expected 128"):
        read_vegas_features(path)
    with pytest.raises(DatasetError, match="3 classes are expected"):
        read_vegas_features(_features(tmp_path / "g.h5"), num_classes=3)
    mixed = _features(tmp_path / "h.h5", labels="onehot", lab_test=np.eye(5)[np.arange(6) % 4])
    with pytest.raises(DatasetError, match="one-hot label widths differ"):
        read_vegas_features(mixed)


def test_read_features_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        read_vegas_features(tmp_path / "absent.h5")
    text = tmp_path / "vegas_feature.h5"
    text.write_text("not hdf5")
    with pytest.raises(DatasetError, match="not an HDF5 file"):
        read_vegas_features(text)


def test_store_read_arrays(tmp_path: Path) -> None:
    path = tmp_path / "any.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(3))
        f.create_group("g")
    assert read_arrays(path, ["x"])["x"].tolist() == [0, 1, 2]
    with pytest.raises(StoreError, match=r"missing datasets \['g', 'y'\]; it has \['x'\]"):
        read_arrays(path, ["x", "g", "y"])


def test_feature_keys() -> None:
    assert set(FEATURE_KEYS) == {"audio_train", "visual_train", "lab_train", "audio_test", "visual_test", "lab_test"}


# --------------------------------------------------------------------------- as a pipeline dataset


def test_vegas_dataset_manifest_round_trips_with_its_classes(root: Path, tmp_path: Path) -> None:
    from pipeline.core.config import PrepareParams
    from pipeline.data.datasets import MANIFEST_COLUMNS as COMMON
    from pipeline.data.datasets import dataset_classes, read_dataset, read_manifest, write_manifest

    spec, manifest = read_dataset("vegas", root, PrepareParams(test_fold=2, valid_fraction=0.25, split_seed=0))
    assert spec.task == "retrieval" and spec.metric_set == "retrieval"
    write_manifest(manifest, tmp_path / "manifest.csv")
    back = read_manifest(tmp_path / "manifest.csv")
    assert list(back.columns) == [*COMMON, "class_name", "fold"]
    assert (back["text"] == "").all() and (back["video_id"] == back["id"]).all()
    assert dataset_classes(back) == ["baby_cry", "chainsaw", "dog"]
    assert dataset_classes(back.drop(columns="class_name")) is None  # a sentiment manifest has no classes
    broken = back.assign(class_name=back["class_name"].where(back["label"] != 1, "dog"))
    with pytest.raises(DatasetError, match="do not pair one to one"):
        dataset_classes(broken)
