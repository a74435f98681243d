"""A saved model as a predictor of new inputs (the command pipeline/predict.py): a model directory -> the
raw-input pipeline that runs it (evaluation/latency.py, with the CLIP and extraction settings its checkpoint
records), and its outputs read as predictions.

A model directory is recognised from its files:

    teacher.pt              a teacher of stage teacher (models/<ds>/teacher/seed_<s>, or teacher_self), given
                            the modalities it was trained with (its checkpoint's `modalities`): sentiment:
                            a video (frames and audio track) and its transcript -> r (the `self` control:
                            the transcript alone); retrieval: a video -> its class
    student.json            a student of stage distill (models/<ds>/student_<name>/seed_<s>), `config.kind`
                            text: a transcript -> r; multimodal: a video and its transcript -> r
    retrieval_student.pt    a retrieval student of stage distill: a video -> its class by each branch

What one prediction holds (`Predictor.__call__`):

    r                       a sentiment model's regression output, on its dataset's label scale
                            (`label_range`), and the classes its metric set's accuracies read r as
                            (evaluation/metrics.py readings: MOSI's `class7` and `polarity`, CH-SIMS's
                            `class3` and `polarity`)
    class, p, logits        a retrieval teacher: the argmax of its K logits over the dataset's classes,
                            its softmax probability, and the K logits
    audio_class, audio_p,   a retrieval student: the shared classifier's class and probability from the
    visual_class, visual_p, clip's audio and from its frames, and the two embeddings (E) that retrieval
    audio_emb, visual_emb   ranks by
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.core.config import FeatureSettings, recorded_features
from pipeline.core.errors import MissingInput, UserError
from pipeline.core.paths import TEACHER_CHECKPOINT
from pipeline.data.datasets import DATASETS
from pipeline.evaluation.latency import (
    MediaInputs,
    Outputs,
    Row,
    media_inputs,
    retrieval_student_pipeline,
    student_pipeline,
    teacher_pipeline,
)
from pipeline.evaluation.metrics import METRIC_SETS
from pipeline.models.retrieval_student import RETRIEVAL_CHECKPOINT
from pipeline.models.students import STUDENT_CONFIG
from pipeline.tasks.table import task_of

log = logging.getLogger(__name__)

Prediction = dict[str, Any]  # output name -> value (a number, a class name, or a list for an embedding)
MODEL_FILES = (f"{TEACHER_CHECKPOINT} (a teacher: models/<ds>/teacher/seed_<s>), {STUDENT_CONFIG} (a text or "
               f"multimodal student: models/<ds>/student_<name>/seed_<s>) or {RETRIEVAL_CHECKPOINT} (a retrieval "
               "student)")


def model_kind(model_dir: Path) -> str:
    """teacher | text | multimodal | retrieval, from the files `model_dir` holds (module docstring)."""
    if not model_dir.is_dir():
        raise MissingInput(f"{model_dir}: no such model directory; a model directory holds {MODEL_FILES}")
    if (model_dir / TEACHER_CHECKPOINT).is_file():
        return "teacher"
    if (model_dir / RETRIEVAL_CHECKPOINT).is_file():
        return "retrieval"
    if (model_dir / STUDENT_CONFIG).is_file():
        return json.loads((model_dir / STUDENT_CONFIG).read_text())["config"]["kind"]
    raise UserError(f"{model_dir} is not a model directory: it holds none of {MODEL_FILES}")


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A loaded model: `reads` says what each input row needs (`text`, `video` or both; a video brings its
    audio track), `pipeline.outputs(rows)` runs it from raw inputs, `read` turns a batch's outputs into one
    prediction per row."""

    model_dir: Path
    kind: str  # teacher | text | multimodal | retrieval
    dataset: str  # the dataset it was trained on (its provenance)
    reads: tuple[str, ...]
    pipeline: Any  # evaluation/latency.py: TeacherPipeline, TextStudentPipeline, ...
    read: Callable[[Outputs], list[Prediction]]

    def __call__(self, rows: Sequence[Row], batch_size: int) -> list[Prediction]:
        """One prediction per row, `batch_size` rows per forward."""
        predictions: list[Prediction] = []
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                predictions.extend(self.read(self.pipeline.outputs(rows[start : start + batch_size])))
        return predictions


def load_predictor(model_dir: Path, device: torch.device, fallback: Callable[[], FeatureSettings]) -> Predictor:
    """The model saved in `model_dir` on `device`. A model that reads video decodes it with the settings its
    checkpoint records, or `fallback()`'s for a model saved before they were recorded (with a warning); a
    video whose frames cannot be decoded is a UserError naming it."""
    kind = model_kind(model_dir)
    media = functools.partial(_media_inputs, device=device, fallback=fallback)
    if kind == "teacher":
        pipeline, record = teacher_pipeline(model_dir / TEACHER_CHECKPOINT, device, media)
        task = task_of(record["dataset"])
        seen = set(record.get("modalities", task.teacher_inputs.split("+")))  # a checkpoint that does not say
        reads = tuple(given for given, brings in (("video", {"video", "audio"}), ("text", {"text"})) if brings & seen)
        read = (_regression(record["dataset"]) if task.teacher_output == "reg"  # else classes, from the clip
                else functools.partial(_teacher_classes, classes=record.get("classes")))
    elif kind == "retrieval":
        pipeline, record = retrieval_student_pipeline(model_dir, device, media)
        reads, read = ("video",), functools.partial(_branch_classes, classes=record.get("classes"))
    else:
        pipeline, record = student_pipeline(model_dir, device, media)
        reads, read = ("video", "text") if kind == "multimodal" else ("text",), _regression(record["dataset"])
    log.info("%s: a %s model trained on %s; reads %s", model_dir, kind, record["dataset"], " + ".join(reads))
    return Predictor(model_dir, kind, record["dataset"], reads, pipeline, read)


def _media_inputs(record: Mapping[str, Any], source: Path, video_tokens: int, audio_tokens: int, *,
                  device: torch.device, fallback: Callable[[], FeatureSettings]) -> MediaInputs:
    """latency.MediaFactory of a user's clips: the recorded settings, CLIP in fp32, undecodable frames an error."""
    settings = recorded_features(record, source, fallback)
    return media_inputs(settings, video_tokens, audio_tokens, device, strict=True)


def _regression(dataset: str) -> Callable[[Outputs], list[Prediction]]:
    readings = METRIC_SETS.get(DATASETS.get(dataset).metric_set).readings

    def read(out: Outputs) -> list[Prediction]:
        r = out["reg"].double().numpy()  # (B,)
        classes = readings(r) if readings is not None else {}
        return [{"r": float(value), **{name: values[i] for name, values in classes.items()}}
                for i, value in enumerate(r)]

    return read


def _argmax(logits: torch.Tensor, classes: list[str] | None) -> list[tuple[str, float]]:
    """(class name, softmax probability) of each row's largest logit (B, K); class k is `str(k)` without names."""
    p, k = logits.softmax(-1).max(-1)  # (B,) each
    return [(classes[i] if classes else str(i), float(q)) for i, q in zip(k.tolist(), p.tolist(), strict=True)]


def _teacher_classes(out: Outputs, classes: list[str] | None) -> list[Prediction]:
    return [{"class": name, "p": p, "logits": logits}
            for (name, p), logits in zip(_argmax(out["logits"], classes), out["logits"].tolist(), strict=True)]


def _branch_classes(out: Outputs, classes: list[str] | None) -> list[Prediction]:
    rows: list[Prediction] = [{} for _ in range(len(out["audio_emb"]))]
    for branch in ("audio", "visual"):
        for row, (name, p), emb in zip(rows, _argmax(out[f"{branch}_logits"], classes),
                                       out[f"{branch}_emb"].tolist(), strict=True):
            row.update({f"{branch}_class": name, f"{branch}_p": p, f"{branch}_emb": emb})
    return rows
