"""What every stage shares at run time: logging, seeding, device choice, and the
stage log line that says what a stage read, what it wrote and how long it took."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("pipeline")


def setup_logging(level: int = logging.INFO) -> None:
    """One format for every stage: time, module, message."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch, and ask torch for deterministic kernels.

    With the same params and the same machine type, CPU runs give identical outputs.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda when available; an explicit cuda request without a GPU fails clearly."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return device


def _describe(paths: Sequence[Path | str]) -> str:
    return ", ".join(str(p) for p in paths) or "-"


@contextlib.contextmanager
def stage(name: str, reads: Sequence[Path | str], writes: Sequence[Path | str]) -> Iterator[None]:
    """Log what a stage reads and writes, and its wall time, around its work."""
    log.info("[%s] reads: %s", name, _describe(reads))
    start = time.perf_counter()
    yield
    log.info("[%s] wrote: %s (%.1f s)", name, _describe(writes), time.perf_counter() - start)


class Throughput:
    """Count samples between log lines: `rate()` gives samples/s since the last call."""

    def __init__(self) -> None:
        self._t = time.perf_counter()
        self._n = 0

    def add(self, n: int) -> None:
        self._n += n

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self._n / max(now - self._t, 1e-9)
        self._t, self._n = now, 0
        return rate
