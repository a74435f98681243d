"""Stage generate@<dataset>: write a synthetic dataset in its raw layout.

Reads  params `generate` (its `seed` draws the whole dataset)
Writes data/raw/<dataset>/: synthetic_sentiment in the MMSA layout (label.csv + Raw/<video_id>/<clip_id>.mp4),
       synthetic_av in the VEGAS layout (<class>/<id>.mp4 + folds/fold_<k>.txt)

Command: python -m pipeline.generate {synthetic_sentiment,synthetic_av}

Real datasets are not generated: they are provided at data/raw/<name>/ (see README).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

from . import paths
from .config import GenerateParams, Registry, check_params, load_section
from .runtime import setup_logging, stage
from .synthetic import AVNoise, SyntheticNoise, generate_av, generate_sentiment

GENERATORS: Registry[Callable[[Path, GenerateParams], object]] = Registry("synthetic dataset")


@GENERATORS.register("synthetic_sentiment")
def _sentiment(root: Path, params: GenerateParams) -> None:
    generate_sentiment(root=root, n_clips=params.n_clips, seed=params.seed, splits=params.splits,
                       seconds=params.seconds, fps=params.fps, size=params.size, sample_rate=params.sample_rate,
                       noise=SyntheticNoise(**dataclasses.asdict(params.noise)))


@GENERATORS.register("synthetic_av")
def _av(root: Path, params: GenerateParams) -> None:
    generate_av(root, params.n_clips, params.seed, seconds=params.seconds, fps=params.fps, size=params.size,
                sample_rate=params.sample_rate, n_folds=params.av.n_folds,
                noise=AVNoise(**dataclasses.asdict(params.av.noise)))


def run(name: str, root: Path, params: GenerateParams) -> None:
    generate = GENERATORS.get(name)
    with stage(f"generate@{name}", ["params.yaml:generate"], [root]):
        generate(root, params)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=GENERATORS.names())
    args = parser.parse_args(argv)
    setup_logging()
    check_params()
    run(args.dataset, paths.raw_dir(args.dataset), load_section("generate"))


if __name__ == "__main__":
    main()
