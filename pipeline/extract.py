"""Stage extract@<modality>: cached, versioned per-clip features.

Reads  data/prepared/<ds>/manifest.csv and the clips it names
Writes data/features/<ds>/<modality>.h5 and data/features/<ds>/failures_<modality>.csv

    video  F uniformly sampled frames -> frozen CLIP image embeddings, `frames` (F, D)
    audio  mono waveform -> librosa log-mel frames, `logmel` (T, n_mels)
    text   transcript -> frozen CLIP text embedding, `text` (D,); class prompts in extra/prompts

Command: python -m pipeline.extract {video,audio,text}

DataLoader workers decode (and preprocess) clips while the main process encodes batches;
features are written as they are computed, and an interrupted run resumes where it stopped
(see store.py). A clip that fails to decode is listed in the failures CSV with its reason;
the stage fails only when failures exceed `extract.max_failure_ratio`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import media, paths
from .clip import ImagePreprocess, clip_config, load_clip
from .config import AudioParams, ClipParams, ConfigError, ExtractParams, check_params, load_section, load_value
from .datasets import read_manifest
from .models import MODALITIES
from .runtime import resolve_device, seed_everything, setup_logging, stage
from .store import FeatureWriter

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ("id", "path", "reason")


# --------------------------------------------------------------------------- configs


def video_config(clip: ClipParams, frames: int) -> dict[str, Any]:
    return {"modality": "video", "clip": clip_config(clip.model, clip.pretrained, clip.init_seed), "frames": frames,
            "sampling": "uniform", "normalized": True}


def audio_config(audio: AudioParams) -> dict[str, Any]:
    return {"modality": "audio", **dataclasses.asdict(audio), "feature": "logmel_db"}


def text_config(clip: ClipParams, templates: list[str], classes: list[str]) -> dict[str, Any]:
    return {"modality": "text", "clip": clip_config(clip.model, clip.pretrained, clip.init_seed),
            "templates": templates, "classes": classes, "normalized": True}


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
    frames: int
    preprocess: ImagePreprocess

    def __call__(self, path: Path) -> torch.Tensor:
        return self.preprocess(torch.from_numpy(media.read_frames(path, self.frames)))  # (F, 3, S, S)


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


def _keep_batch(batch: list) -> list:
    return batch  # variable-size items: the main loop handles the list


def iterate_decoded(dataset: ClipDataset, batch_size: int, num_workers: int) -> Iterator[list]:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_keep_batch,
                        pin_memory=torch.cuda.is_available(), persistent_workers=False)
    yield from loader


# --------------------------------------------------------------------------- extractors


@dataclasses.dataclass
class Failures:
    rows: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def add(self, clip_id: str, path: str, reason: str) -> None:
        log.warning("clip %s (%s) failed: %s", clip_id, path, reason)
        self.rows.append((clip_id, path, reason))

    def write(self, path: Path) -> None:
        pd.DataFrame(self.rows, columns=list(FAILURE_COLUMNS)).to_csv(path, index=False)


def _todo(manifest: pd.DataFrame, writer: FeatureWriter) -> list[tuple[str, str]]:
    done = writer.done_ids()
    rows = [(i, v) for i, v in zip(manifest["id"], manifest["video"], strict=True) if i not in done]
    if done:
        log.info("%d clips already in %s, %d to go", len(manifest) - len(rows), writer.partial, len(rows))
    return rows


def extract_video(manifest: pd.DataFrame, writer: FeatureWriter, clip_params: ClipParams, frames: int,
                  batch_size: int, num_workers: int, device: torch.device, failures: Failures) -> None:
    """Encode F frames per clip with the frozen CLIP image tower; writes `frames` (F, D) per clip."""
    clip = load_clip(clip_params.model, clip_params.pretrained, device, clip_params.init_seed)
    dataset = ClipDataset(_todo(manifest, writer), LoadFrames(frames, clip.preprocess))
    with tqdm(total=len(dataset), desc="extract video", unit="clip") as bar:
        for batch in iterate_decoded(dataset, batch_size, num_workers):
            ok = [(cid, x) for cid, path, x, err in batch if err is None]
            for cid, path, _, err in batch:
                if err is not None:
                    failures.add(cid, path, err)
            if ok:
                images = torch.cat([x for _, x in ok])  # (B*F, 3, S, S)
                emb = clip.encode_images(images).view(len(ok), frames, -1)  # (B, F, D)
                for (cid, _), e in zip(ok, emb, strict=True):
                    writer.write(cid, {"frames": e.numpy()})
                writer.flush()
            bar.update(len(batch))


def extract_audio(manifest: pd.DataFrame, writer: FeatureWriter, params: AudioParams, batch_size: int,
                  num_workers: int, failures: Failures) -> None:
    """Log-mel frames per clip, computed in the decoding workers; writes `logmel` (T, n_mels)."""
    dataset = ClipDataset(_todo(manifest, writer), LoadLogMel(params))
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


def extract_text(manifest: pd.DataFrame, writer: FeatureWriter, clip_params: ClipParams, templates: list[str],
                 classes: list[str], batch_size: int, device: torch.device) -> None:
    """CLIP text embeddings of transcripts (`text` (D,)) and of the class prompts (extra/prompts)."""
    clip = load_clip(clip_params.model, clip_params.pretrained, device, clip_params.init_seed)
    writer.write_extra("prompts", {"embeddings": prompt_embeddings(clip.encode_texts, templates, classes).numpy(),
                                   "classes": list(classes), "templates": list(templates)})
    done = writer.done_ids()
    todo = manifest.loc[~manifest["id"].isin(done), ["id", "text"]]
    for start in tqdm(range(0, len(todo), batch_size), desc="extract text", unit="batch"):
        chunk = todo.iloc[start : start + batch_size]
        emb = clip.encode_texts(chunk["text"].tolist())  # (B, D)
        for cid, e in zip(chunk["id"], emb, strict=True):
            writer.write(cid, {"text": e.numpy()})
        writer.flush()


# --------------------------------------------------------------------------- stage


def check_failures(failures: Failures, total: int, max_ratio: float, csv_path: Path, modality: str) -> None:
    ratio = len(failures.rows) / max(total, 1)
    if ratio > max_ratio:
        first = "; ".join(f"{i} ({r})" for i, _, r in failures.rows[:3])
        raise RuntimeError(
            f"extract@{modality}: {len(failures.rows)}/{total} clips failed ({ratio:.1%} > "
            f"extract.max_failure_ratio={max_ratio:.1%}), e.g. {first}. All failures are in {csv_path}. "
            "Fix or remove those clips, or raise extract.max_failure_ratio; the clips already encoded "
            "are kept and the next run resumes."
        )


def feature_config(modality: str, params: ExtractParams, clip_params: ClipParams) -> dict[str, Any]:
    """The configuration recorded in (and required of) the feature file of `modality`."""
    if modality == "video":
        return video_config(clip_params, params.video.frames)
    if modality == "audio":
        return audio_config(params.audio)
    if modality == "text":
        return text_config(clip_params, params.text.templates, params.text.classes)
    raise ConfigError(f"unknown modality {modality!r}. Available: {list(MODALITIES)}")


def run(modality: str, dataset: str, params: ExtractParams, clip_params: ClipParams) -> None:
    config = feature_config(modality, params, clip_params)
    manifest = read_manifest(paths.manifest(dataset))
    out, fail_csv = paths.features(dataset, modality), paths.failures(dataset, modality)
    device = resolve_device(params.run.device)
    failures = Failures()
    with stage(f"extract@{modality}", [paths.manifest(dataset)], [out, fail_csv]):
        with FeatureWriter(out, config, versions()) as writer:
            if modality == "video":
                extract_video(manifest, writer, clip_params, params.video.frames, params.run.batch_size,
                              params.run.num_workers, device, failures)
            elif modality == "audio":
                extract_audio(manifest, writer, params.audio, params.run.batch_size, params.run.num_workers,
                              failures)
            else:
                extract_text(manifest, writer, clip_params, params.text.templates, params.text.classes,
                             params.run.batch_size, device)
            failures.write(fail_csv)
            check_failures(failures, len(manifest), params.max_failure_ratio, fail_csv, modality)
            writer.finalize()
        log.info("extract@%s: %d clips, %d failures", modality, len(manifest) - len(failures.rows),
                 len(failures.rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modality", choices=MODALITIES)
    args = parser.parse_args(argv)
    setup_logging()
    check_params()
    seed_everything(load_value("seed"))
    run(args.modality, load_value("dataset"), load_section("extract"), load_section("clip"))


if __name__ == "__main__":
    main()
