"""Decoding: sampled video frames (decord or PyAV) and mono audio (PyAV), with errors that name the clip.

Frame sampling (``extract.video``; `FrameSampler`) picks frame indices from the clip's frame count N
and native frame rate r alone, so the same clip always yields the same frames, with either backend:

* ``uniform``: F = ``frames`` indices at the centres of F equal segments of the clip,
  ``idx_i = floor((i + 0.5) * N / F)`` for ``i < F`` (strictly increasing since N >= F). A clip
  with fewer than F frames is a bad clip: `DecodeError`.
* ``fps``: one frame every 1 / ``fps`` seconds of video. Frame ``j`` is shown during
  ``[j / r, (j + 1) / r)``; at the times ``t_k = (k + 0.5) / fps``, ``k = 0, 1, ...`` while
  ``t_k < N / r`` (the duration), the frame nearest ``t_k`` (the one shown at ``t_k``) is
  ``idx_k = floor(t_k * r)``. Repeats (``fps > r``) are dropped; a clip shorter than
  ``0.5 / fps`` gets its centre frame ``floor(N / 2)``. With ``fps == r`` this is every frame.
* ``all``: every frame, ``idx_j = j``.

``fps`` and ``all`` keep at most M = ``max_frames`` indices: beyond M, the K selected indices
are thinned uniformly with the same segment-centre rule, keeping ``idx[floor((i + 0.5) * K / M)]``
for ``i < M``. Indices are int64 and strictly increasing in every mode.

Backends (``extract.video.backend``): ``decord`` (random access by index) and ``pyav`` (for
platforms without decord wheels: decodes sequentially from the start, converting only the sampled
frames, and stops after the last one). `video_info` gives the same (N, r) with both: PyAV takes N
from the container's frame count, else (Matroska, WebM, ...) counts the stream's packets without
decoding, as decord does; r is the stream's average frame rate. Both use FFmpeg's decoder and RGB
conversion, so they return the same frames up to rounding (identical on the synthetic clips).
Every failure is a `DecodeError` naming the file, the backend and the reason.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

if TYPE_CHECKING:
    from pipeline.core.config import VideoParams

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("decord", "pyav")
SAMPLINGS: tuple[str, ...] = ("uniform", "fps", "all")
_EPS = 1e-9  # absorbs float error in floor() of a product that is mathematically an integer


class DecodeError(RuntimeError):
    """A clip could not be decoded; the message names the file and the reason."""


# --------------------------------------------------------------------------- sampling


def uniform_indices(num_frames: int, count: int) -> np.ndarray:
    """F frame indices at segment centres of a clip of `num_frames` frames: floor((i + 0.5) * N / F).

    Monotone; a clip with fewer than F frames repeats frames (callers that forbid this check first).
    """
    if num_frames <= 0:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    return np.floor((np.arange(count) + 0.5) * num_frames / count).astype(np.int64)  # (F,)


def _thin(indices: np.ndarray, cap: int) -> np.ndarray:
    """At most `cap` of `indices`, picked at segment centres (strictly increasing stays so)."""
    if indices.size <= cap:
        return indices
    return indices[uniform_indices(indices.size, cap)]


def _fps_indices(num_frames: int, native_fps: float, fps: float) -> np.ndarray:
    """Frames shown at t_k = (k + 0.5) / fps for every t_k before the end of the clip, without repeats."""
    if not (math.isfinite(native_fps) and native_fps > 0):
        raise DecodeError(f"the video has no usable frame rate ({native_fps}), needed by sampling: fps")
    steps = max(0, math.ceil(num_frames * fps / native_fps - 0.5 - _EPS))  # k with (k + 0.5) / fps < N / r
    if steps == 0:
        return uniform_indices(num_frames, 1)  # clip shorter than half a sampling period: its centre frame
    times = (np.arange(steps) + 0.5) / fps  # (K,) seconds
    indices = np.floor(times * native_fps + _EPS).astype(np.int64)
    return np.unique(np.minimum(indices, num_frames - 1))  # sorted, repeats (fps > native fps) dropped


@dataclasses.dataclass(frozen=True)
class FrameSampler:
    """Which frames of a clip to decode (``extract.video``: sampling, frames, fps, max_frames).

    See the module docstring for the rule of each mode.
    """

    sampling: str  # uniform | fps | all
    frames: int  # uniform: frames per clip
    fps: float  # fps: frames per second of video
    max_frames: int  # fps / all: at most this many frames (thinned uniformly beyond)

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"extract.video.sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.sampling == "uniform" and self.frames < 1:
            raise ValueError(f"extract.video.frames must be >= 1 for sampling: uniform, got {self.frames}")
        if self.sampling == "fps" and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"extract.video.fps must be > 0 for sampling: fps, got {self.fps}")
        if self.sampling in ("fps", "all") and self.max_frames < 1:
            raise ValueError(f"extract.video.max_frames must be >= 1 for sampling: {self.sampling}, "
                             f"got {self.max_frames}")

    @classmethod
    def from_params(cls, p: VideoParams) -> FrameSampler:
        """The sampler of a `config.VideoParams` (``extract.video``)."""
        return cls(sampling=p.sampling, frames=int(p.frames), fps=float(p.fps), max_frames=int(p.max_frames))

    def indices(self, num_frames: int, native_fps: float) -> np.ndarray:
        """Frame indices (K,) int64 to decode from a clip of `num_frames` frames at `native_fps`.

        Raises DecodeError (without the path: the caller adds it) for a clip with no frame, a
        clip shorter than ``frames`` under uniform sampling, and a clip without a frame rate
        under fps sampling.
        """
        if num_frames <= 0:
            raise DecodeError(f"the video stream has no frames (frame count {num_frames})")
        if self.sampling == "uniform":
            if num_frames < self.frames:
                raise DecodeError(
                    f"clip has {num_frames} frames, fewer than the {self.frames} frames requested "
                    f"(extract.video.frames); lower it or use sampling: all")
            return uniform_indices(num_frames, self.frames)
        if self.sampling == "fps":
            return _thin(_fps_indices(num_frames, native_fps, self.fps), self.max_frames)
        return _thin(np.arange(num_frames, dtype=np.int64), self.max_frames)


# --------------------------------------------------------------------------- decord backend


def _decord_open(path: Path, threads: int = 1) -> Any:
    """A decord VideoReader; `threads` decoder threads (0: FFmpeg's choice)."""
    import decord  # imported here: decord's import is slow and only the decoding workers need it

    return decord.VideoReader(str(path), num_threads=threads)


def _decord_info(reader: Any) -> tuple[int, float]:
    fps = float(reader.get_avg_fps())
    return len(reader), (fps if math.isfinite(fps) and fps > 0 else 0.0)


def _decord_video_info(path: Path) -> tuple[int, float]:
    return _decord_info(_decord_open(path))


def _decord_read(path: Path, sampler: FrameSampler, threads: int) -> np.ndarray:
    reader = _decord_open(path, threads)
    indices = sampler.indices(*_decord_info(reader))
    return reader.get_batch(indices.tolist()).asnumpy()  # (F, H, W, 3)


def _decord_errors() -> tuple[type[BaseException], ...]:
    import decord

    return decord.DECORDError, RuntimeError, ValueError


# --------------------------------------------------------------------------- PyAV backend


def _pyav_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise DecodeError("the file has no video stream")
    return container.streams.video[0]


def _pyav_info(path: Path, container: av.container.InputContainer) -> tuple[int, float]:
    """(frames, fps) of the first video stream: the container's frame count, else its packets (as decord)."""
    stream = _pyav_stream(container)
    rate = stream.average_rate
    fps = float(rate) if rate else 0.0
    if stream.frames > 0:
        return int(stream.frames), fps
    # no frame count in the container (e.g. Matroska, WebM): count the stream's packets without decoding,
    # with a second demuxer so that `container` stays at the start; PyAV ends a demux with an empty flush packet
    with av.open(str(path)) as counter:
        return sum(1 for packet in counter.demux(counter.streams.video[0]) if packet.size > 0), fps


def _pyav_video_info(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as container:
        return _pyav_info(path, container)


def _pyav_read(path: Path, sampler: FrameSampler, threads: int) -> np.ndarray:
    """Decode from the start, keeping the sampled frames and stopping after the last one."""
    with av.open(str(path)) as container:
        indices = sampler.indices(*_pyav_info(path, container))
        wanted, last = set(indices.tolist()), int(indices.max())
        kept: dict[int, np.ndarray] = {}
        decoded = 0
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        for position, frame in enumerate(container.decode(stream)):
            decoded = position + 1
            if position in wanted:
                kept[position] = frame.to_ndarray(format="rgb24")  # (H, W, 3)
            if position >= last:
                break
    if decoded <= last:
        raise DecodeError(f"the video stream decodes to {decoded} frames, frame {last} was requested")
    return np.stack([kept[i] for i in indices.tolist()])  # (F, H, W, 3); repeated indices repeat the frame


def _pyav_errors() -> tuple[type[BaseException], ...]:
    return av.error.FFmpegError, ValueError


# --------------------------------------------------------------------------- public API


_INFO: dict[str, Callable[[Path], tuple[int, float]]] = {"decord": _decord_video_info, "pyav": _pyav_video_info}
_READ: dict[str, Callable[[Path, FrameSampler, int], np.ndarray]] = {"decord": _decord_read, "pyav": _pyav_read}
_ERRORS: dict[str, Callable[[], tuple[type[BaseException], ...]]] = {"decord": _decord_errors, "pyav": _pyav_errors}


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r} (extract.video.backend): expected one of {BACKENDS}")


def _decode(path: Path, backend: str, what: str, action: Callable[[], Any]) -> Any:
    """Run `action`, turning any decoder error into a DecodeError naming `path`, the backend and the reason."""
    _check_backend(backend)
    try:
        return action()
    except DecodeError as err:
        raise DecodeError(f"cannot decode {what} of {path} ({backend}): {err}") from err
    except _ERRORS[backend]() as err:
        raise DecodeError(f"cannot decode {what} of {path} ({backend}): {err}") from err


def video_info(path: Path, backend: str = "decord") -> tuple[int, float]:
    """(number of frames, native frame rate) of a video's first video stream; the rate is 0.0 if unknown.

    Both backends report the same numbers for the same file.
    """
    return _decode(path, backend, "video info", lambda: _INFO[backend](Path(path)))


def read_frames(path: Path, sampler: FrameSampler, backend: str = "decord", threads: int = 1) -> np.ndarray:
    """The frames `sampler` selects, RGB uint8 (F, H, W, 3), decoded by `backend` (decord | pyav).

    `threads` decoder threads: 1 when clips are decoded in parallel worker processes, 0 (the
    decoder's choice) when one process decodes. Raises DecodeError naming `path` for an
    unreadable file, a file without video, or a bad clip (see `FrameSampler.indices`);
    ValueError for an unknown backend.
    """
    frames = _decode(path, backend, "video frames", lambda: _READ[backend](Path(path), sampler, threads))
    log.debug("decoded %d frames of %s with %s", len(frames), path, backend)
    return frames


def read_audio(path: Path, sample_rate: int) -> np.ndarray:
    """The first audio stream of a file, downmixed to mono float32 (n,) at `sample_rate`."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DecodeError(f"{path} has no audio track")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks = []
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(frame))
            chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(None))  # flush
    except av.error.FFmpegError as err:
        raise DecodeError(f"cannot decode audio of {path}: {err}") from err
    if not chunks:
        raise DecodeError(f"{path}: the audio track decodes to no samples")
    return np.concatenate(chunks).astype(np.float32)  # (n,)
