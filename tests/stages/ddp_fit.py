"""Train a tiny MLP with `pipeline.training.loop.fit` on fixed seeded data, once per `--grad-accum`
value (same initial weights); the main process saves the final weights to OUT/accum<N>.pt.
Run by tests/test_ddp.py, as one process or under torchrun:

    python tests/ddp_fit.py OUT [--grad-accum 1 2]
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_fit.py OUT [--grad-accum 1 2]

17 samples in global batches of 8: three steps per epoch, the last of one sample (so that under
two processes rank 1's shard of it is empty). Checkpoints every 2 steps exercise the gathering
of every rank's RNG states; the state file is gone at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.config import TrainParams
from pipeline.core.runtime import init_ranks, is_main_process, seed_everything, setup_logging, train_device
from pipeline.training.loop import fit

N, D, BATCH = 17, 6, 8


def train(out: Path, grad_accum: int, rank: int, world: int) -> None:
    """One fit() of the MLP; the main process saves its final weights and best epoch to `out`."""
    params = TrainParams(epochs=3, batch_size=BATCH, lr=1e-2, warmup=0.2, weight_decay=0.01, device="cpu",
                         precision="fp32", grad_accum=grad_accum, checkpoint_every=2)
    device = train_device(params.device)
    torch.manual_seed(0)  # the same initial weights for every run
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    y = x @ torch.linspace(-1, 1, D) + 0.1 * torch.randn(N, generator=g)
    model = nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Dropout(0.0), nn.Linear(16, 1)).to(device)

    def loss_fn(m: nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        pred = m(b["x"]).squeeze(-1)  # (B,)
        return F.mse_loss(pred, b["y"]), {"l1": (pred - b["y"]).abs().mean().item()}

    def validate(m: nn.Module) -> float:
        with torch.no_grad():
            return F.l1_loss(m(x).squeeze(-1), y).item()

    best = fit(model, model.parameters(), n_train=N, get_batch=lambda i: {"x": x[i], "y": y[i]}, loss_fn=loss_fn,
               validate=validate, params=params, epochs=params.epochs, seed=0,
               curves=out.with_name(out.stem + "_curves"), desc=f"ddp_fit rank {rank}",
               state_path=out.with_suffix(".state"))
    if is_main_process():
        torch.save({"state_dict": model.state_dict(), "best": best, "world": world}, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder where the main process saves the final weights")
    parser.add_argument("--grad-accum", type=int, nargs="+", default=[1])
    args = parser.parse_args(argv)
    setup_logging()
    seed_everything(0)
    ranks = init_ranks()
    try:
        for grad_accum in args.grad_accum:
            train(args.out / f"accum{grad_accum}.pt", grad_accum, ranks.rank, ranks.world)
    finally:
        if ranks.world > 1:
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
