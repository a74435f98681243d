"""Stage evaluate: test metrics over seeds of every model, per-clip predictions, size and end-to-end latency.

Reads  models/<ds>/{teacher,teacher_self,floor,student_<student>}/, data/prepared/<ds>/manifest.csv,
       the feature files (multimodal and retrieval students), the raw test clips (latency)
Writes metrics/<ds>/<name>.json             {"mean": {...}, "std": {...}, "seeds": {"<s>": {...}},
                                             "efficiency": {...}} with the dataset's metric set, for
                                             name = teacher, teacher_self, floor and every student;
                                             teacher.json also has "given": {subset: {mean, std, seeds}},
                                             the teacher's test metrics given each subset of its
                                             modalities (sentiment; the missing-modality evaluation)
       predictions/<ds>/<name>/seed_<s>.csv  id, label, pred (test split); the teacher's given a subset
                                             in predictions/<ds>/teacher/given_<subset>/; retrieval:
                                             the per-query AP table direction, id, label, ap

Command: python -m pipeline.evaluate

The work, and how it is done: pipeline/evaluation/scoring.py.
"""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.core import paths
from pipeline.core.config import ClipParams, EvaluateParams, ExtractParams, check_params, load_section, load_value
from pipeline.core.runtime import entry_point, setup_logging, stage
from pipeline.distillation.families import parse_student
from pipeline.evaluation.scoring import Evaluation, model_names


def run(dataset: str, params: EvaluateParams, seeds: list[int], students: list[str], clip: ClipParams,
        extract: ExtractParams) -> dict[str, dict[str, Any]]:
    for name in students:
        parse_student(name)
    names = model_names(students)
    with stage("evaluate", [paths.manifest(dataset), paths.MODELS / dataset],
               [paths.METRICS / dataset, paths.PREDICTIONS / dataset]):
        evaluation = Evaluation(dataset, params, clip, extract, seeds)
        return {name: evaluation.model(name) for name in names}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    setup_logging()
    check_params()
    run(load_value("dataset"), load_section("evaluate"), load_value("seeds"), load_section("distill").students,
        load_section("clip"), load_section("extract"))


if __name__ == "__main__":
    entry_point(main)
