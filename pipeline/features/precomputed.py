"""Precomputed features as a modality's input: where extract@video and extract@audio take their features from.

`extract.video.source` and `extract.audio.source` (params.yaml) say, per modality, what the teacher and
the multimodal (and retrieval) student read:

    auto             the dataset's own (`DatasetSpec.sources`): `media` for every dataset with clips;
                     vegas_features: vegas_feature.h5:visual and vegas_feature.h5:audio
    media            computed from the clips: CLIP frame embeddings (video), log-mel frames (audio)
    <file>[:<key>]   a feature file inside the dataset's folder, data/raw/<dataset>/<file>:
        *.csd        a CMU-MultimodalSDK computational sequence (COVAREP, FACET 4.2, OpenFace, ...), its
                     entries matched to the manifest's clips as data/csd.py describes (no key)
        *.pkl        MMSA's processed features (unaligned_50.pkl, aligned_50.pkl; data/mmsa_features.py),
                     key `audio` or `vision`
        *.h5         Zeng et al.'s vegas_feature.h5 (data/vegas.py), key `audio` or `visual`

With a file source, extract@<m> writes data/features/<ds>/<m>.h5 from the file instead of the clips:
per clip `features` (n, d) float32 (n time steps; 1 for clip-level vectors), `intervals` (n, 2) seconds
when the file has them. Its recorded config names the format, file and key (a reader asking for other
features is refused); its `versions` hold the file's blake2b digest. The dataset's folder is a DVC
dependency of extract, so editing the file reruns it, and everything downstream reads <m>.h5 as before.

Non-finite values (CMU-MOSI/MOSEI COVAREP holds -inf) are replaced by 0, the usual preprocessing of
these files (MMSA, MulT), and counted in the log. A manifest clip the file has no features for is a
failure of extract (failures_<m>.csv, the `extract.max_failure_ratio` rule) and is masked downstream.

The models then learn a projection of each precomputed modality into the teacher's space (the CLIP
prompts stay CLIP text embeddings): models/teacher.py `video_in`, `audio_in`. Text is always the CLIP
embedding of the transcript. A model reading precomputed features cannot be run from a raw clip, so its
latency is not measured end to end (evaluation/scoring.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.config import ConfigError, ExtractParams, did_you_mean
from pipeline.core.identity import file_digest
from pipeline.data.csd import match_csd
from pipeline.data.datasets import DATASETS
from pipeline.data.mmsa_features import MMSA_KEYS, read_mmsa_features
from pipeline.data.vegas import read_vegas_features

log = logging.getLogger(__name__)

SOURCED = ("video", "audio")  # the modalities with a source (text: the CLIP transcript embedding)
FORMATS: dict[str, str] = {".csd": "csd", ".pkl": "mmsa", ".h5": "vegas"}  # file suffix -> format
KEYS: dict[str, tuple[str, ...]] = {"csd": (), "mmsa": MMSA_KEYS, "vegas": ("audio", "visual")}
EXAMPLES = "CMU_MOSI_COVAREP.csd, unaligned_50.pkl:audio, vegas_feature.h5:visual"
ARRAY = "features"  # the per-clip array of an imported feature file


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one modality's features come from (module docstring), `auto` resolved."""

    modality: str
    format: str  # media | csd | mmsa | vegas
    file: str = ""  # relative to data/raw/<dataset>/
    key: str = ""

    @property
    def media(self) -> bool:
        return self.format == "media"

    def __str__(self) -> str:
        return "media" if self.media else self.file + (f":{self.key}" if self.key else "")

    def config(self) -> dict[str, Any]:
        """What the imported feature file records (and a reader requires)."""
        return {"modality": self.modality, "source": {"format": self.format, "file": self.file, "key": self.key},
                "array": ARRAY, "nonfinite": "zero"}


def resolve_source(modality: str, value: str, dataset: str) -> Source:
    """extract.<modality>.source of `dataset` as a Source; ConfigError naming the key for an unknown format or
    key, and for `media` on a dataset without clips. The file's presence is `check_sources`'s business."""
    where = f"extract.{modality}.source"
    spec = DATASETS.get(dataset)
    if value == "auto":
        value = spec.sources.get(modality, "media")
    if value == "media":
        if not spec.media:
            raise ConfigError(f"{where}: dataset {dataset!r} has no clips to compute {modality} features from; "
                              f"use auto ({spec.sources.get(modality)}) or another feature file")
        return Source(modality, "media")
    file, _, key = value.partition(":")
    fmt = FORMATS.get(Path(file).suffix.lower())
    if fmt is None:
        raise ConfigError(f"{where}: {file!r} is not a known feature file; expected auto, media, or a file named "
                          f"*{', *'.join(FORMATS)} inside data/raw/{dataset}/ (e.g. {EXAMPLES})")
    if KEYS[fmt] and key not in KEYS[fmt]:
        raise ConfigError(f"{where}: a {fmt} file needs a key after ':' naming its array, one of {list(KEYS[fmt])}"
                          f"{f', got {key!r}.' + did_you_mean(key, KEYS[fmt]) if key else ''} "
                          f"(e.g. {file}:{KEYS[fmt][0]})")
    if not KEYS[fmt] and key:
        raise ConfigError(f"{where}: a computational sequence holds one array; drop ':{key}' from {value!r}")
    return Source(modality, fmt, file, key)


def sources(extract: ExtractParams, dataset: str) -> dict[str, Source]:
    """The resolved source of each modality that has one (SOURCED)."""
    return {m: resolve_source(m, getattr(extract, m).source, dataset) for m in SOURCED}


def resolved(extract: ExtractParams, dataset: str) -> ExtractParams:
    """`extract` with each source resolved for `dataset` (`auto` replaced by `media` or the file), as a model
    records it (config.FeatureSettings): a model reading precomputed features is then known as one."""
    found = sources(extract, dataset)
    return dataclasses.replace(extract, **{m: dataclasses.replace(getattr(extract, m), source=str(found[m]))
                                           for m in SOURCED})


def check_sources(extract: ExtractParams, dataset: str) -> None:
    """Stage check: every source resolves, and a file source exists inside the dataset's folder."""
    for modality, source in sources(extract, dataset).items():
        if not source.media and not (paths.raw_dir(dataset) / source.file).is_file():
            raise ConfigError(f"extract.{modality}.source: {paths.raw_dir(dataset) / source.file} not found; put the "
                              f"feature file inside data/raw/{dataset}/ (paths are relative to it)")


def source_arrays(source: Source, dataset: str, manifest: pd.DataFrame
                  ) -> tuple[Iterator[tuple[str, dict[str, np.ndarray]]], dict[str, str]]:
    """(clip id, {features (n, d) float32 finite, [intervals (n, 2)]}) for each manifest clip the file has,
    and clip id -> why it has none (filled as the iterator runs)."""
    path = paths.raw_dir(dataset) / source.file
    ids = manifest["id"].astype(str).tolist()
    if source.format == "csd":
        match = match_csd(path, manifest)
        return ((c, {ARRAY: f, "intervals": i}) for c, f, i in match.clip_arrays("keep")), match.missing
    if source.format == "mmsa":
        table = read_mmsa_features(path, source.key)
    else:
        features = read_vegas_features(path, audio_dim=None, visual_dim=None)
        rows = getattr(features, source.key)  # (N, d)
        table = {c: rows[i : i + 1] for i, c in enumerate(features.manifest["id"])}  # (1, d) each
    missing = {c: "no entry" for c in ids if c not in table}
    return ((c, {ARRAY: table[c]}) for c in ids if c in table), missing


def import_source(source: Source, dataset: str, manifest: pd.DataFrame, writer: Any, failures: Any) -> None:
    """Write `source`'s features of the manifest's clips through `writer` (a FeatureWriter; clips it already
    has are skipped), each clip without features into `failures`, non-finite values as 0."""
    done = writer.done_ids()
    replaced = written = 0
    arrays, missing = source_arrays(source, dataset, manifest)
    for clip_id, clip in arrays:
        if clip_id in done:
            continue
        bad = ~np.isfinite(clip[ARRAY])
        if bad.any():
            replaced += int(bad.sum())
            clip[ARRAY] = np.where(bad, np.float32(0), clip[ARRAY])
        writer.write(clip_id, clip)
        written += 1
        if written % 1000 == 0:
            writer.flush()
            log.info("%s: %d clips imported", source, written)
    writer.flush()
    videos = dict(zip(manifest["id"].astype(str), manifest["video"].astype(str), strict=True))
    for clip_id, reason in missing.items():
        failures.add(clip_id, videos.get(clip_id, ""), f"no {source.modality} features in {source.file}: {reason}")
    if replaced:
        log.warning("%s: %d non-finite feature values replaced by 0", source, replaced)
    log.info("%s: %d clips imported, %d of %d manifest clips without features", source, written, len(missing),
             len(manifest))


def source_versions(source: Source, dataset: str) -> dict[str, str]:
    """What the imported file records as its provenance: the source file's digest."""
    return {"source": f"{source.file} blake2b:{file_digest(paths.raw_dir(dataset) / source.file)}"}
