"""Audio-visual cross-modal retrieval (VideoAdviser's VEGAS task): metrics, the two-branch student, its losses.

Task (DESIGN.md "Retrieval task (VEGAS)"): a query in one modality (the audio of a clip) ranks
every item of the other modality (the visual features of every test clip) by cosine similarity;
a gallery item is relevant when it has the query's class. Setup of Zeng, Yu and Oyama, "Deep
Triplet Neural Networks with Cluster-CCA for Audio-Visual Cross-Modal Retrieval" (ACM TOMM 2020,
arXiv 1908.03737), followed by VideoAdviser (Wang et al., IEEE Access 2023) on VEGAS.

Metrics
-------
``average_precision`` (one query), ``retrieval_map`` (one direction), ``retrieval_metrics``
(``map_a2v``, ``map_v2a``, ``map_mean`` and the per-query AP table, which ``write_per_query_ap``
writes as CSV and ``metrics_from_per_query`` turns back into the metrics). With s_j the score of
gallery item j, rel(j) = 1[label_j == label_query] and R = sum_j rel(j),

    AP  = sum over distinct scores t, descending, of (R_t - R_{t-1}) * P_t
        = 1/R * sum_{j : rel(j)} P(s_j)
    P_t = |{i : s_i >= t, rel(i)}| / |{i : s_i >= t}|,   R_t = |{i : s_i >= t, rel(i)}| / R
    mAP = mean over queries of AP

computed over the full gallery (no cut-off). Items whose scores tie form one threshold: every
relevant item of a tie is credited with the precision at the tie's lowest rank. This is exactly
scikit-learn's ``average_precision_score`` (``sklearn.metrics``; its precision-recall curve has
one point per distinct score), so AP does not depend on the order of the gallery. (It is not the
mean AP over random orders of the tied items, which differs in general.) Without ties it is

    AP = 1/R * sum_{n : rel(pi_n)} P@n,   P@n = (1/n) * sum_{m <= n} rel(pi_m),   pi the ranking

the evaluation code of that line of work (``fx_calc_map_label`` in
zhangjiwei-japan/cross-modal-visual-audio-retrieval, ``evaluate.py``, the VEGAS/AVE evaluation of
Yi Yu's group, with ``k = 0``: the whole gallery, cosine distance); with ties,
``fx_calc_map_label`` follows numpy's default (unstable) argsort, whose tie order is unspecified.
Choices, each documented where it is made:

* **Ties**: scores are rounded to 12 decimals first, so that identical gallery vectors tie
  exactly even when the matrix product rounds their scores 1 ulp apart.
* **No relevant item** (R = 0): AP = 0, and the query stays in the mean, exactly as
  ``fx_calc_map_label`` (``res += [0]``). ``retrieval_map`` logs a warning with the count. With
  paired audio/visual test sets this cannot happen (a query's own clip has its class).
* **Cosine similarity** s_ij = <q_i, g_j> / (max(|q_i|, eps) * max(|g_j|, eps)), eps = 1e-12, in
  float64; a zero vector scores 0 against everything.

Student
-------
``RetrievalStudent``: an audio branch and a visual branch (each LayerNorm -> Linear -> GELU ->
Dropout -> Linear) into a common space of size E, L2-normalised, and one classifier shared by
both branches over that space (Zeng et al.'s two-branch network; the shared classifier makes
both modalities' embeddings class-separable in the same coordinates).

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
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.config import MODALITIES, OBJECTIVES, DistillParams, MSDParams, unknown_choice
from pipeline.distillation.losses import kd_loss, logit_regression_loss, msd_kd_loss
from pipeline.features.arrays import FeatureArrays
from pipeline.models.retrieval_student import (
    RETRIEVAL_CHECKPOINT,
    build_retrieval_student,
    retrieval_embeddings,
    save_retrieval_student,
)

log = logging.getLogger(__name__)

DIRECTIONS: tuple[str, ...] = ("a2v", "v2a")  # audio queries over the visual gallery, and the reverse
PER_QUERY_COLUMNS: tuple[str, ...] = ("direction", "id", "label", "ap")
_EPS = 1e-12
_TIE_DECIMALS = 12  # scores equal to this many decimals tie (one threshold of the AP)
_QUERY_CHUNK = 512  # queries ranked at once: bounds the dozen (C, G) score/rank matrices in memory

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


# --------------------------------------------------------------------------- metrics


def _numpy(x: Any) -> np.ndarray:
    """A numpy array of a tensor (detached, on the CPU) or of any array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _ap_of_scores(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Tie-aware AP of each row (module docstring): scores (Q, G) float64, relevant (Q, G) bool -> (Q,) float64.

    Summed over the tie groups (scores equal to 12 decimals) in ranked order: the relevant items
    of a group times the precision at its last rank, over R; 0 for a row without relevant items.
    """
    rounded = np.round(scores, _TIE_DECIMALS)  # (Q, G) float64
    order = np.argsort(-rounded, axis=1)  # (Q, G) best first; the order inside a tie does not matter
    ranked = np.take_along_axis(rounded, order, axis=1)  # (Q, G) descending scores
    rel = np.take_along_axis(relevant, order, axis=1)  # (Q, G) relevance in ranked order
    hits = np.cumsum(rel, axis=1)  # (Q, G) relevant items at or above each rank
    group_end = np.ones(rel.shape, dtype=bool)  # (Q, G) last rank of a tie group (the last rank always is)
    group_end[:, :-1] = ranked[:, :-1] != ranked[:, 1:]
    before = np.zeros_like(hits)  # (Q, G) hits down to the end of the previous group
    before[:, 1:] = np.maximum.accumulate(np.where(group_end, hits, 0)[:, :-1], axis=1)
    gained = np.where(group_end, hits - before, 0)  # (Q, G) relevant items of the group ending at each rank
    precision = hits / np.arange(1, rel.shape[1] + 1)  # (Q, G) P at each rank
    n_relevant = hits[:, -1]  # (Q,)
    total = (gained * precision).sum(axis=1)  # (Q,)
    return np.where(n_relevant > 0, total / np.maximum(n_relevant, 1), 0.0)  # (Q,)


def average_precision(scores: ArrayLike, relevant: ArrayLike) -> float:
    """AP of one query over a full ranking, tie-aware: AP = 1/R sum_{j: rel(j)} P(s_j) (module docstring).

    scores (G,): higher ranks first, scores equal to 12 decimals tie (one threshold, as in
    sklearn.metrics.average_precision_score); relevant (G,) bool.
    A query without any relevant item (R = 0) has AP = 0 (the VEGAS evaluation's convention,
    see the module docstring). Raises ValueError on shape mismatch, an empty gallery or a
    non-finite score.
    """
    s = _numpy(scores).astype(np.float64)  # (G,)
    rel = _numpy(relevant).astype(bool)  # (G,)
    if s.ndim != 1 or s.shape != rel.shape or s.size == 0:
        raise ValueError(f"average_precision expects non-empty scores (G,) and relevant (G,), "
                         f"got {s.shape} and {rel.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"average_precision: {int((~np.isfinite(s)).sum())} scores are not finite")
    return float(_ap_of_scores(s[None, :], rel[None, :])[0])


def cosine_similarity(query_emb: ArrayLike, gallery_emb: ArrayLike) -> np.ndarray:
    """s_ij = <q_i, g_j> / (max(|q_i|, eps) max(|g_j|, eps)), float64: (Q, D), (G, D) -> (Q, G)."""
    q, g = _normalise(_numpy(query_emb)), _normalise(_numpy(gallery_emb))
    return q @ g.T  # (Q, G)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)  # (N, D)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)  # (N, D)


def retrieval_map(query_emb: ArrayLike, query_labels: ArrayLike, gallery_emb: ArrayLike,
                  gallery_labels: ArrayLike) -> tuple[float, np.ndarray]:
    """mAP of queries ranking a gallery by cosine similarity; relevant = same class label.

    query_emb (Q, D), query_labels (Q,), gallery_emb (G, D), gallery_labels (G,). Returns
    (mAP, per-query AP (Q,) float64). Every query ranks the full gallery (tie-aware AP);
    a query without a relevant item has AP 0 and counts in the mean (logged as a warning).
    """
    q, g = _normalise(_numpy(query_emb)), _normalise(_numpy(gallery_emb))  # (Q, D), (G, D)
    yq, yg = _numpy(query_labels), _numpy(gallery_labels)  # (Q,), (G,)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"retrieval_map expects embeddings (Q, D) and (G, D), got {q.shape} and {g.shape}")
    if yq.shape != (len(q),) or yg.shape != (len(g),):
        raise ValueError(f"retrieval_map: labels {yq.shape} / {yg.shape} do not match embeddings "
                         f"{q.shape} / {g.shape}")
    if len(q) == 0 or len(g) == 0:
        raise ValueError(f"retrieval_map needs at least one query and one gallery item, got Q={len(q)}, G={len(g)}")
    if not (np.isfinite(q).all() and np.isfinite(g).all()):
        raise ValueError("retrieval_map: embeddings contain NaN or inf")
    ap = np.empty(len(q), dtype=np.float64)  # (Q,)
    for start in range(0, len(q), _QUERY_CHUNK):
        stop = min(start + _QUERY_CHUNK, len(q))
        relevant = yq[start:stop, None] == yg[None, :]  # (C, G)
        ap[start:stop] = _ap_of_scores(q[start:stop] @ g.T, relevant)
    no_hit = int((~np.isin(yq, yg)).sum())
    if no_hit:
        log.warning("%d of %d queries have no relevant gallery item (no gallery item of their class): "
                    "their AP counts as 0 in the mAP", no_hit, len(q))
    return float(ap.mean()), ap


def _present(mask: ArrayLike | None, n: int, name: str) -> np.ndarray:
    """A presence mask as bool (N,); None means every clip has the modality."""
    if mask is None:
        return np.ones(n, dtype=bool)
    present = _numpy(mask)
    if present.dtype != np.bool_ or present.shape != (n,):
        raise ValueError(f"retrieval_metrics: {name} must be a boolean array of shape ({n},) (one flag per clip), "
                         f"got dtype {present.dtype} and shape {present.shape}")
    return present


def _warn_identical(emb: np.ndarray, gallery: str) -> None:
    """Warn when several gallery items have the same normalised embedding (to 12 decimals): they tie for every query."""
    _, sizes = np.unique(np.round(_normalise(emb), _TIE_DECIMALS), axis=0, return_counts=True)  # (groups,)
    shared = sizes[sizes > 1]
    if shared.size:
        log.warning("%s: %d of %d items share their (normalised) embedding with another item, in %d group(s) of "
                    "identical vectors: they tie in every ranking (a modality missing without a mask?)",
                    gallery, int(shared.sum()), len(emb), shared.size)


def retrieval_metrics(audio_emb: ArrayLike, visual_emb: ArrayLike, labels: ArrayLike,
                      ids: Sequence[str] | None = None, *, audio_present: ArrayLike | None = None,
                      visual_present: ArrayLike | None = None) -> tuple[dict[str, float], pd.DataFrame]:
    """Both retrieval directions over paired test clips: audio_emb (N, E), visual_emb (N, E), labels (N,).

    a2v: each clip's audio ranks the visual items; v2a: each clip's visual ranks the audio items
    (the query's own clip is in the gallery, as in the VEGAS protocol). Returns
    ({"map_a2v", "map_v2a", "map_mean" = (map_a2v + map_v2a) / 2}, per-query table with columns
    PER_QUERY_COLUMNS: direction (a2v | v2a), id (clip id; default the row index), label, ap).

    Missing modalities: audio_present (N,) / visual_present (N,) bool (default: all present). A
    clip's missing features are zeros, so its embedding would be the same vector as every other
    such clip's and tie with it in every ranking. A clip without audio is therefore neither an a2v
    query nor an item of the v2a gallery, and likewise for visual (a warning gives the counts); the
    table has rows only for the queries that were ranked, and each mAP is the mean over them. A
    warning also counts the present gallery items whose embeddings are identical (normalised, to
    12 decimals), since those tie for every query.
    """
    audio_np, visual_np, labels_np = _numpy(audio_emb), _numpy(visual_emb), _numpy(labels)  # (N, E), (N, E), (N,)
    n = len(labels_np)
    if len(audio_np) != n or len(visual_np) != n:
        raise ValueError(f"retrieval_metrics expects paired clips: {len(audio_np)} audio, "
                         f"{len(visual_np)} visual embeddings and {n} labels")
    ids_np = np.array([str(i) for i in range(n)] if ids is None else [str(i) for i in ids], dtype=object)  # (N,)
    if len(ids_np) != n:
        raise ValueError(f"retrieval_metrics: {len(ids_np)} ids for {n} clips")
    has_audio = _present(audio_present, n, "audio_present")  # (N,)
    has_visual = _present(visual_present, n, "visual_present")  # (N,)
    for modality, present, queries, gallery in (("audio", has_audio, "a2v", "v2a"),
                                                ("visual", has_visual, "v2a", "a2v")):
        missing = int((~present).sum())
        if missing == n:
            raise ValueError(f"retrieval_metrics: no clip has {modality} ({modality}_present is all False), so "
                             f"neither direction can be ranked")
        if missing:
            log.warning("%d of %d clips have no %s: they are not %s queries and not items of the %s gallery",
                        missing, n, modality, queries, gallery)
    _warn_identical(visual_np[has_visual], "a2v gallery (visual embeddings)")
    _warn_identical(audio_np[has_audio], "v2a gallery (audio embeddings)")
    map_a2v, ap_a2v = retrieval_map(audio_np[has_audio], labels_np[has_audio], visual_np[has_visual],
                                    labels_np[has_visual])
    map_v2a, ap_v2a = retrieval_map(visual_np[has_visual], labels_np[has_visual], audio_np[has_audio],
                                    labels_np[has_audio])
    metrics = {"map_a2v": map_a2v, "map_v2a": map_v2a, "map_mean": (map_a2v + map_v2a) / 2.0}
    table = pd.DataFrame({
        "direction": ["a2v"] * int(has_audio.sum()) + ["v2a"] * int(has_visual.sum()),
        "id": np.concatenate([ids_np[has_audio], ids_np[has_visual]]).tolist(),
        "label": np.concatenate([labels_np[has_audio], labels_np[has_visual]]),
        "ap": np.concatenate([ap_a2v, ap_v2a]),
    }, columns=list(PER_QUERY_COLUMNS))
    return metrics, table


def metrics_from_per_query(table: pd.DataFrame) -> dict[str, float]:
    """map_a2v, map_v2a (mean AP of each direction's rows) and map_mean from a per-query AP table.

    The table holds one row per ranked query (``retrieval_metrics``: a clip missing the query's
    modality has no row), so these are the metrics ``retrieval_metrics`` returned.
    """
    missing = [c for c in PER_QUERY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"per-query AP table lacks columns {missing}; expected {list(PER_QUERY_COLUMNS)}")
    means = {}
    for direction in DIRECTIONS:
        rows = table.loc[table["direction"] == direction, "ap"]
        if rows.empty:
            raise ValueError(f"per-query AP table has no {direction!r} rows (directions found: "
                             f"{sorted(table['direction'].unique())})")
        means[f"map_{direction}"] = float(rows.mean())
    return {**means, "map_mean": (means["map_a2v"] + means["map_v2a"]) / 2.0}


def write_per_query_ap(table: pd.DataFrame, path: Path) -> None:
    """Write the per-query AP table (PER_QUERY_COLUMNS) as CSV, atomically (temporary name, then rename)."""
    missing = [c for c in PER_QUERY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"per-query AP table lacks columns {missing}; expected {list(PER_QUERY_COLUMNS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table.loc[:, list(PER_QUERY_COLUMNS)].to_csv(tmp, index=False)
    os.replace(tmp, path)
    log.info("wrote %s (%d queries)", path, len(table))


def read_per_query_ap(path: Path) -> pd.DataFrame:
    """Read a CSV written by `write_per_query_ap` (ids as strings)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"per-query AP file {path} not found: run `dvc repro evaluate`")
    table = pd.read_csv(path, dtype={"direction": str, "id": str}, keep_default_na=False)
    missing = [c for c in PER_QUERY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {list(PER_QUERY_COLUMNS)}")
    return table


# --------------------------------------------------------------------------- student












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

    def teacher_metrics(self, pred: np.ndarray, labels: np.ndarray, metric_set: str) -> dict[str, float]:
        """Accuracy `acc` and cross-entropy `ce` of the class logits `pred` (N, K)."""
        logits = torch.from_numpy(np.asarray(pred, dtype=np.float64))
        return {"acc": float((logits.numpy().argmax(-1) == labels).mean()),
                "ce": float(F.cross_entropy(logits, torch.from_numpy(labels).long()))}


TASK = RetrievalTask()
