"""Tests of pipeline/models/teacher.py and students.py: the CLIP prompt teacher and the text student (tiny, CPU)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RunsCode, tamper

from pipeline.core import paths
from pipeline.core.checkpoints import UnsafeCheckpoint
from pipeline.core.config import MODALITIES
from pipeline.core.errors import MissingInput
from pipeline.models.masks import set_feature_stats
from pipeline.models.students import (
    STUDENT_CONFIG,
    STUDENT_HEAD,
    StudentConfig,
    TextStudent,
    load_student,
    save_student,
)
from pipeline.models.teacher import PromptTeacher, TeacherConfig, load_teacher, save_teacher

D, N_MELS, K, FRAMES, A = 16, 8, 7, 4, 5
VIDEO, AUDIO, TEXT = (MODALITIES.index(m) for m in ("video", "audio", "text"))


def teacher_config(**overrides) -> TeacherConfig:
    base = TeacherConfig(embed_dim=D, audio_dim=N_MELS, num_classes=K, frames=FRAMES, audio_tokens=A, layers=1,
                         heads=2, dropout=0.0, prompt_alpha=0.1, mask="zeros", step1_hidden=8)
    return dataclasses.replace(base, **overrides)


def make_teacher(seed: int = 0, **overrides) -> PromptTeacher:
    """A teacher as training leaves it: the parts that start at zero (the learned mask tokens, the fusion
    branch's last layer and the prompt attention's output, which make it start at CLIP's zero-shot
    similarities) moved off zero, so that every input path reaches the output."""
    torch.manual_seed(seed)
    prompts = torch.randn(K, D)
    model = PromptTeacher(teacher_config(**overrides), prompts)
    with torch.no_grad():
        if model.config.mask == "learned":
            model.mask_tokens.normal_()
        for p in (model.fuse[-1].weight, model.prompt_attn.out_proj.weight):
            p.normal_(0.0, 0.2)
    return model.eval()


def inputs(b: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(b, FRAMES, D, generator=g)
    audio = torch.randn(b, A, N_MELS, generator=g)
    text = torch.randn(b, D, generator=g)
    present = torch.ones(b, len(MODALITIES), dtype=torch.bool)
    return video, audio, text, present


def run(model: PromptTeacher, video, audio, text, present) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(video, audio, text, present)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rows, atol: float = 1e-6) -> None:
    for key in ("logits", "reg", "prompts"):
        torch.testing.assert_close(a[key][rows], b[key][rows], atol=atol, rtol=0, msg=key)


# --------------------------------------------------------------------------- teacher


@pytest.mark.parametrize("mask", ["zeros", "learned"])
def test_teacher_forward_shapes(mask):
    model = make_teacher(mask=mask)
    out = run(model, *inputs(b=3))
    assert out["logits"].shape == (3, K)
    assert out["reg"].shape == (3,)
    assert out["prompts"].shape == (3, K, D)
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("mask", ["zeros", "learned"])
def test_teacher_all_modalities_masked_is_finite(mask):
    model = make_teacher(mask=mask)
    video, audio, text, present = inputs(b=3)
    present[1] = False  # sample 1 has nothing: only the null token remains as an attention key
    out = run(model, video, audio, text, present)
    assert all(torch.isfinite(v).all() for v in out.values())

    # training mode, with gradients: still finite everywhere
    model.train()
    out = model(video, audio, text, present)
    (out["logits"].sum() + out["reg"].sum()).backward()
    assert all(torch.isfinite(v).all() for v in out.values())
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


def test_teacher_all_masked_sample_attends_to_the_null_token_only():
    # With every modality masked, the one valid key is the null token, so softmax puts weight 1 on it:
    #   attn = W_o (W_v LN(null) + b_v) + b_o,   P' = P + alpha * attn   (the same for every class k)
    # (Recent PyTorch returns 0 rather than NaN for a fully masked row, so finiteness alone does not
    # show that the null key is there; a non-zero null token does.)
    model = make_teacher(mask="learned")
    with torch.no_grad():
        model.null_token.normal_()
        model.prompt_attn.in_proj_bias.normal_()
        model.prompt_attn.out_proj.bias.normal_()
    video, audio, text, present = inputs(b=2)
    present[1] = False
    out = run(model, video, audio, text, present)
    with torch.no_grad():
        kv = torch.nn.functional.layer_norm(model.null_token[0, 0], (D,), model.token_norm.weight,
                                            model.token_norm.bias, model.token_norm.eps)
        w_v, b_v = model.prompt_attn.in_proj_weight[2 * D:], model.prompt_attn.in_proj_bias[2 * D:]
        attn = model.prompt_attn.out_proj.weight @ (w_v @ kv + b_v) + model.prompt_attn.out_proj.bias  # (D,)
        expected = model.prompts + model.alpha * attn  # (K, D)
    torch.testing.assert_close(out["prompts"][1], expected, atol=1e-5, rtol=1e-5)


def test_teacher_all_masked_output_ignores_every_input():
    model = make_teacher(mask="learned")
    video, audio, text, present = inputs(b=2)
    present[0] = False
    out = run(model, video, audio, text, present)
    other = inputs(b=2, seed=99)
    out2 = run(model, other[0], other[1], other[2], present)
    assert_same(out, out2, 0)
    assert not torch.allclose(out["logits"][1], out2["logits"][1])  # sample 1 sees its (changed) inputs


@pytest.mark.parametrize("mask", ["zeros", "learned"])
@pytest.mark.parametrize("modality", MODALITIES)
def test_masking_changes_only_that_sample(mask, modality):
    model = make_teacher(mask=mask)
    video, audio, text, present = inputs(b=3)
    full = run(model, video, audio, text, present)
    masked_present = present.clone()
    masked_present[1, MODALITIES.index(modality)] = False
    masked = run(model, video, audio, text, masked_present)
    assert_same(full, masked, [0, 2])  # other samples: unchanged (batch independence)
    assert not torch.allclose(full["logits"][1], masked["logits"][1], atol=1e-5)
    assert not torch.allclose(full["prompts"][1], masked["prompts"][1], atol=1e-5)


@pytest.mark.parametrize("modality", MODALITIES)
def test_masked_modality_input_is_ignored(modality):
    model = make_teacher(mask="learned")
    video, audio, text, present = inputs(b=3)
    i = MODALITIES.index(modality)
    present[1, i] = False
    out = run(model, video, audio, text, present)
    changed = [video.clone(), audio.clone(), text.clone()]
    changed[i][1] = changed[i][1] * -3.0 + 5.0  # a very different input for the masked modality of sample 1
    out2 = run(model, *changed, present)
    assert_same(out, out2, [0, 1, 2])
    # the same change on a sample where the modality is present does change its output
    changed[i][2] = changed[i][2] * -3.0 + 5.0
    out3 = run(model, *changed, present)
    assert not torch.allclose(out["logits"][2], out3["logits"][2], atol=1e-5)


def test_prompt_alpha_zero_keeps_clip_prompts():
    model = make_teacher(prompt_alpha=0.0)
    video, audio, text, present = inputs(b=2)
    present[1, VIDEO] = False
    out = run(model, video, audio, text, present)
    torch.testing.assert_close(out["prompts"], model.prompts.expand(2, K, D), atol=0, rtol=0)
    # with alpha = 0.1 they move (so the check above can fail)
    out = run(make_teacher(prompt_alpha=0.1), video, audio, text, present)
    assert not torch.allclose(out["prompts"], model.prompts.expand(2, K, D), atol=1e-4)


def test_prompts_buffer_is_a_frozen_copy():
    torch.manual_seed(0)
    prompts = torch.randn(K, D)
    model = PromptTeacher(teacher_config(), prompts)
    prompts.add_(1.0)
    assert not torch.equal(model.prompts, prompts)
    assert "prompts" in dict(model.named_buffers())
    assert "prompts" not in dict(model.named_parameters())


def test_set_feature_stats_standardises():
    model = make_teacher()
    g = torch.Generator().manual_seed(5)
    audio = torch.randn(4, A, N_MELS, generator=g) * 3.0 + 2.0
    audio[:, :, 3] = 7.0  # a constant mel bin: std clamped to 1e-3
    audio[1] = 1000.0  # a clip without audio must not count
    present = torch.tensor([True, False, True, True])
    set_feature_stats(model, "audio", audio, present)

    frames = audio.numpy()[[0, 2, 3]].reshape(-1, N_MELS)  # 15 frames x 8 bins
    mean = frames.mean(axis=0)
    std = np.maximum(frames.std(axis=0, ddof=1), 1e-3)
    np.testing.assert_allclose(model.audio_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.audio_std.numpy(), std, rtol=1e-5, atol=1e-6)
    assert model.audio_mean[3] == pytest.approx(7.0) and model.audio_std[3] == pytest.approx(1e-3)

    # forward standardises: raw audio with the stats == pre-standardised audio without them
    plain = copy.deepcopy(model)
    plain.audio_mean.zero_()
    plain.audio_std.fill_(1.0)
    video, _, text, all_present = inputs(b=4)
    raw = audio.clone()
    raw[1] = torch.randn(A, N_MELS, generator=g)
    standardised = (raw - torch.from_numpy(mean)) / torch.from_numpy(std)
    assert_same(run(model, video, raw, text, all_present), run(plain, video, standardised, text, all_present),
                slice(None), atol=1e-5)


def test_set_feature_stats_without_the_modality_keeps_defaults():
    model = make_teacher()
    set_feature_stats(model, "audio", torch.randn(2, A, N_MELS), torch.tensor([False, False]))
    assert torch.equal(model.audio_mean, torch.zeros(N_MELS))
    assert torch.equal(model.audio_std, torch.ones(N_MELS))


def test_classification_parameters_exclude_exactly_step1():
    model = make_teacher(mask="learned")
    step1 = {id(p) for p in model.step1.parameters()}
    assert len(step1) == 4  # two Linear layers: weight + bias each
    chosen = model.classification_parameters()
    ids = [id(p) for p in chosen]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()} - step1
    assert len(chosen) == len(list(model.parameters())) - 4
    names = {id(p): n for n, p in model.named_parameters()}
    assert {"alpha", "log_scale", "null_token", "mask_tokens", "fuse.0.weight"} <= {names[i] for i in ids}


@pytest.mark.parametrize("mask", ["zeros", "learned"])
def test_mask_token_trainability(mask):
    model = make_teacher(mask=mask)
    assert model.mask_tokens.requires_grad is (mask == "learned")


@pytest.mark.parametrize("mask", ["zeros", "learned"])
def test_save_load_teacher_round_trip(tmp_path, mask):
    model = make_teacher(mask=mask)
    set_feature_stats(model, "audio", torch.randn(3, A, N_MELS) * 2 + 1, torch.tensor([True, True, False]))
    with torch.no_grad():
        model.alpha.fill_(0.37)
    path = tmp_path / "teacher.pt"
    save_teacher(path, model, {"epoch": 3, "dataset": "synthetic_sentiment"})

    assert torch.load(path, weights_only=True)["epoch"] == 3  # tensors and plain data only

    torch.manual_seed(1234)  # a different random init, overwritten by the checkpoint
    loaded, ckpt = load_teacher(path)
    loaded.eval()
    assert loaded.config == model.config
    assert ckpt["epoch"] == 3 and ckpt["dataset"] == "synthetic_sentiment"
    assert loaded.mask_tokens.requires_grad is (mask == "learned")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    video, audio, text, present = inputs(b=3)
    present[0, AUDIO] = False
    present[2] = False
    a, b = run(model, video, audio, text, present), run(loaded, video, audio, text, present)
    for key in ("logits", "reg", "prompts"):
        assert torch.equal(a[key], b[key]), key


def test_tampered_teacher_checkpoint_is_refused_without_running_code(tmp_path: Path) -> None:
    path, marker = tmp_path / "teacher.pt", tmp_path / "marker"
    save_teacher(path, make_teacher(), {"seed": 0, "classes": None, "best": {"epoch": 1, "valid_mae": 0.5}})
    tamper(path, marker)
    refused = r"holds pickled Python objects.*will not unpickle.*could run code"
    with pytest.raises(UnsafeCheckpoint, match=refused) as err:
        load_teacher(path)
    assert not marker.exists()
    assert str(err.value).startswith(str(path)) and "`dvc repro -f teacher`" in str(err.value)


def test_save_teacher_refuses_provenance_that_is_not_plain_data(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"save_teacher extra\['best'\]\['valid_mae'\]: numpy.float64 is not plain"):
        save_teacher(tmp_path / "teacher.pt", make_teacher(), {"best": {"valid_mae": np.float64(0.5)}})
    assert not (tmp_path / "teacher.pt").exists()


def test_teacher_wrong_prompt_shape():
    with pytest.raises(ValueError, match=r"prompts have shape \(6, 16\), expected \(7, 16\)"):
        PromptTeacher(teacher_config(), torch.zeros(6, D))
    with pytest.raises(ValueError, match=r"prompts have shape \(7, 12\), expected \(7, 16\)"):
        PromptTeacher(teacher_config(), torch.zeros(K, 12))


def test_teacher_heads_must_divide_embed_dim():
    with pytest.raises(ValueError, match=r"teacher\.heads=3 must divide the CLIP embedding size 16"):
        PromptTeacher(teacher_config(heads=3), torch.zeros(K, D))


# --------------------------------------------------------------------------- student

SENTENCES = [
    "i really loved this movie , it was great",
    "the plot was boring and the acting was bad",
    "it was okay , nothing special",
    "what a wonderful and touching story",
    "i hated every minute of it",
]


def roberta(vocab_size: int):
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    return RobertaModel(RobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=40,
                                      type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2))


def student_config() -> StudentConfig:
    return StudentConfig(num_classes=K, head_hidden=8, dropout=0.1, max_length=38)


def test_student_forward_shapes():
    model = TextStudent(roberta(100), student_config()).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 100, (3, 10), generator=g)
    ids[:, 0] = 0
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[2, 6:] = 0
    ids[2, 6:] = 1
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    assert out["reg"].shape == (3,)
    assert out["logits"].shape == (3, K)
    assert torch.isfinite(out["reg"]).all() and torch.isfinite(out["logits"]).all()


def test_save_load_student_round_trip(tmp_path):
    from pipeline.models.students import tokenize, train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(SENTENCES, vocab_size=300, max_length=38)
    # byte-level BPE: 256 byte symbols + 5 specials at least, so the encoder's vocab follows the tokenizer
    model = TextStudent(roberta(len(tokenizer)), student_config()).eval()
    tokens = tokenize(tokenizer, SENTENCES[:3] + ["an unseen sentence with zebra words"], 38)
    with torch.no_grad():
        before = model(**tokens)

    out_dir = tmp_path / "student_videoadviser"
    save_student(out_dir, model, tokenizer, {"method": "videoadviser", "seed": 0})
    assert (out_dir / STUDENT_CONFIG).is_file()
    assert set(torch.load(out_dir / STUDENT_HEAD, weights_only=True)) >= {"classifier.weight"}
    assert (out_dir / "model.safetensors").is_file() and (out_dir / "tokenizer.json").is_file()

    torch.manual_seed(777)
    loaded, tok2, meta = load_student(out_dir)
    loaded.eval()
    assert meta["method"] == "videoadviser" and meta["seed"] == 0
    assert meta["config"] == dataclasses.asdict(student_config())
    assert loaded.config == student_config()
    tokens2 = tokenize(tok2, SENTENCES[:3] + ["an unseen sentence with zebra words"], 38)
    assert torch.equal(tokens["input_ids"], tokens2["input_ids"])
    assert torch.equal(tokens["attention_mask"], tokens2["attention_mask"])
    with torch.no_grad():
        after = loaded(**tokens2)
    torch.testing.assert_close(after["reg"], before["reg"], atol=1e-6, rtol=0)
    torch.testing.assert_close(after["logits"], before["logits"], atol=1e-6, rtol=0)


def test_load_student_without_student_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no student\.json.*dvc repro distill"):
        load_student(tmp_path / "empty")


def saved_student(root: Path) -> Path:
    """A tiny text student saved where stage distill@text-kd writes its seed 0; returns that folder."""
    from pipeline.models.students import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(SENTENCES, vocab_size=300, max_length=38)
    out_dir = root / paths.student_dir("ds", "text-kd", 0)
    save_student(out_dir, TextStudent(roberta(len(tokenizer)), student_config()), tokenizer, {"seed": 0})
    return out_dir


def test_tampered_student_heads_are_refused_without_running_code(tmp_path: Path) -> None:
    out_dir, marker = saved_student(tmp_path), tmp_path / "marker"
    tamper(out_dir / STUDENT_HEAD, marker)
    with pytest.raises(UnsafeCheckpoint, match=r"holds pickled Python objects.*will not unpickle") as err:
        load_student(out_dir)
    assert not marker.exists()
    assert str(err.value).startswith(str(out_dir / STUDENT_HEAD))
    assert str(err.value).endswith("`dvc repro -f distill@text-kd`")


def test_student_encoder_is_read_from_safetensors_only(tmp_path: Path) -> None:
    """A pickled pytorch_model.bin in place of model.safetensors is refused, never unpickled."""
    out_dir, marker = saved_student(tmp_path), tmp_path / "marker"
    encoder = torch.load(out_dir / STUDENT_HEAD, weights_only=True)  # any tensors will do
    (out_dir / "model.safetensors").unlink()
    torch.save({**encoder, "payload": RunsCode(marker)}, out_dir / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpoint, match=r"pytorch_model\.bin, pickled Python objects that mmdistill will "
                                               r"not unpickle") as err:
        load_student(out_dir)
    assert not marker.exists()
    assert str(err.value).startswith(str(out_dir)) and "`dvc repro -f distill@text-kd`" in str(err.value)
    (out_dir / "pytorch_model.bin").unlink()
    with pytest.raises(MissingInput, match=r"has no model\.safetensors \(the student's encoder\)"):
        load_student(out_dir)
