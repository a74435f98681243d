"""Losses: small pure functions, each with its formula and source.

Notation: y the label in [-3, 3], r_T / r_S the teacher's / student's regression logit,
c the K-way logits over the sentiment bins -3..3.

Distances (DISTANCES: mse | l1 | smooth_l1) are called as D(a, b, reduction=...): "mean" (the
default) averages over all elements, "none" keeps them element-wise (MSD weighs each modality's
term separately), "sum" adds them up.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from pipeline.core.registry import Registry


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


class Distance(Protocol):
    """D(a, b) between same-shaped tensors; reduction "mean" (default) | "sum" | "none" (element-wise)."""

    def __call__(self, input: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor: ...


def _smooth_l1(a: torch.Tensor, b: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    return F.smooth_l1_loss(a, b, reduction=reduction, beta=1.0)


DISTANCES: Registry[Distance] = Registry("distance")
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


def standardize_logits(c: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z-score of each row of logits over its K classes (Sun et al., "Logit Standardization in
    Knowledge Distillation", CVPR 2024, arXiv 2403.01427):

        z(c)_k = (c_k - mean_k c) / (std_k c + eps),   std_k c = sqrt(1/(K-1) sum_k (c_k - mean_k c)^2)

    The standard deviation is Bessel-corrected and eps = 1e-7, as in the authors' code
    (sunshangquan/logit-standardization-KD, ``normalize``: ``logit.std(dim=-1)``, ``1e-7 + stdv``).
    z is invariant to a shift of c and, up to eps, to a positive rescaling, so it drops a
    learnable logit scale such as CLIP's (up to 100). c (..., K), K >= 2 -> z (..., K). A
    constant row gives z = 0, with the finite gradient dz/dc = (I - 11^T / K) / eps.
    """
    if c.shape[-1] < 2:
        raise ValueError(f"standardize_logits needs at least 2 logits per row (K >= 2), got shape {tuple(c.shape)}")
    if eps <= 0:
        raise ValueError(f"standardize_logits: eps must be > 0, got {eps}")
    centred = c - c.mean(dim=-1, keepdim=True)  # (..., K)
    return centred / (c.std(dim=-1, keepdim=True) + eps)  # (..., K); std unbiased (K - 1)


def logit_regression_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, distance: str, *,
                          eps: float = 1e-7) -> torch.Tensor:
    """Scale-free regression of the teacher's class logits (VideoAdviser step 2 on retrieval):

        L = D(z(c_S), z(c_T)),   z = standardize_logits (Sun et al., CVPR 2024)

    with D = DISTANCES[distance] averaged over all B * K elements (mse: mean (z_S - z_T)^2, l1:
    mean |z_S - z_T|, smooth_l1: Huber with beta = 1). Regressing the raw logits c_T = s cos(.)
    would tie the loss's scale to the teacher's learnable logit scale s (up to 100) and ask the
    student to match it; standardising both sides keeps only the relations between the classes.
    student_logits, teacher_logits (B, K) (any (..., K) of the same shape); the teacher's are a
    constant target (no gradient flows into the teacher).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"logit_regression_loss expects student and teacher logits of the same shape (B, K), "
                         f"got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    z_s = standardize_logits(student_logits, eps)  # (B, K)
    z_t = standardize_logits(teacher_logits.detach(), eps)  # (B, K)
    return DISTANCES.get(distance)(z_s, z_t)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, *,
            reduction: str = "batchmean") -> torch.Tensor:
    """Hinton et al., "Distilling the Knowledge in a Neural Network" (2015), on the K bin logits:

        L_KD = T^2 * KL(softmax(c_T / T) || softmax(c_S / T)),  averaged over the batch

    The T^2 factor keeps the gradient scale independent of T (the soft targets' gradients
    shrink as 1/T^2). The teacher's logits are a constant target. `reduction="none"` returns
    each row's term (leading dims kept, K summed), e.g. (B, M) for (B, M, K) logits.
    """
    if temperature <= 0:
        raise ValueError(f"distill.kd.temperature must be > 0, got {temperature}")
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)  # (..., K)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)  # (..., K)
    if reduction == "none":
        return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1) * temperature**2  # (...,)
    return F.kl_div(log_p_s, log_p_t, reduction=reduction, log_target=True) * temperature**2



def msd_loss(student_mod: torch.Tensor, teacher_mod: torch.Tensor, weights: torch.Tensor,
             distance: str) -> torch.Tensor:
    """MSD's modality-specific distillation term (Jin et al., "MSD: Saliency-aware Knowledge
    Distillation for Multimodal Understanding", Findings of EMNLP 2021, arXiv 2101.01881):

        L_MSD = 1/B sum_b sum_m w_bm * D(S(x_b,m), T(x_b,m))

    student_mod (B, M): the student's regression output with only modality m kept, S(x_m);
    teacher_mod (B, M): the teacher's, r_T^m (a constant target, no gradient flows into it);
    weights (B, M) per clip (`instance`) or (M,) shared by the batch (`uniform`, `population`,
    `learned`); D = DISTANCES[distance] element-wise (mse: d^2, l1: |d|, smooth_l1: Huber with
    beta = 1, d = S - T). The weights are NOT detached: the `learned` weighting differentiates
    the loss through them (msd.MetaWeights); pass detached weights for the model's own update.
    The columns are the student's modalities M_S (see msd.student_columns).
    """
    if student_mod.dim() != 2 or student_mod.shape != teacher_mod.shape:
        raise ValueError(f"msd_loss expects student and teacher outputs of the same shape (B, M), "
                         f"got {tuple(student_mod.shape)} and {tuple(teacher_mod.shape)}")
    if weights.shape not in (student_mod.shape, student_mod.shape[1:]):
        raise ValueError(f"msd_loss expects weights of shape (B, M) = {tuple(student_mod.shape)} or "
                         f"(M,) = {tuple(student_mod.shape[1:])}, got {tuple(weights.shape)}")
    per_term = DISTANCES.get(distance)(student_mod, teacher_mod.detach(), reduction="none")  # (B, M)
    return (weights * per_term).sum(dim=1).mean()


def msd_kd_loss(student_mod: torch.Tensor, teacher_mod: torch.Tensor, weights: torch.Tensor,
                temperature: float) -> torch.Tensor:
    """MSD's modality-specific term for class distributions (Jin et al. 2021, the KD form of their
    classification setting), used by the retrieval student whose branch m sees modality m alone:

        L_MSD = 1/B sum_b sum_m w_bm * T^2 KL(softmax(c_T^m(x_b) / T) || softmax(c_S^m(x_b) / T))

    student_mod (B, M, K): branch m's logits; teacher_mod (B, M, K): the teacher's logits with only
    m kept (a constant target); weights (B, M) or (M,), not detached (see msd_loss).
    """
    if student_mod.dim() != 3 or student_mod.shape != teacher_mod.shape:
        raise ValueError(f"msd_kd_loss expects student and teacher logits of the same shape (B, M, K), "
                         f"got {tuple(student_mod.shape)} and {tuple(teacher_mod.shape)}")
    if weights.shape not in (student_mod.shape[:2], student_mod.shape[1:2]):
        raise ValueError(f"msd_kd_loss expects weights of shape (B, M) = {tuple(student_mod.shape[:2])} or "
                         f"(M,), got {tuple(weights.shape)}")
    per_term = kd_loss(student_mod, teacher_mod, temperature, reduction="none")  # (B, M)
    return (weights * per_term).sum(dim=1).mean()
