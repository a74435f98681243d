"""Import and export CMU-MultimodalSDK computational sequences (`.csd` files).

A computational sequence is an HDF5 file laid out as the SDK writes it
(`mmsdk/mmdatasdk/computational_sequence/file_ops.py`, `write_CSD` / `read_CSD`)::

    /<root name>/                       one group named after the sequence: COVAREP, FACET 4.2, glove_vectors
        data/<key>/features             (n, d) numeric array, one row per time step
        data/<key>/intervals            (n, 2) float seconds: [start, end] of each row
        metadata/<metadata key>         (1,) variable-length string dataset holding json.dumps(value)

Keys are video ids (`-3g5yACwYnA`), or after the SDK aligned a sequence to segments,
`<video_id>[<segment>]` (the SDK numbers them by the row of the reference sequence, from 0).
The SDK reads the first top-level group as the root, takes its name from the metadata entry
`root name`, and decodes each metadata entry with `json.loads` (falling back to the raw string).
It checks (and its `deploy` asks for) the metadata keys in SDK_METADATA_KEYS; `deploy` also sets
`uuid` (random) and `md5` (None, stored as JSON `null`). Features must be at least 2-D and have
as many rows as intervals.

Our clip ids are MMSA's `<video_id>$_$<clip_id>` (datasets.clip_key), so:

export  one array of one of our feature files (e.g. `video.h5` / `frames`) -> `.csd` with key
        `<video_id>[<clip_id>]` per clip (ids without `$_$` are used as they are). A 1-D array
        becomes one row (1, d). Intervals are clip-relative seconds: row i -> [i, i+1] * step
        (step = 1/fps or the hop), or whatever an interval function returns per clip (e.g.
        `evenly_split(durations)`: n rows split [0, duration] evenly, which is where
        extract@video's F uniformly sampled frames lie).
import  `.csd` -> one of our feature files with, per manifest clip, `features` (n, d) float32 and
        `intervals` (n, 2) float64 seconds as in the .csd. A clip takes the entry keyed by its id,
        else `<video_id>[<clip_id>]`, else the video-level key `<video_id>`: cut to the clip's span
        when the manifest has `start` / `end` columns (rows overlapping [start, end), intervals
        clipped to it; times stay on the video's time line), or whole when the video has exactly
        one clip in the manifest. The file's config records the source file name and md5, its
        root name and its metadata.

Real sequences contain non-finite values (CMU-MOSI/MOSEI COVAREP has -inf): import refuses them,
naming the key, unless asked to replace them with 0 (`nonfinite="zero"`, `--nonfinite zero`),
the usual preprocessing.

Commands:

    python -m pipeline.data.csd export data/features/<ds>/video.h5 out.csd --array frames --name mmdistill_clip_video
    python -m pipeline.data.csd import COVAREP.csd data/features/<ds>/covarep.h5 \\
        --manifest data/prepared/<ds>/manifest.csv

The raw HDF5 access (`read_csd_header`, `read_csd_entries`, `write_csd_file`) lives in
store.py, the only module that imports h5py.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.runtime import entry_point
from pipeline.features.store import (
    FeatureReader,
    FeatureWriter,
    StoreError,
    read_csd_entries,
    read_csd_header,
    write_csd_file,
)

log = logging.getLogger(__name__)

CLIP_SEP = "$_$"  # datasets.clip_key
SDK_METADATA_KEYS = (
    "root name",
    "computational sequence description",
    "dimension names",
    "computational sequence version",
    "alignment compatible",
    "dataset name",
    "dataset version",
    "creator",
    "contact",
    "featureset bib citation",
    "dataset bib citation",
)
NONFINITE = ("error", "zero")
_SEGMENT_KEY = re.compile(r"^(?P<video>.+)\[(?P<segment>[^\[\]]*)\]$")

IntervalFn = Callable[[str, int], np.ndarray]
"""(clip id, number of rows) -> (rows, 2) [start, end] seconds of each row."""


class CsdError(StoreError):
    """A computational sequence is malformed, or cannot be matched to the clips; the message names the file."""


# --------------------------------------------------------------------------- keys and intervals


def csd_key(clip_id: str) -> str:
    """Our clip id -> .csd key: `<video_id>$_$<clip_id>` -> `<video_id>[<clip_id>]`; other ids unchanged."""
    if CLIP_SEP in clip_id:
        video_id, segment = clip_id.split(CLIP_SEP, 1)
        return f"{video_id}[{segment}]"
    return clip_id


def clip_id_of(key: str) -> str:
    """.csd key -> our clip id: `<video_id>[<segment>]` -> `<video_id>$_$<segment>`; video-level keys unchanged."""
    match = _SEGMENT_KEY.match(key)
    return f"{match['video']}{CLIP_SEP}{match['segment']}" if match else key


def step_intervals(rows: int, step: float) -> np.ndarray:
    """Row i -> [i, i + 1] * step: rows sampled every `step` seconds from the clip's start. (rows, 2) float64."""
    edges = np.arange(rows + 1, dtype=np.float64) * step
    return np.stack([edges[:-1], edges[1:]], axis=1)


def evenly_split(durations: Mapping[str, float]) -> IntervalFn:
    """Interval function splitting [0, duration of the clip] evenly among its rows."""

    def intervals(clip_id: str, rows: int) -> np.ndarray:
        if clip_id not in durations:
            raise CsdError(f"no duration for clip {clip_id!r} (the durations cover {len(durations)} clips)")
        return step_intervals(rows, float(durations[clip_id]) / max(rows, 1))

    return intervals


def clip_durations(manifest: pd.DataFrame, source: str = "manifest") -> dict[str, float]:
    """Clip id -> seconds, from a `duration` column or from `end - start`."""
    if "duration" in manifest.columns:
        seconds = pd.to_numeric(manifest["duration"], errors="coerce")
    elif {"start", "end"} <= set(manifest.columns):
        seconds = pd.to_numeric(manifest["end"], errors="coerce") - pd.to_numeric(manifest["start"], errors="coerce")
    else:
        raise CsdError(f"{source}: no `duration` or `start`/`end` columns to take clip durations from "
                       f"(columns: {list(manifest.columns)})")
    bad = manifest.loc[~(seconds > 0), "id"].astype(str).tolist()
    if bad:
        raise CsdError(f"{source}: clip durations must be positive numbers; bad for {bad[:5]} ({len(bad)} in all)")
    return dict(zip(manifest["id"].astype(str), seconds.astype(float), strict=True))


# --------------------------------------------------------------------------- export


def _export_rows(path: Path, clip_id: str, array: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    if array not in arrays:
        raise CsdError(f"{path}: clip {clip_id!r} has no array {array!r} (it has {sorted(arrays)})")
    values = np.asarray(arrays[array])
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
        raise CsdError(f"{path}: array {array!r} of clip {clip_id!r} is not numeric (dtype {values.dtype})")
    if values.ndim <= 1:
        return values.reshape(1, -1)
    if values.ndim > 2:
        raise CsdError(f"{path}: array {array!r} of clip {clip_id!r} has shape {values.shape}; a computational "
                       f"sequence holds (rows, features) arrays")
    return values


def export_csd(
    features_h5: Path,
    out: Path,
    array: str,
    step: float | IntervalFn,
    name: str,
    metadata: Mapping[str, Any] | None = None,
) -> int:
    """Write `array` of every clip of a finished feature file as the computational sequence `name`.

    Keys are `<video_id>[<clip_id>]` (see `csd_key`); features are the clip's array (1-D -> (1, d));
    intervals are clip-relative seconds, `step_intervals(rows, step)` for a number `step` (seconds per
    row: 1/fps, a hop) or `step(clip_id, rows)` for an interval function (e.g. `evenly_split`).
    `metadata` (JSON-able values) overrides the defaults for SDK_METADATA_KEYS, md5 and uuid; the
    feature file's config and versions are added as `mmdistill config` / `mmdistill versions`.
    Writes atomically; returns the number of entries written.
    """
    features_h5, out = Path(features_h5), Path(out)
    if not callable(step) and not (isinstance(step, int | float) and math.isfinite(step) and step > 0):
        raise CsdError(f"step must be a positive number of seconds per row or an interval function, got {step!r}")
    with FeatureReader(features_h5) as reader:
        ids = reader.ids()
        if not ids:
            raise CsdError(f"{features_h5} holds no clips: nothing to export")
        meta = _export_metadata(features_h5, array, name, reader.config, reader.versions, ids)
        for key, value in (metadata or {}).items():
            if key == "root name" and value != name:
                log.warning("metadata 'root name' %r ignored: the root name is the sequence name %r", value, name)
                continue
            meta[key] = value

        def entries() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
            seen: dict[str, str] = {}
            for clip_id in ids:
                key = csd_key(clip_id)
                if key in seen:
                    raise CsdError(f"{features_h5}: clips {seen[key]!r} and {clip_id!r} both map to key {key!r}")
                seen[key] = clip_id
                values = _export_rows(features_h5, clip_id, array, reader.read(clip_id))
                rows = values.shape[0]
                intervals = step(clip_id, rows) if callable(step) else step_intervals(rows, float(step))
                intervals = np.asarray(intervals, dtype=np.float64)
                if intervals.shape != (rows, 2):
                    raise CsdError(f"intervals for clip {clip_id!r} have shape {intervals.shape}, expected ({rows}, 2)")
                yield key, values, intervals

        count = write_csd_file(out, name, entries(), meta)
    log.info("exported %d clips of %s:%s to %s as <%s>", count, features_h5, array, out, name)
    return count


def _export_metadata(features_h5: Path, array: str, name: str, config: dict[str, Any],
                     versions: dict[str, str], ids: list[str]) -> dict[str, Any]:
    """The SDK's metadata, filled in; the uuid is derived from the content description, so reruns agree."""
    fingerprint = json.dumps([name, array, config, ids], sort_keys=True)
    return {
        "root name": name,
        "computational sequence description": f"array {array!r} of the mmdistill feature file {features_h5.name}",
        "dimension names": None,
        "computational sequence version": "1.0",
        "alignment compatible": True,
        "dataset name": features_h5.parent.name,
        "dataset version": "",
        "creator": "mmdistill",
        "contact": "",
        "featureset bib citation": "",
        "dataset bib citation": "",
        "md5": None,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "mmdistill:" + fingerprint)),
        "mmdistill config": config,
        "mmdistill versions": versions,
    }


# --------------------------------------------------------------------------- import


def _check_entry(path: Path, key: str, features: np.ndarray, intervals: np.ndarray,
                 nonfinite: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated (features float32 (n, d), intervals float64 (n, 2)) of one entry, or CsdError naming it."""
    where = f"{path}: entry {key!r}"
    if not (np.issubdtype(features.dtype, np.number) or features.dtype == np.bool_):
        raise CsdError(f"{where}: features are not numeric (dtype {features.dtype}); text sequences such as "
                       f"words cannot be imported as features")
    if features.ndim != 2:
        raise CsdError(f"{where}: features have shape {features.shape}, expected (rows, features)")
    if intervals.ndim != 2 or intervals.shape[1] != 2 or not np.issubdtype(intervals.dtype, np.number):
        raise CsdError(f"{where}: intervals have shape {intervals.shape} (dtype {intervals.dtype}), "
                       f"expected (rows, 2) numbers")
    if features.shape[0] != intervals.shape[0]:
        raise CsdError(f"{where}: features and intervals have different lengths "
                       f"({features.shape[0]} and {intervals.shape[0]} rows)")
    intervals = intervals.astype(np.float64)
    if not np.isfinite(intervals).all():
        raise CsdError(f"{where}: {int((~np.isfinite(intervals)).sum())} non-finite values in intervals")
    with np.errstate(over="ignore"):
        features = features.astype(np.float32)
    bad = ~np.isfinite(features)
    if bad.any() and nonfinite != "keep":
        if nonfinite == "error":
            raise CsdError(f"{where}: {int(bad.sum())} non-finite values in features (NaN, inf, or too large for "
                           f"float32); import with nonfinite='zero' (--nonfinite zero) to replace them with 0")
        log.debug("%s: %d non-finite feature values replaced by 0", where, int(bad.sum()))
        features[bad] = 0.0
    return features, intervals


def _cut(features: np.ndarray, intervals: np.ndarray, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows overlapping [start, end) (zero-length rows: lying in it), intervals clipped to [start, end]."""
    lo, hi = intervals[:, 0], intervals[:, 1]
    keep = (lo < end) & ((hi > start) | ((hi <= lo) & (lo >= start)))
    return features[keep], np.clip(intervals[keep], start, end)


def _span(row: pd.Series) -> tuple[float, float] | None:
    try:
        start, end = float(row["start"]), float(row["end"])
    except (KeyError, TypeError, ValueError):
        return None
    return (start, end) if math.isfinite(start) and math.isfinite(end) and end > start else None


def _plan(manifest: pd.DataFrame, keys: set[str]) -> tuple[dict[str, list[tuple[str, tuple[float, float] | None]]],
                                                           dict[str, str]]:
    """.csd key -> [(clip id, span to cut or None)], and clip id -> why it has no entry."""
    ids = manifest["id"].astype(str)
    if {"video_id", "clip_id"} <= set(manifest.columns):
        videos, segments = manifest["video_id"].astype(str), manifest["clip_id"].astype(str)
    else:
        parts = [i.split(CLIP_SEP, 1) if CLIP_SEP in i else [i, ""] for i in ids]
        videos = pd.Series([p[0] for p in parts], index=manifest.index)
        segments = pd.Series([p[1] for p in parts], index=manifest.index)
    clips_per_video = videos.value_counts()
    plan: dict[str, list[tuple[str, tuple[float, float] | None]]] = {}
    missing: dict[str, str] = {}
    for index, row in manifest.iterrows():
        clip_id, video, segment = ids[index], videos[index], segments[index]
        if clip_id in keys:
            plan.setdefault(clip_id, []).append((clip_id, None))
        elif segment and f"{video}[{segment}]" in keys:
            plan.setdefault(f"{video}[{segment}]", []).append((clip_id, None))
        elif video in keys:
            span = _span(row)
            if span is not None:
                plan.setdefault(video, []).append((clip_id, span))
            elif clips_per_video[video] == 1:
                plan.setdefault(video, []).append((clip_id, None))
            else:
                missing[clip_id] = (f"only the video-level key {video!r}, shared by {clips_per_video[video]} clips, "
                                    f"and no start/end for the clip")
        else:
            missing[clip_id] = "no entry"
    return plan, missing


def file_md5(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass
class CsdMatch:
    """How a computational sequence's entries map to a manifest's clips (`match_csd`)."""

    path: Path
    root_group: str
    root_name: str
    metadata: dict[str, Any]
    plan: dict[str, list[tuple[str, tuple[float, float] | None]]]  # .csd key -> [(clip id, span to cut)]
    missing: dict[str, str]  # clip id -> why it has no entry (filled further by `clip_arrays`)

    def source(self) -> dict[str, Any]:
        return {"file": self.path.name, "md5": file_md5(self.path), "root name": self.root_name,
                "root group": self.root_group}

    def clip_arrays(self, nonfinite: str, skip: frozenset[str] | set[str] = frozenset()
                    ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(clip id, features (n, d) float32, intervals (n, 2) float64) of every matched clip not in `skip`,
        entry by entry; a clip whose cut is empty goes to `missing`. `nonfinite`: NONFINITE, or "keep"
        (left for the caller)."""
        todo = {k: [(c, s) for c, s in clips if c not in skip] for k, clips in self.plan.items()}
        todo = {k: clips for k, clips in todo.items() if clips}
        for key, features, intervals in read_csd_entries(self.path, self.root_group, sorted(todo)):
            features, intervals = _check_entry(self.path, key, features, intervals, nonfinite)
            for clip_id, span in todo[key]:
                feats, ivs = (features, intervals) if span is None else _cut(features, intervals, *span)
                if len(feats) == 0:
                    self.missing[clip_id] = (f"entry {key!r} has no rows" if span is None else
                                             f"no rows of {key!r} in [{span[0]}, {span[1]})")
                    continue
                yield clip_id, feats, ivs


def match_csd(csd: Path, manifest: pd.DataFrame) -> CsdMatch:
    """Read a computational sequence's header and match its keys to the manifest's clips (module docstring);
    CsdError when no entry matches any clip."""
    csd = Path(csd)
    if "id" not in manifest.columns:
        raise CsdError(f"the manifest has no `id` column (columns: {list(manifest.columns)})")
    manifest = manifest.reset_index(drop=True)
    root_group, keys, metadata = read_csd_header(csd)
    plan, missing = _plan(manifest, set(keys))
    if not plan:
        raise CsdError(f"{csd}: none of its {len(keys)} entries (e.g. {sorted(keys)[:3]}) matches a clip of the "
                       f"manifest (e.g. {manifest['id'].astype(str).tolist()[:3]}); keys must be clip ids, "
                       f"<video_id>[<clip_id>], or video ids")
    return CsdMatch(csd, root_group, str(metadata.get("root name") or root_group), metadata, plan, missing)


def import_csd(
    csd: Path,
    out_h5: Path,
    manifest: pd.DataFrame,
    name: str | None = None,
    *,
    nonfinite: str = "error",
) -> tuple[int, list[str]]:
    """Write a computational sequence as one of our feature files, one group per manifest clip it covers.

    `manifest` needs an `id` column (video ids and segments are taken from `video_id` / `clip_id`,
    else parsed from the id) and may have `start` / `end` (seconds) to cut video-level entries.
    Arrays per clip: `features` (n, d) float32 and `intervals` (n, 2) float64. `name` is recorded as
    the config's `modality` (default: the sequence's root name). `nonfinite`: "error" refuses
    NaN/inf features, "zero" replaces them with 0. Returns (clips in the written file, ids of
    manifest clips without an entry, in manifest order).
    """
    csd, out_h5 = Path(csd), Path(out_h5)
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
    match = match_csd(csd, manifest)
    config = {
        "modality": name or match.root_name,
        "source": match.source(),
        "metadata": match.metadata,
        "nonfinite": nonfinite,
        "intervals": "seconds as in the source; video-level entries cut to the manifest's [start, end)",
    }
    with FeatureWriter(out_h5, config, versions={"numpy": np.__version__}) as writer:
        for clip_id, features, intervals in match.clip_arrays(nonfinite, skip=writer.done_ids()):
            writer.write(clip_id, {"features": features, "intervals": intervals})
        written = len(writer.done_ids())
        writer.finalize()
    absent = [i for i in manifest["id"].astype(str) if i in match.missing]
    if absent:
        log.warning("%d of %d manifest clips have no entry in %s, e.g. %s", len(absent), len(manifest), csd,
                    "; ".join(f"{i}: {match.missing[i]}" for i in absent[:3]))
    log.info("imported <%s> from %s: %d clips -> %s", match.root_name, csd, written, out_h5)
    return written, absent


# --------------------------------------------------------------------------- command line


def _metadata_arg(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CsdError(f"--meta takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """`export` and `import` subcommands (see the module docstring)."""
    from pipeline.data.datasets import read_manifest

    parser = argparse.ArgumentParser(prog="python -m pipeline.data.csd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="one array of a feature file -> .csd")
    exp.add_argument("features", type=Path, help="finished feature file, e.g. data/features/<ds>/video.h5")
    exp.add_argument("out", type=Path, help="the .csd to write")
    exp.add_argument("--array", required=True, help="array of each clip to export, e.g. frames, logmel")
    exp.add_argument("--name", required=True, help="root name of the sequence")
    timing = exp.add_mutually_exclusive_group()
    timing.add_argument("--step", type=float, help="seconds per row (default 1: intervals count rows)")
    timing.add_argument("--fps", type=float, help="rows per second")
    timing.add_argument("--manifest", type=Path,
                        help="manifest with `duration` or `start`/`end`: rows split each clip evenly")
    exp.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                     help="metadata entry (repeatable), e.g. --meta 'dataset name=CMU-MOSI'")
    imp = sub.add_parser("import", help=".csd -> feature file for the manifest's clips")
    imp.add_argument("csd", type=Path, help="computational sequence, e.g. CMU_MOSI_COVAREP.csd")
    imp.add_argument("out", type=Path, help="feature file to write, e.g. data/features/<ds>/covarep.h5")
    imp.add_argument("--manifest", type=Path, required=True, help="data/prepared/<ds>/manifest.csv")
    imp.add_argument("--name", help="modality name recorded in the config (default: the root name)")
    imp.add_argument("--nonfinite", choices=NONFINITE, default="error",
                     help="NaN/inf features: refuse (default) or replace with 0")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")

    if args.command == "export":
        step: float | IntervalFn
        if args.manifest is not None:
            step = evenly_split(clip_durations(read_manifest(args.manifest), str(args.manifest)))
        elif args.fps is not None:
            if not args.fps > 0:
                raise CsdError(f"--fps must be positive, got {args.fps}")
            step = 1.0 / args.fps
        else:
            step = 1.0 if args.step is None else args.step
        export_csd(args.features, args.out, args.array, step, args.name, _metadata_arg(args.meta))
    else:
        written, missing = import_csd(args.csd, args.out, read_manifest(args.manifest), args.name,
                                      nonfinite=args.nonfinite)
        print(f"{written} clips written to {args.out}; {len(missing)} manifest clips without an entry")
    return 0


if __name__ == "__main__":
    entry_point(main)
