"""Stage distill@<student>: train one student, optionally distilled from a teacher, once per seed.

Reads  data/prepared/<ds>/manifest.csv, models/<ds>/teacher/seed_<s>/preds.h5 (`va-self`:
       models/<ds>/teacher_self/seed_<s>/preds.h5), data/features/<ds>/{video,audio,text}.h5
       (multimodal and retrieval students)
Writes models/<ds>/student_<student>/seed_<s>/  sentiment: HF save_pretrained dir (encoder + tokenizer),
                                                student_head.pt, student.json (config + provenance);
                                                retrieval: retrieval_student.pt; a student that reads
                                                features records the CLIP and extract settings of them
       dvclive/<ds>/student_<student>/seed_<s>/ training curves
for every seed in `seeds`; the student of seed s learns from the teacher of seed s.

Command: python -m pipeline.distill <student>          e.g. va-videoadviser, msd-learned
   or    torchrun --nproc-per-node N -m pipeline.distill <student>    (DDP; rank 0 writes)

A student is `<family>-<method>` (distillation/families.py): the `va` family trains the cheap student
(VideoAdviser's setting: text-only for sentiment), the `msd` family the multimodal one (MSD's setting).
The methods: distillation/methods.py; the trainer: distillation/train.py; what each task's student is
and learns: tasks/sentiment.py, tasks/retrieval.py.
"""

from __future__ import annotations

import argparse

import torch

from pipeline.core import paths
from pipeline.core.config import (
    ClipParams,
    DistillParams,
    ExtractParams,
    FeatureSettings,
    check_params,
    load_section,
    load_value,
    to_dict,
)
from pipeline.core.identity import input_identity, run_identity
from pipeline.core.runtime import (
    entry_point,
    is_main_process,
    process_group,
    run_seeds,
    seed_everything,
    setup_logging,
    stage,
)
from pipeline.data.datasets import read_manifest
from pipeline.distillation.families import parse_student
from pipeline.distillation.methods import METHODS
from pipeline.distillation.train import train_student
from pipeline.features.arrays import feature_files, load_features
from pipeline.features.precomputed import resolved
from pipeline.tasks.table import task_of
from pipeline.training.teacher import read_teacher_predictions


def run(name: str, dataset: str, params: DistillParams, seeds: list[int], clip: ClipParams,
        extract: ExtractParams) -> None:
    task = task_of(dataset)
    student = parse_student(name)
    method = METHODS.get(student.method)
    preds = {s: paths.teacher_predictions(dataset, s, method.teacher) for s in seeds}
    multimodal = task.student_kinds[student.family.name] != "text"
    reads = [paths.manifest(dataset), *(feature_files(dataset) if multimodal else [])]
    with stage(f"distill@{name}", [*reads, *preds.values()], [paths.student_root(dataset, name)]):
        manifest = read_manifest(paths.manifest(dataset))
        features = (load_features(manifest, dataset, clip, extract, params.student.video_tokens,
                                  params.student.audio_tokens) if multimodal else None)
        identity = run_identity("distill", reads)
        labels = torch.tensor(manifest["label"].to_numpy(), dtype=torch.float32)

        def train(seed: int) -> None:
            seed_everything(seed)
            teacher = read_teacher_predictions(manifest, preds[seed])
            model, tokenizer, best = train_student(task, student, manifest["text"].tolist(), labels,
                                                   manifest["split"].to_numpy(), teacher, features, params, seed,
                                                   dataset, identity={**identity, **input_identity([preds[seed]])})
            if is_main_process():
                provenance = {"student": name, "family": student.family.name, "method": student.method,
                              "teacher": method.teacher, "params": to_dict(params), "seed": seed,
                              "dataset": dataset, "best": best,
                              **({"classes": features.classes,
                                  **FeatureSettings.of(clip, resolved(extract, dataset)).record()}
                                 if features is not None else {})}
                task.save_student(paths.student_dir(dataset, name, seed), model, tokenizer, provenance, params)

        task.preload_student()
        run_seeds(train, seeds, params.train.device, per_core=2)  # tiny students: two processes per core


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("student", help="<family>-<method>, e.g. va-videoadviser (distillation/families.py)")
    args = parser.parse_args(argv)
    setup_logging()
    check_params()
    with process_group():
        run(args.student, load_value("dataset"), load_section("distill"), load_value("seeds"), load_section("clip"),
            load_section("extract"))


if __name__ == "__main__":
    entry_point(main)
