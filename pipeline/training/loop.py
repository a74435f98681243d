"""The training loop shared by the teacher and the students.

`fit` trains with AdamW and a linear warm-up then linear decay of the learning rate (the
schedule of RoBERTa/BERT fine-tuning), over shuffled mini-batches of a fixed-size training set,
with one validation pass per epoch and model selection on a validation value (MAE unless said
otherwise; the best epoch's weights are restored at the end). Curves go through dvclive: one
row per epoch with every loss term and the validation value, under
`dvclive/<dataset>/<model>/.../plots/metrics/`, which dvc.yaml declares as plots.

Scale (params `train.*`, see `TrainParams`):

- **Global batch.** `batch_size` is the batch of one optimizer step, whatever the number of
  processes and of accumulation steps: the same params give the same optimization.
- **DDP.** Under `torchrun` (WORLD_SIZE > 1; gloo on CPU, NCCL on GPU with cuda:LOCAL_RANK, see
  `runtime.train_device`) the model is wrapped in `DistributedDataParallel`. Every rank draws
  the same shuffled global batch (same generator seed) and keeps its contiguous shard of it.
- **Gradient accumulation.** A rank's shard is split (`tensor_split`, sizes may differ by one)
  into `grad_accum` micro-batches, each a forward/backward; DDP synchronizes only on the last.
- **Loss scaling.** `loss_fn` returns the mean loss of its micro-batch m, of size n_m, out of a
  global batch of size B on W ranks. Each micro loss is back-propagated as

        loss_m * W * n_m / B

  DDP averages the gradients over the W ranks, so the step's gradient is
  (1/W) sum_ranks sum_m W n_m/B grad(loss_m) = grad( (1/B) sum_i loss_i ): the gradient of the
  mean loss over the global batch, whatever W and `grad_accum` (up to float rounding: 1 process
  with grad_accum=1, 1 process with grad_accum=2 and 2 processes compute the same step). A rank
  whose shard is empty (a last batch smaller than W) runs one sample with weight 0 so that it
  still joins the gradient all-reduce. The logged loss of a step is sum_m n_m/B loss_m summed
  over the ranks: the global-batch mean.
- **Precision.** On CUDA, `fp16` (with a `GradScaler`) or `bf16` autocast around the forward
  and the loss; the backward and the optimizer run on fp32 weights. On CPU, `precision` is
  ignored (one log line says so) and training runs in fp32.
- **Trainable subset.** Parameters of `model` not in `parameters` get requires_grad=False while
  `fit` runs (restored afterwards), so that DDP does not wait for their gradients (the
  teacher's two_phase schedule trains subsets).
- **Validation** runs on every rank on the unwrapped model; rank 0's value is broadcast so that
  every rank selects the same best epoch. Only rank 0 writes curves and checkpoints.
- **Early stopping.** With `patience` P > 0, training stops after the first epoch that ends P
  epochs after the best one (no better validation value in P epochs), but never before
  `min_epochs` epochs: a model that sits on an initial plateau (the text student predicts a
  constant for its first 3-5 epochs on the default data) must not be stopped there. The best
  epoch's weights are restored as always. The learning-rate schedule is planned over `epochs`
  either way, so a run stopped early followed the same schedule as a full one up to its last epoch.
- **Step hook.** `step_hook(model, shard)` runs once per optimizer step, before the step's
  micro-batches, on every rank, with the unwrapped model and this rank's whole shard of the
  global batch (training-set positions, not split into micro-batches): whatever it does is the
  same for any `grad_accum`. MSD's `learned` weighting takes its meta step there. The floats it
  returns are logged like the loss terms.
- **Checkpoints.** With `state_path`, rank 0 writes a resumable checkpoint every
  `checkpoint_every` optimizer steps and at the end of every epoch (atomically,
  core/checkpoints.py `save_checkpoint`): weights, optimizer, scheduler and scaler states, the epoch, the batches
  done in it, the shuffling generator's state at the start of the epoch, the torch / numpy /
  python RNG states of every rank, the best epoch so far and its weights, the curve rows so
  far, and a fingerprint (the caller's `fingerprint`, to which the stages add the content digests
  of their input files and of their code, core/identity.py `run_identity`, plus this run's plan:
  `n_train`, `epochs`, `seed`, `valid_metric`, the train params except `checkpoint_every`). A later
  `fit` with the same fingerprint resumes where it stopped (same permutation, done batches
  skipped, curves re-logged); with a different one it warns, naming the keys that differ,
  and starts fresh. The file is deleted when `fit` returns. On CPU with one process an
  interrupted then resumed run ends with the same weights, bit for bit, as an uninterrupted one.
  The file holds tensors and plain data only (numpy's RNG state as a list of ints, the logged
  values as python floats) and is read with `torch.load(weights_only=True)`: one holding pickled
  objects is refused, never unpickled (core/checkpoints.py: files from other people never run
  code when read).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from dvclive import Live
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline.core.checkpoints import TRAINING_STATE_FIX, load_checkpoint, save_checkpoint
from pipeline.core.config import TrainParams
from pipeline.core.runtime import Ranks, Throughput, init_ranks

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]
StepHook = Callable[[nn.Module, torch.Tensor], dict[str, float]]
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """Index batches over n items, shuffled when a generator is given (the last one may be smaller)."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return order.split(batch_size)


def rank_shard(idx: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """This rank's contiguous part of the global batch `idx` (`tensor_split` over the W ranks; may be empty)."""
    return idx.tensor_split(ranks.world)[ranks.rank]


def micro_batches(idx: torch.Tensor, ranks: Ranks, grad_accum: int) -> list[tuple[torch.Tensor, float]]:
    """This rank's micro-batches of the global batch `idx`, each with its loss weight W * n_m / B.

    The rank's shard (`rank_shard`) is split again into `grad_accum` parts; empty parts are
    dropped. An empty shard (B < W) gives one sample with weight 0, so that the rank still takes
    part in DDP's gradient all-reduce."""
    shard = rank_shard(idx, ranks)
    micros = [m for m in shard.tensor_split(grad_accum) if len(m)]
    if not micros:
        return [(idx[:1], 0.0)]
    return [(m, ranks.world * len(m) / len(idx)) for m in micros]


def warmup_linear(total_steps: int, warmup: float) -> Callable[[int], float]:
    """LR multiplier: 0 -> 1 over the first `warmup` fraction of steps, then 1 -> 0 linearly."""
    warm = max(1, int(round(warmup * total_steps)))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return factor


def open_live(curves: Path) -> Live:
    """dvclive logger for one model's curves (no experiment saving: DVC runs the stage)."""
    from scmrepo.exceptions import SCMError

    try:
        return Live(dir=str(curves), save_dvc_exp=False, dvcyaml=None)
    except SCMError as err:  # dvclive cannot start in a git repository without commits
        raise RuntimeError(f"dvclive could not start ({err}): the project's git repository needs at least one "
                           "commit; run `git add -A && git commit -m start` and rerun") from err


# --------------------------------------------------------------------------- checkpoints


def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states as tensors and plain data (numpy's key array as a list of ints), so that
    the checkpoint loads weights-only."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": str(kind), "key": key.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                      "gauss": float(gauss)},
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write `path` so that it is, at any moment, either the previous checkpoint or the new one."""
    save_checkpoint(payload, path)


def _load_matching(path: Path | None, fingerprint: dict[str, Any], desc: str) -> dict[str, Any] | None:
    """The checkpoint at `path` if there is one written with the same fingerprint, else None (one holding
    pickled objects is refused: `UnsafeCheckpoint`)."""
    if path is None or not path.is_file():
        return None
    saved = load_checkpoint(path, TRAINING_STATE_FIX)
    old = saved.get("fingerprint", {})
    missing = object()
    differ = sorted(k for k in old.keys() | fingerprint.keys() if old.get(k, missing) != fingerprint.get(k, missing))
    if differ:
        log.warning("%s: checkpoint %s was written with other inputs, params or code (differs in: %s); starting "
                    "fresh",
                    desc, path, ", ".join(differ))
        return None
    log.info("%s: resuming from %s at epoch %d, batch %d", desc, path, saved["progress"]["epoch"],
             saved["progress"]["done"])
    return saved


def _run_fingerprint(fingerprint: dict[str, Any] | None, n_train: int, epochs: int, seed: int, valid_metric: str,
                     params: TrainParams) -> dict[str, Any]:
    """What a checkpoint must share with this run to be resumed: the caller's fingerprint and the plan
    of the run (checkpoint_every may change between an interrupted run and its resumption)."""
    train = {f"train.{k}": v for k, v in dataclasses.asdict(params).items() if k != "checkpoint_every"}
    plan = {"fit.n_train": n_train, "fit.epochs": epochs, "fit.seed": seed, "fit.valid_metric": valid_metric}
    return {**plan, **train, **(fingerprint or {})}


# --------------------------------------------------------------------------- training loop


def _model_device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def _freeze_others(model: nn.Module, trained: list[nn.Parameter]) -> list[tuple[nn.Parameter, bool]]:
    """Set requires_grad=False on the parameters of `model` that are not trained; returns the
    flags to restore."""
    ids = {id(p) for p in trained}
    frozen = [(p, p.requires_grad) for p in model.parameters() if id(p) not in ids]
    for p, _ in frozen:
        p.requires_grad_(False)
    return frozen


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=AMP_DTYPES[precision])


def _train_step(net: nn.Module, idx: torch.Tensor, ranks: Ranks, params: TrainParams, device: torch.device,
                get_batch: Callable[[torch.Tensor], Batch], loss_fn: LossFn, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, step_hook: StepHook | None) -> dict[str, float]:
    """One optimizer step on the global batch `idx`; returns its loss terms averaged over the global batch
    (and the step hook's floats, rank 0's)."""
    optimizer.zero_grad(set_to_none=True)
    hooked = step_hook(_unwrap(net), rank_shard(idx, ranks)) if step_hook is not None else {}
    hooked = {k: float(v) for k, v in hooked.items()}  # python floats: the training state loads weights-only
    micros = micro_batches(idx, ranks, params.grad_accum)
    terms: dict[str, float] = {}
    for j, (micro, weight) in enumerate(micros):
        last = j == len(micros) - 1
        # DDP all-reduces the gradients on the backward of the last micro-batch only
        with contextlib.nullcontext() if last or ranks.world == 1 else net.no_sync():
            with _autocast(device, params.precision):
                loss, parts = loss_fn(net, get_batch(micro))
            scaler.scale(loss * weight).backward()
        share = weight / ranks.world  # n_m / B
        for k, v in {"loss": loss.item(), **parts}.items():
            terms[k] = terms.get(k, 0.0) + share * float(v)
    if ranks.world > 1:  # the global-batch mean: sum of every rank's share
        keys = sorted(terms)
        total = torch.tensor([terms[k] for k in keys], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(total)
        terms = dict(zip(keys, total.tolist(), strict=True))
    scaler.step(optimizer)
    scaler.update()
    return {**hooked, **terms}


def _unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, DistributedDataParallel) else net


def _agree(value: float, ranks: Ranks, device: torch.device) -> float:
    """Rank 0's validation value on every rank, so that all ranks select the same epoch."""
    if ranks.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.broadcast(t, src=0)
    return t.item()


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def fit(model: nn.Module, parameters: Iterable[nn.Parameter], n_train: int, get_batch: Callable[[torch.Tensor], Batch],
        loss_fn: LossFn, validate: Callable[[nn.Module], float], params: TrainParams, epochs: int, seed: int,
        curves: Path, desc: str, valid_metric: str = "mae", *, maximize: bool = False, state_path: Path | None = None,
        fingerprint: dict[str, Any] | None = None, extra_state: Stateful | None = None,
        step_hook: StepHook | None = None) -> dict[str, float]:
    """Train `parameters` of `model` for `epochs`, keeping the weights of the epoch with the lowest
    `validate(model)` (named `valid_metric`; the highest with `maximize`, e.g. a mAP); returns that
    epoch and its value, `{"epoch": e, f"valid_{valid_metric}": v}`.

    `model` is already on its training device (`runtime.train_device(params.device)`), and
    `get_batch(indices)` returns the batch of those training-set indices on that device.
    `loss_fn(net, batch)` returns the mean loss over the batch and a dict of floats to log; under
    torchrun `net` is the DDP-wrapped model (call it like the model), while `validate` gets the
    model itself. `params.batch_size` is the global batch B; each of this rank's micro-batches m
    (n_m samples, W ranks) is back-propagated as `loss_m * W * n_m / B`, so that a step follows the
    gradient of the mean loss over the global batch (module docstring). Under torchrun the process
    group is joined here if the caller has not (`runtime.init_ranks`); the stage's `main` destroys it.

    `state_path`: resumable checkpoint, written every `params.checkpoint_every` steps and at each
    epoch end by rank 0, resumed when its fingerprint (`fingerprint` plus this run's plan) equals
    this run's, and deleted when `fit` returns. `extra_state` (anything with `state_dict` /
    `load_state_dict`, e.g. MSD's learned modality weights) is saved and restored with it.
    Parameters of `model` not in `parameters` do not require grad while `fit` runs.
    `params.patience` > 0 stops early; `step_hook(model, shard)` runs once per optimizer step
    (module docstring). The returned dict also has `epochs_run`, the epochs trained in all.
    """
    ranks = init_ranks()
    device = _model_device(model)
    if device.type == "cuda" and ranks.world > 1:
        torch.cuda.set_device(device)  # NCCL collectives use the current device
    if device.type != "cuda" and params.precision != "fp32":
        log.info("%s: precision %s applies on CUDA only; training on %s in fp32", desc, params.precision, device)
    trained = list(parameters)
    frozen = _freeze_others(model, trained)
    try:
        best = _fit(model, trained, n_train, get_batch, loss_fn, validate, params, epochs, seed, curves, desc,
                    valid_metric, -1.0 if maximize else 1.0, state_path,
                    _run_fingerprint(fingerprint, n_train, epochs, seed, valid_metric, params), ranks, device,
                    extra_state, step_hook)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    if state_path is not None and ranks.rank == 0:  # finished: nothing to resume
        state_path.unlink(missing_ok=True)
        state_path.with_name(state_path.name + ".tmp").unlink(missing_ok=True)
    return best


def _fit(model: nn.Module, trained: list[nn.Parameter], n_train: int, get_batch: Callable[[torch.Tensor], Batch],
         loss_fn: LossFn, validate: Callable[[nn.Module], float], params: TrainParams, epochs: int, seed: int,
         curves: Path, desc: str, valid_metric: str, sign: float, state_path: Path | None, fingerprint: dict[str, Any],
         ranks: Ranks, device: torch.device, extra_state: Stateful | None,
         step_hook: StepHook | None) -> dict[str, float]:
    main = ranks.rank == 0
    optimizer = torch.optim.AdamW(trained, lr=params.lr, weight_decay=params.weight_decay)
    steps_per_epoch = -(-n_train // params.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(epochs * steps_per_epoch, params.warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and params.precision == "fp16")
    key = f"valid_{valid_metric}"
    saved = _load_matching(state_path, fingerprint, desc)
    if saved is None:
        # everything the loop needs to go on from where it is; the checkpoint stores it
        progress: dict[str, Any] = {
            "epoch": 0, "done": 0,  # epoch, and optimizer steps done in it
            "generator": torch.Generator().manual_seed(seed).get_state(),  # shuffling state at the epoch's start
            "sums": {},  # loss terms summed over the epoch's steps so far
            "rows": [],  # curve rows of the finished epochs
            "best": {"epoch": -1, key: sign * float("inf")}, "best_state": copy.deepcopy(model.state_dict()),
        }
    else:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        if extra_state is not None:
            extra_state.load_state_dict(saved["extra"])
        progress = saved["progress"]
        rngs = saved["rng"]  # this rank's RNG states (rank 0's if the number of ranks changed)
        _set_rng_state(rngs[ranks.rank] if len(rngs) == ranks.world else rngs[0], device)
        del saved, rngs  # the loaded copy of the weights

    def checkpoint() -> None:
        if state_path is None:
            return
        rng = _rng_state(device)
        rngs = [rng]
        if ranks.world > 1:  # every rank's RNG states (dropout), gathered on every rank
            rngs = [None] * ranks.world
            torch.distributed.all_gather_object(rngs, rng)
        if main:
            _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "progress": progress,
                          "rng": rngs, "fingerprint": fingerprint,
                          "extra": extra_state.state_dict() if extra_state is not None else None}, state_path)

    net = model
    if ranks.world > 1:
        # find_unused_parameters: a branch may sit out a batch (e.g. a learned mask of a present modality)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=True)
    step = progress["epoch"] * steps_per_epoch + progress["done"]
    speed = Throughput()
    with open_live(curves) if main else contextlib.nullcontext() as live:
        for row in progress["rows"]:  # a resumed run: the finished epochs' rows into the fresh curves
            for k, v in row.items():
                live.log_metric(k, v)
            live.next_step()
        bar = tqdm(range(progress["epoch"], epochs), desc=desc, unit="epoch", total=epochs, initial=progress["epoch"],
                   disable=not main)
        for epoch in bar:
            if (params.patience and epoch >= params.min_epochs  # checked here: on resume too
                    and epoch - 1 - progress["best"]["epoch"] >= params.patience):
                if main:
                    log.info("%s: no better valid %s in the %d epochs after epoch %d; stopping early after epoch %d",
                             desc, valid_metric, params.patience, progress["best"]["epoch"], epoch - 1)
                break
            generator = torch.Generator()
            generator.set_state(progress["generator"])
            order = batches(n_train, params.batch_size, generator)  # the same permutation on every rank
            net.train()
            for idx in order[progress["done"]:]:
                terms = _train_step(net, idx, ranks, params, device, get_batch, loss_fn, optimizer, scaler,
                                    step_hook)
                scheduler.step()
                speed.add(len(idx))
                step += 1
                progress["done"] += 1
                for k, v in terms.items():
                    progress["sums"][k] = progress["sums"].get(k, 0.0) + v
                if params.checkpoint_every and step % params.checkpoint_every == 0 and progress["done"] < len(order):
                    checkpoint()
            model.eval()
            value = float(_agree(validate(model), ranks, device))  # a numpy float would not load weights-only
            sums = progress["sums"]
            row = {**{f"train/{k}": v / len(order) for k, v in sums.items()}, f"valid/{valid_metric}": value}
            if main:
                for k, v in row.items():
                    live.log_metric(k, v)
                live.next_step()
            if sign * value < sign * progress["best"][key]:  # sign -1: higher is better
                progress["best"] = {"epoch": epoch, key: value}
                progress["best_state"] = copy.deepcopy(model.state_dict())
            progress.update(epoch=epoch + 1, done=0, generator=generator.get_state(), sums={},
                            rows=[*progress["rows"], row])
            checkpoint()
            bar.set_postfix(loss=f"{sums['loss'] / len(order):.3f}", **{key: f"{value:.3f}"})
            if main and (epoch % 10 == 0 or epoch == epochs - 1):
                log.info("%s epoch %d: loss %.4f, valid %s %.4f, %.0f samples/s", desc, epoch,
                         sums["loss"] / len(order), valid_metric, value, speed.rate())
    best = progress["best"]
    model.load_state_dict(progress["best_state"])
    model.eval()
    if main:
        log.info("%s: best epoch %d, valid %s %.4f", desc, best["epoch"], valid_metric, best[key])
    return {**best, "epochs_run": progress["epoch"]}
