"""The training loop shared by the teacher and the students.

AdamW with a linear warm-up then linear decay of the learning rate (the schedule of
RoBERTa/BERT fine-tuning), over mini-batches of a fixed-size training set, one validation pass per epoch,
and model selection on a validation loss (MAE unless said otherwise; the best epoch's
weights are restored at the end). Curves go through dvclive: one row per epoch with every loss term and the
validation MAE, under `dvclive/<dataset>/<model>/plots/metrics/`, which dvc.yaml declares
as plots.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from dvclive import Live

from .config import TrainParams
from .runtime import Throughput

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterable[torch.Tensor]:
    """Index batches over n items, shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return order.split(batch_size)


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


def fit(model: nn.Module, parameters: Iterable[nn.Parameter], n_train: int, get_batch: Callable[[torch.Tensor], Batch],
        loss_fn: LossFn, validate: Callable[[nn.Module], float], params: TrainParams, epochs: int, seed: int,
        curves: Path, desc: str, valid_metric: str = "mae") -> dict[str, float]:
    """Train `parameters` of `model` for `epochs`, keeping the weights of the epoch with the lowest
    `validate(model)` (named `valid_metric`); returns that epoch and its value."""
    optimizer = torch.optim.AdamW(list(parameters), lr=params.lr, weight_decay=params.weight_decay)
    steps = epochs * -(-n_train // params.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(steps, params.warmup))
    generator = torch.Generator().manual_seed(seed)
    key = f"valid_{valid_metric}"
    best = {"epoch": -1, key: float("inf")}
    best_state = copy.deepcopy(model.state_dict())
    speed = Throughput()
    with open_live(curves) as live:
        for epoch in (bar := tqdm(range(epochs), desc=desc, unit="epoch")):
            model.train()
            sums: dict[str, float] = {}
            n_batches = 0
            for idx in batches(n_train, params.batch_size, generator):
                loss, parts = loss_fn(model, get_batch(idx))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                speed.add(len(idx))
                n_batches += 1
                for k, v in {"loss": loss.item(), **parts}.items():
                    sums[k] = sums.get(k, 0.0) + v
            model.eval()
            value = validate(model)
            for k, v in sums.items():
                live.log_metric(f"train/{k}", v / n_batches)
            live.log_metric(f"valid/{valid_metric}", value)
            live.next_step()
            if value < best[key]:
                best = {"epoch": epoch, key: value}
                best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(loss=f"{sums['loss'] / n_batches:.3f}", **{key: f"{value:.3f}"})
            if epoch % 10 == 0 or epoch == epochs - 1:
                log.info("%s epoch %d: loss %.4f, valid %s %.4f, %.0f samples/s", desc, epoch,
                         sums["loss"] / n_batches, valid_metric, value, speed.rate())
    model.load_state_dict(best_state)
    model.eval()
    log.info("%s: best epoch %d, valid %s %.4f", desc, best["epoch"], valid_metric, best[key])
    return best
