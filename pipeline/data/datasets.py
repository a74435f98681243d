"""Datasets: the table of known datasets, their readers, and the manifest they produce.

Every dataset lives at `data/raw/<name>/` (`paths.raw_dir`; generated for synthetic ones,
provided by the user for real ones: a copy, a symlink, or a `dvc add`-ed folder) and is turned
by the `prepare` stage into one manifest, `data/prepared/<name>/manifest.csv`, with one row per
clip, the columns MANIFEST_COLUMNS and, when the dataset has them, OPTIONAL_COLUMNS.

MMSA layout (`mmsa`: CMU-MOSI, CMU-MOSEI, CH-SIMS and the synthetic default), as in the MMSA
toolkit and MMSA-FET::

    <root>/label.csv                     video_id, clip_id, text, label, [label_T, label_A, label_V],
                                         annotation, mode (train | valid | test)
    <root>/Raw/<video_id>/<clip_id>.mp4

The manifest's id is `<video_id>$_$<clip_id>` (`clip_key`). The unimodal labels label_T,
label_A, label_V (CH-SIMS has them; MMSA's MOSI/MOSEI files have the columns but leave them
empty) are kept as manifest columns when label.csv has at least one value in them; an empty
cell becomes NaN. `annotation` is not used.

CSV layout (`csv`: the `csv` dataset), any list of clips::

    data/raw/csv/manifest.csv            id, split, label, text, video, [audio]

`video` (and `audio`) is a path relative to the directory of manifest.csv, or absolute; it is
written to the manifest as that directory joined with the relative path (absolute paths as
they are). `audio` is optional: a separate audio file per clip (an empty cell: none), copied
to the manifest's `audio` column; no stage reads it yet (extract@audio decodes the audio
track of `video`). `video_id` is the id and `clip_id` is empty. Labels may be any finite
numbers: the range of a csv dataset is not fixed (its metrics assume the MOSI/MOSEI scale,
[-3, 3]; register a DatasetSpec with its own range and metric set for another scale). Files
outside data/raw/csv are allowed but not tracked by DVC (the `prepare` stage depends on
data/raw/csv only), so keep them inside for reproducibility.

Validation happens before any work. First, every row of the CSV must have as many fields as
its header (blank lines are skipped, as pandas does): an unquoted comma in a text shifts every
later column, so rows that do not fit are reported alone, by line number as an editor counts
lines, with the hint to quote such texts (and, when one extra field splits a number in the
label column, to write a decimal point). Then every problem found is reported in one
DatasetError (rows named by clip id, or by data row number when the id is unusable; at most 5
shown, with the count): missing columns, missing files, files no row names (MMSA: `.mp4` files
under Raw/), duplicate ids, labels that are not numbers (a decimal comma, `0,5`, is pointed
out) or outside the dataset's label range, unknown splits, unsafe paths, empty splits.

Names are compared in Unicode NFC form (macOS writes file names in NFD, a CSV mostly holds
NFC): video_id, clip_id (csv layout: id, video, audio) are normalised to NFC when read, so ids
(duplicates too) are compared and written in NFC, and a file whose name differs from its row's
only in normal form is found; the manifest holds the path as spelled on disk.

Paths must stay inside the dataset root (MMSA): video_id and clip_id must be plain names (not
empty, `.` or `..`, no `/` or `\\`), and any symlink inside the root (label.csv, Raw/, a video
folder, a clip) must resolve inside the root, so the folder that is versioned or linked is
the whole dataset. The root itself may be a symlink (`data/raw/mosi -> /datasets/CMU-MOSI`):
"inside" is measured from the root's resolved path.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.config import PrepareParams, load_section
from pipeline.core.errors import MissingInput
from pipeline.core.registry import Registry
from pipeline.data.errors import DatasetError
from pipeline.data.vegas import FOLDS_DIR, read_vegas, read_vegas_features

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("id", "split", "label", "text", "video", "video_id", "clip_id")
UNIMODAL_LABELS = ("label_T", "label_A", "label_V")
CLASS_COLUMNS = ("class_name", "fold")  # classification/retrieval datasets (VEGAS layout): label = class index
OPTIONAL_COLUMNS = (*UNIMODAL_LABELS, "audio", *CLASS_COLUMNS)  # written after MANIFEST_COLUMNS when present
SPLITS = ("train", "valid", "test")
MMSA_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")
CSV_COLUMNS = ("id", "split", "label", "text", "video")
CSV_OPTIONAL_COLUMNS = ("audio",)
CSV_MANIFEST = "manifest.csv"  # of the csv dataset, at data/raw/csv/manifest.csv
VIDEO_SUFFIX = ".mp4"
SHOWN = 5  # offending rows or files named in a message; the rest are counted
VEGAS_FEATURE_FILE = "vegas_feature.h5"  # the vegas_features dataset: data/raw/vegas_features/vegas_feature.h5
CLASS_NAMES_FILE = "classes.txt"  # optional next to it: one class name per line, in label order


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str  # sentiment (regression, MMSA metrics) | retrieval (K classes, audio-visual mAP)
    layout: str  # mmsa | csv | vegas | vegas_features (a key of READERS)
    label_range: tuple[float, float]  # inclusive; (-inf, inf): any finite number
    synthetic: bool  # generated by the `generate` stage rather than provided by the user
    description: str
    metric_set: str  # a key of metrics.METRIC_SETS: the metrics the dataset's results are scored with
    # what `extract.<m>.source: auto` means for it, per modality (features/precomputed.py); absent: `media`
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    media: bool = True  # its clips are videos to decode (False: it is only precomputed features)


DATASETS: Registry[DatasetSpec] = Registry("dataset")
for _spec in (
    DatasetSpec("synthetic_sentiment", "sentiment", "mmsa", (-3.0, 3.0), True,
                "generated MMSA-layout clips whose frames, audio and transcript each carry part of the label",
                "mosi_mosei"),
    DatasetSpec("mosi", "sentiment", "mmsa", (-3.0, 3.0), False, "CMU-MOSI (Zadeh et al. 2016), MMSA layout",
                "mosi_mosei"),
    DatasetSpec("mosei", "sentiment", "mmsa", (-3.0, 3.0), False, "CMU-MOSEI (Zadeh et al. 2018), MMSA layout",
                "mosi_mosei"),
    DatasetSpec("sims", "sentiment", "mmsa", (-1.0, 1.0), False,
                "CH-SIMS (Yu et al. ACL 2020), Chinese, MMSA layout with unimodal labels label_T/label_A/label_V",
                "sims"),
    DatasetSpec("csv", "sentiment", "csv", (-math.inf, math.inf), False,
                f"any clips listed in data/raw/csv/{CSV_MANIFEST} (id, split, label, text, video, [audio])",
                "mosi_mosei"),
    DatasetSpec("synthetic_av", "retrieval", "vegas", (0, math.inf), True,
                "generated VEGAS-layout clips (10 classes) whose frames and audio each carry the class with noise",
                "retrieval"),
    DatasetSpec("vegas", "retrieval", "vegas", (0, math.inf), False,
                "VEGAS (Zhou et al. CVPR 2018), 10 sound classes: <root>/<class>/<id>.mp4 + folds/fold_1..5.txt",
                "retrieval"),
    DatasetSpec("vegas_features", "retrieval", "vegas_features", (0, math.inf), False,
                f"VEGAS as the precomputed features released with Zeng et al.'s retrieval work: {VEGAS_FEATURE_FILE} "
                "(VGGish audio, Inception visual, 10 classes, its own train/test split)", "retrieval",
                sources={"video": f"{VEGAS_FEATURE_FILE}:visual", "audio": f"{VEGAS_FEATURE_FILE}:audio"},
                media=False),
):
    DATASETS.add(_spec.name, _spec)


def clip_key(video_id: str, clip_id: str) -> str:
    """MMSA's clip id, `<video_id>$_$<clip_id>`; also the HDF5 group name of the clip."""
    return f"{video_id}$_${clip_id}"


# --------------------------------------------------------------------------- messages


def _listing(items: Iterable[object]) -> str:
    """`['a', 'b'] and 3 more (5 in all)`: the first SHOWN items and the count."""
    values = [str(v) for v in items]
    more = f" and {len(values) - SHOWN} more" if len(values) > SHOWN else ""
    return f"{values[:SHOWN]}{more} ({len(values)} in all)"


def _raise(source: Path, spec: DatasetSpec, problems: list[str]) -> None:
    """One problem: one line. Several: a line each, under a line naming the file."""
    if len(problems) == 1:
        raise DatasetError(f"{source}: {problems[0]} ({spec.name} dataset: fix it and rerun `dvc repro prepare`)",
                           problems)
    if problems:
        raise DatasetError(f"{source}: {len(problems)} problems in the {spec.name} dataset (fix them and rerun "
                           "`dvc repro prepare`):\n" + "\n".join(f"  - {p}" for p in problems), problems)


def _row_names(table: pd.DataFrame, ids: pd.Series | None) -> pd.Series:
    """How a message names each row: its clip id, else its data row number (1 = the first under the header)."""
    numbers = pd.Series([f"row {i + 1}" for i in range(len(table))], index=table.index)
    if ids is None:
        return numbers
    return ids.where(ids != "", numbers)


def _decimal_comma(value: str) -> str | None:
    """'0,5' -> '0.5': the number a value written with a decimal comma means; None for anything else."""
    value = value.strip()
    return value.replace(",", ".") if re.fullmatch(r"[+-]?\d+,\d+", value) else None


def _label_problems(values: pd.Series, names: pd.Series, column: str, spec: DatasetSpec,
                    allow_empty: bool = False) -> list[str]:
    """What is wrong with a label column: non-numbers, non-finite values, values outside spec.label_range."""
    numbers = pd.to_numeric(values, errors="coerce").astype(np.float64)
    lo, hi = spec.label_range
    bad = ~np.isfinite(numbers) | (numbers < lo) | (numbers > hi)
    if allow_empty:
        bad &= values.astype(str).str.strip() != ""
    if not bad.any():
        return []
    expected = "finite numbers" if math.isinf(lo) and math.isinf(hi) else f"numbers in [{lo}, {hi}]"
    fixes = [_decimal_comma(str(v)) for v in values[bad]]
    shown = [f"{n} ({column} {str(v)!r}{f': looks like a decimal comma: write {d}' if d else ''})"
             for n, v, d in zip(names[bad], values[bad], fixes, strict=True)]
    return [f"{'labels' if column == 'label' else column + ' values'} must be {expected} for "
                     f"{spec.name}; bad {'labels' if column == 'label' else 'values'} in clips {_listing(shown)}"]


def _common_problems(names: pd.Series, splits: pd.Series | None, ids: pd.Series | None,
                     split_column: str) -> list[str]:
    """Split values and duplicate ids, the checks every layout shares."""
    problems = []
    if ids is not None:
        dup = ids.duplicated(keep=False) & (ids != "")
        if dup.any():
            problems.append(f"duplicate clip ids {_listing(ids[dup])}: each clip must appear once")
    if splits is not None:
        bad = ~splits.isin(SPLITS)
        if bad.any():
            problems.append(f"{split_column} must be one of {list(SPLITS)}; bad values {sorted(set(splits[bad]))} "
                            f"in clips {_listing(names[bad])}")
    return problems


def _empty_splits(splits: pd.Series | None) -> list[str]:
    if splits is None or splits.empty:
        return []
    empty = [s for s in SPLITS if not (splits == s).any()]
    return [f"splits {empty} have no clips; every split needs at least one"] if empty else []


def _files_under(top: Path) -> Iterator[Path]:
    """Every file below `top`, following symlinked folders, each real folder once (no symlink loops)."""
    seen: set[str] = set()
    for folder, subfolders, files in os.walk(top, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        for name in files:
            yield Path(folder) / name


def _inside(path: Path, real_root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(real_root)


# --------------------------------------------------------------------------- MMSA layout


def _plain_name(value: str) -> bool:
    """A single path component that stays where it is put: not empty, `.`, `..`, no separator or NUL."""
    return value not in ("", ".", "..") and not any(c in value for c in ("/", "\\", "\0"))


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _on_disk(path: Path, listings: dict[Path, dict[str, str]]) -> Path:
    """`path` as spelled on disk: a component missing as written is matched to the entry of its folder with
    the same NFC form (macOS writes names in NFD); as written when none is. `listings` caches each folder's
    entries by NFC form; a path that exists is returned without listing anything."""
    if path.parent == path or os.path.lexists(path):
        return path
    parent = _on_disk(path.parent, listings)
    if parent not in listings:
        try:
            listings[parent] = {_nfc(entry): entry for entry in os.listdir(parent)}
        except OSError:  # not a folder, or unreadable: the caller reports the missing file
            listings[parent] = {}
    return parent / listings[parent].get(_nfc(path.name), path.name)


def _field_count_problem(path: Path) -> str | None:
    """The rows of a CSV whose number of fields differs from its header's, as one problem naming their lines
    (where each row starts, as an editor counts lines); None when every row fits. Blank lines (empty or
    only whitespace) are skipped, as pandas does."""
    header: list[str] | None = None
    bad: list[tuple[int, list[str]]] = []  # (line, fields)
    limit = csv.field_size_limit(2**31 - 1)  # an unclosed quote may swallow the rest of the file into one field
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as file:
            reader = csv.reader(file)
            start = 1
            for row in reader:
                if len(row) > 1 or (row and row[0].strip()):
                    if header is None:
                        header = row
                    elif len(row) != len(header):
                        bad.append((start, row))
                start = reader.line_num + 1
    finally:
        csv.field_size_limit(limit)
    if header is None or not bad:
        return None
    problem = (f"rows with another number of fields than the header's {len(header)}: "
               f"{_listing(f'line {line}: {len(row)} fields' for line, row in bad)}; quote text that contains "
               f'commas ("like, this"), as the csv module / pandas write it')
    if "label" in header:  # one extra field that splits a number in the label column: 0,5 for 0.5
        k = header.index("label")
        split = [v for _, row in bad if len(row) == len(header) + 1 and _decimal_comma(v := f"{row[k]},{row[k + 1]}")]
        if split:
            problem += f"; a decimal comma in the label? write {_decimal_comma(split[0])}, not {split[0].strip()}"
    return problem


def _read_table(path: Path, spec: DatasetSpec, text_columns: tuple[str, ...],
                name_columns: tuple[str, ...]) -> pd.DataFrame:
    """A dataset's CSV with `text_columns` kept as strings (empty cells stay "") and `name_columns` (ids,
    file names) in NFC form. Raises DatasetError, alone, when rows do not have the header's number of fields.

    Bytes that are not UTF-8 become U+FFFD: a clip's bad transcript is reported by extract@text,
    not as an unreadable file."""
    problem = _field_count_problem(path)
    if problem:
        _raise(path, spec, [problem])
    table = pd.read_csv(path, dtype={c: str for c in text_columns}, keep_default_na=False, encoding="utf-8",
                        encoding_errors="replace")
    for column in name_columns:
        if column in table.columns:
            table[column] = table[column].map(_nfc)
    return table


def _table_problems(table: pd.DataFrame, required: tuple[str, ...], optional: str, name: str) -> list[str]:
    """Missing required columns and an empty table: the first problems every layout checks."""
    problems = []
    missing = [c for c in required if c not in table.columns]
    if missing:
        problems.append(f"missing columns {missing}; expected at least {list(required)} (optional {optional}), "
                        f"found {list(table.columns)}")
    if table.empty:
        problems.append(f"no clips: {name} has no rows")
    return problems


def read_mmsa(root: Path, spec: DatasetSpec) -> pd.DataFrame:
    """Validate an MMSA-layout directory and return its manifest (MANIFEST_COLUMNS, then any unimodal labels).

    Raises DatasetError listing every problem found (see the module docstring) before any work.
    """
    if not root.is_dir():
        raise DatasetError(
            f"raw dataset directory {root} not found. Put {spec.name} there in the MMSA layout "
            f"(label.csv + Raw/<video_id>/<clip_id>.mp4): copy it, symlink it (`ln -s /path/to/{spec.name.upper()} "
            f"{root}`) or `dvc add {root}`."
        )
    label_csv = root / "label.csv"
    if not label_csv.is_file():
        raise DatasetError(f"{label_csv} not found: an MMSA-layout dataset has label.csv at its root")
    table = _read_table(label_csv, spec, ("video_id", "clip_id", "text", "mode"), ("video_id", "clip_id"))
    problems = _table_problems(table, MMSA_COLUMNS, f"{list(UNIMODAL_LABELS)}, annotation", label_csv.name)
    has_ids = {"video_id", "clip_id"} <= set(table.columns)
    ids = (pd.Series([clip_key(v, c) for v, c in zip(table["video_id"], table["clip_id"], strict=True)],
                     index=table.index, dtype=object) if has_ids else None)
    names = _row_names(table, ids)
    splits = table["mode"].astype(str) if "mode" in table.columns else None

    real_root = Path(os.path.realpath(root))
    raw = root / "Raw"
    if not _inside(label_csv, real_root):
        problems.append(f"label.csv resolves to {os.path.realpath(label_csv)}, outside the dataset root "
                        f"{real_root}: copy it in, or symlink the whole dataset root instead")
    raw_escapes = raw.exists() and not _inside(raw, real_root)
    if raw_escapes:
        problems.append(f"Raw/ resolves to {os.path.realpath(raw)}, outside the dataset root {real_root}: "
                        f"copy the videos in, or symlink the whole dataset root instead "
                        f"(`ln -s /path/to/{spec.name.upper()} {root}`)")

    videos = pd.Series(dtype=object)
    if has_ids:
        safe = table["video_id"].map(_plain_name).astype(bool) & table["clip_id"].map(_plain_name).astype(bool)
        if not safe.all():
            problems.append("video_id and clip_id must be plain names (not empty, '.' or '..', no '/' or '\\'): "
                            "they name the file Raw/<video_id>/<clip_id>.mp4 inside the dataset; bad in clips "
                            f"{_listing(names[~safe])}")
        videos = pd.Series([raw / v / f"{c}{VIDEO_SUFFIX}" for v, c in zip(table["video_id"], table["clip_id"],
                                                                           strict=True)], index=table.index)
        listings: dict[Path, dict[str, str]] = {}
        videos = videos[safe].map(lambda p: _on_disk(p, listings))  # an unsafe name is never looked up on disk
    problems += _common_problems(names, splits, ids, "split/mode")
    if "label" in table.columns:
        problems += _label_problems(table["label"], names, "label", spec)
    for column in UNIMODAL_LABELS:
        if column in table.columns:
            problems += _label_problems(table[column], names, column, spec, allow_empty=True)

    exists = videos.map(Path.is_file).astype(bool)
    if not exists.all():
        no_raw = "" if raw.is_dir() else f" (there is no folder {raw})"
        problems.append(f"video files missing for {_listing(videos[~exists])}{no_raw}: put each clip at "
                        f"Raw/<video_id>/<clip_id>.mp4 or remove its row from label.csv")
    if not raw_escapes:
        outside = [p for p in videos[exists] if not _inside(p, real_root)]
        if outside:
            problems.append(f"symlinks resolving outside the dataset root {real_root}: "
                            f"{_listing(f'{p} -> {os.path.realpath(p)}' for p in outside)}; copy the files in, or "
                            "symlink the whole dataset root instead")
    if raw.is_dir():
        named = {os.path.realpath(p) for p in videos[exists]}
        unlisted = sorted(str(p) for p in _files_under(raw)
                          if p.suffix.lower() == VIDEO_SUFFIX and os.path.realpath(p) not in named)
        if unlisted:
            problems.append(f"video files under Raw/ that no row of label.csv names {_listing(unlisted)}: add their "
                            f"rows to label.csv or remove the files")
    problems += _empty_splits(splits)
    _raise(label_csv, spec, problems)

    manifest = pd.DataFrame({
        "id": ids.astype(str),
        "split": splits,
        "label": pd.to_numeric(table["label"]).astype(np.float64),
        "text": table["text"].astype(str),
        "video": [str(p) for p in videos],
        "video_id": table["video_id"],
        "clip_id": table["clip_id"],
    })
    for column in UNIMODAL_LABELS:
        if column in table.columns and (table[column].astype(str).str.strip() != "").any():
            manifest[column] = pd.to_numeric(table[column], errors="coerce").astype(np.float64)
    return manifest.reset_index(drop=True)


# --------------------------------------------------------------------------- CSV layout


def _csv_path(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


def read_csv_dataset(root: Path, spec: DatasetSpec) -> pd.DataFrame:
    """Validate `<root>/manifest.csv` (the `csv` layout) and return its manifest (MANIFEST_COLUMNS, [audio]).

    Raises DatasetError listing every problem found (see the module docstring) before any work.
    """
    source = root / CSV_MANIFEST
    if not source.is_file():
        raise DatasetError(
            f"{source} not found. Put a CSV with the columns {list(CSV_COLUMNS)} (and optionally "
            f"{list(CSV_OPTIONAL_COLUMNS)}) there, one row per clip; video and audio paths are relative to "
            f"{root} or absolute."
        )
    table = _read_table(source, spec, ("id", "split", "text", "video", "audio"), ("id", "video", "audio"))
    problems = _table_problems(table, CSV_COLUMNS, f"{list(CSV_OPTIONAL_COLUMNS)}", CSV_MANIFEST)
    ids = table["id"].astype(str) if "id" in table.columns else None
    names = _row_names(table, ids)
    splits = table["split"].astype(str) if "split" in table.columns else None
    if ids is not None:
        if (ids == "").any():
            problems.append(f"empty ids in {_listing(names[ids == ''])}: every clip needs an id")
        slash = ids.str.contains("/", regex=False)
        if slash.any():
            problems.append(f"clip ids may not contain '/' (they name HDF5 groups): {_listing(ids[slash])}")
    problems += _common_problems(names, splits, ids, "split")
    if "label" in table.columns:
        problems += _label_problems(table["label"], names, "label", spec)

    files: dict[str, pd.Series] = {}
    listings: dict[Path, dict[str, str]] = {}
    for column in ("video", "audio"):
        if column not in table.columns:
            continue
        values = table[column].astype(str)
        given = values.str.strip() != ""
        if column == "video" and not given.all():
            problems.append(f"empty video paths in clips {_listing(names[~given])}")
        files[column] = pd.Series([_on_disk(_csv_path(root, v), listings) if g else None
                                   for v, g in zip(values, given, strict=True)],
                                  index=table.index, dtype=object)
        present = files[column][given]
        exists = present.map(Path.is_file).astype(bool)
        if not exists.all():
            problems.append(f"{column} files missing for {_listing(present[~exists])}: fix the paths (relative to "
                            f"{root}, or absolute) or remove the rows")
    problems += _empty_splits(splits)
    _raise(source, spec, problems)

    manifest = pd.DataFrame({
        "id": ids,
        "split": splits,
        "label": pd.to_numeric(table["label"]).astype(np.float64),
        "text": table["text"].astype(str),
        "video": [str(p) for p in files["video"]],
        "video_id": ids,
        "clip_id": "",
    })
    if "audio" in files:
        manifest["audio"] = ["" if p is None else str(p) for p in files["audio"]]
    return manifest.reset_index(drop=True)


# --------------------------------------------------------------------------- any dataset


# --------------------------------------------------------------------------- VEGAS layout


def read_vegas_dataset(root: Path, spec: DatasetSpec, params: PrepareParams) -> pd.DataFrame:
    """A VEGAS-layout directory (vegas.read_vegas: class folders + fold files) as a manifest with the
    common columns: label = class index, text empty (no transcripts), video_id = id, clip_id empty,
    then class_name and fold (CLASS_COLUMNS). Splits: fold `prepare.test_fold` is test; a stratified
    `prepare.valid_fraction` of the other folds is valid (drawn with `prepare.split_seed`)."""

    table = read_vegas(root, params.test_fold, params.valid_fraction, params.split_seed)
    return table.assign(text="", video_id=table["id"], clip_id="").loc[:, [*MANIFEST_COLUMNS, *CLASS_COLUMNS]]


def read_vegas_features_dataset(root: Path, spec: DatasetSpec, params: PrepareParams) -> pd.DataFrame:
    """Zeng et al.'s `vegas_feature.h5` (vegas.read_vegas_features) as a manifest: its train/test split, with
    a stratified `prepare.valid_fraction` of train as valid (drawn with `prepare.split_seed`); label = class
    index; no transcripts and no clips (the features are the inputs: extract's `auto` source reads them).

    The file has class indices only. Class names (they only word the CLIP class prompts) come from
    `classes.txt` next to it, one per line in label order, else `class 0`, `class 1`, ..."""
    features = read_vegas_features(root / VEGAS_FEATURE_FILE, audio_dim=None, visual_dim=None,
                                   valid_fraction=params.valid_fraction, seed=params.split_seed)
    names_file = root / CLASS_NAMES_FILE
    names = [f"class {k}" for k in range(features.num_classes)]
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names) != features.num_classes or len(set(names)) != len(names):
            _raise(names_file, spec, [f"expected {features.num_classes} distinct class names, one per line in label "
                                      f"order (the labels of {VEGAS_FEATURE_FILE} are 0..{features.num_classes - 1}), "
                                      f"got {len(names)}: {names[:SHOWN]}"])
    table = features.manifest
    return pd.DataFrame({"id": table["id"], "split": table["split"], "label": table["label"].astype(np.float64),
                         "text": "", "video": "", "video_id": table["id"], "clip_id": "",
                         "class_name": [names[k] for k in table["label"]]})


def _ignore_params(reader: Callable[[Path, DatasetSpec], pd.DataFrame]) -> Reader:
    return lambda root, spec, params: reader(root, spec)


Reader = Callable[[Path, DatasetSpec, "PrepareParams"], pd.DataFrame]
READERS: Registry[Reader] = Registry("dataset layout")
READERS.add("mmsa", _ignore_params(read_mmsa))
READERS.add("csv", _ignore_params(read_csv_dataset))
READERS.add("vegas", read_vegas_dataset)
READERS.add("vegas_features", read_vegas_features_dataset)


LAYOUT_ENTRIES: dict[str, tuple[str, ...]] = {  # what each layout has at its root (a trailing / : a folder)
    "mmsa": ("label.csv", "Raw/"),
    "csv": (CSV_MANIFEST,),
    "vegas": (f"{FOLDS_DIR}/",),
    "vegas_features": (VEGAS_FEATURE_FILE,),
}
LAYOUT_HINTS: dict[str, str] = {
    "mmsa": "label.csv + Raw/<video_id>/<clip_id>.mp4",
    "csv": f"{CSV_MANIFEST} with the columns {list(CSV_COLUMNS)}, one row per clip",
    "vegas": f"<class_name>/<video_id>{VIDEO_SUFFIX} + {FOLDS_DIR}/fold_1.txt .. fold_5.txt",
    "vegas_features": f"{VEGAS_FEATURE_FILE} with audio_train/test, visual_train/test, lab_train/test "
                      f"[+ {CLASS_NAMES_FILE}]",
}


def check_dataset_present(name: str, root: Path | None = None) -> None:
    """In a second, before the DAG runs (stage `check`): a real dataset's folder exists and has its
    layout's entries at its root (LAYOUT_ENTRIES). `prepare` then validates every row and file. A
    synthetic dataset is generated by the DAG: nothing to check."""
    spec = DATASETS.get(name)
    if spec.synthetic:
        return
    root = root or paths.raw_dir(name)
    put = (f"Put {spec.description} there ({LAYOUT_HINTS[spec.layout]}): copy it, symlink it "
           f"(`ln -s /path/to/{name} {root}`) or `dvc add {root}`")
    if not root.is_dir():
        raise DatasetError(f"dataset {name!r}: {root} not found. {put}")
    missing = [e for e in LAYOUT_ENTRIES[spec.layout]
               if not ((root / e).is_dir() if e.endswith("/") else (root / e).is_file())]
    if missing:
        raise DatasetError(f"dataset {name!r}: {root} has no {' or '.join(missing)}. {put}")


def read_dataset(name: str, root: Path | None = None, params: PrepareParams | None = None
                 ) -> tuple[DatasetSpec, pd.DataFrame]:
    """The spec of dataset `name` and its validated manifest, read from `root` (default data/raw/<name>)
    with the `prepare` params (default: params.yaml's; only the VEGAS layout uses them)."""
    spec = DATASETS.get(name)
    if params is None and spec.layout in ("vegas", "vegas_features"):
        params = load_section("prepare")
    return spec, READERS.get(spec.layout)(root or paths.raw_dir(name), spec, params)


def dataset_classes(manifest: pd.DataFrame) -> list[str] | None:
    """Class names by class index (label 0, 1, ...) of a classification manifest (one with `class_name`),
    else None (a sentiment manifest: labels are scores)."""
    if "class_name" not in manifest.columns:
        return None
    pairs = manifest.loc[:, ["label", "class_name"]].drop_duplicates().sort_values("label")
    labels = pairs["label"].astype(int).tolist()
    if labels != list(range(len(labels))) or pairs["class_name"].duplicated().any():
        raise DatasetError(f"the manifest's labels and class names do not pair one to one as 0..K-1: "
                           f"{pairs.to_dict('records')[:SHOWN]}; rerun `dvc repro prepare`")
    return pairs["class_name"].tolist()


def manifest_columns(manifest: pd.DataFrame) -> list[str]:
    """MANIFEST_COLUMNS, then the OPTIONAL_COLUMNS the manifest has, in that order."""
    return [*MANIFEST_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in manifest.columns)]


def write_manifest(manifest: pd.DataFrame, path: Path) -> None:
    """Write MANIFEST_COLUMNS and any OPTIONAL_COLUMNS; other columns are dropped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.loc[:, manifest_columns(manifest)].to_csv(path, index=False)


def read_manifest(path: Path) -> pd.DataFrame:
    """The manifest at `path`: ids, texts and paths as strings, labels (unimodal ones too) as floats."""
    if not path.is_file():
        raise MissingInput(f"manifest {path} not found: run `dvc repro prepare`")
    manifest = pd.read_csv(path, dtype={"id": str, "text": str, "video_id": str, "clip_id": str, "audio": str,
                                        "class_name": str},
                           keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}; expected {list(MANIFEST_COLUMNS)}")
    for column in UNIMODAL_LABELS:
        if column in manifest.columns:  # an empty cell (no unimodal label) reads as "" -> NaN
            manifest[column] = pd.to_numeric(manifest[column], errors="coerce").astype(np.float64)
    return manifest
