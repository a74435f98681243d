"""Tests of the extract stage (pipeline.extract.run) on a tiny generated dataset, offline on CPU."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import h5py
import librosa
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import extract
from pipeline.core.config import ClipParams, ExtractParams, from_dict
from pipeline.data.datasets import DATASETS, read_manifest, read_mmsa, write_manifest
from pipeline.data.synthetic import generate_sentiment
from pipeline.features import extraction, media
from pipeline.features.clip import load_clip
from pipeline.features.store import FeatureReader, StoreError

DS = "synthetic_sentiment"
N_CLIPS, FRAMES, N_MELS, SAMPLE_RATE, SECONDS = 12, 4, 32, 16000, 1.0
CLIP = ClipParams("mmdistill-tiny", "", 0)
TEMPLATES = ["a person talking with {} sentiment", "a video of someone expressing a {} opinion"]
CLASSES = ["negative", "neutral", "positive"]
BAD_ID = "broken$_$0"
SEED = 0



def _params(max_failure_ratio: float = 0.1, batch_size: int = 5) -> ExtractParams:
    return from_dict(ExtractParams, {
        "run": {"device": "cpu", "batch_size": batch_size, "num_workers": 0, "precision": "fp32"},
        "max_failure_ratio": max_failure_ratio,
        "video": {"backend": "decord", "sampling": "uniform", "frames": FRAMES, "fps": 1.0, "max_frames": 16},
        "audio": {"sample_rate": SAMPLE_RATE, "n_mels": N_MELS, "win_ms": 25.0, "hop_ms": 10.0,
                  "fmin": 0.0, "fmax": 8000.0},
        "text": {"templates": TEMPLATES, "classes": CLASSES, "class_templates": ["a video of {}"]},
    }, where="extract")


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw") / DS
    generate_sentiment(root, n_clips=N_CLIPS, seed=0, splits={"train": 0.7, "valid": 0.15, "test": 0.15},
                       seconds=SECONDS, fps=4, size=32, sample_rate=SAMPLE_RATE, monte_carlo=2000)
    return root


@pytest.fixture
def workdir(raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with data/prepared/<ds>/manifest.csv of the clean dataset; the cwd."""
    monkeypatch.chdir(tmp_path)
    write_manifest(read_mmsa(raw, DATASETS.get(DS)), Path("data/prepared") / DS / "manifest.csv")
    return tmp_path


@pytest.fixture
def with_broken_clip(workdir: Path) -> Path:
    """Add a clip of random bytes to the manifest (13 clips, 1 broken: a 7.7% failure ratio)."""
    bad = workdir / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    path = Path("data/prepared") / DS / "manifest.csv"
    manifest = read_manifest(path)
    row = {"id": BAD_ID, "split": "train", "label": 0.0, "text": "this one is broken", "video": str(bad),
           "video_id": "broken", "clip_id": "0"}
    manifest = pd.concat([manifest.iloc[:6], pd.DataFrame([row]), manifest.iloc[6:]], ignore_index=True)
    write_manifest(manifest, path)
    return bad


def _features(modality: str) -> Path:
    return Path("data/features") / DS / f"{modality}.h5"


def _failures(modality: str) -> Path:
    return Path("data/features") / DS / f"failures_{modality}.csv"


def _run(modality: str, **kw: float) -> None:
    torch.manual_seed(SEED)  # as the stage's main() does: the random CLIP weights come from the seed
    extract.run(modality, DS, _params(**kw), CLIP)


def _clean_manifest(raw: Path) -> pd.DataFrame:
    return read_mmsa(raw, DATASETS.get(DS))


# --------------------------------------------------------------------------- video


def test_extract_video(workdir: Path, raw: Path) -> None:
    _run("video")
    expected_config = {"modality": "video", "clip": {"model": "mmdistill-tiny", "pretrained": "", "init_seed": 0},
                       "frames": FRAMES, "sampling": "uniform", "normalized": True}
    assert extraction.video_config(CLIP, _params().video) == expected_config
    assert not Path(str(_features("video")) + ".partial").exists()
    manifest = _clean_manifest(raw)
    torch.manual_seed(SEED)
    clip = load_clip(CLIP.model, CLIP.pretrained, torch.device("cpu"), CLIP.init_seed)
    # reference: every clip's frames encoded in manifest order, independently of the stage's batching
    sampler = media.FrameSampler.from_params(_params().video)
    decoded = torch.cat([clip.preprocess(torch.from_numpy(media.read_frames(Path(v), sampler)))
                         for v in manifest["video"]])  # (N*F, 3, 64, 64)
    reference = clip.encode_images(decoded).view(len(manifest), FRAMES, -1).numpy()  # (N, F, D)
    with FeatureReader(_features("video"), expected_config) as reader:
        assert reader.config == expected_config
        assert set(reader.versions) >= {"torch", "open_clip", "decord", "av", "librosa"}
        assert sorted(reader.ids()) == sorted(manifest["id"])
        for i, clip_id in enumerate(manifest["id"]):
            frames = reader.read(clip_id)["frames"]
            assert frames.shape == (FRAMES, 64) and frames.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(frames, axis=1), 1.0, atol=1e-5)
            # each clip's group holds that clip's frames, in order (batching must not shuffle clips)
            np.testing.assert_allclose(frames, reference[i], atol=1e-4)
    failures = pd.read_csv(_failures("video"))
    assert list(failures.columns) == ["id", "path", "reason"] and failures.empty
    # the recorded config guards readers that expect other features
    with pytest.raises(StoreError, match="frames: file has 4, requested 8"):
        FeatureReader(_features("video"), extraction.video_config(CLIP, dataclasses.replace(_params().video, frames=8)))


def test_video_failure_over_ratio_keeps_partial_then_resumes(
    workdir: Path, with_broken_clip: Path, raw: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    real_read_frames = media.read_frames

    def counting_read_frames(path: Path, *args, **kwargs) -> np.ndarray:
        calls.append(Path(path).name if Path(path) == with_broken_clip else str(path))
        return real_read_frames(path, *args, **kwargs)

    monkeypatch.setattr(media, "read_frames", counting_read_frames)
    good_ids = set(_clean_manifest(raw)["id"])

    # 1/13 = 7.7% > 5%: the stage fails, naming the CSV and the knob
    with pytest.raises(RuntimeError, match=r"max_failure_ratio") as err:
        _run("video", max_failure_ratio=0.05)
    assert str(_failures("video")) in str(err.value)
    assert BAD_ID in str(err.value)
    assert len(calls) == N_CLIPS + 1

    failures = pd.read_csv(_failures("video"), dtype=str, keep_default_na=False)
    assert failures["id"].tolist() == [BAD_ID]
    assert failures["path"].tolist() == [str(with_broken_clip)]
    assert str(with_broken_clip) in failures["reason"].iloc[0] and len(failures["reason"].iloc[0]) > 20

    # nothing computed is lost: the partial chunks hold every good clip, and no finished file exists
    assert not _features("video").exists()
    partial = Path(str(_features("video")) + ".partial")
    first = {}
    for chunk in partial.glob("rank0-*.h5"):  # the atomically written chunks of the interrupted run
        with h5py.File(chunk, "r") as f:
            first.update({k: f["clips"][k]["frames"][()] for k in f["clips"]})
    assert set(first) == good_ids
    with pytest.raises(StoreError, match="unfinished"):
        FeatureReader(_features("video"))

    # rerun with a higher ratio: resumes, decoding only the clip that is not in the partial chunks
    calls.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline"):
        _run("video", max_failure_ratio=0.1)
    assert calls == ["broken.mp4"]
    assert any(f"{N_CLIPS} clips already in" in r.getMessage() for r in caplog.records)
    assert not partial.exists()
    with FeatureReader(_features("video"), extraction.video_config(CLIP, _params().video)) as reader:
        assert set(reader.ids()) == good_ids
        for k, v in first.items():
            np.testing.assert_array_equal(reader.read(k)["frames"], v)
    assert pd.read_csv(_failures("video"))["id"].tolist() == [BAD_ID]


# --------------------------------------------------------------------------- audio


def test_extract_audio_with_a_broken_clip_within_ratio(workdir: Path, with_broken_clip: Path, raw: Path) -> None:
    _run("audio", max_failure_ratio=0.1)  # 1/13 = 7.7% <= 10%: succeeds
    expected_config = {"modality": "audio", "sample_rate": SAMPLE_RATE, "n_mels": N_MELS, "win_ms": 25.0,
                       "hop_ms": 10.0, "fmin": 0.0, "fmax": 8000.0, "feature": "logmel_db"}
    manifest = _clean_manifest(raw)
    with FeatureReader(_features("audio"), expected_config) as reader:
        assert reader.config == expected_config
        assert sorted(reader.ids()) == sorted(manifest["id"])
        assert BAD_ID not in reader
        for row in manifest.itertuples():
            mel = reader.read(row.id)["logmel"]
            wave = media.read_audio(Path(row.video), SAMPLE_RATE)
            assert mel.dtype == np.float32
            assert mel.shape == (1 + wave.size // 160, N_MELS)  # hop 10 ms = 160 samples, centred frames
            assert abs(mel.shape[0] - (1 + SECONDS * SAMPLE_RATE / 160)) <= 2048 / 160 + 1
            # librosa directly: power mel (n_fft 25 ms = 400, hop 160) in dB re 1.0, no top_db clipping
            power = librosa.feature.melspectrogram(y=wave, sr=SAMPLE_RATE, n_fft=400, hop_length=160,
                                                   n_mels=N_MELS, fmin=0.0, fmax=8000.0)
            np.testing.assert_allclose(mel, 10 * np.log10(np.maximum(power, 1e-10)).T, atol=1e-3)
    failures = pd.read_csv(_failures("audio"), dtype=str)
    assert failures["id"].tolist() == [BAD_ID]
    assert failures["path"].tolist() == [str(with_broken_clip)]
    assert str(with_broken_clip) in failures["reason"].iloc[0]


def test_extract_audio_over_ratio_fails(workdir: Path, with_broken_clip: Path) -> None:
    with pytest.raises(RuntimeError, match=r"1/13 clips failed.*max_failure_ratio") as err:
        _run("audio", max_failure_ratio=0.05)
    assert "failures_audio.csv" in str(err.value)
    assert not _features("audio").exists()
    kept = 0
    for chunk in Path(str(_features("audio")) + ".partial").glob("rank0-*.h5"):
        with h5py.File(chunk, "r") as f:
            kept += len(f["clips"])
    assert kept == N_CLIPS


def test_audio_track_missing_is_a_failure(workdir: Path, raw: Path) -> None:
    from pipeline.data.synthetic import write_mp4

    silent = workdir / "silent.mp4"
    write_mp4(silent, np.zeros((4, 32, 32, 3), np.uint8), 4, None, SAMPLE_RATE)
    path = Path("data/prepared") / DS / "manifest.csv"
    manifest = read_manifest(path)
    row = {"id": "silent$_$0", "split": "test", "label": 1.0, "text": "no sound", "video": str(silent),
           "video_id": "silent", "clip_id": "0"}
    write_manifest(pd.concat([manifest, pd.DataFrame([row])], ignore_index=True), path)
    _run("audio", max_failure_ratio=0.1)
    failures = pd.read_csv(_failures("audio"))
    assert failures["id"].tolist() == ["silent$_$0"]
    assert "no audio track" in failures["reason"].iloc[0]


# --------------------------------------------------------------------------- text


def test_extract_text(workdir: Path, raw: Path) -> None:
    _run("text", batch_size=5)
    expected_config = {"modality": "text", "clip": {"model": "mmdistill-tiny", "pretrained": "", "init_seed": 0},
                       "templates": TEMPLATES, "classes": CLASSES, "normalized": True, "transcripts": True}
    manifest = _clean_manifest(raw)
    torch.manual_seed(SEED)
    clip = load_clip(CLIP.model, CLIP.pretrained, torch.device("cpu"), CLIP.init_seed)
    with FeatureReader(_features("text"), extraction.text_config(CLIP, TEMPLATES, CLASSES)) as reader:
        assert reader.config == expected_config
        assert sorted(reader.ids()) == sorted(manifest["id"])
        alone = {row.id: clip.encode_texts([row.text])[0].numpy() for row in manifest.itertuples()}
        for clip_id, expected in alone.items():
            z = reader.read(clip_id)["text"]
            assert z.shape == (64,) and z.dtype == np.float32
            assert abs(np.linalg.norm(z) - 1.0) < 1e-5
            np.testing.assert_allclose(z, expected, atol=1e-4)
        prompts = reader.extra("prompts")
        assert prompts["classes"] == CLASSES and prompts["templates"] == TEMPLATES
        emb = prompts["embeddings"]
        assert emb.shape == (len(CLASSES), 64)
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        for k, name in enumerate(CLASSES):
            mean = clip.encode_texts([t.format(name) for t in TEMPLATES]).mean(0).numpy()
            np.testing.assert_allclose(emb[k], mean / np.linalg.norm(mean), atol=1e-4)
    assert pd.read_csv(_failures("text")).empty


def test_unknown_modality(workdir: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown modality 'depth'.*\['video', 'audio', 'text'\]"):
        extract.run("depth", DS, _params(), CLIP)


def test_missing_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="dvc repro prepare"):
        extract.run("audio", DS, _params(), CLIP)


def test_video_with_decoding_workers_matches_in_process(workdir: Path) -> None:
    """DataLoader workers (num_workers > 0) decode and preprocess: same features as in-process decoding."""
    params = _params()
    with_workers = dataclasses.replace(params, run=dataclasses.replace(params.run, num_workers=2, batch_size=3))
    torch.manual_seed(SEED)
    extract.run("video", DS, with_workers, CLIP)
    with FeatureReader(_features("video")) as reader:
        workers = {k: reader.read(k)["frames"] for k in reader.ids()}
    _run("video")
    with FeatureReader(_features("video")) as reader:
        assert sorted(workers) == reader.ids()
        for k, v in workers.items():
            np.testing.assert_allclose(reader.read(k)["frames"], v, atol=1e-5)
