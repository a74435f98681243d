"""HDF5 feature store: the only module that imports h5py.

Layout of a feature file (one per dataset and modality)::

    /                 attrs: schema_version, config (JSON), versions (JSON), complete (bool)
    /clips/<clip_id>  one group per clip, one dataset per array (e.g. `frames` (F, D))
    /extra/<name>     arrays that belong to the file rather than a clip (e.g. class prompts)

Writes are resumable and never leave a file that reads as complete but is not: a writer
works on `<name>.partial`, skips clips already there when restarted with the same config,
and `finalize()` sets `complete` and renames the file into place. A reader refuses a
partial file, a file of another schema version, and a file whose recorded extractor
config differs from the one requested (naming the keys that differ).

Tables (one row per clip, e.g. teacher predictions) use `write_table` / `read_table`.

Handles are opened lazily and dropped on pickling, so a reader can be handed to
DataLoader workers: each worker opens its own handle.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_STR = h5py.string_dtype()


class StoreError(RuntimeError):
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
    """Resumable, append-only writer of one feature file.

    Use as a context manager; call `finalize()` once every clip is written.
    """

    def __init__(self, path: Path, config: dict[str, Any], versions: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.config = _canonical(config)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.path.unlink()  # a finished file is rebuilt from scratch; resume works on .partial
        self._file = self._open_partial(versions or {})
        self._clips = self._file.require_group("clips")
        self._drop_unfinished()

    def _open_partial(self, versions: dict[str, str]) -> h5py.File:
        if self.partial.exists():
            try:
                f = h5py.File(self.partial, "a")
            except OSError as err:
                log.warning("%s is unreadable (%s); starting over", self.partial, err)
                self.partial.unlink()
            else:
                recorded = json.loads(f.attrs.get("config", "{}"))
                if recorded == self.config and f.attrs.get("schema_version") == SCHEMA_VERSION:
                    log.info("resuming %s: %d clips already written", self.partial, len(f.get("clips", {})))
                    return f
                f.close()
                log.warning("%s was built with another config %s; starting over",
                            self.partial, config_diff(recorded, self.config))
                self.partial.unlink()
        f = h5py.File(self.partial, "w")
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["config"] = json.dumps(self.config, sort_keys=True)
        f.attrs["versions"] = json.dumps(versions, sort_keys=True)
        f.attrs["complete"] = False
        return f

    def _drop_unfinished(self) -> None:
        """A clip group without its `done` mark was cut off mid-write: rewrite it."""
        for clip_id in [k for k, g in self._clips.items() if not g.attrs.get("done", False)]:
            del self._clips[clip_id]

    def done_ids(self) -> set[str]:
        return set(self._clips.keys())

    def write(self, clip_id: str, arrays: dict[str, np.ndarray]) -> None:
        group = self._clips.create_group(clip_id)
        for name, array in arrays.items():
            group.create_dataset(name, data=np.asarray(array))
        group.attrs["done"] = True

    def write_extra(self, name: str, arrays: dict[str, np.ndarray | list[str]]) -> None:
        group = self._file.require_group("extra")
        if name in group:
            del group[name]
        sub = group.create_group(name)
        for key, value in arrays.items():
            if isinstance(value, list):
                sub.create_dataset(key, data=np.array(value, dtype=object), dtype=_STR)
            else:
                sub.create_dataset(key, data=np.asarray(value))

    def flush(self) -> None:
        self._file.flush()

    def finalize(self) -> None:
        self._file.attrs["complete"] = True
        self._file.close()
        os.replace(self.partial, self.path)

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

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
        for name, values in columns.items():
            if isinstance(values, list):
                f.create_dataset(name, data=np.array(values, dtype=object), dtype=_STR)
            else:
                f.create_dataset(name, data=np.asarray(values))
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
