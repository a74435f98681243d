"""The report (stage report's work): one Markdown page that says what a dataset's experiment shows, and
what it does not.

What is read and compared follows the dataset's metric set (``DatasetSpec.metric_set``): its metrics
are the tables' columns, its ``primary`` metric (MAE for the sentiment sets, lower is better;
``map_mean`` for retrieval, higher is better) is the one comparisons use, and its ``curve`` is the
validation curve drawn for every model that logged it.

The students come in families (distillation/families.py), each in its paper's setting and each compared with its
own `<family>-none`. Every number on the page is defined where it is printed (the report's
"Definitions" section repeats them):

* **metric cells**: ``mean ± std`` over `seeds` of each seed's test metric (metrics.summarize_seeds).
* **comparisons** (stats.py): per test clip, the model's score (sentiment: absolute error |pred - y|,
  whose mean is the MAE; retrieval: the mean AP of the clip's queries, whose mean is about the mAP),
  averaged over seeds; the difference to the baseline with a BCa bootstrap 95 % interval over test
  clips, a two-sided sign-flip test, and Holm's correction across the family's methods. A difference
  *holds* when the Holm-adjusted p < `report.alpha` and the interval excludes 0.
* **controls**: `va-videoadviser` against `va-self` (what multimodal knowledge adds over a teacher
  that saw only the transcript), `<family>-none` against the floor (the linear model it must beat),
  and the text students against the teacher with video (and audio) missing at test time.
* **known limits** (synthetic datasets): the Bayes-optimal MAE given each subset of modalities, from
  the generator's own process (limits.py): its Monte Carlo expectation, and its value on these test
  clips. "Closes X % of the gap" = (MAE(none) - MAE(method)) / (MAE(none) - limit on the test clips),
  the limit being what the family's student sees (va: text; msd: all modalities).
* **population saliency**, **curves**, **MSD weights**: as before (training/teacher.py, training/loop.py).
"""

from __future__ import annotations

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

from pipeline.core import paths
from pipeline.core.config import MODALITIES, ReportParams
from pipeline.core.errors import MissingInput
from pipeline.core.paths import FLOOR, SELF_TEACHER, TEACHER
from pipeline.data.datasets import DATASETS, clip_key
from pipeline.distillation.families import FAMILIES, Family, parse_student
from pipeline.evaluation.metrics import METRIC_SETS, MetricSet
from pipeline.evaluation.stats import Comparison, compare, compare_family
from pipeline.features.store import read_table

log = logging.getLogger(__name__)

LIMITS_FILE, ORACLE_FILE = "limits.json", "oracle.csv"
METRIC_LABELS: dict[str, str] = {  # the papers' column names
    "mae": "MAE", "corr": "Corr", "acc7": "Acc-7", "acc5": "Acc-5", "acc2_has0": "Acc-2 (has0)",
    "f1_has0": "F1 (has0)", "acc2_non0": "Acc-2 (non0)", "f1_non0": "F1 (non0)",  # MOSI / MOSEI
    "acc2": "Acc-2", "acc3": "Acc-3", "f1": "F1",  # CH-SIMS
    "map_a2v": "mAP a→v", "map_v2a": "mAP v→a", "map_mean": "mAP (mean)",  # retrieval
    "acc": "Accuracy", "ce": "Cross-entropy",  # the retrieval teacher given a subset
}
SHORT_LABELS: dict[str, str] = {"map_mean": "mAP"}  # in sentences and axis labels, where no qualifier is needed
CURVE_LABELS: dict[str, str] = {"valid/mae": "Validation MAE", "valid/map": "Validation mAP"}
EFFICIENCY_KEYS = ("params", "latency_ms_b1", "latency_ms_batched", "batch_size", "device", "inputs")
MODEL_LABELS = {TEACHER: "teacher (all modalities)", SELF_TEACHER: "teacher_self (control: the va student's inputs)",
                FLOOR: "floor (linear)"}
MISSING = {  # the missing-modality evaluation: what is missing -> the teacher's subset that remains
    "nothing": "video+audio+text", "video": "audio+text", "audio": "video+text", "video and audio": "text"}
WEIGHTS_FIGURE, MISSING_FIGURE = "msd_weights.png", "missing_modality.png"


# --------------------------------------------------------------------------- inputs


def _float(value: Any) -> float:
    """A JSON number or null as a float (null -> nan)."""
    return math.nan if value is None else float(value)


def curves_name(name: str) -> str:
    """The dvclive folder name of a model (dvclive/<ds>/<folder>/seed_<s>)."""
    return name if name in (TEACHER, SELF_TEACHER) else f"student_{name}"


def curves_stage(name: str) -> str:
    return TEACHER if name in (TEACHER, SELF_TEACHER) else f"distill@{name}"


@dataclasses.dataclass(frozen=True)
class ModelMetrics:
    """One model's metrics file (evaluate), nulls as nan."""

    name: str
    mean: dict[str, float]
    std: dict[str, float]
    seeds: dict[int, dict[str, float]]
    efficiency: dict[str, Any]
    given: dict[str, dict[str, dict[str, float]]]  # the teacher's {subset: {"mean"|"std": {metric: value}}}


def metric_set(dataset: str) -> MetricSet:
    """The dataset's metric set (metrics.METRIC_SETS): its metrics, primary metric and curve."""
    return METRIC_SETS.get(DATASETS.get(dataset).metric_set)


def metric_names(dataset: str) -> tuple[str, ...]:
    return tuple(metric_set(dataset).names)


def short_label(metric: str) -> str:
    """A metric's name in prose: "MAE", "mAP"."""
    return SHORT_LABELS.get(metric, METRIC_LABELS.get(metric, metric))


def better(higher_is_better: bool) -> str:
    return "higher" if higher_is_better else "lower"


def read_metrics(dataset: str, name: str, seeds: Sequence[int]) -> ModelMetrics:
    """metrics/<ds>/<name>.json, checked: the four sections, the metric set's metrics, every seed of `seeds`."""
    path = paths.metrics(dataset, name)
    rerun = "run `dvc repro evaluate`"
    if not path.is_file():
        raise MissingInput(f"{path} not found: {rerun}")
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
    given = {subset: {part: {m: _float(v) for m, v in s[part].items()} for part in ("mean", "std")}
             for subset, s in data.get("given", {}).items()}
    return ModelMetrics(
        name=name,
        mean={m: _float(data["mean"][m]) for m in names},
        std={m: _float(data["std"][m]) for m in names},
        seeds={s: {m: _float(data["seeds"][str(s)][m]) for m in names} for s in seeds},
        efficiency=dict(data["efficiency"]),
        given=given,
    )


def clip_scores(dataset: str, name: str, seeds: Sequence[int], ms: MetricSet,
                subdir: str | None = None) -> pd.DataFrame:
    """Per test clip and seed, the score the comparisons use (`MetricSet.clip_score` of each seed's
    predictions/<ds>/<name>[/<subdir>]/seed_<s>.csv): (N clips, S seeds), rows indexed by clip id."""
    columns = {}
    for s in seeds:
        folder = paths.predictions_dir(dataset, name) / (subdir or "")
        path = folder / f"seed_{s}.csv"
        if not path.is_file():
            raise MissingInput(f"{path} not found: run `dvc repro evaluate`")
        table = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
        columns[s] = ms.clip_score(table)
    frame = pd.DataFrame(columns)
    if frame.isna().any().any():
        raise ValueError(f"{paths.predictions_dir(dataset, name)}: the seeds' prediction files cover different "
                         "clips: run `dvc repro evaluate`")
    return frame.sort_index()


@dataclasses.dataclass(frozen=True)
class Limits:
    """The generator's known limits: Bayes-optimal MAE given each subset of modalities."""

    expected: dict[str, tuple[float, float]]  # subset -> (Monte Carlo mean, its standard error)
    test: dict[str, float]  # subset -> MAE of the Bayes predictor on this test split
    oracle: pd.DataFrame  # test clip id (index) -> |bayes_<subset> - label| per subset (columns)
    n_monte_carlo: int


def read_limits(dataset: str) -> Limits | None:
    """data/raw/<ds>/limits.json and oracle.csv when the dataset's generator wrote them, else None."""
    root = paths.raw_dir(dataset)
    if not (root / LIMITS_FILE).is_file():
        return None
    data = json.loads((root / LIMITS_FILE).read_text())
    oracle = pd.read_csv(root / ORACLE_FILE, dtype={"video_id": str, "clip_id": str})
    test = oracle[oracle["mode"] == "test"]
    ids = [clip_key(v, c) for v, c in zip(test["video_id"], test["clip_id"], strict=True)]
    errors = pd.DataFrame({s: np.abs(test[f"bayes_{s}"].to_numpy(np.float64) - test["label"].to_numpy(np.float64))
                           for s in data["expected_mae"]}, index=ids)
    return Limits(expected={s: (float(v["mae"]), float(v["se"])) for s, v in data["expected_mae"].items()},
                  test={s: float(v) for s, v in data["split_mae"]["test"].items()}, oracle=errors.sort_index(),
                  n_monte_carlo=int(data["monte_carlo"]["n"]))


def read_curve(path: Path, stage_name: str) -> pd.Series:
    """One dvclive TSV (columns [timestamp,] step, <metric>) as values indexed by step."""
    if not path.is_file():
        raise MissingInput(f"training curve {path} not found: run `dvc repro {stage_name}`")
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
class TeacherRecords:
    """What the teachers' prediction files record: saliency and the metrics given each modality subset."""

    population: dict[int, dict[str, float]]  # seed -> modality -> mean train saliency
    per_clip: dict[str, np.ndarray]  # modality -> train-split saliencies of every seed, pooled
    kind: str  # teacher.saliency: prediction | loss (or "unknown" when not recorded)
    subsets: dict[str, dict[str, dict[str, list[float]]]]  # subset -> split -> metric -> one value per seed
    self_subsets: dict[str, dict[str, dict[str, list[float]]]]  # the same for teacher_self (its own subset)
    config: dict[str, Any]  # the teacher's params


def _collect(records: dict[str, Any], quality: dict[str, dict[str, dict[str, float]]]) -> None:
    for subset, splits in quality.items():
        for split, metrics in splits.items():
            for metric, value in metrics.items():
                records.setdefault(subset, {}).setdefault(split, {}).setdefault(metric, []).append(_float(value))


def read_teachers(dataset: str, seeds: Sequence[int]) -> TeacherRecords:
    population: dict[int, dict[str, float]] = {}
    pooled: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
    subsets: dict[str, Any] = {}
    self_subsets: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for seed in seeds:
        path = paths.teacher_predictions(dataset, seed)
        columns, config = read_table(path, stage="teacher")
        missing = [k for k in ("population_saliency", "subset_metrics") if k not in config]
        missing += [c for c in ("split", *(f"saliency_{m}" for m in MODALITIES)) if c not in columns]
        if missing:
            raise ValueError(f"{path} records no {missing}: it was written by an older teacher stage, "
                             "run `dvc repro teacher`")
        population[seed] = {m: float(config["population_saliency"][m]) for m in MODALITIES}
        train = np.asarray(columns["split"]) == "train"
        for m in MODALITIES:
            pooled[m].append(np.asarray(columns[f"saliency_{m}"], dtype=np.float64)[train])
        _collect(subsets, config["subset_metrics"])
        _, self_config = read_table(paths.teacher_predictions(dataset, seed, SELF_TEACHER), stage="teacher")
        if self_config.get("name") == SELF_TEACHER:  # not a copy of the teacher (retrieval: the same model)
            _collect(self_subsets, self_config.get("subset_metrics", {}))
    return TeacherRecords(population, {m: np.concatenate(v) for m, v in pooled.items()},
                          str(config.get("teacher", {}).get("saliency", "unknown")), subsets, self_subsets,
                          config.get("teacher", {}))


# --------------------------------------------------------------------------- numbers


def _std(values: Sequence[float] | np.ndarray) -> float:
    """Sample standard deviation (ddof = 1); nan for fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def mean_std(mean: float, std: float, digits: int = 3, signed: bool = False) -> str:
    """``mean ± std`` with `digits` decimals (and the mean's sign when `signed`); the mean alone when
    std is nan; n/a when the mean is nan."""
    if not math.isfinite(mean):
        return "n/a"
    text = f"{mean:{'+' if signed else ''}.{digits}f}"
    return text if not math.isfinite(std) else f"{text} ± {std:.{digits}f}"


def _number(value: Any, fmt: str) -> str:
    value = _float(value)
    return f"{value:{fmt}}" if math.isfinite(value) else "n/a"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def model_label(name: str) -> str:
    return MODEL_LABELS.get(name, name)


def metrics_table(models: Sequence[ModelMetrics]) -> str:
    """Markdown: one row per model, the metric set's metrics as mean ± std, then params, latency and inputs."""
    sizes = {m.efficiency["batch_size"] for m in models}
    shared = len(sizes) == 1  # one batch size: in the header; several: in each cell
    names = list(models[0].mean)
    header = ["Model", *(METRIC_LABELS.get(k, k) for k in names), "Params", "Latency, batch 1 (ms/clip)",
              f"Latency, batch {next(iter(sizes))} (ms/clip)" if shared else "Latency, batched (ms/clip)", "Inputs"]
    rows = []
    for m in models:
        e = m.efficiency
        batched_cell = _number(e["latency_ms_batched"], ".3g") + ("" if shared else f" (batch {e['batch_size']})")
        params = f"{int(e['params']):,}" if e["params"] is not None else "n/a"
        rows.append([model_label(m.name), *(mean_std(m.mean[k], m.std[k]) for k in names), params,
                     _number(e["latency_ms_b1"], ".3g"), batched_cell, str(e["inputs"])])
    return _table(header, rows)


def _signed(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}".replace("-", "−") if math.isfinite(value) else "n/a"


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def gap_closed(method: float, baseline: float, limit: float | None) -> float:
    """(baseline - method) / (baseline - limit): the share of the way from the baseline to the limit (nan when
    there is no limit or no gap)."""
    if limit is None or not math.isfinite(baseline - limit) or baseline - limit <= 0:
        return math.nan
    return (baseline - method) / (baseline - limit)


def comparisons_table(comparisons: Sequence[Comparison], means: dict[str, float],
                      limit: tuple[str, float] | None) -> str:
    """Markdown: one row per comparison; with a known limit, the share of the gap to it each method closes."""
    first = comparisons[0]
    header = ["Method", f"Δ {first.metric} vs `{first.baseline}`", f"{first.confidence * 100:g} % CI", "p",
              "Holm p", "Holds"]
    if limit is not None:
        header.append(f"Gap to the {limit[0]} limit closed")
    rows = []
    for c in comparisons:
        row = [f"`{c.method}`", _signed(c.estimate), f"[{_signed(c.ci_low)}, {_signed(c.ci_high)}]", _p(c.p_value),
               _p(c.p_holm), ("yes, " + ("better" if c.better else "worse")) if c.holds else "no"]
        if limit is not None:
            closed = gap_closed(means[c.method], means[c.baseline], limit[1])
            row.append(f"{closed * 100:+.0f} %" if math.isfinite(closed) else "n/a")
        rows.append(row)
    return _table(header, rows)


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
                log.info("%s: no measured %s or no %s; left out of the efficiency plot", m.name, key, label)
                continue
            teacher = m.name == TEACHER
            ax.errorbar([x], [y], yerr=[err] if math.isfinite(err) else None, fmt="s" if teacher else "o",
                        color="black" if teacher else _color(i), capsize=4, markersize=7)
            ax.annotate(m.name, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
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


def plot_saliency(records: TeacherRecords, path: Path, dpi: int) -> None:
    """Population saliency per modality (mean ± std over seeds), and the per-clip train distribution."""
    fig, (left, right) = _figure(11, 4.5, cols=2)
    seeds = sorted(records.population)
    values = np.array([[records.population[s][m] for m in MODALITIES] for s in seeds])  # (S, 3)
    std = values.std(axis=0, ddof=1) if len(seeds) > 1 else None
    left.bar(list(MODALITIES), values.mean(axis=0), yerr=std, capsize=5, color=[_color(i) for i in range(3)])
    left.set_title(f"Population saliency (train mean), {len(seeds)} seed{'s' * (len(seeds) != 1)}")
    left.set_ylabel(f"saliency ({records.kind}); mean ± std over seeds")
    right.boxplot([records.per_clip[m] for m in MODALITIES])
    right.set_xticks(range(1, len(MODALITIES) + 1), list(MODALITIES))
    right.set_title("Per-clip saliency, train split (all seeds pooled)")
    right.set_ylabel(f"saliency ({records.kind})")
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


def plot_curves(panels: dict[str, dict[str, pd.DataFrame]], metric: str, path: Path, dpi: int) -> None:
    """`metric` (a dvclive curve, e.g. valid/mae) per epoch, one panel per family (title -> model -> curves)."""
    label = curve_label(metric)
    fig, axes = _figure(7 * len(panels), 4.5, cols=len(panels))
    for ax, (title, curves) in zip(axes, panels.items(), strict=True):
        for i, (name, frame) in enumerate(curves.items()):
            _band(ax, frame, name, "black" if name == TEACHER else _color(i), "--" if name == TEACHER else "-")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{title}\n{label} per epoch (mean over seeds, band: min to max)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
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


def plot_missing(rows: Sequence[tuple[str, float, float, str]], limits: dict[str, float], path: Path,
                 dpi: int) -> None:
    """Test MAE (mean ± std over seeds) of the teacher with modalities missing at test time and of the text
    students, as horizontal bars; the Bayes limits (when known) as vertical lines."""
    fig, (ax,) = _figure(9, 0.45 * len(rows) + 1.8)
    y = np.arange(len(rows))[::-1]
    colors = {"teacher": "black", "student": "C0", "floor": "C7"}
    for yi, (_, mean, std, group) in zip(y, rows, strict=True):
        ax.barh(yi, mean, xerr=std if math.isfinite(std) else None, color=colors[group], alpha=0.75, capsize=3)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    for i, (subset, value) in enumerate(limits.items()):
        ax.axvline(value, color=_color(i + 2), linestyle=":", label=f"Bayes limit given {subset}")
    ax.set_xlabel("test MAE (mean ± std over seeds; lower is better)")
    ax.set_title("Missing modalities at test time: the teacher without video (and audio) vs. text students")
    ax.grid(True, axis="x", alpha=0.3)
    if limits:
        ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=dpi)


# --------------------------------------------------------------------------- report sections


@dataclasses.dataclass
class Context:
    """Everything the sections read, loaded once."""

    dataset: str
    seeds: list[int]
    students: list[str]
    params: ReportParams
    ms: MetricSet
    models: dict[str, ModelMetrics]
    teachers: TeacherRecords
    limits: Limits | None
    scores: dict[str, pd.DataFrame]  # name -> (N, S) per-clip scores (cached)

    def score(self, name: str, subdir: str | None = None) -> pd.DataFrame:
        key = name if subdir is None else f"{name}/{subdir}"
        if key not in self.scores:
            self.scores[key] = clip_scores(self.dataset, name, self.seeds, self.ms, subdir)
        return self.scores[key]

    def matrix(self, key: str) -> np.ndarray:
        """(S, N) scores of a model (`name` or `teacher/given_<subset>`), clips in a fixed order."""
        name, _, subdir = key.partition("/")
        return self.score(name, subdir or None).to_numpy().T

    def oracle(self, subset: str) -> np.ndarray:
        """(S, N) absolute errors of the Bayes predictor given `subset`, the same for every seed."""
        assert self.limits is not None
        ids = self.score(TEACHER).index
        missing = ids.difference(self.limits.oracle.index)
        if len(missing):
            raise ValueError(f"{paths.raw_dir(self.dataset) / ORACLE_FILE} has no Bayes prediction for {len(missing)} "
                             f"test clips (e.g. {list(missing[:3])}): regenerate the data (`dvc repro generate`)")
        row = self.limits.oracle.loc[ids, subset].to_numpy()
        return np.tile(row, (len(self.seeds), 1))

    def stats(self) -> dict[str, Any]:
        p = self.params
        return {"metric": short_label(self.ms.primary), "confidence": p.confidence, "alpha": p.alpha,
                "n_resamples": p.resamples, "seed": p.seed}


def _family_members(ctx: Context, family: Family) -> list[str]:
    return [s for s in ctx.students if parse_student(s).family.name == family.name]


def family_section(ctx: Context, family: Family) -> tuple[list[str], list[str]]:
    """(Markdown lines, summary sentences) of one family: its table, its comparisons and controls."""
    members = _family_members(ctx, family)
    baseline = f"{family.name}-none"
    refs = [TEACHER, *([SELF_TEACHER] if family.name == "va" and "va-self" in members else []), FLOOR]
    lines = [f"## {family.title}", "", metrics_table([ctx.models[n] for n in [*refs, *members]]), ""]
    summary: list[str] = []
    if baseline not in members:
        lines += [f"`{baseline}` is not among `distill.students`: no comparison in this family.", ""]
        return lines, summary
    others = [n for n in members if n != baseline]
    hib = ctx.ms.higher_is_better
    limit = None
    if ctx.limits is not None:
        limit = (family.limit, ctx.limits.test[family.limit])
    if others:
        comps = compare_family({n: ctx.matrix(n) for n in [baseline, *others]}, baseline, hib, **ctx.stats())
        means = {n: ctx.models[n].mean[ctx.ms.primary] for n in members}
        lines += [f"### Against `{baseline}` (paired over {comps[0].n_clips} test clips x {comps[0].n_seeds} seeds, "
                  f"Holm's correction over {len(comps)} method{'s' * (len(comps) != 1)})", "",
                  comparisons_table(comps, means, limit), "", *(f"- {c.sentence()}" for c in comps), ""]
        held = [c for c in comps if c.holds]
        summary.append(f"{family.title.split(':')[0]}: " + (
            "; ".join(f"`{c.method}` {'better' if c.better else 'worse'} than `{baseline}` "
                      f"({_signed(c.estimate)} {c.metric})" for c in held) if held
            else f"no method differs from `{baseline}` by more than the noise") + ".")
    controls: list[Comparison] = []
    if family.name == "va" and {"va-videoadviser", "va-self"} <= set(members):
        controls.append(compare(ctx.matrix("va-videoadviser"), ctx.matrix("va-self"), hib, method="va-videoadviser",
                                baseline="va-self", **ctx.stats()))
    controls.append(compare(ctx.matrix(baseline), ctx.matrix(FLOOR), hib, method=baseline, baseline=FLOOR,
                            **ctx.stats()))
    lines += ["### Controls", "",
              "- What multimodal knowledge adds: `va-videoadviser` against `va-self` (the same step-2 loss from a "
              "teacher that saw only the transcript)." if family.name == "va" else
              "- The floor: the student without a teacher against the linear floor.", ""]
    lines += [f"- {c.sentence()}" for c in controls] + [""]
    summary += [c.sentence() for c in controls]
    if limit is not None:
        lines += [f"Known limit for this family's student (Bayes-optimal MAE given {limit[0]}, on these test clips): "
                  f"{limit[1]:.3f}; `{baseline}` is {ctx.models[baseline].mean['mae'] - limit[1]:+.3f} above it.", ""]
    return lines, summary


def limits_section(ctx: Context) -> list[str]:
    if ctx.limits is None:
        return []
    lim = ctx.limits
    rows = [[s, f"{lim.expected[s][0]:.3f} ± {lim.expected[s][1]:.3f}", f"{lim.test[s]:.3f}"] for s in lim.expected]
    return ["## Known limits of the synthetic data", "",
            "Bayes-optimal MAE given each subset of modalities, computed by the generator from its own generative "
            f"process (`{paths.raw_dir(ctx.dataset) / LIMITS_FILE}`): the posterior median of the label given exactly "
            f"what the modalities encode. Expected value: Monte Carlo over {lim.n_monte_carlo:,} fresh draws (± its "
            "standard error); test clips: the same predictor on this test split. No model can do better in "
            "expectation; a model near a limit has learned all its inputs can tell.", "",
            _table(["Given", "Expected MAE (Monte Carlo)", "MAE on these test clips"], rows), ""]


def subset_order(subset: str) -> tuple[int, list[int]]:
    """Larger subsets first, then MODALITIES order: video+audio+text, video+audio, ..., audio, text."""
    parts = subset.split("+")
    return -len(parts), [MODALITIES.index(m) for m in parts]


def teacher_section(ctx: Context) -> list[str]:
    """The teacher's quality given each subset of its modalities (valid and test), and the control teacher."""
    rec = ctx.teachers
    ms_names = ctx.ms.teacher_metrics
    header = ["Teacher given", *(f"{split} {METRIC_LABELS.get(m, m)}" for split in ("valid", "test")
                                 for m in ms_names)]
    if ctx.limits is not None:
        header.append("Bayes limit (test clips)")

    def row(label: str, splits: dict[str, dict[str, list[float]]], subset: str) -> list[str]:
        cells = [label]
        for split in ("valid", "test"):
            for m in ms_names:
                values = splits.get(split, {}).get(m, [])
                cells.append(mean_std(float(np.mean(values)), _std(values)) if values else "n/a")
        if ctx.limits is not None:
            cells.append(f"{ctx.limits.test[subset]:.3f}" if subset in ctx.limits.test else "n/a")
        return cells

    rows = [row(subset, rec.subsets[subset], subset) for subset in sorted(rec.subsets, key=subset_order)]
    rows += [row(f"{subset} (teacher_self, trained on it alone)", splits, subset)
             for subset, splits in rec.self_subsets.items()]
    p = rec.config.get("modality_dropout", "n/a")
    return ["## The teacher given each subset of its modalities", "",
            "MSD distils the teacher's outputs with modalities masked, and the missing-modality evaluation uses them "
            f"directly, so here is how good they are (trained with modality dropout p = {p}; mean ± std over "
            "seeds).", "", _table(header, rows), ""]


def missing_section(ctx: Context, out_dir: Path) -> tuple[list[str], list[str], bool]:
    """The teacher with modalities missing at test time beside the text students (when the teacher was
    scored given those subsets: sentiment)."""
    teacher = ctx.models[TEACHER]
    if not all(s in teacher.given for s in MISSING.values()):
        return [], [], False
    primary = ctx.ms.primary
    va = [s for s in ctx.students if parse_student(s).family.name == "va"]
    entries: list[tuple[str, str, str]] = [(f"teacher, {what} missing" if what != "nothing" else
                                            "teacher, nothing missing", f"{TEACHER}/given_{subset}", "teacher")
                                           for what, subset in MISSING.items()]
    entries += [(name, name, "student") for name in va] + [("floor (linear)", FLOOR, "floor")]

    def stat(key: str) -> tuple[float, float]:
        name, _, subdir = key.partition("/")
        if subdir:
            given = ctx.models[TEACHER].given[subdir.removeprefix("given_")]
            return given["mean"][primary], given["std"][primary]
        return ctx.models[name].mean[primary], ctx.models[name].std[primary]

    rows = [(label, *stat(key), group) for label, key, group in entries]
    limits = ({s: ctx.limits.test[s] for s in ("text", "video+audio+text")} if ctx.limits is not None else {})
    plot_missing(rows, limits, out_dir / MISSING_FIGURE, ctx.params.dpi)
    no_video = f"{TEACHER}/given_{MISSING['video']}"
    comps = [compare(ctx.matrix(n), ctx.matrix(no_video), ctx.ms.higher_is_better, method=n,
                     baseline="teacher without video", **ctx.stats()) for n in va]
    table = _table(["Model", "Inputs at test time", f"Test {short_label(primary)}"],
                   [[label, key.partition("/")[2].removeprefix("given_") or
                     str(ctx.models[key].efficiency.get("inputs", "")), mean_std(m, s)]
                    for (label, m, s, _), (_, key, _) in zip(rows, entries, strict=True)])
    lines = ["## Missing modalities at test time", "",
             "VideoAdviser's motivation: video is often not there at inference. The teacher is evaluated with video, "
             "audio or both masked on the test split (it was trained with modality dropout), beside the text "
             "students, which never need video.", "", table, "",
             f"![Missing-modality evaluation]({MISSING_FIGURE})", "",
             "When video is missing, is a text student better than the teacher without video (which still has the "
             "audio and the transcript)?", "", *(f"- {c.sentence()}" for c in comps), ""]
    best = min(comps, key=lambda c: c.estimate) if comps else None
    summary = [f"Missing video: {best.sentence()}"] if best is not None else []
    return lines, summary, True


def saliency_table(rec: TeacherRecords) -> str:
    seeds = sorted(rec.population)
    rows = []
    for m in MODALITIES:
        values = np.array([rec.population[s][m] for s in seeds])
        clips = rec.per_clip[m]
        rows.append([m, mean_std(float(values.mean()), _std(values), 4),
                     _number(np.median(clips) if len(clips) else None, ".4f"),
                     _number(np.quantile(clips, 0.9) if len(clips) else None, ".4f")])
    return _table(["Modality", "Population saliency, mean ± std over seeds", "Per-clip median (train)",
                   "Per-clip 90th percentile (train)"], rows)


def _provenance(ctx: Context) -> list[str]:
    devices = sorted({str(m.efficiency["device"]) for m in ctx.models.values()})
    teacher = {k: v for k, v in ctx.teachers.config.items() if not isinstance(v, (dict, list))}
    lines = [f"- Dataset: `{ctx.dataset}`; seeds: {', '.join(map(str, ctx.seeds))}; students (`distill.students`): "
             f"{', '.join(f'`{m}`' for m in ctx.students)}.",
             f"- Inputs: `{paths.METRICS / ctx.dataset}/` and `{paths.PREDICTIONS / ctx.dataset}/` (evaluate), "
             f"`{paths.teacher_dir(ctx.dataset)}/seed_<s>/preds.h5` (teacher), `{paths.CURVES / ctx.dataset}/` "
             "(curves). Generated by `python -m pipeline.report`.",
             f"- Latency measured on: {', '.join(devices)}."]
    if teacher:
        lines.append("- Teacher: " + ", ".join(f"{k}={v}" for k, v in sorted(teacher.items())) + ".")
    return lines


_SENTIMENT_METRICS = """\
- Metrics (MMSA conventions, `pipeline/evaluation/metrics.py`): MAE (lower is better), Pearson Corr, Acc-7 and
  Acc-5 (rounded, clipped to [-3, 3] / [-2, 2]), Acc-2 and weighted F1 with neutral clips counted as
  positive (has0) or removed (non0); accuracies and F1 are fractions in [0, 1]."""
_RETRIEVAL_METRICS = """\
- Metrics (`pipeline/evaluation/retrieval_metrics.py`): mean average precision (mAP, higher is better, in [0, 1]) of
  cross-modal retrieval on the test clips. Each clip's audio embedding is a query that ranks the visual
  embeddings of all test clips by cosine similarity, the full ranking with no cut-off (a→v), and each
  visual embedding ranks the audio ones (v→a); an item is relevant when it has the query's class.
  AP of a query is tie-aware (tied scores form one threshold, as scikit-learn's average_precision_score);
  mAP a→v and mAP v→a: the mean AP over that direction's queries; mAP (mean): their average. Per-query
  APs: `{predictions}/seed_<s>.csv` (`python -m pipeline.evaluation.metrics --metric-set retrieval <csv>` recomputes
  a seed's mAP from it)."""
METRIC_DEFINITIONS: dict[str, str] = {"mosi_mosei": _SENTIMENT_METRICS, "sims": _SENTIMENT_METRICS,
                                      "retrieval": _RETRIEVAL_METRICS}


def definitions(ctx: Context) -> str:
    """The report's Definitions section for the dataset's metric set."""
    ms, p = ctx.ms, ctx.params
    label = short_label(ms.primary)
    score = ms.clip_score_doc
    return "\n".join([
        METRIC_DEFINITIONS[DATASETS.get(ctx.dataset).metric_set].format(
            predictions=paths.predictions_dir(ctx.dataset, "<name>")),
        "- `mean ± std`: mean and sample standard deviation (ddof = 1) over the seeds of each seed's test metric;\n"
        "  a lone mean means one seed, `n/a` an undefined value.",
        "- Params: every parameter inference needs, frozen encoders included. Latency: end-to-end wall time per\n"
        "  clip from the raw inputs to the prediction (median of the timed passes), at batch 1 and batched;\n"
        "  measured once per student architecture (`latency_of` in the metrics file names the timed one).",
        f"- Δ {label}: the method's {label} minus the baseline's, pooled over seeds and test clips. Its interval:\n"
        f"  {score} is averaged over seeds, and the per-clip differences are resampled ({p.resamples:,} BCa\n"
        f"  bootstrap resamples, seed {p.seed}; `stats.bootstrap_ci`) for a {p.confidence * 100:g} % interval. p: a\n"
        "  two-sided sign-flip test of a zero mean difference over the same per-clip differences (`stats`).\n"
        "  Holm p: Holm's step-down correction over the family's comparisons with its `none`. A difference\n"
        f"  holds when Holm p < {p.alpha:g} and the interval excludes 0; otherwise it does not hold, whatever its\n"
        "  sign.",
        *(["- Gap closed: (MAE(none) − MAE(method)) / (MAE(none) − limit), the limit being the Bayes-optimal MAE\n"
           "  on these test clips given what the family's student sees (synthetic data only)."]
          if ctx.limits is not None else []),
        "- Saliency of modality m on a clip: how much the teacher's output (or loss) changes when m is masked;\n"
        "  population saliency: its mean over the training clips.",
    ])


def write_report(ctx: Context, out_dir: Path) -> list[str]:
    """Write report.md and its figures; returns the figure files written."""
    ms = ctx.ms
    label, curve = short_label(ms.primary), curve_label(ms.curve)
    families = [f for f in FAMILIES.values() if _family_members(ctx, f)]
    body: list[str] = []
    summary: list[str] = []
    for family in families:
        lines, said = family_section(ctx, family)
        body += lines
        summary += said
    missing_lines, missing_summary, drew_missing = missing_section(ctx, out_dir)
    summary += missing_summary
    ordered = [ctx.models[n] for n in (TEACHER, SELF_TEACHER, FLOOR, *ctx.students)]
    plot_efficiency(ordered, ms.primary, ms.higher_is_better, out_dir / "efficiency.png", ctx.params.dpi)
    plot_saliency(ctx.teachers, out_dir / "saliency.png", ctx.params.dpi)
    panels = {f.title.split(":")[0]: validation_curves(ctx.dataset, [TEACHER, *_family_members(ctx, f)], ctx.seeds,
                                                       ms.curve) for f in families}
    plot_curves(panels, ms.curve, out_dir / "curves.png", ctx.params.dpi)
    figures = ["efficiency.png", "saliency.png", "curves.png", *([MISSING_FIGURE] if drew_missing else [])]
    weights = {m: w for m in ctx.students if (w := weight_curves(ctx.dataset, m, ctx.seeds))}
    if weights:
        plot_weights(weights, out_dir / WEIGHTS_FIGURE, ctx.params.dpi)
        figures.append(WEIGHTS_FIGURE)

    parts = [f"# Report: {ctx.dataset}", "", *_provenance(ctx), "", "## Summary", "",
             *(f"- {s}" for s in summary), "", *limits_section(ctx), *teacher_section(ctx), *body, *missing_lines,
             "## Efficiency", "", f"![Test {label} against end-to-end latency per clip](efficiency.png)", "",
             "## Teacher saliency", "", saliency_table(ctx.teachers), "",
             "![Teacher saliency per modality](saliency.png)", "",
             "## Training curves", "", f"![{curve} per epoch](curves.png)", ""]
    drawn = {n for panel in panels.values() for n in panel}
    undrawn = [n for n in (TEACHER, *ctx.students) if n not in drawn]
    if undrawn:
        parts += [f"Not drawn (no `{ms.curve}` logged): {', '.join(f'`{n}`' for n in undrawn)}.", ""]
    if WEIGHTS_FIGURE in figures:
        parts += ["## MSD modality weights", "", f"![MSD modality weights per epoch]({WEIGHTS_FIGURE})", ""]
    parts += ["## Definitions", "", definitions(ctx), ""]
    (out_dir / "report.md").write_text("\n".join(parts))
    return figures
