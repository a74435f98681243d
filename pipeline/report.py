"""Stage report: one Markdown page with the numbers and figures of a dataset's experiment.

Reads  metrics/<ds>/{teacher,<method>}.json           test metrics over seeds + efficiency (evaluate)
       models/<ds>/teacher/seed_<s>/preds.h5          per-clip saliency, population saliency (teacher)
       dvclive/<ds>/{teacher,student_<method>}/seed_<s>/plots/metrics/   curves (teacher, distill)
Writes reports/<ds>/report.md, efficiency.png, saliency.png, curves.png, and msd_weights.png when a
       student logged modality weights (MSD methods)

Command: python -m pipeline.report

What is read and compared follows the dataset's metric set (``DatasetSpec.metric_set``, a key of
metrics.METRIC_SETS): its metrics are the table's columns, its ``primary`` metric (MAE for the
sentiment sets, lower is better; ``map_mean`` for retrieval, higher is better) is the one the
paired differences and the efficiency plot use, and its ``curve`` (``valid/mae``; ``valid/map``
for retrieval) is the validation curve drawn for every model that logged it (students must; the
retrieval teacher logs ``valid/ce`` instead and is left out of the curves, with a log line).

Every number on the page is defined where it is printed (the "Definitions" section of the
report repeats them for the reader):

* **metric cells**: ``mean ± std`` of the metrics file, i.e. the mean and the sample standard
  deviation (ddof = 1) over `seeds` of each seed's test metric (metrics.summarize_seeds); a
  lone mean when the std is undefined (one seed), ``n/a`` when the mean is undefined (a seed
  gave nan, e.g. Corr of a constant prediction). Accuracies, F1 and mAP are fractions in [0, 1].
* **params / latency**: the metrics file's `efficiency` (evaluate / latency.py): parameters
  inference needs (frozen encoders included), and wall time per clip from raw inputs to the
  prediction, at batch 1 and batched, median of the timed passes.
* **paired difference to `none`**: for each seed s in both files, ``d_s = P_method(s) -
  P_none(s)`` with P the primary metric (the same seed trains both students, so seed-level
  noise shared by both cancels); reported as ``mean_s d_s ± std_s d_s`` (ddof = 1) and as the
  number of seeds where the method is better: ``d_s < 0`` for MAE (lower is better), ``d_s > 0``
  for mAP (higher is better). No significance test is made.
* **population saliency** of modality m for one seed: the mean of the teacher's per-clip
  saliency s_m over the training clips (teacher.py, recorded in its predictions table); the
  figure shows its mean ± std (ddof = 1) over seeds, and the per-clip train-split values of
  every seed pooled, as box plots (median, quartiles, whiskers at 1.5 IQR).
* **curves**: a model's validation metric (the metric set's ``curve``) per epoch; at each epoch
  the mean over the seeds that logged it, and a band from their minimum to their maximum. MSD
  weights likewise (each value is the epoch's mean over training batches of the batch-mean weight).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter, MaxNLocator

from . import paths
from .config import ReportParams, check_params, load_section, load_value
from .datasets import DATASETS
from .metrics import METRIC_SETS, MetricSet
from .models import MODALITIES
from .runtime import setup_logging, stage
from .store import read_table

log = logging.getLogger(__name__)

TEACHER = "teacher"
BASELINE = "none"  # the student trained without distillation: what every method is compared with
METRIC_LABELS: dict[str, str] = {  # the papers' column names
    "mae": "MAE", "corr": "Corr", "acc7": "Acc-7", "acc5": "Acc-5", "acc2_has0": "Acc-2 (has0)",
    "f1_has0": "F1 (has0)", "acc2_non0": "Acc-2 (non0)", "f1_non0": "F1 (non0)",  # MOSI / MOSEI
    "acc2": "Acc-2", "acc3": "Acc-3", "f1": "F1",  # CH-SIMS
    "map_a2v": "mAP a→v", "map_v2a": "mAP v→a", "map_mean": "mAP (mean)",  # retrieval
}
SHORT_LABELS: dict[str, str] = {"map_mean": "mAP"}  # in sentences and axis labels, where no qualifier is needed
CURVE_LABELS: dict[str, str] = {"valid/mae": "Validation MAE", "valid/map": "Validation mAP"}
EFFICIENCY_KEYS = ("params", "latency_ms_b1", "latency_ms_batched", "batch_size", "device", "inputs")
FIGURES = ("efficiency.png", "saliency.png", "curves.png")
WEIGHTS_FIGURE = "msd_weights.png"


# --------------------------------------------------------------------------- inputs


def evaluate_stage(name: str) -> str:
    """The DVC stage that writes metrics/<ds>/<name>.json."""
    return "evaluate_teacher" if name == TEACHER else f"evaluate@{name}"


def curves_name(name: str) -> str:
    """The dvclive folder name of a model (dvclive/<ds>/<folder>/seed_<s>)."""
    return TEACHER if name == TEACHER else f"student_{name}"


def curves_stage(name: str) -> str:
    return TEACHER if name == TEACHER else f"distill@{name}"


def _float(value: Any) -> float:
    """A JSON number or null as a float (null -> nan)."""
    return math.nan if value is None else float(value)


@dataclasses.dataclass(frozen=True)
class ModelMetrics:
    """One model's metrics file (evaluate), nulls as nan."""

    name: str
    mean: dict[str, float]
    std: dict[str, float]
    seeds: dict[int, dict[str, float]]
    efficiency: dict[str, Any]


def metric_set(dataset: str) -> MetricSet:
    """The dataset's metric set (metrics.METRIC_SETS): its metrics, primary metric and curve."""
    return METRIC_SETS.get(DATASETS.get(dataset).metric_set)


def metric_names(dataset: str) -> tuple[str, ...]:
    """The metrics of the dataset's metric set, in table order."""
    return tuple(metric_set(dataset).names)


def short_label(metric: str) -> str:
    """A metric's name in prose: "MAE", "mAP"."""
    return SHORT_LABELS.get(metric, METRIC_LABELS.get(metric, metric))


def better(higher_is_better: bool) -> str:
    return "higher" if higher_is_better else "lower"


def read_metrics(dataset: str, name: str, seeds: Sequence[int]) -> ModelMetrics:
    """metrics/<ds>/<name>.json, checked: the four sections, the metric set's metrics, every seed of `seeds`."""
    path = paths.metrics(dataset, name)
    rerun = f"run `dvc repro {evaluate_stage(name)}`"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {rerun}")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): {rerun}") from None
    missing = [k for k in ("mean", "std", "seeds", "efficiency") if k not in data]
    if missing:
        raise ValueError(f"{path} has no {missing} (expected mean, std, seeds, efficiency; found {sorted(data)}): "
                         f"it was written by an older evaluate stage, {rerun}")
    names = metric_names(dataset)
    sections = {"mean": data["mean"], "std": data["std"], **{f"seeds.{s}": v for s, v in data["seeds"].items()}}
    for where, values in sections.items():
        absent = [m for m in names if m not in values]
        if absent:
            raise ValueError(f"{path}: {where} lacks the metrics {absent}: {rerun}")
    absent_seeds = [s for s in seeds if str(s) not in data["seeds"]]
    if absent_seeds:
        raise ValueError(f"{path} has no result for seeds {absent_seeds} (it has {sorted(data['seeds'])}, params "
                         f"`seeds` is {list(seeds)}): {rerun}")
    absent = [k for k in EFFICIENCY_KEYS if k not in data["efficiency"]]
    if absent:
        raise ValueError(f"{path}: efficiency lacks {absent}: {rerun}")
    return ModelMetrics(
        name=name,
        mean={m: _float(data["mean"][m]) for m in names},
        std={m: _float(data["std"][m]) for m in names},
        seeds={s: {m: _float(data["seeds"][str(s)][m]) for m in names} for s in seeds},
        efficiency=dict(data["efficiency"]),
    )


def read_curve(path: Path, stage_name: str) -> pd.Series:
    """One dvclive TSV (columns [timestamp,] step, <metric>) as values indexed by step."""
    if not path.is_file():
        raise FileNotFoundError(f"training curve {path} not found: run `dvc repro {stage_name}`")
    table = pd.read_csv(path, sep="\t")
    metric = path.stem
    if "step" not in table.columns or metric not in table.columns:
        raise ValueError(f"{path}: expected the dvclive columns step and {metric}, found {list(table.columns)}: "
                         f"rerun `dvc repro {stage_name}`")
    return pd.Series(table[metric].to_numpy(np.float64), index=table["step"].to_numpy(), name=metric)


def curve_path(dataset: str, name: str, seed: int, metric: str) -> Path:
    """The dvclive TSV of `metric` (e.g. valid/mae) of one model and seed."""
    return paths.curves(dataset, curves_name(name), seed) / "plots" / "metrics" / f"{metric}.tsv"


def seed_curves(dataset: str, name: str, seeds: Sequence[int], metric: str) -> pd.DataFrame:
    """`metric` (e.g. valid/mae) of every seed: rows = steps (epochs), columns = seeds."""
    stage_name = curves_stage(name)
    return pd.DataFrame({s: read_curve(curve_path(dataset, name, s, metric), stage_name) for s in seeds})


def validation_curves(dataset: str, names: Sequence[str], seeds: Sequence[int], metric: str
                      ) -> dict[str, pd.DataFrame]:
    """`metric` per epoch of every model in `names`; students must have logged it, the teacher may not
    have (the retrieval teacher logs valid/ce, not the students' valid/map): then it is left out."""
    out: dict[str, pd.DataFrame] = {}
    for name in names:
        if name == TEACHER and not any(curve_path(dataset, name, s, metric).is_file() for s in seeds):
            log.info("the teacher logged no %s (%s): no teacher curve in the curves figure", metric,
                     curve_path(dataset, name, seeds[0], metric).parent)
            continue
        out[name] = seed_curves(dataset, name, seeds, metric)
    return out


def weight_curves(dataset: str, method: str, seeds: Sequence[int]) -> dict[str, pd.DataFrame]:
    """MSD modality weights train/w_<m> per epoch, for the modalities some seed logged (else {})."""
    out: dict[str, pd.DataFrame] = {}
    for m in MODALITIES:
        files = {s: curve_path(dataset, method, s, f"train/w_{m}") for s in seeds}
        found = {s: f for s, f in files.items() if f.is_file()}
        if found:
            out[m] = pd.DataFrame({s: read_curve(f, curves_stage(method)) for s, f in found.items()})
    return out


@dataclasses.dataclass(frozen=True)
class Saliency:
    """The teacher's saliency per seed: population values and the train-split per-clip values."""

    population: dict[int, dict[str, float]]  # seed -> modality -> mean train saliency
    per_clip: dict[str, np.ndarray]  # modality -> train-split saliencies of every seed, pooled
    kind: str  # teacher.saliency: prediction | loss (or "unknown" when not recorded)


def read_saliency(dataset: str, seeds: Sequence[int]) -> Saliency:
    population: dict[int, dict[str, float]] = {}
    pooled: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
    kind = "unknown"
    for seed in seeds:
        path = paths.teacher_predictions(dataset, seed)
        columns, config = read_table(path, stage="teacher")
        if "population_saliency" not in config:
            raise ValueError(f"{path} records no population_saliency: it was written by an older teacher stage, "
                             "run `dvc repro teacher`")
        missing = [c for c in ("split", *(f"saliency_{m}" for m in MODALITIES)) if c not in columns]
        if missing:
            raise ValueError(f"{path} has no columns {missing}: run `dvc repro teacher`")
        population[seed] = {m: float(config["population_saliency"][m]) for m in MODALITIES}
        train = np.asarray(columns["split"]) == "train"
        for m in MODALITIES:
            pooled[m].append(np.asarray(columns[f"saliency_{m}"], dtype=np.float64)[train])
        kind = str(config.get("teacher", {}).get("saliency", kind))
    return Saliency(population, {m: np.concatenate(v) for m, v in pooled.items()}, kind)


# --------------------------------------------------------------------------- numbers


def _std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof = 1); nan for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def mean_std(mean: float, std: float, digits: int = 3, signed: bool = False) -> str:
    """``mean ± std`` with `digits` decimals (and the mean's sign when `signed`); the mean alone when
    std is nan; n/a when the mean is nan."""
    if not math.isfinite(mean):
        return "n/a"
    text = f"{mean:{'+' if signed else ''}.{digits}f}"
    return text if not math.isfinite(std) else f"{text} ± {std:.{digits}f}"


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """`metric` of `method` minus `metric` of `none`, seed by seed (module docstring)."""

    method: str
    metric: str  # the metric set's primary metric
    higher_is_better: bool
    seeds: list[int]
    diffs: list[float]  # d_s, in `seeds` order
    mean: float
    std: float  # nan for one seed
    improved: int  # seeds where the method is better: d_s > 0 when higher is better, else d_s < 0

    def sentence(self) -> str:
        """What the numbers say, and no more."""
        n = len(self.seeds)
        label = short_label(self.metric)
        if not math.isfinite(self.mean):
            return f"`{self.method}`: the paired {label} difference is undefined (a seed has no {label})."
        text = (f"`{self.method}`: {label} {better(self.higher_is_better)} than `{BASELINE}` on {self.improved} "
                f"of {n} seed{'s' * (n != 1)}; "
                f"mean paired difference {self.mean:+.3f}" + (f" ± {self.std:.3f}." if math.isfinite(self.std)
                                                               else " (one seed, no spread)."))
        if math.isfinite(self.std) and abs(self.mean) <= self.std:
            text += " The mean difference is within one standard deviation of its seed-to-seed spread."
        return text


def paired_difference(method: ModelMetrics, baseline: ModelMetrics, metric: str,
                      higher_is_better: bool) -> PairedDifference:
    """d_s = metric(method, s) - metric(baseline, s) over the seeds both have (module docstring)."""
    seeds = sorted(set(method.seeds) & set(baseline.seeds))
    diffs = np.array([method.seeds[s][metric] - baseline.seeds[s][metric] for s in seeds], dtype=np.float64)
    improved = diffs > 0 if higher_is_better else diffs < 0
    return PairedDifference(method=method.name, metric=metric, higher_is_better=higher_is_better, seeds=seeds,
                            diffs=diffs.tolist(), mean=float(diffs.mean()) if len(diffs) else math.nan,
                            std=_std(diffs), improved=int(np.sum(improved)))


def _number(value: Any, fmt: str) -> str:
    value = _float(value)
    return f"{value:{fmt}}" if math.isfinite(value) else "n/a"


def metrics_table(models: Sequence[ModelMetrics]) -> str:
    """Markdown: one row per model, the metric set's metrics as mean ± std, then params, latency and inputs."""
    sizes = {m.efficiency["batch_size"] for m in models}
    shared = len(sizes) == 1  # one batch size: in the header; several: in each cell
    names = list(models[0].mean)
    header = ["Model", *(METRIC_LABELS.get(k, k) for k in names), "Params", "Latency, batch 1 (ms/clip)",
              f"Latency, batch {next(iter(sizes))} (ms/clip)" if shared else "Latency, batched (ms/clip)", "Inputs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in models:
        e = m.efficiency
        batched_cell = _number(e["latency_ms_batched"], ".3g") + ("" if shared else f" (batch {e['batch_size']})")
        params = f"{int(e['params']):,}" if e["params"] is not None else "n/a"
        cells = [m.name, *(mean_std(m.mean[k], m.std[k]) for k in names), params,
                 _number(e["latency_ms_b1"], ".3g"), batched_cell, str(e["inputs"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences_table(diffs: Sequence[PairedDifference], metric: str, higher_is_better: bool) -> str:
    """Markdown: one row per method, its paired differences to `none` on `metric`."""
    label, direction = short_label(metric), better(higher_is_better)
    sign = "positive" if higher_is_better else "negative"
    header = ["Method", "Seeds", f"{label} − {label}({BASELINE}) per seed ({sign}: {direction} {label})",
              "Mean ± std", f"Seeds with {direction} {label}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d in diffs:
        per_seed = ", ".join(f"{s}: {v:+.3f}" for s, v in zip(d.seeds, d.diffs, strict=True))
        cells = [d.method, str(len(d.seeds)), per_seed, mean_std(d.mean, d.std, signed=True),
                 f"{d.improved} of {len(d.seeds)}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def saliency_table(saliency: Saliency) -> str:
    seeds = sorted(saliency.population)
    header = ["Modality", "Population saliency, mean ± std over seeds", "Per-clip median (train)",
              "Per-clip 90th percentile (train)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in MODALITIES:
        values = np.array([saliency.population[s][m] for s in seeds])
        clips = saliency.per_clip[m]
        lines.append("| " + " | ".join([m, mean_std(float(values.mean()), _std(values), 4),
                                        _number(np.median(clips) if len(clips) else None, ".4f"),
                                        _number(np.quantile(clips, 0.9) if len(clips) else None, ".4f")]) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def _figure(width: float, height: float, cols: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # draw with Agg, whatever the interactive backend (none in a DVC run)
    return fig, fig.subplots(1, cols, squeeze=False)[0]


def _color(i: int) -> str:
    return f"C{i % 10}"


def plot_efficiency(models: Sequence[ModelMetrics], metric: str, higher_is_better: bool, path: Path,
                    dpi: int) -> None:
    """Test `metric` (mean ± std over seeds) against latency per clip, batch 1 and batched, log x axis."""
    label = short_label(metric)
    fig, axes = _figure(11, 4.5, cols=2)
    for ax, key, title in ((axes[0], "latency_ms_b1", "batch 1"), (axes[1], "latency_ms_batched", "batched")):
        shown = 0
        for i, m in enumerate(models):
            x, y, err = _float(m.efficiency[key]), m.mean[metric], m.std[metric]
            if not (math.isfinite(x) and x > 0 and math.isfinite(y)):
                log.warning("%s: no positive %s or no %s; left out of the efficiency plot", m.name, key, label)
                continue
            teacher = m.name == TEACHER
            ax.errorbar([x], [y], yerr=[err] if math.isfinite(err) else None, fmt="s" if teacher else "o",
                        color="black" if teacher else _color(i), capsize=4, markersize=7)
            ax.annotate(m.name, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
            shown += 1
        if shown:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.5, 2, 10 (not 2x10^0)
            ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.5)))
        if key == "latency_ms_batched":
            sizes = sorted({m.efficiency["batch_size"] for m in models})
            title = f"batch {sizes[0]}" if len(sizes) == 1 else f"batched (batch sizes {sizes})"
        ax.set_title(f"Test {label} vs. inference latency, {title}")
        ax.set_xlabel("end-to-end latency per clip (ms, log scale)")
        ax.set_ylabel(f"test {label} (mean ± std over seeds; {better(higher_is_better)} is better)")
        ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=dpi)


def plot_saliency(saliency: Saliency, path: Path, dpi: int) -> None:
    """Population saliency per modality (mean ± std over seeds), and the per-clip train distribution."""
    fig, (left, right) = _figure(11, 4.5, cols=2)
    seeds = sorted(saliency.population)
    values = np.array([[saliency.population[s][m] for m in MODALITIES] for s in seeds])  # (S, 3)
    std = values.std(axis=0, ddof=1) if len(seeds) > 1 else None
    left.bar(list(MODALITIES), values.mean(axis=0), yerr=std, capsize=5, color=[_color(i) for i in range(3)])
    left.set_title(f"Population saliency (train mean), {len(seeds)} seed{'s' * (len(seeds) != 1)}")
    left.set_ylabel(f"saliency ({saliency.kind}); mean ± std over seeds")
    right.boxplot([saliency.per_clip[m] for m in MODALITIES])
    right.set_xticks(range(1, len(MODALITIES) + 1), list(MODALITIES))
    right.set_title("Per-clip saliency, train split (all seeds pooled)")
    right.set_ylabel(f"saliency ({saliency.kind})")
    for ax in (left, right):
        ax.grid(True, axis="y", alpha=0.3)
    fig.savefig(path, dpi=dpi)


def _band(ax: Any, curves: pd.DataFrame, label: str, color: str, style: str = "-") -> None:
    """Mean over seeds with a min-max band, at each step over the seeds that logged it."""
    curves = curves.sort_index()
    steps = curves.index.to_numpy()
    ax.plot(steps, curves.mean(axis=1, skipna=True).to_numpy(), style, color=color, label=label)
    ax.fill_between(steps, curves.min(axis=1).to_numpy(), curves.max(axis=1).to_numpy(), color=color, alpha=0.2,
                    linewidth=0)


def curve_label(metric: str) -> str:
    """A logged curve's name for titles and axes: "Validation MAE" for valid/mae."""
    return CURVE_LABELS.get(metric, metric)


def plot_curves(curves: dict[str, pd.DataFrame], metric: str, path: Path, dpi: int) -> None:
    """`metric` (a dvclive curve, e.g. valid/mae) per epoch of every model in `curves`."""
    label = curve_label(metric)
    fig, (ax,) = _figure(8, 4.5)
    for i, (name, frame) in enumerate(curves.items()):
        _band(ax, frame, name, "black" if name == TEACHER else _color(i), "--" if name == TEACHER else "-")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{label} per epoch (mean over seeds, band: min to max)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=dpi)


def plot_weights(weights: dict[str, dict[str, pd.DataFrame]], path: Path, dpi: int) -> None:
    fig, axes = _figure(4.5 * len(weights), 4, cols=len(weights))
    for ax, (method, per_modality) in zip(axes, weights.items(), strict=True):
        for m, frame in per_modality.items():
            _band(ax, frame, m, _color(MODALITIES.index(m)))
        ax.set_title(method)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("modality weight w_m (epoch mean)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=dpi)


# --------------------------------------------------------------------------- report


def _provenance(dataset: str, methods: Sequence[str], seeds: Sequence[int], models: Sequence[ModelMetrics],
                teacher_config: dict[str, Any]) -> list[str]:
    devices = sorted({str(m.efficiency["device"]) for m in models})
    teacher = {k: v for k, v in teacher_config.items() if not isinstance(v, (dict, list))}
    lines = [f"- Dataset: `{dataset}`; seeds: {', '.join(map(str, seeds))}; methods (`distill.methods`): "
             f"{', '.join(f'`{m}`' for m in methods)}.",
             f"- Inputs: `{paths.metrics(dataset, '<name>')}` (evaluate), "
             f"`{paths.teacher_dir(dataset)}/seed_<s>/preds.h5` (teacher), "
             f"`{paths.CURVES / dataset}/` (teacher and distill curves). Generated by `python -m pipeline.report`.",
             f"- Latency measured on: {', '.join(devices)}."]
    if teacher:
        lines.append("- Teacher: " + ", ".join(f"{k}={v}" for k, v in sorted(teacher.items())) + ".")
    return lines


_SENTIMENT_METRICS = """\
- Metrics (MMSA conventions, `pipeline/metrics.py`): MAE (lower is better), Pearson Corr, Acc-7 and
  Acc-5 (rounded, clipped to [-3, 3] / [-2, 2]), Acc-2 and weighted F1 with neutral clips counted as
  positive (has0) or removed (non0); accuracies and F1 are fractions in [0, 1]."""
_RETRIEVAL_METRICS = """\
- Metrics (`pipeline/retrieval.py`): mean average precision (mAP, higher is better, in [0, 1]) of
  cross-modal retrieval on the test clips. Each clip's audio embedding is a query that ranks the visual
  embeddings of all test clips by cosine similarity, the full ranking with no cut-off (a→v), and each
  visual embedding ranks the audio ones (v→a); an item is relevant when it has the query's class.
  AP of a query: the mean, over the relevant items, of the precision at the item's rank; mAP a→v and
  mAP v→a: the mean AP over that direction's queries; mAP (mean): their average. Per-query APs:
  `{predictions}/seed_<s>.csv` (`python -m pipeline.metrics --metric-set retrieval <csv>`
  recomputes a seed's mAP from it)."""
METRIC_DEFINITIONS: dict[str, str] = {  # metric set -> its bullet; {predictions}: the predictions folder
    "mosi_mosei": _SENTIMENT_METRICS, "sims": _SENTIMENT_METRICS, "retrieval": _RETRIEVAL_METRICS,
}
_SPREAD_AND_COST = """\
- `mean ± std`: mean and sample standard deviation (ddof = 1) over the seeds of each seed's test metric;
  a lone mean means one seed, `n/a` an undefined value.
- Params: every parameter inference needs, frozen encoders included. Latency: end-to-end wall time per
  clip from the raw inputs to the prediction (median of the timed passes), at batch 1 and batched."""
_SALIENCY = """\
- Saliency of modality m on a clip: how much the teacher's output (or loss) changes when m is masked;
  population saliency: its mean over the training clips."""


def definitions(dataset: str) -> str:
    """The report's Definitions section for the dataset's metric set."""
    name = DATASETS.get(dataset).metric_set
    ms = METRIC_SETS.get(name)
    label = short_label(ms.primary)
    paired = (f"- Paired difference: d_s = {label}(method, seed s) - {label}(none, seed s) for each seed; "
              f"mean ± std over seeds,\n  and the number of seeds with d_s {'>' if ms.higher_is_better else '<'} 0. "
              "No significance test: with few seeds these are descriptive.")
    metrics = METRIC_DEFINITIONS[name].format(predictions=paths.predictions_dir(dataset, "<name>"))
    return "\n".join([metrics, _SPREAD_AND_COST, paired, _SALIENCY])


def write_report(path: Path, dataset: str, methods: Sequence[str], seeds: Sequence[int],
                 models: Sequence[ModelMetrics], diffs: Sequence[PairedDifference] | None, saliency: Saliency,
                 teacher_config: dict[str, Any], figures: Sequence[str], curves_drawn: Sequence[str]) -> None:
    """The Markdown page; `curves_drawn`: the models whose validation curve is in curves.png."""
    ms = metric_set(dataset)
    label, curve = short_label(ms.primary), curve_label(ms.curve)
    parts = [f"# Report: {dataset}", "", *_provenance(dataset, methods, seeds, models, teacher_config), "",
             "## Test metrics", "", metrics_table(models), ""]
    parts += ["## Distillation vs. none", ""]
    if diffs is None:
        parts += [f"`{BASELINE}` is not among `distill.methods`: no paired comparison.", ""]
    elif not diffs:
        parts += [f"Only `{BASELINE}` was trained: nothing to compare with it.", ""]
    else:
        parts += [differences_table(diffs, ms.primary, ms.higher_is_better), "",
                  *(f"- {d.sentence()}" for d in diffs), ""]
    parts += ["## Efficiency", "", f"![Test {label} against end-to-end latency per clip](efficiency.png)", "",
              "## Teacher saliency", "", saliency_table(saliency), "",
              "![Teacher saliency per modality](saliency.png)", "",
              "## Training curves", "", f"![{curve} per epoch](curves.png)", ""]
    missing = [m.name for m in models if m.name not in curves_drawn]
    if missing:
        parts += [f"Not drawn (no `{ms.curve}` logged): {', '.join(f'`{n}`' for n in missing)}.", ""]
    if WEIGHTS_FIGURE in figures:
        parts += ["## MSD modality weights", "", f"![MSD modality weights per epoch]({WEIGHTS_FIGURE})", ""]
    parts += ["## Definitions", "", definitions(dataset), ""]
    path.write_text("\n".join(parts))


def run(dataset: str, methods: Sequence[str], seeds: Sequence[int], params: ReportParams) -> Path:
    """Read every model's metrics, the teacher's saliency and the curves; write the report and its figures."""
    if not seeds:
        raise ValueError("params `seeds` is empty: nothing to report")
    names = [TEACHER, *methods]
    out_dir = paths.report_dir(dataset)
    report = out_dir / "report.md"
    reads = [*(paths.metrics(dataset, n) for n in names), paths.teacher_dir(dataset), paths.CURVES / dataset]
    with stage("report", reads, [report]):
        ms = metric_set(dataset)
        models = [read_metrics(dataset, n, seeds) for n in names]
        by_name = {m.name: m for m in models}
        saliency = read_saliency(dataset, seeds)
        _, teacher_config = read_table(paths.teacher_predictions(dataset, seeds[0]), stage="teacher")
        curves = validation_curves(dataset, names, seeds, ms.curve)
        weights = {m: w for m in methods if (w := weight_curves(dataset, m, seeds))}
        diffs = ([paired_difference(by_name[m], by_name[BASELINE], ms.primary, ms.higher_is_better)
                  for m in methods if m != BASELINE] if BASELINE in methods else None)

        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob("*.png"):  # a figure of an earlier run must not outlive its data
            stale.unlink()
        plot_efficiency(models, ms.primary, ms.higher_is_better, out_dir / "efficiency.png", params.dpi)
        plot_saliency(saliency, out_dir / "saliency.png", params.dpi)
        plot_curves(curves, ms.curve, out_dir / "curves.png", params.dpi)
        figures = list(FIGURES)
        if weights:
            plot_weights(weights, out_dir / WEIGHTS_FIGURE, params.dpi)
            figures.append(WEIGHTS_FIGURE)
        write_report(report, dataset, methods, seeds, models, diffs, saliency,
                     teacher_config.get("teacher", {}), figures, list(curves))
        log.info("report: %d models, %d seeds, figures %s", len(models), len(seeds), ", ".join(figures))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    setup_logging()
    check_params()
    run(load_value("dataset"), load_section("distill").methods, load_value("seeds"), load_section("report"))


if __name__ == "__main__":
    main()
