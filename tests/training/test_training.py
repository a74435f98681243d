"""pipeline.training.loop.fit on tiny models and random tensors (CPU, one process): the learning-rate
schedule, how a global batch is split, gradient accumulation, resumable checkpoints, trainable
subsets and precision on CPU. DDP under torchrun: tests/test_ddp.py."""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tamper
from torch import nn

from pipeline.core.checkpoints import UnsafeCheckpoint, save_checkpoint
from pipeline.core.config import TrainParams
from pipeline.core.runtime import Ranks
from pipeline.training.loop import _rng_state, _set_rng_state, fit, micro_batches, warmup_linear

D = 6
PARAMS = TrainParams(epochs=3, batch_size=4, lr=1e-2, warmup=0.2, weight_decay=0.01, device="cpu", precision="fp32",
                     grad_accum=1, checkpoint_every=0)


class Interrupted(Exception):
    pass


def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, D, generator=g)
    return x, x @ torch.linspace(-1, 1, D) + 0.1 * torch.randn(n, generator=g)


def mlp(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))


def train(model: nn.Module, root: Path, params: TrainParams = PARAMS, n: int = 20, name: str = "m",
          parameters: list[nn.Parameter] | None = None, fail_at: int | None = None, on_call=None,
          **kwargs) -> dict[str, float]:
    """fit() on a regression of n random samples; loss_fn raises Interrupted at its call number `fail_at`."""
    x, y = data(n)
    xv, yv = data(8)
    calls = [0]

    def loss_fn(m: nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        calls[0] += 1
        if on_call is not None:
            on_call(calls[0])
        if calls[0] == fail_at:
            raise Interrupted
        pred = m(b["x"]).squeeze(-1)  # (B,)
        return F.mse_loss(pred, b["y"]), {"l1": (pred - b["y"]).abs().mean().item()}

    def validate(m: nn.Module) -> float:
        with torch.no_grad():
            return F.l1_loss(m(xv).squeeze(-1), yv).item()

    torch.manual_seed(1)  # the dropout masks of a fresh run
    return fit(model, model.parameters() if parameters is None else parameters, n_train=n,
               get_batch=lambda i: {"x": x[i], "y": y[i]}, loss_fn=loss_fn, validate=validate, params=params,
               epochs=params.epochs, seed=0, curves=root / "curves" / name, desc=name, **kwargs)


def curve(root: Path, name: str, metric: str = "train/loss") -> list[float]:
    return pd.read_csv(root / "curves" / name / "plots" / "metrics" / f"{metric}.tsv", sep="\t").iloc[:, -1].tolist()


def assert_same_weights(a: nn.Module, b: nn.Module, exact: bool) -> None:
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        if exact:
            assert torch.equal(v, w), k
        else:
            torch.testing.assert_close(v, w, rtol=1e-5, atol=1e-6, msg=k)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # dvclive runs outside any git repository


def test_warmup_then_linear_decay() -> None:
    factor = warmup_linear(total_steps=10, warmup=0.2)  # 2 warm-up steps, then 8 of decay
    assert [factor(s) for s in range(11)] == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25,
                                                            0.125, 0.0])
    assert factor(0) > 0  # the first step already learns
    assert warmup_linear(total_steps=3, warmup=0.0)(0) == 1.0  # at least one warm-up step


def test_micro_batches_split_the_global_batch() -> None:
    idx = torch.arange(7)
    parts = {r: micro_batches(idx, Ranks(r, 2, r), grad_accum=2) for r in (0, 1)}
    assert [m.tolist() for m, _ in parts[0]] == [[0, 1], [2, 3]]
    assert [m.tolist() for m, _ in parts[1]] == [[4, 5], [6]]
    weights = [w for r in (0, 1) for _, w in parts[r]]
    assert weights == pytest.approx([4 / 7, 4 / 7, 4 / 7, 2 / 7])  # W * n_m / B
    assert sum(weights) / 2 == pytest.approx(1.0)  # DDP's mean over ranks: the global-batch mean
    assert [(m.tolist(), w) for m, w in micro_batches(torch.arange(3), Ranks(), 5)] == [([0], 1 / 3), ([1], 1 / 3),
                                                                                       ([2], 1 / 3)]
    assert [(m.tolist(), w) for m, w in micro_batches(torch.tensor([9]), Ranks(1, 2, 1), 1)] == [([9], 0.0)]


@pytest.mark.parametrize(("n", "batch", "accum"), [(16, 8, 2), (18, 8, 3)])  # (18, 8, 3): last batch 2, micro 1+1+0
def test_grad_accumulation_matches_one_step_per_batch(tmp_path: Path, n: int, batch: int, accum: int) -> None:
    one, many = mlp(), mlp()
    params = dataclasses.replace(PARAMS, batch_size=batch)
    best_one = train(one, tmp_path, params, n=n, name="one")
    best_many = train(many, tmp_path, dataclasses.replace(params, grad_accum=accum), n=n, name="many")
    assert_same_weights(one, many, exact=False)
    assert best_one["epoch"] == best_many["epoch"]
    assert curve(tmp_path, "one") == pytest.approx(curve(tmp_path, "many"), rel=1e-5)  # global-batch mean loss
    assert curve(tmp_path, "one", "train/l1") == pytest.approx(curve(tmp_path, "many", "train/l1"), rel=1e-5)


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    params = dataclasses.replace(PARAMS, grad_accum=2, checkpoint_every=2)  # 5 steps (10 loss calls) per epoch
    reference = mlp(dropout=0.2)
    best_reference = train(reference, tmp_path, params, name="reference", state_path=tmp_path / "reference.state")

    model, state = mlp(dropout=0.2), tmp_path / "m.state"
    with pytest.raises(Interrupted):  # in step 8 (epoch 1); the last checkpoint is after step 6
        train(model, tmp_path, params, state_path=state, fingerprint={"data": "v1"}, fail_at=15)
    assert state.is_file()
    with caplog.at_level(logging.INFO, logger="pipeline.training.loop"):
        best = train(model, tmp_path, params, state_path=state, fingerprint={"data": "v1"})
    assert "resuming from" in caplog.text and "at epoch 1, batch 1" in caplog.text
    assert_same_weights(model, reference, exact=True)
    assert best == best_reference
    assert curve(tmp_path, "m") == curve(tmp_path, "reference")  # every epoch's row, re-logged after the resume
    assert curve(tmp_path, "m", "valid/mae") == curve(tmp_path, "reference", "valid/mae")
    assert not state.exists() and not (tmp_path / "reference.state").exists()  # deleted once finished


def test_training_state_loads_weights_only_and_restores_every_rng(tmp_path: Path) -> None:
    """The state holds tensors and plain data only (numpy's RNG state too), and restores the RNGs exactly."""
    state = tmp_path / "m.state"
    with pytest.raises(Interrupted):  # after epoch 0 (5 steps): a checkpoint at the end of the epoch
        train(mlp(), tmp_path, state_path=state, fail_at=8)
    saved = torch.load(state, weights_only=True)
    assert saved["progress"]["epoch"] == 1 and isinstance(saved["rng"][0]["numpy"]["key"], list)

    np.random.seed(5)
    np.random.standard_normal()  # a cached Gaussian in numpy's state
    save_checkpoint({"rng": _rng_state(torch.device("cpu"))}, tmp_path / "rng.pt")
    expected = (np.random.rand(3), np.random.standard_normal(), torch.rand(3))
    _set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"], torch.device("cpu"))
    assert (np.random.rand(3) == expected[0]).all() and np.random.standard_normal() == expected[1]
    assert torch.equal(torch.rand(3), expected[2])


def test_tampered_training_state_is_refused_without_running_code(tmp_path: Path) -> None:
    state, marker = tmp_path / "m.state", tmp_path / "marker"
    with pytest.raises(Interrupted):
        train(mlp(), tmp_path, state_path=state, fingerprint={"data": "v1"}, fail_at=8)
    tamper(state, marker)
    with pytest.raises(UnsafeCheckpoint, match=r"holds pickled Python objects.*will not unpickle") as err:
        train(mlp(), tmp_path, state_path=state, fingerprint={"data": "v1"})
    assert not marker.exists()
    assert str(err.value).startswith(str(state)) and str(err.value).endswith("delete it: training then starts "
                                                                             "afresh instead of resuming")


def test_a_different_fingerprint_starts_fresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "m.state"
    with pytest.raises(Interrupted):  # after epoch 0 (5 steps): a checkpoint at the end of the epoch
        train(mlp(), tmp_path, state_path=state, fingerprint={"data": "v1", "model": "a"}, fail_at=8)
    assert state.is_file()
    model = mlp()
    with caplog.at_level(logging.INFO, logger="pipeline.training.loop"):
        train(model, tmp_path, dataclasses.replace(PARAMS, lr=2e-2), state_path=state,
              fingerprint={"data": "v2", "model": "a"})
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "(differs in: data, train.lr); starting fresh" in warning[0].getMessage()
    assert "resuming" not in caplog.text
    fresh = mlp()
    train(fresh, tmp_path, dataclasses.replace(PARAMS, lr=2e-2), name="fresh")
    assert_same_weights(model, fresh, exact=True)
    assert len(curve(tmp_path, "m")) == PARAMS.epochs and not state.exists()


def test_checkpoint_every_zero_writes_at_each_epoch_end_only(tmp_path: Path) -> None:
    state, seen = tmp_path / "m.state", []
    train(mlp(), tmp_path, state_path=state, on_call=lambda call: seen.append(state.is_file()))
    assert seen == [False] * 5 + [True] * 10  # 5 steps per epoch: none before the end of epoch 0
    assert not state.exists()


def test_only_the_given_parameters_train(tmp_path: Path) -> None:
    model = mlp()
    model[0].bias.requires_grad_(False)  # a flag set by the caller survives fit
    before = {k: v.clone() for k, v in model.state_dict().items()}
    during = []
    train(model, tmp_path, parameters=list(model[3].parameters()),
          on_call=lambda call: during.append((model[0].weight.requires_grad, model[3].weight.requires_grad)))
    assert set(during) == {(False, True)}  # frozen while fit runs: DDP waits for no gradient of them
    after = model.state_dict()
    assert torch.equal(after["0.weight"], before["0.weight"]) and torch.equal(after["0.bias"], before["0.bias"])
    assert not torch.equal(after["3.weight"], before["3.weight"])
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad


def test_precision_is_ignored_on_cpu(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fp32, bf16 = mlp(), mlp()
    train(fp32, tmp_path, name="fp32")
    with caplog.at_level(logging.INFO, logger="pipeline.training.loop"):
        train(bf16, tmp_path, dataclasses.replace(PARAMS, precision="bf16"), name="bf16")
    assert "precision bf16 applies on CUDA only; training on cpu in fp32" in caplog.text
    assert_same_weights(fp32, bf16, exact=True)
    assert all(p.dtype == torch.float32 for p in bf16.parameters())


def test_patience_stops_after_that_many_epochs_without_improvement(tmp_path: Path, monkeypatch) -> None:
    """A validation value that improves at epoch 1 and never again: with patience 2, epochs 2 and 3 run,
    then training stops (epochs_run 4 of 10) and the epoch-1 weights come back."""
    values = iter([0.5, 0.4, 0.45, 0.41, 0.6, 0.3, 0.2, 0.1, 0.1, 0.1])
    snapshots: list[dict[str, torch.Tensor]] = []

    def validate(m: nn.Module) -> float:
        snapshots.append(copy.deepcopy(m.state_dict()))
        return next(values)

    model = mlp()
    x, y = data(20)
    params = dataclasses.replace(PARAMS, epochs=10, patience=2)
    best = fit(model, model.parameters(), n_train=20, get_batch=lambda i: {"x": x[i], "y": y[i]},
               loss_fn=lambda m, b: (F.mse_loss(m(b["x"]).squeeze(-1), b["y"]), {}), validate=validate,
               params=params, epochs=params.epochs, seed=0, curves=tmp_path / "curves", desc="m")
    assert best == {"epoch": 1, "valid_mae": 0.4, "epochs_run": 4}
    assert len(snapshots) == 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k]), k
    assert len(curve(tmp_path, ".", "valid/mae")) == 4


def test_step_hook_runs_once_per_optimizer_step_with_the_whole_batch(tmp_path: Path) -> None:
    """The hook sees each step's whole batch once, whatever grad_accum splits it into, and logs its floats."""
    for accum in (1, 2):
        seen: list[list[int]] = []

        def hook(m: nn.Module, shard: torch.Tensor, seen: list[list[int]] = seen) -> dict[str, float]:
            assert isinstance(m, nn.Sequential)  # the model itself (not a DDP wrapper)
            seen.append(sorted(shard.tolist()))
            return {"hooked": float(len(shard))}

        train(mlp(), tmp_path, dataclasses.replace(PARAMS, grad_accum=accum), n=10, name=f"h{accum}",
              step_hook=hook)
        assert len(seen) == 3 * 3  # 3 epochs x ceil(10 / 4) steps
        assert [len(s) for s in seen[:3]] == [4, 4, 2] and sorted(sum(seen[:3], [])) == list(range(10))
        assert curve(tmp_path, f"h{accum}", "train/hooked") == pytest.approx([10 / 3] * 3)


# --------------------------------------------------------------------------- seeds in parallel processes


def test_run_seeds_runs_every_seed_once(tmp_path: Path) -> None:
    import os

    from pipeline.core.runtime import run_seeds, seed_workers

    def train(seed: int) -> None:
        torch.manual_seed(seed)
        (tmp_path / f"seed_{seed}.txt").write_text(f"{os.getpid()} {torch.get_num_threads()} {torch.rand(1).item()}")

    run_seeds(train, [0, 1, 2], "cpu", per_core=2)
    done = {int(p.stem.split("_")[1]): p.read_text().split() for p in tmp_path.glob("seed_*.txt")}
    assert sorted(done) == [0, 1, 2]
    workers = seed_workers(3, "cpu", per_core=2)
    pids = {v[0] for v in done.values()}
    assert len(pids) == workers and (workers == 1) == (pids == {str(os.getpid())})
    for seed, (_, _, value) in done.items():  # each seed is drawn from its own seed, whichever worker ran it
        torch.manual_seed(seed)
        assert float(value) == pytest.approx(torch.rand(1).item())


def test_run_seeds_names_the_seeds_of_a_failed_worker(tmp_path: Path) -> None:
    from pipeline.core.runtime import run_seeds, seed_workers

    def train(seed: int) -> None:
        if seed == 1:
            raise ValueError("seed 1 is broken")
        (tmp_path / f"seed_{seed}.txt").write_text("ok")

    if seed_workers(2, "cpu") == 1:
        with pytest.raises(ValueError, match="seed 1 is broken"):
            run_seeds(train, [0, 1], "cpu")
    else:
        with pytest.raises(RuntimeError, match=r"worker of seeds \[\[1\]\]"):
            run_seeds(train, [0, 1], "cpu")
    assert (tmp_path / "seed_0.txt").read_text() == "ok"  # the other seed finished and is kept


def test_no_early_stop_before_min_epochs(tmp_path: Path) -> None:
    """A plateau at the start (the best value at epoch 0, then no better one): patience 2 alone would stop
    after epoch 2; min_epochs 5 keeps training until 5 epochs have run, and then it stops."""
    values = iter([0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6])
    model = mlp()
    x, y = data(20)
    params = dataclasses.replace(PARAMS, epochs=8, patience=2, min_epochs=5)
    best = fit(model, model.parameters(), n_train=20, get_batch=lambda i: {"x": x[i], "y": y[i]},
               loss_fn=lambda m, b: (F.mse_loss(m(b["x"]).squeeze(-1), b["y"]), {}), validate=lambda m: next(values),
               params=params, epochs=params.epochs, seed=0, curves=tmp_path / "curves", desc="m")
    assert best == {"epoch": 0, "valid_mae": 0.5, "epochs_run": 5}
