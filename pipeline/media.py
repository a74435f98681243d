"""Decoding: sampled video frames (decord) and mono audio (PyAV), with errors that name the clip.

Frame sampling is uniform: F indices at the centres of F equal segments of the clip,
idx_i = floor((i + 0.5) * N / F), so the same clip always yields the same frames. A clip with
fewer than F frames repeats frames (the indices are still monotone).
"""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)


class DecodeError(RuntimeError):
    """A clip could not be decoded; the message names the file and the reason."""


def uniform_indices(num_frames: int, count: int) -> np.ndarray:
    """F frame indices at segment centres of a clip of `num_frames` frames."""
    if num_frames <= 0:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    return np.floor((np.arange(count) + 0.5) * num_frames / count).astype(np.int64)  # (F,)


def read_frames(path: Path, count: int) -> np.ndarray:
    """F uniformly sampled RGB frames of a video as uint8 (F, H, W, 3), decoded by decord."""
    import decord  # imported here: decord's import is slow and only the decoding workers need it

    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        indices = uniform_indices(len(reader), count)
        return reader.get_batch(indices.tolist()).asnumpy()  # (F, H, W, 3)
    except (decord.DECORDError, RuntimeError, ValueError) as err:
        raise DecodeError(f"cannot decode video frames of {path}: {err}") from err


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
