"""MMSA's processed feature pickles (`unaligned_50.pkl`, `aligned_50.pkl`), read without running code.

The MMSA toolkit (Mao et al., "M-SENA", ACL 2022 demo; github.com/thuiar/MMSA) distributes CMU-MOSI,
CMU-MOSEI and CH-SIMS as one pickle per alignment, a dict of splits, each a dict of arrays::

    {"train": {"id": (N,) "<video_id>$_$<clip_id>",    the manifest's clip ids (datasets.clip_key)
               "audio": (N, T_a, d_a) float,           COVAREP (MOSI/MOSEI) or librosa (SIMS) frames
               "vision": (N, T_v, d_v) float,          FACET (MOSI/MOSEI) or OpenFace (SIMS) frames
               "audio_lengths", "vision_lengths": (N,) valid frames per clip (unaligned files; the
                                                       rest of each row is zero padding)
               "text", "text_bert", "raw_text", "regression_labels", "annotations", ...},
     "valid": {...}, "test": {...}}

`read_mmsa_features(path, key)` returns clip id -> (n, d) float32 frames of one key (`audio` or
`vision`), over every split, trimmed to its `<key>_lengths` when the file has them (a clip of length
0 has no frames and is left out). Aligned files have no lengths: every clip keeps all T rows.

Safety: a pickle can name any Python callable and have the loader call it. This file comes from
other people, so it is read by `SafeUnpickler`, which admits only the globals that rebuild plain
containers, strings, numbers and numpy arrays (ALLOWED_GLOBALS) and refuses every other one before
anything is called; `pickle.load` is never used. Every problem is a DatasetError naming the file.
"""

from __future__ import annotations

import collections
import importlib
import io
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.errors import DatasetError

log = logging.getLogger(__name__)

MMSA_SPLITS = ("train", "valid", "test")
MMSA_KEYS = ("audio", "vision")  # the non-text feature arrays of an MMSA pickle
ID_KEY = "id"

# (module, name) a pickle of plain data and numpy arrays refers to: numpy 1.x and 2.x spellings of the
# array / dtype / scalar constructors, the protocol-5 array-from-buffer helper, Python 2 era bytes
# (`_codecs.encode`) and OrderedDict. Each builds data; none runs code given by the file.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
})


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ALLOWED_GLOBALS; any other global (a class, a function such as
    os.system) raises pickle.UnpicklingError before it is looked up, so it is never called."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which is not plain data (only containers, "
                                         "strings, numbers and numpy arrays are admitted)")
        if module == "collections":
            return collections.OrderedDict
        if module == "_codecs":
            return importlib.import_module("codecs").encode
        if module.startswith("numpy.core."):  # the numpy 1.x name of numpy._core (a deprecated alias in 2.x)
            module = "numpy._core." + module.removeprefix("numpy.core.")
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError:  # numpy 1.x has no numpy._core
            return getattr(importlib.import_module(module.replace("numpy._core.", "numpy.core.")), name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("uses persistent ids, which plain data never does")


def safe_load_pickle(path: Path) -> Any:
    """The object a pickle file holds, read with `SafeUnpickler`; DatasetError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"MMSA feature pickle {path} not found")
    try:
        with open(path, "rb") as file:
            return SafeUnpickler(io.BufferedReader(file)).load()
    except pickle.UnpicklingError as err:
        raise DatasetError(f"{path}: refused: the pickle {err}. mmdistill reads feature pickles without running "
                           "code; re-save the features as plain dicts of numpy arrays (MMSA's own format)") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError) as err:
        raise DatasetError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None


def _rows(value: Any, path: Path, where: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DatasetError(f"{path}: {where} has dtype {array.dtype}; expected numeric features")
    if array.ndim == 2:  # (N, d): one vector per clip
        array = array[:, None, :]
    if array.ndim != 3:
        raise DatasetError(f"{path}: {where} has shape {array.shape}; expected (clips, frames, features) or "
                           "(clips, features)")
    return array


def read_mmsa_features(path: Path, key: str) -> dict[str, np.ndarray]:
    """Clip id -> (n, d) float32 frames of `key` (`audio` | `vision`) over every split of an MMSA pickle,
    trimmed to `<key>_lengths` when present. DatasetError naming the file for a layout it does not follow."""
    path = Path(path)
    if key not in MMSA_KEYS:
        raise DatasetError(f"{path}: unknown MMSA feature key {key!r}; expected one of {list(MMSA_KEYS)}")
    data = safe_load_pickle(path)
    if not isinstance(data, dict) or not (set(data) & set(MMSA_SPLITS)):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(f"{path}: expected a dict with the splits {list(MMSA_SPLITS)} (MMSA's processed "
                           f"features), found {found}")
    out: dict[str, np.ndarray] = {}
    for split in (s for s in MMSA_SPLITS if s in data):
        part = data[split]
        missing = [k for k in (ID_KEY, key) if not isinstance(part, dict) or k not in part]
        if missing:
            keys = sorted(map(str, part)) if isinstance(part, dict) else type(part).__name__
            raise DatasetError(f"{path}: split {split!r} has no {missing}; it has {keys}")
        ids = [str(i) for i in np.asarray(part[ID_KEY]).reshape(-1)]
        frames = _rows(part[key], path, f"{split}/{key}")  # (N, T, d)
        lengths = part.get(f"{key}_lengths")
        lengths = (np.full(len(frames), frames.shape[1]) if lengths is None
                   else np.asarray(lengths).reshape(-1).astype(np.int64))
        if not len(ids) == len(frames) == len(lengths):
            raise DatasetError(f"{path}: split {split!r}: {len(ids)} ids, {len(frames)} rows of {key} and "
                               f"{len(lengths)} {key}_lengths; they must be aligned clip by clip")
        if ((lengths < 0) | (lengths > frames.shape[1])).any():
            raise DatasetError(f"{path}: split {split!r}: {key}_lengths outside [0, {frames.shape[1]}]")
        for clip_id, row, n in zip(ids, frames, lengths, strict=True):
            if clip_id in out:
                raise DatasetError(f"{path}: clip id {clip_id!r} appears twice (split {split!r} and an earlier one)")
            if n > 0:
                with np.errstate(over="ignore"):
                    out[clip_id] = row[:n].astype(np.float32)  # (n, d)
    log.info("read MMSA %s features of %d clips from %s", key, len(out), path)
    return out
