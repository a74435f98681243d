"""Tests of pipeline.distillation.msd: the MSD weightings (hand-computed in the comments) and the learned
weighting's look-ahead meta-gradient on small constructed problems."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.core.config import ConfigError
from pipeline.distillation import msd
from pipeline.distillation.losses import msd_loss, task_loss
from pipeline.distillation.msd import (
    WEIGHTINGS,
    MetaWeights,
    build_weighting,
    functional_forward,
    instance_weights,
    population_saliency,
    population_weights,
    student_columns,
    trainable_parameters,
    uniform_weights,
)

# s_m per clip, (N=2, M=3); clipped at 0: [[0.1, 0.3, 0], [0.3, 0.1, 0.6]]
SALIENCY = torch.tensor([[0.1, 0.3, -0.2], [0.3, 0.1, 0.6]])


def sums_to_one(w: torch.Tensor) -> None:
    torch.testing.assert_close(w.sum(dim=-1), torch.ones(w.shape[:-1]))


# --------------------------------------------------------------------------- fixed weightings


def test_uniform_weights():
    torch.testing.assert_close(uniform_weights(3), torch.tensor([1 / 3, 1 / 3, 1 / 3]))
    torch.testing.assert_close(uniform_weights(1), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="at least one modality, got 0"):
        uniform_weights(0)


def test_population_weights_by_hand():
    # sbar = mean of max(s, 0) = [(0.1 + 0.3) / 2, (0.3 + 0.1) / 2, (0 + 0.6) / 2] = [0.2, 0.2, 0.3]
    torch.testing.assert_close(population_saliency(SALIENCY), torch.tensor([0.2, 0.2, 0.3]))
    # w = sbar / 0.7 = [2/7, 2/7, 3/7]
    w = population_weights(SALIENCY)
    torch.testing.assert_close(w, torch.tensor([2 / 7, 2 / 7, 3 / 7]))
    sums_to_one(w)


def test_population_weights_degenerate_saliency_is_uniform():
    torch.testing.assert_close(population_weights(torch.zeros(4, 3)), uniform_weights(3))
    # negative (loss) saliency everywhere: every modality's removal helps -> sbar = 0 -> uniform
    torch.testing.assert_close(population_weights(-torch.rand(4, 3) - 0.1), uniform_weights(3))
    # one modality never salient: weight 0, the rest share 1: sbar = [0, 0.5, 1.5] -> [0, 0.25, 0.75]
    w = population_weights(torch.tensor([[-1.0, 0.5, 1.0], [0.0, 0.5, 2.0]]))
    torch.testing.assert_close(w, torch.tensor([0.0, 0.25, 0.75]))


def test_population_weights_accept_numpy_and_validate():
    torch.testing.assert_close(population_weights(SALIENCY.numpy()), torch.tensor([2 / 7, 2 / 7, 3 / 7]))
    with pytest.raises(ValueError, match=r"must be \(N, M\).*got shape \(3,\)"):
        population_weights(torch.ones(3))
    with pytest.raises(ValueError, match="1 non-finite values; rerun the teacher stage"):
        population_weights(torch.tensor([[0.1, math.nan, 0.2]]))
    with pytest.raises(ValueError, match="no clips"):
        population_weights(torch.zeros(0, 3))


def test_instance_weights_by_hand():
    population = torch.tensor([0.1, 0.2, 0.3])  # sbar = mean = 0.2
    s = torch.tensor([[0.2, 0.4, 0.0], [-0.2, 0.2, 0.0]])
    # tau = 1: s / 0.2 = [1, 2, 0] -> e^[1, 2, 0] / (2.7182818 + 7.3890561 + 1 = 11.1073379)
    #   = [0.2447285, 0.6652410, 0.0900306]
    # negative saliency is not clipped: [-1, 1, 0] -> e^[-1, 1, 0] / 4.0861613 = [0.0900306, 0.6652410, 0.2447285]
    w = instance_weights(s, population, tau=1.0)
    torch.testing.assert_close(w, torch.tensor([[0.2447285, 0.6652410, 0.0900306],
                                                [0.0900306, 0.6652410, 0.2447285]]))
    sums_to_one(w)
    # tau = 2: [0.5, 1, 0] -> e^[0.5, 1, 0] / (1.6487213 + 2.7182818 + 1 = 5.3670031)
    #   = [0.3071959, 0.5064804, 0.1863237]
    torch.testing.assert_close(instance_weights(s[:1], population, tau=2.0),
                               torch.tensor([[0.3071959, 0.5064804, 0.1863237]]))


def test_instance_weights_are_scale_free():
    torch.manual_seed(0)
    s, population = torch.rand(5, 3), torch.rand(3)
    w = instance_weights(s, population, tau=0.7)
    for scale in (1e-3, 10.0):
        torch.testing.assert_close(instance_weights(s * scale, population * scale, tau=0.7), w)
    # larger tau -> flatter: each row's max weight shrinks towards 1/3
    flat = instance_weights(s, population, tau=50.0)
    assert (flat.max(dim=1).values < w.max(dim=1).values).all()
    torch.testing.assert_close(flat, torch.full((5, 3), 1 / 3), atol=0.02, rtol=0)


def test_instance_weights_degenerate_and_errors():
    s = torch.tensor([[0.0, 0.0, 0.0], [-0.1, 0.0, 0.3]])
    # population saliency 0 (nothing salient on the training set): uniform rows
    torch.testing.assert_close(instance_weights(s, torch.zeros(3), tau=1.0), torch.full((2, 3), 1 / 3))
    # all-zero clip saliency with a non-zero population: softmax of zeros = uniform
    torch.testing.assert_close(instance_weights(s[:1], torch.ones(3), tau=1.0), torch.full((1, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"tau \(distill.msd.instance_temperature\) must be > 0, got 0.0"):
        instance_weights(s, torch.ones(3), tau=0.0)
    with pytest.raises(ValueError, match=r"population must be \(M,\) = \(3,\), got \(2,\)"):
        instance_weights(s, torch.ones(2), tau=1.0)


def test_instance_weights_gradient_finite():
    s = torch.tensor([[0.2, 0.4, -0.1]], requires_grad=True)
    w = instance_weights(s, torch.tensor([0.1, 0.2, 0.3]), tau=0.5)
    (w * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_student_columns_text_student_keeps_text_share():
    w = torch.tensor([2 / 7, 2 / 7, 3 / 7])  # over (video, audio, text)
    torch.testing.assert_close(student_columns(w, ["text"]), torch.tensor([3 / 7]))
    torch.testing.assert_close(student_columns(w, ["video", "audio", "text"]), w)
    per_clip = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])
    torch.testing.assert_close(student_columns(per_clip, ["text"]), torch.tensor([[0.7], [0.25]]))
    with pytest.raises(ValueError, match=r"\['smell'\] must be a non-empty subset"):
        student_columns(w, ["smell"])
    with pytest.raises(ValueError, match="2 columns"):
        student_columns(w[:2], ["text"])


def test_weightings_table():
    assert WEIGHTINGS.names() == ["instance", "learned", "population", "uniform"]
    with pytest.raises(ConfigError, match=r"unknown weighting 'saliency'\. Available: \['instance', 'learned'"):
        WEIGHTINGS.get("saliency")
    batch = torch.tensor([[0.2, 0.4, 0.0], [0.0, 0.1, 0.1]])
    kwargs = dict(instance_temperature=1.0, meta_lr=0.1, lookahead_lr=0.1)
    expected = {"uniform": uniform_weights(3), "population": torch.tensor([2 / 7, 2 / 7, 3 / 7]),
                "learned": torch.tensor([2 / 7, 2 / 7, 3 / 7]),
                # population saliency [0.2, 0.2, 0.3], mean 7/30
                "instance": instance_weights(batch, torch.tensor([0.2, 0.2, 0.3]), 1.0)}
    for name in WEIGHTINGS:
        w = build_weighting(name, SALIENCY, **kwargs)(batch)
        torch.testing.assert_close(w, expected[name])
        sums_to_one(w)
    with pytest.raises(ConfigError, match="unknown weighting 'x'"):
        build_weighting("x", SALIENCY, **kwargs)


# --------------------------------------------------------------------------- learned: a linear student


class LinearStudent(nn.Module):
    """y_hat = x @ theta."""

    def __init__(self, d: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(d, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.theta


def make_problem(seed: int = 0, n: int = 32, d: int = 4, dtype: torch.dtype = torch.float32):
    """Training/validation data y = x @ theta* + noise; two auxiliary 'modality' targets."""
    g = torch.Generator().manual_seed(seed)
    theta_star = torch.randn(d, generator=g, dtype=dtype)
    x_tr, x_va = torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)
    y_tr = x_tr @ theta_star + 0.05 * torch.randn(n, generator=g, dtype=dtype)
    y_va = x_va @ theta_star + 0.05 * torch.randn(n, generator=g, dtype=dtype)
    adversarial = -y_tr + 0.5 * torch.randn(n, generator=g, dtype=dtype)
    return x_tr, y_tr, x_va, y_va, adversarial


def losses_for(model: nn.Module, x_tr, y_tr, x_va, y_va, target_a, target_b):
    """train_loss(params, w) = |S(x) - y| + sum_m w_m * mse(S(x_m), t_m) with S(x_A) = S(x_B) = S(x);
    valid_loss(params) = |S(x_va) - y_va|."""
    teacher = torch.stack([target_a, target_b], dim=1)  # (n, 2)

    def train_loss(params, w):
        pred = functional_forward(model, params, x_tr)  # (n,)
        return task_loss(pred, y_tr) + msd_loss(torch.stack([pred, pred], dim=1), teacher, w, "mse")

    def valid_loss(params):
        return task_loss(functional_forward(model, params, x_va), y_va)

    return train_loss, valid_loss


def test_meta_weights_init_and_interface():
    meta = MetaWeights(torch.tensor([2 / 7, 2 / 7, 3 / 7]), meta_lr=0.1, lookahead_lr=0.1)
    w = meta.weights()
    torch.testing.assert_close(w, torch.tensor([2 / 7, 2 / 7, 3 / 7]))
    assert not w.requires_grad
    sums_to_one(w)
    torch.testing.assert_close(meta(torch.zeros(5, 3)), w)
    # a zero initial weight is floored so that log(w) is finite and the weight can recover
    zero = MetaWeights(torch.tensor([0.0, 1.0]), meta_lr=0.1, lookahead_lr=0.1).weights()
    assert 0 < zero[0] < 2e-4 and torch.isfinite(zero).all()
    sums_to_one(zero)
    with pytest.raises(ValueError, match="finite non-negative"):
        MetaWeights(torch.tensor([-0.5, 1.5]), meta_lr=0.1, lookahead_lr=0.1)
    with pytest.raises(ValueError, match="lookahead_lr > 0"):
        MetaWeights(torch.tensor([0.5, 0.5]), meta_lr=0.1, lookahead_lr=0.0)


def test_learned_weights_favour_the_helpful_modality():
    """A's target is the true label (its aux loss lowers the validation loss), B's is adversarial
    (-y + noise). Meta steps interleaved with real SGD steps of theta: w_A must grow and win, even
    from an initialisation that favours B (as a misleading population saliency would)."""
    torch.manual_seed(0)
    x_tr, y_tr, x_va, y_va, adversarial = make_problem()
    model = LinearStudent(x_tr.shape[1])
    train_loss, valid_loss = losses_for(model, x_tr, y_tr, x_va, y_va, y_tr, adversarial)
    meta = MetaWeights(torch.tensor([0.3, 0.7]), meta_lr=1.0, lookahead_lr=0.1, names=("A", "B"))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start_valid = float(valid_loss(dict(model.named_parameters())).detach())
    for _ in range(40):
        metrics = meta.step(model, train_loss, valid_loss)
        opt.zero_grad()
        train_loss(dict(model.named_parameters()), meta.weights()).backward()  # the real update, detached w
        opt.step()
    w_a, w_b = meta.weights().tolist()
    assert set(metrics) == {"train_loss", "valid_loss", "phi_grad_norm", "w_A", "w_B"}
    assert metrics["w_A"] == pytest.approx(w_a)
    assert w_a > 0.8 and w_a > 0.3 + 0.5 and w_b < 0.2, (w_a, w_b)
    assert float(valid_loss(dict(model.named_parameters())).detach()) < 0.5 * start_valid


def test_meta_step_is_a_no_op_on_phi_for_identical_aux_targets():
    """Equal aux terms -> dL_valid/dw_A = dL_valid/dw_B -> the softmax Jacobian maps (c, c) to 0."""
    x_tr, y_tr, x_va, y_va, adversarial = make_problem(seed=1)
    model = LinearStudent(x_tr.shape[1])
    with torch.no_grad():
        model.theta.normal_()
    meta = MetaWeights(torch.tensor([0.3, 0.7]), meta_lr=10.0, lookahead_lr=0.1)
    before = meta.state_dict()["phi"]
    for target in (y_tr, adversarial):  # helpful or harmful, as long as both are the same
        train_loss, valid_loss = losses_for(model, x_tr, y_tr, x_va, y_va, target, target)
        metrics = meta.step(model, train_loss, valid_loss)
        assert metrics["phi_grad_norm"] < 1e-6
    torch.testing.assert_close(meta.state_dict()["phi"], before, atol=1e-6, rtol=0)


def test_meta_gradient_matches_finite_differences():
    """g = d/dphi L_valid(theta - eta * grad_theta L_train(theta, softmax(phi))), checked numerically (float64)."""
    x_tr, y_tr, x_va, y_va, adversarial = make_problem(seed=2, dtype=torch.float64)
    model = LinearStudent(x_tr.shape[1], dtype=torch.float64)
    with torch.no_grad():
        model.theta.copy_(torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64))
    # smooth valid loss (mse) so that central differences are accurate
    train_loss, _ = losses_for(model, x_tr, y_tr, x_va, y_va, y_tr, adversarial)

    def valid_loss(params):
        return ((functional_forward(model, params, x_va) - y_va) ** 2).mean()

    eta = 0.1

    def lookahead_valid(phi: torch.Tensor) -> float:
        theta = model.theta.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(train_loss({"theta": theta}, torch.softmax(phi, 0)), theta)
        return float(valid_loss({"theta": theta - eta * g}).detach())

    meta = MetaWeights(torch.tensor([0.4, 0.6]), meta_lr=1.0, lookahead_lr=eta)
    phi0 = meta.state_dict()["phi"].double()
    meta.step(model, train_loss, valid_loss)
    g = phi0 - meta.state_dict()["phi"].double()  # beta = 1: phi_1 = phi_0 - g
    h = 1e-5
    fd = torch.tensor([(lookahead_valid(phi0 + h * e) - lookahead_valid(phi0 - h * e)) / (2 * h)
                       for e in torch.eye(2, dtype=torch.float64)], dtype=torch.float64)
    assert fd.abs().max() > 1e-3  # a non-trivial gradient
    torch.testing.assert_close(g, fd, atol=1e-6, rtol=1e-4)
    assert model.theta.grad is None  # the meta step leaves the model's .grad alone


class Tower(nn.Module):
    """A module hierarchy: nested Sequential, a frozen parameter, a buffer, and two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Sequential(nn.Linear(8, 8), nn.Tanh()))
        self.heads = nn.ModuleDict({"reg": nn.Linear(8, 1), "aux": nn.Linear(8, 2)})
        self.frozen_scale = nn.Parameter(torch.tensor(2.0), requires_grad=False)
        self.register_buffer("shift", torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x * self.frozen_scale + self.shift)
        return {"reg": self.heads["reg"](h).squeeze(-1), "aux": self.heads["aux"](h)}


def tower_losses(model: nn.Module, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x_tr, x_va = torch.randn(16, 4, generator=g), torch.randn(16, 4, generator=g)
    y_tr, y_va = torch.randn(16, generator=g), torch.randn(16, generator=g)
    teacher = torch.stack([y_tr, -y_tr], dim=1)  # (16, 2)

    def train_loss(params, w):
        out = functional_forward(model, params, x_tr)
        return task_loss(out["reg"], y_tr) + msd_loss(out["aux"], teacher, w, "smooth_l1")

    def valid_loss(params):
        return task_loss(functional_forward(model, params, x_va)["reg"], y_va)

    return train_loss, valid_loss


def test_meta_step_on_a_module_hierarchy():
    torch.manual_seed(0)
    model = Tower()
    params = trainable_parameters(model)
    assert "frozen_scale" not in params and "body.2.0.weight" in params and "heads.aux.bias" in params
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    meta = MetaWeights(torch.tensor([0.5, 0.5]), meta_lr=1.0, lookahead_lr=0.5, names=("A", "B"))
    train_loss, valid_loss = tower_losses(model)
    metrics = meta.step(model, train_loss, valid_loss)
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["phi_grad_norm"] > 0 and meta.weights()[0] != 0.5
    for n, p in model.state_dict().items():  # parameters and buffers untouched, no .grad written
        torch.testing.assert_close(p, before[n], rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())


def test_meta_step_through_ddp_and_all_reduce(tmp_path, monkeypatch):
    """DistributedDataParallel (gloo, one rank) is unwrapped to .module; with a 2-rank stand-in for
    torch.distributed the meta-gradient is averaged with the other rank's."""
    import torch.distributed as dist

    torch.manual_seed(0)
    model = Tower()
    train_loss, valid_loss = tower_losses(model)
    plain = MetaWeights(torch.tensor([0.5, 0.5]), meta_lr=1.0, lookahead_lr=0.5)
    plain.step(model, train_loss, valid_loss)
    g = torch.log(torch.tensor([0.5, 0.5])) - plain.state_dict()["phi"]  # this rank's meta-gradient

    if dist.is_available() and dist.is_gloo_available():
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
        try:
            ddp = nn.parallel.DistributedDataParallel(model)
            assert msd.unwrap(ddp) is model and list(trainable_parameters(ddp)) == list(trainable_parameters(model))
            wrapped = MetaWeights(torch.tensor([0.5, 0.5]), meta_lr=1.0, lookahead_lr=0.5)
            wrapped.step(ddp, train_loss, valid_loss)
            torch.testing.assert_close(wrapped.weights(), plain.weights())
        finally:
            dist.destroy_process_group()

    other = torch.tensor([0.3, -0.3])  # the other rank's meta-gradient

    class TwoRanks:
        ReduceOp = dist.ReduceOp

        @staticmethod
        def is_available():
            return True

        @staticmethod
        def is_initialized():
            return True

        @staticmethod
        def get_world_size():
            return 2

        @staticmethod
        def all_reduce(t, op):
            t += other.to(t)

    monkeypatch.setattr(msd, "dist", TwoRanks)
    averaged = MetaWeights(torch.tensor([0.5, 0.5]), meta_lr=1.0, lookahead_lr=0.5)
    averaged.step(model, train_loss, valid_loss)
    torch.testing.assert_close(averaged.state_dict()["phi"], torch.log(torch.tensor([0.5, 0.5])) - (g + other) / 2)


def test_meta_step_without_dependence_on_w_keeps_phi():
    model = Tower()
    _, valid_loss = tower_losses(model)
    meta = MetaWeights(torch.tensor([0.2, 0.8]), meta_lr=1.0, lookahead_lr=0.5)
    meta.step(model, lambda params, w: valid_loss(params), valid_loss)
    torch.testing.assert_close(meta.weights(), torch.tensor([0.2, 0.8]))


def test_meta_weights_state_dict_round_trip():
    meta = MetaWeights(torch.tensor([0.2, 0.3, 0.5]), meta_lr=0.1, lookahead_lr=0.1, names=("video", "audio", "text"))
    meta.phi = torch.tensor([0.1, -0.4, 1.2])
    restored = MetaWeights(torch.tensor([1 / 3, 1 / 3, 1 / 3]), meta_lr=0.1, lookahead_lr=0.1,
                           names=("video", "audio", "text"))
    state = meta.state_dict()
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.weights(), meta.weights())
    state["phi"][0] = 5.0  # the state is a copy
    assert meta.phi[0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"checkpoint has phi \(2,\).*expected \(3,\)"):
        restored.load_state_dict({"phi": torch.zeros(2), "names": ["a", "b"]})
