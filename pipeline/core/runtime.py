"""What every stage shares at run time: its command-line entry point (user errors as one line),
logging, seeding, device choice, this process's place in a torchrun job, and the stage log line
that says what a stage read, what it wrote and how long it took."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pipeline.core.config import ConfigError
from pipeline.core.errors import UserError

if TYPE_CHECKING:  # imported where used: the data stages (generate, prepare, floor) start without torch
    import torch

log = logging.getLogger("pipeline")


DEBUG_ENV = "MMDISTILL_DEBUG"


def debug_requested(argv: Sequence[str] = ()) -> bool:
    """`--debug` on the command line, or MMDISTILL_DEBUG set to anything but "", 0, false or no."""
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def entry_point(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Run a command's `main(argv)` and exit with its code. A `UserError` (bad params, data or files:
    something the user fixes) prints as `error: <message>` on stderr, with no traceback, and exits
    with code 2; `--debug` (removed from argv) or MMDISTILL_DEBUG=1 re-raises it with its traceback.
    Any other exception keeps its traceback: it is a bug or a failure of the environment."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    try:
        code = main([a for a in args if a != "--debug"])
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


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
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda when available; an explicit cuda request without a GPU fails clearly."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine; set the "
                          "params' device to 'cpu' or 'auto'")
    return device


# --------------------------------------------------------------------------- ranks (torchrun)


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def tag(self) -> str:
        return f"rank{self.rank}"

    def barrier(self) -> None:
        import torch

        if self.world > 1:
            torch.distributed.barrier()


def env_ranks() -> Ranks:
    """This process's ranks as torchrun's environment gives them (WORLD_SIZE, RANK, LOCAL_RANK),
    without joining the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_ranks() -> Ranks:
    """Read torchrun's environment and join the process group (gloo on CPU, nccl on GPU).

    Idempotent: a second call returns the same ranks without joining again. A stage's `main`
    wraps its work in `process_group()`, which leaves the group at the end."""
    import torch

    ranks = env_ranks()
    if ranks.world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return ranks


@contextlib.contextmanager
def process_group() -> Iterator[Ranks]:
    """A stage's torchrun membership: join the process group (if under torchrun), leave it at the end."""
    import torch

    ranks = init_ranks()
    try:
        yield ranks
    finally:
        if ranks.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def rank_device(name: str, ranks: Ranks) -> torch.device:
    """`resolve_device(name)`, except that under torchrun a GPU run takes cuda:LOCAL_RANK."""
    import torch

    device = resolve_device(name)
    return torch.device("cuda", ranks.local_rank) if device.type == "cuda" and ranks.world > 1 else device


def train_device(name: str) -> torch.device:
    """The device this process trains on (params `train.device`): `auto` | `cpu` | `cuda` | `cuda:N`,
    and under torchrun on a GPU, cuda:LOCAL_RANK (one GPU per process)."""
    return rank_device(name, env_ranks())


def is_main_process() -> bool:
    """True on rank 0 of a torchrun job and in a plain (single-process) run: the process that
    writes curves, checkpoints and stage outputs."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return env_ranks().rank == 0


# --------------------------------------------------------------------------- seeds in parallel


def seed_workers(n_seeds: int, device: str, per_core: int = 1) -> int:
    """How many processes `run_seeds` uses: one per seed, up to `per_core` per CPU core this process may
    use, on a CPU run with more than one core outside torchrun (a GPU, or each torchrun rank, trains one
    seed at a time). Two per core suit models so small that a process leaves its core idle between
    operations (the students: 3 seeds on 2 cores take 1.5 seeds' time instead of 2); one per core suits
    the compute-bound ones (the teacher)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n_seeds < 2 or cores < 2 or env_ranks().world > 1 or resolve_device(device).type != "cpu":
        return 1
    return min(n_seeds, per_core * cores)


def run_seeds(train: Callable[[int], None], seeds: Sequence[int], device: str, per_core: int = 1) -> None:
    """train(seed) for every seed. On a CPU with several cores, the seeds run in `seed_workers` forked
    processes, each with max(1, threads // workers) torch threads and its seeds in order (seed i goes to
    worker i mod W): the tiny models of the default gain little from a second intra-op thread and much
    from a second process. Each seed seeds itself, writes its own outputs and
    its own resumable checkpoint, so the result of a seed does not depend on which worker ran it (for
    a given number of threads per worker). A failed seed fails the stage, naming it; the other
    workers' finished seeds are kept (their outputs and checkpoints are on disk). A worker's
    `UserError` is raised again here, with its message, so the stage reports it as one line."""
    workers = seed_workers(len(seeds), device, per_core)
    if workers == 1:
        for seed in seeds:
            train(seed)
        return
    import multiprocessing

    import torch

    threads = max(1, torch.get_num_threads() // workers)  # e.g. 16 cores, 3 seeds: 5 threads each
    context = multiprocessing.get_context("fork")  # inherits the loaded data and imports, no pickling
    user_errors = context.SimpleQueue()

    def work(mine: list[int]) -> None:
        torch.set_num_threads(threads)
        for seed in mine:
            try:
                train(seed)
            except UserError as err:
                user_errors.put(f"seed {seed}: {err}")
                os._exit(2)
            except BaseException:
                log.exception("seed %d failed", seed)
                os._exit(1)
        os._exit(0)  # skip the parent's atexit handlers in the child

    shares = [list(seeds[w::workers]) for w in range(workers)]
    log.info("training seeds %s in %d processes (%d torch thread%s each)", list(seeds), workers, threads,
             "s" * (threads != 1))
    processes = [context.Process(target=work, args=(mine,), name=f"seeds {mine}") for mine in shares]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    failed = [mine for p, mine in zip(processes, shares, strict=True) if p.exitcode != 0]
    if not user_errors.empty():
        raise UserError(user_errors.get())
    if failed:
        raise RuntimeError(f"training failed in the worker of seeds {failed} (its log above says why); the other "
                           "seeds finished: rerun the stage to resume")


# --------------------------------------------------------------------------- stage log


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
