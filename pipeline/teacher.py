"""Stage teacher: train the CLIP prompt teacher and write its predictions for every clip.

Reads  data/prepared/<ds>/manifest.csv, data/features/<ds>/{video,audio,text}.h5
Writes models/<ds>/teacher/seed_<s>/teacher.pt  weights + the config that built them
       models/<ds>/teacher/seed_<s>/preds.h5    per clip: split, label, logits (K), reg (r_T),
                                                reg_only_<m> (only modality m kept), saliency_<m>
                                                (retrieval: logits_only_<m> (K) instead of reg, reg_only);
                                                attrs: population saliency per modality (train mean)
       dvclive/<ds>/teacher/seed_<s>/           training curves
for every seed in `seeds`.

Command: python -m pipeline.teacher
   or    torchrun --nproc-per-node N -m pipeline.teacher    (DDP; rank 0 writes)

Step 1 of VideoAdviser's step distillation lives here: classification logits over the K
sentiment bins -> regression logit r_T = g(c). Schedules: `joint` trains everything with
ce_weight * CE + L1; `two_phase` trains the classifier with CE, then freezes it and fits g
with L1 (each phase `train.epochs` epochs).

Modality-specific predictions and saliency (MSD, Jin et al. 2021): r_T^m is the teacher's
output with only modality m kept (the others masked as `teacher.mask` says), and the
saliency of m on a clip (`teacher.saliency`) is

    prediction:  s_m(x) = |r_T(x) - r_T(x without m)|          how much the output moves
    loss:        s_m(x) = |y - r_T(x without m)| - |y - r_T(x)|  how much the L1 loss rises (can be < 0)

The population saliency of m is the mean of s_m over the training clips.

Retrieval datasets (task `retrieval`, labels = class indices 0..K-1, the prompts are the class
names): the teacher is the same model classifying the clip from audio and video (no transcript:
text is masked everywhere), trained with CE(c, y) on its classification parameters and selected
on validation cross-entropy; g is not used. It stores logits_only_<m> (N, K), the logits with only
m kept, instead of reg_only_<m>, and its saliencies compare class distributions p = softmax(c):

    prediction:  s_m(x) = 1/2 sum_k |p_k(x) - p_k(x without m)|   total variation, in [0, 1]
    loss:        s_m(x) = CE(c(x without m), y) - CE(c(x), y)      rise of the cross-entropy (can be < 0)
"""

from __future__ import annotations

import argparse
import logging
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
from .models import MODALITIES, PromptTeacher, TeacherConfig, only_modality, save_teacher
from .runtime import is_main_process, process_group, seed_everything, setup_logging, stage, train_device
from .store import read_table, write_table
from .training import fit

log = logging.getLogger(__name__)


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
                  seed: int, dataset: str, task: str = "sentiment") -> tuple[PromptTeacher, dict[str, float]]:
    """Build the teacher from the feature shapes and train it on the train split (resumable:
    `checkpoints/<ds>/teacher/seed_<s>.pt` holds the last training state of an interrupted run)."""
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
        return {**{k: v.to(device) for k, v in data.index(j).items()}, "y": labels[j].to(device)}

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

    common = dict(n_train=len(train_idx), get_batch=get_batch, params=params.train, epochs=params.train.epochs,
                  seed=seed, fingerprint={"teacher": to_dict(params), "seed": seed, "n_train": len(train_idx),
                                          "dataset": dataset})
    curves, state = paths.curves(dataset, "teacher", seed), paths.training_state(dataset, "teacher", seed)
    if task == "retrieval":  # a classifier of the dataset's classes: no regression head
        best = fit(model, model.classification_parameters(), loss_fn=classify, validate=valid_ce, valid_metric="ce",
                   curves=curves, state_path=state, desc=f"teacher seed {seed}", **common)
    elif params.schedule == "joint":
        best = fit(model, model.parameters(), loss_fn=joint, validate=valid_mae, curves=curves, state_path=state,
                   desc=f"teacher seed {seed}", **common)
    else:  # two_phase: classifier first (selected on validation CE), then g alone on the frozen logits
        fit(model, model.classification_parameters(), loss_fn=classify, validate=valid_ce, valid_metric="ce",
            curves=curves / "phase1", state_path=state.with_suffix(".phase1.pt"),
            desc=f"teacher seed {seed} classify", **common)
        best = fit(model, model.step1.parameters(), loss_fn=regress, validate=valid_mae, curves=curves,
                   state_path=state, desc=f"teacher seed {seed} regress", **common)
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


def modality_predictions(model: PromptTeacher, data: FeatureArrays, full: dict[str, torch.Tensor],
                         labels: torch.Tensor, kind: str, task: str = "sentiment") -> dict[str, np.ndarray]:
    """The output with only m kept (`reg_only_<m>`; retrieval: `logits_only_<m>`) and the saliency of m
    (`saliency_<m>`), for each modality m; `full` = predict() of every clip."""
    idx = torch.arange(len(data.ids))
    key, prefix, score = (("logits", "logits_only", class_saliency) if task == "retrieval"
                          else ("reg", "reg_only", saliency))
    out: dict[str, np.ndarray] = {}
    for m, name in enumerate(MODALITIES):
        only = only_modality(torch.ones(1, len(MODALITIES), dtype=torch.bool), m)[0]  # (3,)
        out[f"{prefix}_{name}"] = predict(model, data, idx, keep=only)[key].numpy()
        without = predict(model, data, idx, keep=~only)[key]
        out[f"saliency_{name}"] = score(full[key], without, labels, kind).numpy()
    return out


def read_teacher_predictions(manifest: pd.DataFrame, preds_path: Path) -> dict[str, torch.Tensor]:
    """The teacher's outputs for every manifest clip, in manifest order: logits c (N, K) and saliency
    s_m (N, 3) in MODALITIES order; sentiment: reg r_T (N,) and reg_only r_T^m (N, 3); retrieval:
    logits_only c^m (N, 3, K)."""
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

    out = {"logits": take("logits"), "saliency": take(*(f"saliency_{m}" for m in MODALITIES))}
    if "reg" in columns:
        out.update(reg=take("reg"), reg_only=take(*(f"reg_only_{m}" for m in MODALITIES)))
    else:
        out["logits_only"] = take(*(f"logits_only_{m}" for m in MODALITIES))  # (N, 3, K)
    return out


def train_one_seed(data: FeatureArrays, labels: torch.Tensor, splits: np.ndarray, params: TeacherParams,
                   seed: int, dataset: str, task: str = "sentiment") -> None:
    seed_everything(seed)
    model, best = train_teacher(data, labels, splits, params, seed, dataset, task)
    if not is_main_process():
        return
    ckpt, preds_path = paths.teacher_checkpoint(dataset, seed), paths.teacher_predictions(dataset, seed)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_teacher(ckpt, model, {"params": to_dict(params), "seed": seed, "dataset": dataset,
                               "classes": data.classes, "best": best})
    full = predict(model, data, torch.arange(len(data.ids)))
    per_modality = modality_predictions(model, data, full, labels, params.saliency, task)
    train = splits == "train"
    population = {m: float(per_modality[f"saliency_{m}"][train].mean()) for m in MODALITIES}
    outputs = {"logits": full["logits"].numpy(), **({} if task == "retrieval" else {"reg": full["reg"].numpy()})}
    write_table(preds_path, {"id": data.ids, "split": splits.tolist(), "label": labels.numpy(), **outputs,
                             **per_modality},
                config={"teacher": to_dict(params), "seed": seed, "classes": data.classes, "task": task,
                        "population_saliency": population})
    test = torch.from_numpy(splits == "test")
    if task == "retrieval":
        score = f"test accuracy {(full['logits'][test].argmax(-1) == labels[test].long()).float().mean().item():.4f}"
    else:
        score = f"test MAE {task_loss(full['reg'][test], labels[test]).item():.4f}"
    log.info("teacher seed %d: %s (best epoch %d: %s); population saliency %s", seed, score, best["epoch"],
             ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k != "epoch"),
             ", ".join(f"{m} {v:.3f}" for m, v in population.items()))


def run(dataset: str, params: TeacherParams, clip: ClipParams, extract: ExtractParams, seeds: list[int]) -> None:
    manifest = read_manifest(paths.manifest(dataset))
    with stage("teacher", [paths.manifest(dataset), *feature_files(dataset)], [paths.teacher_dir(dataset)]):
        data = load_features(manifest, dataset, clip, extract, params.video_tokens, params.audio_tokens)
        labels = torch.tensor(manifest["label"].to_numpy(), dtype=torch.float32)
        splits = manifest["split"].to_numpy()
        task = DATASETS.get(dataset).task
        for seed in seeds:
            train_one_seed(data, labels, splits, params, seed, dataset, task)


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
