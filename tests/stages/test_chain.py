"""End to end: every stage's main(), in DAG order, on a tiny generated dataset.

Checks what each stage promises downstream: complete feature files, a teacher (and its `self`
control) per seed that rebuilds itself, predictions and saliency for every clip, the teacher's
metrics given each modality subset, the floor, students of both families that reload from their
directories, metrics that recompute exactly from the predictions CSVs with mean and std over seeds,
and a report with both families, the controls, the limits and the missing-modality evaluation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline import distill, evaluate, extract, predict, teacher
from pipeline.core import paths
from pipeline.core.config import MODALITIES
from pipeline.evaluation.metrics import METRIC_NAMES, metrics_from_csv
from pipeline.features.store import FeatureReader, read_table
from pipeline.models import students as student_lib
from pipeline.models.students import load_student
from pipeline.models.teacher import load_teacher
from pipeline.training import teacher as teacher_lib

DS = "synthetic_sentiment"
METHODS = ("va-none", "va-kd", "va-self", "va-videoadviser", "msd-none", "msd-kd", "msd-uniform", "msd-population",
           "msd-instance", "msd-learned")
MODELS = ("teacher", "teacher_self", "floor", *METHODS)
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import run_dag, small_params, write_project

    params = small_params()
    params["seeds"] = list(SEEDS)
    params["distill"]["students"] = list(METHODS)
    root = write_project(tmp_path_factory.mktemp("chain"), params)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        run_dag(METHODS, DS)
    return root


def test_features_are_complete(chain: Path) -> None:
    manifest = pd.read_csv(chain / paths.manifest(DS), dtype={"id": str})
    assert len(manifest) == 36 and set(manifest["split"]) == {"train", "valid", "test"}
    for modality in MODALITIES:
        with FeatureReader(chain / paths.features(DS, modality)) as reader:
            assert reader.ids() == sorted(manifest["id"])
        assert pd.read_csv(chain / paths.failures(DS, modality)).empty


@pytest.mark.parametrize("seed", SEEDS)
def test_teacher_predictions_cover_every_clip(chain: Path, seed: int) -> None:
    columns, config = read_table(chain / paths.teacher_predictions(DS, seed), stage="teacher")
    n = len(columns["id"])
    assert n == 36
    assert columns["logits"].shape == (n, 7) and columns["reg"].shape == (n,)
    train = np.asarray(columns["split"]) == "train"
    for m in MODALITIES:
        assert columns[f"reg_only_{m}"].shape == columns[f"reg_without_{m}"].shape == (n,)
        assert (columns[f"saliency_{m}"] >= 0).all()
        assert config["population_saliency"][m] == pytest.approx(columns[f"saliency_{m}"][train].mean())
    assert np.isfinite(columns["reg"]).all()
    assert config["seed"] == seed and config["teacher"]["modality_dropout"] > 0
    subsets = config["subset_metrics"]
    assert len(subsets) == 7 and set(subsets["video+text"]) == {"valid", "test"}
    test = np.asarray(columns["split"]) == "test"
    assert subsets["audio+text"]["test"]["mae"] == pytest.approx(
        np.abs(columns["reg_without_video"][test] - columns["label"][test]).mean())
    self_columns, self_config = read_table(chain / paths.teacher_predictions(DS, seed, "teacher_self"), stage="teacher")
    assert list(self_config["subset_metrics"]) == ["text"] and "saliency_text" not in self_columns


def test_seeds_give_different_teachers(chain: Path) -> None:
    regs = [read_table(chain / paths.teacher_predictions(DS, s), stage="teacher")[0]["reg"] for s in SEEDS]
    assert not np.array_equal(regs[0], regs[1])


def test_teacher_checkpoint_rebuilds_the_predictions(chain: Path) -> None:
    from pipeline.core.config import load_section
    from pipeline.data.datasets import read_manifest
    from pipeline.features.arrays import load_features

    model, ckpt = load_teacher(chain / paths.teacher_checkpoint(DS, 1))
    assert ckpt["dataset"] == DS and ckpt["config"]["num_classes"] == 7 and ckpt["seed"] == 1
    params = chain / "params.yaml"
    manifest = read_manifest(chain / paths.manifest(DS))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(chain)
        data = load_features(manifest, DS, load_section("clip", params), load_section("extract", params),
                             model.config.frames, model.config.audio_tokens)
    reg = teacher_lib.predict(model, data, torch.arange(len(data.ids)))["reg"].numpy()
    columns, _ = read_table(chain / paths.teacher_predictions(DS, 1), stage="teacher")
    np.testing.assert_allclose(reg, columns["reg"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_metrics_recompute_from_the_predictions_csvs(chain: Path, name: str) -> None:
    stored = json.loads((chain / paths.metrics(DS, name)).read_text())
    assert list(stored["seeds"]) == [str(s) for s in SEEDS]
    per_seed = []
    for seed in SEEDS:
        csv = chain / paths.predictions(DS, name, seed)
        table = pd.read_csv(csv)
        assert list(table.columns) == ["id", "label", "pred"] and len(table) > 0
        assert list(stored["seeds"][str(seed)]) == list(METRIC_NAMES)
        assert metrics_from_csv(csv) == pytest.approx(stored["seeds"][str(seed)], rel=0, abs=0, nan_ok=True)
        per_seed.append(stored["seeds"][str(seed)]["mae"])
    assert stored["mean"]["mae"] == pytest.approx(np.mean(per_seed))
    assert stored["std"]["mae"] == pytest.approx(np.std(per_seed, ddof=1))


@pytest.mark.parametrize("name", ["teacher", "floor", "va-none", "msd-learned"])
def test_efficiency_is_measured(chain: Path, name: str) -> None:
    eff = json.loads((chain / paths.metrics(DS, name)).read_text())["efficiency"]
    assert eff["params"] > 0 and eff["latency_ms_b1"] > 0 and eff["latency_ms_batched"] > 0


def test_latency_is_measured_once_per_student_architecture(chain: Path) -> None:
    eff = {n: json.loads((chain / paths.metrics(DS, n)).read_text())["efficiency"] for n in METHODS}
    assert "latency_of" not in eff["va-none"] and "latency_of" not in eff["msd-none"]
    assert {eff[n]["latency_of"] for n in METHODS if n.startswith("va-") and n != "va-none"} == {"va-none"}
    assert {eff[n]["latency_of"] for n in METHODS if n.startswith("msd-") and n != "msd-none"} == {"msd-none"}


def test_teacher_given_each_subset_is_scored_on_test(chain: Path) -> None:
    stored = json.loads((chain / paths.metrics(DS, "teacher")).read_text())
    assert set(stored["given"]) == {"video+audio+text", "video+audio", "video+text", "audio+text", "video", "audio",
                                    "text"}
    assert stored["given"]["video+audio+text"]["mean"] == pytest.approx(stored["mean"])
    csv = chain / paths.predictions_dir(DS, "teacher") / "given_audio+text" / "seed_1.csv"
    assert metrics_from_csv(csv) == pytest.approx(stored["given"]["audio+text"]["seeds"]["1"])


def test_teacher_is_bigger_and_slower_than_the_text_student(chain: Path) -> None:
    t, s = (json.loads((chain / paths.metrics(DS, n)).read_text())["efficiency"] for n in ("teacher", "va-none"))
    assert t["params"] > s["params"] and t["latency_ms_b1"] > s["latency_ms_b1"]


@pytest.mark.parametrize("method", METHODS)
def test_student_reloads_from_its_directory(chain: Path, method: str) -> None:
    model_dir = chain / paths.student_dir(DS, method, 0)
    assert (model_dir / "config.json").is_file() and (model_dir / "tokenizer.json").is_file()
    model, tokenizer, meta = load_student(model_dir)
    assert meta["student"] == method and meta["seed"] == 0
    assert meta["config"]["kind"] == ("text" if method.startswith("va-") else "multimodal")
    assert meta["teacher"] == ("teacher_self" if method == "va-self" else "teacher")
    if meta["config"]["kind"] != "text":
        return  # the multimodal students' predictions: test_metrics_recompute_from_the_predictions_csvs
    table = pd.read_csv(chain / paths.predictions(DS, method, 0), dtype={"id": str})
    manifest = pd.read_csv(chain / paths.manifest(DS), dtype={"id": str}, keep_default_na=False).set_index("id")
    texts = manifest.loc[table["id"], "text"].tolist()
    pred = student_lib.predict_student(model, student_lib.tokenize(tokenizer, texts, meta["config"]["max_length"]), 8)
    np.testing.assert_allclose(pred.numpy(), table["pred"].to_numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["teacher", "teacher_self", "va-none", "msd-none"])
def test_predict_on_raw_test_clips_gives_the_evaluated_predictions(chain: Path, name: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """`python -m pipeline.predict` on test clips' videos and transcripts reproduces what evaluate scored (computed
    from the cached features), decoding with the settings the model recorded (today's params here) and giving the
    `self` control teacher the transcripts alone, as it was trained."""
    from pipeline.core.config import FeatureSettings, load_section, recorded_features
    from pipeline.features.precomputed import resolved

    teacher = name.startswith("teacher")
    model_dir = chain / (paths.teacher_checkpoint(DS, 0, name).parent if teacher else paths.student_dir(DS, name, 0))
    record = (load_teacher(model_dir / "teacher.pt")[1] if teacher
              else json.loads((model_dir / student_lib.STUDENT_CONFIG).read_text()))
    if teacher:
        assert record["modalities"] == (["text"] if name == "teacher_self" else list(MODALITIES))
    params = chain / "params.yaml"
    today = FeatureSettings.of(load_section("clip", params), resolved(load_section("extract", params), DS))
    if name != "va-none":  # the text student reads no video: nothing to record
        assert recorded_features(record, model_dir, fallback=None) == today
    table = pd.read_csv(chain / paths.predictions(DS, name, 0), dtype={"id": str}).head(4)
    manifest = pd.read_csv(chain / paths.manifest(DS), dtype={"id": str}, keep_default_na=False).set_index("id")
    inputs = tmp_path / "inputs.csv"
    pd.DataFrame({"video": [str(chain / v) for v in manifest.loc[table["id"], "video"]],
                  "text": manifest.loc[table["id"], "text"].tolist()}).to_csv(inputs, index=False)
    out = tmp_path / "predictions.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(chain)
        predict.main([str(model_dir), "--csv", str(inputs), "--out", str(out)])
    assert len(capsys.readouterr().out.splitlines()) == len(table)
    got = [p["r"] for p in json.loads(out.read_text())["predictions"]]
    np.testing.assert_allclose(got, table["pred"].to_numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", [m for m in METHODS if m.startswith("msd-") and m not in ("msd-none", "msd-kd")])
def test_msd_students_log_weights_over_the_three_modalities(chain: Path, method: str) -> None:
    base = chain / paths.curves(DS, f"student_{method}", 0) / "plots" / "metrics" / "train"
    weights = {m: pd.read_csv(base / f"w_{m}.tsv", sep="\t")[f"w_{m}"].to_numpy() for m in MODALITIES}
    assert all(len(w) == 2 and np.all((w > 0) & (w < 1)) for w in weights.values())
    np.testing.assert_allclose(sum(weights.values()), 1.0, rtol=1e-5)  # the student sees all three


def test_report_shows_both_families_controls_limits_and_missing_modalities(chain: Path) -> None:
    text = (chain / paths.report_dir(DS) / "report.md").read_text()
    for name in METHODS:
        assert f"| {name} " in text and f"`{name}`" in text
    for row in ("teacher (all modalities)", "teacher_self (control: the va student's inputs)", "floor (linear)",
                "teacher, video missing", "teacher, video and audio missing"):
        assert f"| {row} " in text
    for heading in ("## Known limits of the synthetic data", "## The teacher given each subset of its modalities",
                    "## VideoAdviser family", "## MSD family", "### Against `va-none`", "### Against `msd-none`",
                    "## Missing modalities at test time", "`va-videoadviser` − `va-self`", "Holm"):
        assert heading in text
    for figure in ("efficiency.png", "saliency.png", "curves.png", "missing_modality.png", "msd_weights.png"):
        assert (chain / paths.report_dir(DS) / figure).stat().st_size > 1000
        assert figure in text


def test_same_params_same_metrics(chain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Determinism on CPU: the teacher and a student retrained from the same inputs match exactly
    (latency aside, which is a measurement)."""

    def quality(name: str) -> dict:
        return {k: v for k, v in json.loads(Path(paths.metrics(DS, name)).read_text()).items() if k != "efficiency"}

    monkeypatch.chdir(chain)
    before = {n: quality(n) for n in ("teacher", "msd-learned", "va-self")}
    preds_before = read_table(paths.teacher_predictions(DS, 0), stage="teacher")[0]["reg"]
    teacher.main([])
    distill.main(["msd-learned"])
    distill.main(["va-self"])
    evaluate.main([])
    np.testing.assert_array_equal(read_table(paths.teacher_predictions(DS, 0), stage="teacher")[0]["reg"],
                                  preds_before)
    for n, metrics in before.items():
        assert quality(n) == metrics


class Interrupted(Exception):
    """Stands for Ctrl-C, raised right after the teacher's first checkpoint is written."""


def test_interrupted_then_changed_inputs_trains_from_scratch(chain: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12's case: the teacher is interrupted, then the features are rebuilt with another
    clip.init_seed (the teacher's own params unchanged). The checkpoint made from the old features is not
    resumed (the log names the files that changed) and the teacher equals a clean run's, bit for bit."""
    from pipeline.training import loop

    project = tmp_path / "project"
    shutil.copytree(chain, project, ignore=shutil.ignore_patterns("models", "predictions", "metrics", "reports",
                                                                  "dvclive", "checkpoints"))
    monkeypatch.chdir(project)
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["seeds"] = [0]
    Path("params.yaml").write_text(yaml.safe_dump(params))
    save = loop._save_atomic

    def save_then_stop(payload: dict, path: Path) -> None:
        save(payload, path)
        raise Interrupted

    with monkeypatch.context() as patched:
        patched.setattr(loop, "_save_atomic", save_then_stop)
        with pytest.raises(Interrupted):
            teacher.main([])
    assert paths.training_state(DS, "teacher", 0).is_file()

    params["clip"]["init_seed"] = 1  # new features; DVC deletes a stage's outputs before running it
    Path("params.yaml").write_text(yaml.safe_dump(params))
    for modality in ("video", "text"):
        paths.features(DS, modality).unlink()
        extract.main([modality])
    capsys.readouterr()
    teacher.main([])
    log = capsys.readouterr().err
    assert (f"differs in: input:{paths.features(DS, 'text')}, input:{paths.features(DS, 'video')}); starting fresh"
            in log), log
    assert "resuming" not in log
    after_interruption = read_table(paths.teacher_predictions(DS, 0), stage="teacher")[0]["reg"]

    shutil.rmtree(paths.CHECKPOINTS, ignore_errors=True)
    for name in ("teacher", "teacher_self"):
        shutil.rmtree(paths.teacher_dir(DS, name))
    teacher.main([])
    np.testing.assert_array_equal(read_table(paths.teacher_predictions(DS, 0), stage="teacher")[0]["reg"],
                                  after_interruption)


def test_unknown_method_fails_before_work(project: Path) -> None:
    from pipeline.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown student 'va-nope': a student is <family>-<method>. Available: "):
        distill.main(["va-nope"])
