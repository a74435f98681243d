"""Stage generate@<dataset>: write a synthetic dataset in its raw layout.

Reads  params `generate` (its `seed` draws the whole dataset)
Writes data/raw/<dataset>/ (MMSA layout: label.csv + Raw/<video_id>/<clip_id>.mp4)

Command: python -m pipeline.generate synthetic_sentiment

Real datasets are not generated: they are provided at data/raw/<name>/ (see README).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from . import paths
from .config import GenerateParams, Registry, check_params, load_section
from .runtime import setup_logging, stage
from .synthetic import SyntheticNoise, generate_sentiment

GENERATORS: Registry = Registry("synthetic dataset")
GENERATORS.add("synthetic_sentiment", generate_sentiment)


def run(name: str, root: Path, params: GenerateParams) -> None:
    generate = GENERATORS.get(name)
    with stage(f"generate@{name}", ["params.yaml:generate"], [root]):
        generate(root=root, n_clips=params.n_clips, seed=params.seed, splits=params.splits, seconds=params.seconds,
                 fps=params.fps, size=params.size, sample_rate=params.sample_rate,
                 noise=SyntheticNoise(**dataclasses.asdict(params.noise)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=GENERATORS.names())
    args = parser.parse_args(argv)
    setup_logging()
    check_params()
    run(args.dataset, paths.raw_dir(args.dataset), load_section("generate"))


if __name__ == "__main__":
    main()
