"""Tests of pipeline.evaluation.latency: the timing harness, parameter counting, and the end-to-end pipelines
(raw clip -> prediction), which must give the predictions of the cached-feature path."""

from __future__ import annotations

import dataclasses
import statistics
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline import extract
from pipeline.core.config import MODALITIES, ClipParams, ExtractParams, LatencyParams, StudentParams, from_dict
from pipeline.data.datasets import DATASETS, read_manifest, read_mmsa, write_manifest
from pipeline.data.synthetic import generate_sentiment
from pipeline.evaluation import latency
from pipeline.features.arrays import load_features
from pipeline.features.clip import load_clip
from pipeline.models.masks import set_feature_stats
from pipeline.models.students import build_student, predict_student, tokenize
from pipeline.models.teacher import PromptTeacher, TeacherConfig

DS = "synthetic_sentiment"
CLIP = ClipParams("mmdistill-tiny", "", 0)
FRAMES, N_MELS = 4, 32
BROKEN, NO_TEXT = "broken$_$0", 2  # a clip of random bytes; the row whose transcript is emptied
CPU = torch.device("cpu")


# --------------------------------------------------------------------------- time_per_clip


class FakeClock:
    """perf_counter for pipeline.evaluation.latency: advances only when the fake process says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_time_per_clip_median_counts_and_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(latency, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    pass_seconds = iter([1.0, 0.030, 0.010, 0.050, 0.020])  # warmup, then 4 timed passes
    calls: list[list[int]] = []

    def process(chunk: list[int]) -> None:
        assert torch.is_inference_mode_enabled()
        if chunk[0] == 0:  # the first chunk of a pass carries the whole pass's time
            clock.now += next(pass_seconds)
        calls.append(chunk)

    out = latency.time_per_clip(process, list(range(5)), batch_size=2, repeats=4, warmup=1, device=CPU)
    assert calls == [[0, 1], [2, 3], [4]] * 5  # 1 warmup + 4 timed passes, chunks of 2 with a short tail
    assert out["passes_ms"] == pytest.approx([30.0, 10.0, 50.0, 20.0])  # the warmup pass is not timed
    assert out["ms_per_clip"] == pytest.approx(25.0 / 5)  # median of an even count: mean of 20 and 30 ms
    assert (out["batch_size"], out["clips"]) == (2, 5)


def test_time_per_clip_with_a_sleeping_process() -> None:
    per_clip_s = 0.004

    def process(chunk: list[int]) -> None:
        time.sleep(per_clip_s * len(chunk))

    out = latency.time_per_clip(process, list(range(6)), batch_size=4, repeats=3, warmup=1, device=CPU)
    assert len(out["passes_ms"]) == 3
    assert all(p >= 6 * per_clip_s * 1000 for p in out["passes_ms"])
    assert out["ms_per_clip"] == pytest.approx(statistics.median(out["passes_ms"]) / 6)
    assert out["ms_per_clip"] >= per_clip_s * 1000


@pytest.mark.parametrize(("items", "kwargs", "message"), [
    ([], {}, "at least one item"),
    ([1], {"batch_size": 0}, "batch_size=0"),
    ([1], {"repeats": 0}, "repeats=0"),
    ([1], {"warmup": -1}, "warmup=-1"),
])
def test_time_per_clip_rejects_bad_arguments(items: list, kwargs: dict, message: str) -> None:
    args = {"batch_size": 1, "repeats": 1, "warmup": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        latency.time_per_clip(lambda chunk: None, items, device=CPU, **args)


def test_measure_latency_times_the_first_clips_at_batch_1_and_batched() -> None:
    sizes: list[int] = []
    out = latency.measure_latency(lambda chunk: sizes.append(len(chunk)), list(range(10)),
                                  LatencyParams(clips=5, batch_size=4, repeats=2, warmup=1), CPU)
    assert sizes == [1] * 5 * 3 + [4, 1] * 3
    assert set(out) == {"latency_ms_b1", "latency_ms_batched", "batch_size", "clips", "device"}
    assert (out["batch_size"], out["clips"], out["device"]) == (4, 5, "cpu")


# --------------------------------------------------------------------------- count_parameters


def test_count_parameters_counts_shared_parameters_once() -> None:
    a = nn.Linear(3, 4)  # 16
    b = nn.Sequential(a, nn.Linear(4, 2))  # a + 10
    frozen = nn.Linear(2, 2).requires_grad_(False)  # 6, counted: inference runs it too
    assert latency.count_parameters(a) == 16
    assert latency.count_parameters(b) == 26
    assert latency.count_parameters(a, b, b, frozen) == 32

    tied = nn.Module()
    tied.embed = nn.Embedding(5, 3)  # 15
    tied.out = nn.Linear(3, 5, bias=False)
    tied.out.weight = tied.embed.weight  # tied: the same Parameter
    assert latency.count_parameters(tied) == 15


# --------------------------------------------------------------------------- pipelines


def _extract_params() -> ExtractParams:
    return from_dict(ExtractParams, {
        "run": {"device": "cpu", "batch_size": 4, "num_workers": 0, "precision": "fp32"},
        "max_failure_ratio": 0.5,
        "video": {"backend": "decord", "sampling": "uniform", "frames": FRAMES, "fps": 1.0, "max_frames": 16},
        "audio": {"sample_rate": 16000, "n_mels": N_MELS, "win_ms": 25.0, "hop_ms": 10.0, "fmin": 0.0,
                  "fmax": 8000.0},
        "text": {"templates": ["a {} clip"], "classes": ["negative", "neutral", "positive"],
                 "class_templates": ["a {}"]},
    }, where="extract")


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A project with 5 generated 32x32 clips + 1 undecodable one, one empty transcript, and the three
    feature files extracted from them (the cached-feature path)."""
    root = tmp_path_factory.mktemp("latency")
    raw = root / "data/raw" / DS
    generate_sentiment(raw, n_clips=5, seed=0, splits={"train": 0.6, "valid": 0.2, "test": 0.2}, seconds=1.0,
                       fps=8, size=32, sample_rate=16000, monte_carlo=2000)
    manifest = read_mmsa(raw, DATASETS.get(DS))
    bad = root / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    broken = {"id": BROKEN, "split": "test", "label": 0.0, "text": "cannot be decoded", "video": str(bad),
              "video_id": "broken", "clip_id": "0"}
    manifest = pd.concat([manifest.iloc[:3], pd.DataFrame([broken]), manifest.iloc[3:]], ignore_index=True)
    manifest.loc[NO_TEXT, "text"] = ""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        write_manifest(manifest, Path("data/prepared") / DS / "manifest.csv")
        for modality in MODALITIES:
            extract.run(modality, DS, _extract_params(), CLIP)
        manifest = read_manifest(Path("data/prepared") / DS / "manifest.csv")
    return root, manifest


@pytest.fixture(scope="module")
def clip_model():
    return load_clip(CLIP.model, CLIP.pretrained, CPU, CLIP.init_seed)


def _features(cached: tuple[Path, pd.DataFrame], video_tokens: int, audio_tokens: int,
              monkeypatch: pytest.MonkeyPatch):
    root, manifest = cached
    monkeypatch.chdir(root)
    return load_features(manifest, DS, CLIP, _extract_params(), video_tokens, audio_tokens)


def _in_chunks(process, rows: list[dict], size: int) -> torch.Tensor:
    return torch.cat([process(rows[i : i + size]) for i in range(0, len(rows), size)])


def _teacher(data) -> PromptTeacher:
    torch.manual_seed(0)
    config = TeacherConfig(embed_dim=data.text.shape[1], audio_dim=N_MELS, num_classes=len(data.classes),
                           frames=data.video.shape[1], audio_tokens=data.audio.shape[1], layers=1, heads=2,
                           dropout=0.1, prompt_alpha=0.5, mask="learned", step1_hidden=8)
    teacher = PromptTeacher(config, data.prompts)
    set_feature_stats(teacher, "audio", data.audio, data.present[:, MODALITIES.index("audio")])
    nn.init.normal_(teacher.mask_tokens)  # so that a masked modality changes the output
    return teacher.eval()


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_teacher_pipeline_equals_the_cached_feature_path(cached, clip_model, backend: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = _features(cached, video_tokens=2, audio_tokens=8, monkeypatch=monkeypatch)  # 4 frames pooled to 2
    broken = data.ids.index(BROKEN)
    assert data.present[broken].tolist() == [False, False, True]  # undecodable: only its transcript
    assert data.present[NO_TEXT].tolist() == [True, True, False]  # empty transcript: no text
    teacher = _teacher(data)
    with torch.no_grad():
        expected = teacher(data.video, data.audio, data.text, data.present)["reg"]  # (N,)
    assert expected.std() > 1e-3  # clips differ, so equality below is not trivial

    params = _extract_params()
    video = dataclasses.replace(params.video, backend=backend)
    media_inputs = latency.MediaInputs(clip_model, video, params.audio, teacher.config.frames,
                                       teacher.config.audio_tokens)
    pipeline = latency.TeacherPipeline(teacher, media_inputs)
    rows = latency.manifest_rows(cached[1], 100)
    with torch.inference_mode():
        got = _in_chunks(pipeline, rows, 4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    timing = latency.time_per_clip(pipeline, rows, batch_size=3, repeats=1, warmup=0, device=CPU)
    assert timing["clips"] == len(rows) and timing["ms_per_clip"] > 0
    assert latency.count_parameters(*pipeline.modules()) == latency.count_parameters(clip_model.model, teacher)


def test_teacher_pipeline_refuses_other_token_counts(cached, clip_model, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = _teacher(_features(cached, video_tokens=2, audio_tokens=8, monkeypatch=monkeypatch))
    params = _extract_params()
    media_inputs = latency.MediaInputs(clip_model, params.video, params.audio, video_tokens=3, audio_tokens=8)
    with pytest.raises(ValueError, match="do not match the teacher"):
        latency.TeacherPipeline(teacher, media_inputs)


@pytest.fixture(scope="module")
def student(cached):
    """A tiny random RoBERTa text student and its BPE tokenizer, as distill builds it."""
    params = from_dict(StudentParams, {
        "pretrained": "", "hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64,
        "vocab_size": 300, "max_length": 24, "head_hidden": 16, "dropout": 0.1, "video_tokens": 3,
        "audio_tokens": 5}, where="distill.student")
    torch.manual_seed(0)
    model, tokenizer = build_student(params, "text", cached[1]["text"].tolist(), num_classes=3)
    return model.eval(), tokenizer, params.max_length


def test_text_student_pipeline_equals_the_cached_path(cached, student) -> None:
    model, tokenizer, max_length = student
    rows = latency.manifest_rows(cached[1], 100)
    expected = predict_student(model, tokenize(tokenizer, [r["text"] for r in rows], max_length), batch_size=64)
    pipeline = latency.TextStudentPipeline(model, tokenizer, max_length)
    with torch.inference_mode():
        got = _in_chunks(pipeline, rows, 2)  # other paddings than the one batch above
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert latency.count_parameters(*pipeline.modules()) == sum(p.numel() for p in model.parameters())


class TinyMultimodalStudent(nn.Module):
    """Test-only stand-in with the multimodal student's forward signature."""

    def __init__(self, vocab: int, dim: int, n_mels: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8)
        self.video = nn.Linear(dim, 8)
        self.audio = nn.Linear(n_mels, 8)
        self.mask = nn.Parameter(torch.randn(3, 8))
        self.head = nn.Linear(24, 1)
        self.classifier = nn.Linear(24, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, video: torch.Tensor,
                audio: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        m = attention_mask.unsqueeze(-1).float()  # (B, L, 1)
        t = (self.embed(input_ids) * m).sum(1) / m.sum(1).clamp_min(1)  # (B, 8)
        v = torch.tanh(self.video(video)).mean(1)  # (B, 8): mean over tokens, so their order matters little
        a = torch.tanh(self.audio(audio / 40.0)).amax(1)  # (B, 8)
        pooled = torch.where(present.unsqueeze(-1), torch.stack([v, a, t], 1), self.mask)  # (B, 3, 8)
        return {"reg": self.head(pooled.flatten(1)).squeeze(-1), "logits": self.classifier(pooled.flatten(1))}


def test_multimodal_student_pipeline_equals_the_cached_path(cached, clip_model, student,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _, tokenizer, max_length = student
    data = _features(cached, video_tokens=3, audio_tokens=5, monkeypatch=monkeypatch)  # the student's own counts
    torch.manual_seed(0)
    model = TinyMultimodalStudent(len(tokenizer), data.video.shape[2], N_MELS).eval()
    rows = latency.manifest_rows(cached[1], 100)
    tokens = tokenize(tokenizer, [r["text"] for r in rows], max_length)
    with torch.no_grad():
        expected = model(**tokens, video=data.video, audio=data.audio, present=data.present)["reg"]  # (N,)

    params = _extract_params()
    media_inputs = latency.MediaInputs(clip_model, params.video, params.audio, video_tokens=3, audio_tokens=5)
    pipeline = latency.MultimodalStudentPipeline(model, tokenizer, max_length, media_inputs)
    with torch.inference_mode():
        got = _in_chunks(pipeline, rows, 4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert latency.count_parameters(*pipeline.modules()) == latency.count_parameters(clip_model.model, model)
