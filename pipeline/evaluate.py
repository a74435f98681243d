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

One stage for every model: a process start costs about as much as scoring a model, and the
report needs all of them anyway. The metrics follow the MMSA conventions (pipeline/evaluation/metrics.py),
CH-SIMS's variant for `sims`; mean and std (ddof = 1) are over `seeds`. Each seed's numbers are
recomputable from its CSV: `python -m pipeline.evaluation.metrics predictions/<ds>/<name>/seed_<s>.csv`
(`--metric-set sims`). A model is rebuilt from its saved files, not from today's params.

Retrieval datasets: map_a2v, map_v2a, map_mean over the test clips (retrieval.retrieval_metrics:
each clip's audio queries every test clip's visual item, and the reverse; cosine similarity, relevant
= same class; a clip without audio (visual) features is neither an audio (visual) query nor item).
A student ranks by its branches' embeddings. The teacher, which sees both modalities at once, is
scored as a retrieval model through its modality-specific outputs: a clip's audio item is
softmax(c_T^audio), the class posterior given its audio alone, and its visual item softmax(c_T^video)
(stored by the teacher stage as logits_only_<m>); the floor likewise through its linear probes.

Efficiency (the models of the first seed; latency depends on the architecture, not on the weights
or the seed): `params` counts every parameter inference needs (the teacher includes the frozen
CLIP; a multimodal or retrieval student too, since it needs CLIP frame embeddings), and latency
is wall time per clip from the raw inputs to the prediction (latency.py), at batch 1 and batched
(`evaluate.latency.batch_size`), on the machine at hand (`device` is recorded). Students of the
same kind share one architecture, so latency is measured once per kind, on the first such student,
and the others record `latency_of` (timing them all would only rank measurement noise). The
`teacher_self` control is never deployed: its latency is not measured (null).
"""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.core import paths
from pipeline.core.config import ClipParams, EvaluateParams, ExtractParams, check_params, load_section, load_value
from pipeline.core.runtime import setup_logging, stage
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
    main()
