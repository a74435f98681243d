"""The linear floor every student of the dataset must beat (DESIGN.md "Trustworthy comparison"), one per task
(`FLOORS`), saved as plain JSON: everything the model is (vocabulary, idf, coefficients, the chosen
regularisation and the validation values of the grid), rebuilt by `load_floor` without running any code
from the file.

Sentiment datasets: TF-IDF of the transcript's word n-grams (1..`floor.ngrams`, sublinear tf,
l2-normalised rows; scikit-learn's TfidfVectorizer fitted on the training transcripts) followed by
ridge regression (scikit-learn's Ridge: min_w ||y - Xw - b||^2 + alpha ||w||^2), alpha chosen from
`floor.grid` by validation MAE. A text student that does not beat it has learned nothing a bag of
words does not know.

Retrieval datasets (no transcripts): for each modality, a multinomial logistic regression
(scikit-learn's LogisticRegression, L2 penalty, C = 1 / strength with the strength from
`floor.grid`, chosen by validation accuracy) on the clip's time-averaged features (CLIP frame
embeddings, log-mel frames), standardised with the training mean and std; a clip's item in the
ranking is its class posterior given that modality (the same way the teacher is scored).

The model is deterministic: every seed gets the same predictions (so its std over seeds is 0).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.config import ClipParams, ExtractParams, FloorParams
from pipeline.core.errors import MissingInput
from pipeline.core.registry import Registry

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"
RETRIEVAL_MODALITIES = ("video", "audio")


# --------------------------------------------------------------------------- sentiment: TF-IDF + ridge


class TextFloor:
    """TF-IDF -> linear regression, rebuilt from plain arrays (no pickle)."""

    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray, coef: np.ndarray, intercept: float,
                 ngrams: int) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(ngram_range=(1, ngrams), sublinear_tf=True, vocabulary=vocabulary)
        self.vectorizer.idf_ = np.asarray(idf, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)  # (V,)
        self.intercept = float(intercept)

    @property
    def n_parameters(self) -> int:
        return len(self.coef) + 1

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Predictions (N,) float64 for raw transcripts."""
        return np.asarray(self.vectorizer.transform(texts) @ self.coef).ravel() + self.intercept  # (N,)


def fit_text_floor(texts: list[str], labels: np.ndarray, splits: np.ndarray, grid: list[float],
                   ngrams: int) -> dict[str, Any]:
    """Fit TF-IDF + ridge on the train split for each alpha of `grid`, keep the one with the lowest validation
    MAE; returns the model as plain data (see TextFloor)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    train, valid = splits == "train", splits == "valid"
    texts = np.asarray(texts, dtype=object)
    vectorizer = TfidfVectorizer(ngram_range=(1, ngrams), sublinear_tf=True)
    x_train = vectorizer.fit_transform(texts[train])  # (N_train, V) sparse
    x_valid = vectorizer.transform(texts[valid])
    scores: dict[str, float] = {}
    best: tuple[float, Any] | None = None
    for alpha in grid:
        ridge = Ridge(alpha=alpha).fit(x_train, labels[train])
        mae = float(np.abs(ridge.predict(x_valid) - labels[valid]).mean())
        scores[repr(alpha)] = mae
        if best is None or mae < best[0]:
            best = (mae, ridge)
    assert best is not None
    mae, ridge = best
    log.info("floor: TF-IDF (%d n-grams) + ridge alpha %g, validation MAE %.4f (grid %s)", len(vectorizer.vocabulary_),
             ridge.alpha, mae, ", ".join(f"{a}: {v:.4f}" for a, v in scores.items()))
    return {"kind": "tfidf_ridge", "ngrams": ngrams, "alpha": float(ridge.alpha), "valid_mae": mae,
            "grid_valid_mae": scores,
            "vocabulary": {term: int(i) for term, i in vectorizer.vocabulary_.items()},
            "idf": vectorizer.idf_.tolist(), "coef": ridge.coef_.tolist(), "intercept": float(ridge.intercept_)}


# --------------------------------------------------------------------------- retrieval: linear probes


class ProbeFloor:
    """Per modality: standardise, then softmax(W x + b): class posteriors (N, K), rebuilt from plain arrays."""

    def __init__(self, probes: dict[str, dict[str, Any]]) -> None:
        self.probes = {m: {k: np.asarray(v, dtype=np.float64) for k, v in p.items() if k != "strength"}
                       for m, p in probes.items()}

    @property
    def n_parameters(self) -> int:
        return sum(p["coef"].size + p["intercept"].size for p in self.probes.values())

    def posterior(self, modality: str, x: np.ndarray) -> np.ndarray:
        """x (N, C) time-averaged features -> class posteriors (N, K)."""
        p = self.probes[modality]
        z = (x - p["mean"]) / p["std"] @ p["coef"].T + p["intercept"]  # (N, K)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def fit_probe_floor(features: dict[str, np.ndarray], present: dict[str, np.ndarray], labels: np.ndarray,
                    splits: np.ndarray, grid: list[float]) -> dict[str, Any]:
    """One logistic regression per modality (features[m] (N, C) time-averaged), the strength 1/C from `grid` by
    validation accuracy, on the clips that have the modality."""
    from sklearn.linear_model import LogisticRegression

    probes: dict[str, dict[str, Any]] = {}
    for m, x in features.items():
        train, valid = (splits == "train") & present[m], (splits == "valid") & present[m]
        mean, std = x[train].mean(axis=0), np.maximum(x[train].std(axis=0), 1e-6)
        z = (x - mean) / std
        best: tuple[float, Any] | None = None
        for strength in grid:
            clf = LogisticRegression(C=1.0 / strength, max_iter=2000).fit(z[train], labels[train])
            acc = float((clf.predict(z[valid]) == labels[valid]).mean())
            if best is None or acc > best[0]:
                best = (acc, clf, strength)
        assert best is not None
        acc, clf, strength = best
        log.info("floor: %s linear probe, strength %g, validation accuracy %.4f", m, strength, acc)
        probes[m] = {"mean": mean.tolist(), "std": std.tolist(), "coef": clf.coef_.tolist(),
                     "intercept": clf.intercept_.tolist(), "strength": strength}
    return {"kind": "linear_probe", "probes": probes}


# --------------------------------------------------------------------------- files


def load_floor(model_dir: Path) -> TextFloor | ProbeFloor:
    """Rebuild the floor from models/<ds>/floor/model.json (plain JSON: nothing in it can run code)."""
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise MissingInput(f"{path} not found: run `dvc repro floor`")
    data = json.loads(path.read_text())
    if data.get("kind") == "tfidf_ridge":
        return TextFloor(data["vocabulary"], data["idf"], data["coef"], data["intercept"], data["ngrams"])
    if data.get("kind") == "linear_probe":
        return ProbeFloor(data["probes"])
    raise ValueError(f"{path}: unknown floor kind {data.get('kind')!r} (expected tfidf_ridge or linear_probe): "
                     "rerun `dvc repro floor`")


def mean_features(manifest: pd.DataFrame, dataset: str, clip: ClipParams,
                  extract: ExtractParams) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each retrieval modality's time-averaged features (N, C) and presence (N,), from the feature store."""
    from pipeline.core.config import MODALITIES
    from pipeline.features.arrays import load_features

    data = load_features(manifest, dataset, clip, extract, extract.video.frames, 1)
    arrays = {"video": data.video.mean(dim=1).double().numpy(), "audio": data.audio.mean(dim=1).double().numpy()}
    present = {m: data.present[:, MODALITIES.index(m)].numpy() for m in RETRIEVAL_MODALITIES}
    return arrays, present


Floor = Callable[[pd.DataFrame, str, FloorParams, ClipParams, ExtractParams], dict[str, Any]]
FLOORS: Registry[Floor] = Registry("floor (by task)")  # task name -> fit(manifest, dataset, params, clip, extract)


@FLOORS.register("sentiment")
def _text_floor(manifest: pd.DataFrame, dataset: str, params: FloorParams, clip: ClipParams,
                extract: ExtractParams) -> dict[str, Any]:
    return fit_text_floor(manifest["text"].fillna("").astype(str).tolist(), manifest["label"].to_numpy(np.float64),
                          manifest["split"].to_numpy(), params.grid, params.ngrams)


@FLOORS.register("retrieval")
def _probe_floor(manifest: pd.DataFrame, dataset: str, params: FloorParams, clip: ClipParams,
                 extract: ExtractParams) -> dict[str, Any]:
    features, present = mean_features(manifest, dataset, clip, extract)
    return fit_probe_floor(features, present, manifest["label"].to_numpy(np.float64).astype(np.int64),
                           manifest["split"].to_numpy(), params.grid)
