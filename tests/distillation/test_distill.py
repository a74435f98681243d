"""The student side of distill: tokenizer, pretrained loading from a local dir, the students'
modality-specific outputs, method losses (known values)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, RobertaConfig, RobertaModel

from pipeline.core.config import (
    MODALITIES,
    ConfigError,
    DistillParams,
    KDParams,
    MSDParams,
    RetrievalParams,
    StudentParams,
    TrainParams,
    VideoAdviserParams,
)
from pipeline.core.paths import SELF_TEACHER, TEACHER
from pipeline.distillation.families import all_students, parse_student
from pipeline.distillation.methods import METHODS
from pipeline.distillation.train import train_student
from pipeline.features.arrays import FeatureArrays
from pipeline.models.students import MultimodalStudent, TextStudent, build_student, tokenize, train_bpe_tokenizer
from pipeline.tasks.retrieval import BRANCH_MODALITIES
from pipeline.tasks.table import TASKS

SENTIMENT_TASK, RETRIEVAL_TASK = TASKS.get("sentiment"), TASKS.get("retrieval")
TEXTS = ["i thought the movie was great", "honestly the acting felt awful to me", "it was okay i guess"] * 4
STUDENT = StudentParams(pretrained="", hidden_size=32, layers=1, heads=2, intermediate_size=64,
                        vocab_size=300, max_length=24, head_hidden=16, dropout=0.0, video_tokens=3, audio_tokens=5)
RETRIEVAL = RetrievalParams(embed_dim=8, hidden_dim=16, dropout=0.0, objective="supcon", temperature=0.1, margin=0.2,
                            ce_weight=1.0)
TRAIN = TrainParams(epochs=1, batch_size=4, lr=1e-3, warmup=0.1, weight_decay=0.0, device="cpu", precision="fp32",
                    grad_accum=1, checkpoint_every=0)


def params(weight: float = 0.5, distance: str = "mse", msd_distance: str = "l1") -> DistillParams:
    return DistillParams(students=["va-none", "va-kd", "va-videoadviser"], student=STUDENT, retrieval=RETRIEVAL,
                         kd=KDParams(weight=0.5, temperature=2.0), train=TRAIN,
                         videoadviser=VideoAdviserParams(weight=weight, distance=distance),
                         msd=MSDParams(kd_weight=0.0, temperature=2.0, distance=msd_distance,
                                       instance_temperature=1.0, meta_lr=0.1, meta_split="train",
                                       meta_fraction=0.2))


def apply_method(name: str, out: dict, batch: dict, p: DistillParams, task=SENTIMENT_TASK):
    """A method's loss as the trainer computes it: the task's objective, the method's own params section."""
    method = METHODS.get(name)
    return method.loss(task.objective(p), out, batch, method.section_of(p))


def features(n: int) -> FeatureArrays:
    g = torch.Generator().manual_seed(0)
    return FeatureArrays(ids=[str(i) for i in range(n)], video=torch.randn(n, 3, 16, generator=g),
                         audio=torch.randn(n, 5, 8, generator=g), text=torch.randn(n, 16, generator=g),
                         present=torch.ones(n, 3, dtype=torch.bool), prompts=torch.randn(7, 16, generator=g),
                         classes=[str(k) for k in range(7)])


def test_bpe_tokenizer_is_roberta_shaped() -> None:
    tok = train_bpe_tokenizer(TEXTS, vocab_size=300, max_length=24)
    ids = tok("the movie was great")["input_ids"]
    assert ids[0] == tok.bos_token_id == 0 and ids[-1] == tok.eos_token_id == 2 and tok.pad_token_id == 1
    assert tok.decode(ids, skip_special_tokens=True) == "the movie was great"


def test_tiny_student_from_scratch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, tok = build_student(STUDENT, "text", TEXTS, num_classes=7)
    assert isinstance(model.encoder, RobertaModel) and model.encoder.config.hidden_size == 32
    out = model(**tokenize(tok, TEXTS[:3], STUDENT.max_length))
    assert out["reg"].shape == (3,) and out["logits"].shape == (3, 7)


def test_pretrained_student_loads_a_local_save_pretrained_dir(tmp_path: Path) -> None:
    """The `from_pretrained` path users take with roberta-large, exercised on a tiny saved model."""
    torch.manual_seed(1)
    tok = train_bpe_tokenizer(TEXTS, vocab_size=300, max_length=24)
    encoder = RobertaModel(RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=40,
                                         pad_token_id=tok.pad_token_id))
    encoder.save_pretrained(tmp_path / "my-roberta")
    tok.save_pretrained(tmp_path / "my-roberta")

    torch.manual_seed(2)  # another seed: only the saved weights can make them equal
    model, loaded_tok = build_student(dataclasses.replace(STUDENT, pretrained=str(tmp_path / "my-roberta")),
                                      "text", TEXTS, num_classes=7)
    assert loaded_tok("was great")["input_ids"] == tok("was great")["input_ids"]
    for name, tensor in encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path / "my-roberta"), type(loaded_tok))


def test_pretrained_student_missing_dir_fails_clearly(tmp_path: Path) -> None:
    """One line naming the key and the folder (models/pretrained.py has the other cases)."""
    with pytest.raises(ConfigError, match=r"distill\.student\.pretrained '.*no-such-model' is not a directory"):
        build_student(dataclasses.replace(STUDENT, pretrained=str(tmp_path / "no-such-model")), "text", TEXTS, 7)


def test_method_losses_known_values() -> None:
    out = {"reg": torch.tensor([1.0, -1.0]), "logits": torch.zeros(2, 7)}
    batch = {"y": torch.tensor([0.0, 0.0]), "teacher_reg": torch.tensor([0.0, 1.0])}
    loss, parts = apply_method("none", out, batch, params())
    assert loss.item() == pytest.approx(1.0)  # mean(|1 - 0|, |-1 - 0|)
    loss, parts = apply_method("videoadviser", out, batch, params(weight=0.5, distance="mse"))
    # task 1.0 + 0.5 * mean((1 - 0)^2, (-1 - 1)^2) = 1.0 + 0.5 * 2.5
    assert loss.item() == pytest.approx(2.25) and parts == pytest.approx({"task": 1.0, "distill": 2.5})
    loss, _ = apply_method("videoadviser", out, batch, params(weight=2.0, distance="l1"))
    assert loss.item() == pytest.approx(1.0 + 2.0 * 1.5)  # l1: mean(1, 2)


def test_kd_method_known_value() -> None:
    """Uniform teacher over K = 2 vs a student sure of class 0: KL computed by hand at T = 2."""
    out = {"reg": torch.tensor([0.0]), "logits": torch.tensor([[4.0, 0.0]])}
    batch = {"y": torch.tensor([0.0]), "teacher_logits": torch.tensor([[0.0, 0.0]])}
    method = METHODS.get("kd")
    loss, parts = method.loss(SENTIMENT_TASK.objective(params()), out, batch, method.section_of(params()))
    # p_S = softmax([2, 0]) = [0.880797, 0.119203]; KL(u || p_S) = 0.5 ln(0.5/0.880797) + 0.5 ln(0.5/0.119203)
    #     = 0.5 * (-0.566219) + 0.5 * (1.433781) = 0.433781; times T^2 = 4 -> 1.735124; task 0; weight 0.5
    assert parts["distill"] == pytest.approx(1.735124, abs=1e-5)
    assert loss.item() == pytest.approx(0.5 * 1.735124, abs=1e-5)


def test_method_names_and_weightings() -> None:
    assert METHODS.names() == ["kd", "msd-instance", "msd-learned", "msd-population", "msd-uniform", "none",
                               "self", "videoadviser"]
    va, control = METHODS.get("videoadviser"), METHODS.get("self")
    assert (control.loss, control.section) == (va.loss, va.section)  # the control differs only in its teacher
    assert (va.teacher, control.teacher) == (TEACHER, SELF_TEACHER)
    assert METHODS.get("msd-learned").weighting == "learned" and METHODS.get("kd").weighting is None
    assert {m: METHODS.get(m).section for m in ("none", "kd", "videoadviser", "msd-instance")} == {
        "none": None, "kd": "kd", "videoadviser": "videoadviser", "msd-instance": "msd"}  # its own section only


def test_msd_method_known_value() -> None:
    """task + alpha * KD (alpha 0 here) + sum_m w_m |S(x_m) - r_T^m|, averaged over the batch."""
    out = {"reg": torch.tensor([1.0, -1.0]), "logits": torch.zeros(2, 7),
           "mod": torch.tensor([[1.0, 0.0], [-1.0, 2.0]])}
    batch = {"y": torch.tensor([0.0, 0.0]), "teacher_logits": torch.zeros(2, 7),
             "teacher_mod": torch.tensor([[0.0, 0.0], [0.0, 0.0]]), "weights": torch.tensor([[0.5, 0.25]] * 2)}
    method, p = METHODS.get("msd-uniform"), params(msd_distance="l1")
    loss, parts = method.loss(SENTIMENT_TASK.objective(p), out, batch, method.section_of(p))
    # task 1.0; msd: clip 1: 0.5 * 1 + 0.25 * 0 = 0.5, clip 2: 0.5 * 1 + 0.25 * 2 = 1.0 -> mean 0.75
    assert loss.item() == pytest.approx(1.75) and parts["msd"] == pytest.approx(0.75) and parts["distill"] == 0


def test_text_student_sees_only_text() -> None:
    torch.manual_seed(0)
    model, tok = build_student(STUDENT, "text", TEXTS, num_classes=7)
    assert isinstance(model, TextStudent) and model.modalities == ("text",)
    model.eval()
    batch = tokenize(tok, TEXTS[:3], STUDENT.max_length)
    out = SENTIMENT_TASK.forward(model, batch, model.modalities, modality_specific=True)
    torch.testing.assert_close(out["mod"], model(**batch)["reg"][:, None])
    torch.testing.assert_close(out["logits"], model(**batch)["logits"])


def test_multimodal_student_masks_what_it_does_not_keep() -> None:
    torch.manual_seed(0)
    feats = features(3)
    model, tok = build_student(STUDENT, "multimodal", TEXTS, num_classes=7, features=feats)
    assert isinstance(model, MultimodalStudent) and model.modalities == MODALITIES
    model.eval()
    batch = {**tokenize(tok, TEXTS[:3], STUDENT.max_length), "video": feats.video, "audio": feats.audio,
             "present": feats.present}
    out = model(**batch)
    assert out["reg"].shape == (3,) and out["logits"].shape == (3, 7)
    full = SENTIMENT_TASK.forward(model, batch, model.modalities, modality_specific=True)
    mod = full["mod"]  # (B, 3): S(x_video), S(x_audio), S(x_text)
    assert mod.shape == (3, 3)
    torch.testing.assert_close(full["reg"], out["reg"])
    torch.testing.assert_close(full["logits"], out["logits"])
    only_text = {**batch, "present": torch.tensor([[False, False, True]] * 3)}
    torch.testing.assert_close(mod[:, 2], model(**only_text)["reg"])
    only_video = {**batch, "present": torch.tensor([[True, False, False]] * 3)}
    torch.testing.assert_close(mod[:, 0], model(**only_video)["reg"])
    changed = {**only_video, "audio": feats.audio + 5.0, "input_ids": batch["input_ids"].flip(0)}
    torch.testing.assert_close(model(**changed)["reg"], mod[:, 0])  # masked inputs do not matter
    assert not torch.allclose(mod[:, 0], out["reg"])


def test_multimodal_student_needs_features() -> None:
    with pytest.raises(ValueError, match="multimodal student needs the cached features"):
        build_student(STUDENT, "multimodal", TEXTS, num_classes=7)


# --------------------------------------------------------------------------- retrieval students


def retrieval_setup(n: int = 30, k: int = 3) -> tuple[torch.Tensor, object, dict[str, torch.Tensor], FeatureArrays]:
    """Class labels visible in both modalities, a teacher whose logits and per-modality logits know them."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % k
    data = features(n)
    data.video = torch.randn(n, 3, 16, generator=g) + 3 * torch.nn.functional.one_hot(labels, 16)[:, None].float()
    data.audio = torch.randn(n, 5, 8, generator=g) + 3 * torch.nn.functional.one_hot(labels, 8)[:, None].float()
    onehot = 4 * torch.nn.functional.one_hot(labels, k).float()
    teacher = {"logits": onehot, "logits_only": torch.stack([onehot, onehot / 2, torch.zeros(n, k)], dim=1),
               "saliency": torch.rand(n, 3, generator=g) * torch.tensor([1.0, 1.0, 0.0])}
    splits = np.array((["train"] * 4 + ["valid"]) * (n // 5))
    return labels.float(), splits, teacher, data


@pytest.mark.parametrize("student", all_students())
def test_every_method_trains_a_retrieval_student(student: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    labels, splits, teacher, data = retrieval_setup()
    torch.manual_seed(0)
    p = dataclasses.replace(params(), train=dataclasses.replace(TRAIN, epochs=6, lr=1e-2))
    model, tokenizer, best = train_student(RETRIEVAL_TASK, parse_student(student), [""] * len(labels), labels, splits,
                                           teacher, data, p, seed=0, dataset="toy")
    assert tokenizer is None
    assert {"epoch", "valid_map", "epochs_run"} <= set(best) and 0.0 < best["valid_map"] <= 1.0
    assert best["valid_map"] > 0.7, best  # the classes are easy: the branches must have learned them
    out = model(audio=data.audio[:4], visual=data.video[:4])
    assert out["audio_emb"].shape == (4, 8) and out["visual_logits"].shape == (4, 3)
    curves = tmp_path / "dvclive" / "toy" / f"student_{student}" / "seed_0" / "plots" / "metrics"
    assert (curves / "valid" / "map.tsv").is_file()
    if parse_student(student).method.startswith("msd-"):  # the weights over the teacher's modalities are logged
        assert (curves / "train" / "w_video.tsv").is_file()


def test_retrieval_methods_add_their_distillation_terms() -> None:
    labels, _, teacher, data = retrieval_setup(n=6)
    torch.manual_seed(0)
    from pipeline.distillation.losses import kd_loss
    from pipeline.models.retrieval_student import build_retrieval_student
    from pipeline.tasks.retrieval import retrieval_loss

    model = build_retrieval_student(params(), data, 3)
    out = model(audio=data.audio, visual=data.video)
    batch = {"y": labels, "teacher_logits": teacher["logits"], "teacher_mod": teacher["logits_only"][:, [0, 1]],
             "weights": torch.tensor([0.7, 0.2])}
    task = retrieval_loss(out, labels.long(), "supcon", temperature=0.1)["loss"]
    p = params()
    objective = RETRIEVAL_TASK.objective(p)

    def loss_of(name: str) -> tuple[torch.Tensor, dict[str, float]]:
        method = METHODS.get(name)
        return method.loss(objective, out, batch, method.section_of(p))

    none, _ = loss_of("none")
    torch.testing.assert_close(none, task)
    kd, _ = loss_of("kd")
    expected_kd = (kd_loss(out["audio_logits"], teacher["logits"], 2.0)
                   + kd_loss(out["visual_logits"], teacher["logits"], 2.0)) / 2
    torch.testing.assert_close(kd, task + 0.5 * expected_kd)
    va, _ = loss_of("videoadviser")
    z = lambda c: (c - c.mean(-1, keepdim=True)) / (c.std(-1, keepdim=True) + 1e-7)  # noqa: E731  standardised
    expected_va = sum(((z(out[b]) - z(teacher["logits"])) ** 2).mean() for b in ("audio_logits", "visual_logits")) / 2
    torch.testing.assert_close(va, task + 0.5 * expected_va)
    msd, _ = loss_of("msd-population")  # kd_weight 0: the MSD term alone
    branch = {"video": "visual_logits", "audio": "audio_logits"}
    expected_msd = sum(w * kd_loss(out[branch[m]], teacher["logits_only"][:, i], 2.0)
                       for i, (m, w) in enumerate(zip(BRANCH_MODALITIES, (0.7, 0.2), strict=True)))
    torch.testing.assert_close(msd, task + expected_msd)


# --------------------------------------------------------------------------- msd-learned: meta set and meta step


def sentiment_setup(n: int = 40) -> tuple[list[str], torch.Tensor, object, dict[str, torch.Tensor], FeatureArrays]:
    import numpy as np

    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(n, generator=g) * 6 - 3).round(decimals=1)
    texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
    teacher = {"logits": torch.randn(n, 7, generator=g), "reg": labels + 0.1 * torch.randn(n, generator=g),
               "reg_only": labels[:, None] + torch.randn(n, 3, generator=g), "saliency": torch.rand(n, 3, generator=g)}
    splits = np.array((["train"] * 3 + ["valid", "test"]) * (n // 5))
    return texts, labels, splits, teacher, features(n)


def test_meta_set_is_carved_from_train_and_never_the_selection_clips() -> None:
    from pipeline.distillation.train import Splits

    _, _, splits, _, _ = sentiment_setup()
    p = params()
    learned = METHODS.get("msd-learned")
    split = Splits.of(splits, learned, p, seed=0)
    train, valid = set(np.flatnonzero(splits == "train")), set(np.flatnonzero(splits == "valid"))
    meta = set(split.meta.tolist())
    assert meta < train and not meta & set(split.train.tolist()) and set(split.valid.tolist()) == valid
    assert len(meta) == round(0.2 * len(train)) and meta | set(split.train.tolist()) == train
    assert Splits.of(splits, learned, p, seed=0).meta.tolist() == split.meta.tolist()  # seeded
    from_valid = Splits.of(splits, learned, dataclasses.replace(p, msd=dataclasses.replace(
        p.msd, meta_split="valid", meta_fraction=0.5)), seed=0)
    assert set(from_valid.meta.tolist()) | set(from_valid.valid.tolist()) == valid
    assert not set(from_valid.meta.tolist()) & set(from_valid.valid.tolist())
    assert Splits.of(splits, METHODS.get("msd-population"), p, seed=0).meta is None


def test_learned_weights_do_not_depend_on_grad_accum(tmp_path: Path, monkeypatch) -> None:
    """One meta step per optimizer step, on the whole batch, from the training loop: accumulating the
    same batch in two micro-batches gives the same weights (and the same student)."""
    monkeypatch.chdir(tmp_path)
    texts, labels, splits, teacher, data = sentiment_setup()
    student = dataclasses.replace(STUDENT, dropout=0.0)
    results = []
    for accum in (1, 2):
        p = dataclasses.replace(params(), student=student, train=dataclasses.replace(TRAIN, epochs=2, grad_accum=accum),
                                msd=dataclasses.replace(params().msd, meta_lr=50.0))
        torch.manual_seed(0)
        model, _, best = train_student(SENTIMENT_TASK, parse_student("msd-learned"), texts, labels, splits, teacher,
                                       data, p, seed=0, dataset=f"toy{accum}")
        results.append((model, best))
    (m1, b1), (m2, b2) = results
    weights = [[b[f"w_{m}"] for m in MODALITIES] for b in (b1, b2)]
    assert weights[0] == pytest.approx(weights[1], abs=1e-6)
    from pipeline.distillation.msd import population_weights
    from pipeline.distillation.train import Splits

    start = population_weights(teacher["saliency"][Splits.of(splits, METHODS.get("msd-learned"), params(),
                                                              0).train]).tolist()
    assert max(abs(a - b) for a, b in zip(weights[0], start, strict=True)) > 1e-3  # the meta step moved them
    assert b1["n_meta"] == b2["n_meta"] > 0
    for (name, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    meta_curve = tmp_path / "dvclive" / "toy1" / "student_msd-learned" / "seed_0" / "plots" / "metrics" / "train"
    assert (meta_curve / "meta" / "valid_loss.tsv").is_file()
