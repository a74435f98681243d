"""Tests of the report stage (pipeline.report) on fake but well-formed inputs written in tmp_path: every
file evaluate, teacher, generate and distill write, with per-clip predictions constructed so that the
comparisons have known answers."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline import report
from pipeline.core import paths
from pipeline.core.config import MODALITIES, ReportParams
from pipeline.data.datasets import clip_key
from pipeline.evaluation import report as report_lib
from pipeline.evaluation import stats
from pipeline.evaluation.metrics import METRIC_NAMES, METRIC_SETS, RETRIEVAL_METRIC_NAMES
from pipeline.evaluation.retrieval_metrics import write_per_query_ap
from pipeline.features.store import write_table

DS = "mosi"  # a registered dataset (its metric set names the columns); the files are fake
RETRIEVAL_DS = "synthetic_av"  # metric set "retrieval": map_* metrics, students log valid/map
SEEDS = [0, 1, 2]
STUDENTS = ["va-none", "va-kd", "va-self", "va-videoadviser", "msd-none", "msd-learned"]
PARAMS = ReportParams(dpi=50, confidence=0.95, alpha=0.05, resamples=500, seed=0)
EPOCHS = 5
N_TEST = 60
SUBSETS = ["video+audio+text", "video+audio", "video+text", "audio+text", "video", "audio", "text"]
# per-clip |error| offsets: va-kd is clearly better than va-none, va-self is noise around it
OFFSET = {"teacher": -0.4, "teacher_self": -0.1, "floor": 0.2, "va-none": 0.0, "va-kd": -0.3, "va-self": 0.0,
          "va-videoadviser": -0.05, "msd-none": -0.2, "msd-learned": -0.2}


def _ids(n: int) -> list[str]:
    return [clip_key(f"v{i // 4:03d}", str(i % 4)) for i in range(n)]


def _efficiency(name: str, i: int) -> dict:
    timed = name not in ("teacher_self",)
    return {"params": 1_000 * (i + 1), "latency_ms_b1": 10.0 / (i + 1) if timed else None,
            "latency_ms_batched": 2.0 / (i + 1) if timed else None, "batch_size": 16, "device": "cpu",
            "inputs": "video+audio+text" if name.startswith(("teacher", "msd")) else "text"}


def _summary(per_seed: dict[str, dict[str, float]]) -> dict:
    names = list(next(iter(per_seed.values())))
    table = np.array([[np.nan if v[m] is None else v[m] for m in names] for v in per_seed.values()])
    safe = lambda a: {m: (float(x) if np.isfinite(x) else None) for m, x in zip(names, a, strict=True)}  # noqa: E731
    std = table.std(axis=0, ddof=1) if len(table) > 1 else np.full(len(names), np.nan)
    return {"mean": safe(table.mean(axis=0)), "std": safe(std), "seeds": per_seed}


def _sentiment_predictions(dataset: str, name: str, seeds: list[int], labels: np.ndarray, rng: np.random.Generator,
                           subdir: str = "") -> dict[str, dict[str, float]]:
    """Predictions y + e, |e| = 0.8 + offset + noise (random sign), written as evaluate does; their metrics."""
    per_seed = {}
    for s in seeds:
        err = np.clip(0.8 + OFFSET.get(name, 0.0) + rng.normal(0, 0.1, len(labels)), 0.01, None)
        pred = labels + err * rng.choice([-1.0, 1.0], len(labels))
        folder = paths.predictions_dir(dataset, name) / subdir
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"id": _ids(len(labels)), "label": labels, "pred": pred}).to_csv(folder / f"seed_{s}.csv",
                                                                                    index=False)
        per_seed[str(s)] = METRIC_SETS.get("mosi_mosei").compute(pred, labels)
    return per_seed


def _tsv(path: Path, metric: str, values: np.ndarray) -> None:
    """A dvclive TSV: timestamp, step, <metric>."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{1700000000000 + i}\t{i}\t{v!r}" for i, v in enumerate(values.tolist())]
    path.write_text("\n".join(["timestamp\tstep\t" + metric, *rows]) + "\n")


def _teacher_tables(dataset: str, seeds: list[int], rng: np.random.Generator, task: str) -> dict[int, dict]:
    n = 20
    split = ["train"] * 14 + ["valid"] * 3 + ["test"] * 3
    population = {}
    available = ["video", "audio", "text"] if task == "sentiment" else ["video", "audio"]
    metric = ("mae", "corr", "acc2_non0") if task == "sentiment" else ("acc", "ce")
    for s in seeds:
        sal = {m: rng.exponential(0.1 * (k + 1), n) for k, m in enumerate(MODALITIES)}
        population[s] = {m: float(sal[m][:14].mean()) for m in MODALITIES}
        subsets = {sub: {sp: {m: float(rng.uniform(0.3, 1.0)) for m in metric} for sp in ("valid", "test")}
                   for sub in SUBSETS if all(x in available for x in sub.split("+"))}
        common = {"id": [f"c{j}" for j in range(n)], "split": split, "label": rng.uniform(-3, 3, n),
                  "logits": rng.normal(size=(n, 7))}
        write_table(paths.teacher_predictions(dataset, s),
                    {**common, "reg": rng.normal(size=n), **{f"saliency_{m}": sal[m] for m in MODALITIES}},
                    config={"teacher": {"schedule": "joint", "saliency": "prediction", "modality_dropout": 0.3},
                            "seed": s, "population_saliency": population[s], "subset_metrics": subsets,
                            "modalities": available})
        own = "text" if task == "sentiment" else "video+audio"
        write_table(paths.teacher_predictions(dataset, s, "teacher_self"), {**common, "reg": rng.normal(size=n)},
                    config={"seed": s, "subset_metrics": {own: subsets[own]}, "modalities": own.split("+"),
                            "name": "teacher_self" if task == "sentiment" else "teacher"})
    return population


def make_inputs(dataset: str, students: list[str], seeds: list[int], limits: bool = True,
                teacher_curve: str | None = None) -> dict:
    """Everything report reads, in the cwd. Returns {name: metrics JSON data} and "population"."""
    ms = report_lib.metric_set(dataset)
    task = "retrieval" if ms.primary == "map_mean" else "sentiment"
    rng = np.random.default_rng(0)
    out: dict = {}
    labels = np.round(rng.uniform(-3, 3, N_TEST), 1)
    for i, name in enumerate(["teacher", "teacher_self", "floor", *students]):
        if task == "sentiment":
            data = _summary(_sentiment_predictions(dataset, name, seeds, labels, rng))
            if name == "teacher":
                data["given"] = {sub: _summary(_sentiment_predictions(dataset, name, seeds, labels, rng,
                                                                      f"given_{sub}"))
                                 for sub in SUBSETS}
        else:
            per_seed = {}
            for s in seeds:
                ap = np.clip(0.5 - OFFSET.get(name, 0.0) / 2 + rng.normal(0, 0.05, 2 * N_TEST), 0, 1)
                table = pd.DataFrame({"direction": ["a2v"] * N_TEST + ["v2a"] * N_TEST, "id": _ids(N_TEST) * 2,
                                      "label": np.tile(np.arange(N_TEST) % 10, 2), "ap": ap})
                write_per_query_ap(table, paths.predictions(dataset, name, s))
                per_seed[str(s)] = {"map_a2v": float(ap[:N_TEST].mean()), "map_v2a": float(ap[N_TEST:].mean()),
                                    "map_mean": float(ap.mean())}
            data = _summary(per_seed)
        data["efficiency"] = _efficiency(name, i)
        path = paths.metrics(dataset, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2))
        out[name] = data
        if name in ("teacher_self", "floor"):
            continue
        for s in seeds:
            base = paths.curves(dataset, report_lib.curves_name(name), s) / "plots" / "metrics"
            curve = (teacher_curve or ms.curve) if name == "teacher" else ms.curve
            _tsv(base / f"{curve}.tsv", Path(curve).name, 1.0 / (np.arange(EPOCHS) + 1) + rng.uniform(0, 0.1, EPOCHS))
            if name.startswith("msd-") and name not in ("msd-none", "msd-kd"):
                for m in MODALITIES:
                    _tsv(base / "train" / f"w_{m}.tsv", f"w_{m}", np.full(EPOCHS, 1 / 3) + rng.normal(0, 0.01, EPOCHS))
    out["population"] = _teacher_tables(dataset, seeds, rng, task)
    out["labels"] = labels
    if limits and task == "sentiment":
        oracle = {f"bayes_{sub}": labels + rng.normal(0, 0.3 + 0.1 * k, N_TEST) for k, sub in enumerate(SUBSETS)}
        table = pd.DataFrame({"video_id": [f"v{i // 4:03d}" for i in range(N_TEST)],
                              "clip_id": [str(i % 4) for i in range(N_TEST)], "mode": "test", "label": labels,
                              **oracle})
        root = paths.raw_dir(dataset)
        root.mkdir(parents=True, exist_ok=True)
        table.to_csv(root / "oracle.csv", index=False)
        test_mae = {sub: float(np.abs(oracle[f"bayes_{sub}"] - labels).mean()) for sub in SUBSETS}
        (root / "limits.json").write_text(json.dumps({
            "monte_carlo": {"n": 1000, "seed": 1}, "expected_mae": {s: {"mae": v, "se": 0.01} for s, v in
                                                                      test_mae.items()},
            "split_mae": {"test": test_mae}}))
        out["limits"] = test_mae
    return out


def _row(md: str, first_cell: str, section: str | None = None) -> list[str]:
    """The cells of the markdown table row starting with `first_cell` (within the `## section` if given)."""
    if section is not None:
        md = md.split(section, 1)[1].split("\n## ", 1)[0]
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


def _errors(name: str, seeds: list[int], subdir: str = "") -> np.ndarray:
    """(S, N) absolute errors from the written predictions."""
    rows = []
    for s in seeds:
        t = pd.read_csv(paths.predictions_dir(DS, name) / subdir / f"seed_{s}.csv", dtype={"id": str})
        rows.append(np.abs(t["pred"].to_numpy() - t["label"].to_numpy())[np.argsort(t["id"].to_numpy())])
    return np.array(rows)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One sentiment report (both families, limits) written once for the tests that only read it."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        inputs = make_inputs(DS, STUDENTS, SEEDS)
        report.run(DS, STUDENTS, SEEDS, PARAMS)
    return root, inputs


@pytest.fixture
def written(made: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict]:
    """(report.md, the inputs) of `made`, with its folder as the working directory."""
    root, inputs = made
    monkeypatch.chdir(root)
    return (paths.report_dir(DS) / "report.md").read_text(), inputs


def test_family_tables_show_mean_and_std_over_seeds(written: tuple[str, dict]) -> None:
    md, inputs = written
    assert md.startswith(f"# Report: {DS}") and "seeds: 0, 1, 2" in md
    header = _row(md, "Model", "## VideoAdviser family")
    assert header[1:9] == ["MAE", "Corr", "Acc-7", "Acc-5", "Acc-2 (has0)", "F1 (has0)", "Acc-2 (non0)", "F1 (non0)"]
    for section, names in (("## VideoAdviser family", ["va-none", "va-kd", "va-self", "va-videoadviser"]),
                           ("## MSD family", ["msd-none", "msd-learned"])):
        for name in names:
            cells = _row(md, name, section)
            for k, metric in enumerate(METRIC_NAMES, start=1):
                values = [inputs[name]["seeds"][str(s)][metric] for s in SEEDS]
                assert cells[k] == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
            assert cells[9] == f"{inputs[name]['efficiency']['params']:,}"
        for reference in ("teacher (all modalities)", "floor (linear)"):
            _row(md, reference, section)
    _row(md, "teacher_self (control: the va student's inputs)", "## VideoAdviser family")
    assert "va-none" not in md.split("## MSD family", 1)[1].split("\n## ", 1)[0]  # each family its own table


def test_comparisons_pool_seeds_per_clip_with_intervals_and_holm(written: tuple[str, dict]) -> None:
    md, _ = written
    section = "### Against `va-none`"
    scores = {n: _errors(n, SEEDS) for n in ("va-none", "va-kd", "va-self", "va-videoadviser")}
    expected = stats.compare_family(scores, "va-none", higher_is_better=False, metric="MAE", confidence=0.95,
                                    alpha=0.05, n_resamples=500, seed=0)
    assert "Holm's correction over 3 methods" in md
    for c in expected:
        cells = _row(md, f"`{c.method}`", section)
        assert cells[1] == f"{c.estimate:+.3f}".replace("-", "−")
        assert cells[1] == f"{scores[c.method].mean() - scores['va-none'].mean():+.3f}".replace("-", "−")
        assert cells[3] == (f"{c.p_value:.3f}" if c.p_value >= 0.001 else "< 0.001")
        assert f"- {c.sentence()}" in md
    kd = _row(md, "`va-kd`", section)
    assert kd[5] == "yes, better"  # 0.3 lower error on every clip: it holds
    assert _row(md, "`va-self`", section)[5] == "no"  # noise around va-none: it does not


def test_controls_self_and_floor_are_compared(written: tuple[str, dict]) -> None:
    md, _ = written
    control = stats.compare(_errors("va-videoadviser", SEEDS), _errors("va-self", SEEDS), False,
                            method="va-videoadviser", baseline="va-self", metric="MAE", n_resamples=500)
    assert f"- {control.sentence()}" in md
    floor = stats.compare(_errors("va-none", SEEDS), _errors("floor", SEEDS), False, method="va-none",
                          baseline="floor", metric="MAE", n_resamples=500)
    assert f"- {floor.sentence()}" in md and floor.holds and floor.better  # 0.2 above: the floor is beaten
    assert "## Summary" in md and control.sentence() in md.split("## Summary", 1)[1].split("\n## ", 1)[0]


def test_limits_and_the_gap_each_method_closes(written: tuple[str, dict]) -> None:
    md, inputs = written
    limit = inputs["limits"]
    assert _row(md, "text", "## Known limits")[2] == f"{limit['text']:.3f}"
    none, kd = (inputs[n]["mean"]["mae"] for n in ("va-none", "va-kd"))
    closed = (none - kd) / (none - limit["text"])
    assert _row(md, "`va-kd`", "### Against `va-none`")[6] == f"{closed * 100:+.0f} %"
    learned = inputs["msd-learned"]["mean"]["mae"]
    m_none = inputs["msd-none"]["mean"]["mae"]
    closed_mm = (m_none - learned) / (m_none - limit["video+audio+text"])
    assert _row(md, "`msd-learned`", "### Against `msd-none`")[6] == f"{closed_mm * 100:+.0f} %"
    assert _row(md, "text", "## The teacher given")[-1] == f"{limit['text']:.3f}"


def test_missing_modality_table_figure_and_comparison(written: tuple[str, dict]) -> None:
    md, inputs = written
    section = "## Missing modalities at test time"
    given = inputs["teacher"]["given"]
    for label, subset in (("teacher, video missing", "audio+text"), ("teacher, audio missing", "video+text"),
                          ("teacher, video and audio missing", "text")):
        cells = _row(md, label, section)
        assert cells[1] == subset
        assert cells[2].startswith(f"{given[subset]['mean']['mae']:.3f} ± ")
    no_video = _errors("teacher", SEEDS, "given_audio+text")
    c = stats.compare(_errors("va-kd", SEEDS), no_video, False, method="va-kd", baseline="teacher without video",
                      metric="MAE", n_resamples=500)
    assert f"- {c.sentence()}" in md
    assert _valid_png(paths.report_dir(DS) / "missing_modality.png")[0] > 100


def test_teacher_quality_given_each_subset(written: tuple[str, dict]) -> None:
    md, _ = written
    from pipeline.features.store import read_table

    values = [read_table(paths.teacher_predictions(DS, s), "teacher")[1]["subset_metrics"]["video+text"]["test"]["mae"]
              for s in SEEDS]
    assert _row(md, "video+text", "## The teacher given")[4] == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
    order = [line.split("|")[1].strip() for line in md.split("## The teacher given", 1)[1].splitlines()
             if line.startswith("| ") and not line.startswith("| Teacher given")][:7]
    assert order == SUBSETS
    assert "modality dropout p = 0.3" in md
    _row(md, "text (teacher_self, trained on it alone)", "## The teacher given")


def test_figures_are_written(written: tuple[str, dict]) -> None:
    md, _ = written
    for figure in ["efficiency.png", "saliency.png", "curves.png", "missing_modality.png", "msd_weights.png"]:
        assert f"]({figure})" in md
        width, height = _valid_png(paths.report_dir(DS) / figure)
        assert width > 100 and height > 100
    assert "Not drawn" not in md


def test_without_limits_the_report_says_nothing_about_them(workdir: Path) -> None:
    make_inputs(DS, STUDENTS, SEEDS, limits=False)
    md = report.run(DS, STUDENTS, SEEDS, PARAMS).read_text()
    assert "## Known limits" not in md and "Gap to the" not in md


def test_one_seed_shows_the_mean_alone(workdir: Path) -> None:
    inputs = make_inputs(DS, ["va-none", "va-videoadviser"], [3])
    md = report.run(DS, ["va-none", "va-videoadviser"], [3], PARAMS).read_text()
    assert _row(md, "teacher (all modalities)", "## VideoAdviser")[1] == f"{inputs['teacher']['mean']['mae']:.3f}"
    assert "x 1 seeds" in md
    assert "## MSD family" not in md and "msd_weights.png" not in md


def test_without_the_family_baseline_there_is_no_comparison(workdir: Path) -> None:
    make_inputs(DS, ["va-kd"], SEEDS)
    md = report.run(DS, ["va-kd"], SEEDS, PARAMS).read_text()
    assert "`va-none` is not among `distill.students`: no comparison in this family." in md


def test_missing_metrics_file_names_the_file_and_the_stage(workdir: Path) -> None:
    make_inputs(DS, STUDENTS, SEEDS)
    paths.metrics(DS, "va-kd").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape("metrics/mosi/va-kd.json not found: run `dvc repro "
                                                          "evaluate`")):
        report.run(DS, STUDENTS, SEEDS, PARAMS)


def test_metrics_file_without_a_seed_is_refused(workdir: Path) -> None:
    make_inputs(DS, STUDENTS, SEEDS)
    with pytest.raises(ValueError, match=r"no result for seeds \[7\].*dvc repro evaluate"):
        report.run(DS, STUDENTS, [*SEEDS, 7], PARAMS)


@pytest.mark.parametrize(("dataset", "curve"), [(DS, "mae"), (RETRIEVAL_DS, "map")])
def test_missing_curves_name_the_training_stage(workdir: Path, dataset: str, curve: str) -> None:
    make_inputs(dataset, STUDENTS, SEEDS)
    (paths.curves(dataset, "student_va-kd", 1) / "plots" / "metrics" / "valid" / f"{curve}.tsv").unlink()
    with pytest.raises(FileNotFoundError,
                       match=re.escape(f"valid/{curve}.tsv not found: run `dvc repro distill@va-kd`")):
        report.run(dataset, STUDENTS, SEEDS, PARAMS)


def test_unknown_student_is_refused(workdir: Path) -> None:
    with pytest.raises(ValueError, match="unknown student 'none'"):
        report.run(DS, ["none"], SEEDS, PARAMS)


# --------------------------------------------------------------------------- retrieval


def test_retrieval_report_compares_map_higher_is_better(workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    inputs = make_inputs(RETRIEVAL_DS, STUDENTS, SEEDS, teacher_curve="valid/ce")  # the teacher logs CE
    with caplog.at_level(logging.INFO, logger="pipeline.evaluation.report"):
        md = report.run(RETRIEVAL_DS, STUDENTS, SEEDS, PARAMS).read_text()
    header = _row(md, "Model", "## VideoAdviser family")
    assert header[1:5] == ["mAP a→v", "mAP v→a", "mAP (mean)", "Params"]
    for name in STUDENTS:
        cells = _row(md, name)
        for k, metric in enumerate(RETRIEVAL_METRIC_NAMES, start=1):
            values = [inputs[name]["seeds"][str(s)][metric] for s in SEEDS]
            assert cells[k] == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
    kd = _row(md, "`va-kd`", "### Against `va-none`")
    assert kd[0] == "`va-kd`" and kd[1].startswith("+") and kd[5] == "yes, better"  # higher mAP is better
    assert "Δ mAP vs `va-none`" in md and "MAE" not in md
    assert "## Missing modalities" not in md and "## Known limits" not in md
    assert _row(md, "video+audio", "## The teacher given")[1:3] != []
    assert "Not drawn (no `valid/map` logged): `teacher`." in md
    assert any("teacher logged no valid/map" in r.getMessage() for r in caplog.records)
    assert "predictions/synthetic_av/<name>/seed_<s>.csv" in md  # definitions


def test_main_reads_params(project: Path) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["report"].update(resamples=500, dpi=40)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    make_inputs(params["dataset"], params["distill"]["students"], params["seeds"], limits=False)
    report.main([])
    md = (paths.report_dir(params["dataset"]) / "report.md").read_text()
    for student in params["distill"]["students"]:
        assert f"| {student} |" in md
