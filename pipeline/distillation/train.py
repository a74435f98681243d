"""Training one student, for either task: the trainer behind stage distill@<student>.

A student is `<family>-<method>` (distillation/families.py): the family says which student (the task's
`student_kinds`: sentiment's text-only or multimodal student, retrieval's two-branch student), the
method what it learns from the teacher (distillation/methods.py, one table for both tasks). Every
student trains on the train split through the one training loop (training/loop.py `fit`) and is
selected on the validation split with the task's metric (`train.patience` stops early).

`msd-learned` fits its weights on a meta set carved from the training split (or the validation split:
`distill.msd.meta_split`, `meta_fraction`), never the clips the epoch is selected on; its meta step
runs once per optimizer step from the training loop's step hook, on the whole batch, so
`train.grad_accum` does not change it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pipeline.core import paths
from pipeline.core.config import MODALITIES, DistillParams, MSDParams, to_dict
from pipeline.core.runtime import train_device
from pipeline.distillation.families import Student
from pipeline.distillation.methods import METHODS, Method
from pipeline.distillation.msd import MetaWeights, Weighting, build_weighting, functional_forward, student_columns
from pipeline.features.arrays import FeatureArrays
from pipeline.tasks.base import Task
from pipeline.training.loop import StepHook, fit

log = logging.getLogger(__name__)

META_SEED_OFFSET = 7919  # the meta set's draw: seeded apart from the training seed's other draws

Batch = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- MSD weights and the meta step


@dataclasses.dataclass
class LearnedState:
    """What `msd-learned` adds to a resumable training state: the weights' logits phi and the
    generator that draws the meta batch of each look-ahead step."""

    meta: MetaWeights
    meta_draw: torch.Generator

    def state_dict(self) -> dict:
        return {"meta": self.meta.state_dict(), "meta_draw": self.meta_draw.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.meta.load_state_dict(state["meta"])
        self.meta_draw.set_state(state["meta_draw"])


def carve_meta_set(train_idx: torch.Tensor, valid_idx: torch.Tensor, params: MSDParams,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, selection, meta) clip indices for `msd-learned`: `meta_fraction` of the `meta_split` split,
    drawn with the seed, is the meta set and leaves that split, so the weights are never fitted on the
    clips the epoch is selected on (nor, with meta_split=train, on clips the student trains on)."""
    source = train_idx if params.meta_split == "train" else valid_idx
    order = source[torch.randperm(len(source), generator=torch.Generator().manual_seed(seed + META_SEED_OFFSET))]
    n_meta = max(1, round(params.meta_fraction * len(source)))
    meta, rest = order[:n_meta].sort().values, order[n_meta:].sort().values
    if len(rest) == 0:
        raise ValueError(f"distill.msd.meta_fraction={params.meta_fraction} leaves no {params.meta_split} clip out "
                         f"of {len(source)} outside the meta set: lower it")
    return (rest, valid_idx, meta) if params.meta_split == "train" else (train_idx, rest, meta)


def msd_weights(method: Method, teacher: dict[str, torch.Tensor], train_idx: torch.Tensor, params: DistillParams,
                seed: int) -> tuple[Weighting | None, LearnedState | None]:
    """The MSD weighting of a method (None without one), built from the teacher's saliency on the training
    clips, and, for `learned`, its resumable state."""
    if method.weighting is None:
        return None, None
    weights = build_weighting(method.weighting, teacher["saliency"][train_idx],
                              instance_temperature=params.msd.instance_temperature, meta_lr=params.msd.meta_lr,
                              lookahead_lr=params.train.lr)
    if not isinstance(weights, MetaWeights):
        return weights, None
    return weights, LearnedState(weights, torch.Generator().manual_seed(seed + 1))


MethodCall = Callable[[Callable[..., Batch], Batch, torch.Tensor | None], tuple[torch.Tensor, dict[str, float]]]


def msd_loss_fn(method_loss: MethodCall, weights: Weighting | None,
                modalities: tuple[str, ...]) -> Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]:
    """`fit`'s loss_fn for a student: method_loss(net, batch, w) with w the MSD weights of the student's
    `modalities` (None for a method without them, detached); every MSD method logs the mean weight of
    each teacher modality (w_<m>)."""
    if weights is None:
        return lambda m, batch: method_loss(m, batch, None)

    def loss_fn(m: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        w = weights(batch["saliency"])  # (M_T,) or (B, M_T)
        w = w.expand(len(batch["y"]), -1) if w.dim() == 1 else w  # (B, M_T)
        loss, more = method_loss(m, batch, student_columns(w, modalities))
        return loss, {**more, **{f"w_{name}": w[:, k].mean().item() for k, name in enumerate(MODALITIES)}}

    return loss_fn


def meta_step_hook(state: LearnedState | None, method_loss: MethodCall, get_batch: Callable[[torch.Tensor], Batch],
                   meta_batch: Callable[[torch.Generator], Batch],
                   valid_loss: Callable[[Callable[..., Batch], Batch], torch.Tensor],
                   modalities: tuple[str, ...]) -> StepHook | None:
    """`fit`'s step hook for `msd-learned` (None otherwise): once per optimizer step, one look-ahead meta step
    on the weights (msd.MetaWeights.step) with the training loss of the step's whole batch (this rank's
    shard) and `valid_loss` on a meta batch; logs meta/train_loss, meta/valid_loss, meta/phi_grad_norm."""
    if state is None:
        return None

    def hook(model: nn.Module, shard: torch.Tensor) -> dict[str, float]:
        batch, mb = get_batch(shard), meta_batch(state.meta_draw)
        parts = state.meta.step(
            model, train_loss=lambda p, w: method_loss(lambda **x: functional_forward(model, p, **x), batch,
                                                       student_columns(w, modalities))[0],
            valid_loss=lambda p: valid_loss(lambda **x: functional_forward(model, p, **x), mb))
        return {f"meta/{k}": v for k, v in parts.items() if not k.startswith("w_")}

    return hook


@dataclasses.dataclass(frozen=True)
class Splits:
    """Clip indices (manifest rows) a student trains on, is selected on, and (msd-learned) meta-learns on."""

    train: torch.Tensor
    valid: torch.Tensor
    meta: torch.Tensor | None

    @staticmethod
    def of(splits: np.ndarray, method: Method, params: DistillParams, seed: int) -> Splits:
        train = torch.from_numpy(np.flatnonzero(splits == "train"))
        valid = torch.from_numpy(np.flatnonzero(splits == "valid"))
        if method.weighting != "learned":
            return Splits(train, valid, None)
        return Splits(*carve_meta_set(train, valid, params.msd, seed))


def _draw(idx: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    return idx[torch.randperm(len(idx), generator=generator)[:size]]


def train_student(task: Task, student: Student, texts: list[str], labels: torch.Tensor, splits: np.ndarray,
                  teacher: dict[str, torch.Tensor], features: FeatureArrays | None, params: DistillParams,
                  seed: int, dataset: str, *, identity: dict[str, str] | None = None
                  ) -> tuple[nn.Module, object, dict[str, float]]:
    """Train one student of `task` on the train split, selecting the epoch on the task's validation metric.
    Returns (model on the CPU, its tokenizer or None, the selected epoch and value [+ msd-learned's weights]).

    texts, labels, splits, teacher outputs and features: one row per manifest clip (features None for a
    text-only student). `identity`: the content digests of the files they were read from
    (core/identity.py), which a resumed checkpoint must share."""
    method = METHODS.get(student.method)
    section = method.section_of(params)
    objective = task.objective(params)
    split = Splits.of(splits, method, params, seed)
    model, tokenizer, inputs = task.build_student(task.student_kinds[student.family.name], params, texts,
                                                  split.train, features, teacher["logits"].shape[1],
                                                  second_order=split.meta is not None)
    device = train_device(params.train.device)
    model.to(device)
    modalities = task.student_modalities(model)
    weights, learned = msd_weights(method, teacher, split.train, params, seed)
    specific = weights is not None  # the method compares modality-specific outputs

    def get_batch(i: torch.Tensor) -> Batch:
        j = split.train[i]
        batch = {**{k: v[j] for k, v in inputs.items()}, "y": labels[j],
                 **task.teacher_targets(teacher, j, modalities, specific)}
        return {k: v.to(device) for k, v in batch.items()}

    def method_loss(m: Callable[..., Batch], batch: Batch, w: torch.Tensor | None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        out = task.forward(m, {k: batch[k] for k in inputs}, modalities, w is not None)
        return method.loss(objective, out, batch if w is None else {**batch, "weights": w}, section)

    def meta_batch(generator: torch.Generator) -> Batch:
        j = _draw(split.meta, generator, params.train.batch_size)
        return {**{k: v[j].to(device) for k, v in inputs.items()}, "y": labels[j].to(device)}

    def valid_loss(net: Callable[..., Batch], vb: Batch) -> torch.Tensor:
        return objective.task_loss(task.forward(net, {k: vb[k] for k in inputs}, modalities, False), vb)[0]

    valid_inputs = {k: v[split.valid] for k, v in inputs.items()}
    valid_present = (features.present[split.valid] if features is not None
                     else torch.ones(len(split.valid), len(MODALITIES), dtype=torch.bool))

    def validate(m: nn.Module) -> float:
        return task.validate(m, valid_inputs, labels[split.valid], valid_present, params.train.batch_size)

    fingerprint = {"student": student.name, "distill": to_dict(params), "seed": seed, "dataset": dataset,
                   "n_train": len(split.train), "task": task.name, **(identity or {})}
    best = fit(model, model.parameters(), n_train=len(split.train), get_batch=get_batch,
               loss_fn=msd_loss_fn(method_loss, weights, modalities), validate=validate, params=params.train,
               epochs=params.train.epochs, seed=seed, curves=paths.curves(dataset, f"student_{student.name}", seed),
               desc=f"student_{student.name} seed {seed}", valid_metric=task.valid_metric, maximize=task.maximize,
               state_path=paths.training_state(dataset, f"student_{student.name}", seed), fingerprint=fingerprint,
               extra_state=learned,
               step_hook=meta_step_hook(learned, method_loss, get_batch, meta_batch, valid_loss, modalities))
    return model.cpu(), tokenizer, {**best, **_meta_summary(split, learned)}


def _meta_summary(split: Splits, learned: LearnedState | None) -> dict[str, float]:
    """What student.json records of `msd-learned`: the meta set's size and the final weights."""
    if learned is None:
        return {}
    return {"n_meta": len(split.meta), **{f"w_{m}": float(w) for m, w in zip(learned.meta.names,
                                                                            learned.meta.weights(), strict=True)}}
