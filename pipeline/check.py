"""Stage check: validate params.yaml and the chosen dataset before any stage deletes an output.

Reads  params.yaml (every value: the stage depends on all of them), data/raw/<dataset>/ (a real
       dataset's presence and layout; not a DVC dependency, so that a missing folder reaches this
       stage's message instead of DVC's)
Writes data/checked.txt (the same line every time)

Command: python -m pipeline.check

DVC deletes a stage's outputs just before it runs the stage, so a mistake found inside a stage costs
that stage's outputs. This stage is the first of the DAG and every other stage depends on its output:
a bad `dvc exp run -S key=value` fails here, in about a second, with one line naming the key and the
fix (exit code 2), and no other stage runs or loses anything. It checks:

- every key, type and value of params.yaml against its meaning (core/config.py `check_params`);
- that a real dataset is where `dataset` says, with its layout (data/datasets.py);
- where video and audio come from (`extract.<m>.source`: the clips, or a feature file inside the
  dataset's folder that exists and has a known format; features/precomputed.py);
- the CLIP model and weights `clip` names (features/clip.py), without building them;
- the student's text encoder `distill.student.pretrained` (models/pretrained.py), without loading it.

Its output never changes, so a check that passes reruns nothing downstream.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core import paths
from pipeline.core.config import PARAMS_FILE, ClipParams, check_params, load_section, load_value
from pipeline.core.runtime import entry_point, setup_logging, stage
from pipeline.data.datasets import check_dataset_present
from pipeline.features.clip import check_clip_source
from pipeline.features.precomputed import check_sources
from pipeline.models.pretrained import check_pretrained

CHECKED = "params.yaml and the dataset passed `python -m pipeline.check`\n"


def run(out: Path) -> None:
    dataset = load_value("dataset")
    with stage("check", [PARAMS_FILE, paths.raw_dir(dataset)], [out]):
        check_params()
        check_dataset_present(dataset)
        check_sources(load_section("extract"), dataset)
        clip: ClipParams = load_section("clip")
        check_clip_source(clip.model, clip.pretrained)
        check_pretrained(load_section("distill").student.pretrained)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(CHECKED)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    setup_logging()
    run(paths.CHECKED)


if __name__ == "__main__":
    entry_point(main)
