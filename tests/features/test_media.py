"""Tests of decoding (pipeline.features.media) and of the log-mel front end (pipeline.extract.log_mel)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.core.config import AudioParams, VideoParams
from pipeline.data.synthetic import write_mp4
from pipeline.features import media
from pipeline.features.extraction import log_mel
from pipeline.features.media import DecodeError, FrameSampler, read_audio, read_frames, uniform_indices, video_info

FPS, SIZE, SAMPLE_RATE, SECONDS = 4, 32, 16000, 1.0
N_FRAMES = 10  # 2.5 s at 4 fps
TONE_HZ = 440.0
BACKENDS = ("decord", "pyav")
# the 2 s, 8 fps, 64x64 clips of the synthetic dataset (generate: seconds, fps, size)
FPS8, SIZE8, N_FRAMES8 = 8, 64, 16


def uniform(frames: int) -> FrameSampler:
    return FrameSampler("uniform", frames=frames, fps=1.0, max_frames=64)


def by_fps(fps: float, max_frames: int = 64) -> FrameSampler:
    return FrameSampler("fps", frames=8, fps=fps, max_frames=max_frames)


def every(max_frames: int = 64) -> FrameSampler:
    return FrameSampler("all", frames=8, fps=1.0, max_frames=max_frames)


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


def _encode_video(path: Path, frames: np.ndarray, fps: int, container_format: str) -> None:
    """Video-only file in any container PyAV can mux (write_mp4 only writes mp4)."""
    from fractions import Fraction

    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "20", "x264-params": "mbtree=0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.fixture(scope="module", params=["mp4", "mkv"])
def clip8(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 random 64x64 frames at 8 fps (2 s), as mp4 (frame count in the container) and as Matroska (none)."""
    frames = np.random.default_rng(2).integers(0, 256, size=(N_FRAMES8, SIZE8, SIZE8, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("media8") / f"clip8.{request.param}"
    if request.param == "mp4":
        write_mp4(path, frames, FPS8, None, SAMPLE_RATE)
    else:
        _encode_video(path, frames, FPS8, "matroska")
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


# --------------------------------------------------------------------------- FrameSampler


def test_uniform_sampling_segment_centres() -> None:
    np.testing.assert_array_equal(uniform(8).indices(16, 8.0), [1, 3, 5, 7, 9, 11, 13, 15])
    np.testing.assert_array_equal(uniform(4).indices(10, 4.0), [1, 3, 6, 8])  # floor(1.25), floor(3.75), ...
    np.testing.assert_array_equal(uniform(8).indices(8, 8.0), np.arange(8))  # exactly F frames: all of them
    np.testing.assert_array_equal(uniform(1).indices(101, 0.0), [50])  # the frame rate is not needed
    assert uniform(8).indices(16, 8.0).dtype == np.int64


@pytest.mark.parametrize("num_frames", [1, 5, 7])
def test_uniform_sampling_short_clip_is_a_bad_clip(num_frames: int) -> None:
    expected = (rf"clip has {num_frames} frames, fewer than the 8 frames requested \(extract.video.frames\); "
                r"lower it or use sampling: all")
    with pytest.raises(DecodeError, match=expected):
        uniform(8).indices(num_frames, 8.0)


def test_fps_sampling_hand_computed() -> None:
    # native 8 fps, 16 frames = 2 s; frame j is shown during [j / 8, (j + 1) / 8)
    np.testing.assert_array_equal(by_fps(1.0).indices(16, 8.0), [4, 12])  # t = 0.5 s, 1.5 s
    np.testing.assert_array_equal(by_fps(2.0).indices(16, 8.0), [2, 6, 10, 14])  # t = 0.25, 0.75, 1.25, 1.75 s
    np.testing.assert_array_equal(by_fps(8.0).indices(16, 8.0), np.arange(16))  # the native rate: every frame
    np.testing.assert_array_equal(by_fps(20.0).indices(16, 8.0), np.arange(16))  # above it: repeats dropped
    np.testing.assert_array_equal(by_fps(0.3).indices(16, 8.0), [13])  # t = 1.667 s; 5 s is past the end
    # 12 frames = 1.5 s: t = 1.5 s is not before the end, only t = 0.5 s counts
    np.testing.assert_array_equal(by_fps(1.0).indices(12, 8.0), [4])
    # NTSC 29.97 fps (30000/1001), 60 frames: t = 0.5 s -> floor(14.985), t = 1.5 s -> floor(44.955)
    np.testing.assert_array_equal(by_fps(1.0).indices(60, 30000 / 1001), [14, 44])


def test_fps_sampling_clip_shorter_than_half_a_period_keeps_its_centre_frame() -> None:
    # 2 s at fps 0.2: t_0 = 2.5 s is already past the end -> the centre frame floor(16 / 2)
    np.testing.assert_array_equal(by_fps(0.2).indices(16, 8.0), [8])
    np.testing.assert_array_equal(by_fps(1.0).indices(1, 8.0), [0])  # a single frame of 0.125 s


def test_fps_sampling_capped_by_uniform_thinning() -> None:
    # 10 s at 30 fps, fps 10: floor((k + 0.5) * 3) = 1 + 3k for k < 100; thinned to 4 at
    # positions floor((i + 0.5) * 100 / 4) = 12, 37, 62, 87
    np.testing.assert_array_equal(by_fps(10.0, max_frames=4).indices(300, 30.0), [37, 112, 187, 262])
    np.testing.assert_array_equal(by_fps(10.0, max_frames=100).indices(300, 30.0), 1 + 3 * np.arange(100))


@pytest.mark.parametrize("native_fps", [0.0, float("nan")])
def test_fps_sampling_needs_a_frame_rate(native_fps: float) -> None:
    with pytest.raises(DecodeError, match="no usable frame rate"):
        by_fps(1.0).indices(16, native_fps)


def test_all_sampling_hand_computed() -> None:
    np.testing.assert_array_equal(every(64).indices(10, 4.0), np.arange(10))
    np.testing.assert_array_equal(every(10).indices(10, 4.0), np.arange(10))
    np.testing.assert_array_equal(every(4).indices(10, 4.0), [1, 3, 6, 8])  # the segment-centre rule
    np.testing.assert_array_equal(every(3).indices(100, 25.0), [16, 50, 83])  # floor(16.67), floor(50), ...
    np.testing.assert_array_equal(every(1).indices(1, 0.0), [0])


@pytest.mark.parametrize("sampler", [uniform(1), by_fps(1.0), every()], ids=["uniform", "fps", "all"])
def test_empty_clip_is_a_bad_clip(sampler: FrameSampler) -> None:
    with pytest.raises(DecodeError, match="no frames"):
        sampler.indices(0, 8.0)


@pytest.mark.parametrize("num_frames", [1, 2, 7, 16, 31, 250, 1001])
@pytest.mark.parametrize("native_fps", [8.0, 25.0, 30000 / 1001])
@pytest.mark.parametrize("sampler", [by_fps(0.5, 5), by_fps(1.0), by_fps(3.0, 16), by_fps(60.0, 64), every(8), every()])
def test_fps_and_all_indices_strictly_increasing_in_range_and_capped(
    num_frames: int, native_fps: float, sampler: FrameSampler
) -> None:
    idx = sampler.indices(num_frames, native_fps)
    assert idx.dtype == np.int64
    assert 1 <= idx.size <= sampler.max_frames
    assert idx.min() >= 0 and idx.max() < num_frames
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, sampler.indices(num_frames, native_fps))  # deterministic
    if sampler.sampling == "fps":  # roughly fps frames per second of video, before the cap
        expected = min(max(1, round(num_frames / native_fps * sampler.fps)), num_frames, sampler.max_frames)
        assert abs(idx.size - expected) <= 1


def test_sampler_from_params() -> None:
    params = VideoParams(backend="pyav", sampling="fps", frames=8, fps=2, max_frames=32)
    assert FrameSampler.from_params(params) == FrameSampler("fps", frames=8, fps=2.0, max_frames=32)
    assert isinstance(FrameSampler.from_params(params).fps, float)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("random", 8, 1.0, 64), "extract.video.sampling"),
        (("uniform", 0, 1.0, 64), "extract.video.frames"),
        (("fps", 8, 0.0, 64), "extract.video.fps"),
        (("fps", 8, 1.0, 0), "extract.video.max_frames"),
        (("all", 8, 1.0, 0), "extract.video.max_frames"),
    ],
)
def test_sampler_rejects_bad_settings(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FrameSampler(*args)


def test_sampler_ignores_settings_of_other_modes() -> None:
    FrameSampler("uniform", frames=8, fps=0.0, max_frames=0)  # fps / max_frames unused by uniform
    FrameSampler("all", frames=0, fps=0.0, max_frames=4)


# --------------------------------------------------------------------------- backends


def test_video_info_same_for_both_backends(clip: Path, clip8: Path) -> None:
    assert video_info(clip, "decord") == video_info(clip, "pyav") == (N_FRAMES, float(FPS))
    assert video_info(clip8, "decord") == video_info(clip8, "pyav") == (N_FRAMES8, float(FPS8))


def test_mkv_has_no_frame_count_in_the_container(clip8: Path) -> None:
    """The pyav backend counts demuxed packets there; the test above checks it matches decord."""
    with av.open(str(clip8)) as container:
        assert container.streams.video[0].frames == (N_FRAMES8 if clip8.suffix == ".mp4" else 0)


# indices written out by hand for the 16-frame 8 fps clip (see test_*_sampling_hand_computed)
MODES = {
    "uniform8": (uniform(8), [1, 3, 5, 7, 9, 11, 13, 15]),
    "fps1": (by_fps(1.0), [4, 12]),
    "fps3_cap4": (by_fps(3.0, max_frames=4), [1, 6, 9, 14]),  # floor((k + .5) * 8 / 3) = 1,4,6,9,12,14 -> thinned
    "all": (every(), list(range(16))),
    "all_cap5": (every(5), [1, 4, 8, 11, 14]),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_backends_decode_the_same_frames(clip8: Path, mode: str) -> None:
    sampler, expected_idx = MODES[mode]
    reference = _pyav_frames(clip8)  # every frame, decoded independently of pipeline.features.media
    assert len(reference) == N_FRAMES8
    expected = np.stack([reference[i] for i in expected_idx])  # (F, H, W, 3)
    decoded = {backend: read_frames(clip8, sampler, backend) for backend in BACKENDS}
    for frames in decoded.values():
        assert frames.shape == (len(expected_idx), SIZE8, SIZE8, 3) and frames.dtype == np.uint8
        diff = np.abs(frames.astype(np.int16) - expected.astype(np.int16))
        assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())  # measured: 0 and 0.0
    diff = np.abs(decoded["decord"].astype(np.int16) - decoded["pyav"].astype(np.int16))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())
    np.testing.assert_array_equal(read_frames(clip8, sampler, "pyav"), decoded["pyav"])  # same clip, same frames


class _FixedIndices:
    """A sampler with repeated indices: FrameSampler never repeats one, but read_frames stays general."""

    def indices(self, num_frames: int, native_fps: float) -> np.ndarray:
        return np.array([0, 0, 3, 3, 3, 7], dtype=np.int64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_frames_repeats_repeated_indices(clip8: Path, backend: str) -> None:
    frames = read_frames(clip8, _FixedIndices(), backend)  # type: ignore[arg-type]
    reference = _pyav_frames(clip8)
    expected = np.stack([reference[i] for i in [0, 0, 3, 3, 3, 7]])
    assert np.abs(frames.astype(np.int16) - expected.astype(np.int16)).max() <= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_frames_short_clip_under_uniform_names_the_path(clip: Path, backend: str) -> None:
    with pytest.raises(DecodeError, match=r"clip has 10 frames, fewer than the 16 frames requested") as err:
        read_frames(clip, uniform(16), backend)
    assert str(clip) in str(err.value)
    assert read_frames(clip, every(16), backend).shape == (N_FRAMES, SIZE, SIZE, 3)  # the suggested way out


class _CountingContainer:
    """Wraps a PyAV input container, recording the pts of every frame its decode() yields."""

    def __init__(self, container: av.container.InputContainer, decoded: list[int]) -> None:
        self._container, self._decoded = container, decoded

    def __enter__(self) -> _CountingContainer:
        self._container.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._container.__exit__(*exc)

    def __getattr__(self, name: str) -> object:
        return getattr(self._container, name)

    def decode(self, *args: object, **kwargs: object) -> object:
        for frame in self._container.decode(*args, **kwargs):
            self._decoded.append(frame.pts)
            yield frame


def test_pyav_stops_decoding_after_the_last_needed_frame(clip8: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []
    converted: list[int] = []
    real_open, real_to_ndarray = av.open, av.VideoFrame.to_ndarray

    def counting_to_ndarray(frame: av.VideoFrame, *args: object, **kwargs: object) -> np.ndarray:
        converted.append(frame.pts)
        return real_to_ndarray(frame, *args, **kwargs)

    monkeypatch.setattr(av, "open", lambda *a, **k: _CountingContainer(real_open(*a, **k), decoded))
    monkeypatch.setattr(av.VideoFrame, "to_ndarray", counting_to_ndarray)
    frames = read_frames(clip8, by_fps(1.0), "pyav")  # frames 4 and 12 of 16
    assert frames.shape == (2, SIZE8, SIZE8, 3)
    assert len(decoded) == 13  # frames 0..12: nothing after the last needed one
    assert len(converted) == 2  # only the kept frames are converted to RGB


@pytest.mark.parametrize("backend", ["opencv", "Decord", ""])
def test_unknown_backend_raises_value_error(clip: Path, backend: str) -> None:
    with pytest.raises(ValueError, match=r"\('decord', 'pyav'\)"):
        read_frames(clip, uniform(4), backend)
    with pytest.raises(ValueError, match=r"\('decord', 'pyav'\)"):
        video_info(clip, backend)


# --------------------------------------------------------------------------- read_frames


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("count", [4, 8, 10])
def test_read_frames_matches_pyav_at_uniform_indices(clip: Path, count: int, backend: str) -> None:
    frames = read_frames(clip, uniform(count), backend)
    assert frames.shape == (count, SIZE, SIZE, 3)
    assert frames.dtype == np.uint8
    reference = _pyav_frames(clip)
    assert len(reference) == N_FRAMES
    # indices written out by hand from floor((i + 0.5) * N / F), independent of uniform_indices
    expected_idx = {4: [1, 3, 6, 8], 8: [0, 1, 3, 4, 5, 6, 8, 9], 10: list(range(10))}
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
    for backend in BACKENDS:
        assert read_frames(path, uniform(2), backend).shape == (2, SIZE, SIZE, 3)  # the video itself is fine
    with pytest.raises(DecodeError, match="no audio track") as err:
        read_audio(path, SAMPLE_RATE)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_frames_without_video_stream_raises(tmp_path: Path, backend: str) -> None:
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
        read_frames(path, uniform(4), backend)
    assert str(path) in str(err.value)
    with pytest.raises(DecodeError, match="cannot decode video info") as err:
        video_info(path, backend)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- broken files


@pytest.fixture(params=["corrupt", "empty", "truncated"])
def broken(request: pytest.FixtureRequest, tmp_path: Path, clip: Path) -> Path:
    path = tmp_path / f"{request.param}.mp4"
    if request.param == "corrupt":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif request.param == "truncated":  # the first half of a good clip: the mp4 index (moov) is lost
        data = clip.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_frames_broken_file_raises_decode_error(broken: Path, backend: str) -> None:
    with pytest.raises(DecodeError, match="cannot decode video frames") as err:
        read_frames(broken, uniform(4), backend)
    assert str(broken) in str(err.value) and backend in str(err.value)
    with pytest.raises(DecodeError) as err:
        video_info(broken, backend)
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
