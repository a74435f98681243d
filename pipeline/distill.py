"""Stage distill@<student>: train one student, optionally distilled from a teacher, once per seed.

Reads  data/prepared/<ds>/manifest.csv, models/<ds>/teacher/seed_<s>/preds.h5 (`va-self`:
       models/<ds>/teacher_self/seed_<s>/preds.h5), data/features/<ds>/{video,audio,text}.h5
       (multimodal and retrieval students)
Writes models/<ds>/student_<student>/seed_<s>/  HF save_pretrained dir (encoder + tokenizer),
                                                student_head.pt, student.json (config + provenance);
                                                retrieval: retrieval_student.pt
       dvclive/<ds>/student_<student>/seed_<s>/ training curves
for every seed in `seeds`; the student of seed s learns from the teacher of seed s.

Command: python -m pipeline.distill <student>          e.g. va-videoadviser, msd-learned
   or    torchrun --nproc-per-node N -m pipeline.distill <student>    (DDP; rank 0 writes)

A student is `<family>-<method>` (families.py): the `va` family trains the text-only student
(VideoAdviser's setting), the `msd` family the multimodal one (MSD's setting). Every student is
selected on the validation split (`train.patience` stops early). Methods, with y the label, r the
regression output, c the K bin logits:
    none            L = |r_S - y|
    kd              L = |r_S - y| + alpha T^2 KL(p_T^T || p_S^T)          Hinton KD on the bin logits
    videoadviser    L = |r_S - y| + lambda D(r_S, r_T)                    VideoAdviser step 2
    self            the same loss with r_T from the `self` control teacher (teacher.py: it saw only
                    what the student sees), so `videoadviser - self` isolates the multimodal knowledge
    msd-<weighting> L = |r_S - y| + alpha KD(c_S, c_T) + sum_m w_m D(S(x_m), r_T^m)
                    MSD (Jin et al. 2021), weighting uniform | population | instance | learned
(formulas and sources: losses.py, msd.py). `msd-learned` fits its weights on a meta set carved from
the training split (or the validation split: `distill.msd.meta_split`, `meta_fraction`), never the
clips the epoch is selected on; its meta step runs once per optimizer step from the training loop's
step hook, on the whole batch, so `train.grad_accum` does not change it.

Retrieval datasets (task `retrieval`; DESIGN.md "Retrieval task (VEGAS)"): both families' student is
retrieval.RetrievalStudent, an audio branch over the cached log-mel and a visual branch over the
cached CLIP frames (pooled to `student.audio_tokens` / `student.video_tokens`, then averaged), into
a common space with a shared classifier, saved as models/<ds>/student_<student>/seed_<s>/retrieval_student.pt
and selected on validation mAP. With c_a, c_v its branches' logits, c_T the teacher's, c_T^m the
teacher's with only modality m kept and L_ret = retrieval.retrieval_loss (`distill.retrieval`):
    none            L = L_ret
    kd              L = L_ret + alpha KD_T(c_a, c_v; c_T)                  branch_kd_loss (mean over branches)
    videoadviser    L = L_ret + lambda 1/2 sum_b D(z(c_b), z(c_T))         the teacher's logits as regression
                    targets, both standardised per clip (losses.logit_regression_loss: the teacher's
                    logits carry CLIP's scale, up to 100; standardising makes the target scale-free)
    self            the same from teacher_self (on retrieval the same model as the teacher)
    msd-<weighting> L = L_ret + alpha KD_T(c_a, c_v; c_T) + sum_{m in (video, audio)} w_m KD_T(c^m, c_T^m)
                    branch m (visual for video) mimics the teacher given m alone (losses.msd_kd_loss);
                    w from the teacher's class saliencies, as for sentiment (msd.py)

Text encoder: with `distill.student.pretrained` empty, a tiny random RoBERTa with a byte-level BPE
tokenizer trained on the train transcripts (offline); otherwise tokenizer and encoder load with
`from_pretrained` (hub id or local dir). The multimodal student also sees the cached video and audio
features, and S(x_m) is its output with the other modalities masked.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import torch
from tokenizers import ByteLevelBPETokenizer
from tokenizers.processors import RobertaProcessing
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerFast, RobertaConfig, RobertaModel

from . import paths
from .config import (
    ClipParams,
    DistillParams,
    ExtractParams,
    MSDParams,
    Registry,
    StudentParams,
    check_params,
    load_section,
    load_value,
    to_dict,
)
from .datasets import DATASETS, read_manifest
from .families import MSD_PREFIX, Student, parse_student
from .families import WEIGHTINGS as WEIGHTING_NAMES
from .features import FeatureArrays, load_features
from .losses import kd_loss, logit_regression_loss, msd_kd_loss, msd_loss, task_loss, videoadviser_loss
from .models import MODALITIES, STUDENTS, StudentConfig, TextStudent, only_modality, save_student
from .msd import MetaWeights, Weighting, build_weighting, functional_forward, student_columns
from .retrieval import (
    RetrievalStudent,
    RetrievalStudentConfig,
    branch_kd_loss,
    retrieval_loss,
    retrieval_metrics,
    save_retrieval_student,
)
from .runtime import (
    is_main_process,
    process_group,
    run_seeds,
    seed_everything,
    setup_logging,
    stage,
    train_device,
)
from .teacher import SELF_TEACHER, TEACHER, read_teacher_predictions
from .training import StepHook, fit

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                  "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>"}
META_SEED_OFFSET = 7919  # the meta set's draw: seeded apart from the training seed's other draws

Batch = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- student


def train_bpe_tokenizer(texts: list[str], vocab_size: int, max_length: int):
    """A RoBERTa-style byte-level BPE tokenizer trained on `texts` (offline default)."""
    bpe = ByteLevelBPETokenizer()
    order = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's special-token ids 0..4
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=order, show_progress=False)
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=max_length, **SPECIAL_TOKENS)


def build_student(params: StudentParams, kind: str, train_texts: list[str], num_classes: int,
                  features: FeatureArrays | None = None, second_order: bool = False) -> tuple[TextStudent, object]:
    """Tokenizer + student of `kind` (text | multimodal): text encoder via from_pretrained, or a tiny random
    RoBERTa. A multimodal student takes its feature sizes from `features`. `second_order` (msd-learned's
    look-ahead differentiates through a gradient) selects the eager attention, since the fused CPU attention
    kernels have no double backward."""
    config = StudentConfig(num_classes=num_classes, head_hidden=params.head_hidden, dropout=params.dropout,
                           max_length=params.max_length, kind=kind)
    if kind == "multimodal":
        if features is None:
            raise ValueError("a multimodal student needs the cached features")
        config = dataclasses.replace(config, video_dim=features.video.shape[2], audio_dim=features.audio.shape[2],
                                     video_tokens=features.video.shape[1], audio_tokens=features.audio.shape[1])
    attention = {"attn_implementation": "eager"} if second_order else {}
    if params.pretrained:
        tokenizer = AutoTokenizer.from_pretrained(params.pretrained)
        encoder = AutoModel.from_pretrained(params.pretrained, **attention)
        log.info("student encoder %s (%s)", params.pretrained, type(encoder).__name__)
    else:
        tokenizer = train_bpe_tokenizer(train_texts, params.vocab_size, params.max_length)
        encoder = RobertaModel(RobertaConfig(
            vocab_size=len(tokenizer), hidden_size=params.hidden_size, num_hidden_layers=params.layers,
            num_attention_heads=params.heads, intermediate_size=params.intermediate_size,
            max_position_embeddings=params.max_length + 2, type_vocab_size=1,
            hidden_dropout_prob=params.dropout, attention_probs_dropout_prob=params.dropout,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, **attention))
        log.info("student encoder: tiny random RoBERTa (%d params), BPE vocab %d",
                 sum(p.numel() for p in encoder.parameters()), len(tokenizer))
    return STUDENTS[kind](encoder, config), tokenizer


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def student_inputs(tokens: dict[str, torch.Tensor], features: FeatureArrays | None) -> dict[str, torch.Tensor]:
    """Every input a student may take, one row per clip: tokens, and the cached features if any."""
    if features is None:
        return dict(tokens)
    return {**tokens, "video": features.video, "audio": features.audio, "present": features.present}


@torch.no_grad()
def predict_student(model: TextStudent, inputs: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
    """Regression outputs r_S (N,) for the rows of `inputs` (see `student_inputs`)."""
    model.eval()
    device = next(model.parameters()).device
    n = inputs["input_ids"].shape[0]
    outs = [model(**{k: v[i : i + batch_size].to(device) for k, v in inputs.items()})["reg"].cpu()
            for i in range(0, n, batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def forward_with_modalities(model: Callable[..., Batch], inputs: Batch,
                            modalities: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The student's outputs on the full input and S(x_m) for each modality m it sees, (B, M_S).

    A text-only student sees one modality, so S(x_text) = S(x) is its ordinary output. A
    multimodal student runs once with 1 + M_S masking patterns (present (1 + M_S, B, 3): the clip's
    own, then every modality but the k-th masked): its encoders run once, and DDP sees one forward.
    """
    if modalities == ("text",):
        out = model(**inputs)
        return out, out["reg"].unsqueeze(1)  # (B, 1)
    present = inputs["present"]  # (B, 3)
    patterns = torch.stack([present, *(only_modality(present, MODALITIES.index(m)) for m in modalities)])
    out = model(**{**inputs, "present": patterns})  # reg (1 + M_S, B), logits (1 + M_S, B, K)
    return {"reg": out["reg"][0], "logits": out["logits"][0]}, out["reg"][1:].T  # (B,), (B, K), (B, M_S)


# --------------------------------------------------------------------------- methods

MethodLoss = Callable[[dict[str, torch.Tensor], Batch, DistillParams], tuple[torch.Tensor, dict[str, float]]]
METHODS: Registry[MethodLoss] = Registry("distillation method")  # sentiment: text and multimodal students
RETRIEVAL_METHODS: Registry[MethodLoss] = Registry("distillation method (retrieval)")
METHOD_TEACHER = {"self": SELF_TEACHER}  # the teacher whose predictions a method reads; default TEACHER


@METHODS.register("none")
def _none(out: dict[str, torch.Tensor], batch: Batch, params: DistillParams) -> tuple[torch.Tensor, dict[str, float]]:
    return task_loss(out["reg"], batch["y"]), {}


@METHODS.register("kd")
def _kd(out: dict[str, torch.Tensor], batch: Batch, params: DistillParams) -> tuple[torch.Tensor, dict[str, float]]:
    task = task_loss(out["reg"], batch["y"])
    kd = kd_loss(out["logits"], batch["teacher_logits"], params.kd.temperature)
    return task + params.kd.weight * kd, {"task": task.item(), "distill": kd.item()}


def _videoadviser(out: dict[str, torch.Tensor], batch: Batch,
                  params: DistillParams) -> tuple[torch.Tensor, dict[str, float]]:
    task = task_loss(out["reg"], batch["y"])
    kd = videoadviser_loss(out["reg"], batch["teacher_reg"], params.videoadviser.distance)
    return task + params.videoadviser.weight * kd, {"task": task.item(), "distill": kd.item()}


METHODS.add("videoadviser", _videoadviser)
METHODS.add("self", _videoadviser)  # exactly VideoAdviser's step 2; only the teacher differs (METHOD_TEACHER)


def _msd(out: dict[str, torch.Tensor], batch: Batch, params: DistillParams) -> tuple[torch.Tensor, dict[str, float]]:
    """out["mod"] (B, M_S) = S(x_m); batch["teacher_mod"] (B, M_S) = r_T^m; batch["weights"] (B, M_S) = w_m(x)."""
    task = task_loss(out["reg"], batch["y"])
    kd = kd_loss(out["logits"], batch["teacher_logits"], params.msd.temperature)
    aux = msd_loss(out["mod"], batch["teacher_mod"], batch["weights"], params.msd.distance)
    return task + params.msd.kd_weight * kd + aux, {"task": task.item(), "distill": kd.item(), "msd": aux.item()}


def _retrieval_task(out: dict[str, torch.Tensor], batch: Batch, params: DistillParams) -> dict[str, torch.Tensor]:
    r = params.retrieval
    return retrieval_loss(out, batch["y"].long(), r.objective, margin=r.margin, temperature=r.temperature,
                          ce_weight=r.ce_weight)


RETRIEVAL_MODALITIES = ("video", "audio")  # the student's branches, in the teacher's modality names
BRANCH_LOGITS = {"video": "visual_logits", "audio": "audio_logits"}
RETRIEVAL_CHECKPOINT = "retrieval_student.pt"  # in paths.student_dir


def _branches(out: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [out[BRANCH_LOGITS[m]] for m in RETRIEVAL_MODALITIES]


@RETRIEVAL_METHODS.register("none")
def _retrieval_none(out: dict[str, torch.Tensor], batch: Batch,
                    params: DistillParams) -> tuple[torch.Tensor, dict[str, float]]:
    task = _retrieval_task(out, batch, params)
    return task["loss"], {"metric": task["metric"].item(), "ce": task["ce"].item()}


@RETRIEVAL_METHODS.register("kd")
def _retrieval_kd(out: dict[str, torch.Tensor], batch: Batch,
                  params: DistillParams) -> tuple[torch.Tensor, dict[str, float]]:
    task = _retrieval_task(out, batch, params)
    kd = branch_kd_loss(_branches(out), batch["teacher_logits"], params.kd.temperature)
    return task["loss"] + params.kd.weight * kd, {"task": task["loss"].item(), "distill": kd.item()}


def _retrieval_videoadviser(out: dict[str, torch.Tensor], batch: Batch,
                            params: DistillParams) -> tuple[torch.Tensor, dict[str, float]]:
    task = _retrieval_task(out, batch, params)
    va = sum(logit_regression_loss(c, batch["teacher_logits"], params.videoadviser.distance)
             for c in _branches(out)) / len(RETRIEVAL_MODALITIES)
    return task["loss"] + params.videoadviser.weight * va, {"task": task["loss"].item(), "distill": va.item()}


RETRIEVAL_METHODS.add("videoadviser", _retrieval_videoadviser)
RETRIEVAL_METHODS.add("self", _retrieval_videoadviser)


def _retrieval_msd(out: dict[str, torch.Tensor], batch: Batch,
                   params: DistillParams) -> tuple[torch.Tensor, dict[str, float]]:
    """batch["teacher_mod"] (B, 2, K) = c_T^m and batch["weights"] (B, 2) = w_m(x), RETRIEVAL_MODALITIES order."""
    task = _retrieval_task(out, batch, params)
    kd = branch_kd_loss(_branches(out), batch["teacher_logits"], params.msd.temperature)
    aux = msd_kd_loss(torch.stack(_branches(out), dim=1), batch["teacher_mod"], batch["weights"],
                      params.msd.temperature)
    return (task["loss"] + params.msd.kd_weight * kd + aux,
            {"task": task["loss"].item(), "distill": kd.item(), "msd": aux.item()})


for _weighting in WEIGHTING_NAMES:
    METHODS.add(MSD_PREFIX + _weighting, _msd)
    RETRIEVAL_METHODS.add(MSD_PREFIX + _weighting, _retrieval_msd)


def msd_weighting(method: str) -> str | None:
    """`population` for `msd-population`; None for a method without modality-specific terms."""
    return method[len(MSD_PREFIX):] if method.startswith(MSD_PREFIX) else None


# --------------------------------------------------------------------------- MSD weights and the meta step


@dataclasses.dataclass
class LearnedState:
    """What `msd-learned` adds to a resumable training state: the weights' logits phi and the
    generator that draws the meta batch of each look-ahead step."""

    meta: MetaWeights
    meta_draw: torch.Generator

    def state_dict(self) -> dict:
        return {"meta": self.meta.state_dict(), "meta_draw": self.meta_draw.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.meta.load_state_dict(state["meta"])
        self.meta_draw.set_state(state["meta_draw"])


def carve_meta_set(train_idx: torch.Tensor, valid_idx: torch.Tensor, params: MSDParams,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, selection, meta) clip indices for `msd-learned`: `meta_fraction` of the `meta_split` split,
    drawn with the seed, is the meta set and leaves that split, so the weights are never fitted on the
    clips the epoch is selected on (nor, with meta_split=train, on clips the student trains on)."""
    source = train_idx if params.meta_split == "train" else valid_idx
    order = source[torch.randperm(len(source), generator=torch.Generator().manual_seed(seed + META_SEED_OFFSET))]
    n_meta = max(1, round(params.meta_fraction * len(source)))
    meta, rest = order[:n_meta].sort().values, order[n_meta:].sort().values
    if len(rest) == 0:
        raise ValueError(f"distill.msd.meta_fraction={params.meta_fraction} leaves no {params.meta_split} clip out "
                         f"of {len(source)} outside the meta set: lower it")
    return (rest, valid_idx, meta) if params.meta_split == "train" else (train_idx, rest, meta)


def msd_weights(method: str, teacher: dict[str, torch.Tensor], train_idx: torch.Tensor, params: DistillParams,
                seed: int) -> tuple[Weighting | None, LearnedState | None]:
    """The MSD weighting of a method (None without one), built from the teacher's saliency on the training
    clips, and, for `learned`, its resumable state."""
    weighting = msd_weighting(method)
    if weighting is None:
        return None, None
    weights = build_weighting(weighting, teacher["saliency"][train_idx],
                              instance_temperature=params.msd.instance_temperature, meta_lr=params.msd.meta_lr,
                              lookahead_lr=params.train.lr)
    if not isinstance(weights, MetaWeights):
        return weights, None
    return weights, LearnedState(weights, torch.Generator().manual_seed(seed + 1))


MethodCall = Callable[[Callable[..., Batch], Batch, torch.Tensor | None], tuple[torch.Tensor, dict[str, float]]]


def msd_loss_fn(method_loss: MethodCall, weights: Weighting | None,
                modalities: tuple[str, ...]) -> Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]:
    """`fit`'s loss_fn for a student: method_loss(net, batch, w) with w the MSD weights of the student's
    `modalities` (None for a method without them, detached); every MSD method logs the mean weight of
    each teacher modality (w_<m>)."""
    if weights is None:
        return lambda m, batch: method_loss(m, batch, None)

    def loss_fn(m: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        w = weights(batch["saliency"])  # (M_T,) or (B, M_T)
        w = w.expand(len(batch["y"]), -1) if w.dim() == 1 else w  # (B, M_T)
        loss, more = method_loss(m, batch, student_columns(w, modalities))
        return loss, {**more, **{f"w_{name}": w[:, k].mean().item() for k, name in enumerate(MODALITIES)}}

    return loss_fn


def meta_step_hook(state: LearnedState | None, method_loss: MethodCall, get_batch: Callable[[torch.Tensor], Batch],
                   meta_batch: Callable[[torch.Generator], Batch],
                   valid_loss: Callable[[Callable[..., Batch], Batch], torch.Tensor],
                   modalities: tuple[str, ...]) -> StepHook | None:
    """`fit`'s step hook for `msd-learned` (None otherwise): once per optimizer step, one look-ahead meta step
    on the weights (msd.MetaWeights.step) with the training loss of the step's whole batch (this rank's
    shard) and `valid_loss` on a meta batch; logs meta/train_loss, meta/valid_loss, meta/phi_grad_norm."""
    if state is None:
        return None

    def hook(model: nn.Module, shard: torch.Tensor) -> dict[str, float]:
        batch, mb = get_batch(shard), meta_batch(state.meta_draw)
        parts = state.meta.step(
            model, train_loss=lambda p, w: method_loss(lambda **x: functional_forward(model, p, **x), batch,
                                                       student_columns(w, modalities))[0],
            valid_loss=lambda p: valid_loss(lambda **x: functional_forward(model, p, **x), mb))
        return {f"meta/{k}": v for k, v in parts.items() if not k.startswith("w_")}

    return hook


# --------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class Splits:
    """Clip indices (manifest rows) a student trains on, is selected on, and (msd-learned) meta-learns on."""

    train: torch.Tensor
    valid: torch.Tensor
    meta: torch.Tensor | None

    @staticmethod
    def of(splits: np.ndarray, method: str, params: DistillParams, seed: int) -> Splits:
        train = torch.from_numpy(np.flatnonzero(splits == "train"))
        valid = torch.from_numpy(np.flatnonzero(splits == "valid"))
        if msd_weighting(method) != "learned":
            return Splits(train, valid, None)
        return Splits(*carve_meta_set(train, valid, params.msd, seed))


def _draw(idx: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    return idx[torch.randperm(len(idx), generator=generator)[:size]]


def train_student(student: Student, texts: list[str], labels: torch.Tensor, splits: np.ndarray,
                  teacher: dict[str, torch.Tensor], features: FeatureArrays | None, params: DistillParams,
                  seed: int, dataset: str) -> tuple[TextStudent, object, dict[str, float]]:
    """Train one text or multimodal student on the train split, selecting the epoch on validation MAE.

    texts, labels, splits, teacher outputs and features: one row per manifest clip."""
    method = student.method
    loss_of = METHODS.get(method)
    split = Splits.of(splits, method, params, seed)
    model, tokenizer = build_student(params.student, student.kind("sentiment"), [texts[i] for i in split.train],
                                     teacher["logits"].shape[1], features, second_order=split.meta is not None)
    if features is not None:
        model.set_audio_stats(features.audio[split.train], features.present[split.train, MODALITIES.index("audio")])
    inputs = student_inputs(tokenize(tokenizer, texts, params.student.max_length), features)
    device = train_device(params.train.device)
    model.to(device)
    modalities = model.modalities
    weights, learned = msd_weights(method, teacher, split.train, params, seed)

    def get_batch(i: torch.Tensor) -> Batch:
        j = split.train[i]
        batch = {**{k: v[j] for k, v in inputs.items()}, "y": labels[j], "teacher_logits": teacher["logits"][j]}
        if "reg" in teacher:
            batch["teacher_reg"] = teacher["reg"][j]
        if weights is not None:
            batch.update(teacher_mod=student_columns(teacher["reg_only"][j], modalities),
                         saliency=teacher["saliency"][j])
        return {k: v.to(device) for k, v in batch.items()}

    def model_inputs(batch: Batch) -> Batch:
        return {k: batch[k] for k in inputs}

    def method_loss(m: Callable[..., Batch], batch: Batch, w: torch.Tensor | None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        if w is None:
            return loss_of(m(**model_inputs(batch)), batch, params)
        out, mod = forward_with_modalities(m, model_inputs(batch), modalities)
        return loss_of({**out, "mod": mod}, {**batch, "weights": w}, params)

    def meta_batch(generator: torch.Generator) -> Batch:
        j = _draw(split.meta, generator, params.train.batch_size)
        return {**{k: v[j].to(device) for k, v in inputs.items()}, "y": labels[j].to(device)}

    def valid_loss(net: Callable[..., Batch], vb: Batch) -> torch.Tensor:
        return task_loss(net(**model_inputs(vb))["reg"], vb["y"])

    valid_inputs = {k: v[split.valid] for k, v in inputs.items()}

    def valid_mae(m: nn.Module) -> float:
        return task_loss(predict_student(m, valid_inputs, params.train.batch_size), labels[split.valid]).item()

    fingerprint = {"student": student.name, "distill": to_dict(params), "seed": seed, "dataset": dataset,
                   "n_train": len(split.train)}
    best = fit(model, model.parameters(), n_train=len(split.train), get_batch=get_batch,
               loss_fn=msd_loss_fn(method_loss, weights, modalities), validate=valid_mae, params=params.train,
               epochs=params.train.epochs, seed=seed, curves=paths.curves(dataset, f"student_{student.name}", seed),
               desc=f"student_{student.name} seed {seed}",
               state_path=paths.training_state(dataset, f"student_{student.name}", seed), fingerprint=fingerprint,
               extra_state=learned,
               step_hook=meta_step_hook(learned, method_loss, get_batch, meta_batch, valid_loss, modalities))
    return model.cpu(), tokenizer, {**best, **_meta_summary(split, learned)}


def _meta_summary(split: Splits, learned: LearnedState | None) -> dict[str, float]:
    """What student.json records of `msd-learned`: the meta set's size and the final weights."""
    if learned is None:
        return {}
    return {"n_meta": len(split.meta), **{f"w_{m}": float(w) for m, w in zip(learned.meta.names,
                                                                            learned.meta.weights(), strict=True)}}


def build_retrieval_student(params: DistillParams, features: FeatureArrays, num_classes: int) -> RetrievalStudent:
    r = params.retrieval
    return RetrievalStudent(RetrievalStudentConfig(
        audio_dim=features.audio.shape[2], visual_dim=features.video.shape[2], embed_dim=r.embed_dim,
        hidden_dim=r.hidden_dim, num_classes=num_classes, dropout=r.dropout))


@torch.no_grad()
def retrieval_embeddings(model: RetrievalStudent, audio: torch.Tensor, visual: torch.Tensor,
                         batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio (N, E), visual (N, E)) embeddings on the CPU, in eval mode, batch by batch."""
    model.eval()
    device = next(model.parameters()).device
    outs = [model(audio=a.to(device), visual=v.to(device)) for a, v in
            zip(audio.split(batch_size), visual.split(batch_size), strict=True)]
    return (torch.cat([o["audio_emb"] for o in outs]).cpu(), torch.cat([o["visual_emb"] for o in outs]).cpu())


def train_retrieval_student(student: Student, labels: torch.Tensor, splits: np.ndarray,
                            teacher: dict[str, torch.Tensor], features: FeatureArrays, params: DistillParams,
                            seed: int, dataset: str) -> tuple[RetrievalStudent, dict[str, float]]:
    """Train one two-branch retrieval student on the train split, selecting the epoch on validation mAP
    (map_mean, audio <-> visual over the validation clips)."""
    method = student.method
    loss_of = RETRIEVAL_METHODS.get(method)
    split = Splits.of(splits, method, params, seed)
    model = build_retrieval_student(params, features, teacher["logits"].shape[1])
    device = train_device(params.train.device)
    model.to(device)
    weights, learned = msd_weights(method, teacher, split.train, params, seed)
    mod_index = [MODALITIES.index(m) for m in RETRIEVAL_MODALITIES]
    inputs = {"audio": features.audio, "visual": features.video}

    def get_batch(i: torch.Tensor) -> Batch:
        j = split.train[i]
        batch = {"audio": inputs["audio"][j], "visual": inputs["visual"][j], "y": labels[j],
                 "teacher_logits": teacher["logits"][j]}
        if weights is not None:
            batch.update(teacher_mod=teacher["logits_only"][j][:, mod_index], saliency=teacher["saliency"][j])
        return {k: v.to(device) for k, v in batch.items()}

    def method_loss(m: Callable[..., Batch], batch: Batch, w: torch.Tensor | None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        out = m(audio=batch["audio"], visual=batch["visual"])
        return loss_of(out, batch if w is None else {**batch, "weights": w}, params)

    def meta_batch(generator: torch.Generator) -> Batch:
        j = _draw(split.meta, generator, params.train.batch_size)
        return {"audio": inputs["audio"][j].to(device), "visual": inputs["visual"][j].to(device),
                "y": labels[j].to(device)}

    def valid_loss(net: Callable[..., Batch], vb: Batch) -> torch.Tensor:
        return _retrieval_task(net(audio=vb["audio"], visual=vb["visual"]), vb, params)["loss"]

    def valid_map(m: nn.Module) -> float:
        audio, visual = retrieval_embeddings(m, inputs["audio"][split.valid], inputs["visual"][split.valid],
                                             params.train.batch_size)
        present = features.present[split.valid]  # clips without a modality are neither its queries nor its items
        return retrieval_metrics(audio, visual, labels[split.valid].long(),
                                 audio_present=present[:, MODALITIES.index("audio")].numpy(),
                                 visual_present=present[:, MODALITIES.index("video")].numpy())[0]["map_mean"]

    fingerprint = {"student": student.name, "distill": to_dict(params), "seed": seed, "dataset": dataset,
                   "n_train": len(split.train), "task": "retrieval"}
    best = fit(model, model.parameters(), n_train=len(split.train), get_batch=get_batch,
               loss_fn=msd_loss_fn(method_loss, weights, RETRIEVAL_MODALITIES), validate=valid_map,
               params=params.train, epochs=params.train.epochs, seed=seed,
               curves=paths.curves(dataset, f"student_{student.name}", seed),
               desc=f"student_{student.name} seed {seed}", valid_metric="map", maximize=True,
               state_path=paths.training_state(dataset, f"student_{student.name}", seed), fingerprint=fingerprint,
               extra_state=learned,
               step_hook=meta_step_hook(learned, method_loss, get_batch, meta_batch, valid_loss,
                                        RETRIEVAL_MODALITIES))
    return model.cpu(), {**best, **_meta_summary(split, learned)}


# --------------------------------------------------------------------------- stage


def teacher_of(method: str) -> str:
    """The teacher whose predictions `method` distils: `teacher`, or `teacher_self` for the `self` control."""
    return METHOD_TEACHER.get(method, TEACHER)


def run(name: str, dataset: str, params: DistillParams, seeds: list[int], clip: ClipParams,
        extract: ExtractParams) -> None:
    student = parse_student(name)  # unknown student: fail before any work
    task = DATASETS.get(dataset).task
    (RETRIEVAL_METHODS if task == "retrieval" else METHODS).get(student.method)
    kind = student.kind(task)
    preds = {s: paths.teacher_predictions(dataset, s, teacher_of(student.method)) for s in seeds}
    with stage(f"distill@{name}", [paths.manifest(dataset), *preds.values()], [paths.student_root(dataset, name)]):
        manifest = read_manifest(paths.manifest(dataset))
        texts = manifest["text"].tolist()
        features = (load_features(manifest, dataset, clip, extract, params.student.video_tokens,
                                  params.student.audio_tokens) if kind != "text" else None)
        splits = manifest["split"].to_numpy()
        labels = torch.tensor(manifest["label"].to_numpy(), dtype=torch.float32)

        def train(seed: int) -> None:
            seed_everything(seed)
            teacher = read_teacher_predictions(manifest, preds[seed])
            provenance = {"student": name, "family": student.family.name, "method": student.method,
                          "teacher": teacher_of(student.method), "params": to_dict(params), "seed": seed,
                          "dataset": dataset}
            if kind == "retrieval":
                model, best = train_retrieval_student(student, labels, splits, teacher, features, params, seed,
                                                      dataset)
                if is_main_process():
                    save_retrieval_student(paths.student_dir(dataset, name, seed) / RETRIEVAL_CHECKPOINT, model,
                                           {**provenance, "classes": features.classes, "best": best,
                                            "video_tokens": params.student.video_tokens,
                                            "audio_tokens": params.student.audio_tokens})
                return
            model, tokenizer, best = train_student(student, texts, labels, splits, teacher, features, params, seed,
                                                   dataset)
            if is_main_process():
                save_student(paths.student_dir(dataset, name, seed), model, tokenizer, {**provenance, "best": best})

        run_seeds(train, seeds, params.train.device, per_core=2)  # tiny students: two processes per core


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("student", help="<family>-<method>, e.g. va-videoadviser (families.py)")
    args = parser.parse_args(argv)
    setup_logging()
    check_params()
    with process_group():
        run(args.student, load_value("dataset"), load_section("distill"), load_value("seeds"), load_section("clip"),
            load_section("extract"))


if __name__ == "__main__":
    main()
