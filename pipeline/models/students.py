"""The multimodal students (text-only and late-fusion): HF encoder + heads, tokenizer, save/load.

The text student (text only at inference) is any HF AutoModel encoder whose first token's hidden
state goes through an MLP to the regression output r_S and through a linear layer to K logits; the
multimodal student adds small encoders over the cached video and audio features and fuses the three
pooled vectors late (so MSD has several modalities).

A saved student (`save_student`) is a directory: the encoder as HF `save_pretrained` writes it
(config.json, model.safetensors), the tokenizer (tokenizer.json), the heads' weights (`STUDENT_HEAD`,
read weights-only) and their config with the provenance (`STUDENT_CONFIG`, JSON). Nothing in it runs
code when read (core/checkpoints.py: files from other people never run code when read).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from tokenizers import ByteLevelBPETokenizer
from tokenizers.processors import RobertaProcessing
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerFast, RobertaConfig, RobertaModel
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_NAME

from pipeline.core.checkpoints import UnsafeCheckpoint, check_plain, load_checkpoint, save_checkpoint, student_fix
from pipeline.core.config import MODALITIES, ConfigError, StudentParams
from pipeline.core.errors import MissingInput
from pipeline.core.registry import Registry
from pipeline.features.arrays import FeatureArrays
from pipeline.models.inference import batched_outputs
from pipeline.models.pretrained import ENCODER_FIX, KEY, check_pretrained, encoder_problem, pretrained_source

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    num_classes: int  # K
    head_hidden: int
    dropout: float
    max_length: int  # tokens of the transcript
    kind: str = "text"  # text | multimodal
    video_dim: int = 0  # multimodal only: CLIP embedding size D
    audio_dim: int = 0  # multimodal only: n_mels
    video_tokens: int = 0
    audio_tokens: int = 0


class TextStudent(nn.Module):
    """HF encoder over the transcript; first-token pooling -> regression + K logits."""

    modalities: tuple[str, ...] = ("text",)

    def __init__(self, encoder: nn.Module, config: StudentConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config
        hidden = encoder.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(hidden, config.head_hidden), nn.GELU(),
                                  nn.Dropout(config.dropout), nn.Linear(config.head_hidden, 1))
        self.classifier = nn.Linear(hidden, config.num_classes)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        return hidden[:, 0]  # (B, H): <s> / [CLS]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **unused: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask (B, L) -> reg (B,), logits (B, K). Other inputs (features) are ignored."""
        pooled = self.encode_text(input_ids, attention_mask)  # (B, H)
        return {"reg": self.head(pooled).squeeze(-1), "logits": self.classifier(pooled)}


class MultimodalStudent(TextStudent):
    """A small late-fusion student over the transcript and the cached video and audio features.

        t = W_t h_<s>(transcript)                       the text encoder's first token, projected to H
        v = mean_f GELU(W_v LN(v_f))                    over the F pooled CLIP frame embeddings
        a = mean_j GELU(W_a (mel_j - mu) / sigma)       over the A pooled log-mel frames
        [v; a; t] -> MLP -> r_S,   Linear -> K logits

    A modality absent for a clip (or held out for MSD's S(x_m)) is replaced by a learned mask
    vector, as in the teacher, so the student can be run with any subset of its modalities.
    """

    modalities: tuple[str, ...] = MODALITIES

    def __init__(self, encoder: nn.Module, config: StudentConfig) -> None:
        nn.Module.__init__(self)
        if config.kind != "multimodal" or min(config.video_dim, config.audio_dim) <= 0:
            raise ValueError(f"MultimodalStudent needs kind=multimodal and feature sizes, got {config}")
        self.encoder = encoder
        self.config = config
        h = config.head_hidden
        self.register_buffer("audio_mean", torch.zeros(config.audio_dim))
        self.register_buffer("audio_std", torch.ones(config.audio_dim))
        self.text_proj = nn.Linear(encoder.config.hidden_size, h)
        self.video_proj = nn.Sequential(nn.LayerNorm(config.video_dim), nn.Linear(config.video_dim, h), nn.GELU())
        self.audio_proj = nn.Sequential(nn.Linear(config.audio_dim, h), nn.GELU())
        self.mask_tokens = nn.Parameter(torch.zeros(len(MODALITIES), h))
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(3 * h, h), nn.GELU(),
                                  nn.Dropout(config.dropout), nn.Linear(h, 1))
        self.classifier = nn.Linear(3 * h, config.num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, video: torch.Tensor,
                audio: torch.Tensor, present: torch.Tensor, **unused: torch.Tensor) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask (B, L), video (B, F, D), audio (B, A, n_mels), present (B, 3) bool
        -> reg (B,), logits (B, K). With present (P, B, 3), P masking patterns of the same clips, the
        encoders run once and the outputs are (P, B) and (P, B, K): MSD's S(x_m) for every m in one forward."""
        t = self.text_proj(self.encode_text(input_ids, attention_mask))  # (B, H)
        v = self.video_proj(video).mean(dim=1)  # (B, H)
        a = self.audio_proj((audio - self.audio_mean) / self.audio_std).mean(dim=1)  # (B, H)
        pooled = torch.stack([v, a, t], dim=1)  # (B, 3, H), MODALITIES order
        pooled = torch.where(present.unsqueeze(-1), pooled, self.mask_tokens.expand_as(pooled))  # ([P,] B, 3, H)
        flat = pooled.flatten(-2)  # ([P,] B, 3H)
        return {"reg": self.head(flat).squeeze(-1), "logits": self.classifier(flat)}



STUDENTS: Registry[type[TextStudent]] = Registry("student kind")
STUDENTS.add("text", TextStudent)
STUDENTS.add("multimodal", MultimodalStudent)


STUDENT_HEAD = "student_head.pt"


STUDENT_CONFIG = "student.json"


def save_student(out_dir: Path, model: TextStudent, tokenizer: Any, extra: dict[str, Any]) -> None:
    """HF `save_pretrained` dir for encoder (model.safetensors) + tokenizer (tokenizer.json), plus the heads
    (`STUDENT_HEAD`, weights-only) and their config with the provenance `extra` (`STUDENT_CONFIG`, JSON)."""
    check_plain(extra, "save_student extra")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    heads = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    save_checkpoint(heads, out_dir / STUDENT_HEAD)
    (out_dir / STUDENT_CONFIG).write_text(json.dumps({"config": dataclasses.asdict(model.config), **extra},
                                                     indent=2, sort_keys=True))


def load_student(model_dir: Path) -> tuple[TextStudent, Any, dict[str, Any]]:
    """Rebuild a saved student (text or multimodal) from its directory (not from today's params).

    Nothing in the directory runs code when read: the encoder loads from safetensors only, the tokenizer
    from tokenizer.json, the heads weights-only, no custom code is trusted (core/checkpoints.py)."""

    if not (model_dir / STUDENT_CONFIG).is_file():
        raise MissingInput(f"{model_dir} is not a student directory (no {STUDENT_CONFIG}): "
                                "run `dvc repro distill`")
    meta = json.loads((model_dir / STUDENT_CONFIG).read_text())
    config = StudentConfig(**meta["config"])
    encoder = _load_encoder(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    model = STUDENTS.get(config.kind)(encoder, config)
    heads = load_checkpoint(model_dir / STUDENT_HEAD, student_fix(model_dir))
    missing, unexpected = model.load_state_dict(heads, strict=False)
    missing = [k for k in missing if not k.startswith("encoder.")]
    if missing or unexpected:
        raise RuntimeError(f"{model_dir / STUDENT_HEAD} does not match the student: missing {missing}, "
                           f"unexpected {unexpected}")
    model.eval()
    return model, tokenizer, meta


def _load_encoder(model_dir: Path) -> nn.Module:
    """The student's HF encoder, from the safetensors `save_student` wrote; a directory whose encoder is
    only a pickle (pytorch_model.bin) is refused (`UnsafeCheckpoint`), never unpickled."""
    if not any((model_dir / name).is_file() for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)):
        fix = student_fix(model_dir)
        if (model_dir / WEIGHTS_NAME).is_file():
            raise UnsafeCheckpoint(f"{model_dir} holds its encoder as {WEIGHTS_NAME}, pickled Python objects that "
                                   f"mmdistill will not unpickle (unpickling could run code), and no "
                                   f"{SAFE_WEIGHTS_NAME}; {fix}")
        raise MissingInput(f"{model_dir} has no {SAFE_WEIGHTS_NAME} (the student's encoder): {fix}")
    return AutoModel.from_pretrained(model_dir, local_files_only=True, use_safetensors=True, trust_remote_code=False)


SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                  "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>"}


def train_bpe_tokenizer(texts: list[str], vocab_size: int, max_length: int):
    """A RoBERTa-style byte-level BPE tokenizer trained on `texts` (offline default)."""
    bpe = ByteLevelBPETokenizer()
    order = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's special-token ids 0..4
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=order, show_progress=False)
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=max_length, **SPECIAL_TOKENS)


def load_pretrained(value: str, **model_kwargs: Any) -> tuple[Any, nn.Module]:
    """Tokenizer and encoder of `distill.student.pretrained` (a save_pretrained folder or a hub id).

    `check_pretrained` first (no download); a path is loaded with local_files_only, as is a hub id in offline
    mode, so neither waits on a hub it cannot reach; a hub id comes from the cache `check_pretrained` read.
    The config is checked before the weights load, which covers a hub id seen for the first time here
    (online, `check_pretrained` accepts any well-formed id); one the hub does not serve is a ConfigError
    that also says how to write a local folder (`models/x` with no models/ folder reads as a hub id).
    A tokenizer without a pad token gets the model's own `pad_token_id` (the id the encoder was trained to
    ignore; RoBERTa also numbers positions from it, so GPT-2's pad = eos convention would shift them);
    with none in the config either, a ConfigError."""
    check_pretrained(value)
    source, hub = pretrained_source(value)
    try:
        config = AutoConfig.from_pretrained(source, **hub)
    except OSError as err:  # a hub id the hub did not serve (a path was checked above)
        if hub["local_files_only"]:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{KEY} {value!r} could not be loaded from the HF hub ({first}); if it is a local "
                          f"folder, it does not exist from {Path.cwd()}: give an absolute path or ./{value}") from err
    problem = encoder_problem(config.to_dict())
    if problem:
        raise ConfigError(f"{KEY} {value!r}: {problem}; {ENCODER_FIX}")
    tokenizer = AutoTokenizer.from_pretrained(source, **hub)
    if tokenizer.pad_token is None:
        pad_id = getattr(config, "pad_token_id", None)
        if not isinstance(pad_id, int) or not 0 <= pad_id < len(tokenizer):
            raise ConfigError(f"{KEY} {value!r}: its tokenizer has no pad token and its config.json no usable "
                              f"pad_token_id ({pad_id}), so transcripts cannot be batched; save a tokenizer with a "
                              "pad token (tokenizer.pad_token = ...; tokenizer.save_pretrained(dir))")
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
        log.info("%s: tokenizer has no pad token; using the config's pad_token_id %d (%r)", value, pad_id,
                 tokenizer.pad_token)
    encoder = AutoModel.from_pretrained(source, **hub, **model_kwargs)
    return tokenizer, encoder


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
        tokenizer, encoder = load_pretrained(params.pretrained, **attention)
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
    return STUDENTS.get(kind)(encoder, config), tokenizer


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
    n = inputs["input_ids"].shape[0]
    return batched_outputs(model, n, lambda rows: {k: v[rows] for k, v in inputs.items()}, ("reg",), batch_size)["reg"]
