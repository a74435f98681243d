"""The distillation methods: one table for both tasks (DESIGN.md "Distillation methods").

A method combines the task's own loss with the kinds of teacher knowledge the task's objective
exposes (tasks/base.py `Objective`): with L_task the student's supervised loss,

    none            L = L_task
    kd              L = L_task + alpha KD_T(student logits; teacher logits)          Hinton et al. 2015
    videoadviser    L = L_task + lambda D(student output, teacher output)             VideoAdviser step 2
    self            the same loss, from the `self` control teacher (it saw only what the student sees),
                    so `videoadviser - self` isolates the multimodal knowledge
    msd-<w>         L = L_task + alpha KD_T(...) + sum_m w_m D(S(x_m), T(x_m))        MSD (Jin et al. 2021)
                    w from the teacher's saliencies: uniform | population | instance | learned (msd.py)

Each method receives its own params section (`kd`, `videoadviser`, `msd`), never all of them. The
terms' formulas and sources: distillation/losses.py and each task's objective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from pipeline.core.config import DistillParams, KDParams, MSDParams, VideoAdviserParams
from pipeline.core.paths import SELF_TEACHER, TEACHER
from pipeline.core.registry import Registry
from pipeline.distillation.families import MSD_PREFIX, WEIGHTINGS
from pipeline.tasks.base import Objective

Batch = dict[str, torch.Tensor]
Loss = tuple[torch.Tensor, dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    section: str | None  # the DistillParams section the loss receives
    loss: Callable[[Objective, Batch, Batch, Any], Loss]  # (objective, outputs, batch, section) -> loss, logs
    teacher: str = TEACHER  # whose predictions the method reads
    weighting: str | None = None  # MSD weighting of the modality-specific terms

    def section_of(self, params: DistillParams) -> Any:
        return getattr(params, self.section) if self.section else None


def _none(objective: Objective, out: Batch, batch: Batch, _: None) -> Loss:
    return objective.task_loss(out, batch)


def _kd(objective: Objective, out: Batch, batch: Batch, p: KDParams) -> Loss:
    task, _ = objective.task_loss(out, batch)
    kd = objective.kd(out, batch["teacher_logits"], p.temperature)
    return task + p.weight * kd, {"task": task.item(), "distill": kd.item()}


def _videoadviser(objective: Objective, out: Batch, batch: Batch, p: VideoAdviserParams) -> Loss:
    task, _ = objective.task_loss(out, batch)
    match = objective.match(out, batch, p.distance)
    return task + p.weight * match, {"task": task.item(), "distill": match.item()}


def _msd(objective: Objective, out: Batch, batch: Batch, p: MSDParams) -> Loss:
    """batch["weights"] (B, M_S) = w_m(x), the MSD weights of the student's modalities."""
    task, _ = objective.task_loss(out, batch)
    kd = objective.kd(out, batch["teacher_logits"], p.temperature)
    aux = objective.modality(out, batch, p)
    return task + p.kd_weight * kd + aux, {"task": task.item(), "distill": kd.item(), "msd": aux.item()}


METHODS: Registry[Method] = Registry("distillation method")
METHODS.add("none", Method("none", None, _none))
METHODS.add("kd", Method("kd", "kd", _kd))
METHODS.add("videoadviser", Method("videoadviser", "videoadviser", _videoadviser))
METHODS.add("self", Method("self", "videoadviser", _videoadviser, teacher=SELF_TEACHER))
for _weighting in WEIGHTINGS:
    METHODS.add(MSD_PREFIX + _weighting, Method(MSD_PREFIX + _weighting, "msd", _msd, weighting=_weighting))
