"""Stage report: one Markdown page that says what a dataset's experiment shows, and what it does not.

Reads  metrics/<ds>/*.json                          test metrics over seeds + efficiency (evaluate)
       predictions/<ds>/<name>/seed_<s>.csv          per-clip test predictions (per-query APs), for the intervals
       models/<ds>/{teacher,teacher_self}/seed_<s>/preds.h5   saliency, the teacher's metrics per modality subset
       data/raw/<ds>/limits.json, oracle.csv         known limits (synthetic datasets that write them)
       dvclive/<ds>/{teacher,student_<name>}/seed_<s>/plots/metrics/   curves
Writes reports/<ds>/report.md, efficiency.png, saliency.png, curves.png, missing_modality.png (sentiment),
       msd_weights.png (when a student logged modality weights)

Command: python -m pipeline.report

What is read and compared follows the dataset's metric set (``DatasetSpec.metric_set``): its metrics
are the tables' columns, its ``primary`` metric (MAE for the sentiment sets, lower is better;
``map_mean`` for retrieval, higher is better) is the one comparisons use, and its ``curve`` is the
validation curve drawn for every model that logged it.

The students come in families (families.py), each in its paper's setting and each compared with its
own `<family>-none`. Every number on the page is defined where it is printed (the report's
"Definitions" section repeats them):

* **metric cells**: ``mean ± std`` over `seeds` of each seed's test metric (metrics.summarize_seeds).
* **comparisons** (stats.py): per test clip, the model's score (sentiment: absolute error |pred - y|,
  whose mean is the MAE; retrieval: the mean AP of the clip's queries, whose mean is about the mAP),
  averaged over seeds; the difference to the baseline with a BCa bootstrap 95 % interval over test
  clips, a two-sided sign-flip test, and Holm's correction across the family's methods. A difference
  *holds* when the Holm-adjusted p < `report.alpha` and the interval excludes 0.
* **controls**: `va-videoadviser` against `va-self` (what multimodal knowledge adds over a teacher
  that saw only the transcript), `<family>-none` against the floor (the linear model it must beat),
  and the text students against the teacher with video (and audio) missing at test time.
* **known limits** (synthetic datasets): the Bayes-optimal MAE given each subset of modalities, from
  the generator's own process (limits.py): its Monte Carlo expectation, and its value on these test
  clips. "Closes X % of the gap" = (MAE(none) - MAE(method)) / (MAE(none) - limit on the test clips),
  the limit being what the family's student sees (va: text; msd: all modalities).
* **population saliency**, **curves**, **MSD weights**: as before (teacher.py, training.py).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from pipeline.core import paths
from pipeline.core.config import ReportParams, check_params, load_section, load_value
from pipeline.core.paths import SELF_TEACHER, TEACHER
from pipeline.core.runtime import setup_logging, stage
from pipeline.data.datasets import DATASETS
from pipeline.distillation.families import parse_student
from pipeline.evaluation.report import (
    FLOOR,
    Context,
    metric_set,
    read_limits,
    read_metrics,
    read_teachers,
    write_report,
)

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
                      ms=metric_set(dataset), task=DATASETS.get(dataset).task,
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
    main()
