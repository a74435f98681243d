"""Tests of pipeline.distillation.losses: expected values are worked out by hand in the comments."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.core.config import ConfigError
from pipeline.distillation.losses import (
    DISTANCES,
    classification_loss,
    kd_loss,
    logit_regression_loss,
    msd_loss,
    sentiment_bins,
    standardize_logits,
    task_loss,
    teacher_loss,
    videoadviser_loss,
)

K = 7


def close(t: torch.Tensor, value: float, tol: float = 1e-6) -> None:
    assert t.dim() == 0, "losses are scalars"
    assert float(t) == pytest.approx(value, abs=tol)


# --------------------------------------------------------------------------- task / bins


def test_task_loss_by_hand():
    pred = torch.tensor([1.0, -2.0, 0.5, 3.0])
    y = torch.tensor([0.0, -1.0, 2.0, 3.0])
    # |1-0| + |-2+1| + |0.5-2| + |3-3| = 1 + 1 + 1.5 + 0 = 3.5; mean = 3.5 / 4 = 0.875
    close(task_loss(pred, y), 0.875)


def test_sentiment_bins_half_to_even_and_clipping():
    y = torch.tensor([0.5, 1.5, -2.5, 2.5, 7.0, -9.0, 0.49, -0.5, 2.6, -3.0, 3.0, 1.2])
    # h = (7 - 1) / 2 = 3; bin = round(clip(y, -3, 3)) + 3, round half to even:
    #   0.5 -> 0 -> 3     1.5 -> 2 -> 5     -2.5 -> -2 -> 1   2.5 -> 2 -> 5
    #   7.0 -> 3 -> 6     -9 -> -3 -> 0     0.49 -> 0 -> 3    -0.5 -> -0 -> 3
    #   2.6 -> 3 -> 6     -3 -> -3 -> 0     3.0 -> 3 -> 6     1.2 -> 1 -> 4
    bins = sentiment_bins(y, K)
    assert bins.dtype == torch.long
    assert bins.tolist() == [3, 5, 1, 5, 6, 0, 3, 3, 6, 0, 6, 4]


def test_sentiment_bins_five_classes():
    # K = 5: h = 2; 2.7 -> clip 2 -> 4; -0.6 -> -1 -> 1; 0.5 -> 0 -> 2; -5 -> -2 -> 0
    assert sentiment_bins(torch.tensor([2.7, -0.6, 0.5, -5.0]), 5).tolist() == [4, 1, 2, 0]


# --------------------------------------------------------------------------- classification


def test_classification_loss_uniform_logits_is_log_k():
    logits = torch.full((3, K), 2.5)  # equal logits: p_k = 1/7 for every class
    y = torch.tensor([-3.0, 0.2, 2.9])
    # CE = -log(1/7) = log 7 = 1.9459101 for every sample, whatever its bin
    close(classification_loss(logits, y), 1.9459101)


def test_classification_loss_by_hand():
    # sample 1: logit 2 on its bin (y = 1 -> bin 4), 0 elsewhere:
    #   CE = log(e^2 + 6) - 2 = log(7.3890561 + 6) - 2 = log(13.3890561) - 2 = 2.5944377 - 2 = 0.5944377
    # sample 2: logit 2 on bin 4, label y = -3 -> bin 0 (logit 0):
    #   CE = log(13.3890561) - 0 = 2.5944377
    # mean = (0.5944377 + 2.5944377) / 2 = 1.5944377
    logits = torch.zeros(2, K)
    logits[:, 4] = 2.0
    y = torch.tensor([1.0, -3.0])
    close(classification_loss(logits, y), 1.5944377)


def test_classification_loss_bins_follow_the_number_of_logits():
    # K = 5 (h = 2): logits log([1, 1, 1, 1, 4]) -> p = [1/8, 1/8, 1/8, 1/8, 4/8]
    #   y = 2.0 -> bin 4: CE = -log(4/8) = log 2 = 0.6931472
    #   y = -1.2 -> round(-1.2) + 2 = 1: CE = -log(1/8) = log 8 = 2.0794415
    # mean = (0.6931472 + 2.0794415) / 2 = 1.3862944 (= log 4)
    logits = torch.log(torch.tensor([[1.0, 1.0, 1.0, 1.0, 4.0]] * 2))
    close(classification_loss(logits, torch.tensor([2.0, -1.2])), 1.3862944)


def test_teacher_loss_is_weighted_ce_plus_l1():
    logits = torch.zeros(2, K)  # uniform: CE = log 7 = 1.9459101
    reg = torch.tensor([0.5, -1.0])
    y = torch.tensor([1.5, 0.0])
    # L1 = (|0.5 - 1.5| + |-1 - 0|) / 2 = (1 + 1) / 2 = 1
    # L = 0.5 * 1.9459101 + 1 = 0.97295505 + 1 = 1.97295505
    close(teacher_loss(logits, reg, y, ce_weight=0.5), 1.97295505)
    # ce_weight = 0 -> just the L1 term; ce_weight = 2 -> 2 * 1.9459101 + 1 = 4.8918202
    close(teacher_loss(logits, reg, y, ce_weight=0.0), 1.0)
    close(teacher_loss(logits, reg, y, ce_weight=2.0), 4.8918202)


# --------------------------------------------------------------------------- videoadviser


R_S = torch.tensor([0.5, -1.0, 2.0, 0.0])
R_T = torch.tensor([0.0, 1.0, 2.5, -3.0])
# d = r_S - r_T = [0.5, -2.0, -0.5, 3.0]


def test_videoadviser_mse():
    # d^2 = [0.25, 4, 0.25, 9], sum 13.5, mean 13.5 / 4 = 3.375
    close(videoadviser_loss(R_S, R_T, "mse"), 3.375)


def test_videoadviser_l1():
    # |d| = [0.5, 2, 0.5, 3], sum 6, mean 1.5
    close(videoadviser_loss(R_S, R_T, "l1"), 1.5)


def test_videoadviser_smooth_l1_both_branches():
    # |d| < 1: 0.5 d^2; |d| >= 1: |d| - 0.5
    #   0.5 -> 0.125   -2 -> 1.5   -0.5 -> 0.125   3 -> 2.5; sum 4.25, mean 1.0625
    close(videoadviser_loss(R_S, R_T, "smooth_l1"), 1.0625)
    # only the quadratic branch: d = [0.2, -0.4] -> 0.5 * [0.04, 0.16] = [0.02, 0.08], mean 0.05
    close(videoadviser_loss(torch.tensor([0.2, 0.0]), torch.tensor([0.0, 0.4]), "smooth_l1"), 0.05)
    # only the linear branch: d = [1.5, -4] -> [1.0, 3.5], mean 2.25
    close(videoadviser_loss(torch.tensor([1.5, -4.0]), torch.tensor([0.0, 0.0]), "smooth_l1"), 2.25)


def test_videoadviser_zero_when_equal():
    for name in ("mse", "l1", "smooth_l1"):
        close(videoadviser_loss(R_T.clone(), R_T, name), 0.0)


def test_videoadviser_unknown_distance_lists_available():
    with pytest.raises(ConfigError, match=r"unknown distance 'cosine'\. Available: \['l1', 'mse', 'smooth_l1'\]"):
        videoadviser_loss(R_S, R_T, "cosine")
    assert DISTANCES.names() == ["l1", "mse", "smooth_l1"]


@pytest.mark.parametrize("distance", ["mse", "l1", "smooth_l1"])
def test_videoadviser_gradient_reaches_student_only(distance):
    r_s = R_S.clone().requires_grad_(True)
    r_t = R_T.clone().requires_grad_(True)  # the teacher's output, as if it still had a graph
    videoadviser_loss(r_s, r_t, distance).backward()
    assert r_t.grad is None, "no gradient may flow into the teacher target"
    assert r_s.grad is not None and torch.isfinite(r_s.grad).all()
    # dD/dr_S by hand, d = [0.5, -2, -0.5, 3], n = 4:
    expected = {
        "mse": [2 * 0.5 / 4, 2 * -2.0 / 4, 2 * -0.5 / 4, 2 * 3.0 / 4],  # 2 d / n
        "l1": [1 / 4, -1 / 4, -1 / 4, 1 / 4],  # sign(d) / n
        "smooth_l1": [0.5 / 4, -1 / 4, -0.5 / 4, 1 / 4],  # d / n if |d| < 1 else sign(d) / n
    }[distance]
    torch.testing.assert_close(r_s.grad, torch.tensor(expected))


def test_teacher_loss_gradients_are_finite():
    torch.manual_seed(0)
    logits = torch.randn(5, K, requires_grad=True)
    reg = torch.randn(5, requires_grad=True)
    y = torch.tensor([-3.0, -1.5, 0.0, 0.5, 3.0])
    teacher_loss(logits, reg, y, ce_weight=0.5).backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(reg.grad).all()
    # CE gradient rows sum to zero (softmax - onehot), scaled by ce_weight / n
    torch.testing.assert_close(logits.grad.sum(dim=1), torch.zeros(5), atol=1e-6, rtol=0)
    assert math.isclose(float(reg.grad.abs().sum()), 1.0, abs_tol=1e-6)  # |sign| / n summed over 5 = 1


def test_kd_loss_zero_when_equal_and_teacher_gets_no_gradient() -> None:

    teacher = torch.tensor([[1.0, -2.0, 0.5]], requires_grad=True)
    student = torch.tensor([[1.0, -2.0, 0.5]], requires_grad=True)
    loss = kd_loss(student, teacher, temperature=3.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    kd_loss(student + torch.tensor([[1.0, 0.0, 0.0]]), teacher, 3.0).backward()
    assert teacher.grad is None and torch.isfinite(student.grad).all()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_loss(student, teacher, 0.0)


# --------------------------------------------------------------------------- element-wise distances


@pytest.mark.parametrize("distance", ["mse", "l1", "smooth_l1"])
def test_distances_element_wise_and_mean_agree(distance):
    d = DISTANCES.get(distance)
    per = d(R_S, R_T, reduction="none")
    assert per.shape == R_S.shape
    # d = [0.5, -2, -0.5, 3] element by element
    expected = {"mse": [0.25, 4.0, 0.25, 9.0], "l1": [0.5, 2.0, 0.5, 3.0], "smooth_l1": [0.125, 1.5, 0.125, 2.5]}
    torch.testing.assert_close(per, torch.tensor(expected[distance]))
    torch.testing.assert_close(d(R_S, R_T), per.mean())
    torch.testing.assert_close(d(R_S, R_T, reduction="sum"), per.sum())


def test_videoadviser_loss_unchanged_against_torch():
    torch.manual_seed(0)
    a, b = torch.randn(16) * 2, torch.randn(16) * 2
    close(videoadviser_loss(a, b, "mse"), float(torch.nn.functional.mse_loss(a, b)))
    close(videoadviser_loss(a, b, "l1"), float(torch.nn.functional.l1_loss(a, b)))
    close(videoadviser_loss(a, b, "smooth_l1"), float(torch.nn.functional.smooth_l1_loss(a, b, beta=1.0)))


# --------------------------------------------------------------------------- msd

S_MOD = torch.tensor([[0.5, -1.0, 2.0], [0.0, 1.0, 1.5]])  # (B=2, M=3): S(x_m)
T_MOD = torch.tensor([[0.0, 1.0, 2.5], [-3.0, 1.0, 0.0]])  # r_T^m
# d = S - T = [[0.5, -2, -0.5], [3, 0, 1.5]]
W_SHARED = torch.tensor([0.5, 0.25, 0.25])


@pytest.mark.parametrize(("distance", "value"), [
    # mse: d^2 = [[0.25, 4, 0.25], [9, 0, 2.25]]
    #   row 1: 0.5*0.25 + 0.25*4 + 0.25*0.25 = 0.125 + 1 + 0.0625 = 1.1875
    #   row 2: 0.5*9 + 0 + 0.25*2.25 = 4.5 + 0.5625 = 5.0625;  mean (1.1875 + 5.0625) / 2 = 3.125
    ("mse", 3.125),
    # l1: |d| = [[0.5, 2, 0.5], [3, 0, 1.5]]
    #   row 1: 0.25 + 0.5 + 0.125 = 0.875;  row 2: 1.5 + 0 + 0.375 = 1.875;  mean 1.375
    ("l1", 1.375),
    # smooth_l1: [[0.125, 1.5, 0.125], [2.5, 0, 1.0]]   (0.5 d^2 if |d| < 1 else |d| - 0.5)
    #   row 1: 0.0625 + 0.375 + 0.03125 = 0.46875;  row 2: 1.25 + 0 + 0.25 = 1.5;  mean 0.984375
    ("smooth_l1", 0.984375),
])
def test_msd_loss_shared_weights_by_hand(distance, value):
    close(msd_loss(S_MOD, T_MOD, W_SHARED, distance), value)


@pytest.mark.parametrize(("distance", "value"), [
    # per-clip weights [[1, 0, 0], [0, 0, 1]] pick d_11 = 0.5 and d_23 = 1.5
    ("mse", (0.25 + 2.25) / 2),  # 1.25
    ("l1", (0.5 + 1.5) / 2),  # 1.0
    ("smooth_l1", (0.125 + 1.0) / 2),  # 0.5625
])
def test_msd_loss_per_clip_weights_by_hand(distance, value):
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    close(msd_loss(S_MOD, T_MOD, w, distance), value)


def test_msd_loss_single_modality_student():
    # a text student: only the text column (d = [-0.5, 1.5]) with text's share 3/7 of the weight
    # mse: 3/7 * (0.25 + 2.25) / 2 = 3/7 * 1.25 = 0.5357143
    close(msd_loss(S_MOD[:, 2:], T_MOD[:, 2:], torch.tensor([3 / 7]), "mse"), 3 / 7 * 1.25)


def test_msd_loss_zero_when_equal_or_zero_weights():
    for name in ("mse", "l1", "smooth_l1"):
        close(msd_loss(T_MOD.clone(), T_MOD, W_SHARED, name), 0.0)
        close(msd_loss(S_MOD, T_MOD, torch.zeros(3), name), 0.0)


@pytest.mark.parametrize("distance", ["mse", "l1", "smooth_l1"])
def test_msd_loss_gradients(distance):
    s = S_MOD.clone().requires_grad_(True)
    t = T_MOD.clone().requires_grad_(True)
    w = W_SHARED.clone().requires_grad_(True)
    msd_loss(s, t, w, distance).backward()
    assert t.grad is None, "no gradient may flow into the teacher target"
    assert torch.isfinite(s.grad).all() and torch.isfinite(w.grad).all()
    # d L / d w_m = mean over the batch of D(S_bm, T_bm); e.g. mse: [(0.25 + 9) / 2, (4 + 0) / 2, (0.25 + 2.25) / 2]
    per = DISTANCES.get(distance)(S_MOD, T_MOD, reduction="none")
    torch.testing.assert_close(w.grad, per.mean(dim=0))
    # d L / d S_bm = w_m * D'(d_bm) / B; for l1: w_m * sign(d_bm) / 2 (sign(0) = 0)
    if distance == "l1":
        torch.testing.assert_close(s.grad, W_SHARED * torch.sign(S_MOD - T_MOD) / 2)


def test_msd_loss_shape_errors():
    with pytest.raises(ValueError, match=r"same shape \(B, M\), got \(2, 3\) and \(2, 2\)"):
        msd_loss(S_MOD, T_MOD[:, :2], W_SHARED, "mse")
    with pytest.raises(ValueError, match=r"weights of shape \(B, M\) = \(2, 3\) or \(M,\) = \(3,\), got \(2,\)"):
        msd_loss(S_MOD, T_MOD, torch.ones(2), "mse")
    with pytest.raises(ValueError, match="same shape"):
        msd_loss(S_MOD[0], T_MOD[0], W_SHARED, "mse")  # (M,) without a batch
    with pytest.raises(ConfigError, match="unknown distance 'cos'"):
        msd_loss(S_MOD, T_MOD, W_SHARED, "cos")


# --------------------------------------------------------------------------- logit standardization


def test_standardize_logits_by_hand():
    # [2, 4, 6, 8]: mean 5, centred [-3, -1, 1, 3], unbiased var (9 + 1 + 1 + 9) / 3 = 20/3, std 2.5819889
    # z = centred / (std + 1e-7) = [-1.1618950, -0.3872983, 0.3872983, 1.1618950]
    z = standardize_logits(torch.tensor([[2.0, 4.0, 6.0, 8.0]]))
    torch.testing.assert_close(z, torch.tensor([[-1.1618950, -0.3872983, 0.3872983, 1.1618950]]))
    # any leading dims; each row standardised on its own; a constant row gives 0
    c = torch.tensor([[[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]])  # (1, 2, 3)
    z = standardize_logits(c)
    assert z.shape == (1, 2, 3)
    torch.testing.assert_close(z[0, 0], torch.tensor([-1.0, 0.0, 1.0]) / (1 + 1e-7))  # mean 2, std 1
    assert torch.equal(z[0, 1], torch.zeros(3))


def test_standardize_logits_is_shift_and_scale_free():
    torch.manual_seed(0)
    c = torch.randn(4, 10)
    torch.testing.assert_close(standardize_logits(100.0 * c + 3.0), standardize_logits(c), atol=1e-5, rtol=1e-5)


def test_standardize_logits_errors():
    with pytest.raises(ValueError, match=r"K >= 2\), got shape \(3, 1\)"):
        standardize_logits(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="eps must be > 0"):
        standardize_logits(torch.zeros(3, 2), eps=0.0)


C_S = torch.tensor([[1.0, 2.0, 3.0]])  # z = [-1, 0, 1] (mean 2, std 1), up to eps
C_T = torch.tensor([[3.0, 2.0, 1.0]])  # z = [1, 0, -1]; z_S - z_T = [-2, 0, 2]


@pytest.mark.parametrize(("distance", "value"), [
    ("mse", 8 / 3),  # (4 + 0 + 4) / 3
    ("l1", 4 / 3),  # (2 + 0 + 2) / 3
    ("smooth_l1", 1.0),  # (|d| - 0.5 = 1.5, 0, 1.5) / 3
])
def test_logit_regression_loss_by_hand(distance, value):
    close(logit_regression_loss(C_S, C_T, distance), value, tol=1e-5)


@pytest.mark.parametrize("distance", ["mse", "l1", "smooth_l1"])
def test_logit_regression_loss_ignores_the_teachers_scale(distance):
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    loss = logit_regression_loss(student, teacher, distance)
    assert loss.item() > 0
    close(logit_regression_loss(student, teacher * 50.0, distance), loss.item(), tol=1e-5)  # CLIP-like scale
    close(logit_regression_loss(student, teacher - 7.0, distance), loss.item(), tol=1e-5)
    close(logit_regression_loss(teacher * 20.0 + 1.0, teacher, distance), 0.0, tol=1e-5)


@pytest.mark.parametrize("distance", ["mse", "l1", "smooth_l1"])
def test_logit_regression_loss_gradients(distance):
    torch.manual_seed(0)
    student = torch.randn(4, 6)
    student[2] = 0.5  # a constant row: std 0, z = 0; dz/dc = (I - 1/K) / eps there, large but finite
    student.requires_grad_(True)
    teacher = (torch.randn(4, 6) * 50.0).requires_grad_(True)
    logit_regression_loss(student, teacher, distance).backward()
    assert teacher.grad is None, "no gradient may flow into the teacher target"
    assert torch.isfinite(student.grad).all() and (student.grad.abs().sum(dim=1) > 0).all()
    # z is shift invariant: each row's gradient sums to 0 (up to float32 rounding of the constant row's 1/eps)
    sums = student.grad.sum(dim=1) / student.grad.abs().sum(dim=1)
    torch.testing.assert_close(sums, torch.zeros(4), atol=1e-6, rtol=0)


def test_logit_regression_loss_errors():
    with pytest.raises(ValueError, match=r"same shape \(B, K\), got \(1, 3\) and \(1, 4\)"):
        logit_regression_loss(C_S, torch.zeros(1, 4), "mse")
    with pytest.raises(ConfigError, match="unknown distance 'cos'"):
        logit_regression_loss(C_S, C_T, "cos")
