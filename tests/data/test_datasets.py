"""Tests of the dataset readers and the manifest (pipeline.data.datasets)."""

from __future__ import annotations

import math
import re
import shutil
import unicodedata
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core import paths
from pipeline.core.config import ConfigError
from pipeline.data.datasets import (
    DATASETS,
    MANIFEST_COLUMNS,
    SPLITS,
    UNIMODAL_LABELS,
    read_csv_dataset,
    read_dataset,
    read_manifest,
    read_mmsa,
    write_manifest,
)
from pipeline.data.errors import DatasetError
from pipeline.data.synthetic import generate_sentiment

SPEC = DATASETS.get("synthetic_sentiment")
N_CLIPS = 12


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mmsa") / "synthetic_sentiment"
    generate_sentiment(root, n_clips=N_CLIPS, seed=0, splits={"train": 0.7, "valid": 0.15, "test": 0.15},
                       seconds=1.0, fps=4, size=32, sample_rate=16000, monte_carlo=2000)
    return root


@pytest.fixture
def root(generated: Path, tmp_path: Path) -> Path:
    """A private copy of the generated dataset that a test may break."""
    return Path(shutil.copytree(generated, tmp_path / "synthetic_sentiment"))


def _labels(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "label.csv", dtype=str, keep_default_na=False)


def _write_labels(root: Path, table: pd.DataFrame) -> None:
    table.to_csv(root / "label.csv", index=False)


# --------------------------------------------------------------------------- read_mmsa


def test_read_mmsa_manifest(root: Path) -> None:
    labels = _labels(root)
    manifest = read_mmsa(root, SPEC)
    # the synthetic label.csv has label_T/label_A/label_V: kept after the required columns
    assert tuple(manifest.columns) == (*MANIFEST_COLUMNS, *UNIMODAL_LABELS)
    for column in UNIMODAL_LABELS:
        assert manifest[column].tolist() == pytest.approx(labels[column].astype(float).tolist())
    assert len(manifest) == N_CLIPS
    assert manifest["id"].tolist() == [f"{v}$_${c}" for v, c in zip(labels["video_id"], labels["clip_id"], strict=True)]
    assert manifest["split"].tolist() == labels["mode"].tolist()
    assert manifest["text"].tolist() == labels["text"].tolist()
    assert manifest["label"].tolist() == pytest.approx(labels["label"].astype(float).tolist())
    assert manifest["video_id"].tolist() == labels["video_id"].tolist()
    assert manifest["clip_id"].tolist() == labels["clip_id"].tolist()
    for row in manifest.itertuples():
        assert Path(row.video) == root / "Raw" / row.video_id / f"{row.clip_id}.mp4"
        assert Path(row.video).is_file()
    assert set(manifest["split"]) == {"train", "valid", "test"}


def test_read_dataset_with_explicit_root(root: Path) -> None:
    spec, manifest = read_dataset("synthetic_sentiment", root)
    assert spec.name == "synthetic_sentiment" and spec.label_range == (-3.0, 3.0)
    assert len(manifest) == N_CLIPS


def test_read_dataset_unknown_name_lists_datasets() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'nope'.*csv.*mosei.*mosi.*sims.*synthetic_sentiment"):
        read_dataset("nope")


def test_ids_and_clip_ids_stay_strings(root: Path) -> None:
    labels = _labels(root)
    original = root / "Raw" / labels.loc[0, "video_id"] / f"{labels.loc[0, 'clip_id']}.mp4"
    (root / "Raw" / "007").mkdir()
    shutil.move(original, root / "Raw" / "007" / "01.mp4")  # a copy would leave an unlisted video behind
    labels.loc[0, "video_id"] = "007"
    labels.loc[0, "clip_id"] = "01"
    _write_labels(root, labels)
    manifest = read_mmsa(root, SPEC)
    assert manifest.loc[0, "id"] == "007$_$01"
    assert manifest.loc[0, "video_id"] == "007" and manifest.loc[0, "clip_id"] == "01"
    assert manifest.loc[0, "video"] == str(root / "Raw" / "007" / "01.mp4")


# --------------------------------------------------------------------------- read_mmsa errors


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "raw" / "mosi"
    with pytest.raises(DatasetError) as err:
        read_mmsa(missing, DATASETS.get("mosi"))
    message = str(err.value)
    assert str(missing) in message
    assert "ln -s" in message and "dvc add" in message


def test_missing_label_csv(root: Path) -> None:
    (root / "label.csv").unlink()
    with pytest.raises(DatasetError, match=re.escape(str(root / "label.csv")) + ".*not found"):
        read_mmsa(root, SPEC)


@pytest.mark.parametrize("drop", [["mode"], ["text", "label"]])
def test_missing_columns_are_named(root: Path, drop: list[str]) -> None:
    _write_labels(root, _labels(root).drop(columns=drop))
    with pytest.raises(DatasetError, match="missing columns") as err:
        read_mmsa(root, SPEC)
    assert str(drop) in str(err.value)


def test_missing_video_file_is_named_with_count(root: Path) -> None:
    labels = _labels(root)
    gone = root / "Raw" / labels.loc[3, "video_id"] / f"{labels.loc[3, 'clip_id']}.mp4"
    gone.unlink()
    with pytest.raises(DatasetError, match="video files missing") as err:
        read_mmsa(root, SPEC)
    assert str(gone) in str(err.value)
    assert "(1 in all)" in str(err.value)


def test_many_missing_videos_are_summarised(root: Path) -> None:
    shutil.rmtree(root / "Raw")
    with pytest.raises(DatasetError, match=rf"and {N_CLIPS - 5} more \({N_CLIPS} in all\)"):
        read_mmsa(root, SPEC)


def test_duplicate_ids(root: Path) -> None:
    labels = _labels(root)
    labels = pd.concat([labels, labels.iloc[[2]]], ignore_index=True)
    _write_labels(root, labels)
    dup = f"{labels.loc[2, 'video_id']}$_${labels.loc[2, 'clip_id']}"
    with pytest.raises(DatasetError, match="duplicate clip ids") as err:
        read_mmsa(root, SPEC)
    assert dup in str(err.value)


def test_invalid_mode(root: Path) -> None:
    labels = _labels(root)
    labels.loc[1, "mode"] = "training"
    _write_labels(root, labels)
    bad = f"{labels.loc[1, 'video_id']}$_${labels.loc[1, 'clip_id']}"
    with pytest.raises(DatasetError, match=r"split/mode must be one of \['train', 'valid', 'test'\]; "
                                           r"bad values \['training'\]") as err:
        read_mmsa(root, SPEC)
    assert bad in str(err.value)


@pytest.mark.parametrize("value", ["3.5", "-3.01", "abc", ""])
def test_label_out_of_range_or_not_a_number(root: Path, value: str) -> None:
    labels = _labels(root)
    labels.loc[4, "label"] = value
    _write_labels(root, labels)
    bad = f"{labels.loc[4, 'video_id']}$_${labels.loc[4, 'clip_id']}"
    with pytest.raises(DatasetError, match=r"labels must be numbers in \[-3.0, 3.0\]") as err:
        read_mmsa(root, SPEC)
    assert bad in str(err.value)


def test_slash_in_id(root: Path) -> None:
    labels = _labels(root)
    labels.loc[5, "clip_id"] = "a/b"
    _write_labels(root, labels)
    with pytest.raises(DatasetError, match=r"video_id and clip_id must be plain names \(.*no '/'") as err:
        read_mmsa(root, SPEC)
    assert f"{labels.loc[5, 'video_id']}$_$a/b" in str(err.value)


def test_label_bounds_are_inclusive(root: Path) -> None:
    labels = _labels(root)
    labels.loc[0, "label"], labels.loc[1, "label"] = "-3.0", "3"
    _write_labels(root, labels)
    assert read_mmsa(root, SPEC)["label"].tolist()[:2] == [-3.0, 3.0]


def test_empty_split(root: Path) -> None:
    labels = _labels(root)
    _write_labels(root, labels[labels["mode"] != "test"])
    with pytest.raises(DatasetError, match=r"splits \['test'\] have no clips"):
        read_mmsa(root, SPEC)


def test_no_clips(root: Path) -> None:
    _write_labels(root, _labels(root).iloc[:0])
    with pytest.raises(DatasetError, match="no clips"):
        read_mmsa(root, SPEC)


# --------------------------------------------------------------------------- manifest round trip


def test_manifest_round_trip(tmp_path: Path) -> None:
    manifest = pd.DataFrame({
        "id": ["007$_$1", "vid_1$_$2", "x$_$3"],
        "split": ["train", "valid", "test"],
        "label": [-2.6667, 0.0, 3.0],
        "text": ['he said "hi, there", then left', "a, b,, c\nsecond line", "NA"],
        "video": ["/data/a b/007/1.mp4", "/data/x,y/vid_1/2.mp4", "/data/z/x/3.mp4"],
        "video_id": ["007", "vid_1", "x"],
        "clip_id": ["1", "2", "3"],
        "extra": ["dropped", "dropped", "dropped"],
    })
    path = tmp_path / "prepared" / "ds" / "manifest.csv"
    write_manifest(manifest, path)
    back = read_manifest(path)
    assert tuple(back.columns) == MANIFEST_COLUMNS
    for column in ("id", "split", "text", "video", "video_id", "clip_id"):
        assert back[column].tolist() == manifest[column].tolist(), column
    assert back["label"].tolist() == manifest["label"].tolist()


def test_manifest_numeric_looking_ids_stay_strings(tmp_path: Path) -> None:
    manifest = pd.DataFrame({"id": ["007", "010"], "split": ["train", "test"], "label": [1.0, -1.0],
                             "text": ["12", ""], "video": ["a.mp4", "b.mp4"], "video_id": ["007", "010"],
                             "clip_id": ["00", "1"]})
    path = tmp_path / "manifest.csv"
    write_manifest(manifest, path)
    back = read_manifest(path)
    assert back["id"].tolist() == ["007", "010"]
    assert back["video_id"].tolist() == ["007", "010"]
    assert back["clip_id"].tolist() == ["00", "1"]
    assert back["text"].tolist() == ["12", ""]


def test_manifest_from_read_mmsa_round_trips(root: Path, tmp_path: Path) -> None:
    manifest = read_mmsa(root, SPEC)
    path = tmp_path / "m.csv"
    write_manifest(manifest, path)
    pd.testing.assert_frame_equal(read_manifest(path), manifest, check_dtype=False)


def test_read_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"not found: run `dvc repro prepare`"):
        read_manifest(tmp_path / "nope" / "manifest.csv")


def test_read_manifest_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    path.write_text("id,split,label\nx,train,1.0\n")
    with pytest.raises(DatasetError, match=r"missing columns \['text', 'video', 'video_id', 'clip_id'\]"):
        read_manifest(path)


# --------------------------------------------------------------------------- MMSA layout built by hand

# Layout validation never opens a video, so empty files with .mp4 names stand in for clips.
MOSI = DATASETS.get("mosi")
SIMS = DATASETS.get("sims")
MOSI_ROWS = [  # video_id, clip_id, text, label, mode
    ("03bSnISJMiM", "1", "it was really good", "2.4", "train"),
    ("03bSnISJMiM", "10", "not my kind of movie", "-1.8", "train"),
    ("0h-zjBukYpk", "2", "so so", "0.0", "train"),
    ("0h-zjBukYpk", "3", "a total waste of time", "-3.0", "valid"),
    ("1DmNV9C1hbY", "1", "i loved it", "3.0", "test"),
    ("1DmNV9C1hbY", "2", "", "-0.6667", "test"),
]


def make_mmsa(root: Path, rows: list[tuple[str, ...]] = MOSI_ROWS, unimodal: list[tuple[str, str, str]] | None = None,
              files: bool = True) -> Path:
    """An MMSA-layout folder: label.csv (MMSA's columns; label_T/A/V empty unless `unimodal` gives them)
    and an empty Raw/<video_id>/<clip_id>.mp4 per row."""
    table = pd.DataFrame(rows, columns=["video_id", "clip_id", "text", "label", "mode"])
    for k, column in enumerate(UNIMODAL_LABELS):
        table.insert(4 + k, column, [u[k] for u in unimodal] if unimodal else "")
    table.insert(7, "annotation", "Neutral")
    root.mkdir(parents=True, exist_ok=True)
    table.to_csv(root / "label.csv", index=False)
    if files:
        for video_id, clip_id, *_ in rows:
            (root / "Raw" / video_id).mkdir(parents=True, exist_ok=True)
            (root / "Raw" / video_id / f"{clip_id}.mp4").touch()
    return root


def _problems(err: pytest.ExceptionInfo[DatasetError]) -> list[str]:
    """The problems a DatasetError lists."""
    return err.value.problems


def test_mosi_layout_read(tmp_path: Path) -> None:
    root = make_mmsa(tmp_path / "mosi")
    spec, manifest = read_dataset("mosi", root)
    assert spec is MOSI and spec.metric_set == "mosi_mosei"
    # MMSA's MOSI label.csv has empty label_T/A/V columns: nothing to keep
    assert tuple(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["id"].tolist() == [f"{r[0]}$_${r[1]}" for r in MOSI_ROWS]
    assert manifest["split"].tolist() == [r[4] for r in MOSI_ROWS]
    assert manifest["label"].tolist() == [float(r[3]) for r in MOSI_ROWS]
    assert manifest["text"].tolist() == [r[2] for r in MOSI_ROWS]
    assert manifest["clip_id"].tolist() == ["1", "10", "2", "3", "1", "2"]
    assert manifest["video"].tolist() == [str(root / "Raw" / r[0] / f"{r[1]}.mp4") for r in MOSI_ROWS]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    rows = [*MOSI_ROWS, MOSI_ROWS[0], ("x", "1", "t", "4.5", "dev")]
    root = make_mmsa(tmp_path / "mosi", rows)
    (root / "Raw" / "0h-zjBukYpk" / "2.mp4").unlink()
    (root / "Raw" / "extra").mkdir()
    (root / "Raw" / "extra" / "9.mp4").touch()
    with pytest.raises(DatasetError) as err:
        read_mmsa(root, MOSI)
    message = str(err.value)
    assert message.startswith(f"{root / 'label.csv'}: 5 problems in the mosi dataset")
    assert "dvc repro prepare" in message
    problems = _problems(err)
    assert len(problems) == 5
    assert problems[0].startswith("duplicate clip ids ['03bSnISJMiM$_$1', '03bSnISJMiM$_$1'] (2 in all)")
    assert problems[1].startswith("split/mode must be one of ['train', 'valid', 'test']; bad values ['dev'] in "
                                  "clips ['x$_$1'] (1 in all)")
    assert problems[2].startswith("labels must be numbers in [-3.0, 3.0] for mosi; bad labels in clips "
                                  "[\"x$_$1 (label '4.5')\"] (1 in all)")
    assert problems[3].startswith(f"video files missing for ['{root / 'Raw/0h-zjBukYpk/2.mp4'}'] (1 in all)")
    assert problems[4].startswith(f"video files under Raw/ that no row of label.csv names "
                                  f"['{root / 'Raw/extra/9.mp4'}'] (1 in all)")


def test_missing_columns_do_not_hide_other_problems(tmp_path: Path) -> None:
    root = make_mmsa(tmp_path / "mosi")
    _write_labels(root, _labels(root).drop(columns=["label"]))
    (root / "Raw" / "1DmNV9C1hbY" / "1.mp4").unlink()
    with pytest.raises(DatasetError) as err:
        read_mmsa(root, MOSI)
    problems = _problems(err)
    assert len(problems) == 2
    assert problems[0].startswith("missing columns ['label']")
    assert problems[1].startswith("video files missing for") and "1DmNV9C1hbY/1.mp4" in problems[1]


def test_rows_named_by_number_without_ids(tmp_path: Path) -> None:
    root = make_mmsa(tmp_path / "mosi")
    labels = _labels(root).drop(columns=["clip_id"])
    labels.loc[1, "mode"] = "eval"
    _write_labels(root, labels)
    with pytest.raises(DatasetError) as err:
        read_mmsa(root, MOSI)
    assert "missing columns ['clip_id']" in str(err.value)
    assert "bad values ['eval'] in clips ['row 2'] (1 in all)" in str(err.value)


def test_unlisted_videos_are_named_with_count(tmp_path: Path) -> None:
    root = make_mmsa(tmp_path / "mosi")
    strays = [root / "Raw" / "03bSnISJMiM" / "11.mp4", root / "Raw" / "stray.mp4",
              root / "Raw" / "a" / "b" / "deep.MP4"]
    for path in strays:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    (root / "Raw" / "notes.txt").write_text("not a video: ignored")
    with pytest.raises(DatasetError) as err:
        read_mmsa(root, MOSI)
    (problem,) = _problems(err)
    assert problem.startswith("video files under Raw/ that no row of label.csv names")
    assert "(3 in all)" in problem and "notes.txt" not in problem
    for path in strays:
        assert str(path) in problem


@pytest.mark.parametrize(("video_id", "clip_id"), [("..", "1"), ("vid", ".."), (".", "1"), ("", "1"),
                                                   ("vid", "../../../etc/x"), ("/abs/vid", "1"), ("v\\..", "1")])
def test_paths_escaping_the_root(tmp_path: Path, video_id: str, clip_id: str) -> None:
    rows = [*MOSI_ROWS, ("ok", "1", "t", "0.5", "train")]
    root = make_mmsa(tmp_path / "mosi", rows)
    labels = _labels(root)
    labels.loc[6, "video_id"], labels.loc[6, "clip_id"] = video_id, clip_id
    _write_labels(root, labels)
    (root / "Raw" / "ok" / "1.mp4").unlink()
    with pytest.raises(DatasetError) as err:
        read_mmsa(root, MOSI)
    (problem,) = _problems(err)  # an unsafe name is never looked up on disk: no 'missing file' as well
    assert problem.startswith("video_id and clip_id must be plain names")
    assert f"{video_id}$_${clip_id}" in problem.replace("\\\\", "\\") and "(1 in all)" in problem


def test_clip_symlinked_outside_the_root(tmp_path: Path) -> None:
    root = make_mmsa(tmp_path / "mosi")
    outside = tmp_path / "elsewhere" / "clip.mp4"
    outside.parent.mkdir()
    outside.touch()
    link = root / "Raw" / "03bSnISJMiM" / "10.mp4"
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(DatasetError) as err:
        read_mmsa(root, MOSI)
    (problem,) = _problems(err)
    assert problem.startswith(f"symlinks resolving outside the dataset root {root}: ['{link} -> {outside}'] "
                              "(1 in all)")
    assert "symlink the whole dataset root instead" in problem


def test_raw_and_label_csv_symlinked_outside_the_root(tmp_path: Path) -> None:
    real = make_mmsa(tmp_path / "real")
    root = tmp_path / "mosi"
    root.mkdir()
    (root / "Raw").symlink_to(real / "Raw")
    (root / "label.csv").symlink_to(real / "label.csv")
    with pytest.raises(DatasetError) as err:
        read_mmsa(root, MOSI)
    problems = _problems(err)
    assert len(problems) == 2  # Raw/ once, not once per clip
    assert problems[0].startswith(f"label.csv resolves to {real / 'label.csv'}, outside the dataset root {root}")
    assert problems[1].startswith(f"Raw/ resolves to {real / 'Raw'}, outside the dataset root {root}")
    assert "ln -s" in problems[1]


def test_symlinked_dataset_root_works(tmp_path: Path) -> None:
    """`data/raw/mosi -> /datasets/CMU-MOSI`: the whole root may live elsewhere, even with symlinks inside it."""
    real = make_mmsa(tmp_path / "datasets" / "CMU-MOSI")
    # a clip stored once and linked (absolutely, through the real path) from where the layout expects it
    (real / "Raw" / "_store").mkdir()
    shutil.move(real / "Raw" / "03bSnISJMiM" / "1.mp4", real / "Raw" / "_store" / "blob.mp4")
    (real / "Raw" / "03bSnISJMiM" / "1.mp4").symlink_to(real / "Raw" / "_store" / "blob.mp4")
    # and a relative one
    shutil.move(real / "Raw" / "0h-zjBukYpk" / "3.mp4", real / "Raw" / "_store" / "other.mp4")
    (real / "Raw" / "0h-zjBukYpk" / "3.mp4").symlink_to(Path("..") / "_store" / "other.mp4")
    (real / "Raw" / "0h-zjBukYpk" / "loop").symlink_to(real / "Raw")  # a symlink loop does not hang the scan
    link = tmp_path / "project" / "data" / "raw" / "mosi"
    link.parent.mkdir(parents=True)
    link.symlink_to(real, target_is_directory=True)
    spec, manifest = read_dataset("mosi", link)
    assert len(manifest) == len(MOSI_ROWS)
    assert manifest["video"].tolist() == [str(link / "Raw" / r[0] / f"{r[1]}.mp4") for r in MOSI_ROWS]


def test_default_root_is_data_raw_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_mmsa(paths.raw_dir("mosei"))
    _, manifest = read_dataset("mosei")
    assert manifest["video"].iloc[0] == str(Path("data/raw/mosei/Raw/03bSnISJMiM/1.mp4"))


# --------------------------------------------------------------------------- CSV syntax, decimal commas, Unicode names

HEADER = "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode"  # make_mmsa's 9 columns
GOOD_LINES = [  # a quoted comma, a quoted line break (one row over lines 4-5) and a blank line (6) are all fine
    HEADER,
    '03bSnISJMiM,1,"it was good, really",2.4,,,,Neutral,train',
    "03bSnISJMiM,10,not my kind of movie,-1.8,,,,Neutral,train",
    '0h-zjBukYpk,2,"so\nso",0.0,,,,Neutral,train',
    "",
    "0h-zjBukYpk,3,a total waste of time,-3.0,,,,Neutral,valid",
    "1DmNV9C1hbY,1,i loved it,3.0,,,,Neutral,test",
    "1DmNV9C1hbY,2,,-0.6667,,,,Neutral,test",
]


def _nf(form: str, text: str) -> str:
    return unicodedata.normalize(form, text)


def test_field_count_is_one_problem_naming_the_lines(tmp_path: Path) -> None:
    root = make_mmsa(tmp_path / "mosi")
    lines = list(GOOD_LINES)
    lines[2] = "03bSnISJMiM,10,not my kind, of movie,-1.8,,,,Neutral,train"  # line 3: an unquoted comma, 10 fields
    lines[5] = "0h-zjBukYpk,3,a total waste of time,-3.0,,,,Neutral"  # line 7 (after the 2-line row, the blank): 8
    (root / "label.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as err:
        read_dataset("mosi", root)
    message = str(err.value)
    assert message.startswith(f"{root / 'label.csv'}: rows with another number of fields") and "\n" not in message
    (problem,) = _problems(err)  # alone: no bad modes, labels or missing videos from the shifted columns
    assert problem.startswith("rows with another number of fields than the header's 9: "
                              "['line 3: 10 fields', 'line 7: 8 fields'] (2 in all); quote text that contains commas "
                              '("like, this"), as the csv module / pandas write it')
    assert "decimal" not in problem

    (root / "label.csv").write_text("\n".join(GOOD_LINES) + "\n")  # the same rows, well formed, read as before
    _, manifest = read_dataset("mosi", root)
    assert manifest["text"].tolist()[:3] == ["it was good, really", "not my kind of movie", "so\nso"]
    assert manifest["split"].tolist() == [r[4] for r in MOSI_ROWS]


def test_prepare_prints_the_field_count_problem_as_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Through the command DVC runs (`python -m pipeline.prepare`'s entry point): one line, exit code 2."""
    from conftest import small_params, write_project

    from pipeline import prepare
    from pipeline.core.runtime import entry_point

    params = small_params()
    params["dataset"] = "mosi"
    project = write_project(tmp_path / "project", params)
    root = make_mmsa(project / "data" / "raw" / "mosi")
    lines = list(GOOD_LINES)
    lines[2] = "03bSnISJMiM,10,not my kind, of movie,-1.8,,,,Neutral,train"
    (root / "label.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(project)
    monkeypatch.delenv("MMDISTILL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as done:
        entry_point(prepare.main, [])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert done.value.code == 2 and len(errors) == 1
    assert errors[0].startswith("error: data/raw/mosi/label.csv: rows with another number of fields than the "
                                "header's 9: ['line 3: 10 fields'] (1 in all); quote text that contains commas")


def test_field_count_shows_five_lines_and_the_count(tmp_path: Path) -> None:
    root = make_mmsa(tmp_path / "mosi", [(f"v{i}", "1", "good, bad", "1.0", SPLITS[i % 3]) for i in range(7)])
    read_dataset("mosi", root)  # pandas quoted "good, bad": fine; unquoted on every row, it is not
    (root / "label.csv").write_text((root / "label.csv").read_text().replace('"good, bad"', "good, bad"))
    with pytest.raises(DatasetError) as err:
        read_dataset("mosi", root)
    (problem,) = _problems(err)
    assert "['line 2: 10 fields', 'line 3: 10 fields', 'line 4: 10 fields', 'line 5: 10 fields', " \
           "'line 6: 10 fields'] and 2 more (7 in all)" in problem


def test_field_count_points_out_a_decimal_comma(tmp_path: Path) -> None:
    root = make_mmsa(tmp_path / "mosi")
    lines = list(GOOD_LINES)
    lines[2] = "03bSnISJMiM,10,not my kind of movie,0,5,,,,Neutral,train"
    (root / "label.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as err:
        read_dataset("mosi", root)
    (problem,) = _problems(err)
    assert "['line 3: 10 fields'] (1 in all)" in problem
    assert problem.endswith("; a decimal comma in the label? write 0.5, not 0,5")


def test_quoted_decimal_comma_label_is_pointed_out(tmp_path: Path) -> None:
    root = make_mmsa(tmp_path / "mosi", [(*r[:3], "-0,5" if i == 1 else r[3], r[4]) for i, r in enumerate(MOSI_ROWS)])
    assert '"-0,5"' in (root / "label.csv").read_text()  # quoted by pandas: the field count is right
    with pytest.raises(DatasetError) as err:
        read_dataset("mosi", root)
    (problem,) = _problems(err)
    assert problem.startswith("labels must be numbers in [-3.0, 3.0] for mosi; bad labels in clips [\"03bSnISJMiM$_$10 "
                              "(label '-0,5': looks like a decimal comma: write -0.5)\"] (1 in all)")


@pytest.mark.parametrize(("csv_form", "disk_form"), [("NFC", "NFD"), ("NFD", "NFC")])
def test_names_are_compared_in_nfc(tmp_path: Path, csv_form: str, disk_form: str) -> None:
    """macOS writes file names in NFD; label.csv mostly holds NFC. Linux keeps both spellings as given."""
    video, clip = "vidéo_Ångström", "clé"
    rows = [*MOSI_ROWS, (_nf(csv_form, video), _nf(csv_form, clip), "t", "1.0", "test")]
    root = make_mmsa(tmp_path / "mosi", rows[:-1])
    on_disk = root / "Raw" / _nf(disk_form, video) / f"{_nf(disk_form, clip)}.mp4"
    on_disk.parent.mkdir()
    on_disk.touch()
    make_mmsa(root, rows, files=False)  # label.csv with the last row too
    assert _nf(disk_form, video) in {p.name for p in (root / "Raw").iterdir()}
    assert _nf(csv_form, video) not in {p.name for p in (root / "Raw").iterdir()}  # the spellings differ on disk
    _, manifest = read_dataset("mosi", root)
    last = manifest.iloc[-1]
    assert last["id"] == f"{_nf('NFC', video)}$_${_nf('NFC', clip)}"
    assert (last["video_id"], last["clip_id"]) == (_nf("NFC", video), _nf("NFC", clip))
    assert last["video"] == str(on_disk) and Path(last["video"]).is_file()  # the spelling later stages can open


def test_duplicate_ids_are_found_after_nfc(tmp_path: Path) -> None:
    rows = [*MOSI_ROWS, ("vid", _nf("NFC", "é"), "t", "1.0", "test"), ("vid", _nf("NFD", "é"), "t", "1.0", "test")]
    root = make_mmsa(tmp_path / "mosi", rows[:-1])
    make_mmsa(root, rows, files=False)
    with pytest.raises(DatasetError) as err:
        read_dataset("mosi", root)
    (problem,) = _problems(err)
    assert problem.startswith(f"duplicate clip ids ['vid$_${_nf('NFC', 'é')}', 'vid$_${_nf('NFC', 'é')}'] (2 in all)")


# --------------------------------------------------------------------------- CH-SIMS

SIMS_ROWS = [
    ("video_0001", "0001", "我很喜欢", "0.8", "train"),
    ("video_0001", "0002", "还行吧", "-0.1", "train"),
    ("video_0002", "0001", "太差了", "-1.0", "valid"),
    ("video_0003", "0001", "一般", "0.0", "test"),
    ("video_0003", "0002", "非常好", "1.0", "test"),
]
SIMS_UNIMODAL = [("1.0", "0.6", "0.8"), ("0.2", "-0.4", "-0.2"), ("-1.0", "-0.8", "-1.0"), ("0.0", "", "0.2"),
                 ("1.0", "1.0", "0.6")]


def test_sims_read_keeps_unimodal_labels(tmp_path: Path) -> None:
    root = make_mmsa(tmp_path / "sims", SIMS_ROWS, SIMS_UNIMODAL)
    spec, manifest = read_dataset("sims", root)
    assert spec is SIMS and spec.label_range == (-1.0, 1.0) and spec.metric_set == "sims"
    assert tuple(manifest.columns) == (*MANIFEST_COLUMNS, "label_T", "label_A", "label_V")
    assert manifest["label"].tolist() == [0.8, -0.1, -1.0, 0.0, 1.0]
    assert manifest["text"].tolist() == [r[2] for r in SIMS_ROWS]
    assert manifest["label_T"].tolist() == [1.0, 0.2, -1.0, 0.0, 1.0]
    assert manifest["label_V"].tolist() == [0.8, -0.2, -1.0, 0.2, 0.6]
    assert manifest["label_A"].tolist()[:3] == [0.6, -0.4, -0.8] and math.isnan(manifest["label_A"][3])
    # ids stay strings with their leading zeros
    assert manifest["id"].tolist()[0] == "video_0001$_$0001" and manifest["clip_id"].tolist()[0] == "0001"
    path = tmp_path / "manifest.csv"
    write_manifest(manifest, path)
    pd.testing.assert_frame_equal(read_manifest(path), manifest, check_dtype=False)


@pytest.mark.parametrize(("column", "value", "match"), [
    ("label", "1.5", r"labels must be numbers in \[-1.0, 1.0\] for sims; bad labels in clips "
                     r"\[\"video_0002\$_\$0001 \(label '1.5'\)\"\] \(1 in all\)"),
    ("label", "-1.01", r"labels must be numbers in \[-1.0, 1.0\]"),
    ("label_A", "2", r"label_A values must be numbers in \[-1.0, 1.0\] for sims; bad values in clips "
                     r"\[\"video_0002\$_\$0001 \(label_A '2'\)\"\]"),
    ("label_T", "n/a", r"label_T values must be numbers in \[-1.0, 1.0\]"),
])
def test_sims_label_range(tmp_path: Path, column: str, value: str, match: str) -> None:
    root = make_mmsa(tmp_path / "sims", SIMS_ROWS, SIMS_UNIMODAL)
    labels = _labels(root)
    labels.loc[2, column] = value
    _write_labels(root, labels)
    with pytest.raises(DatasetError, match=match):
        read_mmsa(root, SIMS)


def test_sims_range_is_not_mosi_range(tmp_path: Path) -> None:
    rows = [(*r[:3], "2.5", r[4]) if i == 0 else r for i, r in enumerate(MOSI_ROWS)]
    root = make_mmsa(tmp_path / "ds", rows)
    assert read_mmsa(root, MOSI)["label"].iloc[0] == 2.5
    with pytest.raises(DatasetError, match=r"\[-1.0, 1.0\] for sims"):
        read_mmsa(root, SIMS)


# --------------------------------------------------------------------------- csv dataset

CSV = DATASETS.get("csv")


def make_csv(root: Path, **changes: list) -> Path:
    """data/raw/csv/manifest.csv with a relative and an absolute video path, an audio column, labels beyond ±3."""
    root.mkdir(parents=True, exist_ok=True)
    elsewhere = root.parent.resolve() / "shared_videos"
    elsewhere.mkdir(exist_ok=True)
    for path in (root / "clips" / "a.mp4", root / "clips" / "b.mp4", elsewhere / "c.mp4", root / "d.mp4",
                 root / "audio" / "a.wav", root / "audio" / "d.wav"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    table = {"id": ["a", "b", "007", "d"], "split": ["train", "train", "valid", "test"],
             "label": ["7.5", "-12", "0", "0.25"], "text": ["first, clip", "", "third", "fourth"],
             "video": ["clips/a.mp4", "clips/b.mp4", str(elsewhere / "c.mp4"), "d.mp4"],
             "audio": ["audio/a.wav", "", "", str(root.resolve() / "audio" / "d.wav")]}
    table.update(changes)
    pd.DataFrame({k: v for k, v in table.items() if v is not None}).to_csv(root / "manifest.csv", index=False)
    return root


def test_csv_dataset_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = make_csv(paths.raw_dir("csv"))
    assert root == Path("data/raw/csv")
    spec, manifest = read_dataset("csv")
    assert spec is CSV and spec.layout == "csv"
    assert tuple(manifest.columns) == (*MANIFEST_COLUMNS, "audio")
    assert manifest["id"].tolist() == ["a", "b", "007", "d"]
    assert manifest["label"].tolist() == [7.5, -12.0, 0.0, 0.25]  # any finite number
    assert manifest["text"].tolist() == ["first, clip", "", "third", "fourth"]
    assert manifest["video"].tolist() == ["data/raw/csv/clips/a.mp4", "data/raw/csv/clips/b.mp4",
                                          str(tmp_path / "data/raw/shared_videos/c.mp4"), "data/raw/csv/d.mp4"]
    assert manifest["audio"].tolist() == ["data/raw/csv/audio/a.wav", "", "",
                                          str(tmp_path / "data/raw/csv/audio/d.wav")]
    assert manifest["video_id"].tolist() == manifest["id"].tolist() and set(manifest["clip_id"]) == {""}
    path = Path("data/prepared/csv/manifest.csv")
    write_manifest(manifest, path)
    pd.testing.assert_frame_equal(read_manifest(path), manifest, check_dtype=False)


def test_csv_without_audio_column(tmp_path: Path) -> None:
    manifest = read_csv_dataset(make_csv(tmp_path / "csv", audio=None), CSV)
    assert tuple(manifest.columns) == MANIFEST_COLUMNS


def test_csv_manifest_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "manifest.csv")) + r" not found.*'id', 'split'"):
        read_csv_dataset(tmp_path, CSV)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"split": None, "text": None}, "missing columns ['split', 'text']"),
    ({"id": ["a", "b", "a", "d"]}, "duplicate clip ids ['a', 'a'] (2 in all)"),
    ({"id": ["a", "", "c", "d"]}, "empty ids in ['row 2'] (1 in all)"),
    ({"id": ["a", "b/c", "c", "d"]}, "clip ids may not contain '/' (they name HDF5 groups): ['b/c'] (1 in all)"),
    ({"split": ["train", "training", "valid", "test"]},
     "split must be one of ['train', 'valid', 'test']; bad values ['training'] in clips ['b'] (1 in all)"),
    ({"split": ["train", "train", "valid", "valid"]}, "splits ['test'] have no clips"),
    ({"label": ["1", "inf", "nan", ""]}, "labels must be finite numbers for csv; bad labels in clips "
                                         "[\"b (label 'inf')\", \"007 (label 'nan')\", \"d (label '')\"] (3 in all)"),
    ({"label": ["1", "x", "0", "0"]}, "labels must be finite numbers for csv; bad labels in clips "
                                      "[\"b (label 'x')\"] (1 in all)"),
    ({"video": ["clips/a.mp4", "", "clips/b.mp4", "nope.mp4"]}, "empty video paths in clips ['b'] (1 in all)"),
])
def test_csv_rejected(tmp_path: Path, changes: dict, expected: str) -> None:
    root = make_csv(tmp_path / "csv", **changes)
    with pytest.raises(DatasetError) as err:
        read_csv_dataset(root, CSV)
    assert str(err.value).startswith(f"{root / 'manifest.csv'}: ")
    assert any(p.startswith(expected) for p in _problems(err)), str(err.value)


def test_csv_missing_files_are_named(tmp_path: Path) -> None:
    root = make_csv(tmp_path / "csv", video=["clips/a.mp4", "clips/nope.mp4", "/no/such/c.mp4", "d.mp4"],
                    audio=["audio/a.wav", "", "", "audio/gone.wav"])
    with pytest.raises(DatasetError) as err:
        read_csv_dataset(root, CSV)
    problems = _problems(err)
    assert len(problems) == 2
    assert problems[0].startswith(f"video files missing for ['{root / 'clips/nope.mp4'}', '/no/such/c.mp4'] "
                                  "(2 in all)")
    assert problems[1].startswith(f"audio files missing for ['{root / 'audio/gone.wav'}'] (1 in all)")


def test_csv_field_count_points_out_a_decimal_comma(tmp_path: Path) -> None:
    root = make_csv(tmp_path / "csv", audio=None)
    lines = (root / "manifest.csv").read_text().splitlines()
    assert lines[2] == "b,train,-12,,clips/b.mp4"
    lines[2] = "b,train,-12,5,,clips/b.mp4"
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as err:
        read_dataset("csv", root)
    assert str(err.value).startswith(f"{root / 'manifest.csv'}: rows with another number of fields")
    (problem,) = _problems(err)
    assert problem.startswith("rows with another number of fields than the header's 5: ['line 3: 6 fields'] "
                              "(1 in all); quote text that contains commas")
    assert problem.endswith("; a decimal comma in the label? write -12.5, not -12,5")


def test_csv_names_are_compared_in_nfc(tmp_path: Path) -> None:
    name = "clé"
    root = make_csv(tmp_path / "csv", id=["a", _nf("NFD", name), "007", "d"],
                    video=["clips/a.mp4", f"clips/{_nf('NFC', name)}.mp4", str(tmp_path / "shared_videos/c.mp4"),
                           "d.mp4"])
    on_disk = root / "clips" / f"{_nf('NFD', name)}.mp4"
    (root / "clips" / "b.mp4").rename(on_disk)
    _, manifest = read_dataset("csv", root)
    assert manifest["id"].tolist()[1] == _nf("NFC", name)
    assert manifest["video"].tolist()[1] == str(on_disk) and Path(manifest["video"][1]).is_file()
