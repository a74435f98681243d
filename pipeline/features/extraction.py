"""Feature extraction (stage extract@<modality>'s work): decoding, CLIP encoding, log-mel, the failures list.

What each modality stores: pipeline/extract.py's docstring.

Speed: DataLoader workers (`extract.run.num_workers`) decode and preprocess clips while the
main process encodes batches; on a GPU, batches are pinned and the encoder runs under
autocast (`extract.run.precision`).

Faults: features are written in atomic chunks as they are computed (features/store.py), so a killed
run resumes with only the missing clips. A clip that cannot be used (corrupt or empty file,
no audio track, fewer frames than requested, empty or non-UTF-8 transcript) is listed in
the failures CSV with its id, path and reason; the stage fails only when failures exceed
`extract.max_failure_ratio`, keeping what it computed. Downstream, a clip missing from a
modality's file has that modality masked.

Scale: under torchrun each rank takes every WORLD_SIZE-th clip of the manifest, writes its
own chunks into the shared `.partial` directory, and rank 0 merges them once all ranks are
done; the merged file equals the single-process one.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.core.config import (
    MODALITIES,
    AudioParams,
    ClipParams,
    ConfigError,
    ExtractParams,
    VideoParams,
)
from pipeline.core.errors import UserError
from pipeline.features import media
from pipeline.features.clip import ImagePreprocess, clip_config, load_clip
from pipeline.features.precomputed import SOURCED, resolve_source
from pipeline.features.store import FeatureWriter

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ("id", "path", "reason")


# --------------------------------------------------------------------------- configs


def video_config(clip: ClipParams, video: VideoParams) -> dict[str, Any]:
    sampling = {"sampling": video.sampling}
    if video.sampling == "uniform":
        sampling["frames"] = video.frames
    else:
        sampling.update(max_frames=video.max_frames, **({"fps": video.fps} if video.sampling == "fps" else {}))
    return {"modality": "video", "clip": clip_config(clip.model, clip.pretrained, clip.init_seed), **sampling,
            "normalized": True}


def audio_config(audio: AudioParams) -> dict[str, Any]:
    settings = {k: v for k, v in dataclasses.asdict(audio).items() if k != "source"}
    return {"modality": "audio", **settings, "feature": "logmel_db"}


def text_config(clip: ClipParams, templates: list[str], classes: list[str], transcripts: bool = True) -> dict[str, Any]:
    return {"modality": "text", "clip": clip_config(clip.model, clip.pretrained, clip.init_seed),
            "templates": templates, "classes": classes, "normalized": True, "transcripts": transcripts}


def prompt_classes(params: ExtractParams, classes: list[str] | None) -> tuple[list[str], list[str]]:
    """(templates, class names) of the class prompts: the sentiment bins of params, or a dataset's
    named classes (`datasets.dataset_classes`) with `extract.text.class_templates`."""
    if classes is None:
        return params.text.templates, params.text.classes
    return params.text.class_templates, classes


def feature_config(modality: str, params: ExtractParams, clip_params: ClipParams, classes: list[str] | None,
                   dataset: str) -> dict[str, Any]:
    """The configuration recorded in (and required of) `dataset`'s feature file of `modality`; `classes`:
    the dataset's named classes (None for sentiment datasets). A modality whose source is a precomputed
    file (features/precomputed.py) records that source instead of the extraction settings."""
    if modality in SOURCED and not (source := resolve_source(modality, getattr(params, modality).source,
                                                               dataset)).media:
        return source.config()
    if modality == "video":
        return video_config(clip_params, params.video)
    if modality == "audio":
        return audio_config(params.audio)
    if modality == "text":
        return text_config(clip_params, *prompt_classes(params, classes), transcripts=classes is None)
    raise ConfigError(f"unknown modality {modality!r}. Available: {list(MODALITIES)}")


def versions() -> dict[str, str]:
    import decord
    import librosa
    import open_clip

    return {"torch": torch.__version__, "open_clip": open_clip.__version__, "librosa": librosa.__version__,
            "decord": decord.__version__, "av": media.av.__version__}


# --------------------------------------------------------------------------- decoding datasets


class ClipDataset(Dataset):
    """(id, path) rows -> (id, path, features or None, error or None), decoded in workers."""

    def __init__(self, rows: list[tuple[str, str]], load: Callable[[Path], Any]) -> None:
        self.rows = rows
        self.load = load

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[str, str, Any, str | None]:
        clip_id, path = self.rows[i]
        try:
            return clip_id, path, self.load(Path(path)), None
        except (media.DecodeError, OSError, ValueError) as err:
            return clip_id, path, None, str(err)


@dataclasses.dataclass(frozen=True)
class LoadFrames:
    sampler: media.FrameSampler
    backend: str
    preprocess: ImagePreprocess
    threads: int  # decoder threads: 1 per worker process, 0 (automatic) without workers

    def __call__(self, path: Path) -> torch.Tensor:
        frames = media.read_frames(path, self.sampler, self.backend, self.threads)  # (F, H, W, 3) uint8
        return self.preprocess(torch.from_numpy(frames))  # (F, 3, S, S)


@dataclasses.dataclass(frozen=True)
class LoadLogMel:
    params: AudioParams

    def __call__(self, path: Path) -> np.ndarray:
        return log_mel(media.read_audio(path, self.params.sample_rate), self.params)


def log_mel(wave: np.ndarray, p: AudioParams) -> np.ndarray:
    """Log-mel spectrogram (T, n_mels) in dB (librosa, power ref 1.0, no top_db clipping)."""
    import librosa

    n_fft = int(round(p.win_ms * p.sample_rate / 1000))
    hop = int(round(p.hop_ms * p.sample_rate / 1000))
    mel = librosa.feature.melspectrogram(y=wave, sr=p.sample_rate, n_fft=n_fft, hop_length=hop,
                                         n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax)  # (n_mels, T)
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).T.astype(np.float32)  # (T, n_mels)


def _keep(item: Any) -> Any:
    return item  # variable-size items (and failures): the main loop batches them itself


def iterate_decoded(dataset: ClipDataset, batch_size: int, num_workers: int) -> Iterator[list]:
    """Lists of up to `batch_size` decoded clips, in manifest order.

    Workers decode one clip at a time and the main process groups them, so every worker stays
    busy until the end (a worker handed whole batches leaves the others idle at the tail).
    """
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=_keep,
                        prefetch_factor=max(2, 2 * batch_size // num_workers) if num_workers else None)
    items = iter(loader)
    while batch := list(itertools.islice(items, batch_size)):
        yield batch


def transcript_problem(text: str) -> str | None:
    """Why a transcript cannot be embedded, or None. U+FFFD marks bytes that were not UTF-8
    (the manifest reader decodes with errors='replace')."""
    if not text.strip():
        return "empty transcript"
    if "\ufffd" in text:
        return "transcript is not valid UTF-8 (fix the encoding of the dataset's label file)"
    return None


# --------------------------------------------------------------------------- extractors


@dataclasses.dataclass
class Failures:
    rows: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def add(self, clip_id: str, path: str, reason: str) -> None:
        log.warning("clip %s (%s) failed: %s", clip_id, path, reason)
        self.rows.append((clip_id, path, reason))

    def write(self, path: Path) -> None:
        pd.DataFrame(self.rows, columns=list(FAILURE_COLUMNS)).to_csv(path, index=False)

    @classmethod
    def read(cls, path: Path) -> Failures:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        return cls([tuple(r) for r in table.loc[:, list(FAILURE_COLUMNS)].itertuples(index=False)])


def _todo(manifest: pd.DataFrame, writer: FeatureWriter) -> pd.DataFrame:
    done = writer.done_ids()
    todo = manifest.loc[~manifest["id"].isin(done)]
    if done:
        log.info("%d clips already in %s, %d to go", len(manifest) - len(todo), writer.partial, len(todo))
    return todo


def _rows(todo: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(todo["id"], todo["video"], strict=True))


def extract_video(todo: pd.DataFrame, writer: FeatureWriter, clip_params: ClipParams, video: VideoParams,
                  batch_size: int, num_workers: int, device: torch.device, precision: str,
                  failures: Failures) -> None:
    """Encode each clip's sampled frames with the frozen CLIP image tower; writes `frames` (F, D)."""
    clip = load_clip(clip_params.model, clip_params.pretrained, device, clip_params.init_seed, precision)
    load = LoadFrames(media.FrameSampler.from_params(video), video.backend, clip.preprocess,
                      threads=1 if num_workers else 0)
    dataset = ClipDataset(_rows(todo), load)
    with tqdm(total=len(dataset), desc="extract video", unit="clip") as bar:
        for batch in iterate_decoded(dataset, batch_size, num_workers):
            ok = [(cid, x) for cid, _, x, err in batch if err is None]
            for cid, path, _, err in batch:
                if err is not None:
                    failures.add(cid, path, err)
            if ok:
                images = torch.cat([x for _, x in ok])  # (sum F_i, 3, S, S)
                if device.type == "cuda":
                    images = images.pin_memory()  # so that the copy to the GPU is asynchronous
                emb = clip.encode_images(images)  # (sum F_i, D)
                for (cid, _), e in zip(ok, emb.split([len(x) for _, x in ok]), strict=True):
                    writer.write(cid, {"frames": e.numpy()})  # (F_i, D)
            writer.flush()
            bar.update(len(batch))


def extract_audio(todo: pd.DataFrame, writer: FeatureWriter, params: AudioParams, batch_size: int,
                  num_workers: int, failures: Failures) -> None:
    """Log-mel frames per clip, computed in the decoding workers; writes `logmel` (T, n_mels)."""
    dataset = ClipDataset(_rows(todo), LoadLogMel(params))
    with tqdm(total=len(dataset), desc="extract audio", unit="clip") as bar:
        for batch in iterate_decoded(dataset, batch_size, num_workers):
            for cid, path, mel, err in batch:
                if err is None:
                    writer.write(cid, {"logmel": mel})
                else:
                    failures.add(cid, path, err)
            writer.flush()
            bar.update(len(batch))


def prompt_embeddings(encode: Callable[[list[str]], torch.Tensor], templates: list[str],
                      classes: list[str]) -> torch.Tensor:
    """CLIP zero-shot prompt ensembling: per class, the normalised mean over templates. (K, D)"""
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"extract.text.templates must contain '{{}}' for the class name; bad: {bad}")
    per_template = torch.stack([encode([t.format(c) for c in classes]) for t in templates], dim=1)  # (K, T, D)
    return torch.nn.functional.normalize(per_template.mean(dim=1), dim=-1)  # (K, D)


def extract_text(todo: pd.DataFrame, writer: FeatureWriter, clip_params: ClipParams, templates: list[str],
                 classes: list[str], batch_size: int, device: torch.device, precision: str,
                 failures: Failures, write_prompts: bool, transcripts: bool = True) -> None:
    """CLIP text embeddings of transcripts (`text` (D,)) and of the class prompts (extra/prompts);
    `transcripts=False` (datasets without any, e.g. VEGAS): the prompts only."""
    clip = load_clip(clip_params.model, clip_params.pretrained, device, clip_params.init_seed, precision)
    if write_prompts:
        writer.write_extra("prompts", {"embeddings": prompt_embeddings(clip.encode_texts, templates, classes).numpy(),
                                       "classes": list(classes), "templates": list(templates)})
    if not transcripts:
        log.info("extract@text: the dataset has no transcripts; wrote the %d class prompts only", len(classes))
        return
    problems = [transcript_problem(t) for t in todo["text"]]
    for cid, path, reason in zip(todo["id"], todo["video"], problems, strict=True):
        if reason:
            failures.add(cid, path, reason)
    usable = todo.loc[[p is None for p in problems]]
    for start in tqdm(range(0, len(usable), batch_size), desc="extract text", unit="batch"):
        chunk = usable.iloc[start : start + batch_size]
        emb = clip.encode_texts(chunk["text"].tolist())  # (B, D)
        for cid, e in zip(chunk["id"], emb, strict=True):
            writer.write(cid, {"text": e.numpy()})
        writer.flush()


# --------------------------------------------------------------------------- stage


class TooManyFailures(UserError, RuntimeError):
    """More clips failed to decode or encode than extract.max_failure_ratio allows."""


def check_failures(failures: Failures, total: int, max_ratio: float, csv_path: Path, modality: str) -> None:
    ratio = len(failures.rows) / max(total, 1)
    if ratio > max_ratio:
        first = "; ".join(f"{i} ({r})" for i, _, r in failures.rows[:3])
        raise TooManyFailures(
            f"extract@{modality}: {len(failures.rows)}/{total} clips failed ({ratio:.1%} > "
            f"extract.max_failure_ratio={max_ratio:.1%}), e.g. {first}. All failures are in {csv_path}. "
            "Fix or remove those clips, or raise extract.max_failure_ratio; the clips already encoded "
            "are kept and the next run resumes."
        )


def extract_shard(modality: str, todo: pd.DataFrame, writer: FeatureWriter, params: ExtractParams,
                  clip_params: ClipParams, device: torch.device, failures: Failures, write_extra: bool,
                  classes: list[str] | None = None) -> None:
    run = params.run
    if modality == "video":
        extract_video(todo, writer, clip_params, params.video, run.batch_size, run.num_workers, device,
                      run.precision, failures)
    elif modality == "audio":
        extract_audio(todo, writer, params.audio, run.batch_size, run.num_workers, failures)
    else:
        extract_text(todo, writer, clip_params, *prompt_classes(params, classes), run.batch_size,
                     device, run.precision, failures, write_prompts=write_extra, transcripts=classes is None)
