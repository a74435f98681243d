"""The CLIP prompt teacher (the students are in models/students.py and models/retrieval_student.py).

Teacher (VideoAdviser's multimodal teacher, DESIGN.md "Teacher"): over frozen CLIP frame
embeddings v_1..v_F, log-mel audio frames, the CLIP transcript embedding e_t and the K
CLIP class-prompt embeddings P_k,

    video tokens, v      = TemporalEncoder(V(v_1..v_F))            (CLIP4Clip seqTransf)
    audio tokens, a      = TemporalEncoder(W_a mel_1..mel_A)
    P'_k                 = P_k + alpha * Attn(P_k, [video tokens; audio tokens; e_t])   (X-CLIP prompts)
    z                    = u + f([v; a; e_t])                       CLIP-anchored fusion
    c_k                  = s * cos(z, P'_k)                         classification logits
    r_T                  = g(c)                                     step 1: logits -> regression

**Video input V.** With CLIP frame embeddings (extract@video from the clips), V is the identity: the
frames already live in the prompts' space. With precomputed video features (FACET, OpenFace,
Inception: features/precomputed.py), V is a learned projection W_v (x - mu_v) / sigma_v of the
features, standardised with the training set's per-feature statistics (as the audio is), into the
teacher's D dimensions; u below is then the normalised mean of the projected frames, a learned
anchor rather than CLIP's zero-shot embedding (there is no CLIP image embedding to start from).

**CLIP-anchored fusion.** u is CLIP's own embedding of the clip: the normalised mean frame
embedding normalize(mean_f v_f) (the clip embedding of CLIP4Clip's "meanP"); f is an MLP whose
last layer starts at zero, and Attn's output projection starts at zero too, so at
initialisation z = u and P'_k = P_k: c_k = s * cos(u, P_k) is exactly CLIP's zero-shot
similarity between the clip and prompt k (scaled by s). Training moves away from it only as
far as the labels ask; the transcript and the audio join through f (and the prompts' keys).
When the clip's video is masked, the anchor is CLIP's embedding of the transcript,
normalize(e_t) (a text-text similarity with the prompts), and with neither video nor text
(audio alone) a learned vector `anchor_token`, initialised to the normalised mean prompt
(uniform logits at initialisation).

A modality can be masked per clip (missing in the feature store, held out to get
modality-specific predictions, or dropped in training by `modality_dropout`): its tokens
leave the attention keys and its pooled vector is replaced by zeros or a learned mask token
(`mask`). The teacher outputs on masked inputs (r_T^m, saliency, the missing-modality
evaluation) are only meaningful when it saw masked inputs while it trained, which modality
dropout provides.

A checkpoint (`save_teacher`) holds the weights, the config that built the model and plain provenance,
and is read with `torch.load(weights_only=True)` only (core/checkpoints.py: files from other people
never run code when read).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.checkpoints import TEACHER_FIX, check_plain, load_checkpoint, save_checkpoint
from pipeline.core.config import MODALITIES  # re-exported: the order of the `present` columns

# --------------------------------------------------------------------------- teacher


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    embed_dim: int  # D: CLIP embedding size
    audio_dim: int  # n_mels
    num_classes: int  # K
    frames: int  # F
    audio_tokens: int  # A
    layers: int
    heads: int
    dropout: float
    prompt_alpha: float
    mask: str  # zeros | learned
    step1_hidden: int
    video_dim: int = 0  # features per video frame; 0: CLIP frame embeddings of size embed_dim (V = identity)


class TemporalEncoder(nn.Module):
    """Learned positions + a small pre-LN transformer, with a residual to the inputs'
    mean for the pooled vector (CLIP4Clip's seqTransf similarity calculator)."""

    def __init__(self, dim: int, max_len: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, D) -> tokens (B, L, D), pooled (B, D)."""
        tokens = self.norm(self.encoder(x + self.pos[:, : x.shape[1]]))  # (B, L, D)
        pooled = tokens.mean(dim=1) + x.mean(dim=1)  # (B, D)
        return tokens, pooled


class PromptTeacher(nn.Module):
    """The video-enhanced prompt teacher with its step-1 regression head."""

    def __init__(self, config: TeacherConfig, prompts: torch.Tensor) -> None:
        super().__init__()
        c = config
        if prompts.shape != (c.num_classes, c.embed_dim):
            raise ValueError(f"prompts have shape {tuple(prompts.shape)}, expected ({c.num_classes}, {c.embed_dim})")
        if c.embed_dim % c.heads:
            raise ValueError(f"teacher.heads={c.heads} must divide the CLIP embedding size {c.embed_dim}")
        self.config = c
        self.register_buffer("prompts", prompts.clone().float())  # (K, D), frozen CLIP text embeddings
        # per-mel-bin statistics of the training set (set by masks.set_feature_stats), saved with the weights
        self.register_buffer("audio_mean", torch.zeros(c.audio_dim))
        self.register_buffer("audio_std", torch.ones(c.audio_dim))
        d = c.embed_dim
        self.video_in: nn.Module = nn.Identity()  # CLIP frames: already in the prompts' space
        if c.video_dim:  # precomputed video features: standardised, then projected (module docstring)
            self.register_buffer("video_mean", torch.zeros(c.video_dim))
            self.register_buffer("video_std", torch.ones(c.video_dim))
            self.video_in = nn.Linear(c.video_dim, d)
        self.video = TemporalEncoder(d, c.frames, c.layers, c.heads, c.dropout)
        self.audio_in = nn.Linear(c.audio_dim, d)
        self.audio = TemporalEncoder(d, c.audio_tokens, c.layers, c.heads, c.dropout)
        # one always-present key, so a clip whose modalities are all masked still attends somewhere
        self.null_token = nn.Parameter(torch.zeros(1, 1, d))
        self.mask_tokens = nn.Parameter(torch.zeros(len(MODALITIES), d), requires_grad=c.mask == "learned")
        self.prompt_norm = nn.LayerNorm(d)
        self.token_norm = nn.LayerNorm(d)
        self.prompt_attn = nn.MultiheadAttention(d, c.heads, dropout=c.dropout, batch_first=True)
        self.alpha = nn.Parameter(torch.tensor(float(c.prompt_alpha)))
        nn.init.zeros_(self.prompt_attn.out_proj.weight)  # P'_k = P_k at initialisation
        nn.init.zeros_(self.prompt_attn.out_proj.bias)
        self.fuse = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Dropout(c.dropout), nn.Linear(d, d))
        nn.init.zeros_(self.fuse[-1].weight)  # z = CLIP's clip embedding at initialisation
        nn.init.zeros_(self.fuse[-1].bias)
        self.anchor_token = nn.Parameter(F.normalize(self.prompts.mean(0), dim=0).clone())  # (D,) audio-only anchor
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.step1 = nn.Sequential(nn.Linear(c.num_classes, c.step1_hidden), nn.GELU(),
                                   nn.Linear(c.step1_hidden, 1))

    def forward(self, video: torch.Tensor, audio: torch.Tensor, text: torch.Tensor,
                present: torch.Tensor) -> dict[str, torch.Tensor]:
        """video (B, F, D) (precomputed: (B, F, video_dim)), audio (B, A, n_mels), text (B, D), present (B, 3)
        bool in MODALITIES order.

        Returns logits (B, K), reg (B,) and the enhanced prompts (B, K, D).
        """
        b = video.shape[0]
        video = self.project_video(video)  # (B, F, D)
        v_tok, v = self._encode(self.video, video, present[:, MODALITIES.index("video")])  # (B, F, D), (B, D)
        audio = self.audio_in((audio - self.audio_mean) / self.audio_std)  # (B, A, D)
        a_tok, a = self._encode(self.audio, audio, present[:, MODALITIES.index("audio")])  # (B, A, D), (B, D)
        t_tok = text.unsqueeze(1)  # (B, 1, D)
        pooled = torch.stack([v, a, text], dim=1)  # (B, 3, D)
        keep = present.unsqueeze(-1)  # (B, 3, 1)
        pooled = torch.where(keep, pooled, self.mask_tokens.unsqueeze(0).expand(b, -1, -1))
        z = self.anchor(video, text, present) + self.fuse(pooled.flatten(1))  # (B, D)

        tokens = torch.cat([self.null_token.expand(b, -1, -1), v_tok, a_tok, t_tok], dim=1)  # (B, 1+F+A+1, D)
        lengths = (1, v_tok.shape[1], a_tok.shape[1], 1)
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=video.device)]
                          + [present[:, i : i + 1].expand(-1, n) for i, n in enumerate(lengths[1:])], dim=1)
        kv = self.token_norm(tokens)
        q = self.prompt_norm(self.prompts).unsqueeze(0).expand(b, -1, -1)  # (B, K, D)
        attn, _ = self.prompt_attn(q, kv, kv, key_padding_mask=~valid, need_weights=False)  # (B, K, D)
        prompts = self.prompts.unsqueeze(0) + self.alpha * attn  # (B, K, D)

        scale = self.log_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * torch.einsum("bd,bkd->bk", F.normalize(z, dim=-1), F.normalize(prompts, dim=-1))
        reg = self.step1(logits).squeeze(-1)  # (B,)
        return {"logits": logits, "reg": reg, "prompts": prompts}

    @staticmethod
    def _encode(encoder: TemporalEncoder, x: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """encoder(x), or zeros when no clip of the batch has the modality (its outputs would all be masked;
        the `self` teacher never sees video or audio, so this saves their encoders' time)."""
        if bool(present.any()):
            return encoder(x)
        return torch.zeros_like(x), x.new_zeros(x.shape[0], x.shape[2])

    def project_video(self, video: torch.Tensor) -> torch.Tensor:
        """V: the identity on CLIP frames; W_v (x - mu_v) / sigma_v on precomputed features. (B, F, D)."""
        if self.config.video_dim:
            return self.video_in((video - self.video_mean) / self.video_std)
        return video

    def anchor(self, video: torch.Tensor, text: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """u (B, D) from the (projected) video (B, F, D): normalize(mean_f v_f) if the video is kept, else
        normalize(e_t) if the transcript is, else the learned anchor_token (module docstring)."""
        v_idx, t_idx = MODALITIES.index("video"), MODALITIES.index("text")
        u_video = F.normalize(video.mean(dim=1), dim=-1)  # (B, D)
        u_text = F.normalize(text, dim=-1)  # (B, D)
        u = torch.where(present[:, t_idx : t_idx + 1], u_text, self.anchor_token.expand_as(u_text))
        return torch.where(present[:, v_idx : v_idx + 1], u_video, u)  # (B, D)


    def classification_parameters(self) -> list[nn.Parameter]:
        """Everything but g (the two_phase schedule trains these first, then g alone)."""
        step1 = {id(p) for p in self.step1.parameters()}
        return [p for p in self.parameters() if id(p) not in step1]


def save_teacher(path: Path, model: PromptTeacher, extra: dict[str, Any]) -> None:
    """Checkpoint = weights + the config that built the model (+ provenance `extra`, plain JSON-able data),
    readable with `torch.load(weights_only=True)` (core/checkpoints.py)."""
    check_plain(extra, "save_teacher extra")
    save_checkpoint({"config": dataclasses.asdict(model.config), "state_dict": model.state_dict(), **extra}, path)


def load_teacher(path: Path, map_location: str | torch.device = "cpu") -> tuple[PromptTeacher, dict[str, Any]]:
    """Rebuild a teacher from its checkpoint (its own config); a file holding pickled objects is refused
    (`UnsafeCheckpoint`), never unpickled."""
    ckpt = load_checkpoint(path, TEACHER_FIX, map_location)
    config = TeacherConfig(**ckpt["config"])
    model = PromptTeacher(config, ckpt["state_dict"]["prompts"])
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt
