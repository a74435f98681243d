"""VEGAS readers: the raw video layout (class folders + fold files) and the precomputed features.

VEGAS (Zhou et al., "Visual to Sound: Generating Natural Sound for Videos in the Wild", CVPR 2018)
has 10 sound classes (baby crying, chainsaw, dog, drum, fireworks, ...); the audio-visual
retrieval setup of Zeng, Yu and Oyama (TNN-C-CCA, ACM TOMM 2020) evaluates it by 5-fold
cross-validation, and VideoAdviser reports mAP on it. Zeng et al.'s fold lists are not public in
a form found here, so this module defines its own simple fold-file format (below); the
precomputed-feature file follows the one circulated with that line of work (``vegas_feature.h5``,
read e.g. by zhangjiwei-japan/cross-modal-visual-audio-retrieval, datasets/load_data_vegas_ave.py).

Raw layout (``read_vegas``)::

    <root>/<class_name>/<video_id>.mp4     one folder per class; a video id is its file name without .mp4
    <root>/folds/fold_1.txt ... fold_5.txt one video id per line; blank lines and lines starting with # ignored

Every folder under ``<root>`` is a class except ``folds`` and hidden folders (name starting with
"."); class index = position in the sorted class names (``label``), files other than ``.mp4``
are ignored. Every video must appear in exactly one fold, and every id in a fold must be a
video. Splits: the ``test_fold`` is ``test``; of the other folds, a fraction ``valid_fraction``
is ``valid``, stratified by class and drawn with ``seed`` (``valid_split``), the rest ``train``.
The manifest has the columns ``MANIFEST_COLUMNS`` = id, split, label, class_name, video, fold,
rows ordered by class then id.

Features (``read_vegas_features``): an HDF5 file with the datasets ``audio_train`` (N, 128)
VGGish, ``visual_train`` (N, 1024) Inception, ``lab_train`` (N,) class indices (or (N, 1), or
(N, K) one-hot), and the same three for ``test``. Arrays come back float32 / int64, stacked
train then test, with a manifest (id ``train_000123`` / ``test_000045``: split and row in the
file, split, label); ``valid_fraction`` > 0 moves a stratified, seeded part of train to
``valid``. HDF5 is read through ``store.read_arrays`` (features/store.py is the only module importing h5py).

Every problem raises ``DatasetError`` naming the files at fault and what to fix.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.errors import DatasetError
from pipeline.features.store import StoreError, read_arrays

log = logging.getLogger(__name__)

FOLDS_DIR = "folds"
VIDEO_SUFFIX = ".mp4"
N_FOLDS = 5
MANIFEST_COLUMNS: tuple[str, ...] = ("id", "split", "label", "class_name", "video", "fold")
FEATURE_MANIFEST_COLUMNS: tuple[str, ...] = ("id", "split", "label")
VGGISH_DIM = 128
INCEPTION_DIM = 1024
FEATURE_SPLITS: tuple[str, ...] = ("train", "test")
FEATURE_KEYS: tuple[str, ...] = tuple(f"{kind}_{split}" for split in FEATURE_SPLITS
                                      for kind in ("audio", "visual", "lab"))
_FOLD_FILE = re.compile(r"fold_(\d+)\.txt")


def _listing(items: Sequence[object], limit: int = 5) -> str:
    """`[a, b, c] and 7 more (10 in all)`: a bounded list for error messages."""
    items = list(items)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"{[str(i) for i in items[:limit]]}{more} ({len(items)} in all)"


# --------------------------------------------------------------------------- raw layout


def fold_path(root: Path, fold: int) -> Path:
    """``<root>/folds/fold_<k>.txt``, k = 1..n_folds."""
    return Path(root) / FOLDS_DIR / f"fold_{fold}.txt"


def video_path(root: Path, class_name: str, video_id: str) -> Path:
    """``<root>/<class_name>/<video_id>.mp4``."""
    return Path(root) / class_name / f"{video_id}{VIDEO_SUFFIX}"


def write_fold_files(root: Path, folds: Sequence[Sequence[str]]) -> None:
    """Write ``folds[k - 1]`` (video ids) to ``fold_<k>.txt``, one id per line, each file atomically."""
    directory = Path(root) / FOLDS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for k, ids in enumerate(folds, start=1):
        path = fold_path(root, k)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{video_id}\n" for video_id in ids))
        os.replace(tmp, path)


def class_names(root: Path) -> list[str]:
    """Class folder names under ``root``, sorted (class index = position); ``folds`` and hidden folders excluded."""
    return sorted(p.name for p in Path(root).iterdir()
                  if p.is_dir() and p.name != FOLDS_DIR and not p.name.startswith("."))


def _read_fold_file(path: Path) -> list[str]:
    """Video ids of one fold file: stripped lines, blank lines and `#` comments skipped."""
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.append(line)
    return ids


def read_folds(root: Path, n_folds: int = N_FOLDS) -> dict[str, int]:
    """Fold (1..n_folds) of every video id listed in ``<root>/folds/fold_<k>.txt``.

    Raises DatasetError for missing fold files, fold files beyond ``n_folds``, an empty fold,
    and ids listed twice (in one file or in several), naming the files.
    """
    root = Path(root)
    directory = root / FOLDS_DIR
    missing = [str(fold_path(root, k)) for k in range(1, n_folds + 1) if not fold_path(root, k).is_file()]
    if missing:
        raise DatasetError(
            f"VEGAS fold files missing: {missing}. The raw layout needs {n_folds} files "
            f"{directory}/fold_1.txt .. fold_{n_folds}.txt, each listing video ids (file names without "
            f"{VIDEO_SUFFIX}) one per line; every video in exactly one fold.")
    extra = sorted(p.name for p in directory.iterdir()
                   if (m := _FOLD_FILE.fullmatch(p.name)) and not 1 <= int(m.group(1)) <= n_folds)
    if extra:
        raise DatasetError(f"{directory}: fold files {extra} beyond the {n_folds} folds expected "
                           f"(fold_1.txt .. fold_{n_folds}.txt): merge their ids into those or remove them")
    where: dict[str, list[str]] = {}
    folds: dict[str, int] = {}
    for k in range(1, n_folds + 1):
        ids = _read_fold_file(fold_path(root, k))
        if not ids:
            raise DatasetError(f"{fold_path(root, k)} lists no video id: every fold needs at least one video")
        for video_id in ids:
            where.setdefault(video_id, []).append(fold_path(root, k).name)
            folds[video_id] = k
    repeated = {i: files for i, files in where.items() if len(files) > 1}
    if repeated:
        detail = "; ".join(f"{i} in {files}" for i, files in list(repeated.items())[:5])
        raise DatasetError(f"{directory}: video ids listed more than once ({len(repeated)} ids: {detail}). "
                           f"Each video belongs to exactly one fold: keep one line per id.")
    return folds


def _scan_videos(root: Path) -> pd.DataFrame:
    """id, class_name, video of every ``<root>/<class>/<id>.mp4``; DatasetError for empty classes and duplicate ids."""
    classes = class_names(root)
    if not classes:
        raise DatasetError(f"{root}: no class folders. The VEGAS layout is <root>/<class_name>/<video_id>"
                           f"{VIDEO_SUFFIX} (one folder per class) plus {root / FOLDS_DIR}/fold_<k>.txt")
    rows, empty = [], []
    for name in classes:
        videos = sorted(p for p in (root / name).iterdir() if p.is_file() and p.suffix == VIDEO_SUFFIX)
        if not videos:
            empty.append(str(root / name))
        rows += [{"id": p.stem, "class_name": name, "video": str(p)} for p in videos]
    if empty:
        raise DatasetError(f"class folders without any {VIDEO_SUFFIX} video: {empty}. Add the class's videos "
                           f"or remove the folder (every folder under {root} but {FOLDS_DIR}/ is a class).")
    table = pd.DataFrame(rows, columns=["id", "class_name", "video"])
    dup = table["id"].duplicated(keep=False)
    if dup.any():
        groups = table[dup].groupby("id")["video"].apply(list)
        detail = "; ".join(f"{i}: {paths}" for i, paths in list(groups.items())[:5])
        raise DatasetError(f"{root}: video ids (file names) used in several class folders ({len(groups)} ids: "
                           f"{detail}). A video id must be unique across classes: rename or remove the copies.")
    return table


def valid_split(labels: np.ndarray, valid_fraction: float, seed: int) -> np.ndarray:
    """Which items go to validation: (N,) bool, stratified by class, seeded.

    round(valid_fraction * N) items (at least 1) are shared among the classes in proportion to
    their sizes (largest remainder, ties by class index); each class's items are drawn with
    ``np.random.default_rng(seed)``, classes in ascending order. Raises ValueError when the
    fraction is not in (0, 1) or would leave no training item.
    """
    labels = np.asarray(labels)  # (N,)
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    n = len(labels)
    n_valid = max(1, int(round(valid_fraction * n)))
    if n_valid >= n:
        raise ValueError(f"valid_fraction={valid_fraction} of {n} training clips leaves none for training")
    classes, counts = np.unique(labels, return_counts=True)  # (C,), (C,)
    quota = counts * n_valid / n  # (C,) exact shares of n_valid
    take = np.floor(quota).astype(int)  # (C,)
    remainder_order = np.argsort(-(quota - take), kind="stable")  # (C,) largest remainder first
    take[remainder_order[: n_valid - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    for label, k in zip(classes, take, strict=True):
        members = np.flatnonzero(labels == label)  # (n_c,)
        mask[rng.permutation(members)[:k]] = True
    return mask


def read_vegas(root: Path, test_fold: int, valid_fraction: float, seed: int, n_folds: int = N_FOLDS
               ) -> pd.DataFrame:
    """Validate a raw VEGAS-layout directory and return its manifest (columns MANIFEST_COLUMNS).

    Args:
        root: ``<root>/<class_name>/<video_id>.mp4`` + ``<root>/folds/fold_<k>.txt`` (module docstring).
        test_fold: the fold (1..n_folds) that is the test split.
        valid_fraction: part of the other folds' clips that is the validation split, in (0, 1).
        seed: seed of the validation draw.
        n_folds: number of fold files.

    Raises DatasetError naming the files at fault: no directory, missing / extra / empty fold
    files, empty class folders, ids used in two class folders, ids listed twice in the folds,
    ids in folds without a video, videos in no fold. ValueError for a bad test_fold or fraction.
    """
    root = Path(root)
    if not 1 <= test_fold <= n_folds:
        raise ValueError(f"test_fold must be in 1..{n_folds}, got {test_fold}")
    if not root.is_dir():
        raise DatasetError(
            f"raw VEGAS directory {root} not found. Put the dataset there (copy, symlink or `dvc add`): "
            f"<root>/<class_name>/<video_id>{VIDEO_SUFFIX} plus {FOLDS_DIR}/fold_1.txt .. fold_{n_folds}.txt")
    folds = read_folds(root, n_folds)
    videos = _scan_videos(root)
    no_video = sorted(set(folds) - set(videos["id"]))
    if no_video:
        files = sorted({fold_path(root, folds[i]).name for i in no_video})
        raise DatasetError(f"{root / FOLDS_DIR}: ids listed in {files} without a video "
                           f"<class_name>/<id>{VIDEO_SUFFIX}: {_listing(no_video)}. Add the videos or remove "
                           f"the ids from the fold files.")
    unlisted = videos.loc[~videos["id"].isin(folds), "video"].tolist()
    if unlisted:
        raise DatasetError(f"videos in no fold file: {_listing(unlisted)}. Add each id (file name without "
                           f"{VIDEO_SUFFIX}) to one of {root / FOLDS_DIR}/fold_<k>.txt, or remove the video.")

    classes = class_names(root)
    manifest = videos.assign(label=videos["class_name"].map({c: i for i, c in enumerate(classes)}),
                             fold=videos["id"].map(folds))
    manifest = manifest.sort_values(["label", "id"], kind="stable").reset_index(drop=True)
    split = np.where(manifest["fold"] == test_fold, "test", "train").astype(object)  # (N,)
    rest = np.flatnonzero(split == "train")  # (N_rest,)
    if rest.size == 0:
        raise DatasetError(f"{root}: every video is in the test fold {test_fold}: the other folds are empty")
    try:
        valid = valid_split(manifest["label"].to_numpy()[rest], valid_fraction, seed)  # (N_rest,)
    except ValueError as err:
        raise DatasetError(f"{root}: {err} (clips outside test fold {test_fold})") from err
    split[rest[valid]] = "valid"
    manifest["split"] = split
    manifest = manifest.loc[:, list(MANIFEST_COLUMNS)]
    log.info("read VEGAS layout %s: %d clips, %d classes, test fold %d: %s", root, len(manifest), len(classes),
             test_fold, manifest["split"].value_counts().to_dict())
    return manifest


# --------------------------------------------------------------------------- precomputed features


@dataclasses.dataclass(frozen=True)
class VegasFeatures:
    """Precomputed features, rows aligned with ``manifest`` (train rows, then test rows)."""

    audio: np.ndarray  # (N, Da) float32, VGGish
    visual: np.ndarray  # (N, Dv) float32, Inception
    labels: np.ndarray  # (N,) int64 class indices
    num_classes: int  # K
    manifest: pd.DataFrame  # FEATURE_MANIFEST_COLUMNS: id, split, label


def _class_indices(values: np.ndarray, key: str, path: Path) -> tuple[np.ndarray, int | None]:
    """Class indices (N,) int64 of a label dataset, and K when one-hot encoded (else None)."""
    lab = np.asarray(values)
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab[:, 0]  # (N, 1) column of indices
    if not np.issubdtype(lab.dtype, np.number) and lab.dtype != bool:
        raise DatasetError(f"{path}: {key} has dtype {lab.dtype}; expected class indices or one-hot rows")
    if lab.ndim == 2:  # (N, K) one-hot
        hot = lab == 1
        bad = np.flatnonzero((hot.sum(axis=1) != 1) | ((lab != 0) & ~hot).any(axis=1))
        if bad.size:
            raise DatasetError(f"{path}: {key} looks one-hot (shape {lab.shape}) but rows {_listing(bad)} "
                               f"do not hold exactly one 1 and zeros elsewhere")
        return hot.argmax(axis=1).astype(np.int64), lab.shape[1]
    if lab.ndim != 1:
        raise DatasetError(f"{path}: {key} has shape {lab.shape}; expected (N,), (N, 1) or one-hot (N, K)")
    bad = np.flatnonzero(~np.isfinite(lab.astype(np.float64)) | (lab < 0) | (lab != np.round(lab)))
    if bad.size:
        raise DatasetError(f"{path}: {key} must hold class indices (integers >= 0); bad values at rows "
                           f"{_listing(bad)}, e.g. {lab[bad[0]]!r}")
    return lab.astype(np.int64), None


def read_vegas_features(path: Path, audio_dim: int | None = VGGISH_DIM, visual_dim: int | None = INCEPTION_DIM,
                        num_classes: int | None = None, valid_fraction: float = 0.0, seed: int = 0
                        ) -> VegasFeatures:
    """Import a ``vegas_feature.h5`` (datasets FEATURE_KEYS) as arrays plus a manifest.

    Args:
        path: the HDF5 file.
        audio_dim, visual_dim: expected feature sizes (128 VGGish, 1024 Inception in the public
            release); None accepts any size (the same in train and test).
        num_classes: expected K; None takes it from the one-hot width or the largest index + 1.
        valid_fraction: part of train moved to ``valid`` (stratified, seeded by ``seed``); 0 keeps none.
        seed: seed of that draw.

    Raises DatasetError naming the file: missing datasets, arrays that are not 2-D, feature sizes
    other than expected, row counts that differ within a split, labels that are neither indices
    nor one-hot, indices out of range, non-finite features.
    """
    path = Path(path)
    try:
        arrays = read_arrays(path, FEATURE_KEYS)
    except StoreError as err:
        raise DatasetError(f"VEGAS features: {err}. Expected the datasets {list(FEATURE_KEYS)}") from err
    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    widths: set[int] = set()
    for split in FEATURE_SPLITS:
        audio, visual = arrays[f"audio_{split}"], arrays[f"visual_{split}"]
        for key, feats, dim in ((f"audio_{split}", audio, audio_dim), (f"visual_{split}", visual, visual_dim)):
            if feats.ndim != 2:
                raise DatasetError(f"{path}: {key} has shape {feats.shape}; expected 2-D (N, D) clip features")
            if dim is not None and feats.shape[1] != dim:
                raise DatasetError(f"{path}: {key} has {feats.shape[1]} features per clip, expected {dim} "
                                   f"(shape {feats.shape}); pass the right size if this file is not the public release")
            if not np.isfinite(feats).all():
                raise DatasetError(f"{path}: {key} has {int((~np.isfinite(feats)).sum())} non-finite values")
        labels, width = _class_indices(arrays[f"lab_{split}"], f"lab_{split}", path)
        if width is not None:
            widths.add(width)
        if not len(audio) == len(visual) == len(labels):
            raise DatasetError(f"{path}: {split} row counts differ: audio_{split} {len(audio)}, visual_{split} "
                               f"{len(visual)}, lab_{split} {len(labels)}; the three must be aligned clip by clip")
        if len(audio) == 0:
            raise DatasetError(f"{path}: the {split} split has no clips")
        parts[split] = (audio, visual, labels)
    for kind, index in (("audio", 0), ("visual", 1)):
        dims = {split: parts[split][index].shape[1] for split in FEATURE_SPLITS}
        if len(set(dims.values())) > 1:
            raise DatasetError(f"{path}: {kind} feature sizes differ between splits: {dims}")
    if len(widths) > 1:
        raise DatasetError(f"{path}: one-hot label widths differ between lab_train and lab_test: {sorted(widths)}")

    labels = np.concatenate([parts[s][2] for s in FEATURE_SPLITS])  # (N,)
    width = next(iter(widths), None)  # K of one-hot labels, None for indices
    k = num_classes if num_classes is not None else (width if width is not None else int(labels.max()) + 1)
    if (width is not None and width != k) or labels.max() >= k:
        raise DatasetError(f"{path}: labels reach class {int(labels.max())} (one-hot width "
                           f"{width if width is not None else 'n/a'}) but {k} classes are expected")
    absent = sorted(set(range(k)) - set(labels.tolist()))
    if absent:
        log.warning("%s: classes %s have no clip (are the labels 1-based?)", path, absent)

    ids, splits = [], []
    for split in FEATURE_SPLITS:
        n = len(parts[split][2])
        width = max(6, len(str(n - 1)))
        ids += [f"{split}_{i:0{width}d}" for i in range(n)]
        splits += [split] * n
    split_array = np.array(splits, dtype=object)  # (N,)
    if valid_fraction > 0:
        train = np.flatnonzero(split_array == "train")  # (N_train,)
        split_array[train[valid_split(labels[train], valid_fraction, seed)]] = "valid"
    manifest = pd.DataFrame({"id": ids, "split": split_array, "label": labels},
                            columns=list(FEATURE_MANIFEST_COLUMNS))
    features = VegasFeatures(
        audio=np.concatenate([parts[s][0] for s in FEATURE_SPLITS]).astype(np.float32),  # (N, Da)
        visual=np.concatenate([parts[s][1] for s in FEATURE_SPLITS]).astype(np.float32),  # (N, Dv)
        labels=labels,
        num_classes=k,
        manifest=manifest,
    )
    log.info("read VEGAS features %s: audio %s, visual %s, %d classes, %s", path, features.audio.shape,
             features.visual.shape, k, manifest["split"].value_counts().to_dict())
    return features
