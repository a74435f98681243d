"""Tests of the report stage (pipeline.report) on fake but well-formed inputs written in tmp_path."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline import paths, report
from pipeline.config import ReportParams
from pipeline.metrics import METRIC_NAMES
from pipeline.models import MODALITIES
from pipeline.retrieval import METRIC_NAMES as RETRIEVAL_METRIC_NAMES
from pipeline.store import write_table

DS = "mosi"  # a registered dataset (its metric set names the columns); the files are fake
RETRIEVAL_DS = "synthetic_av"  # metric set "retrieval": map_* metrics, students log valid/map
SEEDS = [0, 1, 2]
METHODS = ["none", "kd", "msd-learned"]
PARAMS = ReportParams(dpi=50)
EPOCHS = 5


def _metrics_file(dataset: str, name: str, per_seed: dict[int, dict[str, float | None]], params: int,
                  latency: tuple[float, float]) -> dict:
    """A metrics JSON as evaluate writes it: mean and std (ddof = 1) over seeds, nan as null."""
    names = list(next(iter(per_seed.values())))
    table = np.array([[np.nan if v[m] is None else v[m] for m in names] for v in per_seed.values()])
    mean = table.mean(axis=0)
    std = table.std(axis=0, ddof=1) if len(table) > 1 else np.full(len(names), np.nan)
    safe = lambda a: {m: (float(x) if np.isfinite(x) else None) for m, x in zip(names, a, strict=True)}
    data = {"mean": safe(mean), "std": safe(std), "seeds": {str(s): v for s, v in per_seed.items()},
            "efficiency": {"params": params, "latency_ms_b1": latency[0], "latency_ms_batched": latency[1],
                           "batch_size": 16, "device": "cpu",
                           "inputs": "raw clips" if name == "teacher" else "transcript"}}
    path = paths.metrics(dataset, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return data


def _tsv(path: Path, metric: str, values: np.ndarray) -> None:
    """A dvclive TSV: timestamp, step, <metric>."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{1700000000000 + i}\t{i}\t{v!r}" for i, v in enumerate(values.tolist())]
    path.write_text("\n".join(["timestamp\tstep\t" + metric, *rows]) + "\n")


def make_inputs(dataset: str, methods: list[str], seeds: list[int], weights: bool = True,
                primary: dict[str, list[float]] | None = None, teacher_curve: str | None = None) -> dict:
    """Metrics of the teacher and every method, teacher prediction tables and dvclive curves, in the cwd.

    The metrics and the students' curve are those of the dataset's metric set. `primary`: per-seed
    values of its primary metric for some models (default: 0.5 + 0.1 * model index + noise);
    `teacher_curve`: the validation curve the teacher logs (default: the students' curve).
    Returns {name: metrics JSON data} and, under "population", {seed: population saliency}."""
    metric_set = report.metric_set(dataset)
    primary = primary or {}
    rng = np.random.default_rng(0)
    out: dict = {}
    for i, name in enumerate(["teacher", *methods]):
        per_seed = {}
        for k, s in enumerate(seeds):
            values = {m: float(rng.uniform(0.3, 0.9)) for m in metric_set.names}
            values[metric_set.primary] = (primary[name][k] if name in primary
                                          else 0.5 + 0.1 * i + float(rng.normal(0, 0.05)))
            per_seed[s] = values
        if name == "kd" and "corr" in metric_set.names:
            per_seed[seeds[0]]["corr"] = None  # undefined for one seed: mean and std are undefined
        out[name] = _metrics_file(dataset, name, per_seed, params=1_000_000 * (i + 1),
                                  latency=(10.0 / (i + 1), 2.0 / (i + 1)))
        folder = "teacher" if name == "teacher" else f"student_{name}"
        for s in seeds:
            base = paths.curves(dataset, folder, s) / "plots" / "metrics"
            curve = (teacher_curve or metric_set.curve) if name == "teacher" else metric_set.curve
            _tsv(base / f"{curve}.tsv", Path(curve).name, 1.0 / (np.arange(EPOCHS) + 1) + rng.uniform(0, 0.1, EPOCHS))
            _tsv(base / "train" / "loss.tsv", "loss", rng.uniform(0, 1, EPOCHS))
            if weights and name.startswith("msd"):
                _tsv(base / "train" / "w_text.tsv", "w_text", np.full(EPOCHS, 1 / 3) + rng.normal(0, 0.01, EPOCHS))
    out["population"] = {}
    n = 20
    split = ["train"] * 14 + ["valid"] * 3 + ["test"] * 3
    for s in seeds:
        sal = {m: rng.exponential(0.1 * (k + 1), n) for k, m in enumerate(MODALITIES)}
        population = {m: float(sal[m][:14].mean()) for m in MODALITIES}
        out["population"][s] = population
        write_table(paths.teacher_predictions(dataset, s),
                    {"id": [f"c{j}" for j in range(n)], "split": split, "label": rng.uniform(-3, 3, n),
                     "logits": rng.normal(size=(n, 7)), "reg": rng.normal(size=n),
                     **{f"reg_only_{m}": rng.normal(size=n) for m in MODALITIES},
                     **{f"saliency_{m}": sal[m] for m in MODALITIES}},
                    config={"teacher": {"schedule": "joint", "saliency": "prediction", "mask": "learned",
                                        "train": {"epochs": EPOCHS}},
                            "seed": s, "classes": [str(k) for k in range(7)], "population_saliency": population})
    return out


def _row(md: str, first_cell: str) -> list[str]:
    """The cells of the markdown table row starting with `first_cell`."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in\n{md}")


def _valid_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_report_tables_and_figures(workdir: Path) -> None:
    inputs = make_inputs(DS, METHODS, SEEDS)
    md_path = report.run(DS, METHODS, SEEDS, PARAMS)
    assert md_path == paths.report_dir(DS) / "report.md"
    md = md_path.read_text()
    assert md.startswith(f"# Report: {DS}")
    assert "seeds: 0, 1, 2" in md

    header = _row(md, "Model")
    assert header[1:9] == ["MAE", "Corr", "Acc-7", "Acc-5", "Acc-2 (has0)", "F1 (has0)", "Acc-2 (non0)", "F1 (non0)"]
    assert header[10:12] == ["Latency, batch 1 (ms/clip)", "Latency, batch 16 (ms/clip)"]
    for name in ["teacher", *METHODS]:
        cells = _row(md, name)
        for k, metric in enumerate(METRIC_NAMES, start=1):
            values = [inputs[name]["seeds"][str(s)][metric] for s in SEEDS]
            if None in values:
                assert cells[k] == "n/a"
            else:
                assert cells[k] == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
        assert cells[9] == f"{inputs[name]['efficiency']['params']:,}"
        assert cells[10] == f"{inputs[name]['efficiency']['latency_ms_b1']:.3g}"
    assert _row(md, "kd")[2] == "n/a"  # corr null for one seed

    for method in ("kd", "msd-learned"):  # paired by seed, against none
        diffs = np.array([inputs[method]["seeds"][str(s)]["mae"] - inputs["none"]["seeds"][str(s)]["mae"]
                          for s in SEEDS])
        cells = _diff_row(md, method)
        assert cells[3] == f"{diffs.mean():+.3f} ± {diffs.std(ddof=1):.3f}"
        assert cells[4] == f"{int((diffs < 0).sum())} of 3"
        assert f"`{method}`: MAE lower than `none` on {int((diffs < 0).sum())} of 3 seeds" in md
    assert _diff_row(md, "none") is None  # the baseline is not compared with itself

    population = np.array([[inputs["population"][s][m] for m in MODALITIES] for s in SEEDS])
    assert _row(md, "video")[1] == f"{population[:, 0].mean():.4f} ± {population[:, 0].std(ddof=1):.4f}"

    assert "Not drawn" not in md  # the sentiment teacher logs valid/mae
    figures = ["efficiency.png", "saliency.png", "curves.png", "msd_weights.png"]
    for figure in figures:
        assert f"]({figure})" in md
        width, height = _valid_png(paths.report_dir(DS) / figure)
        assert width > 100 and height > 100


def _diff_row(md: str, method: str) -> list[str] | None:
    """The row of `method` in the distillation-vs-none table (the second table with a method column)."""
    section = md.split("## Distillation vs. none", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == method:
            return cells
    return None


def _model(name: str, metric: str, names: tuple[str, ...], values: list[float]) -> report.ModelMetrics:
    seeds = {s: {m: (v if m == metric else 0.5) for m in names} for s, v in enumerate(values)}
    return report.ModelMetrics(name, {}, {}, seeds, {})


def test_paired_difference_hand_computed() -> None:
    kd, none = _model("kd", "mae", METRIC_NAMES, [0.50, 0.70, 0.60]), _model("none", "mae", METRIC_NAMES,
                                                                               [0.60, 0.65, 0.70])
    d = report.paired_difference(kd, none, "mae", higher_is_better=False)
    assert d.diffs == pytest.approx([-0.10, 0.05, -0.10])
    assert d.mean == pytest.approx(-0.05)
    assert d.std == pytest.approx(np.std([-0.10, 0.05, -0.10], ddof=1))
    assert d.improved == 2  # d_s < 0: lower MAE
    assert "`kd`: MAE lower than `none` on 2 of 3 seeds; mean paired difference -0.050 ± 0.087" in d.sentence()
    assert "within one standard deviation" in d.sentence()  # |−0.05| <= 0.087: said, not hidden


def test_paired_difference_higher_is_better_counts_positive_differences() -> None:
    # mAP: d = [+0.10, -0.05, +0.20] -> 2 seeds with higher mAP; mean 0.25 / 3, std of d (ddof = 1)
    kd = _model("kd", "map_mean", RETRIEVAL_METRIC_NAMES, [0.60, 0.45, 0.70])
    none = _model("none", "map_mean", RETRIEVAL_METRIC_NAMES, [0.50, 0.50, 0.50])
    d = report.paired_difference(kd, none, "map_mean", higher_is_better=True)
    assert d.diffs == pytest.approx([0.10, -0.05, 0.20])
    assert d.mean == pytest.approx(0.25 / 3)
    assert d.improved == 2
    std = np.std([0.10, -0.05, 0.20], ddof=1)
    assert d.sentence().startswith(f"`kd`: mAP higher than `none` on 2 of 3 seeds; mean paired difference "
                                   f"+0.083 ± {std:.3f}.")


def test_one_seed_shows_the_mean_alone_and_no_weights_figure(workdir: Path) -> None:
    inputs = make_inputs(DS, ["none", "videoadviser"], [3], weights=False)
    md = report.run(DS, ["none", "videoadviser"], [3], PARAMS).read_text()
    assert _row(md, "teacher")[1] == f"{inputs['teacher']['mean']['mae']:.3f}"
    assert "(one seed, no spread)" in md
    assert not (paths.report_dir(DS) / "msd_weights.png").exists()
    assert "msd_weights.png" not in md


def test_without_the_none_baseline_there_is_no_paired_comparison(workdir: Path) -> None:
    make_inputs(DS, ["kd"], SEEDS)
    md = report.run(DS, ["kd"], SEEDS, PARAMS).read_text()
    assert "`none` is not among `distill.methods`: no paired comparison." in md


def test_missing_metrics_file_names_the_file_and_the_stage(workdir: Path) -> None:
    make_inputs(DS, METHODS, SEEDS)
    paths.metrics(DS, "kd").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("metrics/mosi/kd.json not found: run `dvc repro "
                                                          "evaluate@kd`")):
        report.run(DS, METHODS, SEEDS, PARAMS)
    paths.metrics(DS, "teacher").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("`dvc repro evaluate_teacher`")):
        report.run(DS, METHODS, SEEDS, PARAMS)


def test_metrics_file_without_a_seed_is_refused(workdir: Path) -> None:
    make_inputs(DS, METHODS, SEEDS)
    with pytest.raises(ValueError, match=r"no result for seeds \[7\].*dvc repro evaluate_teacher"):
        report.run(DS, METHODS, [*SEEDS, 7], PARAMS)


@pytest.mark.parametrize(("dataset", "curve"), [(DS, "mae"), (RETRIEVAL_DS, "map")])
def test_missing_curves_name_the_training_stage(workdir: Path, dataset: str, curve: str) -> None:
    make_inputs(dataset, METHODS, SEEDS)
    (paths.curves(dataset, "student_kd", 1) / "plots" / "metrics" / "valid" / f"{curve}.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"valid/{curve}.tsv not found: run `dvc repro distill@kd`")):
        report.run(dataset, METHODS, SEEDS, PARAMS)


# --------------------------------------------------------------------------- retrieval


RETRIEVAL_SEEDS = [0, 1]
RETRIEVAL_METHODS = ["none", "videoadviser", "msd-learned"]
RETRIEVAL_MAP = {  # map_mean per seed
    "none": [0.40, 0.50],
    "videoadviser": [0.46, 0.52],  # higher than none on both seeds: d = +0.06, +0.02
    "msd-learned": [0.35, 0.57],  # lower on seed 0, higher on seed 1: d = -0.05, +0.07
}


def test_retrieval_report_compares_map_higher_is_better(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    inputs = make_inputs(RETRIEVAL_DS, RETRIEVAL_METHODS, RETRIEVAL_SEEDS, primary=RETRIEVAL_MAP,
                         teacher_curve="valid/ce")  # the retrieval teacher logs cross-entropy, not mAP
    with caplog.at_level(logging.INFO, logger="pipeline.report"):
        md = report.run(RETRIEVAL_DS, RETRIEVAL_METHODS, RETRIEVAL_SEEDS, PARAMS).read_text()

    header = _row(md, "Model")
    assert header[1:5] == ["mAP a→v", "mAP v→a", "mAP (mean)", "Params"]
    for name in ["teacher", *RETRIEVAL_METHODS]:
        cells = _row(md, name)
        for k, metric in enumerate(RETRIEVAL_METRIC_NAMES, start=1):
            values = [inputs[name]["seeds"][str(s)][metric] for s in RETRIEVAL_SEEDS]
            assert cells[k] == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
    assert _row(md, "videoadviser")[3] == "0.490 ± 0.042"  # mean of 0.46, 0.52; std 0.06 / sqrt(2)

    diff_header = _diff_row(md, "Method")
    assert diff_header[2:] == ["mAP − mAP(none) per seed (positive: higher mAP)", "Mean ± std",
                               "Seeds with higher mAP"]
    va = _diff_row(md, "videoadviser")
    assert va[2] == "0: +0.060, 1: +0.020"
    assert va[3] == "+0.040 ± 0.028"  # std of d: 0.04 / sqrt(2)
    assert va[4] == "2 of 2"
    assert "`videoadviser`: mAP higher than `none` on 2 of 2 seeds; mean paired difference +0.040" in md
    msd = _diff_row(md, "msd-learned")
    assert msd[3] == "+0.010 ± 0.085" and msd[4] == "1 of 2"  # d = -0.05, +0.07: std 0.12 / sqrt(2)
    assert "within one standard deviation" in md.split("`msd-learned`: mAP higher", 1)[1].splitlines()[0]
    assert "MAE" not in md

    assert "Not drawn (no `valid/map` logged): `teacher`." in md
    assert any("teacher logged no valid/map" in r.getMessage() for r in caplog.records)
    assert "d_s > 0" in md and "predictions/synthetic_av/<name>/seed_<s>.csv" in md  # definitions
    for figure in ["efficiency.png", "saliency.png", "curves.png", "msd_weights.png"]:
        assert f"]({figure})" in md
        width, height = _valid_png(paths.report_dir(RETRIEVAL_DS) / figure)
        assert width > 100 and height > 100


def test_retrieval_teacher_curve_is_drawn_when_logged(workdir: Path) -> None:
    make_inputs(RETRIEVAL_DS, ["none", "kd"], RETRIEVAL_SEEDS)  # teacher logs valid/map too
    md = report.run(RETRIEVAL_DS, ["none", "kd"], RETRIEVAL_SEEDS, PARAMS).read_text()
    assert "![Validation mAP per epoch](curves.png)" in md
    assert "Not drawn" not in md


def test_main_reads_params(project: Path) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    make_inputs(params["dataset"], params["distill"]["methods"], params["seeds"])
    report.main([])
    md = (paths.report_dir(params["dataset"]) / "report.md").read_text()
    for method in params["distill"]["methods"]:
        assert f"| {method} |" in md
