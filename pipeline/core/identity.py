"""What a training run's result depends on besides params: the content of its input files and the
code. A resumable checkpoint records both (training/loop.py `fit`), and a run resumes from it only
when they are identical, so an interrupted run never continues from a checkpoint made with other
features, teacher predictions, manifest or code (DVC reruns a stage when any of these changes, but
the checkpoint outside DVC's outputs would survive that)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20
CODE_SUFFIXES = (".py", ".json")  # the package's modules and its model configs


@functools.cache
def _digest(path: str, size: int, mtime_ns: int) -> str:  # cached per process for an unchanged file
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """BLAKE2b-128 of the file's bytes (about 1 GB/s: a second or two for a large feature file)."""
    stat = Path(path).stat()
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


def input_identity(files: Iterable[Path]) -> dict[str, str]:
    """`input:<path>` -> content digest of each file, the keys a checkpoint fingerprint carries (a
    mismatch names the file that changed)."""
    return {f"input:{Path(p)}": file_digest(Path(p)) for p in files}


@functools.cache
def code_version() -> str:
    """Digest of this package's source (every .py and model config under pipeline/, by relative path):
    any change to the code, even one that does not change results, starts training afresh."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(p for p in root.rglob("*") if p.suffix in CODE_SUFFIXES and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()
