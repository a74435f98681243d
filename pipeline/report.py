"""Stage report: one Markdown page that says what a dataset's experiment shows, and what it does not.

Reads  metrics/<ds>/*.json                          test metrics over seeds + efficiency (evaluate)
       predictions/<ds>/<name>/seed_<s>.csv          per-clip test predictions (per-query APs), for the intervals
       models/<ds>/{teacher,teacher_self}/seed_<s>/preds.h5   saliency, the teacher's metrics per modality subset
       data/raw/<ds>/limits.json, oracle.csv         known limits (synthetic datasets that write them)
       dvclive/<ds>/{teacher,student_<name>}/seed_<s>/plots/metrics/   curves
Writes reports/<ds>/report.md, efficiency.png, saliency.png, curves.png, missing_modality.png (sentiment),
       msd_weights.png (when a student logged modality weights)

Command: python -m pipeline.report

The work, and how it is done: pipeline/evaluation/report.py.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from pipeline.core import paths
from pipeline.core.config import ReportParams, check_params, load_section, load_value
from pipeline.core.paths import FLOOR, SELF_TEACHER, TEACHER
from pipeline.core.runtime import entry_point, setup_logging, stage
from pipeline.distillation.families import parse_student
from pipeline.evaluation.report import Context, metric_set, read_limits, read_metrics, read_teachers, write_report

log = logging.getLogger(__name__)


def run(dataset: str, students: Sequence[str], seeds: Sequence[int], params: ReportParams) -> Path:
    """Read every model's metrics, the teachers' records, the limits and the curves; write the report."""
    if not seeds:
        raise ValueError("params `seeds` is empty: nothing to report")
    for name in students:
        parse_student(name)
    names = [TEACHER, SELF_TEACHER, FLOOR, *students]
    out_dir = paths.report_dir(dataset)
    report = out_dir / "report.md"
    reads = [paths.METRICS / dataset, paths.PREDICTIONS / dataset, paths.teacher_dir(dataset),
             paths.CURVES / dataset]
    with stage("report", reads, [report]):
        ctx = Context(dataset=dataset, seeds=list(seeds), students=list(students), params=params,
                      ms=metric_set(dataset),
                      models={n: read_metrics(dataset, n, seeds) for n in names},
                      teachers=read_teachers(dataset, seeds), limits=read_limits(dataset), scores={})
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob("*.png"):  # a figure of an earlier run must not outlive its data
            stale.unlink()
        figures = write_report(ctx, out_dir)
        log.info("report: %d models, %d seeds, figures %s", len(names), len(seeds), ", ".join(figures))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    setup_logging()
    check_params()
    run(load_value("dataset"), load_section("distill").students, load_value("seeds"), load_section("report"))


if __name__ == "__main__":
    entry_point(main)
