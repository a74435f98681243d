"""The two-branch audio-visual retrieval student (Zeng et al.'s network): an audio branch and a visual branch
(each LayerNorm -> Linear -> GELU -> Dropout -> Linear) into a common space of size E, L2-normalised,
and one classifier shared by both branches over that space (the shared classifier makes both
modalities' embeddings class-separable in the same coordinates). Trained by tasks/retrieval.py.

Its checkpoint (`save_retrieval_student`, `RETRIEVAL_CHECKPOINT` in the student's seed folder) holds the
weights, the config that built the model and plain provenance, and is read with
`torch.load(weights_only=True)` only (core/checkpoints.py: files from other people never run code when read)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.checkpoints import check_plain, load_checkpoint, save_checkpoint, student_fix
from pipeline.core.config import DistillParams
from pipeline.core.errors import MissingInput
from pipeline.features.arrays import FeatureArrays
from pipeline.models.inference import batched_outputs

RETRIEVAL_CHECKPOINT = "retrieval_student.pt"  # in paths.student_dir


@dataclasses.dataclass(frozen=True)
class RetrievalStudentConfig:
    audio_dim: int  # Da: audio feature size (128 for VGGish)
    visual_dim: int  # Dv: visual feature size (1024 for Inception)
    embed_dim: int  # E: common space
    hidden_dim: int  # H: hidden layer of each branch
    num_classes: int  # K
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("audio_dim", "visual_dim", "embed_dim", "hidden_dim", "num_classes"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"RetrievalStudentConfig.{name} must be an integer >= 1, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"RetrievalStudentConfig.dropout must be in [0, 1), got {self.dropout}")


def _branch(in_dim: int, c: RetrievalStudentConfig) -> nn.Sequential:
    # LayerNorm first: VGGish (quantised 0..255) and Inception features live on very different scales
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, c.hidden_dim), nn.GELU(),
                         nn.Dropout(c.dropout), nn.Linear(c.hidden_dim, c.embed_dim))


class RetrievalStudent(nn.Module):
    """Two-branch embedding network with a shared classifier (DESIGN.md "Retrieval task (VEGAS)").

        e_a = normalise(f_a(x_a)),  e_v = normalise(f_v(x_v))     common space, |e| = 1, size E
        c_a = W e_a + b,            c_v = W e_v + b               one classifier (W, b) for both

    Features are (B, D) clip vectors; a (B, L, D) sequence (e.g. per-frame features) is
    mean-pooled over L first.
    """

    def __init__(self, config: RetrievalStudentConfig) -> None:
        super().__init__()
        self.config = config
        self.audio = _branch(config.audio_dim, config)
        self.visual = _branch(config.visual_dim, config)
        self.classifier = nn.Linear(config.embed_dim, config.num_classes)

    @staticmethod
    def _pool(x: torch.Tensor, dim: int, name: str) -> torch.Tensor:
        if x.dim() == 3:
            x = x.mean(dim=1)  # (B, L, D) -> (B, D)
        if x.dim() != 2 or x.shape[1] != dim:
            raise ValueError(f"RetrievalStudent: {name} features must be (B, {dim}) or (B, L, {dim}), "
                             f"got {tuple(x.shape)}")
        return x

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, Da) or (B, L, Da) -> unit-norm embeddings (B, E)."""
        return F.normalize(self.audio(self._pool(audio, self.config.audio_dim, "audio")), dim=-1)  # (B, E)

    def embed_visual(self, visual: torch.Tensor) -> torch.Tensor:
        """visual (B, Dv) or (B, L, Dv) -> unit-norm embeddings (B, E)."""
        return F.normalize(self.visual(self._pool(visual, self.config.visual_dim, "visual")), dim=-1)  # (B, E)

    def forward(self, audio: torch.Tensor | None = None, visual: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Embeddings and class logits of whichever modalities are given.

        Returns audio_emb (B, E) and audio_logits (B, K) when `audio` is given, visual_emb and
        visual_logits when `visual` is; at least one of them is required.
        """
        if audio is None and visual is None:
            raise ValueError("RetrievalStudent.forward needs audio, visual or both")
        out: dict[str, torch.Tensor] = {}
        if audio is not None:
            out["audio_emb"] = self.embed_audio(audio)  # (B, E)
            out["audio_logits"] = self.classifier(out["audio_emb"])  # (B, K)
        if visual is not None:
            out["visual_emb"] = self.embed_visual(visual)  # (B, E)
            out["visual_logits"] = self.classifier(out["visual_emb"])  # (B, K)
        return out


def save_retrieval_student(path: Path, model: RetrievalStudent, extra: dict[str, Any]) -> None:
    """Checkpoint = weights + the config that built the model (+ provenance `extra`, plain JSON-able data),
    readable with `torch.load(weights_only=True)` (core/checkpoints.py)."""
    check_plain(extra, "save_retrieval_student extra")
    save_checkpoint({"config": dataclasses.asdict(model.config), "state_dict": model.state_dict(), **extra}, path)


def load_retrieval_student(path: Path, map_location: str | torch.device = "cpu"
                           ) -> tuple[RetrievalStudent, dict[str, Any]]:
    """Rebuild a student from its checkpoint (its own config, not today's params), in eval mode; a file
    holding pickled objects is refused (`UnsafeCheckpoint`), never unpickled."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"retrieval student checkpoint {path} not found: run `dvc repro distill`")
    ckpt = load_checkpoint(path, student_fix(path.parent), map_location)
    model = RetrievalStudent(RetrievalStudentConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def build_retrieval_student(params: DistillParams, features: FeatureArrays, num_classes: int) -> RetrievalStudent:
    r = params.retrieval
    return RetrievalStudent(RetrievalStudentConfig(
        audio_dim=features.audio.shape[2], visual_dim=features.video.shape[2], embed_dim=r.embed_dim,
        hidden_dim=r.hidden_dim, num_classes=num_classes, dropout=r.dropout))


def retrieval_embeddings(model: RetrievalStudent, audio: torch.Tensor, visual: torch.Tensor,
                         batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio (N, E), visual (N, E)) embeddings on the CPU, in eval mode, batch by batch."""
    out = batched_outputs(model, len(audio), lambda rows: {"audio": audio[rows], "visual": visual[rows]},
                          ("audio_emb", "visual_emb"), batch_size)
    return out["audio_emb"], out["visual_emb"]
