"""Stage teacher: train the CLIP prompt teacher (and its text-only control) and write their predictions.

Reads  data/prepared/<ds>/manifest.csv, data/features/<ds>/{video,audio,text}.h5
Writes models/<ds>/teacher/seed_<s>/teacher.pt    weights + the config that built them
       models/<ds>/teacher/seed_<s>/preds.h5      per clip: split, label, logits (K), reg (r_T),
                                                  reg_only_<m> / reg_without_<m> (only m kept / m masked),
                                                  saliency_<m> (retrieval: logits_only_<m>, logits_without_<m>
                                                  (K) instead of reg_*); attrs: population saliency per
                                                  modality (train mean) and the teacher's metrics given
                                                  each subset of its modalities (`subset_metrics`)
       models/<ds>/teacher_self/seed_<s>/         the same for the `self` control teacher (below)
       dvclive/<ds>/{teacher,teacher_self}/seed_<s>/   training curves
for every seed in `seeds`.

Command: python -m pipeline.teacher
   or    torchrun --nproc-per-node N -m pipeline.teacher    (DDP; rank 0 writes)

Step 1 of VideoAdviser's step distillation lives here: classification logits over the K
sentiment bins -> regression logit r_T = g(c). Schedules: `joint` trains everything with
ce_weight * CE + L1; `two_phase` trains the classifier with CE, then freezes it and fits g
with L1 (each phase `train.epochs` epochs at most; `train.patience` stops either early).

**Modality dropout** (`teacher.modality_dropout` = p): every training batch masks each of a
clip's present modalities independently with probability p, keeping at least one
(models.modality_dropout). The outputs stored below are outputs on masked inputs, so the
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

import argparse
import dataclasses
import itertools
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import paths
from .config import ClipParams, ExtractParams, TeacherParams, check_params, load_section, load_value, to_dict
from .datasets import DATASETS, read_manifest
from .features import FeatureArrays, feature_files, load_features
from .losses import classification_loss, task_loss, teacher_loss
from .metrics import METRIC_SETS
from .models import MODALITIES, PromptTeacher, TeacherConfig, modality_dropout, only_modality, save_teacher
from .runtime import (
    is_main_process,
    process_group,
    run_seeds,
    seed_everything,
    setup_logging,
    stage,
    train_device,
)
from .store import read_table, write_table
from .training import fit

log = logging.getLogger(__name__)

TEACHER, SELF_TEACHER = "teacher", "teacher_self"
SELF_MODALITIES = {"sentiment": ("text",), "retrieval": ("video", "audio")}  # what the `self` student's teacher sees


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


@torch.no_grad()
def predict(model: PromptTeacher, data: FeatureArrays, idx: torch.Tensor, keep: torch.Tensor | None = None,
            batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Teacher outputs for clips `idx`; `keep` (3,) bool further masks modalities for all clips."""
    model.eval()
    device = next(model.parameters()).device
    outs: dict[str, list[torch.Tensor]] = {"logits": [], "reg": []}
    for chunk in idx.split(batch_size):
        batch = {k: v.to(device) for k, v in data.index(chunk).items()}
        if keep is not None:
            batch["present"] = batch["present"] & keep.to(device)  # (B, 3)
        out = model(**batch)
        outs["logits"].append(out["logits"].cpu())
        outs["reg"].append(out["reg"].cpu())
    return {k: torch.cat(v) for k, v in outs.items()}


def train_teacher(data: FeatureArrays, labels: torch.Tensor, splits: np.ndarray, params: TeacherParams,
                  seed: int, dataset: str, task: str = "sentiment",
                  name: str = TEACHER) -> tuple[PromptTeacher, dict[str, float]]:
    """Build the teacher from the feature shapes and train it on the train split with modality dropout
    (resumable: `checkpoints/<ds>/<name>/seed_<s>.pt` holds the last training state of an interrupted run).
    `data.present` says which modalities each clip has (restrict it for the `self` teacher)."""
    config = TeacherConfig(embed_dim=data.text.shape[1], audio_dim=data.audio.shape[2],
                           num_classes=len(data.classes), frames=data.video.shape[1],
                           audio_tokens=data.audio.shape[1], layers=params.layers, heads=params.heads,
                           dropout=params.dropout, prompt_alpha=params.prompt_alpha, mask=params.mask,
                           step1_hidden=params.step1_hidden)
    device = train_device(params.train.device)
    train_idx = torch.from_numpy(np.flatnonzero(splits == "train"))
    valid_idx = torch.from_numpy(np.flatnonzero(splits == "valid"))
    model = PromptTeacher(config, data.prompts)
    model.set_audio_stats(data.audio[train_idx], data.present[train_idx, MODALITIES.index("audio")])
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

    ce_of = class_loss if task == "retrieval" else classification_loss

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
                                          "dataset": dataset, "name": name, "modalities": present})
    curves, state = paths.curves(dataset, name, seed), paths.training_state(dataset, name, seed)
    desc = f"{name} seed {seed}"
    if task == "retrieval":  # a classifier of the dataset's classes: no regression head
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


def class_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE(c, y) with y the class index (retrieval datasets; stored as float in the label tensor)."""
    return F.cross_entropy(logits, y.long())


def saliency(full: torch.Tensor, without: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Saliency of a modality per clip from r_T(x) and r_T(x without m) (module docstring)."""
    if kind == "prediction":
        return (full - without).abs()
    return (labels - without).abs() - (labels - full).abs()


def class_saliency(full: torch.Tensor, without: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Saliency per clip from the logits c(x) and c(x without m), (N, K) each (module docstring)."""
    if kind == "prediction":
        return 0.5 * (full.softmax(-1) - without.softmax(-1)).abs().sum(-1)  # total variation, (N,)
    y = labels.long()
    return F.cross_entropy(without, y, reduction="none") - F.cross_entropy(full, y, reduction="none")


def output_key(task: str) -> str:
    """The stored output a task's subsets are read from: `reg` (sentiment) or `logits` (retrieval)."""
    return "logits" if task == "retrieval" else "reg"


def modality_predictions(model: PromptTeacher, data: FeatureArrays, full: dict[str, torch.Tensor],
                         labels: torch.Tensor, kind: str, task: str = "sentiment") -> dict[str, np.ndarray]:
    """For each modality m: the output with only m kept (`reg_only_<m>`; retrieval `logits_only_<m>`), with m
    masked (`reg_without_<m>`, `logits_without_<m>`) and the saliency of m (`saliency_<m>`); `full` =
    predict() of every clip."""
    idx = torch.arange(len(data.ids))
    key = output_key(task)
    score = class_saliency if task == "retrieval" else saliency
    out: dict[str, np.ndarray] = {}
    for m, name in enumerate(MODALITIES):
        only = only_modality(torch.ones(1, len(MODALITIES), dtype=torch.bool), m)[0]  # (3,)
        out[f"{key}_only_{name}"] = predict(model, data, idx, keep=only)[key].numpy()
        without = predict(model, data, idx, keep=~only)[key]
        out[f"{key}_without_{name}"] = without.numpy()
        out[f"saliency_{name}"] = score(full[key], without, labels, kind).numpy()
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
                   task: str, metric_set: str) -> dict[str, dict[str, dict[str, float]]]:
    """The teacher's quality given each subset of its modalities (`subsets`: name -> column, see
    `subset_columns`): {subset: {split: metrics}} for the valid and test splits; sentiment: the dataset's
    metric set on r_T; retrieval: accuracy `acc` and cross-entropy `ce` of the class logits."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, column in subsets.items():
        out[name] = {}
        for split in ("valid", "test"):
            rows = splits == split
            pred, y = np.asarray(columns[column], dtype=np.float64)[rows], labels[rows]
            if task == "retrieval":
                logits = torch.from_numpy(pred)
                out[name][split] = {"acc": float((pred.argmax(-1) == y).mean()),
                                    "ce": float(F.cross_entropy(logits, torch.from_numpy(y).long()))}
            else:
                out[name][split] = METRIC_SETS.get(metric_set).compute(pred, y)
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
                      params: TeacherParams, seed: int, name: str, dataset: str, task: str) -> None:
    """preds.h5 of one teacher and seed: outputs, and for the main teacher the modality-specific outputs,
    saliencies, population saliency and the metrics given each subset of modalities."""
    full = predict(model, data, torch.arange(len(data.ids)))
    columns: dict[str, np.ndarray] = {"logits": full["logits"].numpy(),
                                      **({} if task == "retrieval" else {"reg": full["reg"].numpy()})}
    config: dict[str, object] = {"teacher": to_dict(params), "seed": seed, "classes": data.classes, "task": task,
                                 "name": name}
    available = [m for i, m in enumerate(MODALITIES) if bool(data.present[:, i].any())]
    if name == TEACHER:
        columns.update(modality_predictions(model, data, full, labels, params.saliency, task))
        train = splits == "train"
        config["population_saliency"] = {m: float(columns[f"saliency_{m}"][train].mean()) for m in MODALITIES}
    subsets = (subset_columns(available, output_key(task)) if name == TEACHER  # the control: its full output only
               else {subset_name(available): output_key(task)})
    quality = subset_metrics(columns, labels.numpy().astype(np.float64), splits, subsets, task,
                             DATASETS.get(dataset).metric_set)
    config.update(modalities=available, subset_metrics=quality)
    write_table(paths.teacher_predictions(dataset, seed, name),
                {"id": data.ids, "split": splits.tolist(), "label": labels.numpy(), **columns}, config=config)
    primary = "acc" if task == "retrieval" else METRIC_SETS.get(DATASETS.get(dataset).metric_set).primary
    log.info("%s seed %d, test %s given %s", name, seed, primary,
             ", ".join(f"{s} {q['test'][primary]:.4f}" for s, q in quality.items()))
    if name == TEACHER:
        log.info("%s seed %d: population saliency %s", name, seed,
                 ", ".join(f"{m} {v:.3f}" for m, v in config["population_saliency"].items()))


def train_one_seed(data: FeatureArrays, labels: torch.Tensor, splits: np.ndarray, params: TeacherParams,
                   seed: int, dataset: str, task: str = "sentiment", name: str = TEACHER) -> None:
    seed_everything(seed)
    model, best = train_teacher(data, labels, splits, params, seed, dataset, task, name)
    if not is_main_process():
        return
    ckpt = paths.teacher_checkpoint(dataset, seed, name)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_teacher(ckpt, model, {"params": to_dict(params), "seed": seed, "dataset": dataset, "name": name,
                               "classes": data.classes, "best": best})
    write_predictions(model, data, labels, splits, params, seed, name, dataset, task)


def copy_teacher(dataset: str, seed: int) -> None:
    """teacher_self := teacher for one seed (model, predictions and curves), when the two are the same model."""
    pairs = [(paths.teacher_checkpoint(dataset, seed, n).parent, paths.curves(dataset, n, seed))
             for n in (TEACHER, SELF_TEACHER)]
    for source, target in zip(pairs[0], pairs[1], strict=True):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


def run(dataset: str, params: TeacherParams, clip: ClipParams, extract: ExtractParams, seeds: list[int]) -> None:
    manifest = read_manifest(paths.manifest(dataset))
    outputs = [paths.teacher_dir(dataset, n) for n in (TEACHER, SELF_TEACHER)]
    with stage("teacher", [paths.manifest(dataset), *feature_files(dataset)], outputs):
        data = load_features(manifest, dataset, clip, extract, params.video_tokens, params.audio_tokens)
        labels = torch.tensor(manifest["label"].to_numpy(), dtype=torch.float32)
        splits = manifest["split"].to_numpy()
        task = DATASETS.get(dataset).task
        available = tuple(m for i, m in enumerate(MODALITIES) if bool(data.present[:, i].any()))
        own = tuple(m for m in SELF_MODALITIES[task] if m in available)

        def both(seed: int) -> None:
            train_one_seed(data, labels, splits, params, seed, dataset, task, TEACHER)
            if own == available and is_main_process():  # the student sees all the teacher sees: same model
                log.info("%s: the `self` student sees every modality the teacher sees (%s): %s is a copy of %s",
                         dataset, subset_name(own), SELF_TEACHER, TEACHER)
                copy_teacher(dataset, seed)
            elif own != available:
                train_one_seed(restricted(data, own), labels, splits, params, seed, dataset, task, SELF_TEACHER)

        run_seeds(both, seeds, params.train.device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    setup_logging()
    check_params()
    with process_group():
        run(load_value("dataset"), load_section("teacher"), load_section("clip"), load_section("extract"),
            load_value("seeds"))


if __name__ == "__main__":
    main()
