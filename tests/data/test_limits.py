"""Tests of the known-limits engine (pipeline.data.limits): no media, numpy only."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ndtr

from pipeline.core.config import MODALITIES
from pipeline.data.limits import (
    SUBSETS,
    SentimentProcess,
    bayes_predictions,
    cue_loglik,
    expected_mae,
    label_pmf,
    mae_with_se,
    posterior,
    posterior_median,
    prior_prediction,
    sample,
    sentiment_grid,
    text_loglik,
    word_log_probs,
)
from pipeline.data.synthetic import DEFAULT_PROCESS, LEXICON_VALENCES, sentiment_process


@pytest.fixture(scope="module")
def draws():
    return sample(DEFAULT_PROCESS, 4000, np.random.default_rng(0))


def test_subsets_in_project_order() -> None:
    assert MODALITIES == ("video", "audio", "text")
    assert SUBSETS == ("video+audio+text", "video+audio", "video+text", "audio+text", "video", "audio", "text")


def test_sample_is_seeded_and_well_formed(draws) -> None:
    again = sample(DEFAULT_PROCESS, 4000, np.random.default_rng(0))
    for name in ("sentiment", "ironic", "words", "video", "audio", "ratings", "label"):
        assert np.array_equal(getattr(draws, name), getattr(again, name)), name
    low, high = DEFAULT_PROCESS.cues
    counts = (draws.words >= 0).sum(axis=1)  # (N,)
    assert counts.min() == low and counts.max() == high
    assert np.array_equal(draws.words >= 0, np.arange(high)[None, :] < counts[:, None])  # padding only at the end
    assert draws.words.max() < len(LEXICON_VALENCES)
    for cue in (draws.video, draws.audio):
        assert np.abs(cue).max() == 3.0 and np.array_equal(cue, np.round(cue, 4))
    assert abs(draws.ironic.mean() - DEFAULT_PROCESS.irony) < 4 * math.sqrt(0.15 * 0.85 / len(draws))


def test_label_is_the_annotators_mean_on_the_grid(draws) -> None:
    annotators = DEFAULT_PROCESS.annotators
    assert draws.ratings.shape == (len(draws), annotators)
    assert draws.ratings.min() >= -3 and draws.ratings.max() <= 3
    assert np.allclose(draws.label, draws.ratings.mean(axis=1))
    assert np.allclose(draws.label * annotators, np.round(draws.label * annotators))
    assert np.abs(draws.label - draws.sentiment).mean() > 0.1  # annotators disagree


def test_irony_flips_the_centre_of_the_text_cues(draws) -> None:
    assert np.array_equal(draws.centre, np.where(draws.ironic, -draws.sentiment, draws.sentiment))
    valences = np.asarray(LEXICON_VALENCES)
    mean_valence = np.array([valences[w[w >= 0]].mean() for w in draws.words])  # (N,)
    plain, ironic = ~draws.ironic, draws.ironic
    assert np.corrcoef(mean_valence[plain], draws.sentiment[plain])[0, 1] > 0.8
    assert np.corrcoef(mean_valence[ironic], draws.sentiment[ironic])[0, 1] < -0.8
    assert np.abs(mean_valence - draws.centre).mean() < 0.8


def test_label_pmf_is_the_annotator_convolution() -> None:
    grid = np.array([-2.7, 0.37, 1.5, 2.95])
    values, pmf = label_pmf(grid, annotators=3, sd=0.8)  # (19,), (4, 19)
    assert np.allclose(values * 3, np.arange(-9, 10)) and np.allclose(pmf.sum(axis=1), 1.0)
    rng = np.random.default_rng(1)
    ratings = np.clip(np.round(0.37 + 0.8 * rng.standard_normal((200_000, 3))), -3, 3)  # (n, 3) at s = 0.37
    sums = ratings.sum(axis=1).astype(int) + 9  # (n,) index into values
    assert np.abs(np.bincount(sums, minlength=19) / len(sums) - pmf[1]).max() < 0.005
    _, exact = label_pmf(np.array([1.2, -0.7]), annotators=5, sd=0.0)  # no disagreement: round(s)
    assert exact[0, 20] == 1.0 and exact[1, 10] == 1.0  # labels 1.0 and -1.0 (index 15 + 5 * label)


def test_cue_loglik_interior_and_clipped_boundary() -> None:
    grid = sentiment_grid(600)
    loglik = cue_loglik(np.array([0.5, 3.0, -3.0]), grid, sd=2.0)  # (3, G)
    assert np.allclose(loglik[0], -0.5 * ((0.5 - grid) / 2.0) ** 2)
    assert np.allclose(np.exp(loglik[1]), ndtr((grid - 3.0 + 5e-5) / 2.0))  # P(value rounds/clips to 3 | s)
    assert np.allclose(np.exp(loglik[2]), ndtr((-3.0 + 5e-5 - grid) / 2.0))
    # the atom's probability matches the sampler's frequency at s = 2.0
    process = sentiment_process(video=2.0)
    rng = np.random.default_rng(2)
    draws = sample(process, 40_000, rng)
    near = np.abs(draws.sentiment - 2.0) < 0.1
    assert abs((draws.video[near] == 3.0).mean() - ndtr(-0.5)) < 0.03


def test_text_loglik_sums_irony_out() -> None:
    grid = np.array([-2.0, -0.5, 0.0, 1.0, 2.5])
    words = np.array([[3, 50, 50, -1], [27, -1, -1, -1]])  # (2, C): two cue lists, -1 = none
    tau, irony = 1.0, 0.2
    table = word_log_probs(np.asarray(LEXICON_VALENCES), tau, grid)  # (W, G)
    flipped = word_log_probs(np.asarray(LEXICON_VALENCES), tau, -grid)  # (W, G)
    for row, cues in enumerate(words):
        cues = cues[cues >= 0]
        expected = np.log((1 - irony) * np.exp(table[cues].sum(0)) + irony * np.exp(flipped[cues].sum(0)))
        assert np.allclose(text_loglik(words, grid, LEXICON_VALENCES, tau, irony)[row], expected)
        assert np.allclose(text_loglik(words, grid, LEXICON_VALENCES, tau, 0.0)[row], table[cues].sum(0))
    assert np.allclose(np.exp(word_log_probs(np.asarray(LEXICON_VALENCES), tau, grid)).sum(0), 1.0)


def test_posterior_median_by_hand() -> None:
    """s in {-1, 0, 1}, prior (.2, .5, .3), likelihood (.5, .2, .6): posterior (10, 10, 18) / 38. Label in
    {0, 1, 2} with p(y | s) rows (1, 0, 0), (.5, .5, 0), (0, .5, .5): p(y | o) = (15, 14, 9) / 38, cdf
    (15, 29, 38) / 38, so the median is 1 (the mode is 0, the label at the posterior mode 1 or 2)."""
    post = posterior(np.array([0.2, 0.5, 0.3]), np.log(np.array([[0.5, 0.2, 0.6]])))
    assert np.allclose(post, np.array([[10, 10, 18]]) / 38)
    pmf = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    assert posterior_median(post, np.array([0.0, 1.0, 2.0]), pmf).tolist() == [1.0]
    assert posterior_median(np.array([[0.0, 0.0, 1.0]]), np.array([0.0, 1.0, 2.0]), pmf).tolist() == [1.0]  # lower
    assert posterior_median(np.array([[0.1, 0.0, 0.9]]), np.array([0.0, 1.0, 2.0]), pmf).tolist() == [1.0]


def test_monte_carlo_limit_matches_the_closed_form() -> None:
    """Prior N(0, 1), one cue x = s + N(0, sigma^2), label y = s: the posterior is N(m, v) with
    v = 1 / (1 + 1/sigma^2), m = v x / sigma^2, and the Bayes MAE is E|s - m| = sqrt(v) sqrt(2/pi)."""
    sigma, n = 0.8, 3000
    grid = np.linspace(-6.0, 6.0, 601)  # (G,) step 0.02
    rng = np.random.default_rng(3)
    s = rng.standard_normal(n)  # (N,)
    x = s + sigma * rng.standard_normal(n)  # (N,)
    prior = np.exp(-0.5 * grid**2)  # (G,) N(0, 1) density, unnormalised
    post = posterior(prior, cue_loglik(x, grid, sigma, low=-np.inf, high=np.inf))  # (N, G)
    prediction = posterior_median(post, grid, np.eye(grid.size))  # label = s on the grid
    v = 1.0 / (1.0 + 1.0 / sigma**2)
    assert np.abs(prediction - v * x / sigma**2).max() <= 0.02  # the median of N(m, v) is m, up to a grid step
    estimate = mae_with_se(np.abs(s - prediction))
    closed = math.sqrt(v) * math.sqrt(2.0 / math.pi)
    assert abs(estimate["mae"] - closed) < 3 * estimate["se"] + 0.01, (estimate, closed)


def test_limits_ordering_in_expectation(draws) -> None:
    """More modalities never hurt the Bayes predictor: all <= every pair <= each of its singles, within
    Monte Carlo error of the paired differences; text is the strongest single modality (the MOSI regime)."""
    predictions = bayes_predictions(DEFAULT_PROCESS, draws)
    errors = {key: np.abs(draws.label - value) for key, value in predictions.items()}
    for larger in SUBSETS:
        for smaller in SUBSETS:
            if larger != smaller and set(smaller.split("+")) < set(larger.split("+")):
                difference = errors[larger] - errors[smaller]  # (N,) paired
                se = difference.std(ddof=1) / math.sqrt(len(difference))
                assert difference.mean() <= 3 * se, (larger, smaller, difference.mean(), se)
    mae = {key: value.mean() for key, value in errors.items()}
    constant = np.abs(draws.label - prior_prediction(DEFAULT_PROCESS)).mean()
    assert mae["video+audio+text"] < mae["text"] - 0.1 < mae["video+audio"] - 0.1 < mae["video"] < constant - 0.2
    assert mae["audio"] > mae["text"] + 0.2


def test_expected_mae_reports_every_subset(draws) -> None:
    result = expected_mae(DEFAULT_PROCESS, draws)
    assert list(result) == list(SUBSETS)
    for value in result.values():
        assert set(value) == {"mae", "se"} and 0 < value["se"] < 0.05 and 0.2 < value["mae"] < 1.5


@pytest.mark.parametrize(("field", "value", "message"), [("tau", 0.0, "tau"), ("irony", 1.0, "irony"),
                                                         ("cues", (3, 2), "cues"), ("annotators", 0, "annotators"),
                                                         ("annotator", -1.0, "annotator"), ("video", 0.0, "video")])
def test_process_rejects_bad_values(field: str, value: object, message: str) -> None:
    args = {"valences": (-1.0, 1.0), "tau": 1.0, "irony": 0.1, "cues": (2, 5), "video": 1.0, "audio": 1.0,
            "annotator": 0.5, "annotators": 5, field: value}
    with pytest.raises(ValueError, match=f"SentimentProcess.{message}"):
        SentimentProcess(**args)  # type: ignore[arg-type]
