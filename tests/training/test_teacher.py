"""The teacher's training schedules on small random features (no files needed)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.core.config import TeacherParams, TrainParams
from pipeline.core.paths import SELF_TEACHER
from pipeline.features.arrays import FeatureArrays
from pipeline.models.masks import modality_dropout
from pipeline.models.teacher import PromptTeacher, TeacherConfig
from pipeline.tasks.table import TASKS
from pipeline.training import teacher as teacher_lib

SENTIMENT_TASK, RETRIEVAL_TASK = TASKS.get("sentiment"), TASKS.get("retrieval")

N, F, D, A, M, K = 40, 4, 16, 5, 8, 7


def data() -> tuple[FeatureArrays, torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(N, generator=g) * 6 - 3).round(decimals=1)
    text = torch.randn(N, D, generator=g) + labels[:, None]  # the label is learnable from text
    arrays = FeatureArrays(ids=[f"c{i}" for i in range(N)], video=torch.randn(N, F, D, generator=g),
                           audio=torch.randn(N, A, M, generator=g), text=text,
                           present=torch.ones(N, 3, dtype=torch.bool), prompts=torch.randn(K, D, generator=g),
                           classes=[str(k) for k in range(K)])
    splits = np.array(["train"] * 30 + ["valid"] * 5 + ["test"] * 5)
    return arrays, labels, splits


PARAMS = TeacherParams(layers=1, heads=2, dropout=0.0, video_tokens=F, audio_tokens=A, prompt_alpha=0.1,
                       mask="zeros", schedule="joint", ce_weight=0.5, step1_hidden=8, saliency="prediction",
                       train=TrainParams(epochs=3, batch_size=8, lr=1e-3, warmup=0.1, weight_decay=0.0, device="cpu",
                                         precision="fp32", grad_accum=1, checkpoint_every=0),
                       modality_dropout=0.0)


@pytest.mark.parametrize("schedule", ["joint", "two_phase"])
def test_schedules_train_and_select_on_validation(schedule: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    arrays, labels, splits = data()
    torch.manual_seed(0)
    model, best = teacher_lib.train_teacher(arrays, labels, splits, dataclasses.replace(PARAMS, schedule=schedule),
                                              seed=0, dataset="toy", task=SENTIMENT_TASK)
    assert 0 <= best["epoch"] < 3 and np.isfinite(best["valid_mae"]) and best["epochs_run"] == 3
    out = teacher_lib.predict(model, arrays, torch.arange(N))
    assert out["logits"].shape == (N, K) and torch.isfinite(out["reg"]).all()
    curves = tmp_path / "dvclive" / "toy" / "teacher" / "seed_0"
    assert (curves / "plots" / "metrics" / "valid" / "mae.tsv").is_file()
    if schedule == "two_phase":  # phase 1 is selected on the classification loss
        assert (curves / "phase1" / "plots" / "metrics" / "valid" / "ce.tsv").is_file()


def test_two_phase_second_phase_trains_only_g(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    arrays, labels, splits = data()
    snapshots = []
    real_fit = teacher_lib.fit

    def spy(model, parameters, **kwargs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        result = real_fit(model, parameters, **kwargs)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return result

    monkeypatch.setattr(teacher_lib, "fit", spy)
    torch.manual_seed(0)
    model, _ = teacher_lib.train_teacher(arrays, labels, splits, dataclasses.replace(PARAMS, schedule="two_phase"),
                                           seed=0, dataset="toy", task=SENTIMENT_TASK)
    before, after = snapshots[2], snapshots[3]  # around the second phase
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("step1.") for k in changed)
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "mask_tokens")  # restored


def test_saliency_definitions() -> None:
    full, without, y = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 1.0]), torch.tensor([1.0, 1.0])
    # prediction: |r(x) - r(x without m)|
    torch.testing.assert_close(SENTIMENT_TASK.saliency(full, without, y, "prediction"), torch.tensor([0.5, 1.0]))
    # loss: |y - r(x without m)| - |y - r(x)|: removing m hurts clip 0 by 0.5, helps clip 1 by 1.0
    torch.testing.assert_close(SENTIMENT_TASK.saliency(full, without, y, "loss"), torch.tensor([0.5, -1.0]))


def test_modality_predictions_mask_the_other_modalities(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    arrays, labels, splits = data()
    torch.manual_seed(0)
    model, _ = teacher_lib.train_teacher(arrays, labels, splits, PARAMS, seed=0, dataset="toy", task=SENTIMENT_TASK)
    full_out = teacher_lib.predict(model, arrays, torch.arange(N))
    full = full_out["reg"]
    out = teacher_lib.modality_predictions(model, arrays, full_out, labels, "prediction", task=SENTIMENT_TASK)
    only_text = teacher_lib.predict(model, arrays, torch.arange(N), keep=torch.tensor([False, False, True]))
    np.testing.assert_allclose(out["reg_only_text"], only_text["reg"].numpy())
    no_text = teacher_lib.predict(model, arrays, torch.arange(N), keep=torch.tensor([True, True, False]))
    np.testing.assert_allclose(out["saliency_text"], (full - no_text["reg"]).abs().numpy())
    np.testing.assert_allclose(out["reg_without_text"], no_text["reg"].numpy())
    assert out["saliency_text"].mean() > 0


def class_data() -> tuple[FeatureArrays, torch.Tensor, np.ndarray]:
    """K-class labels learnable from video; no transcripts (text absent), as in the retrieval datasets."""
    arrays, _, splits = data()
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, K, (N,), generator=g).float()
    arrays.video = torch.randn(N, F, D, generator=g) + 4 * torch.nn.functional.one_hot(labels.long(), D)[:, None]
    arrays.present[:, 2] = False
    return arrays, labels, splits


def test_retrieval_teacher_classifies_without_the_regression_head(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    arrays, labels, splits = class_data()
    torch.manual_seed(0)
    g_before = {k: v.clone() for k, v in teacher_lib.PromptTeacher(
        teacher_lib.TeacherConfig(embed_dim=D, audio_dim=M, num_classes=K, frames=F, audio_tokens=A, layers=1,
                                    heads=2, dropout=0.0, prompt_alpha=0.1, mask="zeros", step1_hidden=8),
        arrays.prompts).step1.state_dict().items()}
    torch.manual_seed(0)
    params = dataclasses.replace(PARAMS, train=dataclasses.replace(PARAMS.train, epochs=25, lr=5e-3))
    model, best = teacher_lib.train_teacher(arrays, labels, splits, params, seed=0, dataset="toy", task=RETRIEVAL_TASK)
    assert set(best) == {"epoch", "valid_ce", "epochs_run"} and np.isfinite(best["valid_ce"])
    for k, v in model.step1.state_dict().items():  # g is not trained (same init under the same seed)
        torch.testing.assert_close(v, g_before[k])
    curves = tmp_path / "dvclive" / "toy" / "teacher" / "seed_0" / "plots" / "metrics" / "valid"
    assert (curves / "ce.tsv").is_file() and not (curves / "mae.tsv").exists()
    full = teacher_lib.predict(model, arrays, torch.arange(N))
    train = torch.from_numpy(splits == "train")
    assert (full["logits"][train].argmax(-1) == labels[train].long()).float().mean() > 0.5
    out = teacher_lib.modality_predictions(model, arrays, full, labels, "prediction", task=RETRIEVAL_TASK)
    assert out["logits_only_video"].shape == (N, K) and "reg_only_video" not in out
    no_video = teacher_lib.predict(model, arrays, torch.arange(N), keep=torch.tensor([False, True, True]))
    tv = 0.5 * (full["logits"].softmax(-1) - no_video["logits"].softmax(-1)).abs().sum(-1)
    np.testing.assert_allclose(out["saliency_video"], tv.numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["saliency_text"], 0.0, atol=1e-7)  # text is absent: masking it changes nothing
    loss = RETRIEVAL_TASK.saliency(full["logits"], no_video["logits"], labels, "loss")
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(loss, ce(no_video["logits"], labels.long(), reduction="none")
                               - ce(full["logits"], labels.long(), reduction="none"))


# --------------------------------------------------------------------------- modality dropout, the `self` teacher


def test_modality_dropout_keeps_one_present_modality_and_drops_at_rate_p() -> None:
    g = torch.Generator().manual_seed(0)
    present = torch.rand(20000, 3, generator=g) > 0.2  # some clips lack modalities, a few lack all
    kept = modality_dropout(present, 0.3, generator=g)
    assert not (kept & ~present).any()  # never adds a modality a clip does not have
    has_any = present.any(dim=1)
    assert kept[has_any].any(dim=1).all() and not kept[~has_any].any()
    full = present.all(dim=1)
    assert kept[full].float().mean().item() == pytest.approx(0.7 + 0.3**3 / 3, abs=0.01)  # rescue adds (p^3)/3
    assert torch.equal(modality_dropout(present, 0.0), present)
    with pytest.raises(ValueError, match="modality_dropout"):
        modality_dropout(present, 1.0)


def test_modality_dropout_trains_the_mask_vectors(tmp_path, monkeypatch) -> None:
    """Without dropout the learned mask vectors of complete data never get a gradient; with it they move."""
    monkeypatch.chdir(tmp_path)
    arrays, labels, splits = data()
    moved = {}
    for p in (0.0, 0.5):
        torch.manual_seed(0)
        params = dataclasses.replace(PARAMS, mask="learned", modality_dropout=p)
        model, _ = teacher_lib.train_teacher(arrays, labels, splits, params, seed=0, dataset=f"toy{p}",
                                             task=SENTIMENT_TASK)
        moved[p] = model.mask_tokens.detach().abs().sum(dim=1)  # (3,): they start at zero
    assert torch.equal(moved[0.0], torch.zeros(3))
    assert (moved[0.5] > 0).all()


def test_clip_anchored_teacher_starts_at_the_scaled_clip_similarities() -> None:
    """At initialisation c_k = s cos(normalize(mean_f v_f), P_k): CLIP's zero-shot similarity of the clip and
    prompt k; with the video masked, the transcript's; with neither, the learned anchor (uniform start)."""
    arrays, _, _ = data()
    torch.manual_seed(0)
    config = TeacherConfig(embed_dim=D, audio_dim=M, num_classes=K, frames=F, audio_tokens=A, layers=1, heads=2,
                           dropout=0.1, prompt_alpha=0.1, mask="learned", step1_hidden=8)
    model = PromptTeacher(config, arrays.prompts).eval()
    batch = arrays.index(torch.arange(8))
    scale = model.log_scale.exp()
    prompts = torch.nn.functional.normalize(arrays.prompts, dim=-1)  # (K, D)
    clip_emb = torch.nn.functional.normalize(batch["video"].mean(dim=1), dim=-1)  # (B, D)
    torch.testing.assert_close(model(**batch)["logits"], scale * clip_emb @ prompts.T)
    no_video = {**batch, "present": torch.tensor([[False, True, True]] * 8)}
    text_emb = torch.nn.functional.normalize(batch["text"], dim=-1)
    torch.testing.assert_close(model(**no_video)["logits"], scale * text_emb @ prompts.T)
    audio_only = model(**{**batch, "present": torch.tensor([[False, True, False]] * 8)})["logits"]
    torch.testing.assert_close(audio_only, audio_only[:1].expand(8, -1))  # the same anchor for every clip


def test_self_teacher_never_sees_video_or_audio(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    arrays, labels, splits = data()
    text_only = teacher_lib.restricted(arrays, ("text",))
    assert not text_only.present[:, :2].any() and text_only.present[:, 2].all()
    torch.manual_seed(0)
    model, _ = teacher_lib.train_teacher(text_only, labels, splits, PARAMS, seed=0, dataset="toy",
                                           task=SENTIMENT_TASK, name=SELF_TEACHER)
    shuffled = dataclasses.replace(text_only, video=text_only.video.flip(0), audio=text_only.audio + 3.0)
    idx = torch.arange(N)
    torch.testing.assert_close(teacher_lib.predict(model, shuffled, idx)["reg"],
                               teacher_lib.predict(model, text_only, idx)["reg"])
    assert (tmp_path / "dvclive" / "toy" / "teacher_self" / "seed_0").is_dir()


def test_subset_columns_cover_every_subset() -> None:
    cols = teacher_lib.subset_columns(["video", "audio", "text"], "reg")
    assert cols == {"video+audio+text": "reg", "video+audio": "reg_without_text", "video+text": "reg_without_audio",
                    "audio+text": "reg_without_video", "video": "reg_only_video", "audio": "reg_only_audio",
                    "text": "reg_only_text"}
    assert teacher_lib.subset_columns(["video", "audio"], "logits") == {
        "video+audio": "logits", "video": "logits_only_video", "audio": "logits_only_audio"}
