"""Stage extract@<modality>: cached, versioned per-clip features.

Reads  data/prepared/<ds>/manifest.csv and the clips it names (or the feature file `extract.<m>.source` names)
Writes data/features/<ds>/<modality>.h5 and data/features/<ds>/failures_<modality>.csv

    video  sampled frames -> frozen CLIP image embeddings, `frames` (F, D)
    audio  mono waveform -> librosa log-mel frames, `logmel` (T, n_mels)
    text   transcript -> frozen CLIP text embedding, `text` (D,); class prompts in extra/prompts
           (`extract.text.templates` x the sentiment bins `extract.text.classes`; for a dataset with
           named classes, the retrieval task, `class_templates` x the manifest's class names, and no
           transcripts: those datasets have none, so every clip's text modality is absent)

Video and audio whose `extract.<m>.source` is a precomputed feature file (a .csd, an MMSA pickle,
vegas_feature.h5 inside data/raw/<ds>/) are imported from it instead: `features` (n, d) per clip
(features/precomputed.py).

Command: python -m pipeline.extract {video,audio,text}
   or    torchrun --nproc-per-node N -m pipeline.extract {video,audio,text}

The work, and how it is done: pipeline/features/extraction.py.
"""

from __future__ import annotations

import argparse
import logging

import pandas as pd

from pipeline.core import paths
from pipeline.core.config import (
    MODALITIES,
    ClipParams,
    ExtractParams,
    check_params,
    load_section,
    load_value,
)
from pipeline.core.identity import run_identity
from pipeline.core.runtime import Ranks, entry_point, process_group, rank_device, seed_everything, setup_logging, stage
from pipeline.data.datasets import dataset_classes, read_manifest
from pipeline.features.extraction import Failures, _todo, check_failures, extract_shard, feature_config, versions
from pipeline.features.precomputed import SOURCED, Source, import_source, resolve_source, source_versions
from pipeline.features.store import FeatureWriter

log = logging.getLogger(__name__)


def run(modality: str, dataset: str, params: ExtractParams, clip_params: ClipParams,
        ranks: Ranks | None = None) -> None:
    """Extract one modality for every manifest clip (this rank's share under torchrun; all of them
    when `ranks` is None, a single process)."""
    ranks = ranks or Ranks()
    manifest = read_manifest(paths.manifest(dataset))
    classes = dataset_classes(manifest)
    config = feature_config(modality, params, clip_params, classes, dataset)
    out, fail_csv = paths.features(dataset, modality), paths.failures(dataset, modality)
    source = resolve_source(modality, getattr(params, modality).source, dataset) if modality in SOURCED else None
    if source is not None and not source.media:  # reading a file: rank 0 alone (the others have nothing to do)
        if ranks.rank == 0:
            import_features(source, dataset, manifest, params, config)
        ranks.barrier()
        return
    device = rank_device(params.run.device, ranks)
    failures = Failures()
    identity = run_identity("extract", [paths.manifest(dataset)])  # what resuming a .partial file must share
    with stage(f"extract@{modality}" + (f" rank {ranks.rank}/{ranks.world}" if ranks.world > 1 else ""),
               [paths.manifest(dataset)], [out, fail_csv]):
        if ranks.rank == 0:  # rank 0 sets up (or resumes) the .partial directory before the others join
            writer = FeatureWriter(out, config, versions(), tag=ranks.tag, identity=identity)
        ranks.barrier()
        if ranks.rank > 0:
            writer = FeatureWriter(out, config, versions(), tag=ranks.tag, fresh=False, identity=identity)
        with writer:
            todo = _todo(manifest.iloc[ranks.rank :: ranks.world], writer)
            extract_shard(modality, todo, writer, params, clip_params, device, failures, ranks.rank == 0, classes)
            failures.write(writer.partial / f"failures-{ranks.tag}.csv")
        ranks.barrier()
        if ranks.rank == 0:
            shards = sorted(writer.partial.glob("failures-rank*.csv"))
            every = Failures([row for shard in shards for row in Failures.read(shard).rows])
            every.write(fail_csv)
            check_failures(every, len(manifest), params.max_failure_ratio, fail_csv, modality)
            writer.finalize()
            log.info("extract@%s: %d clips, %d failures", modality, len(manifest) - len(every.rows), len(every.rows))


def import_features(source: Source, dataset: str, manifest: pd.DataFrame, params: ExtractParams,
                    config: dict) -> None:
    """<m>.h5 from a precomputed feature file (one process: reading is all it does)."""
    modality, read = source.modality, paths.raw_dir(dataset) / source.file
    out, fail_csv = paths.features(dataset, modality), paths.failures(dataset, modality)
    identity = run_identity("extract", [paths.manifest(dataset), read])
    with stage(f"extract@{modality} from {source}", [paths.manifest(dataset), read], [out, fail_csv]):
        failures = Failures()
        with FeatureWriter(out, config, {**versions(), **source_versions(source, dataset)},
                           identity=identity) as writer:
            import_source(source, dataset, manifest, writer, failures)
            failures.write(fail_csv)
            check_failures(failures, len(manifest), params.max_failure_ratio, fail_csv, modality)
            writer.finalize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modality", choices=MODALITIES)
    args = parser.parse_args(argv)
    setup_logging()
    check_params()
    clip = load_section("clip")
    seed_everything(clip.init_seed)
    with process_group() as ranks:
        run(args.modality, load_value("dataset"), load_section("extract"), clip, ranks)


if __name__ == "__main__":
    entry_point(main)
