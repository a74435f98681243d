"""Tests of the synthetic dataset generators (pipeline.data.synthetic): synthetic_sentiment and synthetic_av."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import decord
import numpy as np
import pandas as pd
import pytest

from pipeline.data.limits import SUBSETS, Draws, bayes_predictions
from pipeline.data.synthetic import (
    AV_CLASSES,
    AV_TABLE_COLUMNS,
    CLOSING_FILLERS,
    CONNECTORS,
    DEFAULT_PROCESS,
    LABEL_COLUMNS,
    LEXICON,
    LIMITS_FILE,
    NEUTRAL_SENTENCES,
    OPENING_FILLERS,
    ORACLE_COLUMNS,
    ORACLE_FILE,
    SPLIT_NAMES,
    TEMPLATES,
    av_pitch,
    clip_path,
    cue_to_pitch,
    generate_av,
    generate_sentiment,
    sentiment_process,
    write_mp4,
)
from pipeline.data.vegas import MANIFEST_COLUMNS, fold_path, read_vegas
from pipeline.features.media import FrameSampler, read_audio, read_frames

SPLITS = {"train": 0.6, "valid": 0.15, "test": 0.25}
SECONDS, FPS, SIZE, SAMPLE_RATE = 1.0, 8, 32, 16000
N_CLIPS = 16
MONTE_CARLO = 2000
# Every lexicon entry as a whole-word pattern, longest first (no entry occurs inside another one anyway).
CUE_PATTERN = re.compile(r"\b(" + "|".join(re.escape(e) for e, _ in sorted(LEXICON, key=lambda x: -len(x[0]))) + r")\b")
CUE_INDEX = {entry: index for index, (entry, _) in enumerate(LEXICON)}


def _generate(root: Path, n_clips: int = N_CLIPS, seed: int = 0, size: int = SIZE, **kwargs: object) -> pd.DataFrame:
    return generate_sentiment(root, n_clips=n_clips, seed=seed, splits=SPLITS, seconds=SECONDS, fps=FPS, size=size,
                              sample_rate=SAMPLE_RATE, monte_carlo=MONTE_CARLO, **kwargs)  # type: ignore[arg-type]


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
    """Spearman correlation (ties broken by order)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def _cues(text: str) -> list[str]:
    """The lexicon entries of a transcript, in order."""
    return CUE_PATTERN.findall(text)


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
    fifths = on_disk["label"] * DEFAULT_PROCESS.annotators  # the mean of 5 integer ratings
    assert np.allclose(fifths, fifths.round(), atol=1e-9)
    assert (on_disk["label"] < 0).any() and (on_disk["label"] > 0).any()
    expected = np.where(on_disk["label"] > 0, "Positive", np.where(on_disk["label"] < 0, "Negative", "Neutral"))
    assert (on_disk["annotation"] == expected).all()
    assert set(on_disk["mode"]) == set(SPLIT_NAMES)
    assert (on_disk["text"] == on_disk["text"].str.lower()).all()
    for row in on_disk.itertuples():
        assert clip_path(root, row.video_id, row.clip_id).is_file()


def test_lexicon_entries_are_distinguishable() -> None:
    entries = [entry for entry, _ in LEXICON]
    assert 40 <= len(entries) <= 60 and len(set(entries)) == len(entries)
    valences = [valence for _, valence in LEXICON]
    assert valences == sorted(valences) and valences[0] == -3.0 and valences[-1] == 3.0
    filler = [t.format(cue="") for t in TEMPLATES] + [*CONNECTORS, *OPENING_FILLERS, *CLOSING_FILLERS,
                                                      *NEUTRAL_SENTENCES]
    for entry in entries:
        pattern = re.compile(rf"\b{re.escape(entry)}\b")
        assert not [other for other in entries if other != entry and pattern.search(other)], entry
        assert not [text for text in filler if pattern.search(text)], entry


def test_transcripts_carry_two_to_five_lexicon_cues(dataset: tuple[Path, pd.DataFrame]) -> None:
    _, table = dataset
    low, high = DEFAULT_PROCESS.cues
    counts = [len(_cues(text)) for text in table["text"]]
    assert all(low <= n <= high for n in counts), counts
    assert len(set(counts)) > 1
    # the cues' mean valence follows the lexical centre label_T (= -s for an ironic clip)
    valence = dict(LEXICON)
    means = np.array([np.mean([valence[c] for c in _cues(text)]) for text in table["text"]])
    assert np.corrcoef(means, table["label_T"])[0, 1] > 0.7


def test_label_T_is_the_lexical_centre_flipped_by_irony(dataset: tuple[Path, pd.DataFrame]) -> None:
    root, table = dataset
    oracle = pd.read_csv(root / ORACLE_FILE)
    ironic = oracle["ironic"] == 1
    assert np.allclose(table["label_T"][ironic], -oracle["sentiment"][ironic], atol=1e-4)
    assert np.allclose(table["label_T"][~ironic], oracle["sentiment"][~ironic], atol=1e-4)


def test_limits_and_oracle_written_and_consistent(dataset: tuple[Path, pd.DataFrame]) -> None:
    root, table = dataset
    oracle = pd.read_csv(root / ORACLE_FILE)
    limits = json.loads((root / LIMITS_FILE).read_text())
    assert tuple(oracle.columns) == ORACLE_COLUMNS
    pd.testing.assert_frame_equal(oracle[["video_id", "clip_id", "mode", "label"]],
                                  table[["video_id", "clip_id", "mode", "label"]])
    assert set(oracle["ironic"]) <= {0, 1}
    assert limits["monte_carlo"]["n"] == MONTE_CARLO and limits["monte_carlo"]["seed"] == 0
    assert limits["process"]["annotators"] == 5 and limits["process"]["cues"] == [2, 5]
    assert list(limits["expected_mae"]) == list(SUBSETS)
    for key in SUBSETS:
        assert limits["expected_mae"][key]["se"] > 0
        predictions = oracle[f"bayes_{key}"]
        assert np.allclose(predictions * 5, (predictions * 5).round(), atol=1e-9)  # a possible label value
        for split in SPLIT_NAMES:
            rows = oracle[oracle["mode"] == split]
            mae = (rows["label"] - rows[f"bayes_{key}"]).abs().mean()
            assert limits["split_mae"][split][key] == pytest.approx(mae, abs=1e-12), (split, key)
    assert limits["split_size"] == oracle["mode"].value_counts().to_dict()
    assert limits["constant"]["mae"] > limits["expected_mae"]["text"]["mae"]


def test_oracle_predictions_are_recomputed_from_the_rendered_observations(dataset: tuple[Path, pd.DataFrame]) -> None:
    """The transcript's cue words and label_V/label_A are the exact observations the Bayes predictor used."""
    root, table = dataset
    oracle = pd.read_csv(root / ORACLE_FILE)
    high = DEFAULT_PROCESS.cues[1]
    words = np.full((len(table), high), -1)  # (N, C)
    for i, text in enumerate(table["text"]):
        cues = [CUE_INDEX[c] for c in _cues(text)]
        words[i, : len(cues)] = cues
    n = len(table)
    observed = Draws(sentiment=np.zeros(n), ironic=np.zeros(n, bool), centre=np.zeros(n), words=words,
                     video=table["label_V"].to_numpy(), audio=table["label_A"].to_numpy(),
                     ratings=np.zeros((n, 5), int), label=np.zeros(n))
    for key, prediction in bayes_predictions(DEFAULT_PROCESS, observed).items():
        assert np.allclose(prediction, oracle[f"bayes_{key}"]), key


def test_generator_rejects_a_process_over_another_lexicon(tmp_path: Path) -> None:
    from dataclasses import replace

    other = replace(sentiment_process(), valences=(-1.0, 1.0))
    with pytest.raises(ValueError, match="LEXICON"):
        _generate(tmp_path, process=other)
    with pytest.raises(ValueError, match="monte_carlo"):
        generate_sentiment(tmp_path, 12, 0, SPLITS, SECONDS, FPS, SIZE, SAMPLE_RATE, monte_carlo=1)
    assert not any(tmp_path.iterdir())


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
        generate_sentiment(tmp_path, 16, 0, splits, SECONDS, FPS, SIZE, SAMPLE_RATE)
    assert not (tmp_path / "label.csv").exists()


def test_determinism(dataset: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, table = dataset
    again = tmp_path / "again"
    _generate(again)
    for name in ("label.csv", ORACLE_FILE, LIMITS_FILE):
        assert (again / name).read_bytes() == (root / name).read_bytes(), name
    for row in table.itertuples():
        assert np.array_equal(_frames(again, row), _frames(root, row)), (row.video_id, row.clip_id)

    other = tmp_path / "other"
    _generate(other, seed=1)
    assert (other / "label.csv").read_bytes() != (root / "label.csv").read_bytes()
    first = table.iloc[0]
    assert not np.array_equal(_frames(other, first)[0], _frames(root, first)[0])


def test_regeneration_replaces_previous_dataset(tmp_path: Path) -> None:
    _generate(tmp_path, n_clips=14)
    table = _generate(tmp_path, n_clips=12)
    assert len(pd.read_csv(tmp_path / "label.csv")) == len(pd.read_csv(tmp_path / ORACLE_FILE)) == 12
    assert sum(json.loads((tmp_path / LIMITS_FILE).read_text())["split_size"].values()) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["Raw", "label.csv", LIMITS_FILE, ORACLE_FILE])
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
    args = {"seconds": SECONDS, "fps": FPS, "size": SIZE, "sample_rate": SAMPLE_RATE, "audio_noise": 0.6,
            "visual_noise": 0.6, **kwargs}
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
                                                 ({"size": 48}, "size"), ({"audio_noise": -1.0}, "audio_noise"),
                                                 ({"visual_noise": float("nan")}, "visual_noise")])
def test_av_bad_arguments(tmp_path: Path, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _generate_av(tmp_path, **kwargs)  # type: ignore[arg-type]


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
