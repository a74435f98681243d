"""HDF5 feature store: the only module that imports h5py.

Layout of a feature file (one per dataset and modality)::

    /                 attrs: schema_version, config (JSON), versions (JSON), complete (bool)
    /clips/<clip_id>  one group per clip, one dataset per array (e.g. `frames` (F, D))
    /extra/<name>     arrays that belong to the file rather than a clip (e.g. class prompts)

Writes are resumable, crash-safe and shardable, and never leave a file that reads as
complete but is not: writers put atomically written chunk files into `<name>.partial/`
(one writer per process under torchrun), a restarted writer skips the clips already there
when its config matches, and `finalize()` merges the chunks into `<name>` with `complete`
set. A reader refuses an unfinished file, a file of another schema version, and a file whose
recorded extractor config differs from the one requested (naming the keys that differ).

Tables (one row per clip, e.g. teacher predictions) use `write_table` / `read_table`.

Handles are opened lazily and dropped on pickling, so a reader can be handed to
DataLoader workers: each worker opens its own handle.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.core.errors import UserError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
EXTRA_CHUNK = "extra.h5"
_STR = h5py.string_dtype()


class StoreError(UserError, RuntimeError):
    """A feature file is missing, incomplete, or was built with another configuration."""


def config_diff(recorded: dict[str, Any], requested: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two flat-or-nested configs: key -> (recorded, requested)."""
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(recorded) | set(requested)):
        a, b = recorded.get(key, "<absent>"), requested.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out.update({f"{key}.{k}": v for k, v in config_diff(a, b).items()})
        elif a != b:
            out[key] = (a, b)
    return out


def _canonical(config: dict[str, Any]) -> dict[str, Any]:
    """JSON round trip so tuples/lists and numpy scalars compare equal to what was stored."""
    return json.loads(json.dumps(config, sort_keys=True, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a config attribute")


class FeatureWriter:
    """Resumable, crash-safe, shardable writer of one feature file.

    Clips are buffered and written in chunks: `flush()` writes the buffered clips to a new
    chunk file `<name>.partial/<tag>-<seq>.h5`, atomically (temporary name, then rename), so a
    crash (even SIGKILL) loses at most the clips buffered since the last flush and never leaves
    a half-written chunk that counts. A writer opened on an existing `.partial` directory built
    with the same config and `identity` (what the config does not say: the digests of the inputs,
    the code version; core/identity.py) resumes: `done_ids()` lists the clips already there; any
    difference starts over, naming it. The identity is the resume's only: the finished file
    records the config. Several writers
    (one per rank, distinct `tag`s) may fill the same `.partial` directory; `finalize()` (one
    process, after the others have flushed) merges every chunk into `<name>`, sets `complete`,
    and removes the directory.
    """

    def __init__(self, path: Path, config: dict[str, Any], versions: dict[str, str] | None = None,
                 tag: str = "rank0", fresh: bool = True, identity: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.config = _canonical(config)
        self.identity = dict(identity or {})
        self.tag = tag
        self._buffer: dict[str, dict[str, np.ndarray]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh and self.path.exists():
            self.path.unlink(missing_ok=True)  # a finished file is rebuilt from scratch; resume works on .partial
        self._open_partial(versions or {})
        self._done = self._scan()
        self._seq = 1 + max((int(c.stem.rsplit("-", 1)[1]) for c in self._chunks(self.tag)), default=-1)

    # .partial/config.json: what the chunks were computed with (a resume must match it)
    def _open_partial(self, versions: dict[str, str]) -> None:
        meta = self.partial / "config.json"
        if meta.is_file():
            recorded = json.loads(meta.read_text())
            if (recorded.get("config") == self.config and recorded.get("identity", {}) == self.identity
                    and recorded.get("schema_version") == SCHEMA_VERSION):
                for tmp in self.partial.glob(f"{self.tag}-*.tmp"):  # a chunk cut off mid-write
                    tmp.unlink()
                return
            log.warning("%s was built with other inputs, config or code %s; starting over", self.partial,
                        config_diff({**recorded.get("config", {}), **recorded.get("identity", {})},
                                    {**self.config, **self.identity}))
        if self.partial.is_dir():
            shutil.rmtree(self.partial)
        elif self.partial.exists():  # not ours (e.g. a stray file): replaced
            self.partial.unlink()
        self.partial.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(meta, json.dumps({"schema_version": SCHEMA_VERSION, "config": self.config,
                                             "identity": self.identity, "versions": versions}, sort_keys=True))

    def _chunks(self, tag: str | None = None) -> list[Path]:
        pattern = f"{tag}-*.h5" if tag else "*-*.h5"
        return sorted(p for p in self.partial.glob(pattern) if p.name != EXTRA_CHUNK)

    def _scan(self) -> set[str]:
        done: set[str] = set()
        for chunk in self._chunks():
            try:
                with h5py.File(chunk, "r") as f:
                    done.update(f["clips"].keys())
            except OSError as err:  # cannot happen with atomic renames, unless the disk lies
                log.warning("dropping unreadable chunk %s (%s)", chunk, err)
                chunk.unlink()
        if done:
            log.info("resuming %s: %d clips already written", self.partial, len(done))
        return done

    def done_ids(self) -> set[str]:
        return self._done | set(self._buffer)

    def write(self, clip_id: str, arrays: dict[str, np.ndarray]) -> None:
        """Buffer one clip's arrays (written at the next `flush`)."""
        if clip_id in self._done or clip_id in self._buffer:  # not done_ids(): that builds a set per write
            raise ValueError(f"clip {clip_id!r} is already in {self.partial}")
        self._buffer[clip_id] = {k: np.asarray(v) for k, v in arrays.items()}

    def flush(self) -> None:
        """Write the buffered clips as one new chunk, atomically."""
        if not self._buffer:
            return
        chunk = self.partial / f"{self.tag}-{self._seq:06d}.h5"
        tmp = chunk.with_suffix(".tmp")
        with h5py.File(tmp, "w") as f:
            clips = f.create_group("clips")
            for clip_id, arrays in self._buffer.items():
                group = clips.create_group(clip_id)
                for name, array in arrays.items():
                    group.create_dataset(name, data=array)
        os.replace(tmp, chunk)
        self._done.update(self._buffer)
        self._buffer.clear()
        self._seq += 1

    def write_extra(self, name: str, arrays: dict[str, np.ndarray | list[str]]) -> None:
        """Arrays that belong to the file rather than a clip (rewritten whole, atomically)."""
        path = self.partial / EXTRA_CHUNK
        tmp = path.with_suffix(".tmp")
        if path.exists():
            shutil.copy(path, tmp)
        with h5py.File(tmp, "a") as f:
            group = f.require_group("extra")
            if name in group:
                del group[name]
            _write_columns(group.create_group(name), arrays)
        os.replace(tmp, path)

    def finalize(self) -> None:
        """Merge every chunk of the .partial directory into the final file and mark it complete."""
        self.flush()
        meta = json.loads((self.partial / "config.json").read_text())
        tmp = self.path.with_name(self.path.name + ".tmp")
        with h5py.File(tmp, "w") as out:
            out.attrs["schema_version"] = SCHEMA_VERSION
            out.attrs["config"] = json.dumps(self.config, sort_keys=True)
            out.attrs["versions"] = json.dumps(meta.get("versions", {}), sort_keys=True)
            clips = out.create_group("clips")
            for chunk in self._chunks():
                with h5py.File(chunk, "r") as f:
                    for clip_id, group in f["clips"].items():
                        if clip_id in clips:
                            log.warning("clip %s appears twice in %s; keeping the first", clip_id, self.partial)
                            continue
                        f.copy(group, clips, name=clip_id)
            if (self.partial / EXTRA_CHUNK).exists():
                with h5py.File(self.partial / EXTRA_CHUNK, "r") as f:
                    f.copy(f["extra"], out, name="extra")
            out.attrs["complete"] = True
        os.replace(tmp, self.path)
        shutil.rmtree(self.partial)

    def close(self) -> None:
        """Keep what was computed: buffered clips are flushed, the .partial directory stays."""
        if self.partial.exists():
            self.flush()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FeatureReader:
    """Read-only access to a finished feature file, checked against the requested config."""

    def __init__(self, path: Path, expected_config: dict[str, Any] | None = None, stage: str = "extract") -> None:
        self.path = Path(path)
        if not self.path.exists():
            partial = self.path.with_name(self.path.name + ".partial")
            hint = f" (an unfinished {partial.name} exists)" if partial.exists() else ""
            raise StoreError(f"feature file {self.path} not found{hint}: run `dvc repro {stage}`")
        self._file: h5py.File | None = None
        try:
            self._check(self._handle(), expected_config, stage)
        except BaseException:
            self.close()  # a refused file must not stay open (it would block a rewrite)
            raise

    def _check(self, f: h5py.File, expected_config: dict[str, Any] | None, stage: str) -> None:
        if f.attrs.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {f.attrs.get('schema_version')}, "
                             f"expected {SCHEMA_VERSION}: rebuild it with `dvc repro {stage}`")
        if not f.attrs.get("complete", False):
            raise StoreError(f"{self.path} is incomplete: rerun `dvc repro {stage}` to finish it")
        self.config: dict[str, Any] = json.loads(f.attrs["config"])
        self.versions: dict[str, str] = json.loads(f.attrs.get("versions", "{}"))
        if expected_config is not None:
            diff = config_diff(self.config, _canonical(expected_config))
            if diff:
                lines = "; ".join(f"{k}: file has {a!r}, requested {b!r}" for k, a, b in
                                  ((k, *v) for k, v in diff.items()))
                raise StoreError(f"{self.path} was built with a different configuration ({lines}). "
                                 f"Rebuild it with `dvc repro {stage}` or request the recorded config.")
        self._ids = sorted(f["clips"].keys())

    def _handle(self) -> h5py.File:
        if self._file is None or not self._file.id.valid:
            self._file = h5py.File(self.path, "r")
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None  # each DataLoader worker opens its own handle
        return state

    def ids(self) -> list[str]:
        return list(self._ids)

    def __contains__(self, clip_id: object) -> bool:
        return clip_id in self._handle()["clips"]

    def read(self, clip_id: str) -> dict[str, np.ndarray]:
        try:
            group = self._handle()["clips"][clip_id]
        except KeyError:
            raise KeyError(f"clip {clip_id!r} not in {self.path}") from None
        return {name: ds[()] for name, ds in group.items()}

    def extra(self, name: str) -> dict[str, Any]:
        try:
            group = self._handle()["extra"][name]
        except KeyError:
            raise StoreError(f"{self.path} has no extra group {name!r}") from None
        return {k: _decode(ds[()]) for k, ds in group.items()}

    def close(self) -> None:
        if self._file is not None and self._file.id.valid:
            self._file.close()
        self._file = None

    def __enter__(self) -> FeatureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_columns(group: h5py.Group, columns: dict[str, np.ndarray | list[str]]) -> None:
    for name, values in columns.items():
        if isinstance(values, list):
            group.create_dataset(name, data=np.array(values, dtype=object), dtype=_STR)
        else:
            group.create_dataset(name, data=np.asarray(values))


def _decode(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


def write_table(path: Path, columns: dict[str, np.ndarray | list[str]], config: dict[str, Any]) -> None:
    """Write equal-length columns (one row per clip) atomically, with the config that made them."""
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of {path} differ in length: {lengths}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with h5py.File(tmp, "w") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["config"] = json.dumps(_canonical(config), sort_keys=True)
        f.attrs["complete"] = True
        _write_columns(f, columns)
    os.replace(tmp, path)


def read_table(path: Path, stage: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Columns and config of a table written by `write_table`."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path} not found: run `dvc repro {stage}`")
    with h5py.File(path, "r") as f:
        if f.attrs.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{path}: schema version {f.attrs.get('schema_version')}, expected "
                             f"{SCHEMA_VERSION}: rebuild it with `dvc repro {stage}`")
        columns = {name: _decode(ds[()]) for name, ds in f.items()}
        config = json.loads(f.attrs["config"])
    return columns, config


def read_arrays(path: Path, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The named top-level datasets of an HDF5 file made elsewhere (e.g. `vegas_feature.h5`), read whole.

    No schema or config check (the file is not ours); StoreError naming the file when it is
    missing or not HDF5, and naming the missing datasets and those present when some are absent.
    """
    path, names = Path(path), list(names)
    if not path.is_file():
        raise StoreError(f"HDF5 file {path} not found")
    if not h5py.is_hdf5(path):
        raise StoreError(f"{path} is not an HDF5 file")
    with h5py.File(path, "r") as f:
        present = sorted(k for k, v in f.items() if isinstance(v, h5py.Dataset))
        missing = [n for n in names if n not in present]
        if missing:
            raise StoreError(f"{path}: missing datasets {missing}; it has {present}, expected {names}")
        return {n: f[n][()] for n in names}


# --------------------------------------------------------------------------- CMU-MultimodalSDK files
# Raw access to computational sequences (.csd); the format and the matching logic are in csd.py.


def read_csd_header(path: Path) -> tuple[str, list[str], dict[str, Any]]:
    """(root group name, entry keys, metadata) of a computational sequence; StoreError naming what is wrong.

    Metadata entries are decoded as the SDK does: each is a (1,) string dataset holding JSON, read
    with json.loads, falling back to the plain string; attributes of the metadata group count too.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"computational sequence {path} not found")
    if not h5py.is_hdf5(path):
        raise StoreError(f"{path} is not an HDF5 file, so not a computational sequence (.csd)")

    def decode(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = value.reshape(-1)[0] if value.size == 1 else value.tolist()
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    with h5py.File(path, "r") as f:
        groups = [k for k, v in f.items() if isinstance(v, h5py.Group)]
        if not groups:
            raise StoreError(f"{path}: no root group (a computational sequence holds one group named after "
                             f"the sequence, e.g. COVAREP, with `data` and `metadata` in it)")
        if len(groups) > 1:
            with_data = [g for g in groups if "data" in f[g]]
            if len(with_data) != 1:
                raise StoreError(f"{path}: {len(groups)} top-level groups {groups}; expected one root group "
                                 f"holding `data` and `metadata`")
            groups = with_data
        root = f[groups[0]]
        for part in ("data", "metadata"):
            if not isinstance(root.get(part), h5py.Group):
                raise StoreError(f"{path}: root group {root.name[1:]!r} has no `{part}` group")
        keys = list(root["data"].keys())
        not_groups = [k for k in keys if not isinstance(root["data"][k], h5py.Group)]
        if not_groups:
            raise StoreError(f"{path}: data entries {not_groups[:5]} are not groups with `features` and `intervals`")
        metadata = {k: decode(v) for k, v in root["metadata"].attrs.items()}
        for key, item in root["metadata"].items():
            if isinstance(item, h5py.Dataset):
                metadata[key] = decode(item[()])
        return root.name[1:], keys, metadata


def read_csd_entries(path: Path, root: str, keys: Iterable[str]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(key, features, intervals) of the given entries of root group `root` (from `read_csd_header`),
    one at a time: sequences can be many GB."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        data = f[root]["data"]
        for key in keys:
            entry = data[key]
            for part in ("features", "intervals"):
                if not isinstance(entry.get(part), h5py.Dataset):
                    raise StoreError(f"{path}: entry {key!r} has no `{part}` dataset")
            yield key, entry["features"][()], entry["intervals"][()]


def write_csd_file(path: Path, name: str, entries: Iterable[tuple[str, np.ndarray, np.ndarray]],
                    metadata: Mapping[str, Any]) -> int:
    """Write a computational sequence in the SDK's layout, atomically (via `<path>.partial`); returns the count.

    Metadata values are stored as the SDK's write_CSD does: json.dumps(value) in a (1,) string dataset.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = 0
    try:
        with h5py.File(partial, "w") as f:
            root = f.create_group(name)
            data = root.create_group("data")
            for key, features, intervals in entries:
                entry = data.create_group(key)
                for part, values in (("features", features), ("intervals", intervals)):
                    values = np.asarray(values)
                    packed = {"compression": "gzip", "compression_opts": 4} if values.size else {}
                    entry.create_dataset(part, data=values, **packed)
                count += 1
            meta = root.create_group("metadata")
            for key, value in metadata.items():
                meta.create_dataset(key, data=[json.dumps(value)], dtype=h5py.string_dtype())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    return count
