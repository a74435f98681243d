"""Stage evaluate@<method> / evaluate_teacher: test metrics over seeds, per-clip predictions, and the
model's size and measured end-to-end inference latency.

Reads  models/<ds>/student_<method>/seed_<s>/ (or models/<ds>/teacher/seed_<s>/ for `teacher`),
       data/prepared/<ds>/manifest.csv; for latency the raw test clips (teacher, multimodal student)
Writes metrics/<ds>/<name>.json             {"mean": {...}, "std": {...}, "seeds": {"<s>": {...}},
                                             "efficiency": {...}} with the dataset's metric set
       predictions/<ds>/<name>/seed_<s>.csv  id, label, pred (test split); retrieval: the per-query
                                             AP table direction, id, label, ap

Command: python -m pipeline.evaluate {teacher,<method>}

The metrics follow the MMSA conventions (pipeline/metrics.py), CH-SIMS's variant for `sims`;
mean and std (ddof = 1) are over `seeds`. Each seed's numbers are recomputable from its CSV:
`python -m pipeline.metrics predictions/<ds>/<name>/seed_<s>.csv` (`--metric-set sims`). A
student is rebuilt from its saved directory, not from today's params.

Retrieval datasets: map_a2v, map_v2a, map_mean over the test clips (retrieval.retrieval_metrics:
each clip's audio queries every test clip's visual item, and the reverse; cosine similarity, relevant
= same class). A student ranks by its branches' embeddings. The teacher, which sees both modalities
at once, is scored as a retrieval model through its modality-specific outputs: a clip's audio item
is softmax(c_T^audio), the class posterior given its audio alone, and its visual item
softmax(c_T^video) (stored by the teacher stage as logits_only_<m>).

Efficiency (the models of the first seed; latency does not depend on the seed): `params` counts
every parameter inference needs (the teacher includes the frozen CLIP; a multimodal student
too, since it needs CLIP frame embeddings), and latency is wall time per clip from the raw
inputs to the prediction (latency.py): the teacher decodes frames, encodes them with CLIP,
computes log-mel audio features and the transcript's CLIP embedding, then runs its forward;
the text student tokenizes and runs its forward. Both at batch 1 and batched
(`evaluate.latency.batch_size`), on the machine at hand (`device` is recorded).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import paths
from .clip import load_clip
from .config import ClipParams, EvaluateParams, ExtractParams, check_params, load_section, load_value
from .datasets import DATASETS, read_manifest
from .distill import RETRIEVAL_CHECKPOINT, predict_student, retrieval_embeddings, student_inputs, tokenize
from .features import load_features
from .latency import (
    MediaInputs,
    MultimodalStudentPipeline,
    RetrievalStudentPipeline,
    TeacherPipeline,
    TextStudentPipeline,
    count_parameters,
    manifest_rows,
    measure_latency,
)
from .metrics import CSV_COLUMNS, METRIC_SETS, json_safe, summarize_seeds
from .models import MODALITIES, load_student, load_teacher
from .retrieval import load_retrieval_student, retrieval_metrics, write_per_query_ap
from .runtime import resolve_device, setup_logging, stage
from .teacher import read_teacher_predictions

log = logging.getLogger(__name__)
TEACHER = "teacher"


def student_test_predictions(test: pd.DataFrame, model_dir: Path, params: EvaluateParams, dataset: str,
                             clip: ClipParams, extract: ExtractParams) -> np.ndarray:
    """r_S (float64) for the test clips, from the student saved in `model_dir`."""
    model, tokenizer, meta = load_student(model_dir)
    model.to(resolve_device(params.device))
    config = meta["config"]
    features = (load_features(test, dataset, clip, extract, config["video_tokens"], config["audio_tokens"])
                if config["kind"] == "multimodal" else None)
    inputs = student_inputs(tokenize(tokenizer, test["text"].tolist(), config["max_length"]), features)
    return predict_student(model, inputs, params.batch_size).double().numpy()


def write_predictions(test: pd.DataFrame, pred: np.ndarray, csv_path: Path, metric_set: str) -> dict[str, float]:
    """Write id, label, pred and return the metrics of exactly those values (float64, full precision),
    with the dataset's metric set (MOSI/MOSEI conventions, or CH-SIMS's)."""
    table = pd.DataFrame({"id": test["id"].to_numpy(), "label": test["label"].to_numpy(np.float64), "pred": pred})
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    table.loc[:, list(CSV_COLUMNS)].to_csv(csv_path, index=False)
    return METRIC_SETS.get(metric_set).compute(table["pred"].to_numpy(), table["label"].to_numpy())


def retrieval_test_metrics(name: str, dataset: str, manifest: pd.DataFrame, test: pd.DataFrame, source: Path,
                           params: EvaluateParams, clip: ClipParams, extract: ExtractParams,
                           csv_path: Path) -> dict[str, float]:
    """mAP of the model in `source` on the test clips (module docstring); writes the per-query APs."""
    labels = test["label"].to_numpy().astype(np.int64)
    if name == TEACHER:
        only = read_teacher_predictions(test, source)["logits_only"]  # (N, 3, K)
        audio, visual = (only[:, MODALITIES.index(m)].softmax(-1) for m in ("audio", "video"))  # (N, K) each
    else:
        model, ckpt = load_retrieval_student(source / RETRIEVAL_CHECKPOINT, resolve_device(params.device))
        features = load_features(manifest, dataset, clip, extract, ckpt["video_tokens"], ckpt["audio_tokens"])
        rows = torch.from_numpy(manifest.index[manifest["split"] == "test"].to_numpy())
        audio, visual = retrieval_embeddings(model, features.audio[rows], features.video[rows], params.batch_size)
    metrics, table = retrieval_metrics(audio, visual, labels, ids=test["id"].tolist())
    write_per_query_ap(table, csv_path)
    return metrics


def inference_pipeline(name: str, dataset: str, seed: int, clip: ClipParams, extract: ExtractParams,
                       device) -> tuple[object, str]:
    """The model of `name` (its `seed`) wrapped end to end, from raw clip to prediction, and its inputs."""
    def frozen_clip():
        return load_clip(clip.model, clip.pretrained, device, clip.init_seed, extract.run.precision)

    if name == TEACHER:
        teacher, _ = load_teacher(paths.teacher_checkpoint(dataset, seed))
        inputs = "+".join(MODALITIES) if DATASETS.get(dataset).task == "sentiment" else "video+audio"
        return TeacherPipeline.build(teacher.to(device), frozen_clip(), extract.video, extract.audio), inputs
    if DATASETS.get(dataset).task == "retrieval":
        model, ckpt = load_retrieval_student(paths.student_dir(dataset, name, seed) / RETRIEVAL_CHECKPOINT, device)
        media = MediaInputs(frozen_clip(), extract.video, extract.audio, ckpt["video_tokens"], ckpt["audio_tokens"])
        return RetrievalStudentPipeline(model, media), "video+audio"
    model, tokenizer, meta = load_student(paths.student_dir(dataset, name, seed))
    model.to(device)
    config = meta["config"]
    if config["kind"] == "multimodal":
        media = MediaInputs(frozen_clip(), extract.video, extract.audio, config["video_tokens"],
                            config["audio_tokens"])
        return MultimodalStudentPipeline(model, tokenizer, config["max_length"], media), "+".join(MODALITIES)
    return TextStudentPipeline(model, tokenizer, config["max_length"]), "text"


def efficiency(name: str, dataset: str, test: pd.DataFrame, params: EvaluateParams, clip: ClipParams,
               extract: ExtractParams, seed: int) -> dict[str, Any]:
    """Parameters needed at inference and measured latency per clip, raw inputs to prediction."""
    device = resolve_device(params.device)
    pipeline, inputs = inference_pipeline(name, dataset, seed, clip, extract, device)
    result = {"params": count_parameters(*pipeline.modules()), "inputs": inputs,
              **measure_latency(pipeline, manifest_rows(test, params.latency.clips), params.latency, device)}
    log.info("%s: %d parameters at inference (%s); %.2f ms per clip at batch 1, %.2f at batch %d (%s)", name,
             result["params"], inputs, result["latency_ms_b1"], result["latency_ms_batched"], result["batch_size"],
             result["device"])
    return result


def model_source(dataset: str, name: str, seed: int) -> Path:
    return paths.teacher_predictions(dataset, seed) if name == TEACHER else paths.student_dir(dataset, name, seed)


def run(name: str, dataset: str, params: EvaluateParams, seeds: list[int], clip: ClipParams,
        extract: ExtractParams) -> dict[str, Any]:
    sources = [model_source(dataset, name, s) for s in seeds]
    metrics_path = paths.metrics(dataset, name)
    with stage(f"evaluate@{name}", [paths.manifest(dataset), *sources], [metrics_path,
                                                                          paths.predictions_dir(dataset, name)]):
        manifest = read_manifest(paths.manifest(dataset))
        test = manifest[manifest["split"] == "test"].reset_index(drop=True)
        spec = DATASETS.get(dataset)
        per_seed: dict[str, dict[str, float]] = {}
        for seed, source in zip(seeds, sources, strict=True):
            csv_path = paths.predictions(dataset, name, seed)
            if spec.task == "retrieval":
                per_seed[str(seed)] = retrieval_test_metrics(name, dataset, manifest, test, source, params, clip,
                                                             extract, csv_path)
            else:
                if name == TEACHER:
                    pred = read_teacher_predictions(test, source)["reg"].double().numpy()
                else:
                    pred = student_test_predictions(test, source, params, dataset, clip, extract)
                per_seed[str(seed)] = write_predictions(test, pred, csv_path, spec.metric_set)
            log.info("%s seed %d on %d test clips: %s", name, seed, len(test),
                     ", ".join(f"{k} {v:.4f}" for k, v in per_seed[str(seed)].items()))
        summary = summarize_seeds(per_seed)
        result = {"mean": json_safe(summary["mean"]), "std": json_safe(summary["std"]),
                  "seeds": {s: json_safe(m) for s, m in per_seed.items()},
                  "efficiency": efficiency(name, dataset, test, params, clip, extract, seeds[0])}
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text(json.dumps(result, indent=2) + "\n")  # nan -> null
        primary = METRIC_SETS.get(spec.metric_set).primary
        log.info("%s over %d seeds: %s %.4f ± %.4f", name, len(seeds), primary, summary["mean"][primary],
                 summary["std"][primary])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="`teacher` or a distillation method (a student trained by distill@<method>)")
    args = parser.parse_args(argv)
    setup_logging()
    check_params()
    run(args.name, load_value("dataset"), load_section("evaluate"), load_value("seeds"), load_section("clip"),
        load_section("extract"))


if __name__ == "__main__":
    main()
