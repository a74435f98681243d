"""What a training run's result depends on besides params: the content of its input files and the
code. A resumable checkpoint records both (training/loop.py `fit`), and a run resumes from it only
when they are identical, so an interrupted run never continues from a checkpoint made with other
features, teacher predictions, manifest or code (DVC reruns a stage when any of these changes, but
the checkpoint outside DVC's outputs would survive that)."""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

_CHUNK = 1 << 20
PACKAGE = Path(__file__).resolve().parents[1]


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


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of this package (packages by their __init__.py)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `module` imports (absolute or relative, at any depth of the file: a lazy import
    inside a function is a dependency too), read with `ast`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from pipeline.features import media` imports the module media
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != module}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = module_files()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def closure(imports: Callable[[str], set[str]], start: str) -> set[str]:
    """Every project module that importing `start` loads (with the packages above each); `imports(m)`
    gives a module's direct imports (`import_graph().__getitem__`, or `imports_of` read on demand)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(imports(m))
        parts = m.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    return seen


def code_version(module: str) -> str:
    """Digest of the code `module` (a stage: `pipeline.teacher`) runs: the source of its static import
    closure, which is exactly what its DVC stage depends on (tests/stages/test_layout.py), and the model
    configs. Editing a module the stage does not import (the report, say) leaves it unchanged, so an
    interrupted hours-long run can still resume; any change to the stage's own code, even one that does
    not change results, starts afresh. It parses the closure's modules: 0.13 s for extract, 0.3 s for distill."""
    modules = module_files()
    files = {modules[m] for m in closure(lambda m: imports_of(m, modules[m], modules), module)}
    files |= set((PACKAGE / "features" / "model_configs").glob("*.json"))
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(files):
        h.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def run_identity(stage: str, files: Iterable[Path]) -> dict[str, str]:
    """What a resumable run of `stage` must share with the checkpoint it resumes, besides params: the
    digests of the files it read and of its code."""
    return {**input_identity(files), "code": code_version(f"{PACKAGE.name}.{stage}")}
