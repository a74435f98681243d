"""The command `python -m pipeline.predict` (pipeline/predict.py, evaluation/predictor.py): tiny models saved with
the project's own save functions, run through `main` on new inputs; each printed or written prediction must be
the model's own output on the same input (the raw-input pipelines of evaluation/latency.py), decoded with the
feature settings the model records; and every user mistake is one line naming what is wrong, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline import predict
from pipeline.core.config import (
    ConfigError,
    FeatureSettings,
    StudentParams,
    from_dict,
    load_section,
    recorded_features,
)
from pipeline.core.runtime import entry_point
from pipeline.data.synthetic import render_audio, render_frames, write_mp4
from pipeline.evaluation import latency
from pipeline.evaluation.metrics import sentiment_readings
from pipeline.features.clip import load_clip
from pipeline.models.masks import set_feature_stats
from pipeline.models.retrieval_student import (
    RETRIEVAL_CHECKPOINT,
    RetrievalStudent,
    RetrievalStudentConfig,
    save_retrieval_student,
)
from pipeline.models.students import build_student, save_student
from pipeline.models.teacher import PromptTeacher, TeacherConfig, load_teacher, save_teacher

DS, AV = "synthetic_sentiment", "synthetic_av"
CPU = torch.device("cpu")
N_MELS, K = 32, 7
TEXTS = ["what a lovely and warm film", "dull, slow and far too long", "it was fine I guess"]
CLASSES = ["dog", "drum", "rain"]
# what the models below were "trained" with: other frames and mel bins than the test project's params.yaml
# (4 frames, 32 mels), so a prediction that used today's params instead would differ
SETTINGS = from_dict(FeatureSettings, {
    "clip": {"model": "mmdistill-tiny", "pretrained": "", "init_seed": 0},
    "video": {"backend": "pyav", "sampling": "uniform", "frames": 6, "fps": 1.0, "max_frames": 16},
    "audio": {"sample_rate": 16000, "n_mels": N_MELS, "win_ms": 25.0, "hop_ms": 10.0, "fmin": 0.0, "fmax": 8000.0},
}, where="test")


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str], str]:
    """(exit code, stdout lines, stderr: the log, then an error) of the command as the shell runs it."""
    with pytest.raises(SystemExit) as exit_:
        entry_point(predict.main, argv)
    out, err = capsys.readouterr()
    return exit_.value.code, out.splitlines(), err


def error(err: str) -> str:
    """The error lines of a stderr (the log lines apart)."""
    return "\n".join(line for line in err.splitlines() if line.startswith("error: "))


def r_of(line: str) -> float:
    return float(line.split()[0].removeprefix("r="))


# --------------------------------------------------------------------------- models and clips


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two 1 s clips (32x32 coloured squares at 8 fps, a tone) and an undecodable file."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for i, cue in enumerate((-2.0, 2.5)):
        paths.append(root / f"clip_{i}.mp4")
        write_mp4(paths[-1], render_frames(cue, 8, 32, rng), 8, render_audio(cue, 16000, 16000, rng), 16000)
    (root / "broken.mp4").write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    return [*paths, root / "broken.mp4"]


@pytest.fixture(scope="module")
def clip_model():
    c = SETTINGS.clip
    return load_clip(c.model, c.pretrained, CPU, c.init_seed)


def _student_params() -> StudentParams:
    return from_dict(StudentParams, {
        "pretrained": "", "hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "vocab_size": 300,
        "max_length": 24, "head_hidden": 16, "dropout": 0.1, "video_tokens": 3, "audio_tokens": 5},
        where="distill.student")


@pytest.fixture(scope="module")
def text_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random text student saved as distill saves it (no feature settings: it reads no video)."""
    torch.manual_seed(0)
    model, tokenizer = build_student(_student_params(), "text", TEXTS * 3, num_classes=K)
    out = tmp_path_factory.mktemp("models") / "student_va-kd" / "seed_0"
    save_student(out, model.eval(), tokenizer, {"student": "va-kd", "dataset": DS, "seed": 0})
    return out


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory, clip_model) -> Path:
    """A tiny teacher over the tiny CLIP's space, saved as the teacher stage saves it (with its feature settings)."""
    return _save_teacher(tmp_path_factory.mktemp("models") / "teacher" / "seed_0", clip_model, SETTINGS.record())


def _save_teacher(out: Path, clip_model, record: dict) -> Path:
    torch.manual_seed(0)
    d = int(clip_model.encode_texts([""]).shape[1])
    config = TeacherConfig(embed_dim=d, audio_dim=N_MELS, num_classes=K, frames=4, audio_tokens=8, layers=1, heads=2,
                           dropout=0.0, prompt_alpha=0.5, mask="learned", step1_hidden=8)
    teacher = PromptTeacher(config, clip_model.encode_texts([f"a {k} clip" for k in range(K)]))
    set_feature_stats(teacher, "audio", torch.randn(4, 8, N_MELS) * 5 - 20, torch.ones(4, dtype=torch.bool))
    for p in (teacher.fuse[-1].weight, teacher.prompt_attn.out_proj.weight, teacher.mask_tokens):
        nn.init.normal_(p, std=0.2)  # off their zero init, so that every input reaches r
    out.mkdir(parents=True)
    save_teacher(out / "teacher.pt", teacher, {"dataset": DS, "seed": 0, "classes": [str(k) for k in range(K)],
                                               **record})
    return out


def _teacher_reference(model_dir: Path, settings: FeatureSettings, rows: list[dict]) -> torch.Tensor:
    """r of the saved teacher on `rows`, through latency.TeacherPipeline with `settings`."""
    pipeline, _ = latency.teacher_pipeline(
        model_dir / "teacher.pt", CPU,
        lambda record, source, video_tokens, audio_tokens: latency.media_inputs(settings, video_tokens,
                                                                                audio_tokens, CPU))
    with torch.inference_mode():
        return pipeline(rows)


# --------------------------------------------------------------------------- text student


def test_text_student_prints_its_own_output_for_each_text(text_student: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p.json"
    code, lines, _ = run([str(text_student), *(a for t in TEXTS for a in ("--text", t)), "--out", str(out)], capsys)
    assert code == 0 and len(lines) == len(TEXTS)
    pipeline, _ = latency.student_pipeline(text_student, CPU, media=None)
    with torch.inference_mode():
        expected = pipeline([{"text": t} for t in TEXTS]).double().numpy()  # (3,)
    assert np.ptp(expected) > 1e-4  # the inputs give different outputs: equality below is not trivial
    readings = sentiment_readings(expected)
    for i, (line, text) in enumerate(zip(lines, TEXTS, strict=True)):
        assert r_of(line) == pytest.approx(expected[i], abs=5e-4)  # printed with 3 decimals
        assert f"class7={readings['class7'][i]}" in line and f"polarity={readings['polarity'][i]}" in line
        assert line.endswith(json.dumps(text))
    written = json.loads(out.read_text())
    assert (written["kind"], written["dataset"], written["label_range"]) == ("text", DS, [-3.0, 3.0])
    assert [p["text"] for p in written["predictions"]] == TEXTS
    np.testing.assert_allclose([p["r"] for p in written["predictions"]], expected, atol=1e-6)


def test_text_student_reads_a_csv_column_and_writes_csv(text_student: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "in.csv"
    pd.DataFrame({"id": [1, 2, 3], "transcript": TEXTS}).to_csv(source, index=False)
    out = tmp_path / "out" / "p.csv"
    code, lines, _ = run([str(text_student), "--csv", str(source), "--column", "transcript", "--out", str(out)],
                         capsys)
    _, by_flag, _ = run([str(text_student), *(a for t in TEXTS for a in ("--text", t))], capsys)
    assert code == 0 and lines == by_flag
    table = pd.read_csv(out)
    assert list(table.columns) == ["text", "r", "class7", "polarity"]
    assert table["text"].tolist() == TEXTS
    np.testing.assert_allclose(table["r"], [r_of(line) for line in lines], atol=5e-4)


# --------------------------------------------------------------------------- models that read video


def test_teacher_on_a_clip_and_its_transcript_equals_the_teacher_pipeline(
        teacher_dir: Path, clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture, project: Path) -> None:
    out = tmp_path / "t.json"
    argv = [str(teacher_dir), "--video", str(clips[0]), "--text", TEXTS[0], "--video", str(clips[1]), "--text",
            TEXTS[1], "--out", str(out)]
    code, lines, _ = run(argv, capsys)
    assert code == 0 and len(lines) == 2
    rows = [{"video": str(c), "text": t} for c, t in zip(clips[:2], TEXTS[:2], strict=True)]
    expected = _teacher_reference(teacher_dir, SETTINGS, rows).double().numpy()
    got = [p["r"] for p in json.loads(out.read_text())["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert lines[0].endswith(f"{clips[0]}  {json.dumps(TEXTS[0])}")
    # the recorded settings, not the project's params.yaml (4 frames, decord), decoded the clips
    today = FeatureSettings.of(load_section("clip"), load_section("extract"))
    assert today.video != SETTINGS.video
    assert not np.allclose(_teacher_reference(teacher_dir, today, rows).double().numpy(), expected, atol=1e-5)


def test_a_model_saved_without_feature_settings_uses_params_yaml_with_a_warning(
        tmp_path: Path, clip_model, clips: list[Path], project: Path, capsys: pytest.CaptureFixture) -> None:
    old = _save_teacher(tmp_path / "old" / "seed_0", clip_model, record={})
    out = tmp_path / "t.json"
    code, _, err = run([str(old), "--video", str(clips[0]), "--text", TEXTS[0], "--out", str(out)], capsys)
    assert code == 0
    warning = next(line for line in err.splitlines() if "WARNING" in line and "has no record" in line)
    assert str(old / "teacher.pt") in warning and "today's" in warning
    today = FeatureSettings.of(load_section("clip"), load_section("extract"))
    expected = _teacher_reference(old, today, [{"video": str(clips[0]), "text": TEXTS[0]}])
    assert json.loads(out.read_text())["predictions"][0]["r"] == pytest.approx(float(expected[0]), abs=1e-5)


def test_a_teacher_trained_on_transcripts_alone_reads_them_alone(tmp_path: Path, clip_model, clips: list[Path],
                                                                 capsys: pytest.CaptureFixture) -> None:
    """The `self` control teacher: its checkpoint says it saw only the transcripts, so it is given only them."""
    control = _save_teacher(tmp_path / "teacher_self" / "seed_0", clip_model,
                            {"name": "teacher_self", "modalities": ["text"], **SETTINGS.record()})
    code, lines, _ = run([str(control), "--text", TEXTS[0], "--text", TEXTS[1]], capsys)
    assert code == 0
    expected = _teacher_reference(control, SETTINGS, [{"video": None, "text": t} for t in TEXTS[:2]])
    np.testing.assert_allclose([r_of(line) for line in lines], expected.numpy(), atol=5e-4)
    with_video = _teacher_reference(control, SETTINGS, [{"video": str(clips[0]), "text": TEXTS[0]}])
    assert float(with_video[0]) == pytest.approx(float(expected[0]), abs=1e-6)  # its pipeline masks the video
    code, _, err = run([str(control), "--text", TEXTS[0], "--video", str(clips[0])], capsys)
    assert code == 2 and "it reads text for each input: drop --video" in error(err)


def test_multimodal_student_reads_video_and_text_from_a_csv(tmp_path: Path, clip_model, clips: list[Path],
                                                            capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    d = int(clip_model.encode_texts([""]).shape[1])
    shapes = type("Shapes", (), {"video": torch.zeros(1, 3, d), "audio": torch.zeros(1, 5, N_MELS)})
    model, tokenizer = build_student(_student_params(), "multimodal", TEXTS * 3, num_classes=K, features=shapes)
    model_dir = tmp_path / "student_msd-kd" / "seed_0"
    save_student(model_dir, model.eval(), tokenizer, {"dataset": DS, **SETTINGS.record()})
    source = tmp_path / "inputs" / "clips.csv"  # video paths relative to the CSV's folder
    source.parent.mkdir()
    for clip in clips[:2]:
        (source.parent / clip.name).symlink_to(clip)
    pd.DataFrame({"video": [c.name for c in clips[:2]], "text": TEXTS[:2]}).to_csv(source, index=False)

    code, lines, _ = run([str(model_dir), "--csv", str(source)], capsys)
    assert code == 0 and len(lines) == 2
    pipeline, _ = latency.student_pipeline(
        model_dir, CPU, lambda record, source, vt, at: latency.MediaInputs(clip_model, SETTINGS.video,
                                                                           SETTINGS.audio, vt, at))
    with torch.inference_mode():
        expected = pipeline([{"video": str(source.parent / c.name), "text": t}
                             for c, t in zip(clips[:2], TEXTS[:2], strict=True)])
    np.testing.assert_allclose([r_of(line) for line in lines], expected.numpy(), atol=5e-4)


def test_retrieval_student_prints_each_branch_class_and_writes_embeddings(
        tmp_path: Path, clip_model, clips: list[Path], capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    d = int(clip_model.encode_texts([""]).shape[1])
    model = RetrievalStudent(RetrievalStudentConfig(audio_dim=N_MELS, visual_dim=d, embed_dim=8, hidden_dim=16,
                                                    num_classes=len(CLASSES)))
    model_dir = tmp_path / "student_va-kd" / "seed_0"
    save_retrieval_student(model_dir / RETRIEVAL_CHECKPOINT, model, {
        "dataset": AV, "classes": CLASSES, "video_tokens": 3, "audio_tokens": 5, **SETTINGS.record()})
    out = tmp_path / "r.json"
    code, lines, _ = run([str(model_dir), "--video", str(clips[0]), "--video", str(clips[1]), "--out", str(out)],
                         capsys)
    assert code == 0 and len(lines) == 2
    pipeline = latency.RetrievalStudentPipeline(model.eval(), latency.MediaInputs(clip_model, SETTINGS.video,
                                                                                  SETTINGS.audio, 3, 5))
    with torch.inference_mode():
        expected = pipeline.outputs([{"video": str(c), "text": ""} for c in clips[:2]])
    written = json.loads(out.read_text())["predictions"]
    for i, (line, prediction) in enumerate(zip(lines, written, strict=True)):
        for branch in ("audio", "visual"):
            probs = expected[f"{branch}_logits"][i].softmax(-1)
            assert prediction[f"{branch}_class"] == CLASSES[int(probs.argmax())]
            assert prediction[f"{branch}_p"] == pytest.approx(float(probs.max()), abs=1e-6)
            np.testing.assert_allclose(prediction[f"{branch}_emb"], expected[f"{branch}_emb"][i], atol=1e-6)
            assert f"{branch}_class={prediction[f'{branch}_class']}" in line
        assert line.endswith(str(clips[i])) and "emb" not in line
    assert "label_range" not in json.loads(out.read_text())


# --------------------------------------------------------------------------- mistakes: one line, exit code 2


def test_a_directory_that_holds_no_model_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    code, lines, err = run([str(tmp_path / "empty"), "--text", "hi"], capsys)
    err = error(err)
    assert (code, lines) == (2, [])
    assert err.startswith(f"error: {tmp_path / 'empty'} is not a model directory") and "teacher.pt" in err
    assert "student.json" in err and RETRIEVAL_CHECKPOINT in err and len(err.splitlines()) == 1
    code, _, err = run([str(tmp_path / "nowhere"), "--text", "hi"], capsys)
    assert code == 2 and f"{tmp_path / 'nowhere'}: no such model directory" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--video", "{missing}", "--text", "hi"], "input 1: video file '{missing}' not found"),
    (["--video", "{broken}", "--text", "hi"], "{broken}: cannot read its frames"),
    (["--text", "hi"], "it reads video + text for each input: give --video"),
    (["--video", "{clip}", "--text", "  "], "input 1: empty text"),
    (["--video", "{clip}", "--text", "a", "--text", "b"], "--text is given 2 times and --video 1 times"),
    ([], "no input"),
])
def test_teacher_input_mistakes(teacher_dir: Path, clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture,
                                argv: list[str], message: str) -> None:
    names = {"missing": str(tmp_path / "missing.mp4"), "broken": str(clips[2]), "clip": str(clips[0])}
    code, lines, err = run([str(teacher_dir), *(a.format(**names) for a in argv)], capsys)
    err = error(err)
    assert (code, lines) == (2, [])
    assert err.startswith("error: ") and message.format(**names) in err and len(err.splitlines()) == 1


def test_text_student_refuses_a_video_and_a_bad_out_name(text_student: Path, clips: list[Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    code, _, err = run([str(text_student), "--text", "hi", "--video", str(clips[0])], capsys)
    assert code == 2 and "is a text model" in err and "drop --video" in err
    code, _, err = run([str(text_student), "--text", "hi", "--out", str(tmp_path / "p.txt")], capsys)
    assert code == 2 and "must end in .csv or .json" in err
    source = tmp_path / "in.csv"
    pd.DataFrame({"words": TEXTS}).to_csv(source, index=False)
    code, _, err = run([str(text_student), "--csv", str(source)], capsys)
    assert code == 2 and f"{source} has neither a 'text' column" in err and "['words']" in err


def test_feature_settings_round_trip_through_a_checkpoint_record(teacher_dir: Path) -> None:
    _, record = load_teacher(teacher_dir / "teacher.pt")
    assert json.loads(json.dumps(record["features"])) == record["features"]  # plain JSON data
    assert recorded_features(record, teacher_dir, fallback=None) == SETTINGS
    changed = {**record["features"], "clip": {**record["features"]["clip"], "modle": "x"}}
    with pytest.raises(ConfigError, match="modle"):  # a damaged record is named, not silently replaced
        recorded_features({"features": changed}, teacher_dir, fallback=None)
