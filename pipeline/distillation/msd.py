"""MSD modality weightings (Jin et al., "MSD: Saliency-aware Knowledge Distillation for
Multimodal Understanding", Findings of EMNLP 2021, arXiv 2101.01881).

The student's objective (distillation/methods.py's `msd-<weighting>` methods; losses.msd_loss) is

    L = |S(x) - y| + alpha * KD_T(c_S, c_T) + sum_{m in M_S} w_m(x) * D(S(x_m), r_T^m)

with M_T = config.MODALITIES = (video, audio, text) the teacher's modalities, M_S the student's,
r_T^m the teacher's output with only m kept and s_m(x) (N, |M_T|) the teacher's saliency of m
(training/teacher.py: |r_T(x) - r_T(x without m)|, or with teacher.saliency=loss the rise of the teacher's
L1 loss without m, which can be negative). This module turns saliencies into the weights w:

    uniform     w_m = 1 / |M_T|
    population  w_m = sbar_m / sum_k sbar_k,   sbar_m = mean over the training clips of max(s_m, 0)
                (uniform when every sbar_m is 0: no modality is salient anywhere)
    instance    w_m(x) = softmax_m( s_m(x) / (tau * sbar) ),   sbar = mean_m sbar_m
                Dividing by the mean population saliency makes tau scale-free: the same tau
                means the same sharpness whether saliencies are 1e-3 (a well-fit teacher's
                prediction change) or 1 (a loss change). Per-clip saliencies are not clipped:
                a negative loss saliency (removing m helps the teacher) gets a smaller weight.
                Uniform when sbar = 0.
    learned     w = softmax(phi), phi_0 = log(population weights), updated by a one-step
                look-ahead meta-gradient on a held-out meta set (L2RW: Ren et al., "Learning to
                Reweight Examples for Robust Deep Learning", ICML 2018; Meta-Weight-Net: Shu et
                al., NeurIPS 2019), once per optimizer step, for the step's training batch and a
                batch of the meta set:
                    theta' = theta - eta * grad_theta L_train(theta, softmax(phi))
                    g      = grad_phi L_meta(theta')        (second order, through theta')
                    phi   <- phi - beta * g                  (g averaged over ranks under DDP)
                eta = lookahead_lr, beta = meta_lr; L_meta is the student's task loss. The
                model's real update then uses the new weights, detached (MetaWeights). The meta
                set is carved from the training (or validation) split and is never the set the
                model is selected on (distill.carve_meta_set); distill runs the step from the
                training loop's step hook, on the whole batch, so gradient accumulation does not
                change it. Under DDP each rank steps on its shard and the meta-gradients are
                averaged: equal to the whole batch's to first order in eta.

Every weighting is defined over all teacher modalities and sums to 1 over M_T, so the total
auxiliary weight is comparable across weightings and across students. A student then uses the
columns of its own modalities (student_columns): a text-only student's MSD term is weighted by
text's share alone (e.g. 1/3 under `uniform`), it is not renormalised to 1 - the part of the
teacher's knowledge carried by video and audio is not distilled into a student that cannot see them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from pipeline.core.config import MODALITIES
from pipeline.core.registry import Registry

MIN_INIT_WEIGHT = 1e-4  # floor of the learned weights' initial values: log(0) = -inf could never recover


# --------------------------------------------------------------------------- fixed weightings


def _saliency_matrix(saliency: Any, where: str) -> torch.Tensor:
    s = torch.as_tensor(saliency)
    s = s if s.is_floating_point() else s.float()
    if s.dim() != 2 or s.shape[1] == 0:
        raise ValueError(f"{where}: saliency must be (N, M) with M >= 1 modalities, got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError(f"{where}: saliency has {int((~torch.isfinite(s)).sum())} non-finite values; "
                         "rerun the teacher stage")
    return s


def uniform_weights(num_modalities: int) -> torch.Tensor:
    """w_m = 1 / M, shape (M,)."""
    if num_modalities < 1:
        raise ValueError(f"uniform_weights needs at least one modality, got {num_modalities}")
    return torch.full((num_modalities,), 1.0 / num_modalities)


def population_saliency(saliency: Any) -> torch.Tensor:
    """sbar_m = mean over the clips of max(s_m, 0). saliency (N, M) -> (M,)."""
    s = _saliency_matrix(saliency, "population_saliency")
    if len(s) == 0:
        raise ValueError("population_saliency: no clips (saliency has 0 rows)")
    return s.clamp_min(0).mean(dim=0)  # (M,)


def normalise_population(sbar: torch.Tensor) -> torch.Tensor:
    """sbar (M,) -> sbar_m / sum_k sbar_k, uniform if every sbar_m is 0."""
    total = sbar.sum()
    if total <= 0:
        return uniform_weights(len(sbar)).to(sbar)
    return sbar / total


def population_weights(saliency: Any) -> torch.Tensor:
    """w_m = sbar_m / sum_k sbar_k (uniform if every sbar_m is 0). saliency (N, M) -> (M,), sums to 1."""
    return normalise_population(population_saliency(saliency))


def instance_weights(saliency: Any, population: torch.Tensor, tau: float) -> torch.Tensor:
    """w_m(x) = softmax_m(s_m(x) / (tau * sbar)), sbar = mean_m population[m].

    saliency (B, M) of the batch's clips; population (M,) the population saliency sbar_m
    (population_saliency of the training clips, not the normalised weights); tau > 0.
    Returns (B, M), each row summing to 1; uniform rows when sbar = 0.
    """
    s = _saliency_matrix(saliency, "instance_weights")
    population = torch.as_tensor(population).to(s)
    if population.shape != s.shape[1:]:
        raise ValueError(f"instance_weights: population must be (M,) = {tuple(s.shape[1:])}, "
                         f"got {tuple(population.shape)}")
    if not tau > 0:
        raise ValueError(f"instance_weights: tau (distill.msd.instance_temperature) must be > 0, got {tau}")
    scale = population.clamp_min(0).mean()
    if scale <= 0:
        return uniform_weights(s.shape[1]).to(s).expand_as(s).clone()
    return torch.softmax(s / (tau * scale), dim=1)  # (B, M)


def student_columns(weights: torch.Tensor, student_modalities: Sequence[str],
                    teacher_modalities: Sequence[str] = MODALITIES) -> torch.Tensor:
    """The columns of the student's modalities M_S from weights over M_T (last dim), in M_S order.

    Not renormalised: a text student keeps text's share of the weight (module docstring).
    """
    if weights.shape[-1] != len(teacher_modalities):
        raise ValueError(f"student_columns: weights have {weights.shape[-1]} columns, expected one per teacher "
                         f"modality {list(teacher_modalities)}")
    unknown = [m for m in student_modalities if m not in teacher_modalities]
    if unknown or not student_modalities:
        raise ValueError(f"student_columns: student modalities {list(student_modalities)} must be a non-empty "
                         f"subset of the teacher's {list(teacher_modalities)}")
    index = torch.tensor([list(teacher_modalities).index(m) for m in student_modalities], device=weights.device)
    return weights.index_select(-1, index)


# --------------------------------------------------------------------------- learned weighting


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose parameters are trained: .module of (Distributed)DataParallel, ._orig_mod
    of torch.compile; the model itself otherwise."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def trainable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> parameter of unwrap(model), only those with requires_grad (the names functional_forward takes)."""
    return {name: p for name, p in unwrap(model).named_parameters() if p.requires_grad}


def functional_forward(model: nn.Module, params: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
    """unwrap(model)(*args, **kwargs) with `params` in place of its parameters (torch.func.functional_call);
    parameters and buffers not in `params` are the module's own."""
    return torch.func.functional_call(unwrap(model), dict(params), args, kwargs)


def _all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average t over the ranks when torch.distributed is initialised (every rank must call it)."""
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


class MetaWeights:
    """`learned` weighting: w = softmax(phi), phi updated by a one-step look-ahead meta-gradient
    (L2RW, Ren et al. ICML 2018; Meta-Weight-Net, Shu et al. NeurIPS 2019; formulas in the module
    docstring). init (M,) the initial weights (population weights; floored at MIN_INIT_WEIGHT and
    renormalised before the log), meta_lr = beta, lookahead_lr = eta.

    Per training step: `metrics = weights.step(model, train_loss, valid_loss)`, then the model's
    real update with `weights.weights()` (detached). Under DDP every rank must call step (the
    meta-gradient is averaged across ranks so phi stays identical). phi is kept on the CPU.
    The look-ahead runs the model in its current mode (dropout on in train mode; BatchNorm running
    statistics, if any, are updated by the two extra forward passes) and keeps a second-order graph:
    about three forward/backward passes' time and memory per step.
    """

    def __init__(self, init: torch.Tensor, meta_lr: float, lookahead_lr: float,
                 names: Sequence[str] | None = None) -> None:
        init = torch.as_tensor(init, dtype=torch.float32).detach().cpu()
        if init.dim() != 1 or len(init) == 0 or not torch.isfinite(init).all() or (init < 0).any() or init.sum() <= 0:
            raise ValueError(f"MetaWeights: init must be (M,) finite non-negative weights, got {init.tolist()}")
        if not (meta_lr >= 0 and lookahead_lr > 0):
            raise ValueError(f"MetaWeights: need meta_lr >= 0 and lookahead_lr > 0, got {meta_lr}, {lookahead_lr}")
        self.names = tuple(names) if names is not None else tuple(str(i) for i in range(len(init)))
        if len(self.names) != len(init):
            raise ValueError(f"MetaWeights: {len(self.names)} names {list(self.names)} for {len(init)} weights")
        init = init / init.sum()
        init = init.clamp_min(MIN_INIT_WEIGHT)
        self.phi = torch.log(init / init.sum())  # (M,)
        self.meta_lr = meta_lr
        self.lookahead_lr = lookahead_lr

    def weights(self) -> torch.Tensor:
        """softmax(phi), (M,), detached, summing to 1."""
        return torch.softmax(self.phi, dim=0).detach()

    def __call__(self, saliency: torch.Tensor) -> torch.Tensor:
        """The Weighting interface: the current weights (M,) on the batch's device (saliency unused)."""
        return self.weights().to(saliency.device)

    def step(self, model: nn.Module, train_loss: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor],
             valid_loss: Callable[[dict[str, torch.Tensor]], torch.Tensor]) -> dict[str, float]:
        """One meta-update of phi. train_loss(params, w) -> scalar: the full training objective on a
        training batch with weights w (M,) (not detached: it must depend on w, e.g. via
        the distill method's loss); valid_loss(params) -> scalar: the task loss on a batch of the meta set
        (held out from training and from model selection).
        Both evaluate the model with the given parameter dict (functional_forward). The model's own
        parameters and .grad are not changed. Returns train_loss, valid_loss (at theta'),
        phi_grad_norm and w_<name> (after the update).
        """
        params = trainable_parameters(model)
        if not params:
            raise ValueError(f"MetaWeights.step: {type(unwrap(model)).__name__} has no parameter with requires_grad")
        names = list(params)
        device = params[names[0]].device
        dtype = torch.promote_types(self.phi.dtype, params[names[0]].dtype)  # float64 models: float64 phi
        phi = self.phi.detach().to(device=device, dtype=dtype).requires_grad_(True)
        l_train = train_loss(params, torch.softmax(phi, dim=0))
        grads = torch.autograd.grad(l_train, [params[n] for n in names], create_graph=True, allow_unused=True)
        lookahead = {n: p if g is None else p - self.lookahead_lr * g  # theta' = theta - eta * grad, still in the graph
                     for (n, p), g in zip(params.items(), grads, strict=True)}
        l_valid = valid_loss(lookahead)
        (g_phi,) = torch.autograd.grad(l_valid, phi, allow_unused=True)  # None: L_train does not use w
        g_phi = torch.zeros_like(phi) if g_phi is None else g_phi.detach()
        g_phi = _all_reduce_mean(g_phi).cpu()
        if not torch.isfinite(g_phi).all():
            raise FloatingPointError(f"MetaWeights.step: non-finite meta-gradient {g_phi.tolist()} "
                                     f"(train loss {float(l_train.detach())}, valid loss {float(l_valid.detach())})")
        self.phi = (self.phi - self.meta_lr * g_phi.to(self.phi)).detach()
        w = self.weights()
        return {"train_loss": float(l_train.detach()), "valid_loss": float(l_valid.detach()),
                "phi_grad_norm": float(g_phi.norm()),
                **{f"w_{n}": float(v) for n, v in zip(self.names, w, strict=True)}}

    def state_dict(self) -> dict[str, Any]:
        return {"phi": self.phi.clone(), "names": list(self.names)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        phi = torch.as_tensor(state["phi"], dtype=torch.float32).detach().cpu()
        if phi.shape != self.phi.shape or list(state.get("names", self.names)) != list(self.names):
            raise ValueError(f"MetaWeights.load_state_dict: checkpoint has phi {tuple(phi.shape)} over "
                             f"{list(state.get('names', []))}, expected {tuple(self.phi.shape)} "
                             f"over {list(self.names)}")
        if not torch.isfinite(phi).all():
            raise ValueError(f"MetaWeights.load_state_dict: non-finite phi {phi.tolist()}")
        self.phi = phi.clone()


# --------------------------------------------------------------------------- the table of names


class Weighting(Protocol):
    """saliency (B, M_T) of a batch -> weights (M_T,) or (B, M_T), summing to 1 over M_T."""

    def __call__(self, saliency: torch.Tensor) -> torch.Tensor: ...


class FixedWeights:
    """The same weights (M,) for every clip (`uniform`, `population`)."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.w = weights.detach().float()

    def __call__(self, saliency: torch.Tensor) -> torch.Tensor:
        return self.w.to(saliency.device)


class InstanceWeights:
    """Per-clip softmax of the batch's saliencies (`instance`)."""

    def __init__(self, population: torch.Tensor, tau: float) -> None:
        instance_weights(torch.zeros(1, len(population)), population, tau)  # validate now, not at the first batch
        self.population = population.detach().float()
        self.tau = tau

    def __call__(self, saliency: torch.Tensor) -> torch.Tensor:
        return instance_weights(saliency, self.population.to(saliency.device), self.tau)


# builder(population saliency sbar (M_T,), *, instance_temperature, meta_lr, lookahead_lr) -> Weighting
WEIGHTINGS: Registry[Callable[..., Weighting]] = Registry("weighting")


@WEIGHTINGS.register("uniform")
def _uniform(population: torch.Tensor, **unused: float) -> Weighting:
    return FixedWeights(uniform_weights(len(population)))


@WEIGHTINGS.register("population")
def _population(population: torch.Tensor, **unused: float) -> Weighting:
    return FixedWeights(normalise_population(population))


@WEIGHTINGS.register("instance")
def _instance(population: torch.Tensor, *, instance_temperature: float, **unused: float) -> Weighting:
    return InstanceWeights(population, instance_temperature)


@WEIGHTINGS.register("learned")
def _learned(population: torch.Tensor, *, meta_lr: float, lookahead_lr: float, **unused: float) -> Weighting:
    names = MODALITIES if len(population) == len(MODALITIES) else None
    return MetaWeights(normalise_population(population), meta_lr, lookahead_lr, names=names)


def build_weighting(name: str, train_saliency: Any, *, instance_temperature: float, meta_lr: float,
                    lookahead_lr: float) -> Weighting:
    """WEIGHTINGS[name] built from the training clips' saliency (N, M_T); unknown names list the valid ones."""
    builder = WEIGHTINGS.get(name)
    return builder(population_saliency(train_saliency), instance_temperature=instance_temperature,
                   meta_lr=meta_lr, lookahead_lr=lookahead_lr)
