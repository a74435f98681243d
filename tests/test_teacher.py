"""The teacher's training schedules on small random features (no files needed)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline import teacher as teacher_stage
from pipeline.config import TeacherParams, TrainParams
from pipeline.features import FeatureArrays

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
                                         precision="fp32", grad_accum=1, checkpoint_every=0))


@pytest.mark.parametrize("schedule", ["joint", "two_phase"])
def test_schedules_train_and_select_on_validation(schedule: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    arrays, labels, splits = data()
    torch.manual_seed(0)
    model, best = teacher_stage.train_teacher(arrays, labels, splits, dataclasses.replace(PARAMS, schedule=schedule),
                                              seed=0, dataset="toy")
    assert 0 <= best["epoch"] < 3 and np.isfinite(best["valid_mae"])
    out = teacher_stage.predict(model, arrays, torch.arange(N))
    assert out["logits"].shape == (N, K) and torch.isfinite(out["reg"]).all()
    curves = tmp_path / "dvclive" / "toy" / "teacher" / "seed_0"
    assert (curves / "plots" / "metrics" / "valid" / "mae.tsv").is_file()
    if schedule == "two_phase":  # phase 1 is selected on the classification loss
        assert (curves / "phase1" / "plots" / "metrics" / "valid" / "ce.tsv").is_file()


def test_two_phase_second_phase_trains_only_g(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    arrays, labels, splits = data()
    snapshots = []
    real_fit = teacher_stage.fit

    def spy(model, parameters, **kwargs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        result = real_fit(model, parameters, **kwargs)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return result

    monkeypatch.setattr(teacher_stage, "fit", spy)
    torch.manual_seed(0)
    model, _ = teacher_stage.train_teacher(arrays, labels, splits, dataclasses.replace(PARAMS, schedule="two_phase"),
                                           seed=0, dataset="toy")
    before, after = snapshots[2], snapshots[3]  # around the second phase
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("step1.") for k in changed)
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "mask_tokens")  # restored


def test_saliency_definitions() -> None:
    full, without, y = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 1.0]), torch.tensor([1.0, 1.0])
    # prediction: |r(x) - r(x without m)|
    torch.testing.assert_close(teacher_stage.saliency(full, without, y, "prediction"), torch.tensor([0.5, 1.0]))
    # loss: |y - r(x without m)| - |y - r(x)|: removing m hurts clip 0 by 0.5, helps clip 1 by 1.0
    torch.testing.assert_close(teacher_stage.saliency(full, without, y, "loss"), torch.tensor([0.5, -1.0]))


def test_modality_predictions_mask_the_other_modalities(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    arrays, labels, splits = data()
    torch.manual_seed(0)
    model, _ = teacher_stage.train_teacher(arrays, labels, splits, PARAMS, seed=0, dataset="toy")
    full_out = teacher_stage.predict(model, arrays, torch.arange(N))
    full = full_out["reg"]
    out = teacher_stage.modality_predictions(model, arrays, full_out, labels, "prediction")
    only_text = teacher_stage.predict(model, arrays, torch.arange(N), keep=torch.tensor([False, False, True]))
    np.testing.assert_allclose(out["reg_only_text"], only_text["reg"].numpy())
    no_text = teacher_stage.predict(model, arrays, torch.arange(N), keep=torch.tensor([True, True, False]))
    np.testing.assert_allclose(out["saliency_text"], (full - no_text["reg"]).abs().numpy())
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
    g_before = {k: v.clone() for k, v in teacher_stage.PromptTeacher(
        teacher_stage.TeacherConfig(embed_dim=D, audio_dim=M, num_classes=K, frames=F, audio_tokens=A, layers=1,
                                    heads=2, dropout=0.0, prompt_alpha=0.1, mask="zeros", step1_hidden=8),
        arrays.prompts).step1.state_dict().items()}
    torch.manual_seed(0)
    params = dataclasses.replace(PARAMS, train=dataclasses.replace(PARAMS.train, epochs=25, lr=5e-3))
    model, best = teacher_stage.train_teacher(arrays, labels, splits, params, seed=0, dataset="toy", task="retrieval")
    assert set(best) == {"epoch", "valid_ce"} and np.isfinite(best["valid_ce"])
    for k, v in model.step1.state_dict().items():  # g is not trained (same init under the same seed)
        torch.testing.assert_close(v, g_before[k])
    curves = tmp_path / "dvclive" / "toy" / "teacher" / "seed_0" / "plots" / "metrics" / "valid"
    assert (curves / "ce.tsv").is_file() and not (curves / "mae.tsv").exists()
    full = teacher_stage.predict(model, arrays, torch.arange(N))
    train = torch.from_numpy(splits == "train")
    assert (full["logits"][train].argmax(-1) == labels[train].long()).float().mean() > 0.5
    out = teacher_stage.modality_predictions(model, arrays, full, labels, "prediction", task="retrieval")
    assert out["logits_only_video"].shape == (N, K) and "reg_only_video" not in out
    no_video = teacher_stage.predict(model, arrays, torch.arange(N), keep=torch.tensor([False, True, True]))
    tv = 0.5 * (full["logits"].softmax(-1) - no_video["logits"].softmax(-1)).abs().sum(-1)
    np.testing.assert_allclose(out["saliency_video"], tv.numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["saliency_text"], 0.0, atol=1e-7)  # text is absent: masking it changes nothing
    loss = teacher_stage.class_saliency(full["logits"], no_video["logits"], labels, "loss")
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(loss, ce(no_video["logits"], labels.long(), reduction="none")
                               - ce(full["logits"], labels.long(), reduction="none"))
