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


def raw_dir(dataset: str) -> Path:
    return RAW / dataset


def manifest(dataset: str) -> Path:
    return PREPARED / dataset / "manifest.csv"


def features(dataset: str, modality: str) -> Path:
    return FEATURES / dataset / f"{modality}.h5"


def failures(dataset: str, modality: str) -> Path:
    return FEATURES / dataset / f"failures_{modality}.csv"


def teacher_checkpoint(dataset: str) -> Path:
    return MODELS / dataset / "teacher.pt"


def teacher_predictions(dataset: str) -> Path:
    return MODELS / dataset / "teacher_preds.h5"


def student_dir(dataset: str, method: str) -> Path:
    return MODELS / dataset / f"student_{method}"


def metrics(dataset: str, name: str) -> Path:
    return METRICS / dataset / f"{name}.json"


def predictions(dataset: str, name: str) -> Path:
    return PREDICTIONS / dataset / f"{name}.csv"


def curves(dataset: str, name: str) -> Path:
    return CURVES / dataset / name
