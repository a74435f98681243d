"""Tests of the retrieval metrics, the two-branch student and its losses (pipeline.tasks.retrieval)."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tamper
from sklearn.metrics import average_precision_score

from pipeline.core import paths
from pipeline.core.checkpoints import UnsafeCheckpoint
from pipeline.core.config import ConfigError
from pipeline.distillation.losses import kd_loss
from pipeline.evaluation import retrieval_metrics as metrics_module
from pipeline.evaluation.retrieval_metrics import (
    PER_QUERY_COLUMNS,
    average_precision,
    cosine_similarity,
    metrics_from_per_query,
    read_per_query_ap,
    retrieval_map,
    retrieval_metrics,
    write_per_query_ap,
)
from pipeline.models.retrieval_student import (
    RETRIEVAL_CHECKPOINT,
    RetrievalStudent,
    RetrievalStudentConfig,
    load_retrieval_student,
    save_retrieval_student,
)
from pipeline.tasks.retrieval import branch_kd_loss, cross_modal_triplet_loss, retrieval_loss, supcon_loss

# --------------------------------------------------------------------------- average_precision


def test_ap_hand_computed_ranking() -> None:
    # relevant at ranks 1, 3, 5: (1/1 + 2/3 + 3/5) / 3
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    assert average_precision(scores, [1, 0, 1, 0, 1]) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_ap_sorts_by_descending_score() -> None:
    # ranking: items 1, 3, 0, 2; relevant items 0 and 2 sit at ranks 3 and 4
    assert average_precision([0.2, 0.9, -0.5, 0.4], [True, False, True, False]) == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_ap_single_relevant_item() -> None:
    assert average_precision([0.1, 0.9, 0.5], [1, 0, 0]) == pytest.approx(1 / 3)
    assert average_precision([0.1, 0.9, 0.5], [0, 1, 0]) == 1.0


def test_ap_several_relevant_items_all_first_is_one() -> None:
    assert average_precision([0.9, 0.8, 0.1, 0.0], [1, 1, 0, 0]) == 1.0
    assert average_precision([0.3, 0.2, 0.1], [1, 1, 1]) == 1.0


def test_ap_no_relevant_item_is_zero() -> None:
    assert average_precision([0.3, 0.2, 0.1], [0, 0, 0]) == 0.0


def test_ap_ties_form_one_threshold() -> None:
    # all scores equal: one threshold holding every item, P = 1/3 wherever the relevant item sits
    assert average_precision([0.5, 0.5, 0.5], [0, 1, 0]) == pytest.approx(1 / 3)
    assert average_precision([0.5, 0.5, 0.5], [1, 0, 0]) == pytest.approx(1 / 3)
    assert average_precision([0.5, 0.5, 0.5], [0, 0, 1]) == pytest.approx(1 / 3)
    # a tie inside a ranking: items 1 and 2 tie at 0.7, the threshold 0.7 holds 3 items, 1 relevant
    assert average_precision([0.9, 0.7, 0.7], [0, 0, 1]) == pytest.approx(1 / 3)
    assert average_precision([0.9, 0.7, 0.7], [0, 1, 0]) == pytest.approx(1 / 3)
    # thresholds 0.9 (1 item, relevant: P = 1), 0.4 (4 items, 2 relevant: P = 2/4), 0.1 (6 items, 3 relevant:
    # P = 3/6): AP = (1 * 1 + 1 * 2/4 + 1 * 3/6) / 3 = 2/3
    assert average_precision([0.4, 0.1, 0.9, 0.4, 0.4, 0.1], [0, 1, 1, 1, 0, 0]) == pytest.approx(2 / 3)
    # scores 1 ulp apart tie (rounded to 12 decimals)
    assert average_precision([0.3, 0.1 + 0.2], [0, 1]) == pytest.approx(1 / 2)


def test_ap_matches_sklearn_with_many_ties() -> None:
    rng = np.random.default_rng(3)
    for levels in (2, 3, 5):  # few distinct scores: large tie groups
        scores = rng.integers(0, levels, size=(12, 40)) / levels  # (Q, G)
        relevant = rng.random((12, 40)) < 0.3
        relevant[:, 0] = True
        for s, rel in zip(scores, relevant, strict=True):
            assert average_precision(s, rel) == pytest.approx(average_precision_score(rel, s), abs=1e-12)


def test_ap_matches_sklearn_without_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.normal(size=30)
        relevant = rng.random(30) < 0.3
        relevant[0] = True
        assert average_precision(scores, relevant) == pytest.approx(average_precision_score(relevant, scores))


def test_ap_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="shape|expects"):
        average_precision([0.1, 0.2], [1, 0, 0])
    with pytest.raises(ValueError, match="not finite"):
        average_precision([0.1, float("nan")], [1, 0])
    with pytest.raises(ValueError, match="non-empty"):
        average_precision([], [])


# --------------------------------------------------------------------------- retrieval_map


GALLERY = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # (3, 2)
GALLERY_LABELS = np.array([0, 1, 0])


def test_retrieval_map_hand_computed() -> None:
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])  # (2, 2)
    # q0 ranks g0 (1), g2 (0.71), g1 (0): relevant, relevant, not -> AP 1
    # q1 ranks g1 (1), g2 (0.71), g0 (0): not, relevant, relevant -> AP (1/2 + 2/3) / 2
    mean_ap, per_query = retrieval_map(queries, [0, 0], GALLERY, GALLERY_LABELS)
    assert per_query == pytest.approx([1.0, (1 / 2 + 2 / 3) / 2])
    assert mean_ap == pytest.approx((1.0 + 7 / 12) / 2)
    # cosine similarity: scaling any vector changes nothing
    scaled, _ = retrieval_map(queries * 3.0, [0, 0], GALLERY * np.array([[2.0], [0.5], [7.0]]), GALLERY_LABELS)
    assert scaled == pytest.approx(mean_ap)


def test_retrieval_map_ties_do_not_depend_on_gallery_order() -> None:
    v = np.array([0.3, -1.7, 0.2])
    gallery = np.stack([v, 3.0 * v, 0.7 * v, -v])  # (4, 3): the first three tie (cosine 1 up to rounding)
    # threshold 1 holds items 0, 1, 2, of which 1 and 2 are relevant: P = 2/3 for both -> AP = 2/3
    _, per_query = retrieval_map(v[None, :], [0], gallery, [1, 0, 0, 1])
    assert per_query == pytest.approx([2 / 3])
    _, per_query = retrieval_map(v[None, :], [0], gallery[[2, 1, 0, 3]], [0, 0, 1, 1])
    assert per_query == pytest.approx([2 / 3])


def test_retrieval_map_matches_sklearn_with_duplicate_gallery_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "_QUERY_CHUNK", 4)  # several chunks
    rng = np.random.default_rng(4)
    prototypes = rng.normal(size=(4, 6))
    gallery = prototypes[rng.integers(0, 4, 30)] * rng.uniform(0.5, 2.0, size=(30, 1))  # (30, 6): 4 directions
    yg = rng.integers(0, 3, 30)
    queries, yq = rng.normal(size=(10, 6)), rng.integers(0, 3, 10)
    _, per_query = retrieval_map(queries, yq, gallery, yg)
    scores = np.round(cosine_similarity(queries, gallery), 12)  # (10, 30): 4 distinct values per row
    expected = [average_precision_score(yg == yq[i], scores[i]) if (yg == yq[i]).any() else 0.0 for i in range(10)]
    assert per_query == pytest.approx(expected, abs=1e-12)


def test_retrieval_map_invariant_to_gallery_permutation() -> None:
    rng = np.random.default_rng(5)
    gallery = rng.normal(size=(5, 8))[rng.integers(0, 5, 60)]  # (60, 8): identical vectors tie
    yg = rng.integers(0, 4, 60)
    queries, yq = rng.normal(size=(15, 8)), rng.integers(0, 4, 15)
    mean_ap, per_query = retrieval_map(queries, yq, gallery, yg)
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(60)
        permuted_mean, permuted = retrieval_map(queries, yq, gallery[perm], yg[perm])
        np.testing.assert_allclose(permuted, per_query, rtol=1e-12, atol=0)
        assert permuted_mean == pytest.approx(mean_ap, rel=1e-12)


def test_retrieval_map_query_without_relevant_item(caplog: pytest.LogCaptureFixture) -> None:
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    with caplog.at_level(logging.WARNING, logger="pipeline.tasks.retrieval"):
        mean_ap, per_query = retrieval_map(queries, [0, 7], GALLERY, GALLERY_LABELS)
    assert per_query.tolist() == [1.0, 0.0]
    assert mean_ap == pytest.approx(0.5)  # the query without a relevant item counts as 0
    assert "1 of 2 queries have no relevant gallery item" in caplog.text


def test_retrieval_map_agrees_with_per_query_average_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "_QUERY_CHUNK", 3)  # several chunks
    rng = np.random.default_rng(1)
    queries, gallery = rng.normal(size=(8, 5)), rng.normal(size=(11, 5))
    yq, yg = rng.integers(0, 3, 8), rng.integers(0, 3, 11)
    scores = cosine_similarity(queries, gallery)  # (8, 11)
    expected = [average_precision(scores[i], yg == yq[i]) for i in range(8)]
    mean_ap, per_query = retrieval_map(queries, yq, gallery, yg)
    assert per_query == pytest.approx(expected)
    assert mean_ap == pytest.approx(np.mean(expected))


def test_retrieval_map_accepts_tensors() -> None:
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    mean_ap, _ = retrieval_map(queries, torch.tensor([0, 0]), torch.tensor(GALLERY), torch.tensor(GALLERY_LABELS))
    assert mean_ap == pytest.approx((1.0 + 7 / 12) / 2)


def test_retrieval_map_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="embeddings"):
        retrieval_map(np.ones((2, 3)), [0, 0], GALLERY, GALLERY_LABELS)
    with pytest.raises(ValueError, match="labels"):
        retrieval_map(np.ones((2, 2)), [0], GALLERY, GALLERY_LABELS)


# --------------------------------------------------------------------------- retrieval_metrics


def _paired(seed: int = 0, n: int = 12, classes: int = 3, dim: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, dim))
    audio = centres[labels] + rng.normal(scale=0.8, size=(n, dim))  # (N, D)
    visual = centres[labels] + rng.normal(scale=0.8, size=(n, dim))  # (N, D)
    return audio, visual, labels


def test_retrieval_metrics_directions_and_table() -> None:
    audio, visual, labels = _paired()
    metrics, table = retrieval_metrics(audio, visual, labels, ids=[f"c{i}" for i in range(12)])
    assert set(metrics) == {"map_a2v", "map_v2a", "map_mean"}
    assert metrics["map_a2v"] == pytest.approx(retrieval_map(audio, labels, visual, labels)[0])
    assert metrics["map_v2a"] == pytest.approx(retrieval_map(visual, labels, audio, labels)[0])
    assert metrics["map_mean"] == pytest.approx((metrics["map_a2v"] + metrics["map_v2a"]) / 2)
    assert tuple(table.columns) == PER_QUERY_COLUMNS
    assert table["direction"].tolist() == ["a2v"] * 12 + ["v2a"] * 12
    assert table["id"].tolist() == [f"c{i}" for i in range(12)] * 2
    assert metrics_from_per_query(table) == pytest.approx(metrics)


def test_retrieval_metrics_symmetry() -> None:
    audio, visual, labels = _paired()
    metrics, _ = retrieval_metrics(audio, visual, labels)
    swapped, _ = retrieval_metrics(visual, audio, labels)
    assert swapped["map_a2v"] == pytest.approx(metrics["map_v2a"])
    assert swapped["map_v2a"] == pytest.approx(metrics["map_a2v"])
    same, _ = retrieval_metrics(audio, audio, labels)
    assert same["map_a2v"] == pytest.approx(same["map_v2a"])


def test_retrieval_metrics_perfect_and_chance() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    perfect = np.eye(3)[labels]  # (6, 3): one direction per class
    metrics, table = retrieval_metrics(perfect, perfect, labels)
    assert metrics == pytest.approx({"map_a2v": 1.0, "map_v2a": 1.0, "map_mean": 1.0})
    assert (table["ap"] == 1.0).all()
    rng = np.random.default_rng(0)
    labels = np.arange(600) % 10
    noise, _ = retrieval_metrics(rng.normal(size=(600, 8)), rng.normal(size=(600, 8)), labels)
    assert 0.07 < noise["map_mean"] < 0.14  # random embeddings: about the share of relevant items, 0.1


def test_retrieval_metrics_rejects_unpaired() -> None:
    with pytest.raises(ValueError, match="paired"):
        retrieval_metrics(np.ones((3, 2)), np.ones((4, 2)), [0, 1, 2])


def test_retrieval_metrics_missing_modalities_are_left_out(caplog: pytest.LogCaptureFixture,
                                                            tmp_path: Path) -> None:
    audio, visual, labels = _paired(n=12)
    ids = [f"c{i}" for i in range(12)]
    has_audio = np.ones(12, dtype=bool)
    has_audio[[1, 5, 9]] = False
    has_visual = np.ones(12, dtype=bool)
    has_visual[[2, 9]] = False
    audio[~has_audio] = 0.3  # what a branch gives every clip with zero features: one shared vector
    visual[~has_visual] = -0.7
    with caplog.at_level(logging.WARNING, logger="pipeline.tasks.retrieval"):
        metrics, table = retrieval_metrics(audio, visual, labels, ids=ids, audio_present=has_audio,
                                           visual_present=has_visual)
    assert "3 of 12 clips have no audio: they are not a2v queries and not items of the v2a gallery" in caplog.text
    assert "2 of 12 clips have no visual: they are not v2a queries and not items of the a2v gallery" in caplog.text
    assert "share their (normalised) embedding" not in caplog.text  # the shared vectors were left out
    map_a2v, ap_a2v = retrieval_map(audio[has_audio], labels[has_audio], visual[has_visual], labels[has_visual])
    map_v2a, ap_v2a = retrieval_map(visual[has_visual], labels[has_visual], audio[has_audio], labels[has_audio])
    assert metrics == pytest.approx({"map_a2v": map_a2v, "map_v2a": map_v2a, "map_mean": (map_a2v + map_v2a) / 2})
    a2v, v2a = table[table["direction"] == "a2v"], table[table["direction"] == "v2a"]
    assert a2v["id"].tolist() == [ids[i] for i in range(12) if has_audio[i]]  # rows only for real queries
    assert v2a["id"].tolist() == [ids[i] for i in range(12) if has_visual[i]]
    assert a2v["label"].tolist() == labels[has_audio].tolist()
    np.testing.assert_array_equal(a2v["ap"], ap_a2v)
    np.testing.assert_array_equal(v2a["ap"], ap_v2a)
    assert metrics_from_per_query(table) == pytest.approx(metrics, rel=1e-15)
    path = tmp_path / "seed_0.csv"
    write_per_query_ap(table, path)
    assert metrics_from_per_query(read_per_query_ap(path)) == pytest.approx(metrics, rel=1e-15)
    # without the masks the shared vectors tie in every ranking, and a warning counts them
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.tasks.retrieval"):
        unmasked, unmasked_table = retrieval_metrics(audio, visual, labels, ids=ids)
    assert "a2v gallery (visual embeddings): 2 of 12 items share their (normalised) embedding" in caplog.text
    assert "v2a gallery (audio embeddings): 3 of 12 items share their (normalised) embedding" in caplog.text
    assert len(unmasked_table) == 24 and unmasked != pytest.approx(metrics)


def test_retrieval_metrics_counts_identical_gallery_items(caplog: pytest.LogCaptureFixture) -> None:
    audio, visual, labels = _paired(n=12)
    visual[[3, 7]] = visual[0]  # three identical items
    visual[11] = 2.5 * visual[5]  # the same direction: identical once normalised
    with caplog.at_level(logging.WARNING, logger="pipeline.tasks.retrieval"):
        retrieval_metrics(audio, visual, labels)
    assert ("a2v gallery (visual embeddings): 5 of 12 items share their (normalised) embedding with another item, "
            "in 2 group(s)") in caplog.text
    assert "v2a gallery" not in caplog.text
    caplog.clear()
    present = np.ones(12, dtype=bool)
    present[[3, 7, 11]] = False  # only present items count: nothing identical is left
    with caplog.at_level(logging.WARNING, logger="pipeline.tasks.retrieval"):
        retrieval_metrics(audio, visual, labels, visual_present=present)
    assert "share their" not in caplog.text


def test_retrieval_metrics_rejects_bad_masks() -> None:
    audio, visual, labels = _paired(n=6)
    with pytest.raises(ValueError, match=r"audio_present must be a boolean array of shape \(6,\).*got dtype int64"):
        retrieval_metrics(audio, visual, labels, audio_present=np.ones(6, dtype=np.int64))
    with pytest.raises(ValueError, match=r"visual_present must be a boolean array of shape \(6,\).*shape \(5,\)"):
        retrieval_metrics(audio, visual, labels, visual_present=np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match=r"no clip has visual \(visual_present is all False\)"):
        retrieval_metrics(audio, visual, labels, visual_present=np.zeros(6, dtype=bool))
    metrics, _ = retrieval_metrics(audio, visual, labels, audio_present=torch.ones(6, dtype=torch.bool))
    assert metrics == pytest.approx(retrieval_metrics(audio, visual, labels)[0])


def test_per_query_csv_round_trip(tmp_path: Path) -> None:
    audio, visual, labels = _paired()
    metrics, table = retrieval_metrics(audio, visual, labels, ids=[f"0{i}" for i in range(12)])
    path = tmp_path / "out" / "seed_0.csv"
    write_per_query_ap(table, path)
    assert path.read_text().splitlines()[0] == "direction,id,label,ap"
    back = read_per_query_ap(path)
    assert back["id"].tolist() == table["id"].tolist()  # ids stay strings ("00", not 0)
    assert metrics_from_per_query(back) == pytest.approx(metrics)
    assert [p.name for p in path.parent.iterdir()] == ["seed_0.csv"]


def test_metrics_from_per_query_needs_both_directions() -> None:
    table = pd.DataFrame({"direction": ["a2v"], "id": ["x"], "label": [0], "ap": [1.0]})
    with pytest.raises(ValueError, match="v2a"):
        metrics_from_per_query(table)


# --------------------------------------------------------------------------- student


CONFIG = RetrievalStudentConfig(audio_dim=6, visual_dim=10, embed_dim=8, hidden_dim=16, num_classes=4)


def test_student_shapes_and_normalisation() -> None:
    torch.manual_seed(0)
    model = RetrievalStudent(CONFIG)
    out = model(audio=torch.randn(5, 6), visual=torch.randn(5, 10))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "audio_emb": (5, 8), "audio_logits": (5, 4), "visual_emb": (5, 8), "visual_logits": (5, 4)}
    for key in ("audio_emb", "visual_emb"):
        assert torch.allclose(out[key].norm(dim=-1), torch.ones(5), atol=1e-6), key
    # one classifier shared by both branches
    assert torch.allclose(out["audio_logits"], model.classifier(out["audio_emb"]))
    assert torch.allclose(out["visual_logits"], model.classifier(out["visual_emb"]))


def test_student_single_modality_and_sequences() -> None:
    torch.manual_seed(0)
    model = RetrievalStudent(CONFIG).eval()
    assert set(model(audio=torch.randn(2, 6))) == {"audio_emb", "audio_logits"}
    assert set(model(visual=torch.randn(2, 10))) == {"visual_emb", "visual_logits"}
    frames = torch.randn(2, 3, 10)  # (B, L, Dv)
    assert torch.allclose(model(visual=frames)["visual_emb"], model(visual=frames.mean(1))["visual_emb"])
    with pytest.raises(ValueError, match="audio, visual or both"):
        model()
    with pytest.raises(ValueError, match=r"\(B, 6\)"):
        model(audio=torch.randn(2, 7))


def test_student_config_is_frozen_and_checked() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CONFIG.embed_dim = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="embed_dim"):
        dataclasses.replace(CONFIG, embed_dim=0)
    with pytest.raises(ValueError, match="dropout"):
        dataclasses.replace(CONFIG, dropout=1.0)


def test_student_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = RetrievalStudent(dataclasses.replace(CONFIG, dropout=0.1)).eval()
    path = tmp_path / "student.pt"
    save_retrieval_student(path, model, {"seed": 3})
    assert torch.load(path, weights_only=True)["seed"] == 3  # tensors and plain data only
    loaded, ckpt = load_retrieval_student(path)
    assert loaded.config == model.config and ckpt["seed"] == 3
    audio, visual = torch.randn(3, 6), torch.randn(3, 10)
    for key, value in model(audio, visual).items():
        assert torch.equal(loaded(audio, visual)[key], value), key
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        load_retrieval_student(tmp_path / "absent.pt")


def test_tampered_student_checkpoint_is_refused_without_running_code(tmp_path: Path) -> None:
    path = tmp_path / paths.student_dir("ds", "av-kd", 1) / RETRIEVAL_CHECKPOINT
    marker = tmp_path / "marker"
    save_retrieval_student(path, RetrievalStudent(CONFIG), {"seed": 1, "best": {"epoch": 0, "valid_map_mean": 0.5}})
    tamper(path, marker)
    refused = r"holds pickled Python objects.*will not unpickle.*could run code"
    with pytest.raises(UnsafeCheckpoint, match=refused) as err:
        load_retrieval_student(path)
    assert not marker.exists()
    assert str(err.value).startswith(str(path)) and str(err.value).endswith("`dvc repro -f distill@av-kd`")


def test_student_provenance_must_be_plain_data(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"save_retrieval_student extra\['best'\]: numpy.float64 is not plain data"):
        save_retrieval_student(tmp_path / "s.pt", RetrievalStudent(CONFIG), {"best": np.float64(0.5)})


# --------------------------------------------------------------------------- losses


def _triplet_reference(a: torch.Tensor, v: torch.Tensor, y: torch.Tensor, margin: float) -> float:
    """Loops over (anchor, positive) pairs with the anchor's hardest negative, both directions."""
    a, v = F.normalize(a, dim=-1), F.normalize(v, dim=-1)
    terms = []
    for x, z in ((a, v), (v, a)):
        hinges = []
        for i in range(len(y)):
            negatives = [float(x[i] @ z[k]) for k in range(len(y)) if y[k] != y[i]]
            if not negatives:
                continue
            hinges += [max(0.0, margin - float(x[i] @ z[j]) + max(negatives)) for j in range(len(y)) if y[j] == y[i]]
        terms.append(sum(hinges) / len(hinges) if hinges else 0.0)
    return (terms[0] + terms[1]) / 2


def test_triplet_known_value() -> None:
    r = 1 / math.sqrt(2)
    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    visual = torch.tensor([[1.0, 0.0], [r, r]])
    # a->v: anchor 0: [0.5 - 1 + r]+ ; anchor 1: [0.5 - r + 0]+ = 0
    # v->a: anchor 0: [0.5 - 1 + 0]+ = 0 ; anchor 1: [0.5 - r + r]+ = 0.5
    expected = ((0.5 - 1 + r) / 2 + 0.5 / 2) / 2
    loss = cross_modal_triplet_loss(audio, visual, torch.tensor([0, 1]), margin=0.5)
    assert loss.item() == pytest.approx(expected)


def test_triplet_matches_reference_with_several_positives() -> None:
    torch.manual_seed(0)
    a, v = torch.randn(9, 5), torch.randn(9, 5)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 1])
    assert cross_modal_triplet_loss(a, v, y, 0.3).item() == pytest.approx(_triplet_reference(a, v, y, 0.3), abs=1e-6)


def test_triplet_zero_when_separated_and_finite_gradients() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    separated = torch.eye(3)[labels].requires_grad_(True)  # same class: cos 1, other class: cos 0
    loss = cross_modal_triplet_loss(separated, separated, labels, margin=0.5)
    loss.backward()
    assert loss.item() == 0.0 and separated.grad is not None and torch.all(separated.grad == 0)
    assert cross_modal_triplet_loss(separated, separated, labels, margin=1.5).item() == pytest.approx(0.5)

    torch.manual_seed(0)
    a, v = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    loss = cross_modal_triplet_loss(a, v, labels, margin=0.2)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(a.grad).all() and torch.isfinite(v.grad).all()
    assert a.grad.abs().sum() > 0


def test_triplet_without_negatives_is_zero_and_differentiable() -> None:
    a = torch.randn(3, 4, requires_grad=True)
    loss = cross_modal_triplet_loss(a, torch.randn(3, 4), torch.zeros(3, dtype=torch.long), margin=0.2)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(a.grad).all()


def test_supcon_known_value_and_infonce_case() -> None:
    eye = torch.eye(2)
    # s = I / tau with tau = 1: each anchor -log(e / (e + 1)) = log(1 + e^-1)
    loss = supcon_loss(eye, eye, torch.tensor([0, 1]), temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))
    torch.manual_seed(0)
    a, v = torch.randn(5, 4), torch.randn(5, 4)
    logits = F.normalize(a, dim=-1) @ F.normalize(v, dim=-1).T / 0.2
    target = torch.arange(5)
    infonce = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert supcon_loss(a, v, target, 0.2).item() == pytest.approx(infonce.item(), abs=1e-6)


def test_supcon_matches_reference_with_several_positives() -> None:
    torch.manual_seed(1)
    a, v = torch.randn(7, 3), torch.randn(7, 3)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    tau = 0.5
    s = F.normalize(a, dim=-1) @ F.normalize(v, dim=-1).T / tau
    terms = []
    for m in (s, s.T):
        per_anchor = []
        for i in range(7):
            positives = [j for j in range(7) if y[j] == y[i]]
            log_den = torch.logsumexp(m[i], 0)
            per_anchor.append(-sum(float(m[i, p] - log_den) for p in positives) / len(positives))
        terms.append(sum(per_anchor) / 7)
    assert supcon_loss(a, v, y, tau).item() == pytest.approx((terms[0] + terms[1]) / 2, abs=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        supcon_loss(a, v, y, 0.0)


def test_supcon_gradients_finite() -> None:
    a, v = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    supcon_loss(a, v, torch.tensor([0, 0, 1, 1, 2, 2]), 0.1).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(v.grad).all()


def test_retrieval_loss_combines_metric_and_shared_classifier_ce() -> None:
    torch.manual_seed(0)
    model = RetrievalStudent(CONFIG)
    out = model(audio=torch.randn(6, 6), visual=torch.randn(6, 10))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    ce = (F.cross_entropy(out["audio_logits"], y) + F.cross_entropy(out["visual_logits"], y)) / 2
    for objective, metric in (("triplet", cross_modal_triplet_loss(out["audio_emb"], out["visual_emb"], y, 0.3)),
                              ("supcon", supcon_loss(out["audio_emb"], out["visual_emb"], y, 0.2))):
        parts = retrieval_loss(out, y, objective, margin=0.3, temperature=0.2, ce_weight=0.5)
        assert parts["metric"].item() == pytest.approx(metric.item())
        assert parts["ce"].item() == pytest.approx(ce.item())
        assert parts["loss"].item() == pytest.approx(metric.item() + 0.5 * ce.item())
    parts = retrieval_loss(out, y, "triplet")
    parts["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ConfigError, match="supcon"):
        retrieval_loss(out, y, "contrastive")


def test_branch_kd_loss_reuses_hinton_kd() -> None:
    torch.manual_seed(0)
    audio_logits, visual_logits = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5)
    teacher = torch.randn(4, 5, requires_grad=True)
    both = branch_kd_loss([audio_logits, visual_logits], teacher, temperature=2.0)
    expected = (kd_loss(audio_logits, teacher, 2.0) + kd_loss(visual_logits, teacher, 2.0)) / 2
    assert both.item() == pytest.approx(expected.item())
    single = kd_loss(audio_logits, teacher, 2.0)
    assert branch_kd_loss(audio_logits, teacher, 2.0).item() == pytest.approx(single.item())
    assert branch_kd_loss([teacher.detach(), teacher.detach()], teacher, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    both.backward()
    assert torch.isfinite(audio_logits.grad).all() and teacher.grad is None  # the teacher is a constant target
    with pytest.raises(ValueError, match="shape"):
        branch_kd_loss([torch.randn(4, 3)], teacher, 2.0)
