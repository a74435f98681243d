"""Test metrics of each task: sentiment regression (MMSA conventions) and audio-visual retrieval (mAP).

Three metric sets, chosen per dataset by ``DatasetSpec.metric_set`` through :data:`METRIC_SETS`:
``mosi_mosei`` (:func:`sentiment_metrics`, :data:`METRIC_NAMES`; labels in [-3, 3]),
``sims`` (:func:`sims_metrics`, :data:`SIMS_METRIC_NAMES`; CH-SIMS, labels in [-1, 1]) and
``retrieval`` (``RETRIEVAL_METRIC_NAMES``; VEGAS-like audio-visual retrieval, defined in
``pipeline/tasks/retrieval.py``). Each :class:`MetricSet` also names its headline metric (``primary``,
with its direction ``higher_is_better``), the validation curve students log (``curve``) and how
one seed's predictions file is scored (``from_csv``), so that no other module hard-codes MAE:

=============  ============  ================  ============  ======================================
metric set     primary       higher_is_better  curve         predictions CSV (one seed)
=============  ============  ================  ============  ======================================
``mosi_mosei`` ``mae``       False             ``valid/mae`` per clip: id, label, pred
``sims``       ``mae``       False             ``valid/mae`` per clip: id, label, pred
``retrieval``  ``map_mean``  True              ``valid/map`` per query: direction, id, label, ap
=============  ============  ================  ============  ======================================

MOSI / MOSEI (``mosi_mosei``)
-----------------------------

Source: thuiar/MMSA, ``src/MMSA/utils/metricsTop.py``, ``MetricsTop.__eval_mosei_regression``
(``__eval_mosi_regression`` simply calls it), which is the de-facto standard for CMU-MOSI
(Zadeh et al., 2016, "MOSI: Multimodal Corpus of Sentiment Intensity and Subjectivity
Analysis in Online Opinion Videos") and CMU-MOSEI results. Labels are sentiment intensities
in [-3, 3] (averaged annotator scores, so not necessarily integers).

Notation: ``pred`` and ``y`` are 1-D float arrays of length N; ``clip(x, a, b)`` is
``np.clip``; ``round`` is ``np.round`` (round half to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2,
-0.5 -> -0, -2.5 -> -2); ``1[.]`` is the indicator; ``mean`` is over clips.

Metrics (keys of :func:`sentiment_metrics`, in :data:`METRIC_NAMES` order):

``mae``
    ``mean(|pred - y|)``, on the raw, *unclipped* values (as MMSA).
``corr``
    Pearson correlation ``cov(pred, y) / (std(pred) * std(y))`` (MMSA: ``np.corrcoef``).
    Undefined when ``pred`` or ``y`` is constant: then ``nan`` and a logged warning.
``acc7``
    7-class accuracy ``mean(1[round(clip(pred, -3, 3)) == round(clip(y, -3, 3))])``.
``acc5``
    5-class accuracy ``mean(1[round(clip(pred, -2, 2)) == round(clip(y, -2, 2))])``;
    e.g. a prediction of 5.0 counts as 3 for ``acc7`` and as 2 for ``acc5``.
``acc2_has0``
    Binary accuracy over *all* clips with classes ``y >= 0`` vs ``y < 0`` and
    ``pred >= 0`` vs ``pred < 0`` (neutral, y == 0, is counted as positive).
``f1_has0``
    Weighted F1 for the has0 binarization: per-class F1 averaged with weights equal to the
    class's support in the *labels* (``sklearn.metrics.f1_score(truth, preds,
    average="weighted")``; MMSA passes truth first, which matters for the weights).
``acc2_non0``
    Binary accuracy after dropping clips with ``y == 0``: classes ``y > 0`` vs ``y < 0``
    and ``pred > 0`` vs ``pred <= 0`` (a prediction of exactly 0 counts as negative here,
    but as positive in has0). Exactly MMSA's
    ``non_zeros = [i for i, e in enumerate(y) if e != 0]``,
    ``(y[non_zeros] > 0)`` vs ``(pred[non_zeros] > 0)``.
``f1_non0``
    Weighted F1 for the non0 binarization.

Both Acc-2 conventions are reported because papers differ: "has0" ("negative /
non-negative") keeps neutral clips and counts them as positive, "non0" ("negative /
positive") drops them; many papers (and MMSA's result tables) report both as "has0/non0".
Numbers under the two conventions are not comparable, so a single "Acc-2" is ambiguous.

Deviations from MMSA, all deliberate:

* values are returned unrounded (MMSA rounds every metric to 4 decimals);
* when no clip has ``y != 0``, ``acc2_non0`` and ``f1_non0`` are ``nan`` (MMSA crashes:
  the empty index list becomes a float array, which cannot index);
* F1 uses ``zero_division=0`` explicitly; this gives the same numbers as sklearn's default
  (``"warn"`` also scores an undefined precision/recall as 0) without warning spam when a
  class is absent from the predictions or labels;
* a constant ``pred`` or ``y`` gives ``corr = nan`` with a logged warning instead of a numpy
  ``RuntimeWarning``.

CH-SIMS (``sims``)
------------------

Source: thuiar/MMSA, ``src/MMSA/utils/metricsTop.py``, ``MetricsTop.__eval_sims_regression``,
the standard for CH-SIMS (Yu et al., ACL 2020, "CH-SIMS: A Chinese Multimodal Sentiment
Analysis Dataset with Fine-grained Annotation of Modality"). Labels are in [-1, 1], averages
of five annotators' scores (by our reading of the paper, not checked against the data: the
multiples of 0.2, which the edges ±0.1 and ±0.7 below fall between; ties on an edge then come
from predictions, but nothing here relies on that). Both arrays are first clipped:
``p = clip(pred, -1, 1)``, ``t = clip(y, -1, 1)``; *every* metric below uses ``p`` and ``t``.

Binning: with inner edges ``e_1 < ... < e_{K-1}``, ``bin(x)`` is the number of edges strictly
below ``x``, so class ``k`` is the interval ``(e_k, e_{k+1}]`` (left-open, right-closed; the
first class also includes -1). This is MMSA's ``x > ms[i] and x <= ms[i+1]`` with outer edges
-1.01 and 1.01. Metrics (keys of :func:`sims_metrics`, in :data:`SIMS_METRIC_NAMES` order):

``mae``
    ``mean(|p - t|)``, on the *clipped* values (unlike MOSI/MOSEI's unclipped MAE).
``corr``
    Pearson correlation of ``p`` and ``t`` (``nan`` with a warning when one is constant).
``acc2``
    ``mean(1[bin2(p) == bin2(t)])``, edges ``(0,)``: classes [-1, 0], (0, 1]. A label or
    prediction of exactly 0 is *negative* (in MOSI's ``acc2_has0`` it is positive).
``acc3``
    Edges ``(-0.1, 0.1)``: classes [-1, -0.1], (-0.1, 0.1], (0.1, 1].
``acc5``
    Edges ``(-0.7, -0.1, 0.1, 0.7)``: classes [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1],
    (0.1, 0.7], (0.7, 1]. (Not MOSI's ``acc5``, which rounds on [-2, 2].)
``f1``
    Weighted F1 of the Acc-2 classes, ``f1_score(bin2(t), bin2(p), average="weighted")``
    (labels first, as in MMSA; the weights are the label supports).

Values are unrounded, as MMSA returns them for CH-SIMS. Deviations from MMSA:
``zero_division=0`` and ``nan`` for a constant array as above; MMSA's
tensors are float32, so it compares a value with an edge in float32 (``float32(0.1)``), while
here values and edges are float64: a label given as the decimal 0.1 (as in label.csv) equals
the edge 0.1 in both, but a value that went through float32 (0.1f = 0.10000000149...) falls one
class higher here. Labels outside [-1, 1] are clipped, as in MMSA, with a logged warning.

Retrieval (``retrieval``)
-------------------------

``map_a2v``, ``map_v2a`` (mean average precision of audio queries over the visual gallery and
the reverse; full ranking by cosine similarity, relevance = same class) and ``map_mean`` (their
average); formulas, tie-breaking and sources in ``pipeline/tasks/retrieval.py``. They are computed
from embeddings (``retrieval_metrics.retrieval_metrics``), not from ``(pred, y)``, so this set's
``compute`` raises a ValueError; a seed's file is its per-query AP table
(``retrieval.write_per_query_ap``), from which :func:`metrics_from_csv` recomputes the three
values (``retrieval.metrics_from_per_query``: the mean AP of each direction's rows).

Command line: ``python -m pipeline.evaluation.metrics [--metric-set sims|retrieval] predictions.csv [...]``
reads each seed's predictions CSV (per clip: ``id``, ``label``, ``pred``; for ``retrieval`` per
query: ``direction``, ``id``, ``label``, ``ap``) and prints one JSON object mapping each path to
its metrics (default metric set ``mosi_mosei``); ``nan`` is written as ``null`` so the output is
strict JSON. A file that cannot be scored (missing, a missing column, a value that is not a finite
number) exits with code 2 and one line ``error: <message>`` on stderr; the message names the file and,
for a bad value, the column, the data row (counting from 0 below the header) and the value.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import UserError
from pipeline.core.registry import Registry
from pipeline.core.runtime import entry_point
from pipeline.evaluation.retrieval_metrics import metrics_from_per_query, read_per_query_ap

logger = logging.getLogger(__name__)

METRIC_NAMES: tuple[str, ...] = (
    "mae",
    "corr",
    "acc7",
    "acc5",
    "acc2_has0",
    "f1_has0",
    "acc2_non0",
    "f1_non0",
)

SIMS_METRIC_NAMES: tuple[str, ...] = ("mae", "corr", "acc2", "acc3", "acc5", "f1")

# CH-SIMS inner bin edges (MMSA's ms_2, ms_3, ms_5 without the outer -1.01, 1.01); class k = (e_k, e_{k+1}]
SIMS_EDGES: dict[str, tuple[float, ...]] = {
    "acc2": (0.0,),
    "acc3": (-0.1, 0.1),
    "acc5": (-0.7, -0.1, 0.1, 0.7),
}

CSV_COLUMNS: tuple[str, ...] = ("id", "label", "pred")
RETRIEVAL_METRIC_NAMES: tuple[str, ...] = ("map_a2v", "map_v2a", "map_mean")  # retrieval_metrics() keys
ROWS = "data rows count from 0 below the header"  # how a predictions CSV's rows are numbered in messages


class PredictionsError(UserError, ValueError):
    """A predictions CSV that cannot be scored: a missing column, a value that is not a finite number."""


def _check_inputs(pred: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if pred.ndim != 1 or y.ndim != 1:
        raise ValueError(
            f"pred and y must be 1-D arrays; got pred shape {pred.shape} and y shape {y.shape}"
        )
    if pred.shape != y.shape:
        raise ValueError(
            f"pred and y must have the same length; got pred shape {pred.shape} "
            f"and y shape {y.shape}"
        )
    if pred.size == 0:
        raise ValueError(f"pred and y are empty (shapes {pred.shape} and {y.shape})")
    for name, arr in (("pred", pred), ("y", y)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(
                f"{name} has {bad.size} non-finite value(s) (nan or inf); "
                f"first at index {int(bad[0])}: {arr[bad[0]]!r}"
            )
    return pred, y


def _pearson(pred: np.ndarray, y: np.ndarray) -> float:
    for name, arr in (("pred", pred), ("y", y)):
        if np.all(arr == arr[0]):
            logger.warning(
                "Pearson correlation undefined: %s is constant (%r over %d clips); corr = nan",
                name,
                float(arr[0]),
                arr.size,
            )
            return math.nan
    return float(np.corrcoef(pred, y)[0, 1])


def _rounded_class(x: np.ndarray, bound: float) -> np.ndarray:
    """The class acc7 (bound 3) and acc5 (bound 2) give each value: round(clip(x, -bound, bound))."""
    return np.round(np.clip(x, -bound, bound))


def _multiclass_acc(pred: np.ndarray, y: np.ndarray, bound: float) -> float:
    return float(np.mean(_rounded_class(pred, bound) == _rounded_class(y, bound)))


def sentiment_readings(pred: np.ndarray) -> dict[str, list]:
    """What MOSI / MOSEI's accuracies read each prediction r as: `class7`, its acc7 class round(clip(r, -3, 3))
    in -3..3, and `polarity`, its acc2_has0 class (r >= 0: positive, else negative)."""
    pred = np.asarray(pred, dtype=np.float64)
    return {"class7": _rounded_class(pred, 3.0).astype(int).tolist(),
            "polarity": np.where(pred >= 0, "positive", "negative").tolist()}


SIMS_CLASS3 = ("negative", "neutral", "positive")  # acc3's classes [-1, -0.1], (-0.1, 0.1], (0.1, 1]


def sims_readings(pred: np.ndarray) -> dict[str, list]:
    """What CH-SIMS's accuracies read each prediction r as: `class3`, its acc3 class of clip(r, -1, 1)
    (SIMS_CLASS3), and `polarity`, its acc2 class (r > 0: positive, else negative)."""
    p = np.clip(np.asarray(pred, dtype=np.float64), -1.0, 1.0)
    return {"class3": [SIMS_CLASS3[k] for k in _sims_bins(p, SIMS_EDGES["acc3"])],
            "polarity": ["positive" if k else "negative" for k in _sims_bins(p, SIMS_EDGES["acc2"])]}


def _binary(truth: np.ndarray, preds: np.ndarray) -> tuple[float, float]:
    """(accuracy, weighted F1) of boolean arrays; labels (truth) first as in MMSA."""
    acc = float(np.mean(truth == preds))
    from sklearn.metrics import f1_score  # here: the stages that only declare metrics do not pay its import

    f1 = float(f1_score(truth, preds, average="weighted", zero_division=0))
    return acc, f1


def sentiment_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """All eight metrics, keys in METRIC_NAMES order, plain Python floats.

    ``pred`` and ``y`` are 1-D, equally long, non-empty and finite (ValueError otherwise).
    See the module docstring for the definitions.
    """
    pred, y = _check_inputs(pred, y)

    acc2_has0, f1_has0 = _binary(y >= 0, pred >= 0)

    non_zeros = y != 0
    if np.any(non_zeros):
        acc2_non0, f1_non0 = _binary(y[non_zeros] > 0, pred[non_zeros] > 0)
    else:
        logger.warning("No clip has a non-zero label; acc2_non0 and f1_non0 are nan")
        acc2_non0 = f1_non0 = math.nan

    values = {
        "mae": float(np.mean(np.abs(pred - y))),
        "corr": _pearson(pred, y),
        "acc7": _multiclass_acc(pred, y, 3.0),
        "acc5": _multiclass_acc(pred, y, 2.0),
        "acc2_has0": acc2_has0,
        "f1_has0": f1_has0,
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
    }
    return {name: values[name] for name in METRIC_NAMES}


def _sims_bins(x: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Class of each value: the number of edges strictly below it, i.e. class k = (e_k, e_{k+1}]."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="left")


def sims_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """CH-SIMS metrics (MMSA's ``__eval_sims_regression``), keys in SIMS_METRIC_NAMES order, plain floats.

    ``pred`` and ``y`` are 1-D, equally long, non-empty and finite (ValueError otherwise); both are
    clipped to [-1, 1] before every metric. See the module docstring for the definitions.
    """
    pred, y = _check_inputs(pred, y)
    outside = int(np.count_nonzero(np.abs(y) > 1.0))
    if outside:
        logger.warning("%d of %d labels lie outside CH-SIMS's [-1, 1] and are clipped", outside, y.size)
    p = np.clip(pred, -1.0, 1.0)
    t = np.clip(y, -1.0, 1.0)
    values = {"mae": float(np.mean(np.abs(p - t))), "corr": _pearson(p, t)}
    for name, edges in SIMS_EDGES.items():
        values[name] = float(np.mean(_sims_bins(p, edges) == _sims_bins(t, edges)))
    from sklearn.metrics import f1_score

    values["f1"] = float(f1_score(_sims_bins(t, SIMS_EDGES["acc2"]), _sims_bins(p, SIMS_EDGES["acc2"]),
                                  average="weighted", zero_division=0))
    return {name: values[name] for name in SIMS_METRIC_NAMES}


def _numbers(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """Column `column` of a predictions table as floats (Python's float: exact for what to_csv wrote). A cell
    that is not a finite number (empty, text, nan, inf) raises PredictionsError naming the file, the column,
    the first such data row and its value."""

    def number(cell: object) -> float:
        try:
            return float(cell)
        except (TypeError, ValueError):
            return math.nan

    values = np.array([number(cell) for cell in table[column]], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        more = f"{bad.size} such rows in all; " if bad.size > 1 else ""
        raise PredictionsError(f"{path}: column {column!r} must hold finite numbers; data row {int(bad[0])} holds "
                               f"{table[column].iloc[bad[0]]!r} ({more}{ROWS})")
    return values


def _per_clip_csv_metrics(path: Path, compute: Callable[[np.ndarray, np.ndarray], dict[str, float]]
                          ) -> dict[str, float]:
    """`compute(pred, label)` of a per-clip predictions CSV (columns id, label, pred); errors name the file."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise PredictionsError(
            f"{path}: missing column(s) {missing}; expected columns {list(CSV_COLUMNS)}, "
            f"found {list(df.columns)}"
        )
    label, pred = _numbers(df, "label", path), _numbers(df, "pred", path)
    try:
        return compute(pred, label)
    except ValueError as exc:  # no rows
        raise PredictionsError(f"{path}: {exc}") from exc


def _per_query_csv_metrics(path: Path) -> dict[str, float]:
    """map_a2v, map_v2a, map_mean of a per-query AP CSV (retrieval.write_per_query_ap); errors name the file.

    Every AP must be a number in [0, 1]: anything else means the file is not what evaluate writes.
    """
    table = read_per_query_ap(path)  # FileNotFoundError / ValueError (missing columns) name the file
    ap = _numbers(table, "ap", path)
    bad = np.flatnonzero(~((ap >= 0.0) & (ap <= 1.0)))
    if bad.size:
        raise PredictionsError(f"{path}: {bad.size} AP value(s) outside [0, 1] in column 'ap'; first at data row "
                               f"{int(bad[0])}: {float(ap[bad[0]])!r} ({ROWS})")
    try:
        return metrics_from_per_query(table.assign(ap=ap))
    except ValueError as exc:
        raise PredictionsError(f"{path}: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class MetricSet:
    """One scoring convention: its metrics, its headline metric and how a seed is scored.

    names             metric keys, in output (and report table) order
    compute           ``(pred, y) -> {name: value}`` of per-clip regression predictions; None for
                      sets not scored from (pred, y) (retrieval: from embeddings,
                      evaluation/retrieval_metrics.py, or `from_csv` on a per-query AP CSV)
    primary           the headline metric (one of `names`): the one methods are compared on
                      (report: paired differences, efficiency plot)
    higher_is_better  the direction of `primary` (False for MAE, True for mAP)
    curve             the validation metric students log with dvclive every epoch, as its name
                      under plots/metrics without ``.tsv`` (``valid/mae``, ``valid/map``)
    from_csv          ``path -> {name: value}``: the metrics of one seed's predictions CSV
                      (``predictions/<ds>/<name>/seed_<s>.csv``), in `names` order
    clip_score        ``table -> Series``: from that CSV's table, the per-test-clip score the paired
                      comparisons use, indexed by clip id; `clip_score_doc` says what it is
    teacher_metrics   what the teacher is reported with, given each subset of its modalities
                      (training/teacher.py `subset_metrics`: the task's `teacher_metrics`)
    readings          ``pred -> {name: one value per prediction}``: the classes the set's accuracies
                      read regression predictions as (pipeline/predict.py prints them); None when the
                      set does not score regression predictions
    """

    names: tuple[str, ...]
    compute: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None
    primary: str
    higher_is_better: bool
    curve: str
    from_csv: Callable[[Path], dict[str, float]]
    clip_score: Callable[[pd.DataFrame], pd.Series]
    clip_score_doc: str
    teacher_metrics: tuple[str, ...]
    readings: Callable[[np.ndarray], dict[str, list]] | None = None

    def __post_init__(self) -> None:
        if self.primary not in self.names:
            raise ValueError(f"MetricSet: primary metric {self.primary!r} is not one of its names {list(self.names)}")


def _sentiment_set(names: tuple[str, ...], compute: Callable[[np.ndarray, np.ndarray], dict[str, float]],
                   readings: Callable[[np.ndarray], dict[str, list]]) -> MetricSet:
    """A sentiment regression set: headline MAE (lower is better), curve valid/mae, per-clip CSVs."""
    return MetricSet(names, compute, primary="mae", higher_is_better=False, curve="valid/mae",
                     from_csv=functools.partial(_per_clip_csv_metrics, compute=compute), clip_score=_absolute_error,
                     clip_score_doc="the absolute error |pred − y| of each test clip",
                     teacher_metrics=("mae", "corr", "acc2_non0"), readings=readings)


def _absolute_error(table: pd.DataFrame) -> pd.Series:
    """|pred - label| per clip of a per-clip predictions table (id, label, pred)."""
    return pd.Series(np.abs(table["pred"].to_numpy(np.float64) - table["label"].to_numpy(np.float64)),
                     index=table["id"].to_numpy())


def _mean_query_ap(table: pd.DataFrame) -> pd.Series:
    """The mean AP of each clip's queries (a2v and v2a) of a per-query AP table (direction, id, label, ap)."""
    return table.groupby("id")["ap"].mean()


METRIC_SETS: Registry[MetricSet] = Registry("metric set")
METRIC_SETS.add("mosi_mosei", _sentiment_set(METRIC_NAMES, sentiment_metrics, sentiment_readings))
METRIC_SETS.add("sims", _sentiment_set(SIMS_METRIC_NAMES, sims_metrics, sims_readings))
METRIC_SETS.add("retrieval", MetricSet(RETRIEVAL_METRIC_NAMES, None, primary="map_mean",
                                       higher_is_better=True, curve="valid/map", from_csv=_per_query_csv_metrics,
                                       clip_score=_mean_query_ap,
                                       clip_score_doc="the mean AP of each test clip's queries",
                                       teacher_metrics=("acc", "ce")))


def metrics_from_csv(path: Path, metric_set: str = "mosi_mosei") -> dict[str, float]:
    """Recompute the metrics of `metric_set` from one seed's predictions CSV (``MetricSet.from_csv``).

    The file is per clip (columns id, label, pred) for the sentiment sets and per query (columns
    direction, id, label, ap; retrieval.write_per_query_ap) for ``retrieval``. Errors (missing
    columns, non-numeric, empty or non-finite values, APs outside [0, 1]) are raised as ValueError
    (PredictionsError, a UserError) naming the file; for a bad value, also its column, its data row
    (counting from 0 below the header) and the value. A file that is missing or that pandas cannot
    parse is a PredictionsError too, naming the file, on one line.
    """
    try:
        return METRIC_SETS.get(metric_set).from_csv(Path(path))
    except UserError:
        raise
    except (OSError, ValueError) as exc:  # pandas' ParserError / EmptyDataError do not name the file
        message = " ".join(str(exc).split())
        raise PredictionsError(message if str(path) in message else f"{path}: {message}") from exc


def summarize_seeds(per_seed: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof = 1) of each metric over seeds.

        mean_k = (1/n) sum_s m_k(s),   std_k = sqrt( sum_s (m_k(s) - mean_k)^2 / (n - 1) )

    The metrics are the keys of the per-seed dicts, in the first seed's order (any metric set);
    every seed must have the same keys (ValueError otherwise). With one seed the std is
    undefined (nan). A metric that is nan for some seed (e.g. corr of a constant prediction) has
    a nan mean: a failed seed is not silently dropped.
    """
    if not per_seed:
        raise ValueError("summarize_seeds needs at least one seed")
    names = tuple(next(iter(per_seed.values())))
    if not names:
        raise ValueError("summarize_seeds: the per-seed metrics are empty")
    for seed, metrics in per_seed.items():
        if set(metrics) != set(names):
            raise ValueError(f"summarize_seeds: seed {seed} has metrics {sorted(metrics)}, the first seed has "
                             f"{sorted(names)}; every seed needs the same metrics")
    table = np.array([[m[k] for k in names] for m in per_seed.values()], dtype=np.float64)  # (S, M)
    mean = table.mean(axis=0)
    std = table.std(axis=0, ddof=1) if len(table) > 1 else np.full(len(names), np.nan)
    return {"mean": dict(zip(names, mean.tolist(), strict=True)),
            "std": dict(zip(names, std.tolist(), strict=True))}


def json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.evaluation.metrics [--metric-set NAME] predictions.csv [...]` prints each CSV's metrics
    as JSON.

    Output: one JSON object ``{path: {metric: value, ...}, ...}`` (nan -> null). A CSV that is missing,
    cannot be parsed or cannot be scored raises PredictionsError: run through `runtime.entry_point`, as
    `python -m` does, that is one line ``error: <message>`` on stderr and exit code 2.
    """
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.evaluation.metrics",
        description="Recompute a seed's test metrics from its predictions CSV: per clip (columns id, label, "
        "pred) for the sentiment sets, per query (direction, id, label, ap) for retrieval.",
    )
    parser.add_argument("csv", nargs="+", type=Path, help="predictions CSV file(s)")
    parser.add_argument("--metric-set", default="mosi_mosei", choices=METRIC_SETS.names(),
                        help="mosi_mosei (CMU-MOSI/MOSEI, labels in [-3, 3]; default), sims (CH-SIMS, [-1, 1]) "
                        "or retrieval (audio-visual mAP from a per-query AP CSV)")
    args = parser.parse_args(argv)

    results = {str(path): json_safe(metrics_from_csv(path, args.metric_set)) for path in args.csv}
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    entry_point(main)
