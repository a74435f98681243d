"""Scoring every model on the test split (stage evaluate's work): metrics over seeds, per-clip predictions,
size and end-to-end latency.

One stage for every model: a process start costs about as much as scoring a model, and the
report needs all of them anyway. The metrics follow the MMSA conventions (pipeline/evaluation/metrics.py),
CH-SIMS's variant for `sims`; mean and std (ddof = 1) are over `seeds`. Each seed's numbers are
recomputable from its CSV: `python -m pipeline.evaluation.metrics predictions/<ds>/<name>/seed_<s>.csv`
(`--metric-set sims`). A model is rebuilt from its saved files, not from today's params.

Retrieval datasets: map_a2v, map_v2a, map_mean over the test clips (evaluation/retrieval_metrics.py:
each clip's audio queries every test clip's visual item, and the reverse; cosine similarity, relevant
= same class; a clip without audio (visual) features is neither an audio (visual) query nor item).
A student ranks by its branches' embeddings. The teacher, which sees both modalities at once, is
scored as a retrieval model through its modality-specific outputs: a clip's audio item is
softmax(c_T^audio), the class posterior given its audio alone, and its visual item softmax(c_T^video)
(stored by the teacher stage as logits_only_<m>); the floor likewise through its linear probes.

Efficiency (the models of the first seed; latency depends on the architecture, not on the weights
or the seed): `params` counts every parameter inference needs (the teacher includes the frozen
CLIP; a multimodal or retrieval student too, since it needs CLIP frame embeddings), and latency
is wall time per clip from the raw inputs to the prediction (latency.py; a model's clips are decoded
with the CLIP and extraction settings its checkpoint records), at batch 1 and batched
(`evaluate.latency.batch_size`), on the machine at hand (`device` is recorded). A model that reads
precomputed features (`extract.<m>.source`, features/precomputed.py) has no raw-clip path: it is
not timed (null, with a note), as the retrieval floor's probes are not, and the CLIP is counted only
where it needs it. Students of the
same kind share one architecture, so latency is measured once per kind, on the first such student,
and the others record `latency_of` (timing them all would only rank measurement noise). The
`teacher_self` control is never deployed: its latency is not measured (null).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core import paths
from pipeline.core.config import (
    MODALITIES,
    ClipParams,
    EvaluateParams,
    ExtractParams,
    FeatureSettings,
    recorded_features,
)
from pipeline.core.paths import FLOOR, SELF_TEACHER, TEACHER
from pipeline.core.runtime import resolve_device
from pipeline.data.datasets import DATASETS, read_manifest
from pipeline.evaluation.latency import (
    MediaInputs,
    count_parameters,
    manifest_rows,
    measure_latency,
    media_inputs,
    teacher_pipeline,
)
from pipeline.evaluation.metrics import METRIC_SETS, json_safe, summarize_seeds
from pipeline.features.arrays import FeatureArrays, load_features
from pipeline.features.clip import FrozenClip
from pipeline.features.precomputed import resolved
from pipeline.models.floor import ProbeFloor, TextFloor, load_floor
from pipeline.tasks.table import task_of

log = logging.getLogger(__name__)



class Evaluation:
    """What every model's scoring shares: the dataset, its task, its test split, the params, and the features
    (loaded once, when a model needs them). The task (tasks/) says how its models are run on the test clips
    and scored; this class is the `TestSet` it is given."""

    def __init__(self, dataset: str, params: EvaluateParams, clip: ClipParams, extract: ExtractParams,
                 seeds: list[int]) -> None:
        self.dataset, self.params, self.clip, self.extract, self.seeds = dataset, params, clip, extract, seeds
        self.task = task_of(dataset)
        self.metric_set = DATASETS.get(dataset).metric_set
        self.manifest = read_manifest(paths.manifest(dataset))
        self.test_rows = np.flatnonzero(self.manifest["split"].to_numpy() == "test")
        self.test = self.manifest.iloc[self.test_rows].reset_index(drop=True)
        self.device = resolve_device(params.device)
        self._features: dict[tuple[int, int], FeatureArrays] = {}
        self._clips: dict[ClipParams, FrozenClip] = {}  # the frozen CLIPs of the raw-clip pipelines, loaded once
        self.latency_by_kind: dict[str, tuple[str, dict[str, Any]]] = {}

    def features(self, video_tokens: int, audio_tokens: int) -> FeatureArrays:
        key = (video_tokens, audio_tokens)
        if key not in self._features:
            self._features[key] = load_features(self.manifest, self.dataset, self.clip, self.extract, *key)
        return self._features[key]

    def test_features(self, video_tokens: int, audio_tokens: int) -> FeatureArrays:
        """The test clips' rows of `features`."""
        return self.features(video_tokens, audio_tokens).rows(torch.from_numpy(self.test_rows))

    def present(self, modality: str) -> np.ndarray:
        """(N_test,) bool: the test clips that have `modality`'s features (retrieval: queries and items)."""
        return self.features(self.extract.video.frames, 1).present[self.test_rows, MODALITIES.index(modality)].numpy()

    def media_inputs(self, record: Mapping[str, Any], source: Path, video_tokens: int,
                     audio_tokens: int) -> MediaInputs:
        """A saved model's raw-clip inputs (latency.py), with the feature settings its provenance `record`
        holds (this run's clip and extract params for a model saved before they were recorded); the CLIP
        autocast of extract@video (`extract.run.precision`), each distinct CLIP loaded once."""
        settings = recorded_features(record, source,
                                     lambda: FeatureSettings.of(self.clip, resolved(self.extract, self.dataset)))
        return media_inputs(settings, video_tokens, audio_tokens, self.device, self.extract.run.precision,
                            self._clips)

    # ----------------------------------------------------------------------- one seed's test score

    def teacher_seed(self, name: str, seed: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """A teacher's test metrics, and (main sentiment teacher) its metrics given each subset of modalities."""
        outputs, given = self.task.teacher_test(self, name, seed)
        by_subset = {subset: self.task.score(self, out, paths.predictions_dir(self.dataset, name) / f"given_{subset}"
                                             / f"seed_{seed}.csv") for subset, out in given.items()}
        return self.task.score(self, outputs, paths.predictions(self.dataset, name, seed)), by_subset

    def student_seed(self, name: str, seed: int) -> dict[str, float]:
        outputs = self.task.student_test(self, paths.student_dir(self.dataset, name, seed))
        return self.task.score(self, outputs, paths.predictions(self.dataset, name, seed))

    def floor_seed(self, seed: int) -> dict[str, float]:
        model = load_floor(paths.floor_dir(self.dataset))
        if isinstance(model, ProbeFloor):  # the probes' class posteriors rank like embeddings
            test = self.test_features(self.extract.video.frames, 1)
            outputs = (model.posterior("audio", test.audio.mean(dim=1).double().numpy()),
                       model.posterior("video", test.video.mean(dim=1).double().numpy()))
        else:
            outputs = model(self.test["text"].fillna("").astype(str).tolist())
        return self.task.score(self, outputs, paths.predictions(self.dataset, FLOOR, seed))

    # ----------------------------------------------------------------------- efficiency

    def efficiency(self, name: str) -> dict[str, Any]:
        """Parameters needed at inference and measured latency per clip, raw inputs to prediction."""
        seed = self.seeds[0]
        rows = manifest_rows(self.test, self.params.latency.clips)
        untimed = {"latency_ms_b1": None, "latency_ms_batched": None, "batch_size": self.params.latency.batch_size,
                   "clips": 0, "device": str(self.device)}
        if name == SELF_TEACHER:
            control, _ = teacher_pipeline(paths.teacher_checkpoint(self.dataset, seed, name), self.device,
                                          self.media_inputs)
            inputs = "+".join(self.task.self_modalities)
            files = self.precomputed(control, inputs)
            return {"params": count_parameters(*self.needed(control, inputs, clip_text=True)),
                    "inputs": inputs + (f" (precomputed: {files})" if files else ""), **untimed,
                    "note": "a control, never deployed: not timed"}
        if name == FLOOR and isinstance(probes := load_floor(paths.floor_dir(self.dataset)), ProbeFloor):
            return {"params": probes.n_parameters, "inputs": "video+audio (time-averaged cached features)",
                    **untimed, "note": "linear probes on cached features: not timed from raw clips"}
        kind, pipeline, inputs = self.inference_pipeline(name, seed)
        if files := self.precomputed(pipeline, inputs):
            return {"params": count_parameters(*self.needed(pipeline, inputs, clip_text=kind == TEACHER)),
                    "inputs": f"{inputs} (precomputed: {files})", **untimed,
                    "note": f"reads precomputed features ({files}): not timed from raw clips"}
        if kind in self.latency_by_kind:
            source, timed = self.latency_by_kind[kind]
            return {"params": count_parameters(*pipeline.modules()), "inputs": inputs, **timed, "latency_of": source}
        timed = measure_latency(pipeline, rows, self.params.latency, self.device)
        if kind not in (TEACHER, FLOOR):
            self.latency_by_kind[kind] = (name, timed)
        result = {"params": count_parameters(*pipeline.modules()), "inputs": inputs, **timed}
        log.info("%s: %d parameters at inference (%s); %.2f ms per clip at batch 1, %.2f at batch %d (%s)", name,
                 result["params"], inputs, result["latency_ms_b1"], result["latency_ms_batched"],
                 result["batch_size"], result["device"])
        return result

    @staticmethod
    def precomputed(pipeline: Any, inputs: str) -> str:
        """The precomputed feature files among the `inputs` (e.g. "video+audio+text") of the model `pipeline`
        runs, as its own record names them (latency.py `MediaInputs.precomputed`), "" when none: such a model
        cannot be run from a raw clip (features/precomputed.py). A transcript-only pipeline reads no features."""
        media = getattr(pipeline, "media", None)
        files = media.precomputed.items() if media is not None else ()
        return ", ".join(file for m, file in files if m in inputs.split("+"))

    @staticmethod
    def needed(pipeline: Any, inputs: str, clip_text: bool) -> list[torch.nn.Module]:
        """The modules of `pipeline` a model with `inputs` needs at inference: the frozen CLIP only for CLIP
        frame embeddings (video from the clips) or, with `clip_text` (the teachers), the transcript's."""
        parts = inputs.split("+")
        media = pipeline.media
        if (clip_text and "text" in parts) or ("video" in parts and "video" not in media.precomputed):
            return pipeline.modules()
        return [m for m in pipeline.modules() if m is not media.clip.model]

    def inference_pipeline(self, name: str, seed: int) -> tuple[str, Any, str]:
        """(kind, the model of `name` (its `seed`) wrapped end to end from raw clip to prediction, its inputs)."""
        if name == TEACHER:
            pipeline, _ = teacher_pipeline(paths.teacher_checkpoint(self.dataset, seed), self.device, self.media_inputs)
            return TEACHER, pipeline, self.task.teacher_inputs
        if name == FLOOR:
            return FLOOR, FloorPipeline(load_floor(paths.floor_dir(self.dataset))), "text"
        return self.task.student_pipeline(self, paths.student_dir(self.dataset, name, seed))

    # ----------------------------------------------------------------------- one model, every seed

    def model(self, name: str) -> dict[str, Any]:
        per_seed: dict[str, dict[str, float]] = {}
        given: dict[str, dict[str, dict[str, float]]] = {}
        for seed in self.seeds:
            if name in (TEACHER, SELF_TEACHER):
                per_seed[str(seed)], by_subset = self.teacher_seed(name, seed)
                for subset, metrics in by_subset.items():
                    given.setdefault(subset, {})[str(seed)] = metrics
            elif name == FLOOR:
                per_seed[str(seed)] = self.floor_seed(seed)
            else:
                per_seed[str(seed)] = self.student_seed(name, seed)
            log.info("%s seed %d on %d test clips: %s", name, seed, len(self.test),
                     ", ".join(f"{k} {v:.4f}" for k, v in per_seed[str(seed)].items()))
        result = {**summary(per_seed), "efficiency": self.efficiency(name)}
        if given:
            result["given"] = {subset: summary(seeds) for subset, seeds in given.items()}
        path = paths.metrics(self.dataset, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")  # nan -> null
        primary = METRIC_SETS.get(self.metric_set).primary
        log.info("%s over %d seeds: %s %.4f ± %.4f", name, len(self.seeds), primary,
                 _nan(result["mean"][primary]), _nan(result["std"][primary]))
        return result


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def summary(per_seed: dict[str, dict[str, float]]) -> dict[str, Any]:
    """{"mean", "std", "seeds"} of per-seed metrics (metrics.summarize_seeds), nan as null."""
    s = summarize_seeds(per_seed)
    return {"mean": json_safe(s["mean"]), "std": json_safe(s["std"]),
            "seeds": {seed: json_safe(m) for seed, m in per_seed.items()}}


class FloorPipeline:
    """The TF-IDF floor from a raw clip's transcript to its prediction."""

    def __init__(self, model: TextFloor) -> None:
        self.model = model

    def modules(self) -> list[torch.nn.Module]:
        return [_ParameterCount(self.model.n_parameters)]

    def __call__(self, rows: list[dict[str, Any]]) -> np.ndarray:
        return self.model([str(r["text"]) for r in rows])


class _ParameterCount(torch.nn.Module):
    """A stand-in module holding n parameters, so count_parameters counts a non-torch model's size."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(n), requires_grad=False)


def model_names(students: list[str]) -> list[str]:
    """Every model `evaluate` scores, in report order: the teacher, its control, the floor, the students."""
    return [TEACHER, SELF_TEACHER, FLOOR, *students]
