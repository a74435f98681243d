"""Stage prepare: validate the raw dataset and write its manifest.

Reads  data/raw/<dataset>/ (layout given by the dataset: MMSA for synthetic_sentiment, mosi, mosei,
       sims: label.csv + Raw/<video_id>/<clip_id>.mp4; csv: data/raw/csv/manifest.csv; VEGAS for
       synthetic_av, vegas: <class>/<id>.mp4 + folds/fold_<k>.txt, split by params `prepare`;
       vegas_features: vegas_feature.h5 [+ classes.txt], its train/test split, valid carved from train)
Writes data/prepared/<dataset>/manifest.csv (id, split, label, text, video, video_id, clip_id, then
       label_T, label_A, label_V, audio, class_name and fold when the dataset has them; a VEGAS
       manifest's label is the class index and its text is empty)

Command: python -m pipeline.prepare

Every problem of the raw dataset (missing columns or files, unnamed videos, duplicate ids, bad
labels or splits, paths leaving the dataset root, empty splits) is reported at once, before
anything is written (datasets.py). The reader used for the synthetic default is the same code
that reads real CMU-MOSI/MOSEI and CH-SIMS.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.core import paths
from pipeline.core.config import PrepareParams, check_params, load_section, load_value
from pipeline.core.runtime import entry_point, setup_logging, stage
from pipeline.data.datasets import MANIFEST_COLUMNS, manifest_columns, read_dataset, write_manifest

log = logging.getLogger(__name__)


def run(dataset: str, root: Path, out: Path, params: PrepareParams) -> None:
    with stage("prepare", [root], [out]):
        spec, manifest = read_dataset(dataset, root, params)
        write_manifest(manifest, out)
        extra = [c for c in manifest_columns(manifest) if c not in MANIFEST_COLUMNS]
        log.info("%s (%s): %s clips per split%s", dataset, spec.task, manifest["split"].value_counts().to_dict(),
                 f"; extra columns {extra}" if extra else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    setup_logging()
    check_params()
    dataset = load_value("dataset")
    run(dataset, paths.raw_dir(dataset), paths.manifest(dataset), load_section("prepare"))


if __name__ == "__main__":
    entry_point(main)
