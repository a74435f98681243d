"""Model inputs assembled from the feature store: one in-memory tensor per modality.

Video frame embeddings (F_i, D) and audio log-mel frames (T_i, n_mels), or a precomputed file's
`features` (n_i, d) (features/precomputed.py), are average-pooled over time to a fixed number of
tokens (adaptive pooling, so clips of any length give the same shape; with uniform sampling and
as many tokens as frames, video is left as it is). A clip missing from a modality's file (it
failed to decode; see the failures CSV of extract) gets zeros there and `present[:, m] = False`,
which the models treat as a masked modality.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.core import paths
from pipeline.core.config import MODALITIES, ClipParams, ExtractParams
from pipeline.data.datasets import dataset_classes
from pipeline.features.extraction import feature_config
from pipeline.features.store import FeatureReader

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FeatureArrays:
    ids: list[str]
    video: torch.Tensor  # (N, F, D)
    audio: torch.Tensor  # (N, A, n_mels)
    text: torch.Tensor  # (N, D)
    present: torch.Tensor  # (N, 3) bool, MODALITIES order
    prompts: torch.Tensor  # (K, D)
    classes: list[str]
    video_is_clip: bool = True  # video holds CLIP frame embeddings (in the prompts' space), not precomputed features

    def rows(self, idx: torch.Tensor) -> FeatureArrays:
        """The arrays of clips `idx` (N',), same prompts and classes."""
        return dataclasses.replace(self, ids=[self.ids[i] for i in idx.tolist()], video=self.video[idx],
                                   audio=self.audio[idx], text=self.text[idx], present=self.present[idx])

    def index(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"video": self.video[idx], "audio": self.audio[idx], "text": self.text[idx],
                "present": self.present[idx]}


def pool_time(x: np.ndarray, tokens: int) -> torch.Tensor:
    """(T, C) -> (tokens, C) by adaptive average pooling over time."""
    t = torch.from_numpy(x).float().T.unsqueeze(0)  # (1, C, T)
    return F.adaptive_avg_pool1d(t, tokens).squeeze(0).T  # (tokens, C)


def _stack(reader: FeatureReader, ids: list[str], key: str, shape: tuple[int, ...],
           transform=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, *shape) arrays `key` of the clips `ids` (zeros for clips the file lacks) and which it has (N,)."""
    out = torch.zeros((len(ids), *shape))
    present = torch.zeros(len(ids), dtype=torch.bool)
    for i, clip_id in enumerate(ids):
        if clip_id in reader:
            x = reader.read(clip_id)[key]
            out[i] = transform(x) if transform else torch.from_numpy(x)
            present[i] = True
    return out, present


def load_features(manifest: pd.DataFrame, dataset: str, clip: ClipParams, extract: ExtractParams,
                  video_tokens: int, audio_tokens: int) -> FeatureArrays:
    """Read the three feature files for the manifest's clips, checking their recorded configs."""
    ids = manifest["id"].tolist()
    classes = dataset_classes(manifest)
    video_r, audio_r, text_r = (FeatureReader(paths.features(dataset, m), feature_config(m, extract, clip, classes,
                                                                                         dataset),
                                              stage=f"extract@{m}") for m in MODALITIES)
    with video_r, audio_r, text_r:
        prompts = text_r.extra("prompts")
        dim = prompts["embeddings"].shape[1]
        video, v_ok = _stack(video_r, ids, _array(video_r, "frames"), (video_tokens, _width(video_r, "frames", dim)),
                             transform=lambda x: pool_time(x, video_tokens))
        audio, a_ok = _stack(audio_r, ids, _array(audio_r, "logmel"),
                             (audio_tokens, _width(audio_r, "logmel", extract.audio.n_mels)),
                             transform=lambda x: pool_time(x, audio_tokens))
        text, t_ok = _stack(text_r, ids, "text", (dim,))
    present = torch.stack([v_ok, a_ok, t_ok], dim=1)  # (N, 3)
    for m, name in enumerate(MODALITIES):
        missing = int((~present[:, m]).sum())
        if name == "text" and classes is not None:
            log.info("text: the dataset has no transcripts (masked for every clip; class prompts only)")
        elif missing:
            log.warning("%d of %d clips have no %s features (masked)", missing, len(ids), name)
    return FeatureArrays(ids=ids, video=video, audio=audio, text=text, present=present,
                         prompts=torch.from_numpy(prompts["embeddings"]).float(), classes=prompts["classes"],
                         video_is_clip=_array(video_r, "frames") == "frames")


def _array(reader: FeatureReader, extracted: str) -> str:
    """The per-clip array of a feature file: `extracted` (frames, logmel), or an imported file's own (`features`)."""
    return reader.config.get("array", extracted)


def _width(reader: FeatureReader, extracted: str, default: int) -> int:
    """Features per time step of the file's array (the first clip's), `default` for a file without clips."""
    ids = reader.ids()
    return int(reader.read(ids[0])[_array(reader, extracted)].shape[-1]) if ids else default


def feature_files(dataset: str) -> list[Path]:
    return [paths.features(dataset, m) for m in MODALITIES]
