"""Stage floor: the linear model every student of the dataset must beat (DESIGN.md "Trustworthy comparison").

Reads  data/prepared/<ds>/manifest.csv (retrieval: data/features/<ds>/{video,audio,text}.h5)
Writes models/<ds>/floor/model.json   everything the model is (vocabulary, idf, coefficients, the chosen
                                      regularisation and the validation values of the grid): plain JSON,
                                      rebuilt by `load_floor` without running any code from the file

Command: python -m pipeline.floor

The work, and how it is done: pipeline/models/floor.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.core import paths
from pipeline.core.config import ClipParams, ExtractParams, FloorParams, check_params, load_section, load_value
from pipeline.core.runtime import entry_point, setup_logging, stage
from pipeline.data.datasets import DATASETS, read_manifest
from pipeline.models.floor import FLOORS, MODEL_FILE


def run(dataset: str, params: FloorParams, clip: ClipParams, extract: ExtractParams) -> Path:
    out = paths.floor_dir(dataset) / MODEL_FILE
    with stage("floor", [paths.manifest(dataset)], [out]):
        manifest = read_manifest(paths.manifest(dataset))
        model = FLOORS.get(DATASETS.get(dataset).task)(manifest, dataset, params, clip, extract)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**model, "dataset": dataset}, allow_nan=False) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    setup_logging()
    check_params()
    run(load_value("dataset"), load_section("floor"), load_section("clip"), load_section("extract"))


if __name__ == "__main__":
    entry_point(main)
