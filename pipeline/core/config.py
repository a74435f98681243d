"""Typed access to params.yaml, the single source of hyper-parameters.

Each section of params.yaml maps to a frozen dataclass below. `load_section` turns a
section into its dataclass and rejects unknown or missing keys, naming the valid ones,
so a typo in `dvc exp run -S teacher.lrr=...` fails before any work is done.

Closed choices (dataset, student, backend, distance, ...) are `Literal` fields declared here, so
that loading params needs none of the modules they configure (this module imports nothing from
the project); a test checks that each `Literal` matches the registry that implements it
(core/registry.py: one small table of names -> builders per concern). An unknown name raises
with the available names and the closest match.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml

from pipeline.core.errors import UserError

T = TypeVar("T")
PARAMS_FILE = Path("params.yaml")
MODALITIES: tuple[str, ...] = ("video", "audio", "text")  # the order of every per-modality array and mask


class ConfigError(UserError, ValueError):
    """A params.yaml value is missing, unknown or of the wrong type."""


# --------------------------------------------------------------------------- sections


DatasetName = Literal["synthetic_sentiment", "synthetic_av", "mosi", "mosei", "sims", "csv", "vegas"]
StudentName = Literal["va-none", "va-kd", "va-self", "va-videoadviser", "msd-none", "msd-kd", "msd-uniform",
                      "msd-population", "msd-instance", "msd-learned"]  # <family>-<method>: distillation/families.py
Backend = Literal["decord", "pyav"]  # features/media.py
Sampling = Literal["uniform", "fps", "all"]
Precision = Literal["fp32", "fp16", "bf16"]
Distance = Literal["l1", "mse", "smooth_l1"]  # distillation/losses.py
Objective = Literal["triplet", "supcon"]  # tasks/retrieval.py
DISTANCES: tuple[str, ...] = get_args(Distance)
OBJECTIVES: tuple[str, ...] = get_args(Objective)


def did_you_mean(value: object, choices: list[str] | tuple[str, ...]) -> str:
    """` Did you mean 'x'?` for the closest of `choices` (difflib), or "" when none is close."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_choice(where: str, value: object, choices: list[str] | tuple[str, ...]) -> ConfigError:
    """ConfigError for a params value that is not among `choices`, naming the key and the closest match."""
    return ConfigError(f"{where}: unknown value {value!r}.{did_you_mean(value, choices)} Available: {list(choices)}")


@dataclasses.dataclass(frozen=True)
class MediaParams:
    """Clip format shared by the synthetic datasets."""

    seconds: float  # clip duration
    fps: int  # video frame rate
    size: int  # frame side in pixels (even, >= 32, not 48 or 72: synthetic.DECORD_UNREADABLE_SIZES)
    sample_rate: int  # audio sample rate in Hz


@dataclasses.dataclass(frozen=True)
class SentimentNoiseParams:
    text: float  # tau: spread of the lexical cues' valences around the sentiment (or its opposite)
    video: float  # std of the gaussian noise on the square's colour cue
    audio: float  # std of the gaussian noise on the pitch cue
    annotator: float  # std of each annotator's noise before rounding to an integer rating


@dataclasses.dataclass(frozen=True)
class SentimentParams:
    """synthetic_sentiment (MOSI-like; the process is described in pipeline/data/synthetic.py)."""

    n_clips: int
    splits: dict[str, float]  # fraction of clips per split (train/valid/test), by video
    annotators: int  # raters per clip; the label is the mean of their integer ratings
    irony: float  # probability that the words say the opposite of the face and voice
    cues: list[int]  # [min, max] lexical cues per transcript, drawn uniformly
    noise: SentimentNoiseParams
    monte_carlo: int  # fresh draws estimating the known limits (limits.json)

    def __post_init__(self) -> None:
        if len(self.cues) != 2 or not 1 <= self.cues[0] <= self.cues[1]:
            raise ConfigError(f"generate.synthetic_sentiment.cues must be [min, max] with 1 <= min <= max, "
                              f"got {self.cues}")
        if self.monte_carlo < 2:
            raise ConfigError(f"generate.synthetic_sentiment.monte_carlo must be >= 2, got {self.monte_carlo}")


@dataclasses.dataclass(frozen=True)
class AVNoiseParams:
    audio: float  # std of the gaussian noise on the audio's class cue, in class spacings
    visual: float  # the same for the frames' colour


@dataclasses.dataclass(frozen=True)
class AVParams:
    """synthetic_av (VEGAS-like retrieval data)."""

    n_clips: int
    n_folds: int  # fold files (VEGAS protocol: 5)
    noise: AVNoiseParams


@dataclasses.dataclass(frozen=True)
class GenerateParams:
    """Synthetic dataset generation (stage `generate@<dataset>`): one block per dataset, so that DVC reruns
    only the dataset whose block changed."""

    seed: int  # every random draw of the datasets (apart from `seeds`: all training seeds share the data)
    media: MediaParams
    synthetic_sentiment: SentimentParams
    synthetic_av: AVParams


@dataclasses.dataclass(frozen=True)
class PrepareParams:
    """How stage `prepare` splits a dataset without fixed splits (VEGAS layout: 5 fold files)."""

    test_fold: int  # the fold (1..5) that is the test split (VEGAS's 5-fold protocol: run each for CV)
    valid_fraction: float  # part of the other folds' clips held out as `valid`, stratified by class
    split_seed: int  # seed of that draw

    def __post_init__(self) -> None:
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"prepare.valid_fraction must be in (0, 1), got {self.valid_fraction}")


@dataclasses.dataclass(frozen=True)
class ClipParams:
    """The frozen CLIP shared by extract@video and extract@text (one embedding space)."""

    model: str  # open_clip model name, e.g. ViT-B-32, or our tiny `mmdistill-tiny`
    pretrained: str  # open_clip tag (e.g. openai), a checkpoint path, or "" for random init
    init_seed: int  # seeds the random init when pretrained is "" (apart from `seed`, so seeds share features)


@dataclasses.dataclass(frozen=True)
class RunParams:
    """How a stage runs; does not change what it computes (up to float rounding)."""

    device: str  # auto | cpu | cuda | cuda:N
    batch_size: int  # clips per encoder batch
    num_workers: int  # DataLoader workers decoding clips while the main process encodes
    precision: Precision  # autocast of the encoder on GPU (CPU always runs fp32)


@dataclasses.dataclass(frozen=True)
class VideoParams:
    backend: Backend  # decord | pyav (for platforms without decord wheels)
    sampling: Sampling  # uniform: `frames` per clip | fps: `fps` frames per second | all: every frame
    frames: int  # uniform sampling: frames per clip
    fps: float  # fps sampling: frames per second of video
    max_frames: int  # fps / all sampling: at most this many frames per clip (uniformly thinned beyond)


@dataclasses.dataclass(frozen=True)
class AudioParams:
    sample_rate: int
    n_mels: int
    win_ms: float
    hop_ms: float
    fmin: float
    fmax: float


@dataclasses.dataclass(frozen=True)
class TextParams:
    templates: list[str]  # class prompt templates, "{}" is replaced by the class name
    classes: list[str]  # one name per sentiment bin, from most negative to most positive
    class_templates: list[str]  # datasets with named classes (retrieval): prompts over the manifest's class names


@dataclasses.dataclass(frozen=True)
class ExtractParams:
    run: RunParams
    max_failure_ratio: float
    video: VideoParams
    audio: AudioParams
    text: TextParams


@dataclasses.dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int  # global batch per optimizer step (all processes and accumulation steps together)
    lr: float  # peak learning rate of AdamW
    warmup: float  # fraction of the steps with a linear warm-up; then linear decay to 0
    weight_decay: float
    device: str  # auto | cpu | cuda | cuda:N (under torchrun each rank takes cuda:LOCAL_RANK)
    precision: Precision  # autocast on GPU (fp16 with a gradient scaler); CPU runs fp32
    grad_accum: int  # micro-batches per optimizer step (the global batch is split, not multiplied)
    checkpoint_every: int  # optimizer steps between resumable checkpoints; 0 = only at the end of an epoch
    patience: int = 0  # early stopping: stop after this many epochs without a better validation value; 0 = never
    min_epochs: int = 0  # early stopping never stops before this many epochs (a model's initial plateau)

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ConfigError(f"train.patience must be >= 0 (0 = no early stopping), got {self.patience}")
        if not 0 <= self.min_epochs <= self.epochs:
            raise ConfigError(f"train.min_epochs must be in [0, epochs={self.epochs}], got {self.min_epochs}")
        if self.grad_accum < 1 or self.batch_size < self.grad_accum:
            raise ConfigError(f"train: need 1 <= grad_accum <= batch_size, got grad_accum={self.grad_accum}, "
                              f"batch_size={self.batch_size}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"train.checkpoint_every must be >= 0, got {self.checkpoint_every}")


@dataclasses.dataclass(frozen=True)
class TeacherParams:
    layers: int  # temporal / audio transformer layers
    heads: int
    dropout: float
    video_tokens: int  # frame embeddings are average-pooled over time to this many tokens
    audio_tokens: int  # log-mel frames are average-pooled over time to this many tokens
    prompt_alpha: float  # initial residual weight a of the video-enhanced prompts
    mask: Literal["zeros", "learned"]  # how a masked (missing or held-out) modality is filled
    schedule: Literal["joint", "two_phase"]  # step 1: classification -> regression
    ce_weight: float
    step1_hidden: int  # hidden width of g, the logits -> regression MLP
    # prediction: |r_T(x) - r_T(x without m)| | loss: |y - r_T(x without m)| - |y - r_T(x)|
    saliency: Literal["prediction", "loss"]
    train: TrainParams
    modality_dropout: float = 0.0  # training: each present modality masked with this probability, one always kept

    def __post_init__(self) -> None:
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(f"teacher.modality_dropout must be in [0, 1), got {self.modality_dropout}")


@dataclasses.dataclass(frozen=True)
class StudentParams:
    """The text encoder of the text and multimodal students, and the multimodal student's feature pooling
    (which student a family trains is the task's: tasks/)."""

    pretrained: str  # HF hub id or local dir; "" builds a tiny random RoBERTa
    hidden_size: int
    layers: int
    heads: int
    intermediate_size: int
    vocab_size: int  # size of the byte-level BPE trained on the train transcripts
    max_length: int
    head_hidden: int
    dropout: float
    video_tokens: int  # multimodal student: frame embeddings pooled over time to this many tokens
    audio_tokens: int  # multimodal student: log-mel frames pooled over time to this many tokens


@dataclasses.dataclass(frozen=True)
class VideoAdviserParams:
    weight: float  # lambda
    distance: Distance


@dataclasses.dataclass(frozen=True)
class KDParams:
    weight: float  # alpha of the KD term
    temperature: float  # T of the softened distributions


@dataclasses.dataclass(frozen=True)
class MSDParams:
    kd_weight: float  # alpha of the KD term on the full-input logits
    temperature: float  # T of that KD term
    distance: Distance  # D between S(x_m) and T(x_m)
    instance_temperature: float  # tau of the per-clip softmax over saliencies (`instance`)
    meta_lr: float  # beta: SGD step size of the weight logits phi (`learned`; the look-ahead step uses train.lr)
    meta_split: Literal["train", "valid"]  # the split `learned`'s meta set is carved from (never the selection clips)
    meta_fraction: float  # the part of that split held out as the meta set

    def __post_init__(self) -> None:
        if self.instance_temperature <= 0:
            raise ConfigError(f"distill.msd.instance_temperature must be > 0, got {self.instance_temperature}")
        if not 0.0 < self.meta_fraction < 1.0:
            raise ConfigError(f"distill.msd.meta_fraction must be in (0, 1), got {self.meta_fraction}")


@dataclasses.dataclass(frozen=True)
class RetrievalParams:
    """The two-branch retrieval student (retrieval datasets) and its loss (retrieval.retrieval_loss)."""

    embed_dim: int  # common space E
    hidden_dim: int  # hidden layer of each branch
    dropout: float
    objective: Objective
    temperature: float  # supcon tau
    margin: float  # triplet margin
    ce_weight: float  # weight of the shared classifier's cross-entropy


@dataclasses.dataclass(frozen=True)
class DistillParams:
    students: list[StudentName]  # <family>-<method> (distillation/families.py), one student per entry and seed
    student: StudentParams
    retrieval: RetrievalParams
    train: TrainParams
    kd: KDParams
    videoadviser: VideoAdviserParams
    msd: MSDParams


@dataclasses.dataclass(frozen=True)
class FloorParams:
    """The linear floor (stage `floor`): TF-IDF + ridge on transcripts, or linear probes for retrieval."""

    grid: list[float]  # regularisation strengths tried (ridge alpha; 1/C of the logistic regression), chosen on valid
    ngrams: int  # word n-grams 1..ngrams of the TF-IDF

    def __post_init__(self) -> None:
        if not self.grid or any(not v > 0 for v in self.grid):
            raise ConfigError(f"floor.grid must be a non-empty list of values > 0, got {self.grid}")
        if self.ngrams < 1:
            raise ConfigError(f"floor.ngrams must be >= 1, got {self.ngrams}")


@dataclasses.dataclass(frozen=True)
class LatencyParams:
    clips: int  # test clips timed end to end (decode -> prediction)
    batch_size: int  # the batched measurement (the other is batch 1)
    repeats: int  # timed passes over the clips; the median pass is reported
    warmup: int  # untimed passes first (allocator, cuDNN autotune, caches)


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    batch_size: int
    device: str
    latency: LatencyParams


@dataclasses.dataclass(frozen=True)
class ReportParams:
    dpi: int  # resolution of the PNG figures
    confidence: float  # of the bootstrap intervals of paired differences
    alpha: float  # a difference holds when its Holm-adjusted p is below alpha (and its interval excludes 0)
    resamples: int  # bootstrap and sign-flip resamples
    seed: int  # of those resamples

    def __post_init__(self) -> None:
        if not (0.0 < self.confidence < 1.0 and 0.0 < self.alpha < 1.0):
            raise ConfigError(f"report.confidence and report.alpha must be in (0, 1), got {self.confidence}, "
                              f"{self.alpha}")
        if self.resamples < 100:
            raise ConfigError(f"report.resamples must be >= 100, got {self.resamples}")


SECTIONS: dict[str, type] = {
    "generate": GenerateParams,
    "prepare": PrepareParams,
    "clip": ClipParams,
    "extract": ExtractParams,
    "teacher": TeacherParams,
    "floor": FloorParams,
    "distill": DistillParams,
    "evaluate": EvaluateParams,
    "report": ReportParams,
}
TOP_LEVEL: dict[str, Any] = {"seeds": list[int], "dataset": DatasetName}


# --------------------------------------------------------------------------- loading


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The raw params.yaml mapping; refuses unknown top-level keys."""
    if not path.is_file():
        raise ConfigError(f"{path} not found: run from the project root (where dvc.yaml is)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    valid = set(SECTIONS) | set(TOP_LEVEL)
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {unknown}. Valid keys: {sorted(valid)}")
    return data


def load_section(name: str, path: Path = PARAMS_FILE) -> Any:
    """Section `name` of params.yaml as its dataclass."""
    if name not in SECTIONS:
        raise ConfigError(f"unknown params section {name!r}. Available: {sorted(SECTIONS)}")
    data = read_params(path)
    if name not in data:
        raise ConfigError(f"{path}: section {name!r} is missing")
    return from_dict(SECTIONS[name], data[name], where=name)


def load_value(name: str, path: Path = PARAMS_FILE) -> Any:
    """A top-level value of params.yaml (seeds, dataset)."""
    if name not in TOP_LEVEL:
        raise ConfigError(f"unknown top-level value {name!r}. Available: {sorted(TOP_LEVEL)}")
    data = read_params(path)
    if name not in data:
        raise ConfigError(f"{path}: top-level key {name!r} is missing")
    return _convert(TOP_LEVEL[name], data[name], where=name)


def check_params(path: Path = PARAMS_FILE) -> None:
    """Validate all of params.yaml before a stage does any work.

    Every stage calls this first, so a typo anywhere (an unknown key, a dataset or student
    that does not exist) fails the first stage DVC runs, listing the valid choices, instead of
    failing hours later in the stage that reads it. (The CLIP model name is an open set, checked
    by the stages that build CLIP: features/clip.py `check_clip_source`.)
    """
    sections = {name: load_section(name, path) for name in SECTIONS}
    seeds = load_value("seeds", path)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of distinct integers, got {seeds}")
    load_value("dataset", path)
    students = sections["distill"].students
    if len(set(students)) != len(students):
        raise ConfigError(f"{path}: distill.students has duplicates: {students}")


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, checking keys and value types recursively."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    missing = sorted(set(fields) - set(data))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}. Valid keys: {sorted(fields)}")
    if missing:
        raise ConfigError(f"{where}: missing keys {missing}. Valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints[name], data[name], f"{where}.{name}") for name in fields}
    return cls(**values)


def to_dict(obj: Any) -> Any:
    """A params dataclass back to plain data (for checkpoints and HDF5 attributes)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _convert(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise unknown_choice(where, value, get_args(tp))
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _convert(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_convert(key_tp, k, where): _convert(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, str, bool) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
