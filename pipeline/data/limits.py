"""Known limits of ``synthetic_sentiment``: the Bayes-optimal predictor of the label from any modality subset.

The generative process of `pipeline.data.synthetic` (see its docstring) has a 1-D latent, the sentiment
``s ~ U(-3, 3)``, and every observation is conditionally independent given ``s`` (text also through
the irony flag, summed out below). So the posterior over ``s`` given the observations ``o_S`` of a
modality subset ``S`` is computed exactly, up to a grid, as prior times likelihoods, and from it the
exact distribution of the label. Under absolute error the Bayes-optimal prediction is the posterior
median of the label (any median minimises E|Y - c|: Berger, Statistical Decision Theory and Bayesian
Analysis, 2nd ed. 1985, Sec. 4.4.2), and its expected absolute error is the lowest MAE
any model that sees ``S`` can reach on this process:

    p(s | o_S)       proportional to  p(s) * prod_{m in S} L_m(s),        s on a grid of G cells
    p(y | o_S)       = sum_s p(s | o_S) * p(y | s)                         y on the 1/A label grid
    f_S(o_S)         = min { y : P(Y <= y | o_S) >= 1/2 }                  (the lower median)
    MAE*_S           = E | y - f_S(o_S) |                                   (Monte Carlo over fresh draws)

Likelihoods, as functions of ``s`` (constants that do not depend on ``s`` dropped):

* text (the exact cue words ``w_1..w_n`` drawn; the number ``n`` and the filler do not depend on
  ``s``), irony summed out: ``L_T(s) = (1 - rho) prod_i P(w_i | s) + rho prod_i P(w_i | -s)``, with
  ``P(w | t) = exp(-(mu_w - t)^2 / (2 tau^2)) / sum_v exp(-(mu_v - t)^2 / (2 tau^2))``.
* video, audio (the rendered cue ``c = clip(round(s + N(0, sigma^2), 4), -3, 3)``): inside (-3, 3),
  the gaussian density ``phi((c - s) / sigma)``; at a boundary the clipped tail's mass,
  ``Phi((s - 3 + h) / sigma)`` at ``c = 3`` and ``Phi((-3 + h - s) / sigma)`` at ``c = -3``
  (``h = 5e-5``, half the rounding step: every value that rounds to the boundary is in the atom). An
  interior value stands for the rounding cell ``[c - h, c + h)``, whose mass is the density times
  ``2h`` up to a relative ``O(h^2 / sigma^2)``, about 1e-9 here: the likelihood is exact for what is
  rendered.
* label (``A`` annotators, ``r_j = clip(round(s + N(0, sigma_a^2)), -3, 3)``, ``y = mean_j r_j``): one
  rating's pmf is ``q_k(s) = Phi((k + 1/2 - s) / sigma_a) - Phi((k - 1/2 - s) / sigma_a)`` for
  ``k = -2..2`` and the open-ended tails at -3 and 3; the sum of ``A`` independent ratings has the
  ``A``-fold convolution of ``q`` as pmf, on ``-3A..3A``, so ``p(y = m / A | s)`` is exact.

The grid holds the midpoints of ``G`` equal cells of [-3, 3], where the uniform prior is flat;
``GRID_POINTS = 600`` (cell 0.01) keeps the quadrature error far below the Monte Carlo error: the
narrowest posteriors (all modalities together) have standard deviations of 0.25 and more (0.7
typically), and on the 20000 Monte Carlo draws of the default process every prediction equals the one
on a grid of 4800 cells.

The engine's pieces take plain arrays (a grid, prior weights, log-likelihoods, a label pmf on the
grid), so other processes are expressible: e.g. a gaussian prior with one gaussian cue and the label
``y = s`` (label values = the grid, an identity label pmf), whose Bayes MAE is known in closed form.
Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy.special import log_ndtr, logsumexp, ndtr

from pipeline.core.config import MODALITIES

# Every non-empty subset, largest first, members in MODALITIES order, joined with "+":
# video+audio+text, video+audio, video+text, audio+text, video, audio, text.
SUBSETS: tuple[str, ...] = tuple(
    "+".join(members) for size in range(len(MODALITIES), 0, -1) for members in itertools.combinations(MODALITIES, size)
)
SENTIMENT_RANGE = 3.0
RATINGS = np.arange(-3, 4)  # (7,) integer ratings of one annotator
CUE_DECIMALS = 4  # the rendered video/audio cues (and label.csv's values) are rounded to 4 decimals
GRID_POINTS = 600
CHUNK = 2048  # draws per block of (chunk, G) arrays in bayes_predictions
UNDERFLOW = 1e-200  # a product of scaled likelihoods below this is recomputed in log space


@dataclasses.dataclass(frozen=True)
class SentimentProcess:
    """Parameters of the synthetic_sentiment generative process (see pipeline.data.synthetic).

    Attributes:
        valences: mu_w of every lexicon entry, in [-3, 3] (the lexicon's order).
        tau: spread of the lexical cues around their centre t (P(w | t), see the module docstring).
        irony: probability that a clip is ironic (its cues are drawn around t = -s).
        cues: (min, max) number of cue words per clip, drawn uniformly, independent of s.
        video: std of the gaussian noise on the video cue (square colour).
        audio: std of the gaussian noise on the audio cue (pitch).
        annotator: std of each annotator's gaussian noise before rounding to an integer rating.
        annotators: number of annotators A; the label is the mean of their ratings.
    """

    valences: tuple[float, ...]
    tau: float
    irony: float
    cues: tuple[int, int]
    video: float
    audio: float
    annotator: float
    annotators: int

    def __post_init__(self) -> None:
        values = np.asarray(self.valences, dtype=float)
        if values.ndim != 1 or values.size < 2 or not np.all(np.abs(values) <= SENTIMENT_RANGE):
            raise ValueError(f"SentimentProcess.valences must hold >= 2 values in [-3, 3], got {self.valences!r}")
        for name in ("tau", "video", "audio"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"SentimentProcess.{name} must be a finite value > 0, got {value!r}")
        if not (math.isfinite(self.annotator) and self.annotator >= 0.0):
            raise ValueError(f"SentimentProcess.annotator must be a finite value >= 0, got {self.annotator!r}")
        if not 0.0 <= self.irony < 1.0:
            raise ValueError(f"SentimentProcess.irony must be in [0, 1), got {self.irony!r}")
        if len(self.cues) != 2 or not 1 <= self.cues[0] <= self.cues[1]:
            raise ValueError(f"SentimentProcess.cues must be [min, max] with 1 <= min <= max, got {self.cues!r}")
        if self.annotators < 1:
            raise ValueError(f"SentimentProcess.annotators must be >= 1, got {self.annotators!r}")


@dataclasses.dataclass(frozen=True)
class Draws:
    """N draws of the process: the latents and exactly what each modality shows.

    Attributes:
        sentiment: (N,) latent s.
        ironic: (N,) bool, the irony flag.
        centre: (N,) t, the centre of the lexical cues (s, or -s when ironic).
        words: (N, C) int lexicon indices of the cue words, in order; -1 pads past a clip's count
            (C = process.cues[1]).
        video: (N,) rendered video cue (clipped to [-3, 3], 4 decimals).
        audio: (N,) rendered audio cue (likewise).
        ratings: (N, A) int ratings in -3..3.
        label: (N,) mean rating (exact; label.csv rounds it to 4 decimals).
    """

    sentiment: np.ndarray
    ironic: np.ndarray
    centre: np.ndarray
    words: np.ndarray
    video: np.ndarray
    audio: np.ndarray
    ratings: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.sentiment)

    @classmethod
    def concatenate(cls, parts: Sequence[Draws]) -> Draws:
        """The draws of ``parts`` one after the other."""
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)})


# --------------------------------------------------------------------------- sampling


def word_log_probs(valences: np.ndarray, tau: float, centres: np.ndarray) -> np.ndarray:
    """log P(w | t) (W, K) for every lexicon entry w and centre t in ``centres`` (K,).

    ``P(w | t) = exp(-(mu_w - t)^2 / (2 tau^2)) / sum_v exp(-(mu_v - t)^2 / (2 tau^2))``.
    """
    logits = -((np.asarray(valences)[:, None] - np.asarray(centres)[None, :]) ** 2) / (2.0 * tau**2)  # (W, K)
    return logits - logsumexp(logits, axis=0, keepdims=True)  # (W, K)


def _rendered_cue(values: np.ndarray) -> np.ndarray:
    """What the renderer shows of a noisy cue: rounded to CUE_DECIMALS, then clipped to [-3, 3]."""
    return np.clip(np.round(values, CUE_DECIMALS), -SENTIMENT_RANGE, SENTIMENT_RANGE) + 0.0  # +0.0: no -0.0


def sample(process: SentimentProcess, n: int, rng: np.random.Generator) -> Draws:
    """Draw ``n`` clips' latents and observations from the process (the dataset and the Monte Carlo
    both draw through here, so the limits are those of the data).

    Per clip: ``s ~ U(-3, 3)``; ironic ~ Bernoulli(irony); ``t = -s`` if ironic else ``s``;
    ``n_cues ~ U{min..max}``; words iid ~ P(w | t); video = rendered(s + N(0, video^2)), audio likewise;
    ratings ``r_j = clip(round(s + N(0, annotator^2)), -3, 3)``, label = mean_j r_j. The order of the
    draws from ``rng`` is fixed, so a seeded generator gives the same draws.
    """
    low, high = process.cues
    valences = np.asarray(process.valences)
    sentiment = rng.uniform(-SENTIMENT_RANGE, SENTIMENT_RANGE, n)  # (N,)
    ironic = rng.random(n) < process.irony  # (N,)
    centre = np.where(ironic, -sentiment, sentiment)  # (N,)
    counts = rng.integers(low, high + 1, n)  # (N,)
    cdf = np.cumsum(np.exp(word_log_probs(valences, process.tau, centre)).T, axis=1)  # (N, W)
    uniforms = rng.random((n, high))  # (N, C)
    words = np.minimum((uniforms[:, :, None] >= cdf[:, None, :]).sum(-1), len(valences) - 1)  # (N, C) inverse cdf
    words = np.where(np.arange(high)[None, :] < counts[:, None], words, -1)  # (N, C)
    video = _rendered_cue(sentiment + process.video * rng.standard_normal(n))  # (N,)
    audio = _rendered_cue(sentiment + process.audio * rng.standard_normal(n))  # (N,)
    noisy = sentiment[:, None] + process.annotator * rng.standard_normal((n, process.annotators))  # (N, A)
    ratings = np.clip(np.round(noisy), -3, 3).astype(int)  # (N, A)
    return Draws(sentiment=sentiment, ironic=ironic, centre=centre, words=words, video=video, audio=audio,
                 ratings=ratings, label=ratings.mean(axis=1))


# --------------------------------------------------------------------------- likelihoods and the label


def sentiment_grid(points: int = GRID_POINTS) -> np.ndarray:
    """Midpoints (G,) of ``points`` equal cells of [-3, 3]: the uniform prior is flat on them."""
    if points < 2:
        raise ValueError(f"the sentiment grid needs >= 2 points, got {points}")
    step = 2.0 * SENTIMENT_RANGE / points
    return -SENTIMENT_RANGE + step * (np.arange(points) + 0.5)  # (G,)


def cue_loglik(cues: np.ndarray, grid: np.ndarray, sd: float, low: float = -SENTIMENT_RANGE,
               high: float = SENTIMENT_RANGE, half_step: float = 0.5 * 10.0**-CUE_DECIMALS) -> np.ndarray:
    """log L(s) (N, G) of rendered gaussian cues ``c = clip(round(s + N(0, sd^2)), low, high)``, up to a
    constant per cue.

    Interior cue: ``-(c - s)^2 / (2 sd^2)``. ``c == high``: ``log Phi((s - high + half_step) / sd)``, the
    mass of every value that rounds or clips to it; ``c == low``: ``log Phi((low + half_step - s) / sd)``.
    ``low = -inf, high = inf`` gives the plain gaussian likelihood.
    """
    cues = np.asarray(cues, dtype=float)[:, None]  # (N, 1)
    grid = np.asarray(grid, dtype=float)[None, :]  # (1, G)
    out = -0.5 * ((cues - grid) / sd) ** 2  # (N, G)
    at_high, at_low = cues[:, 0] >= high, cues[:, 0] <= low  # (N,)
    if at_high.any():
        out[at_high] = np.broadcast_to(log_ndtr((grid - high + half_step) / sd), (int(at_high.sum()), grid.size))
    if at_low.any():
        out[at_low] = np.broadcast_to(log_ndtr((low + half_step - grid) / sd), (int(at_low.sum()), grid.size))
    return out  # (N, G)


def text_loglik(words: np.ndarray, grid: np.ndarray, valences: Sequence[float], tau: float,
                irony: float) -> np.ndarray:
    """log L_T(s) (N, G) of the cue words ``words`` (N, C) (lexicon indices, -1 = none), irony summed out:

    ``L_T(s) = (1 - rho) prod_i P(w_i | s) + rho prod_i P(w_i | -s)``.
    """
    words = np.asarray(words)
    n_words = len(valences)
    counts = np.zeros((len(words), n_words))  # (N, W) bag of cue words
    rows, cols = np.nonzero(words >= 0)
    np.add.at(counts, (rows, words[rows, cols]), 1.0)
    plain = counts @ word_log_probs(np.asarray(valences), tau, grid)  # (N, G) sum_i log P(w_i | s)
    if irony == 0.0:
        return plain
    flipped = counts @ word_log_probs(np.asarray(valences), tau, -np.asarray(grid))  # (N, G) at t = -s
    return np.logaddexp(math.log1p(-irony) + plain, math.log(irony) + flipped)  # (N, G)


def rating_pmf(grid: np.ndarray, sd: float) -> np.ndarray:
    """P(r = k | s) (G, 7) of one rating ``r = clip(round(s + N(0, sd^2)), -3, 3)``, k = -3..3.

    ``q_k = Phi((k + 1/2 - s) / sd) - Phi((k - 1/2 - s) / sd)``, the outer cells open-ended;
    ``sd = 0`` gives the rounding of ``s`` itself.
    """
    grid = np.asarray(grid, dtype=float)[:, None]  # (G, 1)
    edges = np.concatenate([[-np.inf], RATINGS[:-1] + 0.5, [np.inf]])[None, :]  # (1, 8)
    if sd == 0.0:
        cdf = (grid < edges).astype(float)  # (G, 8) P(s < edge), a step
    else:
        cdf = ndtr((edges - grid) / sd)  # (G, 8) P(s + noise < edge)
    return np.diff(cdf, axis=1)  # (G, 7)


def label_pmf(grid: np.ndarray, annotators: int, sd: float) -> tuple[np.ndarray, np.ndarray]:
    """The label's exact distribution given s: values (L,) = (-3A..3A) / A and pmf (G, L).

    The sum of ``A`` iid ratings has the A-fold convolution of `rating_pmf` as pmf.
    """
    single = rating_pmf(grid, sd)  # (G, 7)
    total = single
    for _ in range(annotators - 1):
        wider = np.zeros((len(grid), total.shape[1] + len(RATINGS) - 1))  # (G, L')
        for k in range(len(RATINGS)):
            wider[:, k : k + total.shape[1]] += total * single[:, k : k + 1]
        total = wider
    values = np.arange(-3 * annotators, 3 * annotators + 1) / annotators  # (L,)
    return values, total  # (L,), (G, L)


# --------------------------------------------------------------------------- posterior and prediction


def posterior(prior: np.ndarray, loglik: np.ndarray) -> np.ndarray:
    """p(s | o) (N, G) on the grid: ``prior`` (G,) non-negative weights times ``exp(loglik)`` (N, G),
    normalised per row (computed in log space)."""
    with np.errstate(divide="ignore"):
        log_post = np.log(np.asarray(prior, dtype=float))[None, :] + loglik  # (N, G)
    log_post = log_post - log_post.max(axis=1, keepdims=True)
    weights = np.exp(log_post)  # (N, G)
    return weights / weights.sum(axis=1, keepdims=True)  # (N, G)


def posterior_median(post: np.ndarray, label_values: np.ndarray, pmf: np.ndarray) -> np.ndarray:
    """The Bayes prediction under absolute error (N,): the lower median of ``p(y | o) = post @ pmf``.

    Args:
        post: (N, G) posterior over the grid (rows sum to 1).
        label_values: (L,) sorted label values.
        pmf: (G, L) p(y | s) on the grid (`label_pmf`).

    Returns the smallest ``y`` with ``P(Y <= y | o) >= 1/2`` for every row.
    """
    cdf = np.cumsum(post @ pmf, axis=1)  # (N, L)
    index = (cdf < 0.5 * cdf[:, -1:]).sum(axis=1)  # (N,) first value whose cdf reaches half the mass
    return np.asarray(label_values)[index]  # (N,)


def bayes_predictions(process: SentimentProcess, draws: Draws, grid_points: int = GRID_POINTS) -> dict[str, np.ndarray]:
    """f_S(o_S) (N,) for every subset S in SUBSETS: the posterior median of the label given the
    observations of S in ``draws`` (text: the cue words; video/audio: the rendered cues).

    Each modality's likelihood is exponentiated once, scaled to a row maximum of 1, and a subset's
    posterior is their product; rows where that product underflows (modalities in extreme conflict)
    are recomputed in log space by `posterior`.
    """
    grid = sentiment_grid(grid_points)  # (G,)
    prior = np.ones_like(grid)  # (G,) U(-3, 3) on equal cells
    values, pmf = label_pmf(grid, process.annotators, process.annotator)  # (L,), (G, L)
    predictions = {key: np.empty(len(draws)) for key in SUBSETS}
    for start in range(0, len(draws), CHUNK):
        rows = slice(start, start + CHUNK)
        loglik = {
            "video": cue_loglik(draws.video[rows], grid, process.video),  # (n, G)
            "audio": cue_loglik(draws.audio[rows], grid, process.audio),  # (n, G)
            "text": text_loglik(draws.words[rows], grid, process.valences, process.tau, process.irony),  # (n, G)
        }
        scaled = {m: np.exp(ll - ll.max(axis=1, keepdims=True)) for m, ll in loglik.items()}  # (n, G) each
        for key in SUBSETS:
            members = key.split("+")
            weights = functools.reduce(np.multiply, [scaled[m] for m in members], prior)  # (n, G)
            mass = weights.sum(axis=1, keepdims=True)  # (n, 1)
            lost = mass[:, 0] < UNDERFLOW
            post = weights / np.where(lost[:, None], 1.0, mass)  # (n, G)
            if lost.any():
                post[lost] = posterior(prior, sum(loglik[m][lost] for m in members))
            predictions[key][rows] = posterior_median(post, values, pmf)
    return predictions


def prior_prediction(process: SentimentProcess, grid_points: int = GRID_POINTS) -> float:
    """The best constant under absolute error: the median of the label's marginal distribution."""
    grid = sentiment_grid(grid_points)
    values, pmf = label_pmf(grid, process.annotators, process.annotator)
    return float(posterior_median(np.full((1, grid.size), 1.0 / grid.size), values, pmf)[0])


def mae_with_se(errors: np.ndarray) -> dict[str, float]:
    """Mean of absolute errors (N,) and its Monte Carlo standard error ``std / sqrt(N)``."""
    errors = np.asarray(errors, dtype=float)
    return {"mae": float(errors.mean()), "se": float(errors.std(ddof=1) / math.sqrt(errors.size))}


def expected_mae(process: SentimentProcess, draws: Draws,
                 grid_points: int = GRID_POINTS) -> dict[str, dict[str, float]]:
    """Monte Carlo estimate of MAE*_S = E|y - f_S(o_S)| for every S in SUBSETS, with its standard error,
    over ``draws`` (fresh draws of `sample`, independent of any dataset)."""
    predictions = bayes_predictions(process, draws, grid_points)
    return {key: mae_with_se(np.abs(draws.label - predictions[key])) for key in SUBSETS}
