"""Checkpoint files, written and read so that reading one never runs code.

**The rule: files from other people never run code when read.** Model files travel through the
team's shared DVC remote and cache, so a file read with plain pickle (`torch.load(weights_only=False)`)
would run whatever a tampered copy asks, on the machine of every teammate who pulls it. Hence:

- every `.pt` file mmdistill writes (the teacher, the retrieval student, the text student's heads,
  the resumable training state) is written by `save_checkpoint` and read by `load_checkpoint`, i.e.
  `torch.load(weights_only=True)`: tensors and plain data only (dict, list, tuple, str, int, float,
  bool, None). Configs and provenance are plain JSON-able data, and `save_checkpoint` checks the
  whole payload before writing (`check_plain`), so what we write we can read back;
- a file that holds anything else, a pickled Python object, is refused with `UnsafeCheckpoint` (a
  `UserError`: one line naming the file, the first diagnostic line of torch's refusal, and how to
  rebuild the file), and nothing in it runs;
- a HF encoder is read as safetensors only, with no remote code (models/students.py), and a CLIP
  checkpoint file through open_clip with `weights_only=True` under `weights_only_loads`
  (features/clip.py). The other shared files are data formats that hold no code: the floor model
  is JSON (models/floor.py), features and teacher predictions HDF5 (features/store.py).

The rebuild hints of the files mmdistill writes live here too (`TEACHER_FIX`, `student_fix`,
`TRAINING_STATE_FIX`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pipeline.core import paths
from pipeline.core.errors import UserError

PLAIN_VALUES = (str, int, float, bool, type(None))  # exact types: numpy scalars and subclasses are refused
PLAIN_KEYS = (str, int)  # int keys: an optimizer's state is keyed by parameter index

TEACHER_FIX = "rebuild it with `dvc repro -f teacher` (or delete it and run `dvc repro teacher`)"
TRAINING_STATE_FIX = "delete it: training then starts afresh instead of resuming"
FORCE, FORCE_NO = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class UnsafeCheckpoint(UserError):
    """A checkpoint holds pickled Python objects (anything `torch.load(weights_only=True)` refuses)."""


def student_fix(model_dir: Path) -> str:
    """How to rebuild the files of the student seed folder `model_dir`."""
    return f"rebuild it with `dvc repro -f distill@{paths.student_name(model_dir) or '<student>'}`"


def plain_problem(value: Any, where: str, tensors: bool) -> str | None:
    """Where in `value` the first thing that is neither plain data nor (with `tensors`) a tensor sits, as
    '<where>[key]...: <type>', or None if there is none."""
    if type(value) in PLAIN_VALUES or (tensors and isinstance(value, torch.Tensor)):
        return None
    if type(value) in (list, tuple):
        items = enumerate(value)
    elif type(value) in (dict, OrderedDict):  # OrderedDict: what state_dict() returns
        bad = next((k for k in value if type(k) not in (PLAIN_KEYS if tensors else (str,))), None)
        if bad is not None:
            return f"{where}: key {bad!r} of type {type(bad).__module__}.{type(bad).__qualname__}"
        items = value.items()
    else:
        return f"{where}: {type(value).__module__}.{type(value).__qualname__}"
    for key, item in items:
        problem = plain_problem(item, f"{where}[{key!r}]", tensors)
        if problem:
            return problem
    return None


def check_plain(value: Any, where: str, tensors: bool = False) -> None:
    """Raise TypeError unless `value` is plain JSON-able data (dicts with str keys, lists, tuples, str, int,
    float, bool, None), or with `tensors`, plain data and tensors (dict keys str or int): what
    `torch.load(weights_only=True)` reads back. `where` names the value in the message."""
    problem = plain_problem(value, where, tensors)
    if problem:
        allowed = "tensors, " if tensors else ""
        raise TypeError(f"{problem} is not plain data: a checkpoint holds only {allowed}dict, list, tuple, str, int, "
                        "float, bool and None (convert it, e.g. float(x), x.tolist(), str(x)), so that it loads "
                        "with torch.load(weights_only=True)")


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write `payload` (tensors and plain data, `check_plain`) to `path` atomically: a temporary file, then
    `os.replace`, so that `path` is at any moment either the previous file or the new one."""
    check_plain(payload, str(path), tensors=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, fix: str, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`; a file holding pickled Python objects is refused with
    `UnsafeCheckpoint` naming it and saying how to rebuild it (`fix`), and nothing in it runs."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise unsafe(path, err, fix) from None


def unsafe(path: Path | str, err: BaseException, fix: str) -> UnsafeCheckpoint:
    """The refusal of `path`, whose weights-only load raised `err`."""
    return UnsafeCheckpoint(f"{path} holds pickled Python objects (or was written by an mmdistill that allowed "
                            f"them), which mmdistill will not unpickle: unpickling could run code ({diagnosis(err)}); "
                            f"{fix}")


def diagnosis(err: BaseException) -> str:
    """The line of torch's weights-only refusal that says what was refused (its first line is boilerplate),
    without its advice to allow-list it; else the message's first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            return "torch: " + line.removeprefix("WeightsUnpickler error:").split(" Please use")[0].strip()
    return f"torch: {lines[0]}" if lines else type(err).__name__


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every `torch.load` in the block loads weights-only, also one that does not say so (a library's
    fallback) and whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says: torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD,
    set for the block (the environment is restored after it)."""
    saved = {name: os.environ.get(name) for name in (FORCE, FORCE_NO)}
    os.environ[FORCE] = "1"
    os.environ.pop(FORCE_NO, None)  # torch refuses both at once
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
