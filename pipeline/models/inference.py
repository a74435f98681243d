"""One batched inference loop for every model (teacher, students, retrieval student)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def batched_outputs(model: nn.Module, n: int, inputs_of: Callable[[slice], dict[str, torch.Tensor]],
                    keys: tuple[str, ...], batch_size: int) -> dict[str, torch.Tensor]:
    """`model` in eval mode over rows 0..n-1 in consecutive batches of `batch_size`: `inputs_of(rows)` gives a
    batch's keyword inputs (moved to the model's device here), and the outputs `keys` come back concatenated
    on the CPU, (n, ...) each."""
    model.eval()
    device = next(model.parameters()).device
    outs: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for start in range(0, n, batch_size):
        out = model(**{k: v.to(device) for k, v in inputs_of(slice(start, start + batch_size)).items()})
        for k in keys:
            outs[k].append(out[k].cpu())
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in outs.items()}
