"""Stage teacher: train the CLIP prompt teacher (and its text-only control) and write their predictions.

Reads  data/prepared/<ds>/manifest.csv, data/features/<ds>/{video,audio,text}.h5
Writes models/<ds>/teacher/seed_<s>/teacher.pt    weights + the config that built them + provenance (with the
                                                  CLIP and extract.video / extract.audio settings of its features)
       models/<ds>/teacher/seed_<s>/preds.h5      per clip: split, label, logits (K), reg (r_T),
                                                  reg_only_<m> / reg_without_<m> (only m kept / m masked),
                                                  saliency_<m> (retrieval: logits_only_<m>, logits_without_<m>
                                                  (K) instead of reg_*); attrs: population saliency per
                                                  modality (train mean) and the teacher's metrics given
                                                  each subset of its modalities (`subset_metrics`)
       models/<ds>/teacher_self/seed_<s>/         the same for the `self` control teacher (below)
       dvclive/<ds>/{teacher,teacher_self}/seed_<s>/   training curves
for every seed in `seeds`.

Command: python -m pipeline.teacher
   or    torchrun --nproc-per-node N -m pipeline.teacher    (DDP; rank 0 writes)

The work, and how it is done: pipeline/training/teacher.py.
"""

from __future__ import annotations

import argparse
import logging

import torch

from pipeline.core import paths
from pipeline.core.config import (
    ClipParams,
    ExtractParams,
    FeatureSettings,
    TeacherParams,
    check_params,
    load_section,
    load_value,
)
from pipeline.core.identity import run_identity
from pipeline.core.paths import SELF_TEACHER, TEACHER
from pipeline.core.runtime import (
    entry_point,
    process_group,
    run_seeds,
    setup_logging,
    stage,
)
from pipeline.data.datasets import read_manifest
from pipeline.features.arrays import feature_files, load_features
from pipeline.features.precomputed import resolved
from pipeline.tasks.table import task_of
from pipeline.training.teacher import train_teachers

log = logging.getLogger(__name__)


def run(dataset: str, params: TeacherParams, clip: ClipParams, extract: ExtractParams, seeds: list[int]) -> None:
    manifest = read_manifest(paths.manifest(dataset))
    outputs = [paths.teacher_dir(dataset, n) for n in (TEACHER, SELF_TEACHER)]
    reads = [paths.manifest(dataset), *feature_files(dataset)]
    with stage("teacher", reads, outputs):
        data = load_features(manifest, dataset, clip, extract, params.video_tokens, params.audio_tokens)
        labels = torch.tensor(manifest["label"].to_numpy(), dtype=torch.float32)
        task, identity = task_of(dataset), run_identity("teacher", reads)
        features = FeatureSettings.of(clip, resolved(extract, dataset))  # recorded in each checkpoint (predict)
        run_seeds(lambda seed: train_teachers(data, labels, manifest["split"].to_numpy(), params, seed, dataset, task,
                                              identity=identity, features=features), seeds, params.train.device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    setup_logging()
    check_params()
    with process_group():
        run(load_value("dataset"), load_section("teacher"), load_section("clip"), load_section("extract"),
            load_value("seeds"))


if __name__ == "__main__":
    entry_point(main)
