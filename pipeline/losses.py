"""Losses: small pure functions, each with its formula and source.

Notation: y the label in [-3, 3], r_T / r_S the teacher's / student's regression logit,
c the K-way logits over the sentiment bins -3..3.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .config import Registry


def sentiment_bins(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class index of each label: round(clip(y, -h, h)) + h with h = (K - 1) / 2.

    Rounding is half-to-even (torch.round), the same rule as the Acc-7 metric, so the
    classifier is trained on exactly the bins it is scored on.
    """
    half = (num_classes - 1) // 2
    return (torch.round(y.clamp(-half, half)) + half).long()


def task_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 regression loss mean|pred - y|: the MMSA/MOSI training objective and the MAE metric."""
    return F.l1_loss(pred, y)


def classification_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the K-way logits against the label's sentiment bin, CE(c, bin(y))."""
    return F.cross_entropy(logits, sentiment_bins(y, logits.shape[-1]))


def teacher_loss(logits: torch.Tensor, reg: torch.Tensor, y: torch.Tensor, ce_weight: float) -> torch.Tensor:
    """Teacher step 1, `joint` schedule (VideoAdviser, Wang et al. 2023, sec. "step distillation"):

        L_T = ce_weight * CE(c, bin(y)) + |r_T - y|,   r_T = g(c)

    The classification logits c over the K sentiment bins are trained with cross-entropy;
    g maps them to the regression logit, trained with L1, gradients flowing into c.
    """
    return ce_weight * classification_loss(logits, y) + task_loss(reg, y)


def _smooth_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(a, b, beta=1.0)


DISTANCES: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("distance")
DISTANCES.add("mse", F.mse_loss)
DISTANCES.add("l1", F.l1_loss)
DISTANCES.add("smooth_l1", _smooth_l1)


def videoadviser_loss(r_s: torch.Tensor, r_t: torch.Tensor, distance: str) -> torch.Tensor:
    """VideoAdviser step 2 (Wang et al., IEEE Access 2023, arXiv 2309.15494): the student
    regresses the teacher's regression logit, D(r_S, r_T), with D one of

        mse:       mean (r_S - r_T)^2
        l1:        mean |r_S - r_T|
        smooth_l1: mean of 0.5 d^2 if |d| < 1 else |d| - 0.5   (Huber, beta = 1), d = r_S - r_T

    The teacher's output is a constant target (no gradient flows into the teacher).
    """
    return DISTANCES.get(distance)(r_s, r_t.detach())


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al., "Distilling the Knowledge in a Neural Network" (2015), on the K bin logits:

        L_KD = T^2 * KL(softmax(c_T / T) || softmax(c_S / T)),  averaged over the batch

    The T^2 factor keeps the gradient scale independent of T (the soft targets' gradients
    shrink as 1/T^2). The teacher's logits are a constant target.
    """
    if temperature <= 0:
        raise ValueError(f"distill.kd.temperature must be > 0, got {temperature}")
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)  # (B, K)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)  # (B, K)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2

