"""Tests of the report stage (pipeline.report) on fake but well-formed inputs written in tmp_path."""

from __future__ import annotations

import json
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
from pipeline.store import write_table

DS = "mosi"  # a registered dataset (its metric set names the columns); the files are fake
SEEDS = [0, 1, 2]
METHODS = ["none", "kd", "msd-learned"]
PARAMS = ReportParams(dpi=50)
EPOCHS = 5


def _metrics_file(dataset: str, name: str, per_seed: dict[int, dict[str, float | None]], params: int,
                  latency: tuple[float, float]) -> dict:
    """A metrics JSON as evaluate writes it: mean and std (ddof = 1) over seeds, nan as null."""
    table = np.array([[np.nan if v[m] is None else v[m] for m in METRIC_NAMES] for v in per_seed.values()])
    mean = table.mean(axis=0)
    std = table.std(axis=0, ddof=1) if len(table) > 1 else np.full(len(METRIC_NAMES), np.nan)
    safe = lambda a: {m: (float(x) if np.isfinite(x) else None) for m, x in zip(METRIC_NAMES, a, strict=True)}
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


def make_inputs(dataset: str, methods: list[str], seeds: list[int], weights: bool = True) -> dict:
    """Metrics of the teacher and every method, teacher prediction tables and dvclive curves, in the cwd.

    Returns {name: metrics JSON data} and, under "population", {seed: population saliency}."""
    rng = np.random.default_rng(0)
    out: dict = {}
    for i, name in enumerate(["teacher", *methods]):
        per_seed = {}
        for s in seeds:
            values = {m: float(rng.uniform(0.3, 0.9)) for m in METRIC_NAMES}
            values["mae"] = 0.5 + 0.1 * i + float(rng.normal(0, 0.05))
            per_seed[s] = values
        if name == "kd":
            per_seed[seeds[0]]["corr"] = None  # undefined for one seed: mean and std are undefined
        out[name] = _metrics_file(dataset, name, per_seed, params=1_000_000 * (i + 1),
                                  latency=(10.0 / (i + 1), 2.0 / (i + 1)))
        folder = "teacher" if name == "teacher" else f"student_{name}"
        for s in seeds:
            base = paths.curves(dataset, folder, s) / "plots" / "metrics"
            _tsv(base / "valid" / "mae.tsv", "mae", 1.0 / (np.arange(EPOCHS) + 1) + rng.uniform(0, 0.1, EPOCHS))
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


def test_paired_difference_hand_computed() -> None:
    def model(name: str, maes: list[float]) -> report.ModelMetrics:
        seeds = {s: {m: (v if m == "mae" else 0.5) for m in METRIC_NAMES} for s, v in enumerate(maes)}
        return report.ModelMetrics(name, {}, {}, seeds, {})

    d = report.paired_difference(model("kd", [0.50, 0.70, 0.60]), model("none", [0.60, 0.65, 0.70]))
    assert d.diffs == pytest.approx([-0.10, 0.05, -0.10])
    assert d.mean == pytest.approx(-0.05)
    assert d.std == pytest.approx(np.std([-0.10, 0.05, -0.10], ddof=1))
    assert d.improved == 2
    assert "on 2 of 3 seeds; mean paired difference -0.050 ± 0.087" in d.sentence()
    assert "within one standard deviation" in d.sentence()  # |−0.05| <= 0.087: said, not hidden


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


def test_missing_curves_name_the_training_stage(workdir: Path) -> None:
    make_inputs(DS, METHODS, SEEDS)
    (paths.curves(DS, "student_kd", 1) / "plots" / "metrics" / "valid" / "mae.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("run `dvc repro distill@kd`")):
        report.run(DS, METHODS, SEEDS, PARAMS)


def test_main_reads_params(project: Path) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    make_inputs(params["dataset"], params["distill"]["methods"], params["seeds"])
    report.main([])
    md = (paths.report_dir(params["dataset"]) / "report.md").read_text()
    for method in params["distill"]["methods"]:
        assert f"| {method} |" in md
