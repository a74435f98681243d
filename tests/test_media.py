"""Tests of decoding (pipeline.media) and of the log-mel front end (pipeline.extract.log_mel)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from pipeline import media
from pipeline.config import AudioParams
from pipeline.extract import log_mel
from pipeline.media import DecodeError, read_audio, read_frames, uniform_indices
from pipeline.synthetic import write_mp4

FPS, SIZE, SAMPLE_RATE, SECONDS = 4, 32, 16000, 1.0
N_FRAMES = 10  # 2.5 s at 4 fps
TONE_HZ = 440.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clip of N_FRAMES random 32x32 frames and a 1 s pure 440 Hz tone."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(N_FRAMES, SIZE, SIZE, 3), dtype=np.uint8)  # (T, H, W, 3)
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE  # (n,)
    tone = (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)  # (n,)
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    write_mp4(path, frames, FPS, tone, SAMPLE_RATE)
    return path


def _pyav_frames(path: Path) -> list[np.ndarray]:
    """Every frame of the first video stream, RGB uint8 (H, W, 3), decoded by PyAV."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# --------------------------------------------------------------------------- uniform_indices


def test_uniform_indices_segment_centres() -> None:
    np.testing.assert_array_equal(uniform_indices(16, 8), [1, 3, 5, 7, 9, 11, 13, 15])
    np.testing.assert_array_equal(uniform_indices(8, 8), np.arange(8))
    np.testing.assert_array_equal(uniform_indices(10, 4), [1, 3, 6, 8])  # floor(1.25), floor(3.75), ...
    np.testing.assert_array_equal(uniform_indices(100, 1), [50])
    assert uniform_indices(16, 8).dtype == np.int64


def test_uniform_indices_short_clip_repeats_frames() -> None:
    idx = uniform_indices(3, 8)
    np.testing.assert_array_equal(idx, [0, 0, 0, 1, 1, 2, 2, 2])
    assert np.all(np.diff(idx) >= 0)
    assert idx.min() >= 0 and idx.max() <= 2
    np.testing.assert_array_equal(uniform_indices(1, 5), [0, 0, 0, 0, 0])


@pytest.mark.parametrize("num_frames", [1, 2, 7, 31, 250])
@pytest.mark.parametrize("count", [1, 4, 8, 16])
def test_uniform_indices_in_range_and_monotone(num_frames: int, count: int) -> None:
    idx = uniform_indices(num_frames, count)
    assert idx.shape == (count,)
    assert idx.min() >= 0 and idx.max() < num_frames
    assert np.all(np.diff(idx) >= 0)
    if num_frames >= count:
        assert len(set(idx.tolist())) == count  # no repeats when the clip has enough frames


@pytest.mark.parametrize("num_frames", [0, -3])
def test_uniform_indices_empty_clip_raises(num_frames: int) -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        uniform_indices(num_frames, 8)


# --------------------------------------------------------------------------- read_frames


@pytest.mark.parametrize("count", [4, 8, 16])
def test_read_frames_matches_pyav_at_uniform_indices(clip: Path, count: int) -> None:
    frames = read_frames(clip, count)
    assert frames.shape == (count, SIZE, SIZE, 3)
    assert frames.dtype == np.uint8
    reference = _pyav_frames(clip)
    assert len(reference) == N_FRAMES
    # indices written out by hand from floor((i + 0.5) * N / F), independent of uniform_indices
    expected_idx = {4: [1, 3, 6, 8], 8: [0, 1, 3, 4, 5, 6, 8, 9], 16: [0, 0, 1, 2, 2, 3, 4, 4, 5, 5, 6, 7, 7, 8, 9, 9]}
    expected = np.stack([reference[i] for i in expected_idx[count]])  # (F, H, W, 3)
    # decord and PyAV share FFmpeg's decoder and colour conversion: allow at most 1 grey level of rounding
    diff = np.abs(frames.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, diff.max()
    assert diff.mean() < 0.01


# --------------------------------------------------------------------------- read_audio


def _dominant_hz(wave: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.fft.rfftfreq(wave.size, 1.0 / sample_rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("rate", [16000, 8000])
def test_read_audio_mono_float32_with_the_written_tone(clip: Path, rate: int) -> None:
    wave = read_audio(clip, rate)
    assert wave.ndim == 1
    assert wave.dtype == np.float32
    expected = SECONDS * rate
    # AAC pads to whole 1024-sample frames (at the source rate): a little more than written, never much less
    assert expected * 0.98 <= wave.size <= expected + 2048 * rate / SAMPLE_RATE + 64, wave.size
    assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0
    assert 0.2 < np.abs(wave).max()  # the 0.5-amplitude tone survived
    # frequency resolution is rate / n ~ 1 Hz: the peak must be the 440 Hz tone (also after resampling)
    assert abs(_dominant_hz(wave, rate) - TONE_HZ) < 3.0


def test_read_audio_without_audio_track_raises(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    write_mp4(path, np.zeros((4, SIZE, SIZE, 3), np.uint8), FPS, None, SAMPLE_RATE)
    assert read_frames(path, 2).shape == (2, SIZE, SIZE, 3)  # the video itself is fine
    with pytest.raises(DecodeError, match="no audio track") as err:
        read_audio(path, SAMPLE_RATE)
    assert str(path) in str(err.value)


def test_read_frames_without_video_stream_raises(tmp_path: Path) -> None:
    """An audio-only mp4 (PyAV writes it directly; write_mp4 always has video)."""
    from fractions import Fraction

    path = tmp_path / "audio_only.mp4"
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        samples = np.zeros((1, SAMPLE_RATE // 2), np.float32)
        chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts, chunk.time_base = SAMPLE_RATE, 0, Fraction(1, SAMPLE_RATE)
        container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))
    assert read_audio(path, SAMPLE_RATE).size >= SAMPLE_RATE // 2
    with pytest.raises(DecodeError, match="cannot decode video frames") as err:
        read_frames(path, 4)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- broken files


@pytest.fixture(params=["corrupt", "empty"])
def broken(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / f"{request.param}.mp4"
    if request.param == "corrupt":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    else:
        path.write_bytes(b"")
    return path


def test_read_frames_broken_file_raises_decode_error(broken: Path) -> None:
    with pytest.raises(DecodeError) as err:
        read_frames(broken, 4)
    assert str(broken) in str(err.value)


def test_read_audio_broken_file_raises_decode_error(broken: Path) -> None:
    with pytest.raises(DecodeError) as err:
        read_audio(broken, SAMPLE_RATE)
    assert str(broken) in str(err.value)


def test_decode_error_is_a_runtime_error() -> None:
    assert issubclass(media.DecodeError, RuntimeError)


# --------------------------------------------------------------------------- log_mel


@pytest.mark.parametrize("n", [16000, 12345, 401])
def test_log_mel_shape(n: int) -> None:
    params = AudioParams(sample_rate=16000, n_mels=40, win_ms=25.0, hop_ms=10.0, fmin=0.0, fmax=8000.0)
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(n)).astype(np.float32)
    mel = log_mel(wave, params)
    hop = 160  # 10 ms at 16 kHz
    assert mel.shape == (1 + n // hop, 40)  # librosa centres frames: 1 + floor(n / hop)
    assert mel.dtype == np.float32
    assert np.isfinite(mel).all()


def test_log_mel_is_db_of_power_and_peaks_at_the_tone() -> None:
    params = AudioParams(sample_rate=16000, n_mels=64, win_ms=25.0, hop_ms=10.0, fmin=0.0, fmax=8000.0)
    t = np.arange(16000) / 16000
    loud = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    quiet = (0.05 * loud).astype(np.float32)
    mel_loud, mel_quiet = log_mel(loud, params), log_mel(quiet, params)
    # power in dB: an amplitude ratio of 20 is 20 * log10(20) = 26.02 dB everywhere (no top_db clipping)
    middle = slice(5, -5)
    band = int(np.argmax(mel_loud[50]))
    np.testing.assert_allclose(mel_loud[middle, band] - mel_quiet[middle, band], 26.02, atol=0.05)
    # the strongest mel band holds 1 kHz: its centre frequency is within one band of 1 kHz
    import librosa

    centres = librosa.mel_frequencies(n_mels=64 + 2, fmin=0.0, fmax=8000.0)[1:-1]
    assert abs(centres[band] - 1000.0) < 100.0
