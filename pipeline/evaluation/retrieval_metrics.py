"""Audio-visual cross-modal retrieval metrics: AP, mAP in each direction, the per-query AP table.

Task (DESIGN.md "Retrieval task (VEGAS)"): a query in one modality (the audio of a clip) ranks
every item of the other modality (the visual features of every test clip) by cosine similarity;
a gallery item is relevant when it has the query's class. Setup of Zeng, Yu and Oyama, "Deep
Triplet Neural Networks with Cluster-CCA for Audio-Visual Cross-Modal Retrieval" (ACM TOMM 2020,
arXiv 1908.03737), followed by VideoAdviser (Wang et al., IEEE Access 2023) on VEGAS.

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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import MissingInput

log = logging.getLogger(__name__)


DIRECTIONS: tuple[str, ...] = ("a2v", "v2a")  # audio queries over the visual gallery, and the reverse


PER_QUERY_COLUMNS: tuple[str, ...] = ("direction", "id", "label", "ap")


_EPS = 1e-12


_TIE_DECIMALS = 12  # scores equal to this many decimals tie (one threshold of the AP)


_QUERY_CHUNK = 512  # queries ranked at once: bounds the dozen (C, G) score/rank matrices in memory


ArrayLike = Any  # a numpy array, a torch tensor or a sequence of floats (torch is not imported here)


def _numpy(x: Any) -> np.ndarray:
    """A numpy array of a tensor (detached, on the CPU) or of any array-like."""
    if hasattr(x, "detach"):  # a torch tensor
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
        raise MissingInput(f"per-query AP file {path} not found: run `dvc repro evaluate`")
    table = pd.read_csv(path, dtype={"direction": str, "id": str}, keep_default_na=False)
    missing = [c for c in PER_QUERY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {list(PER_QUERY_COLUMNS)}")
    return table
