"""Stage check, through the entry point DVC runs: each usual mistake gives one line on stderr that
names the key or file and the fix, exit code 2, and no output; a good project gives the same
output every time (so downstream stages never rerun because the check ran)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import small_params, with_edits

from pipeline import check
from pipeline.core import paths
from pipeline.core.runtime import entry_point


def _check(project: Path, capsys: pytest.CaptureFixture[str], **edits: object) -> tuple[int, str]:
    params = with_edits(small_params(), {k.replace("__", "."): v for k, v in edits.items()})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(SystemExit) as done:
        entry_point(check.main, [])
    logged = re.compile(r"\d\d:\d\d:\d\d INFO ")  # the stage log's lines (what it reads)
    return done.value.code, "".join(line for line in capsys.readouterr().err.splitlines(keepends=True)
                                    if not logged.match(line))


def test_a_good_project_passes_with_the_same_output(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(project, capsys)[0] == 0
    first = paths.CHECKED.read_bytes()
    assert _check(project, capsys, distill__train__lr=0.002)[0] == 0
    assert paths.CHECKED.read_bytes() == first


def _tiny_config(folder: Path, **config: object) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(("edits", "line"), [
    ({"dataset": "mosii"}, "error: dataset: unknown value 'mosii'. Did you mean 'mosi'? Available: ["),
    ({"dataset": "mosi"}, "error: dataset 'mosi': data/raw/mosi not found. Put CMU-MOSI"),
    ({"distill__students": ["va-none", "kdd"]},
     "error: distill.students[1]: unknown value 'kdd'. Did you mean 'va-kd' or 'msd-kd'?"),
    ({"distill__train__lr": -1}, "error: distill.train.lr: must be > 0, got -1.0"),
    ({"teacher__train__lrr": 0.1}, "error: teacher.train: unknown key ['lrr']. 'lrr': did you mean 'lr'?"),
    ({"clip__model": "ViT-B-99"}, "error: clip.model 'ViT-B-99' is not an open_clip model. Did you mean 'ViT-B-"),
    ({"distill__student__pretrained": "/no/such/roberta"},
     "error: distill.student.pretrained '/no/such/roberta' is not a directory"),
    ({"distill__student__pretrained": "GPT2"}, "error: distill.student.pretrained 'GPT2': a gpt2 model is a "
                                              "decoder-only language model; the text student needs a bidirectional "
                                              "encoder"),
], ids=["dataset-typo", "dataset-absent", "student", "lr", "key", "clip-model", "pretrained-path", "pretrained-gpt2"])
def test_each_mistake_is_one_line_naming_its_key(project: Path, capsys: pytest.CaptureFixture[str],
                                                edits: dict, line: str) -> None:
    if edits.get("distill__student__pretrained") == "GPT2":
        edits = {"distill__student__pretrained": str(_tiny_config(project / "GPT2", model_type="gpt2"))}
        line = line.replace("'GPT2'", repr(edits["distill__student__pretrained"]))
    code, err = _check(project, capsys, **edits)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith(line), err
    assert not paths.CHECKED.exists()


def test_a_real_dataset_without_its_layout_is_named(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "data" / "raw" / "mosi" / "Raw").mkdir(parents=True)
    code, err = _check(project, capsys, dataset="mosi")
    assert code == 2 and err.startswith("error: dataset 'mosi': data/raw/mosi has no label.csv. Put CMU-MOSI")


@pytest.mark.parametrize(("dataset", "edits", "line"), [
    ("vegas_features", {"extract__video__source": "media"},
     "error: extract.video.source: dataset 'vegas_features' has no clips to compute video features from; use auto "
     "(vegas_feature.h5:visual)"),
    ("mosi", {"extract__audio__source": "COVAREP.csd"},
     "error: extract.audio.source: data/raw/mosi/COVAREP.csd not found; put the feature file inside data/raw/mosi/"),
    ("mosi", {"extract__video__source": "aligned_50.pkl"},
     "error: extract.video.source: a mmsa file needs a key after ':' naming its array, one of ['audio', 'vision']"),
])
def test_a_source_that_cannot_work_is_one_line(project: Path, capsys: pytest.CaptureFixture[str], dataset: str,
                                               edits: dict, line: str) -> None:
    root = project / "data" / "raw" / dataset
    (root / "Raw").mkdir(parents=True)
    (root / ("vegas_feature.h5" if dataset == "vegas_features" else "label.csv")).write_text("")
    code, err = _check(project, capsys, dataset=dataset, **edits)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(line), err
    assert not paths.CHECKED.exists()
