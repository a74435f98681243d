"""End to end: every stage's main(), in DAG order, on a tiny generated dataset.

Checks what each stage promises downstream: complete feature files, a teacher checkpoint
that rebuilds itself, predictions for every clip, students that reload from their
save_pretrained directories, and metrics that recompute exactly from the predictions CSV.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import distill, evaluate, extract, generate, paths, prepare, teacher
from pipeline.metrics import METRIC_NAMES, metrics_from_csv
from pipeline.models import MODALITIES, load_student, load_teacher
from pipeline.store import FeatureReader, read_table

DS = "synthetic_sentiment"
METHODS = ("none", "kd", "videoadviser")


def run_all() -> None:
    generate.main([DS])
    prepare.main([])
    for modality in MODALITIES:
        extract.main([modality])
    teacher.main([])
    for method in METHODS:
        distill.main([method])
        evaluate.main([method])
    evaluate.main(["teacher"])


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import small_params, write_project

    root = write_project(tmp_path_factory.mktemp("chain"), small_params())
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        run_all()
    return root


def test_features_are_complete(chain: Path) -> None:
    manifest = pd.read_csv(chain / paths.manifest(DS), dtype={"id": str})
    assert len(manifest) == 36 and set(manifest["split"]) == {"train", "valid", "test"}
    for modality in MODALITIES:
        with FeatureReader(chain / paths.features(DS, modality)) as reader:
            assert reader.ids() == sorted(manifest["id"])
        assert pd.read_csv(chain / paths.failures(DS, modality)).empty


def test_teacher_predictions_cover_every_clip(chain: Path) -> None:
    columns, _ = read_table(chain / paths.teacher_predictions(DS), stage="teacher")
    n = len(columns["id"])
    assert n == 36
    assert columns["logits"].shape == (n, 7) and columns["reg"].shape == (n,)
    for m in MODALITIES:
        assert columns[f"reg_only_{m}"].shape == (n,)
        assert (columns[f"saliency_{m}"] >= 0).all()
    assert np.isfinite(columns["reg"]).all()


def test_teacher_checkpoint_rebuilds_the_predictions(chain: Path) -> None:
    from pipeline.config import load_section
    from pipeline.datasets import read_manifest
    from pipeline.features import load_features

    model, ckpt = load_teacher(chain / paths.teacher_checkpoint(DS))
    assert ckpt["dataset"] == DS and ckpt["config"]["num_classes"] == 7
    params = chain / "params.yaml"
    manifest = read_manifest(chain / paths.manifest(DS))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(chain)
        data = load_features(manifest, DS, load_section("clip", params), load_section("extract", params),
                             model.config.frames, model.config.audio_tokens)
    reg = teacher.predict(model, data, torch.arange(len(data.ids)))["reg"].numpy()
    columns, _ = read_table(chain / paths.teacher_predictions(DS), stage="teacher")
    np.testing.assert_allclose(reg, columns["reg"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["teacher", *METHODS])
def test_metrics_recompute_from_the_predictions_csv(chain: Path, name: str) -> None:
    stored = json.loads((chain / paths.metrics(DS, name)).read_text())
    assert list(stored) == list(METRIC_NAMES)
    table = pd.read_csv(chain / paths.predictions(DS, name))
    assert list(table.columns) == ["id", "label", "pred"] and len(table) > 0
    recomputed = metrics_from_csv(chain / paths.predictions(DS, name))
    assert recomputed == pytest.approx(stored, rel=0, abs=0, nan_ok=True)


@pytest.mark.parametrize("method", METHODS)
def test_student_reloads_from_its_directory(chain: Path, method: str) -> None:
    model_dir = chain / paths.student_dir(DS, method)
    assert (model_dir / "config.json").is_file() and (model_dir / "tokenizer.json").is_file()
    model, tokenizer, meta = load_student(model_dir)
    assert meta["method"] == method
    table = pd.read_csv(chain / paths.predictions(DS, method), dtype={"id": str})
    manifest = pd.read_csv(chain / paths.manifest(DS), dtype={"id": str}, keep_default_na=False).set_index("id")
    texts = manifest.loc[table["id"], "text"].tolist()
    pred = distill.predict_student(model, distill.tokenize(tokenizer, texts, meta["config"]["max_length"]), 8)
    np.testing.assert_allclose(pred.numpy(), table["pred"].to_numpy(), rtol=1e-5, atol=1e-5)


def test_same_params_same_metrics(chain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Determinism on CPU: the teacher and a student retrained from the same inputs match exactly."""
    before = {n: (chain / paths.metrics(DS, n)).read_text() for n in ("teacher", "videoadviser")}
    preds_before = read_table(chain / paths.teacher_predictions(DS), stage="teacher")[0]["reg"]
    monkeypatch.chdir(chain)
    teacher.main([])
    distill.main(["videoadviser"])
    evaluate.main(["videoadviser"])
    evaluate.main(["teacher"])
    np.testing.assert_array_equal(read_table(paths.teacher_predictions(DS), stage="teacher")[0]["reg"], preds_before)
    for n, text in before.items():
        assert Path(paths.metrics(DS, n)).read_text() == text


def test_unknown_method_fails_before_work(project: Path) -> None:
    from pipeline.config import ConfigError

    expected = r"unknown distillation method 'nope'. Available: \['kd', 'none', 'videoadviser'\]"
    with pytest.raises(ConfigError, match=expected):
        distill.main(["nope"])
