"""Stage prepare: validate the raw dataset and write its manifest.

Reads  data/raw/<dataset>/ (layout given by the dataset, e.g. MMSA: label.csv + Raw/...)
Writes data/prepared/<dataset>/manifest.csv (id, split, label, text, video, video_id, clip_id)

Command: python -m pipeline.prepare

The reader used for the synthetic default is the same code that reads real CMU-MOSI/MOSEI.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from . import paths
from .config import check_params, load_value
from .datasets import read_dataset, write_manifest
from .runtime import setup_logging, stage

log = logging.getLogger(__name__)


def run(dataset: str, root: Path, out: Path) -> None:
    with stage("prepare", [root], [out]):
        spec, manifest = read_dataset(dataset, root)
        write_manifest(manifest, out)
        log.info("%s (%s): %s", dataset, spec.task, manifest["split"].value_counts().to_dict())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    setup_logging()
    check_params()
    dataset = load_value("dataset")
    run(dataset, paths.raw_dir(dataset), paths.manifest(dataset))


if __name__ == "__main__":
    main()
