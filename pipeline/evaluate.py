"""Stage evaluate@<method> / evaluate_teacher: test-split metrics and per-clip predictions.

Reads  models/<ds>/student_<method>/ (or models/<ds>/teacher_preds.h5 for `teacher`),
       data/prepared/<ds>/manifest.csv
Writes metrics/<ds>/<name>.json       mae, corr, acc7, acc5, acc2_has0, f1_has0, acc2_non0, f1_non0
       predictions/<ds>/<name>.csv    id, label, pred (test split)

Command: python -m pipeline.evaluate {teacher,<method>}

The metrics follow the MMSA conventions (pipeline/metrics.py). The JSON is recomputable
from the CSV: `python -m pipeline.metrics predictions/<ds>/<name>.csv` gives the same numbers.
The student is rebuilt from its saved directory, not from today's params.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import paths
from .config import EvaluateParams, check_params, load_section, load_value
from .datasets import read_manifest
from .distill import predict_student, tokenize
from .metrics import CSV_COLUMNS, json_safe, sentiment_metrics
from .models import load_student
from .runtime import resolve_device, setup_logging, stage
from .teacher import read_teacher_predictions

log = logging.getLogger(__name__)
TEACHER = "teacher"


def student_test_predictions(manifest: pd.DataFrame, model_dir: Path, params: EvaluateParams) -> np.ndarray:
    model, tokenizer, meta = load_student(model_dir)
    model.to(resolve_device(params.device))
    tokens = tokenize(tokenizer, manifest["text"].tolist(), meta["config"]["max_length"])
    return predict_student(model, tokens, params.batch_size).double().numpy()


def write_results(test: pd.DataFrame, pred: np.ndarray, metrics_path: Path, csv_path: Path) -> dict[str, float]:
    """Metrics from exactly the values written to the CSV (float64, full precision)."""
    table = pd.DataFrame({"id": test["id"].to_numpy(), "label": test["label"].to_numpy(np.float64), "pred": pred})
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    table.loc[:, list(CSV_COLUMNS)].to_csv(csv_path, index=False)
    metrics = sentiment_metrics(table["pred"].to_numpy(), table["label"].to_numpy())
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(json_safe(metrics), indent=2) + "\n")  # nan -> null
    return metrics


def run(name: str, dataset: str, params: EvaluateParams) -> dict[str, float]:
    source = paths.teacher_predictions(dataset) if name == TEACHER else paths.student_dir(dataset, name)
    metrics_path, csv_path = paths.metrics(dataset, name), paths.predictions(dataset, name)
    with stage(f"evaluate@{name}", [paths.manifest(dataset), source], [metrics_path, csv_path]):
        manifest = read_manifest(paths.manifest(dataset))
        test = manifest[manifest["split"] == "test"].reset_index(drop=True)
        if name == TEACHER:
            pred = read_teacher_predictions(test, source)["reg"].double().numpy()
        else:
            pred = student_test_predictions(test, source, params)
        metrics = write_results(test, pred, metrics_path, csv_path)
        log.info("%s on %d test clips: %s", name, len(test), ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="`teacher` or a distillation method (a student trained by distill@<method>)")
    args = parser.parse_args(argv)
    setup_logging()
    check_params()
    run(args.name, load_value("dataset"), load_section("evaluate"))


if __name__ == "__main__":
    main()
