"""Modality masks shared by the teacher, the students and MSD: modality dropout, keeping one modality,
and the input standardisation buffers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def set_feature_stats(model: nn.Module, modality: str, features: torch.Tensor, present: torch.Tensor) -> None:
    """Set `model`'s <modality>_mean / <modality>_std buffers (C,) to the per-feature mean and std of the
    frames of the clips that have the modality: features (N, T, C) (log-mel bins, precomputed video
    features), present (N,) bool. std is floored at 1e-3. A model without those buffers is left as it is
    (the teacher standardises video only when it is precomputed)."""
    if not hasattr(model, f"{modality}_mean"):
        return
    frames = features[present].flatten(0, 1)  # (N' * T, C)
    if len(frames):
        getattr(model, f"{modality}_mean").copy_(frames.mean(0))
        getattr(model, f"{modality}_std").copy_(frames.std(0, correction=int(len(frames) > 1)).clamp_min(1e-3))


def modality_dropout(present: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training-time modality dropout: present (B, M) bool -> (B, M), each present modality dropped
    independently with probability p, and where that would drop all of a clip's present modalities,
    one of them (uniformly at random) kept. Clips with no present modality stay as they are.

    Draws from `generator` (torch's default generator when None, which `training.fit` saves in its
    checkpoints, so a resumed run draws the same masks). p = 0 returns `present` unchanged.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"teacher.modality_dropout must be in [0, 1), got {p}")
    if p == 0.0:
        return present
    kept = present & (torch.rand(present.shape, generator=generator, device=present.device) >= p)  # (B, M)
    none_left = ~kept.any(dim=1) & present.any(dim=1)  # (B,)
    if none_left.any():
        # one of the clip's present modalities, uniformly: the argmax of random scores over the present ones
        scores = torch.rand(present.shape, generator=generator, device=present.device).masked_fill(~present, -1.0)
        rescue = F.one_hot(scores.argmax(dim=1), present.shape[1]).bool()  # (B, M)
        kept = torch.where(none_left.unsqueeze(1), rescue, kept)
    return kept


def only_modality(present: torch.Tensor, modality: int) -> torch.Tensor:
    """present (B, 3) with every modality but `modality` masked: the input of S(x_m) and T(x_m)."""
    keep = torch.zeros_like(present)
    keep[:, modality] = True
    return present & keep
