"""Stage distill@<method>: train a text-only student, optionally distilled from the teacher.

Reads  data/prepared/<ds>/manifest.csv, models/<ds>/teacher_preds.h5
Writes models/<ds>/student_<method>/   HF save_pretrained dir (encoder + tokenizer),
                                       student_head.pt, student.json (config + provenance)
       dvclive/<ds>/student_<method>/  training curves

Command: python -m pipeline.distill <method>

Methods (distill.methods):
    none          L = |r_S - y|
    kd            L = |r_S - y| + alpha * T^2 KL(p_T^T || p_S^T)      (Hinton KD on the K bin logits)
    videoadviser  L = |r_S - y| + lambda * D(r_S, r_T)     (VideoAdviser step 2, losses.py)

The student sees only the transcript. With `distill.student.pretrained` empty it is a tiny
random RoBERTa with a byte-level BPE tokenizer trained on the train transcripts (offline);
otherwise tokenizer and encoder load with `from_pretrained` (hub id or local dir).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import paths
from .config import DistillParams, Registry, StudentParams, check_params, load_section, load_value, to_dict
from .datasets import read_manifest
from .losses import kd_loss, task_loss, videoadviser_loss
from .models import StudentConfig, TextStudent, save_student
from .runtime import resolve_device, seed_everything, setup_logging, stage
from .teacher import read_teacher_predictions
from .training import fit

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                  "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>"}


# --------------------------------------------------------------------------- student


def train_bpe_tokenizer(texts: list[str], vocab_size: int, max_length: int):
    """A RoBERTa-style byte-level BPE tokenizer trained on `texts` (offline default)."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    order = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's special-token ids 0..4
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=order, show_progress=False)
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=max_length, **SPECIAL_TOKENS)


def build_student(params: StudentParams, train_texts: list[str], num_classes: int) -> tuple[TextStudent, object]:
    """Tokenizer + student: pretrained via from_pretrained, or a tiny random RoBERTa."""
    from transformers import AutoModel, AutoTokenizer, RobertaConfig, RobertaModel

    config = StudentConfig(num_classes=num_classes, head_hidden=params.head_hidden, dropout=params.dropout,
                           max_length=params.max_length)
    if params.pretrained:
        tokenizer = AutoTokenizer.from_pretrained(params.pretrained)
        encoder = AutoModel.from_pretrained(params.pretrained)
        log.info("student encoder %s (%s)", params.pretrained, type(encoder).__name__)
    else:
        tokenizer = train_bpe_tokenizer(train_texts, params.vocab_size, params.max_length)
        encoder = RobertaModel(RobertaConfig(
            vocab_size=len(tokenizer), hidden_size=params.hidden_size, num_hidden_layers=params.layers,
            num_attention_heads=params.heads, intermediate_size=params.intermediate_size,
            max_position_embeddings=params.max_length + 2, type_vocab_size=1,
            hidden_dropout_prob=params.dropout, attention_probs_dropout_prob=params.dropout,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id))
        log.info("student encoder: tiny random RoBERTa (%d params), BPE vocab %d",
                 sum(p.numel() for p in encoder.parameters()), len(tokenizer))
    return TextStudent(encoder, config), tokenizer


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@torch.no_grad()
def predict_student(model: TextStudent, tokens: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
    """Regression outputs r_S (N,) for pre-tokenized texts."""
    model.eval()
    device = next(model.parameters()).device
    n = tokens["input_ids"].shape[0]
    outs = [model(**{k: v[i : i + batch_size].to(device) for k, v in tokens.items()})["reg"].cpu()
            for i in range(0, n, batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


# --------------------------------------------------------------------------- methods

Batch = dict[str, torch.Tensor]
MethodLoss = Callable[[dict[str, torch.Tensor], Batch, DistillParams], tuple[torch.Tensor, dict[str, float]]]
METHODS: Registry[MethodLoss] = Registry("distillation method")


@METHODS.register("none")
def _none(out: dict[str, torch.Tensor], batch: Batch, params: DistillParams) -> tuple[torch.Tensor, dict[str, float]]:
    return task_loss(out["reg"], batch["y"]), {}


@METHODS.register("kd")
def _kd(out: dict[str, torch.Tensor], batch: Batch, params: DistillParams) -> tuple[torch.Tensor, dict[str, float]]:
    task = task_loss(out["reg"], batch["y"])
    kd = kd_loss(out["logits"], batch["teacher_logits"], params.kd.temperature)
    return task + params.kd.weight * kd, {"task": task.item(), "distill": kd.item()}


@METHODS.register("videoadviser")
def _videoadviser(out: dict[str, torch.Tensor], batch: Batch,
                  params: DistillParams) -> tuple[torch.Tensor, dict[str, float]]:
    task = task_loss(out["reg"], batch["y"])
    kd = videoadviser_loss(out["reg"], batch["teacher_reg"], params.videoadviser.distance)
    return task + params.videoadviser.weight * kd, {"task": task.item(), "distill": kd.item()}


# --------------------------------------------------------------------------- stage


def train_student(method: str, manifest: pd.DataFrame, teacher: dict[str, torch.Tensor], params: DistillParams,
                  seed: int, curves: Path) -> tuple[TextStudent, object, dict[str, float]]:
    loss_of = METHODS.get(method)
    splits = manifest["split"].to_numpy()
    train_idx = torch.from_numpy(np.flatnonzero(splits == "train"))
    valid_idx = torch.from_numpy(np.flatnonzero(splits == "valid"))
    texts = manifest["text"].tolist()
    labels = torch.tensor(manifest["label"].to_numpy(), dtype=torch.float32)
    num_classes = teacher["logits"].shape[1]
    model, tokenizer = build_student(params.student, [texts[i] for i in train_idx], num_classes)
    device = resolve_device(params.train.device)
    model.to(device)
    tokens = tokenize(tokenizer, texts, params.student.max_length)
    valid_tokens = {k: v[valid_idx] for k, v in tokens.items()}

    def get_batch(i: torch.Tensor) -> Batch:
        j = train_idx[i]
        return {**{k: v[j].to(device) for k, v in tokens.items()}, "y": labels[j].to(device),
                "teacher_reg": teacher["reg"][j].to(device), "teacher_logits": teacher["logits"][j].to(device)}

    def loss_fn(m: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return loss_of(out, batch, params)

    def valid_mae(m: nn.Module) -> float:
        return task_loss(predict_student(m, valid_tokens, params.train.batch_size), labels[valid_idx]).item()

    best = fit(model, model.parameters(), n_train=len(train_idx), get_batch=get_batch, loss_fn=loss_fn,
               validate=valid_mae, params=params.train, epochs=params.train.epochs, seed=seed, curves=curves,
               desc=f"student_{method}")
    return model.cpu(), tokenizer, best


def run(method: str, dataset: str, params: DistillParams, seed: int) -> None:
    METHODS.get(method)  # unknown method: fail before any work
    out_dir = paths.student_dir(dataset, method)
    preds = paths.teacher_predictions(dataset)
    with stage(f"distill@{method}", [paths.manifest(dataset), preds], [out_dir]):
        manifest = read_manifest(paths.manifest(dataset))
        teacher = read_teacher_predictions(manifest, preds)
        model, tokenizer, best = train_student(method, manifest, teacher, params, seed,
                                               paths.curves(dataset, f"student_{method}"))
        save_student(out_dir, model, tokenizer, {"method": method, "params": to_dict(params), "seed": seed,
                                                 "dataset": dataset, "best": best})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", help=f"one of {METHODS.names()}")
    args = parser.parse_args(argv)
    setup_logging()
    check_params()
    seed = load_value("seed")
    seed_everything(seed)
    run(args.method, load_value("dataset"), load_section("distill"), seed)


if __name__ == "__main__":
    main()
