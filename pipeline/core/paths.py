"""Where each stage reads and writes: the one place these conventions live (dvc.yaml
spells the same paths). Every path that depends on the dataset carries its name, so
switching `dataset` and back restores cached outputs instead of recomputing."""

from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")
PREPARED = Path("data/prepared")
FEATURES = Path("data/features")
MODELS = Path("models")
METRICS = Path("metrics")
PREDICTIONS = Path("predictions")
CURVES = Path("dvclive")
CHECKPOINTS = Path("checkpoints")  # resumable training state; not a DVC output (DVC clears outputs before a run)
REPORTS = Path("reports")
CHECKED = Path("data/checked.txt")  # stage check's output: every other stage depends on it

# the models besides the students (models/<ds>/<name>): the teacher, its `self` control, the linear floor
TEACHER, SELF_TEACHER, FLOOR = "teacher", "teacher_self", "floor"
TEACHER_CHECKPOINT = "teacher.pt"  # a teacher's weights, config and provenance, in its seed's folder


def raw_dir(dataset: str) -> Path:
    return RAW / dataset


def manifest(dataset: str) -> Path:
    return PREPARED / dataset / "manifest.csv"


def features(dataset: str, modality: str) -> Path:
    return FEATURES / dataset / f"{modality}.h5"


def failures(dataset: str, modality: str) -> Path:
    return FEATURES / dataset / f"failures_{modality}.csv"


def teacher_dir(dataset: str, name: str = TEACHER) -> Path:
    """All seeds of a teacher (one DVC output): `teacher`, or the control `teacher_self`."""
    return MODELS / dataset / name


def teacher_checkpoint(dataset: str, seed: int, name: str = TEACHER) -> Path:
    return teacher_dir(dataset, name) / f"seed_{seed}" / TEACHER_CHECKPOINT


def teacher_predictions(dataset: str, seed: int, name: str = TEACHER) -> Path:
    return teacher_dir(dataset, name) / f"seed_{seed}" / "preds.h5"


def floor_dir(dataset: str) -> Path:
    """The linear floor model (stage `floor`)."""
    return MODELS / dataset / FLOOR


def student_root(dataset: str, method: str) -> Path:
    """All seeds of one method's student (one DVC output)."""
    return MODELS / dataset / f"student_{method}"


def student_dir(dataset: str, method: str, seed: int) -> Path:
    return student_root(dataset, method) / f"seed_{seed}"


def student_name(model_dir: Path) -> str | None:
    """The student (`distill@<name>`) whose seed folder `model_dir` is: the inverse of `student_dir`; None
    for a folder that is not one."""
    root = Path(model_dir).parent.name
    return root.removeprefix("student_") if root.startswith("student_") else None


def metrics(dataset: str, name: str) -> Path:
    """One model's test metrics: mean and std over seeds, each seed, and its efficiency."""
    return METRICS / dataset / f"{name}.json"


def predictions_dir(dataset: str, name: str) -> Path:
    return PREDICTIONS / dataset / name


def predictions(dataset: str, name: str, seed: int) -> Path:
    return predictions_dir(dataset, name) / f"seed_{seed}.csv"


def curves_dir(dataset: str, name: str) -> Path:
    """dvclive curves of one model, every seed (one DVC plots output)."""
    return CURVES / dataset / name


def curves(dataset: str, name: str, seed: int) -> Path:
    return curves_dir(dataset, name) / f"seed_{seed}"


def training_state(dataset: str, name: str, seed: int) -> Path:
    """The last resumable checkpoint of one training run (deleted when the run finishes)."""
    return CHECKPOINTS / dataset / name / f"seed_{seed}.pt"


def report_dir(dataset: str) -> Path:
    return REPORTS / dataset
