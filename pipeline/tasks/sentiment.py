"""Sentiment regression (CMU-MOSI, CMU-MOSEI, CH-SIMS, synthetic_sentiment): a label y in [-3, 3] (SIMS
[-1, 1]) per clip, scored with the dataset's metric set (evaluation/metrics.py: MAE, correlation,
binary and 5/7-class accuracies).

The teacher regresses y (`reg`, VideoAdviser's step 1 from its K sentiment-bin logits); the `va`
family trains the text-only student (RoBERTa over the transcript), the `msd` family the late-fusion
multimodal student (models/students.py). Students are selected on validation MAE. The objective:

    task      |r_S - y|                                                 losses.task_loss
    kd        T^2 KL(p_T^T || p_S^T) on the K bin logits                 losses.kd_loss
    match     D(r_S, r_T)                                               losses.videoadviser_loss
    modality  sum_m w_m D(S(x_m), r_T^m), S(x_m) the student with only m  losses.msd_loss
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.core import paths
from pipeline.core.config import MODALITIES, DistillParams, MSDParams
from pipeline.core.paths import TEACHER
from pipeline.distillation.losses import classification_loss, kd_loss, msd_loss, task_loss, videoadviser_loss
from pipeline.distillation.msd import student_columns
from pipeline.evaluation.metrics import CSV_COLUMNS, METRIC_SETS
from pipeline.features.arrays import FeatureArrays
from pipeline.features.store import read_table
from pipeline.models.masks import only_modality, set_feature_stats
from pipeline.tasks.base import TestSet
from pipeline.training.teacher import subset_columns

Batch = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class SentimentObjective:
    def task_loss(self, out: Batch, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return task_loss(out["reg"], batch["y"]), {}

    def kd(self, out: Batch, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        return kd_loss(out["logits"], teacher_logits, temperature)

    def match(self, out: Batch, batch: Batch, distance: str) -> torch.Tensor:
        return videoadviser_loss(out["reg"], batch["teacher_reg"], distance)

    def modality(self, out: Batch, batch: Batch, params: MSDParams) -> torch.Tensor:
        """out["mod"] (B, M_S) = S(x_m); batch["teacher_mod"] (B, M_S) = r_T^m; batch["weights"] (B, M_S)."""
        return msd_loss(out["mod"], batch["teacher_mod"], batch["weights"], params.distance)


class SentimentTask:
    name = "sentiment"
    teacher_output = "reg"
    self_modalities = ("text",)
    student_kinds = {"va": "text", "msd": "multimodal"}
    valid_metric = "mae"
    maximize = False

    def build_student(self, kind: str, params: DistillParams, texts: list[str], train_idx: torch.Tensor,
                      features: FeatureArrays | None, num_classes: int, second_order: bool
                      ) -> tuple[nn.Module, Any, Batch]:
        from pipeline.models.students import build_student, student_inputs, tokenize  # transformers: ~5 s

        model, tokenizer = build_student(params.student, kind, [texts[i] for i in train_idx], num_classes, features,
                                         second_order=second_order)
        if features is not None:
            set_feature_stats(model, "audio", features.audio[train_idx],
                              features.present[train_idx, MODALITIES.index("audio")])
        return model, tokenizer, student_inputs(tokenize(tokenizer, texts, params.student.max_length), features)

    def preload_student(self) -> None:
        import pipeline.models.students  # noqa: F401  transformers, ~5 s: once, not once per forked seed

    def student_modalities(self, model: nn.Module) -> tuple[str, ...]:
        return model.modalities

    def teacher_targets(self, teacher: dict[str, torch.Tensor], rows: torch.Tensor, modalities: tuple[str, ...],
                        modality_specific: bool) -> Batch:
        out = {"teacher_logits": teacher["logits"][rows]}
        if "reg" in teacher:
            out["teacher_reg"] = teacher["reg"][rows]
        if modality_specific:
            out.update(teacher_mod=student_columns(teacher["reg_only"][rows], modalities),
                       saliency=teacher["saliency"][rows])
        return out

    def forward(self, net: Callable[..., Batch], inputs: Batch, modalities: tuple[str, ...],
                modality_specific: bool) -> Batch:
        """The outputs; with `modality_specific`, also out["mod"] (B, M_S) = S(x_m) for each modality m the
        student sees. A text-only student sees one modality, so S(x_text) = S(x) is its ordinary output; a
        multimodal student runs once with 1 + M_S masking patterns (present (1 + M_S, B, 3): the clip's own,
        then all but the k-th modality masked), so its encoders run once and DDP sees one forward."""
        if not modality_specific:
            return net(**inputs)
        if modalities == ("text",):
            out = net(**inputs)
            return {**out, "mod": out["reg"].unsqueeze(1)}  # (B, 1)
        present = inputs["present"]  # (B, 3)
        patterns = torch.stack([present, *(only_modality(present, MODALITIES.index(m)) for m in modalities)])
        out = net(**{**inputs, "present": patterns})  # reg (1 + M_S, B), logits (1 + M_S, B, K)
        return {"reg": out["reg"][0], "logits": out["logits"][0], "mod": out["reg"][1:].T}  # (B,), (B, K), (B, M_S)

    def objective(self, params: DistillParams) -> SentimentObjective:
        return SentimentObjective()

    def validate(self, model: nn.Module, inputs: Batch, labels: torch.Tensor, present: torch.Tensor,
                 batch_size: int) -> float:
        from pipeline.models.students import predict_student

        return task_loss(predict_student(model, inputs, batch_size), labels).item()

    def save_student(self, out_dir: Path, model: nn.Module, tokenizer: Any, extra: dict[str, Any],
                     params: DistillParams) -> None:
        from pipeline.models.students import save_student

        save_student(out_dir, model, tokenizer, extra)

    def class_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """CE over the K sentiment bins of the continuous label (losses.classification_loss)."""
        return classification_loss(logits, y)

    def saliency(self, full: torch.Tensor, without: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
        """s_m(x) per clip from r_T(x) and r_T(x without m), (N,) each:
        prediction |r_T(x) - r_T(x without m)|; loss |y - r_T(x without m)| - |y - r_T(x)| (can be < 0)."""
        if kind == "prediction":
            return (full - without).abs()
        return (labels - without).abs() - (labels - full).abs()

    def teacher_metrics(self, pred: np.ndarray, labels: np.ndarray, metric_set: str) -> dict[str, float]:
        return METRIC_SETS.get(metric_set).compute(pred, labels)

    def teacher_primary(self, metric_set: str) -> str:
        return METRIC_SETS.get(metric_set).primary

    # ----------------------------------------------------------------------- evaluation

    teacher_inputs = "+".join(MODALITIES)

    def teacher_test(self, ev: TestSet, name: str, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """r_T of the test clips and, for the main teacher, r_T given each subset of its modalities (preds.h5)."""
        columns, config = read_table(paths.teacher_predictions(ev.dataset, seed, name), stage="teacher")
        row = pd.Series(np.arange(len(columns["id"])), index=columns["id"]).loc[ev.test["id"]].to_numpy()
        subsets = subset_columns(config["modalities"], self.teacher_output) if name == TEACHER else {}
        given = {subset: np.asarray(columns[column], dtype=np.float64)[row] for subset, column in subsets.items()}
        return np.asarray(columns[self.teacher_output], dtype=np.float64)[row], given

    def student_test(self, ev: TestSet, model_dir: Path) -> np.ndarray:
        from pipeline.models.students import load_student, predict_student, student_inputs, tokenize

        model, tokenizer, meta = load_student(model_dir)
        model.to(ev.device)
        config = meta["config"]
        features = (ev.test_features(config["video_tokens"], config["audio_tokens"])
                    if config["kind"] == "multimodal" else None)
        inputs = student_inputs(tokenize(tokenizer, ev.test["text"].tolist(), config["max_length"]), features)
        return predict_student(model, inputs, ev.params.batch_size).double().numpy()

    def score(self, ev: TestSet, outputs: np.ndarray, csv_path: Path) -> dict[str, float]:
        return write_predictions(ev.test, outputs, csv_path, ev.metric_set)

    def student_pipeline(self, ev: TestSet, model_dir: Path) -> tuple[str, Any, str]:
        from pipeline.evaluation import latency  # decoders: evaluate only

        pipeline, meta = latency.student_pipeline(model_dir, ev.device, ev.media_inputs)
        kind = meta["config"]["kind"]
        return kind, pipeline, "+".join(MODALITIES) if kind == "multimodal" else "text"


def write_predictions(test: pd.DataFrame, pred: np.ndarray, csv_path: Path, metric_set: str) -> dict[str, float]:
    """Write id, label, pred and return the metrics of exactly those values (float64, full precision),
    with the dataset's metric set (MOSI/MOSEI conventions, or CH-SIMS's)."""
    table = pd.DataFrame({"id": test["id"].to_numpy(), "label": test["label"].to_numpy(np.float64), "pred": pred})
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    table.loc[:, list(CSV_COLUMNS)].to_csv(csv_path, index=False)
    return METRIC_SETS.get(metric_set).compute(table["pred"].to_numpy(), table["label"].to_numpy())


TASK = SentimentTask()
