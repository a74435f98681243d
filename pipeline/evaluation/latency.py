"""Measured end-to-end inference latency per clip, and the end-to-end pipelines it times.

Used by the evaluate stage (`evaluate.latency` in params.yaml) to put a measured cost next to
each model's metrics. A model's *inference cost* here is everything between a manifest row
(a video path and a transcript) and its regression output r, on one device:

    teacher                 decode the sampled frames -> CLIP preprocess -> frozen CLIP image
                            encoder -> pool to the teacher's video tokens; decode the audio ->
                            log-mel -> pool to audio tokens; CLIP text embedding of the
                            transcript; teacher forward                       (`TeacherPipeline`)
    text student            tokenize the transcript; student forward          (`TextStudentPipeline`)
    multimodal student      the teacher's decode / encode / log-mel path (shared code), tokenize;
                            student forward                                   (`MultimodalStudentPipeline`)
    retrieval student       the same decode / encode / log-mel path; both branches' embeddings
                            (a clip is indexed as audio and as visual item)  (`RetrievalStudentPipeline`)

A saved model becomes its pipeline through `teacher_pipeline`, `student_pipeline` and
`retrieval_student_pipeline` (stage evaluate, through the tasks, and pipeline/predict.py), each with the
feature settings its checkpoint records (`media_inputs`). Each pipeline's `outputs` gives all the model's
outputs (logits too); calling it gives the one latency times and evaluate compares.

Each pipeline computes exactly what the cached-feature path computes (extract -> store ->
features.load_features -> forward), so its predictions equal the stored ones up to float
rounding; a clip that fails to decode, or has an unusable transcript, has that modality
masked (`present` False, zeros), as a clip missing from a feature file is downstream.
Decoding runs in the calling process, one clip after another, with the decoder's own
threads (no DataLoader workers): the cost of serving a request, not of bulk extraction.

Definitions (`time_per_clip`):

* a *pass* runs `process` once over every item, in consecutive chunks of `batch_size`
  (the last chunk may be smaller); its time is wall-clock `time.perf_counter()` from before
  the first chunk to after the last, with `torch.cuda.synchronize` at both ends on CUDA so
  that queued kernels are counted;
* `warmup` untimed passes come first (allocator, cuDNN autotuning, decoder and file caches),
  then `repeats` timed passes, all under `torch.inference_mode`;
* ``ms_per_clip = median(pass times) / clips * 1000``: the median pass (for an even count,
  the mean of the two middle ones) divided by the number of items, in milliseconds.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import torch
from torch import nn

from pipeline.core.config import MODALITIES, AudioParams, ClipParams, FeatureSettings, LatencyParams, VideoParams
from pipeline.core.errors import UserError
from pipeline.features import media
from pipeline.features.arrays import pool_time
from pipeline.features.clip import FrozenClip, load_clip
from pipeline.features.extraction import LoadFrames, LoadLogMel, transcript_problem
from pipeline.models.retrieval_student import RETRIEVAL_CHECKPOINT, load_retrieval_student
from pipeline.models.students import load_student, tokenize
from pipeline.models.teacher import PromptTeacher, load_teacher

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = Mapping[str, Any]  # a manifest row: at least `video` (a path) and `text` (the transcript)
Outputs = dict[str, torch.Tensor]  # a model's outputs for a batch of rows, on the CPU
DECODE_ERRORS = (media.DecodeError, OSError, ValueError)  # what extraction records as a failed clip


# --------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_clip(process: Callable[[list[T]], Any], items: list[T], batch_size: int, repeats: int, warmup: int,
                  device: torch.device) -> dict[str, Any]:
    """Time `process` over `items` in chunks of `batch_size` (definitions in the module docstring).

    Returns ``{"ms_per_clip": float, "passes_ms": [one float per timed pass], "batch_size": int,
    "clips": len(items)}``.
    """
    if not items:
        raise ValueError("time_per_clip needs at least one item to time")
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"time_per_clip needs batch_size >= 1, repeats >= 1 and warmup >= 0; got "
                         f"batch_size={batch_size}, repeats={repeats}, warmup={warmup}")
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    passes_ms: list[float] = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            _sync(device)
            start = time.perf_counter()
            for chunk in chunks:
                process(chunk)
            _sync(device)
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            if index >= warmup:
                passes_ms.append(elapsed_ms)
    ms_per_clip = statistics.median(passes_ms) / len(items)
    log.debug("%d clips in batches of %d: %.3f ms per clip (passes %s ms)", len(items), batch_size, ms_per_clip,
              ", ".join(f"{p:.1f}" for p in passes_ms))
    return {"ms_per_clip": ms_per_clip, "passes_ms": passes_ms, "batch_size": batch_size, "clips": len(items)}


def measure_latency(process: Callable[[list[T]], Any], items: Sequence[T], params: LatencyParams,
                    device: torch.device) -> dict[str, Any]:
    """`time_per_clip` on the first `params.clips` items at batch 1 and at `params.batch_size`.

    Returns ``{"latency_ms_b1", "latency_ms_batched", "batch_size", "clips", "device"}``, the
    latency fields of the metrics JSON's `efficiency` (milliseconds per clip, as defined above).
    """
    chosen = list(items[: params.clips])
    if not chosen:
        raise ValueError(f"no clips to time (evaluate.latency.clips={params.clips}, {len(items)} available)")
    single = time_per_clip(process, chosen, 1, params.repeats, params.warmup, device)
    batched = time_per_clip(process, chosen, params.batch_size, params.repeats, params.warmup, device)
    return {"latency_ms_b1": single["ms_per_clip"], "latency_ms_batched": batched["ms_per_clip"],
            "batch_size": params.batch_size, "clips": len(chosen), "device": str(device)}


def count_parameters(*modules: nn.Module) -> int:
    """Number of parameter elements of `modules` together, trainable or frozen; a parameter
    shared by several modules (or tied inside one) is counted once."""
    unique: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            unique.setdefault(id(p), p)
    return sum(p.numel() for p in unique.values())


def manifest_rows(manifest: pd.DataFrame, clips: int) -> list[dict[str, Any]]:
    """The first `clips` rows of a manifest DataFrame as dicts (what the pipelines take)."""
    return manifest.head(clips).to_dict("records")


# --------------------------------------------------------------------------- shared media path


class NotFromRawClips(UserError):
    """A model whose inputs came from a precomputed feature file was asked to run on a raw clip."""


class MediaInputs:
    """Raw clips -> the video and audio model inputs of the cached-feature path.

    Video: the frames `extract.video` samples (decoded by its backend), CLIP's preprocessing,
    the frozen image encoder (all clips of a call in one batch, as extract@video), then adaptive
    average pooling over time to `video_tokens` (features/arrays.py pool_time). Audio: the mono waveform
    at `extract.audio.sample_rate`, features/extraction.py log_mel, pooled to `audio_tokens`. Returned on the CPU.
    To reproduce the cached features on a GPU, load `clip` with `extract.run.precision` (the CLIP
    autocast extract@video used); on the CPU the encoder always runs in fp32.

    A clip whose frames cannot be decoded has its video masked, as extraction records it as a failure;
    with `strict` (a user's own clip, pipeline/predict.py) it is a UserError naming the file instead.
    """

    def __init__(self, clip: FrozenClip, video: VideoParams, audio: AudioParams, video_tokens: int,
                 audio_tokens: int, strict: bool = False) -> None:
        self.clip = clip
        self.strict = strict
        # modalities the model read from a precomputed feature file (features/precomputed.py): no clip gives them
        # (`auto` is what a model saved before sources existed records: its features came from the clips)
        self.precomputed = {m: p.source for m, p in (("video", video), ("audio", audio))
                            if p.source not in ("auto", "media")}
        # extract's own per-clip loaders (decoder threads chosen by the decoder: no workers here)
        self.load_frames = LoadFrames(media.FrameSampler.from_params(video), video.backend, clip.preprocess, threads=0)
        self.load_log_mel = LoadLogMel(audio)
        self.audio_params = audio
        self.video_tokens = video_tokens
        self.audio_tokens = audio_tokens
        self.embed_dim = int(clip.encode_texts([""]).shape[1])  # D of the CLIP space (for masked clips' zeros)

    def __call__(self, rows: Sequence[Row], modalities: Sequence[str] = MODALITIES) -> dict[str, torch.Tensor]:
        """rows -> video (B, Fv, D), audio (B, A, n_mels) float32 and present (B, 3) bool (MODALITIES order;
        text is present when its transcript is usable, as extract@text decides; a row whose `video` is None,
        a transcript alone, has no video and no audio). NotFromRawClips when one of the `modalities` the model
        reads came from a precomputed feature file."""
        files = {m: f for m, f in self.precomputed.items() if m in modalities}
        if files:
            raise NotFromRawClips(
                "this model reads precomputed features (" + ", ".join(f"{m}: {f}" for m, f in files.items())
                + "), which cannot be computed from a video; score it on the file's features (`dvc repro evaluate`), "
                "or train it on features of the clips (extract.<m>.source=media) to run it on new videos")
        b = len(rows)
        video = torch.zeros(b, self.video_tokens, self.embed_dim)  # (B, Fv, D)
        audio = torch.zeros(b, self.audio_tokens, self.audio_params.n_mels)  # (B, A, n_mels)
        present = torch.zeros(b, len(MODALITIES), dtype=torch.bool)  # (B, 3)
        decoded: list[tuple[int, torch.Tensor]] = []
        for i, row in enumerate(rows):
            present[i, MODALITIES.index("text")] = transcript_problem(str(row["text"])) is None
            if row["video"] is None:
                continue
            path = Path(row["video"])
            try:
                decoded.append((i, self.load_frames(path)))  # (F, 3, S, S)
            except DECODE_ERRORS as err:
                if self.strict:
                    raise UserError(f"{path}: cannot read its frames ({err}); give a video file that ffmpeg "
                                    "can decode") from err
                log.warning("clip %s: video masked (%s)", path, err)
            try:
                audio[i] = pool_time(self.load_log_mel(path), self.audio_tokens)  # (A, n_mels)
                present[i, MODALITIES.index("audio")] = True
            except DECODE_ERRORS as err:
                log.warning("clip %s: audio masked (%s)", path, err)
        if decoded:
            emb = self.clip.encode_images(torch.cat([x for _, x in decoded]))  # (sum F_i, D)
            for (i, _), e in zip(decoded, emb.split([len(x) for _, x in decoded]), strict=True):
                video[i] = pool_time(e.numpy(), self.video_tokens)  # (Fv, D)
                present[i, MODALITIES.index("video")] = True
        return {"video": video, "audio": audio, "present": present}

    def embed_texts(self, rows: Sequence[Row], present_text: torch.Tensor) -> torch.Tensor:
        """CLIP text embeddings (B, D) of the transcripts marked present (zeros elsewhere), as extract@text."""
        text = torch.zeros(len(rows), self.embed_dim)  # (B, D)
        keep = present_text.nonzero().flatten().tolist()
        if keep:
            text[keep] = self.clip.encode_texts([str(rows[i]["text"]) for i in keep])  # (B', D)
        return text


def media_inputs(settings: FeatureSettings, video_tokens: int, audio_tokens: int, device: torch.device,
                 precision: str = "fp32", clips: dict[ClipParams, FrozenClip] | None = None,
                 strict: bool = False) -> MediaInputs:
    """The MediaInputs of a model whose features were made with `settings` (what its checkpoint records:
    config.recorded_features), pooled to its token counts: that CLIP, loaded on `device` with autocast
    `precision` (the one extract@video used), or taken from `clips`, a cache that the models of one run share
    (stage evaluate loads one CLIP for all of them)."""
    clip = clips.get(settings.clip) if clips is not None else None
    if clip is None:
        c = settings.clip
        clip = load_clip(c.model, c.pretrained, device, c.init_seed, precision)
        if clips is not None:
            clips[settings.clip] = clip
    return MediaInputs(clip, settings.video, settings.audio, video_tokens, audio_tokens, strict=strict)


# a saved model's MediaInputs: (its provenance record, the file it was read from, video tokens, audio tokens) ->
# MediaInputs; e.g. recorded_features, then media_inputs (evaluation/scoring.py, evaluation/predictor.py)
MediaFactory = Callable[[Mapping[str, Any], Path, int, int], MediaInputs]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------- pipelines


class TeacherPipeline:
    """Manifest rows -> the teacher's regression output r_T (B,) on the CPU, from the raw clips.

    `teacher` is put in eval mode; `media_inputs` must produce the teacher's input shapes (its token counts:
    `teacher_pipeline`). A modality not in `modalities`, those the teacher was trained with, is masked (the
    `self` control teacher saw the transcripts alone).
    """

    def __init__(self, teacher: PromptTeacher, media_inputs: MediaInputs,
                 modalities: Sequence[str] = MODALITIES) -> None:
        c = teacher.config
        got = (media_inputs.embed_dim, media_inputs.audio_params.n_mels, media_inputs.video_tokens,
               media_inputs.audio_tokens)
        if "audio" in media_inputs.precomputed:  # its audio is not log-mel: nothing to compare (and never computed)
            got = (got[0], c.audio_dim, *got[2:])
        if got != (c.embed_dim, c.audio_dim, c.frames, c.audio_tokens):
            raise ValueError(f"the media inputs (embed_dim, n_mels, video_tokens, audio_tokens) = {got} do not match "
                             f"the teacher's {(c.embed_dim, c.audio_dim, c.frames, c.audio_tokens)}: load the CLIP "
                             "and extract params the teacher was trained with")
        self.teacher = teacher.eval()
        self.media = media_inputs
        self.modalities = tuple(modalities)

    def modules(self) -> list[nn.Module]:
        """What runs at inference (for `count_parameters`): the CLIP model and the teacher."""
        return [self.media.clip.model, self.teacher]

    def outputs(self, rows: Sequence[Row]) -> Outputs:
        """reg (B,) and logits (B, K)."""
        inputs = self.media(rows, self.modalities)
        inputs["present"][:, [m not in self.modalities for m in MODALITIES]] = False
        inputs["text"] = self.media.embed_texts(rows, inputs["present"][:, MODALITIES.index("text")])  # (B, D)
        device = _device(self.teacher)
        out = self.teacher(**{k: v.to(device) for k, v in inputs.items()})
        return {k: out[k].float().cpu() for k in ("reg", "logits")}

    def __call__(self, rows: Sequence[Row]) -> torch.Tensor:
        return self.outputs(rows)["reg"]  # (B,)


class TextStudentPipeline:
    """Manifest rows -> the text student's r_S (B,) on the CPU: tokenize (models/students.py) + forward."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length

    def modules(self) -> list[nn.Module]:
        return [self.model]

    def outputs(self, rows: Sequence[Row]) -> Outputs:
        """reg (B,) and logits (B, K)."""
        tokens = tokenize(self.tokenizer, [str(r["text"]) for r in rows], self.max_length)  # (B, L) each
        device = _device(self.model)
        out = self.model(**{k: v.to(device) for k, v in tokens.items()})
        return {k: out[k].float().cpu() for k in ("reg", "logits")}

    def __call__(self, rows: Sequence[Row]) -> torch.Tensor:
        return self.outputs(rows)["reg"]  # (B,)


class MultimodalStudentPipeline:
    """Manifest rows -> a multimodal student's r_S (B,) on the CPU: the teacher's decode / encode /
    log-mel path (`MediaInputs`, with the student's token counts) + tokenize + forward
    ``model(input_ids, attention_mask, video, audio, present)``."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int, media_inputs: MediaInputs) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.media = media_inputs

    def modules(self) -> list[nn.Module]:
        return [self.media.clip.model, self.model]

    def outputs(self, rows: Sequence[Row]) -> Outputs:
        """reg (B,) and logits (B, K)."""
        inputs = self.media(rows)  # video (B, Fv, D), audio (B, A, n_mels), present (B, 3)
        inputs.update(tokenize(self.tokenizer, [str(r["text"]) for r in rows], self.max_length))  # (B, L) each
        device = _device(self.model)
        out = self.model(**{k: v.to(device) for k, v in inputs.items()})
        return {k: out[k].float().cpu() for k in ("reg", "logits")}

    def __call__(self, rows: Sequence[Row]) -> torch.Tensor:
        return self.outputs(rows)["reg"]  # (B,)


class RetrievalStudentPipeline:
    """Manifest rows -> a retrieval student's audio and visual embeddings (B, 2, E) on the CPU: the
    teacher's decode / encode / log-mel path (`MediaInputs`, with the student's token counts) +
    both branches (every clip is embedded as a query / gallery item of each modality)."""

    def __init__(self, model: nn.Module, media_inputs: MediaInputs) -> None:
        self.model = model.eval()
        self.media = media_inputs

    def modules(self) -> list[nn.Module]:
        return [self.media.clip.model, self.model]

    def outputs(self, rows: Sequence[Row]) -> Outputs:
        """audio_emb, visual_emb (B, E) and the shared classifier's audio_logits, visual_logits (B, K)."""
        inputs = self.media(rows)  # video (B, Fv, D), audio (B, A, n_mels)
        device = _device(self.model)
        out = self.model(audio=inputs["audio"].to(device), visual=inputs["video"].to(device))
        return {k: v.float().cpu() for k, v in out.items()}

    def __call__(self, rows: Sequence[Row]) -> torch.Tensor:
        out = self.outputs(rows)
        return torch.stack([out["audio_emb"], out["visual_emb"]], dim=1)  # (B, 2, E)


# --------------------------------------------------------------------------- saved models


def teacher_pipeline(checkpoint: Path, device: torch.device, media: MediaFactory) -> tuple[TeacherPipeline, dict]:
    """The teacher saved at `checkpoint` (stage teacher's teacher.pt) on `device`, from raw clips with its own
    token counts and the modalities it was trained with (all three for a checkpoint that does not say), and its
    checkpoint (config and provenance)."""
    teacher, ckpt = load_teacher(checkpoint)
    c = teacher.config
    inputs = media(ckpt, checkpoint, c.frames, c.audio_tokens)
    return TeacherPipeline(teacher.to(device), inputs, ckpt.get("modalities", MODALITIES)), ckpt


def student_pipeline(model_dir: Path, device: torch.device, media: MediaFactory
                     ) -> tuple[TextStudentPipeline | MultimodalStudentPipeline, dict]:
    """The text or multimodal student saved in `model_dir` (stage distill's) on `device`, from raw clips, and
    its student.json (config and provenance)."""
    model, tokenizer, meta = load_student(model_dir)
    model.to(device)
    config = meta["config"]
    if config["kind"] == "multimodal":
        inputs = media(meta, model_dir, config["video_tokens"], config["audio_tokens"])
        return MultimodalStudentPipeline(model, tokenizer, config["max_length"], inputs), meta
    return TextStudentPipeline(model, tokenizer, config["max_length"]), meta


def retrieval_student_pipeline(model_dir: Path, device: torch.device, media: MediaFactory
                               ) -> tuple[RetrievalStudentPipeline, dict]:
    """The retrieval student saved in `model_dir` (stage distill's) on `device`, from raw clips, and its
    checkpoint (config and provenance)."""
    checkpoint = model_dir / RETRIEVAL_CHECKPOINT
    model, ckpt = load_retrieval_student(checkpoint, device)
    return RetrievalStudentPipeline(model, media(ckpt, checkpoint, ckpt["video_tokens"], ckpt["audio_tokens"])), ckpt
