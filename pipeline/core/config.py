"""Typed access to params.yaml, the single source of hyper-parameters.

Each section of params.yaml maps to a frozen dataclass below. `load_section` turns a
section into its dataclass and rejects unknown or missing keys, naming the valid ones and the
closest match, so a typo in `dvc exp run -S teacher.lrr=...` fails before any work is done.

Values are checked against their meaning, not only their type: a numeric field declared as
`Annotated[float, Range(gt=0)]` (the aliases `Positive`, `Probability`, `Size`, ... below) rejects
a value outside its range, naming the key (`distill.train.lr: must be > 0, got -1.0`); checks that
relate several fields live in the dataclass's `__post_init__`. The `check` stage (pipeline/check.py)
runs all of them, and the checks of the dataset and the models params name, before any stage of the
DAG deletes an output.

Closed choices (dataset, student, backend, distance, ...) are `Literal` fields declared here, so
that loading params needs none of the modules they configure (this module imports nothing from
the project); a test checks that each `Literal` matches the registry that implements it
(core/registry.py: one small table of names -> builders per concern). An unknown name raises
with the available names and the closest match.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import logging
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import yaml

from pipeline.core.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")
PARAMS_FILE = Path("params.yaml")
MODALITIES: tuple[str, ...] = ("video", "audio", "text")  # the order of every per-modality array and mask


class ConfigError(UserError, ValueError):
    """A params.yaml value is missing, unknown or of the wrong type."""


# --------------------------------------------------------------------------- value ranges


@dataclasses.dataclass(frozen=True)
class Range:
    """The interval a numeric params value must lie in (bounds None = open): `Annotated[float, Range(gt=0)]`."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def describe(self) -> str:
        low = (f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else "")
        high = (f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}" if self.lt is not None else "")
        if low and high:
            return (f"in {'[' if self.ge is not None else '('}{self.ge if self.ge is not None else self.gt:g}, "
                    f"{self.le if self.le is not None else self.lt:g}{']' if self.le is not None else ')'}")
        return low or high or "any number"

    def check(self, value: float, where: str) -> None:
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        if not ok:
            raise ConfigError(f"{where}: must be {self.describe()}, got {value!r}")


Positive = Annotated[float, Range(gt=0)]  # learning rates, temperatures, durations
NonNegative = Annotated[float, Range(ge=0)]  # loss weights, noise stds, weight decay
Probability = Annotated[float, Range(ge=0, le=1)]
Fraction = Annotated[float, Range(gt=0, lt=1)]  # a part of a set that leaves something on both sides
Dropout = Annotated[float, Range(ge=0, lt=1)]  # dropout rates, warm-up fractions
Size = Annotated[int, Range(ge=1)]  # counts, widths, batch sizes, epochs
Natural = Annotated[int, Range(ge=0)]  # seeds, counts that may be 0
DEVICE_FORMS = "auto, cpu, cuda or cuda:N"


def _check_device(value: str, key: str = "device") -> None:
    head, _, index = value.partition(":")
    if not (value in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit())):
        raise ConfigError(f"{key}: unknown device {value!r}; expected {DEVICE_FORMS}")


def _check_source(value: str, key: str) -> None:
    """`auto`, `media`, or a relative path inside the dataset's folder (`file[:key]`); the file's format and
    key are checked by features/precomputed.py (stage check), which knows the formats."""
    if value in ("auto", "media"):
        return
    path = value.split(":", 1)[0]
    if not path or path.startswith(("/", "\\")) or ".." in path.replace("\\", "/").split("/"):
        raise ConfigError(f"{key}: expected auto, media, or a feature file's path relative to data/raw/<dataset>/ "
                          f"(e.g. CMU_MOSI_COVAREP.csd, unaligned_50.pkl:audio), got {value!r}: put the file inside "
                          "the dataset's folder, so that DVC versions it with the dataset")


def _check_templates(templates: list[str], key: str) -> None:
    if not templates:
        raise ConfigError(f"{key}: needs at least one template")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ConfigError(f"{key}: every template must contain '{{}}' (where the class name goes); bad: {bad}")


# --------------------------------------------------------------------------- sections


DatasetName = Literal["synthetic_sentiment", "synthetic_av", "mosi", "mosei", "sims", "csv", "vegas",
                      "vegas_features"]
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
    """` Did you mean 'x'?` for the closest of `choices` (difflib), or "" when none is close. Names of
    the form <family>-<method> are also matched on their method: 'kdd' -> 'va-kd' or 'msd-kd'."""
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), names, n=1)
    if not close:
        by_tail: dict[str, list[str]] = {}
        for name in names:
            if "-" in name:
                by_tail.setdefault(name.split("-", 1)[1], []).append(name)
        tails = difflib.get_close_matches(str(value).split("-", 1)[-1], list(by_tail), n=1)
        close = by_tail[tails[0]] if tails else []
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def unknown_choice(where: str, value: object, choices: list[str] | tuple[str, ...]) -> ConfigError:
    """ConfigError for a params value that is not among `choices`, naming the key and the closest match."""
    return ConfigError(f"{where}: unknown value {value!r}.{did_you_mean(value, choices)} Available: {list(choices)}")


@dataclasses.dataclass(frozen=True)
class MediaParams:
    """Clip format shared by the synthetic datasets."""

    seconds: Positive  # clip duration
    fps: Size  # video frame rate
    size: Size  # frame side in pixels (even, >= 32, not 48 or 72: synthetic.DECORD_UNREADABLE_SIZES)
    sample_rate: Size  # audio sample rate in Hz


@dataclasses.dataclass(frozen=True)
class SentimentNoiseParams:
    text: NonNegative  # tau: spread of the lexical cues' valences around the sentiment (or its opposite)
    video: NonNegative  # std of the gaussian noise on the square's colour cue
    audio: NonNegative  # std of the gaussian noise on the pitch cue
    annotator: NonNegative  # std of each annotator's noise before rounding to an integer rating


@dataclasses.dataclass(frozen=True)
class SentimentParams:
    """synthetic_sentiment (MOSI-like; the process is described in pipeline/data/synthetic.py)."""

    n_clips: Size
    splits: dict[str, Fraction]  # fraction of clips per split (train/valid/test), by video
    annotators: Size  # raters per clip; the label is the mean of their integer ratings
    irony: Probability  # probability that the words say the opposite of the face and voice
    cues: list[Size]  # [min, max] lexical cues per transcript, drawn uniformly
    noise: SentimentNoiseParams
    monte_carlo: Annotated[int, Range(ge=2)]  # fresh draws estimating the known limits (limits.json)

    def __post_init__(self) -> None:
        if len(self.cues) != 2 or not 1 <= self.cues[0] <= self.cues[1]:
            raise ConfigError(f"cues: must be [min, max] with 1 <= min <= max, got {self.cues}")
        if sorted(self.splits) != ["test", "train", "valid"] or abs(sum(self.splits.values()) - 1.0) > 1e-6:
            raise ConfigError(f"splits: must give train, valid and test fractions that sum to 1, got {self.splits}")


@dataclasses.dataclass(frozen=True)
class AVNoiseParams:
    audio: NonNegative  # std of the gaussian noise on the audio's class cue, in class spacings
    visual: NonNegative  # the same for the frames' colour


@dataclasses.dataclass(frozen=True)
class AVParams:
    """synthetic_av (VEGAS-like retrieval data)."""

    n_clips: Size
    n_folds: Annotated[int, Range(ge=2)]  # fold files (VEGAS protocol: 5)
    noise: AVNoiseParams


@dataclasses.dataclass(frozen=True)
class GenerateParams:
    """Synthetic dataset generation (stage `generate@<dataset>`): one block per dataset, so that DVC reruns
    only the dataset whose block changed."""

    seed: Natural  # every random draw of the datasets (apart from `seeds`: all training seeds share the data)
    media: MediaParams
    synthetic_sentiment: SentimentParams
    synthetic_av: AVParams


@dataclasses.dataclass(frozen=True)
class PrepareParams:
    """How stage `prepare` splits a dataset without fixed splits (VEGAS layout: 5 fold files)."""

    test_fold: Size  # the fold (1..5) that is the test split (VEGAS's 5-fold protocol: run each for CV)
    valid_fraction: Fraction  # part of the other folds' clips held out as `valid`, stratified by class
    split_seed: Natural  # seed of that draw


@dataclasses.dataclass(frozen=True)
class ClipParams:
    """The frozen CLIP shared by extract@video and extract@text (one embedding space)."""

    model: str  # open_clip model name, e.g. ViT-B-32, or our tiny `mmdistill-tiny`
    pretrained: str  # open_clip tag (e.g. openai), a checkpoint path, or "" for random init
    init_seed: Natural  # seeds the random init when pretrained is "" (apart from `seed`, so seeds share features)


@dataclasses.dataclass(frozen=True)
class RunParams:
    """How a stage runs; does not change what it computes (up to float rounding)."""

    device: str  # auto | cpu | cuda | cuda:N
    batch_size: Size  # clips per encoder batch
    num_workers: Natural  # DataLoader workers decoding clips while the main process encodes
    precision: Precision  # autocast of the encoder on GPU (CPU always runs fp32)

    def __post_init__(self) -> None:
        _check_device(self.device)


@dataclasses.dataclass(frozen=True)
class VideoParams:
    backend: Backend  # decord | pyav (for platforms without decord wheels)
    sampling: Sampling  # uniform: `frames` per clip | fps: `fps` frames per second | all: every frame
    frames: Size  # uniform sampling: frames per clip
    fps: Positive  # fps sampling: frames per second of video
    max_frames: Size  # fps / all sampling: at most this many frames per clip (uniformly thinned beyond)
    source: str = "auto"  # auto | media | <file>[:<key>] in data/raw/<dataset>/ (features/precomputed.py)

    def __post_init__(self) -> None:
        _check_source(self.source, "source")


@dataclasses.dataclass(frozen=True)
class AudioParams:
    sample_rate: Size
    n_mels: Size
    win_ms: Positive
    hop_ms: Positive
    fmin: NonNegative
    fmax: Positive
    source: str = "auto"  # auto | media | <file>[:<key>] in data/raw/<dataset>/ (features/precomputed.py)

    def __post_init__(self) -> None:
        _check_source(self.source, "source")
        if not self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError(f"fmax: need fmin < fmax <= sample_rate / 2 (Nyquist), got fmin={self.fmin}, "
                              f"fmax={self.fmax}, sample_rate={self.sample_rate}")
        if self.hop_ms > self.win_ms:
            raise ConfigError(f"hop_ms: must be <= win_ms (frames would skip samples), got hop_ms={self.hop_ms}, "
                              f"win_ms={self.win_ms}")


@dataclasses.dataclass(frozen=True)
class TextParams:
    templates: list[str]  # class prompt templates, "{}" is replaced by the class name
    classes: list[str]  # one name per sentiment bin, from most negative to most positive
    class_templates: list[str]  # datasets with named classes (retrieval): prompts over the manifest's class names

    def __post_init__(self) -> None:
        _check_templates(self.templates, "templates")
        _check_templates(self.class_templates, "class_templates")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"classes: need at least 2 distinct class names (one per sentiment bin), "
                              f"got {self.classes}")


@dataclasses.dataclass(frozen=True)
class ExtractParams:
    run: RunParams
    max_failure_ratio: Probability
    video: VideoParams
    audio: AudioParams
    text: TextParams


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    """How a raw clip becomes a model's inputs: the frozen CLIP (frame and transcript embeddings) and
    extract's frame sampling and log-mel settings. A model that reads features records them in its
    provenance (`record()`: the teacher's checkpoint, a multimodal or retrieval student's), so that
    running it on new clips (pipeline/predict.py, evaluate's latency) uses the settings it was trained
    with, not today's params.yaml (`recorded_features`). Their video and audio `source` are recorded
    resolved (features/precomputed.py `resolved`), so that a model of precomputed features is known as
    one and refused a raw clip (evaluation/latency.py `MediaInputs`)."""

    clip: ClipParams
    video: VideoParams
    audio: AudioParams

    @classmethod
    def of(cls, clip: ClipParams, extract: ExtractParams) -> FeatureSettings:
        return cls(clip, extract.video, extract.audio)

    def record(self) -> dict[str, Any]:
        """What a model's provenance holds: {"features": {"clip": ..., "video": ..., "audio": ...}}, plain JSON data."""
        return {FEATURES_RECORD: to_dict(self)}


FEATURES_RECORD = "features"  # the provenance key of a model's FeatureSettings


def recorded_features(record: Mapping[str, Any], source: str | Path,
                      fallback: Callable[[], FeatureSettings]) -> FeatureSettings:
    """The FeatureSettings in the provenance `record` of the model saved at `source`. A model saved before
    they were recorded has none: then `fallback()` (today's params), with a warning saying so."""
    if FEATURES_RECORD not in record:
        log.warning("%s has no record of the CLIP and extraction settings it was trained with (saved before they "
                    "were recorded): using today's clip, extract.video and extract.audio params, which must be "
                    "the ones it was trained with", source)
        return fallback()
    return from_dict(FeatureSettings, record[FEATURES_RECORD], where=f"{source}: {FEATURES_RECORD}")


@dataclasses.dataclass(frozen=True)
class TrainParams:
    epochs: Size
    batch_size: Size  # global batch per optimizer step (all processes and accumulation steps together)
    lr: Positive  # peak learning rate of AdamW
    warmup: Dropout  # fraction of the steps with a linear warm-up; then linear decay to 0
    weight_decay: NonNegative
    device: str  # auto | cpu | cuda | cuda:N (under torchrun each rank takes cuda:LOCAL_RANK)
    precision: Precision  # autocast on GPU (fp16 with a gradient scaler); CPU runs fp32
    grad_accum: Size  # micro-batches per optimizer step (the global batch is split, not multiplied)
    checkpoint_every: Natural  # optimizer steps between resumable checkpoints; 0 = only at the end of an epoch
    patience: Natural = 0  # early stopping: stop after this many epochs without a better validation value; 0 = never
    min_epochs: Natural = 0  # early stopping never stops before this many epochs (a model's initial plateau)

    def __post_init__(self) -> None:
        _check_device(self.device)
        if self.min_epochs > self.epochs:
            raise ConfigError(f"min_epochs: must be in [0, epochs={self.epochs}], got {self.min_epochs}")
        if self.batch_size < self.grad_accum:
            raise ConfigError(f"grad_accum: must be <= batch_size (the global batch is split into grad_accum "
                              f"micro-batches), got grad_accum={self.grad_accum}, batch_size={self.batch_size}")


@dataclasses.dataclass(frozen=True)
class TeacherParams:
    layers: Size  # temporal / audio transformer layers
    heads: Size
    dropout: Dropout
    video_tokens: Size  # frame embeddings are average-pooled over time to this many tokens
    audio_tokens: Size  # log-mel frames are average-pooled over time to this many tokens
    prompt_alpha: float  # initial residual weight a of the video-enhanced prompts
    mask: Literal["zeros", "learned"]  # how a masked (missing or held-out) modality is filled
    schedule: Literal["joint", "two_phase"]  # step 1: classification -> regression
    ce_weight: NonNegative
    step1_hidden: Size  # hidden width of g, the logits -> regression MLP
    # prediction: |r_T(x) - r_T(x without m)| | loss: |y - r_T(x without m)| - |y - r_T(x)|
    saliency: Literal["prediction", "loss"]
    train: TrainParams
    modality_dropout: Dropout = 0.0  # training: each present modality masked with this probability, one always kept


@dataclasses.dataclass(frozen=True)
class StudentParams:
    """The text encoder of the text and multimodal students, and the multimodal student's feature pooling
    (which student a family trains is the task's: tasks/)."""

    pretrained: str  # HF hub id or local dir; "" builds a tiny random RoBERTa
    hidden_size: Size
    layers: Size
    heads: Size
    intermediate_size: Size
    vocab_size: Size  # size of the byte-level BPE trained on the train transcripts
    max_length: Annotated[int, Range(ge=2)]
    head_hidden: Size
    dropout: Dropout
    video_tokens: Size  # multimodal student: frame embeddings pooled over time to this many tokens
    audio_tokens: Size  # multimodal student: log-mel frames pooled over time to this many tokens

    def __post_init__(self) -> None:
        if not self.pretrained and self.hidden_size % self.heads:
            raise ConfigError(f"heads: the tiny RoBERTa needs hidden_size divisible by heads, got hidden_size="
                              f"{self.hidden_size}, heads={self.heads}")


@dataclasses.dataclass(frozen=True)
class VideoAdviserParams:
    weight: NonNegative  # lambda
    distance: Distance


@dataclasses.dataclass(frozen=True)
class KDParams:
    weight: NonNegative  # alpha of the KD term
    temperature: Positive  # T of the softened distributions


@dataclasses.dataclass(frozen=True)
class MSDParams:
    kd_weight: NonNegative  # alpha of the KD term on the full-input logits
    temperature: Positive  # T of that KD term
    distance: Distance  # D between S(x_m) and T(x_m)
    instance_temperature: Positive  # tau of the per-clip softmax over saliencies (`instance`)
    meta_lr: NonNegative  # beta: SGD step size of the weight logits phi (`learned`; the look-ahead step uses train.lr)
    meta_split: Literal["train", "valid"]  # the split `learned`'s meta set is carved from (never the selection clips)
    meta_fraction: Fraction  # the part of that split held out as the meta set


@dataclasses.dataclass(frozen=True)
class RetrievalParams:
    """The two-branch retrieval student (retrieval datasets) and its loss (retrieval.retrieval_loss)."""

    embed_dim: Size  # common space E
    hidden_dim: Size  # hidden layer of each branch
    dropout: Dropout
    objective: Objective
    temperature: Positive  # supcon tau
    margin: NonNegative  # triplet margin
    ce_weight: NonNegative  # weight of the shared classifier's cross-entropy


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

    grid: list[Positive]  # regularisation strengths tried (ridge alpha; logistic 1/C), chosen on valid
    ngrams: Size  # word n-grams 1..ngrams of the TF-IDF

    def __post_init__(self) -> None:
        if not self.grid:
            raise ConfigError("grid: needs at least one value > 0")


@dataclasses.dataclass(frozen=True)
class LatencyParams:
    clips: Size  # test clips timed end to end (decode -> prediction)
    batch_size: Size  # the batched measurement (the other is batch 1)
    repeats: Size  # timed passes over the clips; the median pass is reported
    warmup: Natural  # untimed passes first (allocator, cuDNN autotune, caches)


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    batch_size: Size
    device: str
    latency: LatencyParams

    def __post_init__(self) -> None:
        _check_device(self.device)


@dataclasses.dataclass(frozen=True)
class ReportParams:
    dpi: Size  # resolution of the PNG figures
    confidence: Fraction  # of the bootstrap intervals of paired differences
    alpha: Fraction  # a difference holds when its Holm-adjusted p is below alpha (and its interval excludes 0)
    resamples: Annotated[int, Range(ge=100)]  # bootstrap and sign-flip resamples
    seed: Natural  # of those resamples


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
TOP_LEVEL: dict[str, Any] = {"seeds": list[Natural], "dataset": DatasetName}


# --------------------------------------------------------------------------- loading


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The raw params.yaml mapping (a fresh copy); refuses unknown top-level keys."""
    if not path.is_file():
        raise ConfigError(f"{path} not found: run from the project root (where dvc.yaml is)")
    data = copy.deepcopy(_parse(path.read_text())) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    _refuse_unknown_keys(data, set(SECTIONS) | set(TOP_LEVEL), f"{path}: top level")
    return data


def _refuse_unknown_keys(data: Mapping[str, Any], valid: set[str], where: str) -> None:
    unknown = sorted(set(data) - valid)
    if unknown:
        hints = "".join(did_you_mean(k, sorted(valid)).replace(" Did you mean", f" {k!r}: did you mean")
                        for k in unknown)
        raise ConfigError(f"{where}: unknown key{'s' * (len(unknown) > 1)} {unknown}.{hints} "
                          f"Valid keys: {sorted(valid)}")


@functools.lru_cache(maxsize=8)
def _parse(text: str) -> Any:
    """params.yaml parsed once per content (a stage reads every section: 11 parses took 0.35 s)."""
    return yaml.safe_load(text)


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
    """Validate all of params.yaml (keys, types, ranges, the relations between fields) without
    importing anything: the `check` stage runs it first in the DAG and every stage again when run by
    hand, so a typo anywhere fails in a second, naming its key, instead of hours later in the stage
    that reads it. (What needs more than params.yaml, the dataset's presence and the models' names,
    is checked by pipeline/check.py.)
    """
    sections = {name: load_section(name, path) for name in SECTIONS}
    seeds = load_value("seeds", path)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of distinct integers, got {seeds}")
    dataset = load_value("dataset", path)
    students = sections["distill"].students
    if not students or len(set(students)) != len(students):
        raise ConfigError(f"{path}: distill.students must list each student once (at least one), got {students}")
    n_folds = sections["generate"].synthetic_av.n_folds
    if dataset == "synthetic_av" and sections["prepare"].test_fold > n_folds:
        raise ConfigError(f"{path}: prepare.test_fold={sections['prepare'].test_fold} but synthetic_av has "
                          f"generate.synthetic_av.n_folds={n_folds} folds")


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, checking keys and value types recursively."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    _refuse_unknown_keys(data, set(fields), where)
    missing = sorted(name for name, f in fields.items() if name not in data
                     and f.default is dataclasses.MISSING)
    if missing:
        raise ConfigError(f"{where}: missing keys {missing}. Valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    values = {name: _convert(hints[name], data[name], f"{where}.{name}") for name in fields if name in data}
    try:
        return cls(**values)
    except ConfigError as err:  # a __post_init__ check names its field relative to the section
        raise ConfigError(f"{where}.{err}") from None


def _float(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def to_dict(obj: Any) -> Any:
    """A params dataclass back to plain data (for checkpoints and HDF5 attributes)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _convert(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is Annotated:  # a value with a range: Annotated[float, Range(gt=0)]
        base, *checks = get_args(tp)
        converted = _convert(base, value, where)
        for check in checks:
            check.check(converted, where)
        return converted
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
    if tp is float and not isinstance(value, bool):
        number = _float(value)  # YAML 1.1 reads `1e-3` as a string
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{where}: must be a finite number, got {value!r}")
            return number
    if tp in (int, str, bool) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
