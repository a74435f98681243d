"""Stage generate@<dataset>: write a synthetic dataset in its raw layout.

Reads  params `generate.seed` (it draws the whole dataset), `generate.media` (clip format) and the
       dataset's own block `generate.<dataset>`
Writes data/raw/<dataset>/: synthetic_sentiment in the MMSA layout (label.csv + Raw/<video_id>/<clip_id>.mp4)
       with its known limits (limits.json, oracle.csv), synthetic_av in the VEGAS layout
       (<class>/<id>.mp4 + folds/fold_<k>.txt)

Command: python -m pipeline.generate {synthetic_sentiment,synthetic_av}

Real datasets are not generated: they are provided at data/raw/<name>/ (see README).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from pipeline.core import paths
from pipeline.core.config import ConfigError, GenerateParams, check_params, load_section
from pipeline.core.registry import Registry
from pipeline.core.runtime import entry_point, setup_logging, stage
from pipeline.data.synthetic import generate_av, generate_sentiment, sentiment_process

GENERATORS: Registry[Callable[[Path, GenerateParams], object]] = Registry("synthetic dataset")


@GENERATORS.register("synthetic_sentiment")
def _sentiment(root: Path, params: GenerateParams) -> None:
    block, media = params.synthetic_sentiment, params.media
    try:
        process = sentiment_process(annotators=block.annotators, irony=block.irony, cues=(block.cues[0], block.cues[1]),
                                    tau=block.noise.text, video=block.noise.video, audio=block.noise.audio,
                                    annotator=block.noise.annotator)
    except ValueError as err:  # name the params block, not the library's field
        raise ConfigError(f"params.yaml generate.synthetic_sentiment: {err}") from None
    generate_sentiment(root=root, n_clips=block.n_clips, seed=params.seed, splits=block.splits,
                       seconds=media.seconds, fps=media.fps, size=media.size, sample_rate=media.sample_rate,
                       process=process, monte_carlo=block.monte_carlo)


@GENERATORS.register("synthetic_av")
def _av(root: Path, params: GenerateParams) -> None:
    block, media = params.synthetic_av, params.media
    try:
        generate_av(root, block.n_clips, params.seed, seconds=media.seconds, fps=media.fps, size=media.size,
                    sample_rate=media.sample_rate, n_folds=block.n_folds, audio_noise=block.noise.audio,
                    visual_noise=block.noise.visual)
    except ValueError as err:  # name the params block, not the library's argument
        raise ConfigError(f"params.yaml generate.synthetic_av: {err}") from None


def run(name: str, root: Path, params: GenerateParams) -> None:
    generate = GENERATORS.get(name)
    reads = ["params.yaml:generate.seed", "params.yaml:generate.media", f"params.yaml:generate.{name}"]
    with stage(f"generate@{name}", reads, [root]):
        generate(root, params)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=GENERATORS.names())
    args = parser.parse_args(argv)
    setup_logging()
    check_params()
    run(args.dataset, paths.raw_dir(args.dataset), load_section("generate"))


if __name__ == "__main__":
    entry_point(main)
