"""Tests for pipeline.evaluation.metrics: expected values are worked out by hand in the comments."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from pipeline.core.config import ConfigError
from pipeline.core.runtime import entry_point
from pipeline.data.datasets import DATASETS
from pipeline.evaluation import retrieval_metrics
from pipeline.evaluation.metrics import (
    METRIC_NAMES,
    METRIC_SETS,
    SIMS_METRIC_NAMES,
    MetricSet,
    PredictionsError,
    main,
    metrics_from_csv,
    sentiment_metrics,
    sentiment_readings,
    sims_metrics,
    sims_readings,
    summarize_seeds,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _m(pred, y):
    # Any numpy / sklearn warning (RuntimeWarning, UndefinedMetricWarning) fails the test.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return sentiment_metrics(np.asarray(pred, dtype=float), np.asarray(y, dtype=float))


def test_keys_order_and_plain_floats():
    m = _m([1.0, -1.0, 0.5], [2.0, -2.0, 0.0])
    assert tuple(m) == METRIC_NAMES
    assert METRIC_NAMES == (
        "mae", "corr", "acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0",
    )
    assert all(type(v) is float for v in m.values())


def test_zero_labels_has0_vs_non0():
    y = [0.0, 0.0, 1.0, -1.0, 2.0]
    pred = [0.3, -0.2, 0.8, 0.4, 0.0]
    m = _m(pred, y)
    # has0, all 5 clips: truth y>=0   = [T, T, T, F, T]
    #                    pred  p>=0   = [T, F, T, T, T]   (pred 0.0 -> positive)
    # agree at 0, 2, 4 -> 3/5
    assert m["acc2_has0"] == pytest.approx(0.6)
    # weighted F1 (weights = label support):
    #   class T: support 4, predicted T at {0,2,3,4}, TP {0,2,4}=3 -> P=3/4, R=3/4, F1=3/4
    #   class F: support 1 (idx 3), predicted F at {1}, TP 0 -> F1=0
    #   (4*3/4 + 1*0)/5 = 0.6
    assert m["f1_has0"] == pytest.approx(0.6)
    # non0: drop idx 0, 1 (y == 0) -> y=[1, -1, 2], pred=[0.8, 0.4, 0.0]
    #   truth y>0 = [T, F, T]; pred p>0 = [T, T, F]   (pred 0.0 -> negative here!)
    #   agree only at idx 0 -> 1/3
    assert m["acc2_non0"] == pytest.approx(1 / 3)
    #   class T: support 2, predicted T {0,1}, TP 1 -> P=1/2, R=1/2, F1=1/2
    #   class F: support 1, predicted F {2}, TP 0 -> F1=0
    #   (2*1/2 + 0)/3 = 1/3
    assert m["f1_non0"] == pytest.approx(1 / 3)
    # mae = (0.3 + 0.2 + 0.2 + 1.4 + 2.0)/5 = 4.1/5 = 0.82
    assert m["mae"] == pytest.approx(0.82)
    # acc7: round(pred) = [0, -0, 1, 0, 0]; round(y) = [0, 0, 1, -1, 2] -> agree 0,1,2 -> 3/5
    assert m["acc7"] == pytest.approx(0.6)
    assert m["acc5"] == pytest.approx(0.6)


def test_round_half_to_even_and_clipping_in_acc7_acc5():
    pred = [0.5, 1.5, 2.5, -0.5, -2.5, 2.5, 0.4]
    y = [0.0, 2.0, 2.0, 0.0, -2.0, 3.0, -0.5]
    m = _m(pred, y)
    # acc7 (clip to [-3,3] changes nothing), numpy round half to even:
    #   round(pred) = [0, 2, 2, -0, -2, 2, 0]
    #   round(y)    = [0, 2, 2,  0, -2, 3, -0]     (label -0.5 -> -0 == 0)
    #   agree everywhere but idx 5 (2 vs 3) -> 6/7
    #   (round-half-away-from-zero would give [1,2,3,-1,-3,3,0] vs [0,2,2,0,-2,3,-1] -> 2/7)
    assert m["acc7"] == pytest.approx(6 / 7)
    # acc5, clip to [-2,2]: pred -> [0.5, 1.5, 2, -0.5, -2, 2, 0.4] -> round [0,2,2,-0,-2,2,0]
    #                       y    -> [0, 2, 2, 0, -2, 2, -0.5]     -> round [0,2,2,0,-2,2,-0]
    #   all 7 agree -> 1.0
    assert m["acc5"] == 1.0


def test_clipping_prediction_beyond_range_mae_unclipped():
    pred = [5.0, -4.0, 1.0]
    y = [3.0, -2.0, 1.0]
    m = _m(pred, y)
    # acc7: clip(pred) = [3, -3, 1] vs y [3, -2, 1] -> agree idx 0, 2 -> 2/3
    assert m["acc7"] == pytest.approx(2 / 3)
    # acc5: clip(pred) = [2, -2, 1] vs clip(y) = [2, -2, 1] -> 3/3
    assert m["acc5"] == 1.0
    # mae unclipped: (|5-3| + |-4+2| + 0)/3 = 4/3   (clipped to [-3,3] would be 1/3)
    assert m["mae"] == pytest.approx(4 / 3)


def test_perfect_prediction():
    y = [-3.0, -1.2, 0.0, 0.4, 2.6]
    m = _m(list(y), y)
    assert m["mae"] == 0.0
    assert m["corr"] == pytest.approx(1.0)
    for name in ("acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0"):
        assert m[name] == 1.0, name


def test_weighted_f1_unbalanced():
    y = [1.0, 2.0, 3.0, 0.5, -1.0, -2.0]
    pred = [1.0, 2.0, -1.0, 0.5, -1.0, -2.0]
    m = _m(pred, y)
    # no zeros anywhere, so has0 and non0 coincide:
    #   truth = [T, T, T, T, F, F], preds = [T, T, F, T, F, F]; agree 5/6
    assert m["acc2_has0"] == pytest.approx(5 / 6)
    assert m["acc2_non0"] == pytest.approx(5 / 6)
    # class T: support 4, predicted T {0,1,3} all correct -> P=1, R=3/4, F1=2*(3/4)/(7/4)=6/7
    # class F: support 2, predicted F {2,4,5}, TP {4,5} -> P=2/3, R=1, F1=(4/3)/(5/3)=4/5
    # weighted by label support: (4*6/7 + 2*4/5)/6 = (24/7 + 8/5)/6 = (176/35)/6 = 88/105
    # (macro would be 29/35 ~ 0.8286, and weighting by *prediction* support -- truth and
    #  preds swapped -- would be (3*6/7 + 3*4/5)/6 = 29/35 too; binary F1 would be 6/7)
    assert m["f1_has0"] == pytest.approx(88 / 105)
    assert m["f1_non0"] == pytest.approx(88 / 105)


def test_pearson_corr_by_hand():
    pred = [1.0, 2.0, 3.0, 4.0]
    y = [1.0, 3.0, 2.0, 5.0]
    m = _m(pred, y)
    # means 2.5 and 2.75; deviations dp = [-1.5, -0.5, 0.5, 1.5], dy = [-1.75, 0.25, -0.75, 2.25]
    # sum dp*dy = 2.625 - 0.125 - 0.375 + 3.375 = 5.5
    # sum dp^2 = 5, sum dy^2 = 3.0625 + 0.0625 + 0.5625 + 5.0625 = 8.75
    # r = 5.5 / sqrt(5 * 8.75) = 5.5 / sqrt(43.75) ~ 0.8315218
    assert m["corr"] == pytest.approx(5.5 / math.sqrt(43.75), rel=1e-12)
    assert m["corr"] == pytest.approx(0.8315218, abs=1e-7)


def test_constant_prediction_corr_nan_and_single_predicted_class(caplog):
    y = [1.0, -1.0, 2.0]
    pred = [1.0, 1.0, 1.0]
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluation.metrics"):
        m = _m(pred, y)
    assert math.isnan(m["corr"])
    assert "constant" in caplog.text
    # truth [T, F, T], preds [T, T, T] -> acc 2/3
    # class T: support 2, P=2/3, R=1 -> F1 = (4/3)/(5/3) = 4/5
    # class F: support 1, never predicted -> precision undefined -> 0 -> F1 = 0
    # weighted: (2*4/5 + 0)/3 = 8/15
    assert m["acc2_has0"] == pytest.approx(2 / 3)
    assert m["f1_has0"] == pytest.approx(8 / 15)
    assert m["f1_non0"] == pytest.approx(8 / 15)
    # mae = (0 + 2 + 1)/3 = 1
    assert m["mae"] == pytest.approx(1.0)


def test_all_labels_zero_non0_nan(caplog):
    y = [0.0, 0.0, 0.0]
    pred = [0.1, -0.1, 0.0]
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluation.metrics"):
        m = _m(pred, y)
    assert math.isnan(m["acc2_non0"])
    assert math.isnan(m["f1_non0"])
    assert math.isnan(m["corr"])  # y constant
    # has0: truth [T, T, T], preds [T, F, T] -> acc 2/3
    # class T: support 3, P=2/2=1, R=2/3 -> F1 = (4/3)/(5/3) = 4/5; class F support 0 -> weight 0
    assert m["acc2_has0"] == pytest.approx(2 / 3)
    assert m["f1_has0"] == pytest.approx(0.8)
    # acc7: round(pred) = [0, -0, 0] == round(y) -> 1.0
    assert m["acc7"] == 1.0
    assert "non-zero" in caplog.text


@pytest.mark.parametrize(
    ("pred", "y", "match"),
    [
        (np.zeros(3), np.zeros(4), r"same length.*pred shape \(3,\) and y shape \(4,\)"),
        (np.zeros(0), np.zeros(0), r"empty \(shapes \(0,\) and \(0,\)\)"),
        (np.zeros((3, 1)), np.zeros(3), r"1-D.*pred shape \(3, 1\) and y shape \(3,\)"),
        (np.zeros(3), np.zeros((1, 3)), r"1-D.*pred shape \(3,\) and y shape \(1, 3\)"),
        (
            np.array([0.0, np.nan, 1.0, np.nan]),
            np.zeros(4),
            r"pred has 2 non-finite value\(s\).*first at index 1",
        ),
        (
            np.zeros(3),
            np.array([0.0, 1.0, -np.inf]),
            r"y has 1 non-finite value\(s\).*first at index 2",
        ),
    ],
)
def test_validation_errors(pred, y, match):
    with pytest.raises(ValueError, match=match):
        sentiment_metrics(pred, y)


def _write_csv(path: Path, ids, labels, preds) -> Path:
    pd.DataFrame({"id": ids, "label": labels, "pred": preds}).to_csv(path, index=False)
    return path


def test_csv_round_trip_exact(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    labels = np.round(rng.uniform(-3, 3, n) * 3) / 3  # MOSI-like averaged labels
    labels[:5] = 0.0
    preds = rng.normal(0.0, 1.5, n)
    ids = [f"clip{i:03d}_{i % 7}" for i in range(n)]
    path = _write_csv(tmp_path / "preds.csv", ids, labels, preds)
    from_csv = metrics_from_csv(path)
    direct = sentiment_metrics(preds, labels)
    assert from_csv == direct  # bit-exact, no nan in this case


def test_csv_missing_columns(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"id": ["a"], "prediction": [0.1]}).to_csv(path, index=False)
    with pytest.raises(ValueError) as excinfo:
        metrics_from_csv(path)
    msg = str(excinfo.value)
    assert str(path) in msg
    assert "missing column(s) ['label', 'pred']" in msg
    assert "expected columns ['id', 'label', 'pred']" in msg


def test_csv_invalid_values_name_the_file(tmp_path):
    path = tmp_path / "holes.csv"
    path.write_text("id,label,pred\na,1.0,0.5\nb,,0.2\n")
    with pytest.raises(PredictionsError, match=r"holes\.csv: column 'label' must hold finite numbers; data row 1 "
                                               r"holds '' \(data rows count from 0 below the header\)"):
        metrics_from_csv(path)


def test_main_prints_json(tmp_path, capsys):
    # labels [1, -1, 0], preds [1, 1, -1]:
    #   mae = (0 + 2 + 1)/3 = 1; has0 truth [T,F,T] preds [T,T,F] -> 1/3
    #   non0: drop idx 2 -> truth [T,F], preds [T,T] -> 1/2
    a = _write_csv(tmp_path / "a.csv", ["x", "y", "z"], [1.0, -1.0, 0.0], [1.0, 1.0, -1.0])
    # all-zero labels -> non0 metrics and corr are nan -> JSON null
    b = _write_csv(tmp_path / "b.csv", ["x", "y"], [0.0, 0.0], [0.5, -0.5])
    assert main([str(a), str(b)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == [str(a), str(b)]
    assert list(out[str(a)]) == list(METRIC_NAMES)
    assert out[str(a)]["mae"] == pytest.approx(1.0)
    assert out[str(a)]["acc2_has0"] == pytest.approx(1 / 3)
    assert out[str(a)]["acc2_non0"] == pytest.approx(0.5)
    assert out[str(b)]["acc2_non0"] is None
    assert out[str(b)]["f1_non0"] is None
    assert out[str(b)]["corr"] is None
    assert out[str(b)]["mae"] == pytest.approx(0.5)


def cli(argv: list[str]) -> int:
    """The command's exit code, run as `python -m pipeline.evaluation.metrics` runs it (runtime.entry_point)."""
    with pytest.raises(SystemExit) as done:
        entry_point(main, argv)
    return done.value.code


def test_main_error_returns_2(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"id": ["a"], "label": [0.1]}).to_csv(path, index=False)
    assert cli([str(path)]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) ['pred']" in err


@pytest.mark.parametrize(("text", "expected"), [
    ("id,label,pred\na,1.0,0.5\nb,-1,0.2\nc,0,abc\n",
     "column 'pred' must hold finite numbers; data row 2 holds 'abc' (data rows count from 0 below the header)"),
    ("id,label,pred\na,x,0.5\nb,inf,0.2\nc,,0.1\n",
     "column 'label' must hold finite numbers; data row 0 holds 'x' (3 such rows in all; data rows count from 0"),
    ("id,label,pred\na,1.0,0.5\nb,-1,0.2,7,8\n", "Expected 3 fields in line 3, saw 5"),  # pandas' ParserError
    ("", "No columns to parse from file"),
    ("id,label,pred\n", "pred and y are empty"),
])
def test_main_names_the_file_column_row_and_value(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    assert cli([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {path}: ") and captured.err.count("\n") == 1  # one line
    assert expected in captured.err


def test_module_exits_2_with_one_line_on_bad_values(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,label,pred\na,1.0,0.5\nb,abc,0.2\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.evaluation.metrics", str(path)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: {path}: column 'label' must hold finite numbers; data row 1 holds 'abc' "
                           "(data rows count from 0 below the header)\n")


def test_module_entry_point(tmp_path):
    a = _write_csv(tmp_path / "a.csv", ["x", "y"], [2.0, -1.0], [2.0, -1.0])
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.evaluation.metrics", str(a)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )
    out = json.loads(proc.stdout)
    assert out[str(a)]["acc7"] == 1.0
    assert out[str(a)]["mae"] == 0.0


# --------------------------------------------------------------------------- CH-SIMS


def _s(pred, y):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return sims_metrics(np.asarray(pred, dtype=float), np.asarray(y, dtype=float))


def test_sims_keys_order_and_plain_floats():
    m = _s([0.5, -0.5, 0.0], [0.8, -0.2, 0.1])
    assert tuple(m) == SIMS_METRIC_NAMES == ("mae", "corr", "acc2", "acc3", "acc5", "f1")
    assert all(type(v) is float for v in m.values())


def test_sims_bin_edges_by_hand():
    # classes are left-open, right-closed: (e_k, e_{k+1}]; values on an edge go to the lower class
    y = [-1.0, -0.7, -0.1, 0.0, 0.1, 0.7, 1.0, 0.5]
    pred = [-0.7, -0.69, -0.1, 0.0, 0.11, 0.71, 1.7, -2.0]
    m = _s(pred, y)
    # clipped pred p = [-0.7, -0.69, -0.1, 0.0, 0.11, 0.71, 1.0, -1.0]
    #            acc2 (edge 0)     acc3 (edges -0.1, 0.1)   acc5 (edges -0.7, -0.1, 0.1, 0.7)
    # idx  y      t   p             t   p                    t   p
    # 0   -1.0   0   0 (-0.7)       0   0                    0   0 (-0.7 on the edge)
    # 1   -0.7   0   0              0   0 (-0.69)            0   1 (-0.69 > -0.7)      acc5 miss
    # 2   -0.1   0   0              0   0 (both on the edge) 1   1
    # 3    0.0   0   0 (0 is neg.)  1   1                    2   2
    # 4    0.1   1   1              1   2 (0.11 > 0.1)       2   3                     acc3, acc5 miss
    # 5    0.7   1   1              2   2                    3   4 (0.71 > 0.7)        acc5 miss
    # 6    1.0   1   1 (1.7 -> 1)   2   2                    4   4
    # 7    0.5   1   0 (-2 -> -1)   2   0                    3   0                     all miss
    assert m["acc2"] == pytest.approx(7 / 8)
    assert m["acc3"] == pytest.approx(6 / 8)
    assert m["acc5"] == pytest.approx(4 / 8)
    # MAE on the clipped values: 0.3 + 0.01 + 0 + 0 + 0.01 + 0.01 + 0 + 1.5 = 1.83 -> 1.83 / 8
    # (unclipped it would be 3.53 / 8: idx 6 adds 0.7 and idx 7 adds 2.5 instead of 1.5)
    assert m["mae"] == pytest.approx(1.83 / 8)
    # weighted F1 on the acc2 classes, truth t = [0,0,0,0,1,1,1,1], preds p = [0,0,0,0,1,1,1,0]
    #   class 0: support 4, predicted at {0,1,2,3,7}, TP 4 -> P = 4/5, R = 1   -> F1 = 8/9
    #   class 1: support 4, predicted at {4,5,6},     TP 3 -> P = 1,   R = 3/4 -> F1 = 6/7
    #   weighted by label support: (4 * 8/9 + 4 * 6/7) / 8 = 55/63
    #   (truth and preds swapped, weights 5 and 3: (5 * 8/9 + 3 * 6/7) / 8 = 221/252 instead)
    assert m["f1"] == pytest.approx(55 / 63)
    assert m["f1"] != pytest.approx(221 / 252)
    clipped = np.clip(pred, -1, 1)
    assert m["corr"] == pytest.approx(np.corrcoef(clipped, y)[0, 1], rel=1e-12)
    assert m["corr"] != pytest.approx(np.corrcoef(pred, y)[0, 1])


def test_sims_every_edge_from_both_sides():
    # each edge value is its own label and prediction (a match in every metric) ...
    edges = [-1.0, -0.7, -0.1, 0.0, 0.1, 0.7, 1.0]
    m = _s(edges, edges)
    assert (m["acc2"], m["acc3"], m["acc5"], m["f1"], m["mae"]) == (1.0, 1.0, 1.0, 1.0, 0.0)
    # ... and a prediction a hair above each inner edge lands one class higher in the metrics that have the edge
    eps = 1e-9
    y = [-0.7, -0.1, 0.0, 0.1, 0.7]
    m = _s([v + eps for v in y], y)
    # acc2 has the edge 0 only: idx 2 misses -> 4/5; acc3 has -0.1 and 0.1: idx 1, 3 miss -> 3/5;
    # acc5 has -0.7, -0.1, 0.1, 0.7 (not 0): idx 0, 1, 3, 4 miss -> 1/5
    assert m["acc2"] == pytest.approx(4 / 5)
    assert m["acc3"] == pytest.approx(3 / 5)
    assert m["acc5"] == pytest.approx(1 / 5)
    # and a hair below stays in the same class as the edge itself
    m = _s([v - eps for v in y], y)
    assert (m["acc2"], m["acc3"], m["acc5"]) == (1.0, 1.0, 1.0)


def test_sims_zero_is_negative_unlike_mosi_has0():
    y = [0.0, 0.0, 0.5, -0.5]
    pred = [0.0, 0.2, 0.3, 0.0]
    # SIMS acc2, 0 is negative: t = [0, 0, 1, 0], p = [0, 1, 1, 0] -> misses idx 1 -> 3/4
    # MOSI has0, 0 is positive: truth [T, T, T, F], preds [T, T, T, T] -> misses idx 3 -> 3/4
    assert _s(pred, y)["acc2"] == pytest.approx(3 / 4)
    assert _m(pred, y)["acc2_has0"] == pytest.approx(3 / 4)
    # where they disagree: label 0, prediction 0.1
    assert _s([0.1, 1.0], [0.0, 1.0])["acc2"] == 0.5
    assert _m([0.1, 1.0], [0.0, 1.0])["acc2_has0"] == 1.0


def test_sims_bins_match_interval_definition():
    # the classes written out as intervals (lo, hi] with explicit comparisons, on values crowded onto the edges
    intervals = {
        "acc2": [(-np.inf, 0.0), (0.0, np.inf)],
        "acc3": [(-np.inf, -0.1), (-0.1, 0.1), (0.1, np.inf)],
        "acc5": [(-np.inf, -0.7), (-0.7, -0.1), (-0.1, 0.1), (0.1, 0.7), (0.7, np.inf)],
    }

    def classes(x, name):
        out = np.full(x.shape, -1)
        for k, (lo, hi) in enumerate(intervals[name]):
            out[(x > lo) & (x <= hi)] = k
        assert (out >= 0).all()
        return out

    rng = np.random.default_rng(0)
    grid = np.array([-1.2, -1.0, -0.7, -0.1, 0.0, 0.1, 0.7, 1.0, 1.3])
    y = np.round(rng.uniform(-1, 1, 200), 1)  # CH-SIMS-like labels: multiples of 0.1
    pred = np.concatenate([rng.choice(grid, 100), rng.uniform(-1.5, 1.5, 100)])
    m = _s(pred, y)
    p, t = np.clip(pred, -1, 1), np.clip(y, -1, 1)
    for name in ("acc2", "acc3", "acc5"):
        assert m[name] == pytest.approx(np.mean(classes(p, name) == classes(t, name))), name
    assert m["f1"] == pytest.approx(f1_score(classes(t, "acc2"), classes(p, "acc2"), average="weighted"))
    assert m["mae"] == pytest.approx(np.mean(np.abs(p - t)))


def test_sims_labels_outside_range_are_clipped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluation.metrics"):
        m = sims_metrics(np.array([1.0, -1.0, 0.5]), np.array([1.5, -3.0, 0.5]))
    assert "2 of 3 labels lie outside" in caplog.text
    assert m["mae"] == 0.0 and m["acc5"] == 1.0


def test_sims_constant_clipped_prediction_corr_nan(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluation.metrics"):
        m = _s([2.0, 3.0, 5.0], [0.2, -0.4, 1.0])  # all clip to 1.0
    assert math.isnan(m["corr"]) and "constant" in caplog.text
    # p = [1, 1, 1]; t2 = [1, 0, 1] -> acc2 2/3; class 1: P 2/3, R 1 -> F1 4/5; class 0 never predicted -> 0
    # weighted: (2 * 4/5 + 1 * 0) / 3 = 8/15
    assert m["acc2"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(8 / 15)
    # mae = (0.8 + 1.4 + 0) / 3
    assert m["mae"] == pytest.approx(2.2 / 3)


def test_sims_validation_errors():
    with pytest.raises(ValueError, match="same length"):
        sims_metrics(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match=r"pred has 1 non-finite"):
        sims_metrics(np.array([np.nan]), np.zeros(1))


# --------------------------------------------------------------------------- metric sets


def test_metric_sets_registry():
    assert METRIC_SETS.names() == ["mosi_mosei", "retrieval", "sims"]
    for name, names, compute in (("mosi_mosei", METRIC_NAMES, sentiment_metrics),
                                 ("sims", SIMS_METRIC_NAMES, sims_metrics)):
        metric_set = METRIC_SETS.get(name)
        assert metric_set.names == names and metric_set.compute is compute
        assert (metric_set.primary, metric_set.higher_is_better, metric_set.curve) == ("mae", False, "valid/mae")
    with pytest.raises(ConfigError,
                       match=r"unknown metric set 'mosi'. Available: \['mosi_mosei', 'retrieval', 'sims'\]"):
        METRIC_SETS.get("mosi")


def test_retrieval_metric_set():
    metric_set = METRIC_SETS.get("retrieval")
    assert metric_set.names == ("map_a2v", "map_v2a", "map_mean")  # retrieval_metrics' keys (test_retrieval)
    assert metric_set.primary == "map_mean" and metric_set.higher_is_better is True
    assert metric_set.curve == "valid/map"
    assert metric_set.compute is None  # scored from embeddings, or from its per-query AP CSV


def test_metric_set_primary_must_be_one_of_its_names():
    with pytest.raises(ValueError, match=r"primary metric 'map' is not one of its names \['mae'\]"):
        MetricSet(("mae",), sentiment_metrics, primary="map", higher_is_better=True, curve="valid/map",
                  from_csv=metrics_from_csv, clip_score=lambda table: table["ap"], clip_score_doc="",
                  teacher_metrics=("mae",))


def test_every_dataset_names_a_metric_set():
    for name in DATASETS:
        METRIC_SETS.get(DATASETS.get(name).metric_set)
    assert DATASETS.get("sims").metric_set == "sims"
    assert {DATASETS.get(n).metric_set for n in ("mosi", "mosei", "synthetic_sentiment")} == {"mosi_mosei"}
    assert {DATASETS.get(n).metric_set for n in ("synthetic_av", "vegas")} == {"retrieval"}


def test_mosi_metrics_unchanged():
    # the pinned values of a fixed case (all hand-checked in the tests above); the metric set's function is the same
    y = [0.0, 0.0, 1.0, -1.0, 2.0]
    pred = [0.3, -0.2, 0.8, 0.4, 0.0]
    m = METRIC_SETS.get("mosi_mosei").compute(np.array(pred), np.array(y))
    assert m == _m(pred, y)
    assert [m[k] for k in METRIC_NAMES if k != "corr"] == pytest.approx([0.82, 0.6, 0.6, 0.6, 0.6, 1 / 3, 1 / 3])


def test_summarize_seeds_any_metric_set():
    mosi = {"0": _m([1.0, -1.0, 0.5], [2.0, -2.0, 0.0]), "1": _m([0.5, -1.5, 0.5], [2.0, -2.0, 0.0])}
    summary = summarize_seeds(mosi)
    assert list(summary["mean"]) == list(summary["std"]) == list(METRIC_NAMES)  # unchanged for the MOSI metrics
    for k in METRIC_NAMES:
        values = [mosi["0"][k], mosi["1"][k]]
        assert summary["mean"][k] == pytest.approx(np.mean(values))
        assert summary["std"][k] == pytest.approx(np.std(values, ddof=1))
    sims = {"3": _s([0.5, -0.5, 0.0], [0.8, -0.2, 0.1]), "4": _s([0.1, -0.5, 0.2], [0.8, -0.2, 0.1])}
    summary = summarize_seeds(sims)
    assert list(summary["mean"]) == list(SIMS_METRIC_NAMES)
    assert summary["mean"]["acc3"] == pytest.approx((sims["3"]["acc3"] + sims["4"]["acc3"]) / 2)
    one = summarize_seeds({"0": sims["3"]})
    assert one["mean"] == sims["3"] and all(math.isnan(v) for v in one["std"].values())


def test_summarize_seeds_mismatched_metrics():
    with pytest.raises(ValueError, match=r"seed 1 has metrics \['acc2', 'mae'\], the first seed has \['mae'\]"):
        summarize_seeds({"0": {"mae": 1.0}, "1": {"mae": 1.0, "acc2": 0.5}})
    with pytest.raises(ValueError, match="at least one seed"):
        summarize_seeds({})


def test_sims_from_csv_and_cli(tmp_path, capsys):
    path = _write_csv(tmp_path / "sims.csv", ["a", "b", "c", "d"], [-0.1, 0.1, 0.7, 0.0], [-0.1, 0.11, 0.7, 0.5])
    direct = sims_metrics(np.array([-0.1, 0.11, 0.7, 0.5]), np.array([-0.1, 0.1, 0.7, 0.0]))
    assert metrics_from_csv(path, "sims") == direct
    # acc3: t = [0, 1, 2, 1], p = [0, 2, 2, 2] -> 2/4
    assert direct["acc3"] == 0.5
    assert main(["--metric-set", "sims", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out[str(path)]) == list(SIMS_METRIC_NAMES)
    assert out[str(path)]["acc3"] == 0.5
    assert main([str(path)]) == 0  # the default is still the MOSI/MOSEI set
    assert list(json.loads(capsys.readouterr().out)[str(path)]) == list(METRIC_NAMES)
    with pytest.raises(SystemExit):
        main(["--metric-set", "nope", str(path)])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown metric set"):
        metrics_from_csv(path, "nope")


# --------------------------------------------------------------------------- retrieval (per-query AP CSV)


PER_QUERY_CSV = """\
direction,id,label,ap
a2v,c0,0,1.0
a2v,c1,0,0.5
a2v,c2,1,0.75
v2a,c0,0,1.0
v2a,c1,0,0.25
v2a,c2,1,0.25
"""


def test_retrieval_from_csv_hand_computed(tmp_path):
    path = tmp_path / "seed_0.csv"
    path.write_text(PER_QUERY_CSV)
    m = metrics_from_csv(path, "retrieval")
    assert list(m) == ["map_a2v", "map_v2a", "map_mean"]
    # a2v: (1 + 0.5 + 0.75) / 3 = 0.75; v2a: (1 + 0.25 + 0.25) / 3 = 0.5; mean: (0.75 + 0.5) / 2
    assert m == pytest.approx({"map_a2v": 0.75, "map_v2a": 0.5, "map_mean": 0.625}, rel=0, abs=1e-15)


def test_retrieval_from_csv_recomputes_what_retrieval_metrics_wrote(tmp_path):
    # 3 clips, classes [0, 0, 1]; audio and visual embeddings in 2-D.
    audio = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    visual = np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0]])
    labels = np.array([0, 0, 1])
    # a2v, query 0 (class 0): cos to v = [1, 0.98, 0] -> ranks v0 (rel), v1 (rel), v2: AP = (1/1 + 2/2) / 2 = 1
    # a2v, query 1 (class 0): cos to v = [0, 0.196, 1] -> v2, v1 (rel), v0 (rel): AP = (1/2 + 2/3) / 2 = 7/12
    # a2v, query 2 (class 1): cos to v = [0.995, 0.999, 0.0995] -> v1, v0, v2 (rel): AP = 1/3
    metrics, table = retrieval_metrics.retrieval_metrics(audio, visual, labels, ids=["a", "b", "c"])
    assert metrics["map_a2v"] == pytest.approx((1 + 7 / 12 + 1 / 3) / 3)
    path = tmp_path / "seed_1.csv"
    retrieval_metrics.write_per_query_ap(table, path)
    assert metrics_from_csv(path, "retrieval") == pytest.approx(metrics, rel=1e-15, abs=0)


def test_retrieval_cli(tmp_path, capsys):
    path = tmp_path / "seed_0.csv"
    path.write_text(PER_QUERY_CSV)
    assert main(["--metric-set", "retrieval", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[str(path)] == pytest.approx({"map_a2v": 0.75, "map_v2a": 0.5, "map_mean": 0.625})


@pytest.mark.parametrize(("text", "match"), [
    ("direction,id,label,ap\na2v,c0,0,1.0\n", r"seed_0.csv: per-query AP table has no 'v2a' rows"),
    ("direction,id,label,ap\na2v,c0,0,1.0\nv2a,c0,0,\n", r"seed_0.csv: column 'ap' must hold finite numbers; "
                                                         r"data row 1 holds ''"),
    ("direction,id,label,ap\na2v,c0,0,1.0\nv2a,c0,0,1.5\n", r"seed_0.csv: 1 AP value\(s\) outside \[0, 1\] in column "
                                                            r"'ap'; first at data row 1: 1.5 \(data rows count from 0"),
    ("id,label,pred\nc0,0.5,0.2\n", r"seed_0.csv: missing columns \['direction', 'ap'\]"),
])
def test_retrieval_from_csv_errors_name_the_file(tmp_path, capsys, text, match):
    path = tmp_path / "seed_0.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        metrics_from_csv(path, "retrieval")
    assert cli(["--metric-set", "retrieval", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1


def test_retrieval_from_csv_missing_file_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.csv not found: run `dvc repro evaluate`"):
        metrics_from_csv(tmp_path / "nope.csv", "retrieval")


def test_readings_are_the_classes_the_accuracies_compare() -> None:
    """What pipeline/predict.py prints next to r: acc7's rounded class and acc2_has0's side (MOSI), acc3's bin
    and acc2's side (CH-SIMS), with the same rounding and edges as the metrics."""
    pred = np.array([-3.7, -0.5, 0.0, 0.5, 1.5, 2.5])
    assert sentiment_readings(pred) == {"class7": [-3, 0, 0, 0, 2, 2],
                                        "polarity": ["negative", "negative"] + ["positive"] * 4}
    assert METRIC_SETS.get("mosi_mosei").readings is sentiment_readings
    assert sims_readings(np.array([-1.5, -0.1, 0.0, 0.1, 0.10001, 0.9])) == {
        "class3": ["negative", "negative", "neutral", "neutral", "positive", "positive"],
        "polarity": ["negative", "negative", "negative", "positive", "positive", "positive"]}
    assert METRIC_SETS.get("sims").readings is sims_readings and METRIC_SETS.get("retrieval").readings is None
    # a prediction read as the label's class counts as correct in acc7, and only then
    y = np.array([-3.0, 0.2, 0.0, -0.4, 2.0, 2.4])
    assert sentiment_metrics(pred, y)["acc7"] == np.mean(np.array(sentiment_readings(pred)["class7"])
                                                         == np.array(sentiment_readings(y)["class7"]))
