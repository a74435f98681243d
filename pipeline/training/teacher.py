"""Training the CLIP prompt teacher (and its control) and writing their predictions: stage teacher's work.

Per seed: teacher.pt (weights + the config that built them) and preds.h5 (the columns: pipeline/teacher.py's
docstring), for the teacher and its `self` control; what differs between tasks (the heads trained, the class loss, the
saliency, the teacher's metrics) comes from the task (tasks/sentiment.py, tasks/retrieval.py).

Step 1 of VideoAdviser's step distillation lives here: classification logits over the K
sentiment bins -> regression logit r_T = g(c). Schedules: `joint` trains everything with
ce_weight * CE + L1; `two_phase` trains the classifier with CE, then freezes it and fits g
with L1 (each phase `train.epochs` epochs at most; `train.patience` stops either early).

**Modality dropout** (`teacher.modality_dropout` = p): every training batch masks each of a
clip's present modalities independently with probability p, keeping at least one
(models/masks.py modality_dropout). The outputs stored below are outputs on masked inputs, so the
teacher must have seen masked inputs while it trained; without it, its mask vectors never
receive a gradient and r_T^m is an extrapolation.

Modality-specific predictions and saliency (MSD, Jin et al. 2021): r_T^m is the teacher's
output with only modality m kept (the others masked as `teacher.mask` says), and the
saliency of m on a clip (`teacher.saliency`) is

    prediction:  s_m(x) = |r_T(x) - r_T(x without m)|          how much the output moves
    loss:        s_m(x) = |y - r_T(x without m)| - |y - r_T(x)|  how much the L1 loss rises (can be < 0)

The population saliency of m is the mean of s_m over the training clips. With the three
modalities, "only m" and "without m" cover every non-empty subset, so the teacher's own
quality given each subset (validation and test, the dataset's metric set) is computed from
the same columns and recorded in preds.h5 (`subset_metrics`, keyed like `video+text`).

**The `self` control** (DESIGN.md "Trustworthy comparison"): models/<ds>/teacher_self is the same
architecture and training restricted to the modalities the VideoAdviser family's student sees
(sentiment: the transcript alone, video and audio removed from every clip), so that the `self`
student, distilled from it with exactly VideoAdviser's step-2 loss, differs from `videoadviser`
only in what the teacher saw: `videoadviser - self` is what multimodal knowledge adds. On a
retrieval dataset that student sees every modality the teacher sees, so the two teachers are the
same model and teacher_self is a copy (logged).

Retrieval datasets (task `retrieval`, labels = class indices 0..K-1, the prompts are the class
names): the teacher is the same model classifying the clip from audio and video (no transcript:
text is masked everywhere), trained with CE(c, y) on its classification parameters and selected
on validation cross-entropy; g is not used. It stores logits_only_<m> / logits_without_<m> (N, K)
instead of reg_*, its subset metrics are accuracy and cross-entropy, and its saliencies compare
class distributions p = softmax(c):

    prediction:  s_m(x) = 1/2 sum_k |p_k(x) - p_k(x without m)|   total variation, in [0, 1]
    loss:        s_m(x) = CE(c(x without m), y) - CE(c(x), y)      rise of the cross-entropy (can be < 0)
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.core import paths
from pipeline.core.config import (
    MODALITIES,
    FeatureSettings,
    TeacherParams,
    to_dict,
)
from pipeline.core.paths import SELF_TEACHER, TEACHER
from pipeline.core.runtime import (
    is_main_process,
    seed_everything,
    train_device,
)
from pipeline.data.datasets import DATASETS
from pipeline.distillation.losses import task_loss, teacher_loss
from pipeline.features.arrays import FeatureArrays
from pipeline.features.store import read_table, write_table
from pipeline.models.inference import batched_outputs
from pipeline.models.masks import modality_dropout, only_modality, set_feature_stats
from pipeline.models.teacher import PromptTeacher, TeacherConfig, save_teacher
from pipeline.tasks.base import Task
from pipeline.training.loop import fit

log = logging.getLogger(__name__)



def subset_name(modalities: tuple[str, ...] | list[str]) -> str:
    """`video+text`: a set of modalities in MODALITIES order, joined by "+"."""
    return "+".join(m for m in MODALITIES if m in modalities)


def modality_mask(modalities: tuple[str, ...]) -> torch.Tensor:
    """(3,) bool in MODALITIES order: True for the modalities in `modalities`."""
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of {list(MODALITIES)}, got {list(modalities)}")
    return torch.tensor([m in modalities for m in MODALITIES])


def restricted(data: FeatureArrays, modalities: tuple[str, ...]) -> FeatureArrays:
    """`data` with every modality outside `modalities` masked for every clip (the `self` teacher's inputs)."""
    return dataclasses.replace(data, present=data.present & modality_mask(modalities))


def predict(model: PromptTeacher, data: FeatureArrays, idx: torch.Tensor, keep: torch.Tensor | None = None,
            batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Teacher outputs (logits, reg) for clips `idx`; `keep` (3,) bool further masks modalities for all clips."""

    def inputs_of(rows: slice) -> dict[str, torch.Tensor]:
        batch = data.index(idx[rows])
        if keep is not None:
            batch["present"] = batch["present"] & keep  # (B, 3)
        return batch

    return batched_outputs(model, len(idx), inputs_of, ("logits", "reg"), batch_size)


def train_teacher(data: FeatureArrays, labels: torch.Tensor, splits: np.ndarray, params: TeacherParams,
                  seed: int, dataset: str, task: Task, name: str = TEACHER, *, identity: dict[str, str] | None = None
                  ) -> tuple[PromptTeacher, dict[str, float]]:
    """Build the teacher from the feature shapes and train it on the train split with modality dropout
    (resumable: `checkpoints/<ds>/<name>/seed_<s>.pt` holds the last training state of an interrupted run,
    resumed only with the same `identity`: core/identity.py `input_identity` of the files `data` came from).
    `data.present` says which modalities each clip has (restrict it for the `self` teacher)."""
    config = TeacherConfig(embed_dim=data.prompts.shape[1], audio_dim=data.audio.shape[2],
                           num_classes=len(data.classes), frames=data.video.shape[1],
                           audio_tokens=data.audio.shape[1], layers=params.layers, heads=params.heads,
                           dropout=params.dropout, prompt_alpha=params.prompt_alpha, mask=params.mask,
                           step1_hidden=params.step1_hidden, video_dim=0 if data.video_is_clip else data.video.shape[2])
    device = train_device(params.train.device)
    train_idx = torch.from_numpy(np.flatnonzero(splits == "train"))
    valid_idx = torch.from_numpy(np.flatnonzero(splits == "valid"))
    model = PromptTeacher(config, data.prompts)
    for m in ("video", "audio"):
        set_feature_stats(model, m, getattr(data, m)[train_idx], data.present[train_idx, MODALITIES.index(m)])
    model.to(device)

    def get_batch(i: torch.Tensor) -> dict[str, torch.Tensor]:
        j = train_idx[i]
        batch = data.index(j)
        batch["present"] = modality_dropout(batch["present"], params.modality_dropout)  # (B, 3)
        return {**{k: v.to(device) for k, v in batch.items()}, "y": labels[j].to(device)}

    def valid_mae(m: PromptTeacher) -> float:
        return task_loss(predict(m, data, valid_idx)["reg"], labels[valid_idx]).item()

    def valid_ce(m: PromptTeacher) -> float:  # phase 1 of two_phase (g is not trained yet); retrieval
        return ce_of(predict(m, data, valid_idx)["logits"], labels[valid_idx]).item()

    ce_of = task.class_loss

    def joint(m: PromptTeacher, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        y = b.pop("y")
        out = m(**b)
        return teacher_loss(out["logits"], out["reg"], y, params.ce_weight), {"l1": task_loss(out["reg"], y).item()}

    def classify(m: PromptTeacher, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        y = b.pop("y")
        return ce_of(m(**b)["logits"], y), {}

    def regress(m: PromptTeacher, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        y = b.pop("y")
        return task_loss(m(**b)["reg"], y), {}

    present = [m for i, m in enumerate(MODALITIES) if bool(data.present[:, i].any())]
    common = dict(n_train=len(train_idx), get_batch=get_batch, params=params.train, epochs=params.train.epochs,
                  seed=seed, fingerprint={"teacher": to_dict(params), "seed": seed, "n_train": len(train_idx),
                                          "dataset": dataset, "name": name, "modalities": present,
                                          **(identity or {})})
    curves, state = paths.curves(dataset, name, seed), paths.training_state(dataset, name, seed)
    desc = f"{name} seed {seed}"
    if task.teacher_output == "logits":  # a classifier of the dataset's classes: no regression head
        best = fit(model, model.classification_parameters(), loss_fn=classify, validate=valid_ce, valid_metric="ce",
                   curves=curves, state_path=state, desc=desc, **common)
    elif params.schedule == "joint":
        best = fit(model, model.parameters(), loss_fn=joint, validate=valid_mae, curves=curves, state_path=state,
                   desc=desc, **common)
    else:  # two_phase: classifier first (selected on validation CE), then g alone on the frozen logits
        fit(model, model.classification_parameters(), loss_fn=classify, validate=valid_ce, valid_metric="ce",
            curves=curves / "phase1", state_path=state.with_suffix(".phase1.pt"), desc=f"{desc} classify", **common)
        best = fit(model, model.step1.parameters(), loss_fn=regress, validate=valid_mae, curves=curves,
                   state_path=state, desc=f"{desc} regress", **common)
    return model.cpu(), best


def modality_predictions(model: PromptTeacher, data: FeatureArrays, full: dict[str, torch.Tensor],
                         labels: torch.Tensor, kind: str, task: Task) -> dict[str, np.ndarray]:
    """For each modality m: the output with only m kept (`reg_only_<m>`; retrieval `logits_only_<m>`), with m
    masked (`reg_without_<m>`, `logits_without_<m>`) and the saliency of m (`saliency_<m>`); `full` =
    predict() of every clip."""
    idx = torch.arange(len(data.ids))
    key = task.teacher_output
    out: dict[str, np.ndarray] = {}
    for m, name in enumerate(MODALITIES):
        only = only_modality(torch.ones(1, len(MODALITIES), dtype=torch.bool), m)[0]  # (3,)
        out[f"{key}_only_{name}"] = predict(model, data, idx, keep=only)[key].numpy()
        without = predict(model, data, idx, keep=~only)[key]
        out[f"{key}_without_{name}"] = without.numpy()
        out[f"saliency_{name}"] = task.saliency(full[key], without, labels, kind).numpy()
    return out


def subset_columns(available: list[str], key: str) -> dict[str, str]:
    """Every non-empty subset of the `available` modalities -> the stored column of the teacher's output given
    exactly that subset: the full output `key`, `<key>_only_<m>` or `<key>_without_<m>` (MODALITIES order)."""
    out: dict[str, str] = {}
    for size in range(len(available), 0, -1):
        for subset in itertools.combinations(available, size):
            name = subset_name(subset)
            if size == len(available):
                out[name] = key
            elif size == 1:
                out[name] = f"{key}_only_{subset[0]}"
            elif size == len(available) - 1:
                out[name] = f"{key}_without_{next(m for m in available if m not in subset)}"
    return out


def subset_metrics(columns: dict[str, np.ndarray], labels: np.ndarray, splits: np.ndarray, subsets: dict[str, str],
                   task: Task, metric_set: str) -> dict[str, dict[str, dict[str, float]]]:
    """The teacher's quality given each subset of its modalities (`subsets`: name -> column, see
    `subset_columns`): {subset: {split: metrics}} for the valid and test splits (`Task.teacher_metrics`)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, column in subsets.items():
        out[name] = {}
        for split in ("valid", "test"):
            rows = splits == split
            pred, y = np.asarray(columns[column], dtype=np.float64)[rows], labels[rows]
            out[name][split] = task.teacher_metrics(pred, y, metric_set)
    return out


def read_teacher_predictions(manifest: pd.DataFrame, preds_path: Path) -> dict[str, torch.Tensor]:
    """The teacher's outputs for every manifest clip, in manifest order: logits c (N, K) and saliency
    s_m (N, 3) in MODALITIES order; sentiment: reg r_T (N,) and reg_only r_T^m (N, 3); retrieval:
    logits_only c^m (N, 3, K). A `self` teacher's file has only logits and reg (saliency absent)."""
    columns, _ = read_table(preds_path, stage="teacher")
    row = pd.Series(np.arange(len(columns["id"])), index=columns["id"])
    missing = manifest.loc[~manifest["id"].isin(row.index), "id"].tolist()
    if missing:
        raise ValueError(f"{preds_path} has no prediction for {len(missing)} clips (e.g. {missing[:3]}): "
                         "rerun `dvc repro teacher`")
    order = row.loc[manifest["id"]].to_numpy()

    def take(*keys: str) -> torch.Tensor:
        arrays = [np.asarray(columns[k], dtype=np.float32)[order] for k in keys]
        return torch.from_numpy(arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=1))

    out = {"logits": take("logits")}
    if "reg" in columns:
        out["reg"] = take("reg")
    if "saliency_text" in columns:
        out["saliency"] = take(*(f"saliency_{m}" for m in MODALITIES))
        key = "reg" if "reg" in columns else "logits"
        out[f"{key}_only"] = take(*(f"{key}_only_{m}" for m in MODALITIES))  # (N, 3) or (N, 3, K)
    return out


def write_predictions(model: PromptTeacher, data: FeatureArrays, labels: torch.Tensor, splits: np.ndarray,
                      params: TeacherParams, seed: int, name: str, dataset: str, task: Task) -> None:
    """preds.h5 of one teacher and seed: outputs, and for the main teacher the modality-specific outputs,
    saliencies, population saliency and the metrics given each subset of modalities."""
    full = predict(model, data, torch.arange(len(data.ids)))
    columns: dict[str, np.ndarray] = {"logits": full["logits"].numpy(),
                                      **({"reg": full["reg"].numpy()} if task.teacher_output == "reg" else {})}
    config: dict[str, object] = {"teacher": to_dict(params), "seed": seed, "classes": data.classes, "task": task.name,
                                 "name": name}
    available = [m for i, m in enumerate(MODALITIES) if bool(data.present[:, i].any())]
    if name == TEACHER:
        columns.update(modality_predictions(model, data, full, labels, params.saliency, task))
        train = splits == "train"
        config["population_saliency"] = {m: float(columns[f"saliency_{m}"][train].mean()) for m in MODALITIES}
    subsets = (subset_columns(available, task.teacher_output) if name == TEACHER  # the control: its full output only
               else {subset_name(available): task.teacher_output})
    quality = subset_metrics(columns, labels.numpy().astype(np.float64), splits, subsets, task,
                             DATASETS.get(dataset).metric_set)
    config.update(modalities=available, subset_metrics=quality)
    write_table(paths.teacher_predictions(dataset, seed, name),
                {"id": data.ids, "split": splits.tolist(), "label": labels.numpy(), **columns}, config=config)
    primary = task.teacher_primary(DATASETS.get(dataset).metric_set)
    log.info("%s seed %d, test %s given %s", name, seed, primary,
             ", ".join(f"{s} {q['test'][primary]:.4f}" for s, q in quality.items()))
    if name == TEACHER:
        log.info("%s seed %d: population saliency %s", name, seed,
                 ", ".join(f"{m} {v:.3f}" for m, v in config["population_saliency"].items()))


def train_one_seed(data: FeatureArrays, labels: torch.Tensor, splits: np.ndarray, params: TeacherParams,
                   seed: int, dataset: str, task: Task, name: str = TEACHER, *, identity: dict[str, str] | None = None,
                   features: FeatureSettings | None = None) -> None:
    """Train, save and predict one teacher. Its checkpoint records the modalities it was trained with (those some
    clip of `data` has) and `features`, the settings `data` was extracted with (config.FeatureSettings), so that
    it can be run on new clips."""
    seed_everything(seed)
    model, best = train_teacher(data, labels, splits, params, seed, dataset, task, name, identity=identity)
    if not is_main_process():
        return
    ckpt = paths.teacher_checkpoint(dataset, seed, name)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    seen = [m for i, m in enumerate(MODALITIES) if bool(data.present[:, i].any())]  # what it can be given
    save_teacher(ckpt, model, {"params": to_dict(params), "seed": seed, "dataset": dataset, "name": name,
                               "classes": data.classes, "best": best, "modalities": seen,
                               **(features.record() if features else {})})
    write_predictions(model, data, labels, splits, params, seed, name, dataset, task)


def copy_teacher(dataset: str, seed: int) -> None:
    """teacher_self := teacher for one seed (model, predictions and curves), when the two are the same model."""
    pairs = [(paths.teacher_checkpoint(dataset, seed, n).parent, paths.curves(dataset, n, seed))
             for n in (TEACHER, SELF_TEACHER)]
    for source, target in zip(pairs[0], pairs[1], strict=True):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


def train_teachers(data: FeatureArrays, labels: torch.Tensor, splits: np.ndarray, params: TeacherParams, seed: int,
                   dataset: str, task: Task, *, identity: dict[str, str] | None = None,
                   features: FeatureSettings | None = None) -> None:
    """One seed of stage teacher: the teacher, then the `self` control restricted to `task.self_modalities`
    (a copy of the teacher when that is every modality the teacher sees). `identity`: the digests of the
    files `data` was read from, which a resumed checkpoint must share; `features`: the settings they were
    extracted with, recorded in both checkpoints."""
    available = tuple(m for i, m in enumerate(MODALITIES) if bool(data.present[:, i].any()))
    own = tuple(m for m in task.self_modalities if m in available)
    train_one_seed(data, labels, splits, params, seed, dataset, task, TEACHER, identity=identity, features=features)
    if own == available and is_main_process():  # the student sees all the teacher sees: same model
        log.info("%s: the `self` student sees every modality the teacher sees (%s): %s is a copy of %s",
                 dataset, subset_name(own), SELF_TEACHER, TEACHER)
        copy_teacher(dataset, seed)
    elif own != available:
        train_one_seed(restricted(data, own), labels, splits, params, seed, dataset, task, SELF_TEACHER,
                       identity=identity, features=features)
