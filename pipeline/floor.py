"""Stage floor: the linear model every student of the dataset must beat (DESIGN.md "Trustworthy comparison").

Reads  data/prepared/<ds>/manifest.csv (retrieval: data/features/<ds>/{video,audio,text}.h5)
Writes models/<ds>/floor/model.json   everything the model is (vocabulary, idf, coefficients, the chosen
                                      regularisation and the validation values of the grid): plain JSON,
                                      rebuilt by `load_floor` without running any code from the file

Command: python -m pipeline.floor

Sentiment datasets: TF-IDF of the transcript's word n-grams (1..`floor.ngrams`, sublinear tf,
l2-normalised rows; scikit-learn's TfidfVectorizer fitted on the training transcripts) followed by
ridge regression (scikit-learn's Ridge: min_w ||y - Xw - b||^2 + alpha ||w||^2), alpha chosen from
`floor.grid` by validation MAE. A text student that does not beat it has learned nothing a bag of
words does not know.

Retrieval datasets (no transcripts): for each modality, a multinomial logistic regression
(scikit-learn's LogisticRegression, L2 penalty, C = 1 / strength with the strength from
`floor.grid`, chosen by validation accuracy) on the clip's time-averaged features (CLIP frame
embeddings, log-mel frames), standardised with the training mean and std; a clip's item in the
ranking is its class posterior given that modality (the same way the teacher is scored).

The model is deterministic: every seed gets the same predictions (so its std over seeds is 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.config import ClipParams, ExtractParams, FloorParams, check_params, load_section, load_value
from pipeline.core.runtime import setup_logging, stage
from pipeline.data.datasets import DATASETS, read_manifest
from pipeline.models.floor import MODEL_FILE, fit_probe_floor, fit_text_floor, mean_features


def run(dataset: str, params: FloorParams, clip: ClipParams, extract: ExtractParams) -> Path:
    out = paths.floor_dir(dataset) / MODEL_FILE
    with stage("floor", [paths.manifest(dataset)], [out]):
        manifest = read_manifest(paths.manifest(dataset))
        labels = manifest["label"].to_numpy(np.float64)
        splits = manifest["split"].to_numpy()
        if DATASETS.get(dataset).task == "retrieval":
            features, present = mean_features(manifest, dataset, clip, extract)
            model = fit_probe_floor(features, present, labels.astype(np.int64), splits, params.grid)
        else:
            model = fit_text_floor(manifest["text"].fillna("").astype(str).tolist(), labels, splits, params.grid,
                                   params.ngrams)
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
    main()
