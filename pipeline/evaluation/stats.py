"""Statistics that say what holds: paired comparisons of models on the same test clips.

The report compares each distillation method with its family's baseline student ``none`` (and a
few controls, e.g. ``videoadviser`` with ``self``) on the same test clips, over several seeds
(DESIGN.md "Trustworthy comparison"). A model's input here is its per-clip score matrix
(S seeds, N test clips), for instance each clip's absolute error |pred - y| (the MAE is the
matrix's mean) or, for retrieval, each query clip's average precision (the mAP is its mean).

For a method A and a baseline B scored on the same clips with the same seeds:

    d_n      = 1/S sum_s (A_sn - B_sn)                    paired difference of clip n, (N,)
    estimate = 1/N sum_n d_n = mean(A) - mean(B)

**Seeds are averaged before resampling.** The population the conclusion is about is that of
test clips; seeds are repeated measurements of the same clip, and correlated ones (a clip that
is hard for one seed is hard for the others). Resampling clips, each with all its seeds
("resampling clips, pooled over seeds"), gives the same bootstrap distribution of the pooled
mean as resampling the d_n; treating the S * N (seed, clip) cells as independent would shrink
the interval by up to sqrt(S) without any new clip to justify it.

* ``bootstrap_ci``: BCa bootstrap interval of the mean of d_n over clips (Efron & Tibshirani,
  "An Introduction to the Bootstrap", 1993, ch. 14), ``scipy.stats.bootstrap``.
* ``sign_flip_pvalue``: two-sided paired permutation (sign-flip) test of "mean d = 0"
  (Fisher 1935; as recommended for paired comparisons over test items by Dror, Baumer, Shlomov
  and Reichart, "The Hitchhiker's Guide to Testing Statistical Significance in Natural Language
  Processing", ACL 2018), ``scipy.stats.permutation_test``.
* ``holm``: Holm's step-down adjustment across a family of comparisons (Holm, "A Simple
  Sequentially Rejective Multiple Test Procedure", Scand. J. Statist. 6, 1979).
* ``compare_family`` / ``compare``: all of the above as ``Comparison`` records, each with a
  one-sentence verdict (``Comparison.sentence``).

**When a difference holds.** ``holds`` = (Holm-adjusted p < alpha) and (the interval excludes 0).
The two can disagree: the interval is per comparison (not adjusted for multiplicity) while the
test is Holm-adjusted across the family, and a bootstrap interval and a permutation test are
different procedures that can land on either side of the boundary in close cases. A claim
holds only when both agree, and ``sentence`` names the criterion (or both) that failed.

numpy and scipy only (no torch): the report stage imports this without a model in sight.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

log = logging.getLogger(__name__)

_BATCH_ELEMENTS = 2**21  # resampled values held at once (about 16 MB of float64), whatever N is


def _scores(x: ArrayLike, name: str) -> np.ndarray:
    """A model's per-clip scores as float64 (S, N), finite; errors name the model."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name}: expected per-clip scores of shape (S seeds, N clips) with S, N >= 1, got "
                         f"shape {a.shape} (a single seed is shape (1, N))")
    bad = ~np.isfinite(a)
    if bad.any():
        s, n = np.argwhere(bad)[0]
        raise ValueError(f"{name}: {int(bad.sum())} of {a.size} scores are NaN or infinite; first at seed row "
                         f"{s}, clip column {n}: {a[s, n]!r}")
    return a


def _diffs(x: ArrayLike) -> np.ndarray:
    """Per-clip differences as float64 (N,), N >= 2, finite."""
    d = np.asarray(x, dtype=np.float64)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"expected per-clip differences of shape (N,) with N >= 2 clips, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError(f"{int((~np.isfinite(d)).sum())} of {d.size} per-clip differences are NaN or infinite")
    return d


def _batch(n_clips: int) -> int:
    return max(1, _BATCH_ELEMENTS // n_clips)


def per_clip_differences(method: ArrayLike, baseline: ArrayLike) -> np.ndarray:
    """Paired difference of each clip, averaged over seeds: d_n = 1/S sum_s (A_sn - B_sn).

    method, baseline (S, N): per-clip scores of the same N test clips (same order) for the same
    S seeds (row s of both from seed s). Returns (N,) float64. Raises ValueError when a matrix is
    not 2-D, the shapes differ, or a score is NaN/infinite.
    """
    a, b = _scores(method, "method"), _scores(baseline, "baseline")
    if a.shape != b.shape:
        raise ValueError(f"method scores {a.shape} and baseline scores {b.shape} differ in shape: a paired "
                         f"comparison needs the same seeds (rows) and the same test clips (columns)")
    return (a - b).mean(axis=0)  # (N,)


def bootstrap_ci(diffs: ArrayLike, confidence: float = 0.95, n_resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the mean per-clip difference, resampling clips with replacement.

    diffs (N,), N >= 2: ``per_clip_differences`` (each clip brings all its seeds). The interval is
    the bias-corrected and accelerated (BCa) percentile interval of Efron & Tibshirani (1993,
    ch. 14.3; ``scipy.stats.bootstrap(method="BCa")``): with theta*_b the means of n_resamples
    resamples, z0 = Phi^-1(share of theta*_b below the observed mean) (bias) and a the
    acceleration from the jackknife means theta_(i) (a = sum U_i^3 / (6 (sum U_i^2)^1.5),
    U_i = (N - 1)(mean theta_(.) - theta_(i))),

        [low, high] = quantiles of theta*_b at Phi(z0 + (z0 + z_q) / (1 - a (z0 + z_q))),
                      q = (1 - confidence) / 2 and 1 - q

    BCa rather than the plain percentile interval: it is second-order accurate and corrects
    for the skew of per-clip error differences (absolute errors are skewed), at the cost of N
    jackknife means, which are cheap for a mean. All-equal differences d return (d, d) (the
    bootstrap distribution is a point; BCa's acceleration would be 0/0). Seeded: the same
    (diffs, seed) give the same interval.
    """
    d = _diffs(diffs)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if np.ptp(d) == 0.0:
        mean = float(d.mean())
        return mean, mean
    result = stats.bootstrap((d,), np.mean, n_resamples=n_resamples, batch=_batch(d.size), vectorized=True,
                             confidence_level=confidence, method="BCa", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def sign_flip_pvalue(diffs: ArrayLike, n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired permutation (sign-flip) test of "mean per-clip difference = 0".

    Under the null the two models are exchangeable on every clip, so each d_n is as likely to
    be -d_n: the null distribution of the mean is that of 1/N sum_n e_n d_n over random signs
    e_n = +-1 (Fisher 1935; the approximate randomisation test over test items of Dror et al.,
    ACL 2018). ``scipy.stats.permutation_test(permutation_type="samples")`` on the one sample
    d flips the signs; the two-sided p = min(1, 2 min(P(T* <= T), P(T* >= T))).

    Exact when 2^N <= n_resamples (every sign pattern is enumerated: N <= 13 clips for 10 000);
    otherwise Monte Carlo over n_resamples random patterns with p = (count + 1) / (n_resamples + 1)
    per side, so the smallest p is 2 / (n_resamples + 1) (2e-4 for 10 000) and the standard
    error of p is about sqrt(p (1 - p) / n_resamples) (0.002 at p = 0.05). diffs (N,), N >= 2;
    all-zero differences give p = 1. Seeded.
    """
    d = _diffs(diffs)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    result = stats.permutation_test((d,), np.mean, permutation_type="samples", vectorized=True,
                                    n_resamples=n_resamples, batch=_batch(d.size), alternative="two-sided",
                                    rng=np.random.default_rng(seed))
    return float(result.pvalue)


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order.

    With p_(1) <= ... <= p_(m) the sorted p-values,

        p~_(i) = min(1, max_{j <= i} (m - j + 1) p_(j))

    and hypothesis (i) is rejected at level alpha when p~_(i) < alpha: the family-wise error rate
    stays <= alpha under any dependence between the tests, and the procedure is uniformly more
    powerful than Bonferroni. pvalues (m,) in [0, 1]; returns (m,) float64 (empty for m = 0).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"holm expects a 1-D array of p-values, got shape {p.shape}")
    outside = ~((p >= 0.0) & (p <= 1.0))  # also catches NaN
    if outside.any():
        raise ValueError(f"holm: {int(outside.sum())} p-value(s) outside [0, 1] or NaN: {p[outside].tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")  # (m,) ascending
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])  # (m,) running max of (m - i + 1) p_(i)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One method against a baseline on the same clips and seeds (see the module docstring).

    estimate = mean(method) - mean(baseline) of the score; [ci_low, ci_high] its bootstrap
    interval at `confidence` (per comparison); p_value the sign-flip test's, p_holm adjusted
    across the `family_size` comparisons made together (= p_value for a single comparison);
    holds = p_holm < alpha and the interval excludes 0; better = the estimate points in the
    direction of improvement (estimate < 0 when lower is better, > 0 when higher is better),
    whether or not it holds.
    """

    method: str
    baseline: str
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    n_clips: int
    n_seeds: int
    higher_is_better: bool
    holds: bool
    better: bool
    metric: str  # what the estimate is a difference of, e.g. "MAE" or "mAP"
    confidence: float
    alpha: float
    family_size: int

    def sentence(self) -> str:
        """One plain English sentence, e.g. "`kd` − `none`: MAE −0.031 (95 % CI −0.052 to −0.010; Holm-adjusted
        p = 0.004): lower than `none` (better), the difference holds." """
        decimals = _decimals(self.ci_high - self.ci_low)
        p_name = "Holm-adjusted p" if self.family_size > 1 else "p"
        p_text = "< 0.001" if self.p_holm < 0.001 else f"= {self.p_holm:.3f}"
        head = (f"`{self.method}` − `{self.baseline}`: {self.metric} {_signed(self.estimate, decimals)} "
                f"({self.confidence * 100:g} % CI "
                f"{_signed(self.ci_low, decimals)} to {_signed(self.ci_high, decimals)}; {p_name} {p_text})")
        if self.holds:
            direction = "lower" if self.estimate < 0 else "higher"
            return (f"{head}: {direction} than `{self.baseline}` ({'better' if self.better else 'worse'}), "
                    f"the difference holds.")
        reasons = []
        if self.ci_low <= 0.0 <= self.ci_high:
            reasons.append("the interval includes 0")
        if self.p_holm >= self.alpha:
            reasons.append(f"{p_name} \u2265 {self.alpha:g}")
        return f"{head}: the difference does not hold ({' and '.join(reasons)})."


def _decimals(width: float) -> int:
    """Decimals that show the interval's width to two significant digits, at least 3."""
    if width <= 0.0:
        return 3
    return min(12, max(3, 1 - math.floor(math.log10(width))))


def _signed(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}".replace("-", "\u2212")  # a typographic minus sign


def compare_family(scores: Mapping[str, ArrayLike], baseline: str, higher_is_better: bool, *,
                   metric: str = "score", confidence: float = 0.95, alpha: float = 0.05,
                   n_resamples: int = 10_000, seed: int = 0) -> list[Comparison]:
    """Every model of a family against its baseline, with Holm's correction across the family.

    scores: model name -> per-clip scores (S, N), all of the same shape (same seeds, same clips,
    same order); baseline: the name of the family's baseline in `scores`; higher_is_better: True
    for scores where higher is an improvement (AP), False for errors (absolute error). Returns one
    ``Comparison`` per other model, in the mapping's order: estimate, BCa bootstrap interval
    (``bootstrap_ci``), sign-flip p (``sign_flip_pvalue``), Holm-adjusted p over the family's
    m = len(scores) - 1 comparisons (``holm``), holds and better. Every comparison uses the same
    `seed`, so each is reproducible on its own. Logs a warning when n_resamples is too small for
    any comparison to hold (Monte Carlo floor 2 / (n_resamples + 1) times m >= alpha).
    """
    if baseline not in scores:
        raise ValueError(f"baseline {baseline!r} is not among the scored models {list(scores)}")
    methods = [name for name in scores if name != baseline]
    if not methods:
        raise ValueError(f"nothing to compare: {list(scores)} holds only the baseline {baseline!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    base = _scores(scores[baseline], baseline)
    for name in methods:
        shape = _scores(scores[name], name).shape
        if shape != base.shape:
            raise ValueError(f"{name!r} scores have shape {shape} but baseline {baseline!r} has {base.shape}: a "
                             f"paired comparison needs the same seeds (rows) and the same test clips (columns)")
    n_seeds, n_clips = base.shape
    if 2**n_clips > n_resamples and len(methods) * 2 / (n_resamples + 1) >= alpha:
        log.warning("n_resamples = %d is too small: with %d comparisons the smallest attainable Holm-adjusted p "
                    "is %.3g >= alpha = %g, so no difference can hold", n_resamples, len(methods),
                    len(methods) * 2 / (n_resamples + 1), alpha)
    rows = []
    for name in methods:
        d = per_clip_differences(scores[name], base)  # (N,)
        low, high = bootstrap_ci(d, confidence, n_resamples, seed)
        rows.append((name, float(d.mean()), low, high, sign_flip_pvalue(d, n_resamples, seed)))
    adjusted = holm([row[4] for row in rows])
    out = []
    for (name, estimate, low, high, p), p_holm in zip(rows, adjusted, strict=True):
        out.append(Comparison(
            method=name, baseline=baseline, estimate=estimate, ci_low=low, ci_high=high, p_value=p,
            p_holm=float(p_holm), n_clips=n_clips, n_seeds=n_seeds, higher_is_better=higher_is_better,
            holds=bool(p_holm < alpha and (low > 0.0 or high < 0.0)),
            better=estimate > 0.0 if higher_is_better else estimate < 0.0,
            metric=metric, confidence=confidence, alpha=alpha, family_size=len(methods)))
    return out


def compare(method_scores: ArrayLike, baseline_scores: ArrayLike, higher_is_better: bool, *,
            method: str = "method", baseline: str = "baseline", metric: str = "score",
            confidence: float = 0.95, alpha: float = 0.05, n_resamples: int = 10_000,
            seed: int = 0) -> Comparison:
    """A single paired comparison (no multiplicity correction: p_holm = p_value), e.g. a control
    such as `videoadviser` against `self`, or a student against the teacher without video.

    method_scores, baseline_scores (S, N) as in ``compare_family``; the names only label the result.
    """
    if method == baseline:
        raise ValueError(f"method and baseline need different names, both are {method!r}")
    return compare_family({baseline: baseline_scores, method: method_scores}, baseline, higher_is_better,
                          metric=metric, confidence=confidence, alpha=alpha, n_resamples=n_resamples,
                          seed=seed)[0]
