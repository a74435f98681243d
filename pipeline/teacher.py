"""Stage teacher: train the CLIP prompt teacher (and its text-only control) and write their predictions.

Reads  data/prepared/<ds>/manifest.csv, data/features/<ds>/{video,audio,text}.h5
Writes models/<ds>/teacher/seed_<s>/teacher.pt    weights + the config that built them
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

Step 1 of VideoAdviser's step distillation lives here: classification logits over the K
sentiment bins -> regression logit r_T = g(c). Schedules: `joint` trains everything with
ce_weight * CE + L1; `two_phase` trains the classifier with CE, then freezes it and fits g
with L1 (each phase `train.epochs` epochs at most; `train.patience` stops either early).

**Modality dropout** (`teacher.modality_dropout` = p): every training batch masks each of a
clip's present modalities independently with probability p, keeping at least one
(models.modality_dropout). The outputs stored below are outputs on masked inputs, so the
teacher must have seen masked inputs while it trained; without it, its mask vectors never
receive a gradient and r_T^m is an extrapolation.

Modality-specific predictions and saliency (MSD, Jin et al. 2021): r_T^m is the teacher's
output with only modality m kept (the others masked as `teacher.mask` says), and the
saliency of m on a clip (`teacher.saliency`) is

    prediction:  s_m(x) = |r_T(x) - r_T(x without m)|          how much the output moves
    loss:        s_m(x) = |y - r_T(x without m)| - |y - r_T(x)|  how much the L1 loss rises (can be < 0)

The population saliency of m is the mean of s_m over the training clips. With the three
modalities, "only m" and "without m" cover every non-empty subset, so the teacher's own
quality given each subset (validation and test, the dataset's metric set) is computed from
the same columns and recorded in preds.h5 (`subset_metrics`, keyed like `video+text`).

**The `self` control** (DESIGN.md "Trustworthy comparison"): models/<ds>/teacher_self is the same
architecture and training restricted to the modalities the VideoAdviser family's student sees
(sentiment: the transcript alone, video and audio removed from every clip), so that the `self`
student, distilled from it with exactly VideoAdviser's step-2 loss, differs from `videoadviser`
only in what the teacher saw: `videoadviser - self` is what multimodal knowledge adds. On a
retrieval dataset that student sees every modality the teacher sees, so the two teachers are the
same model and teacher_self is a copy (logged).

Retrieval datasets (task `retrieval`, labels = class indices 0..K-1, the prompts are the class
names): the teacher is the same model classifying the clip from audio and video (no transcript:
text is masked everywhere), trained with CE(c, y) on its classification parameters and selected
on validation cross-entropy; g is not used. It stores logits_only_<m> / logits_without_<m> (N, K)
instead of reg_*, its subset metrics are accuracy and cross-entropy, and its saliencies compare
class distributions p = softmax(c):

    prediction:  s_m(x) = 1/2 sum_k |p_k(x) - p_k(x without m)|   total variation, in [0, 1]
    loss:        s_m(x) = CE(c(x without m), y) - CE(c(x), y)      rise of the cross-entropy (can be < 0)
"""

from __future__ import annotations

import argparse
import logging

import torch

from pipeline.core import paths
from pipeline.core.config import (
    ClipParams,
    ExtractParams,
    TeacherParams,
    check_params,
    load_section,
    load_value,
)
from pipeline.core.paths import SELF_TEACHER, TEACHER
from pipeline.core.runtime import (
    process_group,
    run_seeds,
    setup_logging,
    stage,
)
from pipeline.data.datasets import read_manifest
from pipeline.features.arrays import feature_files, load_features
from pipeline.tasks.table import task_of
from pipeline.training.teacher import train_teachers

log = logging.getLogger(__name__)


def run(dataset: str, params: TeacherParams, clip: ClipParams, extract: ExtractParams, seeds: list[int]) -> None:
    manifest = read_manifest(paths.manifest(dataset))
    outputs = [paths.teacher_dir(dataset, n) for n in (TEACHER, SELF_TEACHER)]
    with stage("teacher", [paths.manifest(dataset), *feature_files(dataset)], outputs):
        data = load_features(manifest, dataset, clip, extract, params.video_tokens, params.audio_tokens)
        labels = torch.tensor(manifest["label"].to_numpy(), dtype=torch.float32)
        task = task_of(dataset)
        run_seeds(lambda seed: train_teachers(data, labels, manifest["split"].to_numpy(), params, seed, dataset, task),
                  seeds, params.train.device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    setup_logging()
    check_params()
    with process_group():
        run(load_value("dataset"), load_section("teacher"), load_section("clip"), load_section("extract"),
            load_value("seeds"))


if __name__ == "__main__":
    main()
