"""Stage teacher: train the CLIP prompt teacher and write its predictions for every clip.

Reads  data/prepared/<ds>/manifest.csv, data/features/<ds>/{video,audio,text}.h5
Writes models/<ds>/teacher.pt          weights + the config that built them
       models/<ds>/teacher_preds.h5    per clip: split, label, logits (K), reg (r_T),
                                       reg_only_<m> (only modality m kept), saliency_<m>
       dvclive/<ds>/teacher/           training curves

Command: python -m pipeline.teacher

Step 1 of VideoAdviser's step distillation lives here: classification logits over the K
sentiment bins -> regression logit r_T = g(c). Schedules: `joint` trains everything with
ce_weight * CE + L1; `two_phase` trains the classifier with CE, then freezes it and fits g
with L1 (each phase `train.epochs` epochs).

Modality-specific predictions and saliency (MSD, Jin et al. 2021): r_T^m is the teacher's
output with only modality m kept (the others masked as `teacher.mask` says), and the
saliency of m on a clip is s_m = |r_T(x) - r_T(x without m)|.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import paths
from .config import ClipParams, ExtractParams, TeacherParams, check_params, load_section, load_value, to_dict
from .datasets import read_manifest
from .features import FeatureArrays, feature_files, load_features
from .losses import classification_loss, task_loss, teacher_loss
from .models import MODALITIES, PromptTeacher, TeacherConfig, save_teacher
from .runtime import resolve_device, seed_everything, setup_logging, stage
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
            batch["present"] = batch["present"] & keep.to(device)
        out = model(**batch)
        outs["logits"].append(out["logits"].cpu())
        outs["reg"].append(out["reg"].cpu())
    return {k: torch.cat(v) for k, v in outs.items()}


def train_teacher(data: FeatureArrays, labels: torch.Tensor, splits: np.ndarray, params: TeacherParams,
                  seed: int, dataset: str) -> tuple[PromptTeacher, dict[str, float]]:
    """Build the teacher from the feature shapes and train it on the train split."""
    config = TeacherConfig(embed_dim=data.text.shape[1], audio_dim=data.audio.shape[2],
                           num_classes=len(data.classes), frames=data.video.shape[1],
                           audio_tokens=data.audio.shape[1], layers=params.layers, heads=params.heads,
                           dropout=params.dropout, prompt_alpha=params.prompt_alpha, mask=params.mask,
                           step1_hidden=params.step1_hidden)
    device = resolve_device(params.train.device)
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

    def valid_ce(m: PromptTeacher) -> float:  # phase 1 of two_phase: g is not trained yet
        return classification_loss(predict(m, data, valid_idx)["logits"], labels[valid_idx]).item()

    def joint(m: PromptTeacher, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        y = b.pop("y")
        out = m(**b)
        return teacher_loss(out["logits"], out["reg"], y, params.ce_weight), {"l1": task_loss(out["reg"], y).item()}

    def classify(m: PromptTeacher, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        y = b.pop("y")
        return classification_loss(m(**b)["logits"], y), {}

    def regress(m: PromptTeacher, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        y = b.pop("y")
        return task_loss(m(**b)["reg"], y), {}

    common = dict(n_train=len(train_idx), get_batch=get_batch, params=params.train, epochs=params.train.epochs,
                  seed=seed)
    if params.schedule == "joint":
        best = fit(model, model.parameters(), loss_fn=joint, validate=valid_mae,
                   curves=paths.curves(dataset, "teacher"), desc="teacher", **common)
    else:  # two_phase: classifier first (selected on validation CE), then g alone on the frozen logits
        fit(model, model.classification_parameters(), loss_fn=classify, validate=valid_ce, valid_metric="ce",
            curves=paths.curves(dataset, "teacher") / "phase1", desc="teacher/classify", **common)
        trainable = {name: p.requires_grad for name, p in model.named_parameters()}
        model.requires_grad_(False)
        model.step1.requires_grad_(True)
        best = fit(model, model.step1.parameters(), loss_fn=regress, validate=valid_mae,
                   curves=paths.curves(dataset, "teacher"), desc="teacher/regress", **common)
        for name, p in model.named_parameters():
            p.requires_grad_(trainable[name])
    return model.cpu(), best


def modality_predictions(model: PromptTeacher, data: FeatureArrays, full_reg: torch.Tensor) -> dict[str, np.ndarray]:
    """r_T with only m kept, and saliency |r_T(x) - r_T(x without m)|, for each modality m."""
    idx = torch.arange(len(data.ids))
    out: dict[str, np.ndarray] = {}
    for m, name in enumerate(MODALITIES):
        only = torch.zeros(len(MODALITIES), dtype=torch.bool)
        only[m] = True
        out[f"reg_only_{name}"] = predict(model, data, idx, keep=only)["reg"].numpy()
        without = predict(model, data, idx, keep=~only)["reg"]
        out[f"saliency_{name}"] = (full_reg - without).abs().numpy()
    return out


def read_teacher_predictions(manifest: pd.DataFrame, preds_path: Path) -> dict[str, torch.Tensor]:
    """The teacher's regression logit r_T (N,) and logits c (N, K) for every manifest clip, in manifest order."""
    columns, _ = read_table(preds_path, stage="teacher")
    row = pd.Series(np.arange(len(columns["id"])), index=columns["id"])
    missing = manifest.loc[~manifest["id"].isin(row.index), "id"].tolist()
    if missing:
        raise ValueError(f"{preds_path} has no prediction for {len(missing)} clips (e.g. {missing[:3]}): "
                         "rerun `dvc repro teacher`")
    order = row.loc[manifest["id"]].to_numpy()
    return {"reg": torch.from_numpy(np.asarray(columns["reg"], dtype=np.float32)[order]),
            "logits": torch.from_numpy(np.asarray(columns["logits"], dtype=np.float32)[order])}


def run(dataset: str, params: TeacherParams, clip: ClipParams, extract: ExtractParams, seed: int) -> None:
    manifest = read_manifest(paths.manifest(dataset))
    ckpt, preds_path = paths.teacher_checkpoint(dataset), paths.teacher_predictions(dataset)
    with stage("teacher", [paths.manifest(dataset), *feature_files(dataset)], [ckpt, preds_path]):
        data = load_features(manifest, dataset, clip, extract, params.video_tokens, params.audio_tokens)
        labels = torch.tensor(manifest["label"].to_numpy(), dtype=torch.float32)
        splits = manifest["split"].to_numpy()
        model, best = train_teacher(data, labels, splits, params, seed, dataset)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        save_teacher(ckpt, model, {"params": to_dict(params), "seed": seed, "dataset": dataset,
                                   "classes": data.classes, "best": best})
        full = predict(model, data, torch.arange(len(data.ids)))
        write_table(preds_path, {"id": data.ids, "split": splits.tolist(), "label": labels.numpy(),
                                 "logits": full["logits"].numpy(), "reg": full["reg"].numpy(),
                                 **modality_predictions(model, data, full["reg"])},
                    config={"teacher": to_dict(params), "seed": seed, "classes": data.classes})
        test = torch.from_numpy(splits == "test")
        log.info("teacher test MAE %.4f (valid %.4f at epoch %d)", task_loss(full["reg"][test], labels[test]).item(),
                 best["valid_mae"], best["epoch"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    setup_logging()
    check_params()
    seed = load_value("seed")
    seed_everything(seed)
    run(load_value("dataset"), load_section("teacher"), load_section("clip"), load_section("extract"), seed)


if __name__ == "__main__":
    main()
