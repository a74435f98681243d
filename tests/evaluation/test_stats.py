"""Tests of pipeline.evaluation.stats on constructed cases whose answers are known."""

from __future__ import annotations

import dataclasses
import logging
import warnings

import numpy as np
import pytest

from pipeline.evaluation.stats import (
    Comparison,
    bootstrap_ci,
    compare,
    compare_family,
    holm,
    per_clip_differences,
    sign_flip_pvalue,
)

FAST = 999  # resamples: enough for these cases, and the whole file runs in a few seconds


# --------------------------------------------------------------------------- per_clip_differences


def test_per_clip_differences_average_the_seeds() -> None:
    method = np.array([[1.0, 2.0, 0.5], [3.0, 4.0, 0.5]])  # (S=2, N=3)
    baseline = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    # clip 0: ((1 - 0) + (3 - 1)) / 2 = 1.5; clip 1: ((2 - 0) + (4 - 1)) / 2 = 2.5; clip 2: -0.5
    assert per_clip_differences(method, baseline).tolist() == [1.5, 2.5, -0.5]


@pytest.mark.parametrize(("method", "baseline", "match"), [
    (np.ones((2, 3)), np.ones((3, 3)), r"method scores \(2, 3\) and baseline scores \(3, 3\) differ in shape"),
    (np.ones(3), np.ones(3), r"method: expected per-clip scores of shape \(S seeds, N clips\).*got shape \(3,\)"),
    (np.ones((2, 0)), np.ones((2, 0)), r"method: .*got shape \(2, 0\)"),
    (np.ones((2, 3)), np.array([[1.0, 1.0, 1.0], [1.0, np.nan, 1.0]]),
     r"baseline: 1 of 6 scores are NaN or infinite; first at seed row 1, clip column 1"),
    (np.array([[1.0, np.inf]]), np.ones((1, 2)), r"method: 1 of 2 scores are NaN or infinite"),
])
def test_per_clip_differences_errors_name_the_problem(method, baseline, match) -> None:
    with pytest.raises(ValueError, match=match):
        per_clip_differences(method, baseline)


# --------------------------------------------------------------------------- bootstrap / sign flip


def test_constant_difference_gives_a_point_interval_and_a_tiny_p() -> None:
    d = np.full(30, 0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DegenerateDataWarning, no RuntimeWarning
        assert bootstrap_ci(d, n_resamples=FAST) == (0.25, 0.25)
        p = sign_flip_pvalue(d, n_resamples=FAST)
    # only the two all-same-sign patterns reach |mean| = 0.25 (probability 2^-29): the Monte Carlo floor
    assert p == pytest.approx(2 / (FAST + 1))
    assert bootstrap_ci(np.zeros(5)) == (0.0, 0.0)
    assert sign_flip_pvalue(np.zeros(5)) == 1.0


def test_zero_mean_antisymmetric_differences() -> None:
    rng = np.random.default_rng(0)
    half = rng.exponential(size=20)
    d = np.concatenate([half, -half])  # mean 0 (up to rounding in the summation), symmetric
    assert sign_flip_pvalue(d, n_resamples=FAST) > 0.95  # almost every sign pattern's |mean| is >= the observed
    low, high = bootstrap_ci(d, n_resamples=FAST)
    assert low < 0.0 < high
    assert low == pytest.approx(-high, rel=0.3)  # about symmetric around 0


def test_sign_flip_is_exact_for_few_clips() -> None:
    # N = 4 clips, all positive: 2^4 = 16 sign patterns <= n_resamples -> exact. Only the all-positive and
    # the all-negative pattern have |mean| >= the observed mean: p = 2 / 16, whatever the seed
    d = np.array([0.1, 0.2, 0.3, 0.4])
    assert sign_flip_pvalue(d, n_resamples=100, seed=0) == 2 / 16
    assert sign_flip_pvalue(d, n_resamples=100, seed=7) == 2 / 16
    # d = [1, 2, -3, 4], observed sum 4. A pattern's sum is 10 - 2 * (sum of the |d| it makes negative), so
    # sum >= 4 <=> the negated |d| add up to <= 3: {}, {1}, {2}, {3}, {1, 2}: 5 of 16 patterns; by symmetry
    # 5 of 16 have sum <= -4, and 13 of 16 have sum <= 4. p = 2 * min(13, 5) / 16 = 0.625
    assert sign_flip_pvalue(np.array([1.0, 2.0, -3.0, 4.0]), n_resamples=100) == 0.625


def test_bootstrap_and_test_are_seeded() -> None:
    d = np.random.default_rng(1).normal(0.1, 1.0, size=50)
    assert bootstrap_ci(d, n_resamples=FAST, seed=3) == bootstrap_ci(d, n_resamples=FAST, seed=3)
    assert bootstrap_ci(d, n_resamples=FAST, seed=3) != bootstrap_ci(d, n_resamples=FAST, seed=4)
    assert sign_flip_pvalue(d, n_resamples=FAST, seed=3) == sign_flip_pvalue(d, n_resamples=FAST, seed=3)


def test_bootstrap_interval_shrinks_with_confidence_and_contains_the_mean() -> None:
    d = np.random.default_rng(2).normal(0.0, 1.0, size=60)
    low95, high95 = bootstrap_ci(d, 0.95, FAST)
    low50, high50 = bootstrap_ci(d, 0.50, FAST)
    assert low95 < low50 < d.mean() < high50 < high95


@pytest.mark.parametrize(("diffs", "match"), [
    (np.ones(1), r"shape \(N,\) with N >= 2 clips, got shape \(1,\)"),
    (np.ones((2, 2)), r"got shape \(2, 2\)"),
    (np.array([1.0, np.nan, 2.0]), r"1 of 3 per-clip differences are NaN"),
])
def test_diffs_are_checked(diffs, match) -> None:
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(diffs)
    with pytest.raises(ValueError, match=match):
        sign_flip_pvalue(diffs)


def test_bootstrap_argument_errors() -> None:
    with pytest.raises(ValueError, match="confidence must be in"):
        bootstrap_ci([0.1, 0.2], confidence=95)
    with pytest.raises(ValueError, match="n_resamples must be >= 1"):
        bootstrap_ci([0.1, 0.2], n_resamples=0)


def test_bootstrap_coverage_of_a_known_mean() -> None:
    # normal differences with mean 0.3: the 95 % interval should cover 0.3 in about 95 % of repetitions
    rng = np.random.default_rng(0)
    reps = 200
    covered = 0
    for rep in range(reps):
        low, high = bootstrap_ci(rng.normal(0.3, 1.0, size=40), n_resamples=FAST, seed=rep)
        covered += low <= 0.3 <= high
    assert 0.90 <= covered / reps <= 0.99


# --------------------------------------------------------------------------- holm


def test_holm_textbook_example_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> running max 0.06)
    # back in input order: [0.03, 0.06, 0.06, 0.02]
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)


def test_holm_caps_at_one_single_and_empty() -> None:
    # sorted 0.6 (x2 = 1.2 -> 1), 0.7 (x1 = 0.7 -> running max 1)
    assert holm([0.7, 0.6]).tolist() == [1.0, 1.0]
    assert holm([0.3]).tolist() == [0.3]  # m = 1: unchanged
    assert holm([]).shape == (0,)
    # ties keep their order and get the same value: 0.02 x3 = 0.06, 0.02 x2 = 0.04 -> max 0.06, 0.5 x1 -> 0.5
    np.testing.assert_allclose(holm([0.5, 0.02, 0.02]), [0.5, 0.06, 0.06])


def test_holm_rejects_non_p_values() -> None:
    with pytest.raises(ValueError, match=r"outside \[0, 1\] or NaN: \[1.5\]"):
        holm([0.1, 1.5])
    with pytest.raises(ValueError, match="outside"):
        holm([np.nan])
    with pytest.raises(ValueError, match="1-D"):
        holm([[0.1]])


# --------------------------------------------------------------------------- compare_family


def _family(seed: int = 0, seeds: int = 3, clips: int = 80) -> dict[str, np.ndarray]:
    """Absolute errors (S, N) of a baseline and three methods: much better, no different, worse."""
    rng = np.random.default_rng(seed)
    hardness = rng.exponential(0.8, size=clips)  # (N,) shared by every model and seed
    def errors(shift: float) -> np.ndarray:
        return np.abs(hardness + shift + rng.normal(0, 0.1, size=(seeds, clips)))  # (S, N)
    base = errors(0.0)
    return {"none": base, "kd": np.maximum(base - 0.2, 0.0), "same": base.copy(),
            "worse": base + 0.05 + rng.normal(0, 0.02, size=(seeds, clips))}


def test_compare_family_order_estimates_and_verdicts() -> None:
    scores = _family()
    rows = compare_family(scores, "none", higher_is_better=False, metric="MAE", n_resamples=FAST)
    assert [r.method for r in rows] == ["kd", "same", "worse"]  # the mapping's order, baseline left out
    for r in rows:
        assert r.baseline == "none" and r.n_seeds == 3 and r.n_clips == 80 and r.family_size == 3
        assert r.estimate == pytest.approx(scores[r.method].mean() - scores["none"].mean())
        assert r.ci_low <= r.estimate <= r.ci_high
    kd, same, worse = rows
    assert kd.holds and kd.better and kd.estimate < 0
    assert same.estimate == 0.0 and same.p_value == 1.0 and not same.holds and not same.better
    assert worse.holds and not worse.better and worse.estimate > 0
    np.testing.assert_allclose([r.p_holm for r in rows], holm([r.p_value for r in rows]))


def test_compare_family_higher_is_better_flips_better_only() -> None:
    scores = {name: -s for name, s in _family().items()}  # e.g. AP: higher is better
    low = compare_family(_family(), "none", higher_is_better=False, n_resamples=FAST)
    high = compare_family(scores, "none", higher_is_better=True, n_resamples=FAST)
    for a, b in zip(low, high, strict=True):
        assert b.estimate == pytest.approx(-a.estimate) and b.p_value == a.p_value and b.holds == a.holds
        assert b.better == (b.estimate > 0)
    assert high[0].better and not high[2].better


def test_seeds_are_averaged_before_resampling() -> None:
    # every seed repeats the clip's difference exactly: the S * N cells are not independent,
    # the N clips are. Treating cells as items would narrow the interval by about sqrt(S).
    rng = np.random.default_rng(0)
    seeds, clips = 9, 40
    per_clip = rng.normal(0.1, 1.0, size=clips)  # (N,)
    baseline = rng.normal(size=(seeds, clips))
    method = baseline + per_clip  # (S, N): the same difference for every seed of a clip
    result = compare(method, baseline, higher_is_better=True, n_resamples=FAST)
    d = per_clip_differences(method, baseline)
    np.testing.assert_allclose(d, per_clip)
    assert (result.ci_low, result.ci_high) == bootstrap_ci(d, n_resamples=FAST)
    assert result.p_value == sign_flip_pvalue(d, n_resamples=FAST)
    cells_low, cells_high = bootstrap_ci((method - baseline).ravel(), n_resamples=FAST)
    ratio = (result.ci_high - result.ci_low) / (cells_high - cells_low)
    assert ratio == pytest.approx(3.0, rel=0.2)  # sqrt(S) = 3
    assert not result.holds  # with clips as the unit, mean 0.1 +- 0.3 does not hold


def test_compare_single_pair_is_not_adjusted() -> None:
    scores = _family()
    single = compare(scores["worse"], scores["none"], higher_is_better=False, method="worse", baseline="none",
                     n_resamples=FAST)
    assert single.family_size == 1 and single.p_holm == single.p_value
    in_family = compare_family(scores, "none", higher_is_better=False, n_resamples=FAST)[2]
    assert dataclasses.replace(in_family, p_holm=single.p_holm, holds=single.holds, family_size=1) == single
    with pytest.raises(ValueError, match="different names"):
        compare(scores["kd"], scores["none"], higher_is_better=False, method="x", baseline="x")


def test_compare_family_errors() -> None:
    scores = _family()
    with pytest.raises(ValueError, match=r"baseline 'base' is not among the scored models \['none', 'kd'"):
        compare_family(scores, "base", higher_is_better=False)
    with pytest.raises(ValueError, match="holds only the baseline"):
        compare_family({"none": scores["none"]}, "none", higher_is_better=False)
    with pytest.raises(ValueError, match=r"'kd' scores have shape \(2, 80\) but baseline 'none' has \(3, 80\)"):
        compare_family({**scores, "kd": scores["kd"][:2]}, "none", higher_is_better=False)
    bad = scores["kd"].copy()
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"kd: 1 of 240 scores are NaN"):
        compare_family({**scores, "kd": bad}, "none", higher_is_better=False)
    with pytest.raises(ValueError, match="alpha"):
        compare_family(scores, "none", higher_is_better=False, alpha=5)


def test_compare_family_warns_when_nothing_can_hold(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluation.stats"):
        compare_family(_family(), "none", higher_is_better=False, n_resamples=99)
    # 3 comparisons * 2 / 100 = 0.06 >= 0.05
    assert "smallest attainable Holm-adjusted p is 0.06 >= alpha = 0.05" in caplog.text


# --------------------------------------------------------------------------- sentences


def _comparison(**changes) -> Comparison:
    base = Comparison(method="kd", baseline="none", estimate=-0.031, ci_low=-0.052, ci_high=-0.010,
                      p_value=0.001, p_holm=0.004, n_clips=686, n_seeds=3, higher_is_better=False, holds=True,
                      better=True, metric="MAE", confidence=0.95, alpha=0.05, family_size=3)
    return dataclasses.replace(base, **changes)


def test_sentence_when_the_difference_holds() -> None:
    assert _comparison().sentence() == ("`kd` \u2212 `none`: MAE \u22120.031 (95 % CI \u22120.052 to \u22120.010; "
                                        "Holm-adjusted p = 0.004): lower than `none` (better), the difference holds.")
    ap = _comparison(metric="mAP", estimate=0.0123, ci_low=0.0101, ci_high=0.0145, p_holm=0.0002,
                     higher_is_better=True)
    # width 0.0044 -> 4 decimals; p below 0.001
    assert ap.sentence() == ("`kd` \u2212 `none`: mAP 0.0123 (95 % CI 0.0101 to 0.0145; Holm-adjusted p < 0.001): "
                             "higher than `none` (better), the difference holds.")


def test_sentence_when_it_does_not_hold_names_why() -> None:
    both = _comparison(estimate=-0.004, ci_low=-0.020, ci_high=0.012, p_holm=0.62, holds=False)
    assert both.sentence() == ("`kd` \u2212 `none`: MAE \u22120.004 (95 % CI \u22120.020 to 0.012; "
                               "Holm-adjusted p = 0.620): the difference does not hold "
                               "(the interval includes 0 and Holm-adjusted p \u2265 0.05).")
    only_p = _comparison(p_holm=0.07, holds=False)
    assert only_p.sentence().endswith("the difference does not hold (Holm-adjusted p \u2265 0.05).")
    single = _comparison(estimate=-0.004, ci_low=-0.020, ci_high=0.012, p_holm=0.03, holds=False, family_size=1)
    assert single.sentence().endswith("p = 0.030): the difference does not hold (the interval includes 0).")


def test_sentence_of_a_computed_comparison() -> None:
    kd = compare_family(_family(), "none", higher_is_better=False, metric="MAE", n_resamples=FAST)[0]
    assert kd.sentence().startswith("`kd` \u2212 `none`: MAE \u2212")
    assert kd.sentence().endswith("lower than `none` (better), the difference holds.")
