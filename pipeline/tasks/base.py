"""What a task is: everything that differs between sentiment regression and audio-visual retrieval,
behind one small interface, so that the stages, the trainer and the method table are task-agnostic.

A task says
  - what its teacher outputs and is scored on (`teacher_output`: `reg` or `logits`), what the `self`
    control teacher sees, and which student each family trains (`student_kinds`);
  - how a student is built, fed, saved and selected (`build_student`, `forward`, `validate`,
    `save_student`);
  - the student's objective (`objective(params)`): its own loss and the three kinds of knowledge the
    distillation methods transfer (distillation/methods.py): the teacher's class logits (`kd`), its
    main output (`match`, VideoAdviser's step 2) and its modality-specific outputs (`modality`, MSD).

Adding a task (e.g. AVE, audio-visual event localisation) means one module in this folder that
implements `Task`, one line in tasks/__init__.py, and a `DatasetSpec` naming it; no stage changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the interface is read by stages that never build a student (teacher, report)
    import numpy as np
    import pandas as pd
    import torch
    from torch import nn

    from pipeline.core.config import DistillParams, EvaluateParams, ExtractParams, MSDParams
    from pipeline.evaluation.latency import MediaInputs
    from pipeline.features.arrays import FeatureArrays

    Batch = dict[str, torch.Tensor]


class TestSet(Protocol):
    """What stage evaluate gives a task to run and score its models on (evaluation/scoring.py `Evaluation`)."""

    dataset: str
    metric_set: str  # the dataset's metric set (evaluation/metrics.py)
    test: pd.DataFrame  # the test split's manifest rows
    test_rows: np.ndarray  # their manifest row numbers
    device: torch.device
    params: EvaluateParams
    extract: ExtractParams

    def features(self, video_tokens: int, audio_tokens: int) -> FeatureArrays:
        """Every clip's cached features, pooled to these token counts."""

    def test_features(self, video_tokens: int, audio_tokens: int) -> FeatureArrays:
        """The test clips' rows of `features`."""

    def present(self, modality: str) -> np.ndarray:
        """(N_test,) bool: the test clips that have the modality's features."""

    def media_inputs(self, record: Mapping[str, Any], source: Path, video_tokens: int,
                     audio_tokens: int) -> MediaInputs:
        """A saved model's raw-clip inputs, with the feature settings its provenance `record` holds
        (evaluation/latency.py `MediaFactory`)."""


class Objective(Protocol):
    """A task's student loss and distillation terms (each a scalar tensor, mean over the batch)."""

    def task_loss(self, out: Batch, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The supervised loss on the labels `batch["y"]`, and what to log of it."""

    def kd(self, out: Batch, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """Hinton KD of the student's class logits towards the teacher's."""

    def match(self, out: Batch, batch: Batch, distance: str) -> torch.Tensor:
        """VideoAdviser's step 2: the student's output regressed on the teacher's main output."""

    def modality(self, out: Batch, batch: Batch, params: MSDParams) -> torch.Tensor:
        """MSD's modality-specific term: sum_m w_m D(S(x_m), T(x_m)) with batch["weights"] (B, M_S)."""


class Task(Protocol):
    name: str
    teacher_output: str  # the teacher output its subsets, saliencies and the `match` target are read from
    self_modalities: tuple[str, ...]  # what the `self` control teacher sees: what the cheap student sees
    student_kinds: dict[str, str]  # family -> the student it trains
    valid_metric: str  # what a student is selected on
    maximize: bool  # ... the highest (True) or the lowest value

    def build_student(self, kind: str, params: DistillParams, texts: list[str], train_idx: torch.Tensor,
                      features: FeatureArrays | None, num_classes: int, second_order: bool
                      ) -> tuple[nn.Module, Any, Batch]:
        """(model, tokenizer or None, the model's inputs for every manifest clip)."""

    def preload_student(self) -> None:
        """Import what building the task's students needs, once, before the seed workers fork (they inherit it)."""

    def student_modalities(self, model: nn.Module) -> tuple[str, ...]:
        """The teacher modalities the student has an output of its own for (MSD's M_S)."""

    def teacher_targets(self, teacher: dict[str, torch.Tensor], rows: torch.Tensor, modalities: tuple[str, ...],
                        modality_specific: bool) -> Batch:
        """The teacher's outputs for clips `rows` that the objective reads."""

    def forward(self, net: Callable[..., Batch], inputs: Batch, modalities: tuple[str, ...],
                modality_specific: bool) -> Batch:
        """The student's outputs; with `modality_specific`, also what `Objective.modality` compares."""

    def objective(self, params: DistillParams) -> Objective: ...

    def validate(self, model: nn.Module, inputs: Batch, labels: torch.Tensor, present: torch.Tensor,
                 batch_size: int) -> float:
        """The selection metric of a student on the clips of `inputs` (present (N, 3): their modalities)."""

    def save_student(self, out_dir: Path, model: nn.Module, tokenizer: Any, extra: dict[str, Any],
                     params: DistillParams) -> None: ...

    # the teacher (training/teacher.py): its main output is `teacher_output`; "logits" = no regression head

    def class_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The teacher's classification loss on labels y (as stored: float)."""

    def saliency(self, full: torch.Tensor, without: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
        """s_m(x) per clip (N,) from the teacher's output with and without modality m (`teacher.saliency`)."""

    def teacher_metrics(self, pred: np.ndarray, labels: np.ndarray, metric_set: str) -> dict[str, float]:
        """A teacher output's quality on some clips (pred: `teacher_output` of those clips)."""

    def teacher_primary(self, metric_set: str) -> str:
        """The teacher metric logged first."""

    # evaluation (evaluation/scoring.py): a model's test outputs, then `score`
    teacher_inputs: str  # what the teacher reads at inference, e.g. "video+audio+text"

    def teacher_test(self, ev: TestSet, name: str, seed: int) -> tuple[Any, dict[str, Any]]:
        """A teacher's test outputs, and (if it has them) its outputs given each subset of its modalities."""

    def student_test(self, ev: TestSet, model_dir: Path) -> Any:
        """The test outputs of the student saved in `model_dir` (rebuilt from its files, not from params)."""

    def score(self, ev: TestSet, outputs: Any, csv_path: Path) -> dict[str, float]:
        """The test metrics of `outputs` (the dataset's metric set); writes what they are computed from."""

    def student_pipeline(self, ev: TestSet, model_dir: Path) -> tuple[str, Any, str]:
        """(kind, the student wrapped from raw clip to prediction (evaluation/latency.py), its inputs)."""
