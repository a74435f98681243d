"""Command predict (not a DVC stage): run a trained model on new inputs.

Reads  a model directory of stage teacher or distill (recognised from its files: evaluation/predictor.py),
       and the inputs: --text / --video, each repeatable and paired in order, or --csv FILE (a `text` column,
       named by --column, and/or a `video` column; a relative video path is relative to the CSV's folder)
Writes one line per input on stdout: the prediction, then the input; with --out, also FILE.csv (the inputs
       and the prediction's values) or FILE.json (also the logits and embeddings); logging on stderr

Command: python -m pipeline.predict models/<ds>/student_va-kd/seed_0 --text "what a lovely film"
   or    python -m pipeline.predict models/<ds>/teacher/seed_0 --video clip.mp4 --text "what a lovely film"
   or    python -m pipeline.predict models/<ds>/student_msd-kd/seed_0 --csv clips.csv --out predictions.json

A text student reads transcripts; a teacher or multimodal student a video (its frames and audio track) with its
transcript; a retrieval model (VEGAS-like datasets) a video. Videos are decoded with the CLIP and extraction
settings the model was trained with, recorded in its checkpoint (a model saved before they were recorded: those
of today's params.yaml, with a warning).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.config import FeatureSettings, load_section, load_value
from pipeline.core.errors import MissingInput, UserError
from pipeline.core.runtime import entry_point, resolve_device, setup_logging
from pipeline.data.datasets import DATASETS
from pipeline.evaluation.predictor import Prediction, Predictor, load_predictor
from pipeline.features.precomputed import resolved

log = logging.getLogger(__name__)

OUT_FORMATS = (".csv", ".json")
INPUTS = ("video", "text")  # the inputs a model may read, in the order they are shown


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The inputs as given: `columns` maps `text` and/or `video` to one value per input; `names` says where each
    input came from (for messages); `flags`: given on the command line (not from a CSV)."""

    columns: dict[str, list[str]]
    names: list[str]
    flags: bool


def read_inputs(texts: list[str], videos: list[str], csv: Path | None, column: str) -> Inputs:
    """--text / --video (paired in order) or --csv's `column` and `video` columns."""
    if csv is not None:
        if texts or videos:
            raise UserError("give the inputs either as --text / --video or as --csv, not both")
        return _read_csv(csv, column)
    if not texts and not videos:
        raise UserError("no input: give --text TEXT (a transcript), --video FILE, or --csv FILE")
    if texts and videos and len(texts) != len(videos):
        raise UserError(f"--text is given {len(texts)} times and --video {len(videos)} times: they pair in order "
                        "(the first text is the first video's transcript), so give as many of each")
    columns = {name: values for name, values in (("video", videos), ("text", texts)) if values}
    return Inputs(columns, [f"input {i + 1}" for i in range(len(texts or videos))], flags=True)


def _read_csv(csv: Path, column: str) -> Inputs:
    if not csv.is_file():
        raise MissingInput(f"{csv}: no such CSV file")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    columns = {name: table[source].tolist() for name, source in (("video", "video"), ("text", column))
               if source in table.columns}
    if not columns:
        raise UserError(f"{csv} has neither a {column!r} column (the transcripts; --column names another) nor a "
                        f"'video' column; its columns: {list(table.columns)}")
    if table.empty:
        raise UserError(f"{csv} has no rows: nothing to predict")
    if "video" in columns:  # relative to the CSV's folder, as the dataset manifests are to their root
        columns["video"] = [str(csv.parent / v) if v and not Path(v).is_absolute() else v for v in columns["video"]]
    return Inputs(columns, [f"{csv} row {i + 1}" for i in range(len(table))], flags=False)


def model_rows(inputs: Inputs, predictor: Predictor) -> list[dict[str, Any]]:
    """The rows the model's pipeline reads, after checking that the inputs are what it reads: every input it
    needs, no flag it does not read, no empty transcript, every video file present."""
    described = (f"{predictor.model_dir} is a {predictor.kind} model (trained on {predictor.dataset}); it reads "
                 f"{' + '.join(predictor.reads)} for each input")
    missing = [name for name in predictor.reads if name not in inputs.columns]
    if missing:
        raise UserError(f"{described}: give {' and '.join(f'--{m}' for m in missing)} (or --csv with the "
                        f"column{'s' * (len(missing) > 1)} {' and '.join(repr(m) for m in missing)})")
    extra = [name for name in inputs.columns if name not in predictor.reads]
    if extra and inputs.flags:
        raise UserError(f"{described}: drop {' and '.join(f'--{m}' for m in extra)}")
    for i, name in enumerate(inputs.names):
        if "text" in predictor.reads and not inputs.columns["text"][i].strip():
            raise UserError(f"{name}: empty text; {described}")
        if "video" in predictor.reads and not Path(inputs.columns["video"][i]).is_file():
            raise MissingInput(f"{name}: video file {inputs.columns['video'][i]!r} not found")
    return [{"video": inputs.columns["video"][i] if "video" in predictor.reads else None,
             "text": inputs.columns["text"][i] if "text" in predictor.reads else ""}
            for i in range(len(inputs.names))]


def given(row: dict[str, Any], predictor: Predictor) -> dict[str, str]:
    """The inputs of a row that the model read, in INPUTS order."""
    return {name: row[name] for name in INPUTS if name in predictor.reads}


def line(inputs: dict[str, str], prediction: Prediction) -> str:
    """`r=+1.234  class7=1  polarity=positive  clip.mp4  "the transcript"`: the prediction's values (not its
    lists: logits, embeddings), then the inputs."""
    values = [f"{k}={_show(k, v)}" for k, v in prediction.items() if not isinstance(v, list)]
    shown = [json.dumps(v, ensure_ascii=False) if k == "text" else v for k, v in inputs.items()]
    return "  ".join(values + shown)


def _show(name: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:+.3f}" if name == "r" else f"{value:.3f}"
    return str(value)


def write_out(path: Path, predictor: Predictor, rows: list[dict[str, str]], predictions: list[Prediction]) -> None:
    """FILE.csv: one row per input, its inputs and the prediction's values; FILE.json: the model, its dataset's
    label scale (sentiment), and per input its inputs and whole prediction (logits, embeddings too)."""
    records = [{**inputs, **prediction} for inputs, prediction in zip(rows, predictions, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, list)} for r in records]).to_csv(path,
                                                                                                        index=False)
    else:
        scale = [x if math.isfinite(x) else None for x in DATASETS.get(predictor.dataset).label_range]
        document = {"model": str(predictor.model_dir), "kind": predictor.kind, "dataset": predictor.dataset,
                    **({"label_range": scale} if "r" in predictions[0] else {}),  # a sentiment model's scale
                    "predictions": records}
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    log.info("wrote %d predictions to %s", len(records), path)


def predict(model_dir: Path, inputs: Inputs, device: str, batch_size: int, out: Path | None) -> list[Prediction]:
    """Load the model, check the inputs against what it reads, predict, print one line per input, write `out`."""
    if out is not None and out.suffix not in OUT_FORMATS:
        raise UserError(f"--out {out}: the file name must end in {' or '.join(OUT_FORMATS)}")

    def today() -> FeatureSettings:  # a model saved before its settings were recorded
        return FeatureSettings.of(load_section("clip"), resolved(load_section("extract"), load_value("dataset")))

    predictor = load_predictor(model_dir, resolve_device(device), fallback=today)
    rows = model_rows(inputs, predictor)
    predictions = predictor(rows, batch_size)
    shown = [given(row, predictor) for row in rows]
    for inputs_of_row, prediction in zip(shown, predictions, strict=True):
        print(line(inputs_of_row, prediction))
    if out is not None:
        write_out(out, predictor, shown, predictions)
    return predictions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="models/<ds>/<teacher|student_<name>>/seed_<s>")
    parser.add_argument("--text", action="append", default=[], help="a transcript (repeatable)")
    parser.add_argument("--video", action="append", default=[], help="a video file (repeatable, paired with --text)")
    parser.add_argument("--csv", type=Path, help="a CSV of inputs: a `text` column and/or a `video` column")
    parser.add_argument("--column", default="text", help="the CSV's transcript column (default: text)")
    parser.add_argument("--out", type=Path, help="also write the predictions to FILE.csv or FILE.json")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: auto")
    parser.add_argument("--batch-size", type=int, default=16, help="inputs per forward (default: 16)")
    args = parser.parse_args(argv)
    setup_logging()
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    predict(args.model_dir, read_inputs(args.text, args.video, args.csv, args.column), args.device,
            args.batch_size, args.out)


if __name__ == "__main__":
    entry_point(main)
