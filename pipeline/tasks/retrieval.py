"""Audio-visual cross-modal retrieval (VideoAdviser's VEGAS task): the task's losses and how its models are
trained, selected and scored (tasks/base.py's interface).

Task (DESIGN.md "Retrieval task (VEGAS)"): a query in one modality (the audio of a clip) ranks
every item of the other modality (the visual features of every test clip) by cosine similarity;
a gallery item is relevant when it has the query's class. Setup of Zeng, Yu and Oyama, "Deep
Triplet Neural Networks with Cluster-CCA for Audio-Visual Cross-Modal Retrieval" (ACM TOMM 2020,
arXiv 1908.03737), followed by VideoAdviser (Wang et al., IEEE Access 2023) on VEGAS.

The metrics (AP, mAP in each direction, the per-query table) are in evaluation/retrieval_metrics.py;
the two-branch student in models/retrieval_student.py.

Losses
------
``cross_modal_triplet_loss`` (label-supervised, hardest negative in the batch),
``supcon_loss`` (Khosla et al. 2020, across modalities), ``retrieval_loss`` (one of them plus the
shared classifier's cross-entropy on both branches) and ``branch_kd_loss`` (Hinton KD of each
branch's class distribution towards the teacher's soft labels, ``losses.kd_loss``). Formulas and
sources are in each docstring.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core import paths
from pipeline.core.config import MODALITIES, OBJECTIVES, DistillParams, MSDParams, unknown_choice
from pipeline.distillation.losses import kd_loss, logit_regression_loss, msd_kd_loss
from pipeline.evaluation.retrieval_metrics import ArrayLike, retrieval_metrics, write_per_query_ap
from pipeline.features.arrays import FeatureArrays
from pipeline.models.retrieval_student import (
    RETRIEVAL_CHECKPOINT,
    build_retrieval_student,
    load_retrieval_student,
    retrieval_embeddings,
    save_retrieval_student,
)
from pipeline.tasks.base import TestSet
from pipeline.training.teacher import read_teacher_predictions

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- losses


def _check_pair(x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, where: str) -> None:
    if x.dim() != 2 or x.shape != y.shape or labels.shape != (x.shape[0],):
        raise ValueError(f"{where} expects embeddings (B, E) of both modalities and labels (B,), got "
                         f"{tuple(x.shape)}, {tuple(y.shape)} and {tuple(labels.shape)}")


def _triplet_one_way(sims: torch.Tensor, same: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of hinges and number of (anchor, positive) pairs: sims (B, B) anchor x other modality, same (B, B)."""
    hardest_neg = sims.masked_fill(same, float("-inf")).amax(dim=1, keepdim=True)  # (B, 1); -inf: no negative
    valid = same & torch.isfinite(hardest_neg)  # (B, B) positive pairs whose anchor has a negative
    hinge = (margin - sims + hardest_neg.clamp_min(-1e4)).clamp_min(0.0)  # (B, B)
    return (hinge * valid).sum(), valid.sum()


def cross_modal_triplet_loss(audio_emb: torch.Tensor, visual_emb: torch.Tensor, labels: torch.Tensor,
                             margin: float) -> torch.Tensor:
    """Label-supervised cross-modal triplet loss with the hardest negative in the batch.

    With s_ij = cos(x_i, y_j) between anchors x of one modality and items y of the other,
    P(i) = {j : l_j = l_i} (includes the anchor's own clip) and N(i) = {k : l_k != l_i},

        L_x->y = mean over pairs (i, j), j in P(i), N(i) not empty, of [m - s_ij + max_{k in N(i)} s_ik]_+
        L      = (L_a->v + L_v->a) / 2

    Every positive of the anchor against its hardest (most similar) negative: VSE++'s max-of-hinges
    (Faghri et al., "VSE++: Improving Visual-Semantic Embeddings with Hard Negatives", BMVC 2018),
    with positives and negatives defined by class labels as in Zeng et al.'s label-supervised
    audio-visual triplets (TNN-C-CCA, ACM TOMM 2020) and batch-hard mining (Hermans et al., "In
    Defense of the Triplet Loss for Person Re-Identification", 2017). It is 0 once every anchor's
    least similar positive beats its most similar negative by the margin. Anchors without a
    negative in the batch add nothing; a batch with no such pair gives 0 (still in the graph).
    audio_emb, visual_emb (B, E) (normalised here), labels (B,).
    """
    _check_pair(audio_emb, visual_emb, labels, "cross_modal_triplet_loss")
    a, v = F.normalize(audio_emb, dim=-1), F.normalize(visual_emb, dim=-1)  # (B, E)
    sims = a @ v.T  # (B, B) audio i x visual j
    same = labels[:, None] == labels[None, :]  # (B, B)
    sum_a2v, n_a2v = _triplet_one_way(sims, same, margin)
    sum_v2a, n_v2a = _triplet_one_way(sims.T, same.T, margin)
    # each direction averages over its own pairs; with none, the term is 0 (sims * 0 keeps the graph)
    l_a2v = sum_a2v / n_a2v if n_a2v > 0 else sims.sum() * 0.0
    l_v2a = sum_v2a / n_v2a if n_v2a > 0 else sims.sum() * 0.0
    return (l_a2v + l_v2a) / 2.0


def supcon_loss(audio_emb: torch.Tensor, visual_emb: torch.Tensor, labels: torch.Tensor,
                temperature: float) -> torch.Tensor:
    """Supervised contrastive loss across modalities (Khosla et al., "Supervised Contrastive
    Learning", NeurIPS 2020, eq. 2, L^sup_out), anchors in one modality, contrast set the other's batch:

        L_x->y = -1/B sum_i 1/|P(i)| sum_{p in P(i)} log( exp(s_ip / tau) / sum_{j=1..B} exp(s_ij / tau) )
        L      = (L_a->v + L_v->a) / 2

    s_ij = cos(x_i, y_j), P(i) = {j : l_j = l_i} (never empty: it holds the anchor's own clip).
    With one clip per class in the batch it is the symmetric InfoNCE of CLIP (Radford et al. 2021).
    audio_emb, visual_emb (B, E) (normalised here), labels (B,), temperature tau > 0.
    """
    _check_pair(audio_emb, visual_emb, labels, "supcon_loss")
    if temperature <= 0:
        raise ValueError(f"supcon_loss: temperature must be > 0, got {temperature}")
    a, v = F.normalize(audio_emb, dim=-1), F.normalize(visual_emb, dim=-1)  # (B, E)
    logits = a @ v.T / temperature  # (B, B)
    positive = (labels[:, None] == labels[None, :]).float()  # (B, B)
    terms = []
    for scores, pos in ((logits, positive), (logits.T, positive.T)):
        log_prob = scores - torch.logsumexp(scores, dim=1, keepdim=True)  # (B, B)
        terms.append(-((log_prob * pos).sum(dim=1) / pos.sum(dim=1)).mean())
    return (terms[0] + terms[1]) / 2.0


def retrieval_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, objective: str, *,
                   margin: float = 0.2, temperature: float = 0.1, ce_weight: float = 1.0
                   ) -> dict[str, torch.Tensor]:
    """Training loss of the retrieval student (DESIGN.md "Retrieval task (VEGAS)"):

        L = L_metric + ce_weight * (CE(c_a, y) + CE(c_v, y)) / 2

    L_metric = `cross_modal_triplet_loss` (objective "triplet", margin m) or `supcon_loss`
    ("supcon", temperature tau); c_a, c_v the shared classifier's logits of the audio and visual
    branches (`RetrievalStudent` outputs). Returns {"loss": L, "metric": L_metric, "ce": the mean CE}.
    """
    if objective not in OBJECTIVES:
        raise unknown_choice("retrieval objective", objective, OBJECTIVES)
    a, v = outputs["audio_emb"], outputs["visual_emb"]  # (B, E)
    if objective == "triplet":
        metric = cross_modal_triplet_loss(a, v, labels, margin)
    else:
        metric = supcon_loss(a, v, labels, temperature)
    ce = (F.cross_entropy(outputs["audio_logits"], labels) + F.cross_entropy(outputs["visual_logits"], labels)) / 2
    return {"loss": metric + ce_weight * ce, "metric": metric, "ce": ce}


def branch_kd_loss(branch_logits: torch.Tensor | Sequence[torch.Tensor], teacher_logits: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """Hinton KD of each branch's class distribution towards the teacher's soft labels, averaged:

        L_KD = 1/|branches| sum_b T^2 * KL(softmax(c_T / T) || softmax(c_b / T))

    c_b (B, K): the audio and the visual branch's logits (one tensor, or a sequence of them);
    c_T (B, K): the audio-visual teacher's logits of the same clips (a constant target). Each term
    is `losses.kd_loss` (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
    2015); VideoAdviser's retrieval distillation (DESIGN.md): the student's inference is unchanged.
    """
    branches = [branch_logits] if isinstance(branch_logits, torch.Tensor) else list(branch_logits)
    if not branches:
        raise ValueError("branch_kd_loss needs at least one branch's logits")
    for logits in branches:
        if logits.shape != teacher_logits.shape:
            raise ValueError(f"branch_kd_loss: branch logits {tuple(logits.shape)} and teacher logits "
                             f"{tuple(teacher_logits.shape)} differ in shape")
    return sum(kd_loss(logits, teacher_logits, temperature) for logits in branches) / len(branches)


# --------------------------------------------------------------------------- the task

BRANCH_MODALITIES: tuple[str, ...] = ("video", "audio")  # the student's branches, in the teacher's modality names
BRANCH_LOGITS = {"video": "visual_logits", "audio": "audio_logits"}


def _branches(out: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [out[BRANCH_LOGITS[m]] for m in BRANCH_MODALITIES]


@dataclasses.dataclass(frozen=True)
class RetrievalObjective:
    """The student's loss `retrieval_loss` and, with c_a, c_v its branches' logits, c_T the teacher's:
    kd = KD_T(c_a, c_v; c_T) (`branch_kd_loss`), match = 1/2 sum_b D(z(c_b), z(c_T)) (the teacher's logits
    as regression targets, both standardised per clip: `losses.logit_regression_loss`; they carry CLIP's
    scale, up to 100), modality = sum_m w_m KD_T(c^m, c_T^m), branch m (visual for video) mimicking the
    teacher given m alone (`losses.msd_kd_loss`)."""

    objective: str
    margin: float
    temperature: float
    ce_weight: float

    def task_loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, dict[str, float]]:
        task = retrieval_loss(out, batch["y"].long(), self.objective, margin=self.margin,
                              temperature=self.temperature, ce_weight=self.ce_weight)
        return task["loss"], {"metric": task["metric"].item(), "ce": task["ce"].item()}

    def kd(self, out: dict[str, torch.Tensor], teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        return branch_kd_loss(_branches(out), teacher_logits, temperature)

    def match(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], distance: str) -> torch.Tensor:
        return sum(logit_regression_loss(c, batch["teacher_logits"], distance)
                   for c in _branches(out)) / len(BRANCH_MODALITIES)

    def modality(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], params: MSDParams
                 ) -> torch.Tensor:
        """batch["teacher_mod"] (B, 2, K) = c_T^m and batch["weights"] (B, 2) = w_m(x), BRANCH_MODALITIES order."""
        return msd_kd_loss(torch.stack(_branches(out), dim=1), batch["teacher_mod"], batch["weights"],
                           params.temperature)


class RetrievalTask:
    name = "retrieval"
    teacher_output = "logits"  # a classifier of the dataset's classes: no regression head
    self_modalities = ("video", "audio")
    student_kinds = {"va": "retrieval", "msd": "retrieval"}
    valid_metric = "map"
    maximize = True

    def build_student(self, kind: str, params: DistillParams, texts: list[str], train_idx: torch.Tensor,
                      features: FeatureArrays | None, num_classes: int, second_order: bool
                      ) -> tuple[nn.Module, None, dict[str, torch.Tensor]]:
        if features is None:
            raise ValueError("the retrieval student needs the cached features")
        return build_retrieval_student(params, features, num_classes), None, {"audio": features.audio,
                                                                               "visual": features.video}

    def preload_student(self) -> None:
        pass  # the two-branch student needs nothing beyond torch

    def student_modalities(self, model: nn.Module) -> tuple[str, ...]:
        return BRANCH_MODALITIES

    def teacher_targets(self, teacher: dict[str, torch.Tensor], rows: torch.Tensor, modalities: tuple[str, ...],
                        modality_specific: bool) -> dict[str, torch.Tensor]:
        out = {"teacher_logits": teacher["logits"][rows]}
        if modality_specific:
            index = [MODALITIES.index(m) for m in modalities]
            out.update(teacher_mod=teacher["logits_only"][rows][:, index], saliency=teacher["saliency"][rows])
        return out

    def forward(self, net, inputs: dict[str, torch.Tensor], modalities: tuple[str, ...],
                modality_specific: bool) -> dict[str, torch.Tensor]:
        return net(audio=inputs["audio"], visual=inputs["visual"])  # each branch is its modality's own output

    def objective(self, params: DistillParams) -> RetrievalObjective:
        r = params.retrieval
        return RetrievalObjective(r.objective, r.margin, r.temperature, r.ce_weight)

    def validate(self, model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                 present: torch.Tensor, batch_size: int) -> float:
        """map_mean (audio <-> visual) over the clips; a clip without a modality is neither its query nor item."""
        audio, visual = retrieval_embeddings(model, inputs["audio"], inputs["visual"], batch_size)
        return retrieval_metrics(audio, visual, labels.long(),
                                 audio_present=present[:, MODALITIES.index("audio")].numpy(),
                                 visual_present=present[:, MODALITIES.index("video")].numpy())[0]["map_mean"]

    def save_student(self, out_dir: Path, model: nn.Module, tokenizer: Any, extra: dict[str, Any],
                     params: DistillParams) -> None:
        save_retrieval_student(out_dir / RETRIEVAL_CHECKPOINT, model,
                               {**extra, "video_tokens": params.student.video_tokens,
                                "audio_tokens": params.student.audio_tokens})

    def class_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """CE(c, y) with y the class index (stored as float in the label tensor)."""
        return F.cross_entropy(logits, y.long())

    def saliency(self, full: torch.Tensor, without: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
        """s_m(x) per clip from the logits c(x) and c(x without m), (N, K) each: prediction: the total variation
        1/2 sum_k |p_k(x) - p_k(x without m)| of p = softmax(c), in [0, 1]; loss: the rise of the
        cross-entropy CE(c(x without m), y) - CE(c(x), y) (can be < 0)."""
        if kind == "prediction":
            return 0.5 * (full.softmax(-1) - without.softmax(-1)).abs().sum(-1)  # (N,)
        y = labels.long()
        return F.cross_entropy(without, y, reduction="none") - F.cross_entropy(full, y, reduction="none")

    def teacher_primary(self, metric_set: str) -> str:
        return "acc"

    # ----------------------------------------------------------------------- evaluation

    teacher_inputs = "video+audio"

    def teacher_test(self, ev: TestSet, name: str, seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], dict]:
        """The teacher sees both modalities at once, so it is scored as a retrieval model through its
        modality-specific outputs: a clip's audio item is softmax(c_T^audio), its class posterior given its
        audio alone, and its visual item softmax(c_T^video) (preds.h5 logits_only_<m>)."""
        only = read_teacher_predictions(ev.test, paths.teacher_predictions(ev.dataset, seed, name))["logits_only"]
        audio, visual = (only[:, MODALITIES.index(m)].softmax(-1) for m in ("audio", "video"))  # (N, K) each
        return (audio, visual), {}

    def student_test(self, ev: TestSet, model_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's audio and visual embeddings (N_test, E) of the test clips."""
        model, ckpt = load_retrieval_student(model_dir / RETRIEVAL_CHECKPOINT, ev.device)
        test = ev.test_features(ckpt["video_tokens"], ckpt["audio_tokens"])
        return retrieval_embeddings(model, test.audio, test.video, ev.params.batch_size)

    def score(self, ev: TestSet, outputs: tuple[ArrayLike, ArrayLike], csv_path: Path) -> dict[str, float]:
        """map_a2v, map_v2a, map_mean: each test clip's audio queries every test clip's visual item and the
        reverse (a clip without a modality's features is neither its query nor its item); writes the
        per-query AP table to `csv_path`."""
        audio, visual = outputs
        metrics, table = retrieval_metrics(audio, visual, ev.test["label"].to_numpy().astype(np.int64),
                                           ids=ev.test["id"].tolist(), audio_present=ev.present("audio"),
                                           visual_present=ev.present("video"))
        write_per_query_ap(table, csv_path)
        return metrics

    def student_pipeline(self, ev: TestSet, model_dir: Path) -> tuple[str, Any, str]:
        from pipeline.evaluation import latency  # decoders: evaluate only

        pipeline, _ = latency.retrieval_student_pipeline(model_dir, ev.device, ev.media_inputs)
        return "retrieval", pipeline, "video+audio"

    def teacher_metrics(self, pred: np.ndarray, labels: np.ndarray, metric_set: str) -> dict[str, float]:
        """Accuracy `acc` and cross-entropy `ce` of the class logits `pred` (N, K)."""
        logits = np.asarray(pred, dtype=np.float64)
        return {"acc": float((logits.argmax(-1) == labels).mean()),
                "ce": float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long()))}


TASK = RetrievalTask()
