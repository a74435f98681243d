"""End to end on the standard precomputed features, every stage's main() in DAG order, as a user runs them:

- `vegas_features`: Zeng et al.'s `vegas_feature.h5` (audio_train/test (N, 128) VGGish, visual_train/test
  (N, 1024) Inception, lab_train/test class ids 0..9) at data/raw/vegas_features/, with nothing else set:
  the retrieval DAG to map_a2v, map_v2a, map_mean on the file's own test split;
- `mosi` with CMU-MultimodalSDK `.csd` sequences (COVAREP-like acoustic with -inf, FACET-like visual,
  keyed <video_id>[<clip_id>] with intervals) as the teacher's and multimodal student's audio and video:
  the sentiment DAG to the eight MOSI metrics.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_dag, small_params

from pipeline import generate
from pipeline.core import paths
from pipeline.data.csd import csd_key
from pipeline.evaluation.metrics import METRIC_NAMES
from pipeline.features.store import FeatureReader, write_csd_file
from pipeline.models.teacher import load_teacher

VEGAS_STUDENTS = ["va-none", "va-kd", "msd-none", "msd-instance"]
MOSI_STUDENTS = ["va-none", "va-videoadviser", "msd-none", "msd-uniform"]
K, TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 6, 3


def write_vegas_feature_h5(path: Path, seed: int = 0) -> None:
    """A small file in the public release's layout: a class cue plus noise in each modality."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    centres = {"audio": rng.normal(size=(K, 128)), "visual": rng.normal(size=(K, 1024))}
    with h5py.File(path, "w") as f:
        for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
            labels = np.repeat(np.arange(K), per_class)
            rng.shuffle(labels)
            f["lab_" + split] = labels
            for kind, centre in centres.items():
                scale = 255.0 if kind == "audio" else 1.0  # VGGish is quantised to 0..255
                f[f"{kind}_{split}"] = ((centre[labels] + rng.normal(size=(len(labels), centre.shape[1]))) * scale
                                        ).astype(np.float32)


# --------------------------------------------------------------------------- vegas_features


@pytest.fixture(scope="module")
def vegas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = small_params()
    params.update(dataset="vegas_features", seeds=[0])
    params["distill"]["students"] = VEGAS_STUDENTS
    root = tmp_path_factory.mktemp("vegas_features")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_vegas_feature_h5(root / "data/raw/vegas_features/vegas_feature.h5")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        run_dag(VEGAS_STUDENTS)
    return root


def test_vegas_features_keeps_the_files_split_and_carves_valid_from_train(vegas: Path) -> None:
    manifest = pd.read_csv(vegas / paths.manifest("vegas_features"), dtype={"id": str})
    test = manifest[manifest["split"] == "test"]
    assert len(test) == K * TEST_PER_CLASS and test["id"].str.startswith("test_").all()
    assert manifest.loc[manifest["split"] != "test", "id"].str.startswith("train_").all()
    valid = manifest[manifest["split"] == "valid"]
    assert len(valid) == round(0.15 * K * TRAIN_PER_CLASS)  # prepare.valid_fraction of train
    per_class = valid["label"].value_counts().reindex(range(K), fill_value=0)
    assert per_class.max() - per_class.min() <= 1  # stratified by class
    assert manifest["class_name"].nunique() == K


def test_vegas_features_are_the_files_rows(vegas: Path) -> None:
    with h5py.File(vegas / "data/raw/vegas_features/vegas_feature.h5") as f:
        visual, audio = f["visual_test"][()], f["audio_test"][()]
    with FeatureReader(vegas / paths.features("vegas_features", "video")) as reader:
        assert reader.config["source"] == {"format": "vegas", "file": "vegas_feature.h5", "key": "visual"}
        np.testing.assert_array_equal(reader.read("test_000002")["features"], visual[2:3])
    with FeatureReader(vegas / paths.features("vegas_features", "audio")) as reader:
        np.testing.assert_array_equal(reader.read("test_000005")["features"], audio[5:6])


def test_vegas_features_runs_to_map(vegas: Path) -> None:
    for name in ["teacher", "floor", *VEGAS_STUDENTS]:
        stored = json.loads((vegas / paths.metrics("vegas_features", name)).read_text())
        assert set(stored["mean"]) == {"map_a2v", "map_v2a", "map_mean"}
        assert all(0 < v <= 1 for v in stored["mean"].values()), (name, stored["mean"])
    teacher_eff = json.loads((vegas / paths.metrics("vegas_features", "teacher")).read_text())["efficiency"]
    assert teacher_eff["latency_ms_b1"] is None and "vegas_feature.h5:visual" in teacher_eff["note"]
    model, ckpt = load_teacher(vegas / paths.teacher_checkpoint("vegas_features", 0))
    assert model.config.video_dim == 1024 and model.config.audio_dim == 128
    assert "| va-kd | " in (vegas / paths.report_dir("vegas_features") / "report.md").read_text()
    student = json.loads((vegas / paths.metrics("vegas_features", "va-none")).read_text())["efficiency"]
    assert student["inputs"] == "video+audio (precomputed: vegas_feature.h5:visual, vegas_feature.h5:audio)"
    assert student["params"] < 300_000  # the two branches only: no CLIP is needed to run it
    control = json.loads((vegas / paths.metrics("vegas_features", "teacher_self")).read_text())["efficiency"]
    assert control["inputs"].startswith("video+audio (precomputed") and control["params"] == teacher_eff["params"]


def test_vegas_features_students_beat_chance(vegas: Path) -> None:
    """The class cue is strong: a working pipeline ranks far above chance (mAP 1/K for random rankings)."""
    stored = json.loads((vegas / paths.metrics("vegas_features", "va-none")).read_text())
    assert stored["mean"]["map_mean"] > 3 / K


# --------------------------------------------------------------------------- mosi with .csd sequences


def write_mosi_with_csd(root: Path) -> dict[str, np.ndarray]:
    """data/raw/mosi from the generated MMSA-layout clips, plus COVAREP.csd (74 features, -inf in places)
    and FACET.csd (35) keyed <video_id>[<clip_id>] with clip-relative intervals. Returns FACET per clip id."""
    shutil.move(root / "data/raw/synthetic_sentiment", root / "data/raw/mosi")
    labels = pd.read_csv(root / "data/raw/mosi/label.csv", dtype={"video_id": str, "clip_id": str})
    rng = np.random.default_rng(1)
    facet: dict[str, np.ndarray] = {}
    covarep = []
    for video_id, clip_id, label in zip(labels["video_id"], labels["clip_id"], labels["label"], strict=True):
        key = csd_key(f"{video_id}$_${clip_id}")
        n_a, n_v = int(rng.integers(20, 40)), int(rng.integers(5, 12))
        acoustic = rng.normal(size=(n_a, 74)) + 0.3 * label
        acoustic[0, 3] = -np.inf  # COVAREP's log-energy of silence
        covarep.append((key, acoustic, np.stack([np.arange(n_a), np.arange(1, n_a + 1)], 1) * 0.01))
        facet[f"{video_id}$_${clip_id}"] = (rng.normal(size=(n_v, 35)) + 0.5 * label).astype(np.float32)
    write_csd_file(root / "data/raw/mosi/COVAREP.csd", "COVAREP", covarep, {"root name": "COVAREP"})
    write_csd_file(root / "data/raw/mosi/FACET.csd", "FACET 4.2",
                   [(csd_key(c), v, np.stack([np.arange(len(v)), np.arange(1, len(v) + 1)], 1) / 30.0)
                    for c, v in facet.items()], {"root name": "FACET 4.2"})
    return facet


@pytest.fixture(scope="module")
def mosi(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    params = small_params()
    params["seeds"] = [0]
    params["distill"]["students"] = MOSI_STUDENTS
    root = tmp_path_factory.mktemp("mosi_csd")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        generate.main(["synthetic_sentiment"])
        facet = write_mosi_with_csd(root)
        params.update(dataset="mosi")
        params["extract"]["video"]["source"] = "FACET.csd"
        params["extract"]["audio"]["source"] = "COVAREP.csd"
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run_dag(MOSI_STUDENTS)
    return root, facet


def test_mosi_csd_features_are_imported_per_clip(mosi: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, facet = mosi
    with FeatureReader(root / paths.features("mosi", "video")) as reader:
        assert reader.config["source"]["file"] == "FACET.csd" and "blake2b:" in reader.versions["source"]
        clip_id = sorted(facet)[3]
        np.testing.assert_array_equal(reader.read(clip_id)["features"], facet[clip_id])
    with FeatureReader(root / paths.features("mosi", "audio")) as reader:
        features = np.concatenate([reader.read(c)["features"] for c in reader.ids()])
        assert features.shape[1] == 74 and np.isfinite(features).all()  # -inf became 0


def test_mosi_csd_runs_to_the_eight_metrics(mosi: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = mosi
    for name in ["teacher", "floor", *MOSI_STUDENTS]:
        stored = json.loads((root / paths.metrics("mosi", name)).read_text())
        assert list(stored["mean"]) == list(METRIC_NAMES) and len(METRIC_NAMES) == 8
        assert np.isfinite(stored["mean"]["mae"]), name
    model, _ = load_teacher(root / paths.teacher_checkpoint("mosi", 0))
    assert model.config.video_dim == 35 and model.config.audio_dim == 74
    eff = {n: json.loads((root / paths.metrics("mosi", n)).read_text())["efficiency"]
           for n in ("teacher", "msd-none", "va-none")}
    assert eff["teacher"]["latency_ms_b1"] is None and "FACET.csd" in eff["teacher"]["note"]
    assert eff["msd-none"]["latency_ms_b1"] is None and "COVAREP.csd" in eff["msd-none"]["note"]
    assert eff["va-none"]["latency_ms_b1"] > 0  # the text student needs no video: timed end to end


def test_predict_refuses_a_raw_clip_for_a_model_of_precomputed_features(
        mosi: tuple[Path, dict[str, np.ndarray]], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The teacher and the multimodal student read FACET/COVAREP: no video file can give them their inputs, so
    predict says so in one line; the text student needs no video and predicts as usual."""
    from pipeline import predict
    from pipeline.core.runtime import entry_point

    root, _ = mosi
    monkeypatch.chdir(root)
    clip = next((root / "data/raw/mosi/Raw").rglob("*.mp4"))
    for model in (paths.teacher_checkpoint("mosi", 0).parent, paths.student_dir("mosi", "msd-none", 0)):
        with pytest.raises(SystemExit) as done:
            entry_point(predict.main, [str(model), "--video", str(clip), "--text", "it was fine"])
        err = capsys.readouterr().err.strip().splitlines()
        assert done.value.code == 2 and err[-1].startswith("error: this model reads precomputed features (video: "
                                                           "FACET.csd, audio: COVAREP.csd)"), err
    predict.main([str(paths.student_dir("mosi", "va-none", 0)), "--text", "it was fine"])
    assert capsys.readouterr().out.startswith("r=")
