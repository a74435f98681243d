"""Tests of the synthetic_sentiment generator (pipeline.synthetic)."""

from __future__ import annotations

import math
from pathlib import Path

import av
import decord
import numpy as np
import pandas as pd
import pytest

from pipeline.media import FrameSampler, read_audio, read_frames
from pipeline.synthetic import (
    ADJECTIVES,
    AV_CLASSES,
    AV_TABLE_COLUMNS,
    LABEL_COLUMNS,
    SPLIT_NAMES,
    AVNoise,
    SyntheticNoise,
    av_pitch,
    clip_path,
    cue_to_pitch,
    generate_av,
    generate_sentiment,
    quantize_label,
    text_level,
    write_mp4,
)
from pipeline.vegas import MANIFEST_COLUMNS, fold_path, read_vegas

SPLITS = {"train": 0.7, "valid": 0.15, "test": 0.15}
SECONDS, FPS, SIZE, SAMPLE_RATE = 1.0, 8, 32, 16000
N_CLIPS = 24


def _generate(root: Path, n_clips: int = N_CLIPS, seed: int = 0, size: int = SIZE) -> pd.DataFrame:
    return generate_sentiment(
        root,
        n_clips=n_clips,
        seed=seed,
        splits=SPLITS,
        seconds=SECONDS,
        fps=FPS,
        size=size,
        sample_rate=SAMPLE_RATE,
        noise=SyntheticNoise(),
    )


def _frames(root: Path, row: pd.Series) -> np.ndarray:
    """Decoded frames (T, H, W, 3) uint8 of one clip, read with decord."""
    return decord.VideoReader(str(clip_path(root, row.video_id, row.clip_id)))[:].asnumpy()


def _pitch(samples: np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak between 80 and 600 Hz."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    freqs = np.fft.rfftfreq(samples.size, 1.0 / sample_rate)
    band = (freqs > 80) & (freqs < 600)
    return float(freqs[band][np.argmax(spectrum[band])])


def _rank_corr(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation (no ties expected)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("synthetic")
    return root, _generate(root)


def test_label_csv_columns_and_ranges(dataset: tuple[Path, pd.DataFrame]) -> None:
    root, table = dataset
    on_disk = pd.read_csv(root / "label.csv")
    assert list(on_disk.columns) == list(LABEL_COLUMNS)
    assert list(table.columns) == list(LABEL_COLUMNS)
    assert len(on_disk) == N_CLIPS
    assert on_disk["video_id"].str.fullmatch(r"vid_\d{3}").all()
    for column in ("label", "label_T", "label_A", "label_V"):
        assert on_disk[column].between(-3, 3).all(), column
        assert np.allclose(on_disk[column], on_disk[column].round(4)), column
    thirds = on_disk["label"] * 3
    assert np.allclose(thirds, thirds.round(), atol=1e-3)
    assert (on_disk["label"] < 0).any() and (on_disk["label"] > 0).any()
    expected = np.where(on_disk["label"] > 0, "Positive", np.where(on_disk["label"] < 0, "Negative", "Neutral"))
    assert (on_disk["annotation"] == expected).all()
    assert set(on_disk["mode"]) == set(SPLIT_NAMES)
    assert (on_disk["text"] == on_disk["text"].str.lower()).all()
    for row in on_disk.itertuples():
        assert clip_path(root, row.video_id, row.clip_id).is_file()


def test_quantize_label_grid_and_zero() -> None:
    assert quantize_label(0.1) == 0.0 and math.copysign(1.0, quantize_label(-0.1)) == 1.0
    assert quantize_label(0.34) == 0.3333
    assert quantize_label(-1.7) == -1.6667
    assert quantize_label(5.0) == 3.0 and quantize_label(-5.0) == -3.0


def test_transcript_expresses_text_level(dataset: tuple[Path, pd.DataFrame]) -> None:
    _, table = dataset
    for row in table.itertuples():
        synonyms = ADJECTIVES[text_level(row.label_T) + 3]
        assert any(adjective in row.text for adjective in synonyms), (row.label_T, row.text)


def test_splits_by_video_id(dataset: tuple[Path, pd.DataFrame]) -> None:
    _, table = dataset
    assert (table.groupby("video_id")["mode"].nunique() == 1).all()
    counts = table["mode"].value_counts()
    assert all(counts.get(name, 0) > 0 for name in SPLIT_NAMES)
    assert counts["train"] > counts["valid"] and counts["train"] > counts["test"]
    assert (table.groupby("video_id").size() <= 8).all()


def test_smallest_dataset_has_every_split(tmp_path: Path) -> None:
    table = _generate(tmp_path, n_clips=12)
    assert set(table["mode"]) == set(SPLIT_NAMES)
    assert (table.groupby("video_id")["mode"].nunique() == 1).all()


def test_too_few_clips_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_clips=2"):
        _generate(tmp_path, n_clips=2)


@pytest.mark.parametrize("size", [30, 33, 48])
def test_bad_size_raises(tmp_path: Path, size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        _generate(tmp_path, size=size)


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ({"train": 0.8, "valid": 0.2}, "train"),
        ({"train": 0.7, "val": 0.15, "test": 0.15}, "val"),
        ({"train": 0.7, "valid": 0.2, "test": 0.2}, "sum to 1"),
        ({"train": 1.0, "valid": 0.0, "test": 0.0}, "in \\(0, 1\\)"),
    ],
)
def test_invalid_splits_raise(tmp_path: Path, splits: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_sentiment(tmp_path, 16, 0, splits, SECONDS, FPS, SIZE, SAMPLE_RATE, SyntheticNoise())
    assert not (tmp_path / "label.csv").exists()


def test_determinism(dataset: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, table = dataset
    again = tmp_path / "again"
    _generate(again)
    assert (again / "label.csv").read_bytes() == (root / "label.csv").read_bytes()
    for row in table.itertuples():
        assert np.array_equal(_frames(again, row), _frames(root, row)), (row.video_id, row.clip_id)

    other = tmp_path / "other"
    _generate(other, seed=1)
    assert (other / "label.csv").read_bytes() != (root / "label.csv").read_bytes()
    first = table.iloc[0]
    assert not np.array_equal(_frames(other, first)[0], _frames(root, first)[0])


def test_regeneration_replaces_previous_dataset(tmp_path: Path) -> None:
    _generate(tmp_path, n_clips=20)
    table = _generate(tmp_path, n_clips=12)
    assert len(pd.read_csv(tmp_path / "label.csv")) == 12
    assert len(list((tmp_path / "Raw").glob("*/*.mp4"))) == len(table) == 12


def test_decord_reads_frames(dataset: tuple[Path, pd.DataFrame]) -> None:
    root, table = dataset
    n_frames = round(SECONDS * FPS)
    for row in table.iloc[:4].itertuples():
        reader = decord.VideoReader(str(clip_path(root, row.video_id, row.clip_id)))
        assert abs(len(reader) - n_frames) <= 1
        assert reader[0].shape == (SIZE, SIZE, 3)
        assert reader.get_avg_fps() == pytest.approx(FPS)


def test_audio_pitch_encodes_audio_cue(dataset: tuple[Path, pd.DataFrame]) -> None:
    root, table = dataset
    low, high = table.loc[table["label_A"].idxmin()], table.loc[table["label_A"].idxmax()]
    pitches = {}
    for name, row in (("low", low), ("high", high)):
        path = str(clip_path(root, row.video_id, row.clip_id))
        samples = decord.AudioReader(path, sample_rate=SAMPLE_RATE, mono=True)[:].asnumpy()[0]  # (n,)
        assert samples.size >= SECONDS * SAMPLE_RATE
        pitches[name] = _pitch(samples, SAMPLE_RATE)
        assert pitches[name] == pytest.approx(cue_to_pitch(row.label_A), rel=0.03)
    assert pitches["high"] > pitches["low"]


def test_pyav_decodes_audio(dataset: tuple[Path, pd.DataFrame]) -> None:
    root, table = dataset
    row = table.iloc[0]
    with av.open(str(clip_path(root, row.video_id, row.clip_id))) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.rate, stream.channels) == ("aac", SAMPLE_RATE, 1)
        samples = np.concatenate([frame.to_ndarray()[0] for frame in container.decode(stream)])  # (n,)
    assert samples.size >= SECONDS * SAMPLE_RATE
    assert _pitch(samples, SAMPLE_RATE) == pytest.approx(cue_to_pitch(row.label_A), rel=0.03)


def test_visual_cue_is_informative(dataset: tuple[Path, pd.DataFrame]) -> None:
    root, table = dataset
    red_minus_blue = np.array(
        [(_frames(root, row)[..., 0].astype(float) - _frames(root, row)[..., 2]).mean() for row in table.itertuples()]
    )  # (N,)
    assert _rank_corr(red_minus_blue, table["label_V"].to_numpy()) > 0.5


def test_write_mp4_without_audio(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(6, 32, 64, 3), dtype=np.uint8)  # (T, H, W, 3)
    path = tmp_path / "silent.mp4"
    write_mp4(path, frames, fps=4, audio=None, sample_rate=SAMPLE_RATE)
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 0
        assert len(container.streams.video) == 1
    reader = decord.VideoReader(str(path))
    assert len(reader) == 6 and reader[0].shape == (32, 64, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["silent.mp4"]


def test_write_mp4_rejects_odd_size(tmp_path: Path) -> None:
    frames = np.zeros((2, 15, 16, 3), dtype=np.uint8)  # (T, H, W, 3)
    with pytest.raises(ValueError, match="even"):
        write_mp4(tmp_path / "odd.mp4", frames, fps=4, audio=None, sample_rate=SAMPLE_RATE)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- synthetic_av (VEGAS-like)

AV_CLIPS = 40


def _generate_av(root: Path, seed: int = 0, n_clips: int = AV_CLIPS, **kwargs: object) -> pd.DataFrame:
    args = {"seconds": SECONDS, "fps": FPS, "size": SIZE, "sample_rate": SAMPLE_RATE, **kwargs}
    return generate_av(root, n_clips, seed, **args)  # type: ignore[arg-type]


def _av_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def av_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("synthetic_av")
    return root, _generate_av(root)


def test_av_layout_classes_and_folds(av_dataset: tuple[Path, pd.DataFrame]) -> None:
    root, table = av_dataset
    assert tuple(table.columns) == AV_TABLE_COLUMNS
    assert sorted(p.name for p in root.iterdir()) == sorted([*AV_CLASSES, "folds"])
    assert table["label"].value_counts().tolist() == [AV_CLIPS // 10] * 10  # balanced classes
    assert (table.groupby("fold").size() == AV_CLIPS // 5).all()
    assert (table.groupby("label")["fold"].nunique() == AV_CLIPS // 10).all()  # stratified: a class's clips spread
    for k in range(1, 6):
        assert fold_path(root, k).read_text().split() == table.loc[table["fold"] == k, "id"].tolist()
    # each modality's cue is the class plus noise
    for cue in ("audio_cue", "visual_cue"):
        error = table[cue] - table["label"]
        assert 0.2 < error.std() < 0.7 and (error.abs() < 2.5).all(), cue
        assert (error.abs() > 0.5).any(), cue  # some clips look like a neighbouring class: no modality is perfect


def test_av_read_by_vegas_reader(av_dataset: tuple[Path, pd.DataFrame]) -> None:
    root, table = av_dataset
    manifest = read_vegas(root, test_fold=5, valid_fraction=0.2, seed=0)
    assert tuple(manifest.columns) == MANIFEST_COLUMNS and len(manifest) == AV_CLIPS
    by_id = table.set_index("id")
    assert (manifest["label"] == manifest["id"].map(by_id["label"])).all()
    assert (manifest["class_name"] == manifest["label"].map(dict(enumerate(AV_CLASSES)))).all()
    assert (manifest["fold"] == manifest["id"].map(by_id["fold"])).all()
    assert manifest["split"].value_counts().to_dict() == {"train": 26, "test": 8, "valid": 6}


def test_av_determinism(av_dataset: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, table = av_dataset
    again = tmp_path / "again"
    pd.testing.assert_frame_equal(_generate_av(again), table)
    assert _av_files(again) == _av_files(root)  # byte-identical mp4 and fold files
    other = tmp_path / "other"
    _generate_av(other, seed=1)
    assert _av_files(other) != _av_files(root)


def test_av_regeneration_replaces_previous(tmp_path: Path) -> None:
    _generate_av(tmp_path, n_clips=20)
    table = _generate_av(tmp_path, n_clips=10, n_folds=2)
    assert len(list(tmp_path.glob("*/*.mp4"))) == len(table) == 10
    assert sorted(p.name for p in (tmp_path / "folds").iterdir()) == ["fold_1.txt", "fold_2.txt"]


@pytest.mark.parametrize(("kwargs", "message"), [({"n_clips": 9}, "n_clips=9"), ({"n_folds": 1}, "n_folds"),
                                                 ({"size": 48}, "size")])
def test_av_bad_arguments(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _generate_av(tmp_path, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="AVNoise.audio"):
        AVNoise(audio=-1.0)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_av_decodable_by_media(av_dataset: tuple[Path, pd.DataFrame], backend: str) -> None:
    root, _ = av_dataset
    manifest = read_vegas(root, test_fold=1, valid_fraction=0.2, seed=0)
    for video in manifest["video"].iloc[:3]:
        frames = read_frames(Path(video), FrameSampler("uniform", 4, 0.0, 1), backend=backend)
        assert frames.shape == (4, SIZE, SIZE, 3) and frames.dtype == np.uint8
        assert read_audio(Path(video), SAMPLE_RATE).size >= SECONDS * SAMPLE_RATE


def _nearest_class_mean_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out accuracy of the nearest class mean (euclidean) on features (N, D)."""
    hits = 0
    for i in range(len(labels)):
        rest = np.arange(len(labels)) != i
        means = np.stack([features[rest & (labels == k)].mean(0) for k in range(len(AV_CLASSES))])  # (K, D)
        hits += int(np.argmin(((means - features[i]) ** 2).sum(1)) == labels[i])
    return hits / len(labels)


def test_av_each_modality_carries_the_class(av_dataset: tuple[Path, pd.DataFrame]) -> None:
    root, _ = av_dataset
    manifest = read_vegas(root, test_fold=1, valid_fraction=0.2, seed=0)
    chroma, pitch = [], []
    for video in manifest["video"]:
        frames = read_frames(Path(video), FrameSampler("uniform", 4, 0.0, 1)).astype(float)  # (F, H, W, 3)
        mean = (frames - frames.mean(-1, keepdims=True)).mean((0, 1, 2))  # (3,) colour beyond grey
        chroma.append(mean / np.linalg.norm(mean))  # hue direction, free of the brightness nuisance
        pitch.append([np.log2(_pitch_in(read_audio(Path(video), SAMPLE_RATE), SAMPLE_RATE, 100.0, 1000.0))])
    labels = manifest["label"].to_numpy()
    visual_acc = _nearest_class_mean_accuracy(np.array(chroma), labels)
    audio_acc = _nearest_class_mean_accuracy(np.array(pitch), labels)
    assert visual_acc > 0.4 and audio_acc > 0.4, (visual_acc, audio_acc)  # chance: 0.1
    assert av_pitch(0.0) == 160.0 and av_pitch(4.0) == 320.0


def _pitch_in(samples: np.ndarray, sample_rate: int, low: float, high: float) -> float:
    """Frequency (Hz) of the strongest spectral peak between low and high."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    freqs = np.fft.rfftfreq(samples.size, 1.0 / sample_rate)
    band = (freqs > low) & (freqs < high)
    return float(freqs[band][np.argmax(spectrum[band])])
