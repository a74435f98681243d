"""evaluate's per-seed predictions: the dataset's metric set scores exactly the values written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation.metrics import METRIC_NAMES, SIMS_METRIC_NAMES, metrics_from_csv
from pipeline.tasks.sentiment import write_predictions


@pytest.mark.parametrize(("metric_set", "names"), [("mosi_mosei", METRIC_NAMES), ("sims", SIMS_METRIC_NAMES)])
def test_write_predictions_scores_with_the_metric_set(tmp_path: Path, metric_set: str, names: tuple) -> None:
    test = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": [-0.8, -0.2, 0.4, 1.0]})
    pred = np.array([-0.6, 0.1, 0.3, 0.5])
    csv = tmp_path / "seed_0.csv"
    metrics = write_predictions(test, pred, csv, metric_set)
    assert tuple(metrics) == names
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(pred - test["label"])))
    assert metrics_from_csv(csv, metric_set) == pytest.approx(metrics, rel=0, abs=0)
