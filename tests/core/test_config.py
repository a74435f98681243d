"""Tests of pipeline.core.config: typed, checked access to params.yaml and the name registries.

Every test writes its own params file into tmp_path, starting from a copy of the project's
params.yaml and editing the loaded YAML, so the real file is never touched.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from pipeline.core.config import (
    SECTIONS,
    ConfigError,
    DistillParams,
    TeacherParams,
    TrainParams,
    check_params,
    from_dict,
    load_section,
    load_value,
    to_dict,
)
from pipeline.core.registry import Registry

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    """The project's params.yaml as plain data (copied by each test before editing)."""
    return yaml.safe_load(REPO_PARAMS.read_text())


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def edited(base: dict[str, Any], tmp_path: Path, **edits: Any) -> Path:
    """Copy of `base` with dotted keys (`teacher__train__lr`) set, written to tmp_path."""
    data = copy.deepcopy(base)
    for dotted, value in edits.items():
        *parents, leaf = dotted.split("__")
        node = data
        for p in parents:
            node = node[p]
        node[leaf] = value
    return write(tmp_path, data)


# --------------------------------------------------------------------------- valid files


def test_full_params_file_loads_every_section(base, tmp_path):
    path = write(tmp_path, copy.deepcopy(base))
    for name, cls in SECTIONS.items():
        assert isinstance(load_section(name, path), cls)
    assert load_value("seeds", path) == [0, 1, 2]
    assert isinstance(load_value("dataset", path), str)


def test_values_are_typed_and_nested(base, tmp_path):
    path = edited(base, tmp_path, seeds=[7], dataset="mosi", teacher__layers=3, teacher__train__lr=0.25,
                  teacher__train__epochs=11, distill__videoadviser__weight=2, distill__students=["va-none"])
    assert load_value("seeds", path) == [7]
    assert load_value("dataset", path) == "mosi"
    teacher = load_section("teacher", path)
    assert teacher.layers == 3
    assert isinstance(teacher.train, TrainParams)
    assert teacher.train.lr == 0.25 and teacher.train.epochs == 11
    distill = load_section("distill", path)
    assert isinstance(distill, DistillParams)
    assert distill.students == ["va-none"]
    # an int given where a float is expected is widened to float
    assert distill.videoadviser.weight == 2.0 and type(distill.videoadviser.weight) is float


def test_generate_dict_field(base, tmp_path):
    path = edited(base, tmp_path, generate__synthetic_sentiment__splits={"train": 0.5, "valid": "0.25", "test": 0.25})
    assert load_section("generate", path).synthetic_sentiment.splits == {"train": 0.5, "valid": 0.25, "test": 0.25}
    path = edited(base, tmp_path, generate__synthetic_sentiment__splits={"train": 0.5, "test": 0.25})
    with pytest.raises(ConfigError, match=r"generate\.synthetic_sentiment\.splits: must give train, valid and test "
                                          r"fractions that sum to 1"):
        load_section("generate", path)
    path = edited(base, tmp_path, generate__synthetic_sentiment__splits={"train": "lots"})
    with pytest.raises(ConfigError, match=r"generate\.synthetic_sentiment\.splits\.train: expected float, got 'lots'"):
        load_section("generate", path)


@pytest.mark.parametrize(("key", "value", "message"), [("cues", [3, 2], "cues: must be \\[min, max\\]"),
                                                        ("cues", [2], "cues"), ("monte_carlo", 1, "monte_carlo")])
def test_generate_sentiment_block_is_checked(base, tmp_path, key, value, message):
    path = edited(base, tmp_path, **{f"generate__synthetic_sentiment__{key}": value})
    with pytest.raises(ConfigError, match=f"generate.synthetic_sentiment.{message}"):
        load_section("generate", path)


def test_generate_defaults_match_the_generator(base, tmp_path):
    """params.yaml's synthetic_sentiment block describes the same process as the generator's defaults."""
    from pipeline.data.synthetic import DEFAULT_MONTE_CARLO, DEFAULT_PROCESS, sentiment_process

    block = load_section("generate", write(tmp_path, copy.deepcopy(base))).synthetic_sentiment
    process = sentiment_process(annotators=block.annotators, irony=block.irony, cues=tuple(block.cues),
                                tau=block.noise.text, video=block.noise.video, audio=block.noise.audio,
                                annotator=block.noise.annotator)
    assert process == DEFAULT_PROCESS and block.monte_carlo == DEFAULT_MONTE_CARLO


def test_to_dict_round_trip(base, tmp_path):
    path = write(tmp_path, copy.deepcopy(base))
    teacher = load_section("teacher", path)
    assert from_dict(TeacherParams, to_dict(teacher), where="teacher") == teacher


def test_yaml_1e_minus_3_string_is_accepted_as_float(base, tmp_path):
    # YAML 1.1 (PyYAML) reads `1e-3` (no dot) as a string: the loader must accept it for a float.
    text = yaml.safe_dump(copy.deepcopy(base), sort_keys=False)
    assert "lr: 0.001" in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("lr: 0.001", "lr: 1e-3"))
    assert yaml.safe_load(path.read_text())["teacher"]["train"]["lr"] == "1e-3"  # the premise
    lr = load_section("teacher", path).train.lr
    assert type(lr) is float and lr == 0.001


def test_non_numeric_string_rejected_for_float(base, tmp_path):
    path = edited(base, tmp_path, teacher__train__lr="fast")
    with pytest.raises(ConfigError, match=r"teacher\.train\.lr: expected float, got 'fast'"):
        load_section("teacher", path)


# --------------------------------------------------------------------------- key errors


def test_unknown_key_rejected_listing_valid_keys(base, tmp_path):
    path = edited(base, tmp_path, teacher__lrr=0.1)
    with pytest.raises(ConfigError, match=r"teacher: unknown key \['lrr'\]\. Valid keys") as err:
        load_section("teacher", path)
    valid = sorted(f for f in TeacherParams.__dataclass_fields__)
    assert f"Valid keys: {valid}" in str(err.value)
    assert "'ce_weight'" in str(err.value) and "'step1_hidden'" in str(err.value)


def test_unknown_nested_key_rejected_with_dotted_location(base, tmp_path):
    path = edited(base, tmp_path, teacher__train__lrr=0.1)
    with pytest.raises(ConfigError, match=r"teacher\.train: unknown key \['lrr'\]\. 'lrr': did you mean 'lr'\? "
                                          r"Valid keys: "
                                          r"\['batch_size', 'checkpoint_every', 'device', 'epochs', 'grad_accum', "
                                          r"'lr', 'min_epochs', 'patience', 'precision', 'warmup', "
                                          r"'weight_decay'\]"):
        load_section("teacher", path)


def test_missing_key_rejected_naming_it(base, tmp_path):
    data = copy.deepcopy(base)
    del data["teacher"]["ce_weight"]
    path = write(tmp_path, data)
    with pytest.raises(ConfigError, match=r"teacher: missing keys \['ce_weight'\]"):
        load_section("teacher", path)


def test_missing_nested_key_rejected_naming_it(base, tmp_path):
    data = copy.deepcopy(base)
    del data["distill"]["videoadviser"]["distance"]
    path = write(tmp_path, data)
    with pytest.raises(ConfigError, match=r"distill\.videoadviser: missing keys \['distance'\]"):
        load_section("distill", path)


def test_missing_section_and_top_level_value(base, tmp_path):
    data = copy.deepcopy(base)
    del data["evaluate"], data["seeds"]
    path = write(tmp_path, data)
    with pytest.raises(ConfigError, match=r"section 'evaluate' is missing"):
        load_section("evaluate", path)
    with pytest.raises(ConfigError, match=r"top-level key 'seeds' is missing"):
        load_value("seeds", path)


def test_section_that_is_not_a_mapping(base, tmp_path):
    path = edited(base, tmp_path, evaluate=[1, 2])
    with pytest.raises(ConfigError, match=r"evaluate: expected a mapping, got \[1, 2\]"):
        load_section("evaluate", path)


# --------------------------------------------------------------------------- type errors


@pytest.mark.parametrize(
    ("section", "edit", "message"),
    [
        ("teacher", {"teacher__layers": "two"}, r"teacher\.layers: expected int, got 'two'"),
        ("teacher", {"teacher__train__epochs": True}, r"teacher\.train\.epochs: expected int, got True"),
        ("distill", {"distill__student__layers": 2.5}, r"distill\.student\.layers: expected int, got 2\.5"),
        ("teacher", {"teacher__dropout": False}, r"teacher\.dropout: expected float, got False"),
    ],
    ids=["string-for-int", "bool-for-int", "float-for-int", "bool-for-float"],
)
def test_wrong_type_names_the_dotted_key(base, tmp_path, section, edit, message):
    path = edited(base, tmp_path, **edit)
    with pytest.raises(ConfigError, match=message):
        load_section(section, path)


def test_wrong_list_items_name_their_index(base, tmp_path):
    path = edited(base, tmp_path, distill__students=["va-none", 3])
    with pytest.raises(ConfigError, match=r"distill\.students\[1\]: unknown value 3\. Available: \['va-none'"):
        load_section("distill", path)
    path = edited(base, tmp_path, floor__grid=[0.1, "big"])
    with pytest.raises(ConfigError, match=r"floor\.grid\[1\]: expected float, got 'big'"):
        load_section("floor", path)
    path = edited(base, tmp_path, distill__students="va-none")
    with pytest.raises(ConfigError, match=r"distill\.students: expected a list, got 'va-none'"):
        load_section("distill", path)


def test_top_level_value_type(base, tmp_path):
    path = edited(base, tmp_path, seeds=["zero"])
    with pytest.raises(ConfigError, match=r"seeds\[0\]: expected int, got 'zero'"):
        load_value("seeds", path)


@pytest.mark.parametrize("seeds", [[], [1, 1]], ids=["empty", "repeated"])
def test_seeds_must_be_distinct_and_present(base, tmp_path, seeds):
    path = edited(base, tmp_path, seeds=seeds)
    with pytest.raises(ConfigError, match=r"seeds must be a non-empty list of distinct integers"):
        check_params(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"distill__train__grad_accum": 0}, r"distill\.train\.grad_accum: must be >= 1, got 0"),
        ({"teacher__train__precision": "fp8"}, r"train\.precision: unknown value 'fp8'"),
        ({"distill__msd__meta_split": "test"}, r"distill\.msd\.meta_split: unknown value 'test'"),
        ({"teacher__modality_dropout": 1.0}, r"teacher\.modality_dropout: must be in \[0, 1\), got 1\.0"),
        ({"distill__train__patience": -1}, r"distill\.train\.patience: must be >= 0, got -1"),
        ({"distill__msd__distance": "cosine"}, r"distill\.msd\.distance: unknown value 'cosine'"),
        ({"teacher__saliency": "grad"}, r"teacher\.saliency: unknown value 'grad'"),
    ],
    ids=["grad-accum", "precision", "meta-split", "modality-dropout", "patience", "msd-distance", "saliency"],
)
def test_choices_of_issue_4_params(base, tmp_path, edit, message):
    path = edited(base, tmp_path, **edit)
    with pytest.raises(ConfigError, match=message):
        check_params(path)


# --------------------------------------------------------------------------- names


def test_unknown_top_level_key(base, tmp_path):
    path = edited(base, tmp_path, teachr={"layers": 1})
    with pytest.raises(ConfigError, match=r"top level: unknown key \['teachr'\]\. 'teachr': did you mean "
                                          r"'teacher'\? Valid keys: ") as err:
        load_section("teacher", path)
    assert "'teacher'" in str(err.value) and "'seeds'" in str(err.value)
    with pytest.raises(ConfigError, match=r"top level: unknown key \['teachr'\]"):
        load_value("seeds", path)


def test_unknown_section_name(base, tmp_path):
    path = write(tmp_path, copy.deepcopy(base))
    with pytest.raises(ConfigError, match=r"unknown params section 'teachr'\. Available: ") as err:
        load_section("teachr", path)
    assert str(sorted(SECTIONS)) in str(err.value)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match=r"not found"):
        load_section("teacher", tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- choices


@pytest.mark.parametrize(
    ("section", "edit", "where", "choices"),
    [
        ("teacher", {"teacher__mask": "foo"}, "teacher.mask", "['zeros', 'learned']"),
        ("teacher", {"teacher__schedule": "three_phase"}, "teacher.schedule", "['joint', 'two_phase']"),
        ("distill", {"distill__videoadviser__distance": "cosine"}, "distill.videoadviser.distance",
         "['l1', 'mse', 'smooth_l1']"),
    ],
)
def test_invalid_choice_lists_choices(base, tmp_path, section, edit, where, choices):
    path = edited(base, tmp_path, **edit)
    value = next(iter(edit.values()))
    with pytest.raises(ConfigError) as err:
        load_section(section, path)
    message = str(err.value)
    assert message.startswith(f"{where}: unknown value {value!r}")
    assert f"Available: {choices}" in message


@pytest.mark.parametrize("mask", ["zeros", "learned"])
def test_valid_choices_accepted(base, tmp_path, mask):
    path = edited(base, tmp_path, teacher__mask=mask, teacher__schedule="two_phase")
    teacher = load_section("teacher", path)
    assert (teacher.mask, teacher.schedule) == (mask, "two_phase")


# --------------------------------------------------------------------------- registry


def test_registry_get_unknown_lists_available_names():
    reg: Registry[int] = Registry("widget")
    reg.add("beta", 2)
    reg.register("alpha")(1)
    assert reg.get("alpha") == 1 and reg.get("beta") == 2
    assert reg.names() == ["alpha", "beta"] and list(reg) == ["alpha", "beta"]
    assert "alpha" in reg and "gamma" not in reg
    with pytest.raises(ConfigError, match=r"unknown widget 'gamma'\. Available: \['alpha', 'beta'\]"):
        reg.get("gamma")
    with pytest.raises(ConfigError, match=r"unknown widget 'alpah'\. Did you mean 'alpha'\? Available: "):
        reg.get("alpah")


def test_registry_duplicate_raises():
    reg: Registry[object] = Registry("widget")

    @reg.register("a")
    def a() -> None:  # pragma: no cover - never called
        pass

    with pytest.raises(ValueError, match=r"widget 'a' is registered twice"):
        reg.add("a", object())
    with pytest.raises(ValueError, match=r"widget 'a' is registered twice"):
        reg.register("a")(object())
    assert reg.get("a") is a  # the first registration survives


# --------------------------------------------------------------------------- check_params


def test_check_params_accepts_the_project_params() -> None:
    check_params(REPO_PARAMS)


@pytest.mark.parametrize(
    ("edits", "error", "message"),
    [
        ({"dataset": "mosii"}, ConfigError,
         r"dataset: unknown value 'mosii'. Did you mean 'mosi'\? Available: \['synthetic_sentiment', "
         r"'synthetic_av', 'mosi', 'mosei', 'sims', 'csv', 'vegas', 'vegas_features'\]"),
        ({"distill__students": ["va-none", "va-fitnets"]}, ConfigError,
         r"distill.students\[1\]: unknown value 'va-fitnets'. Available: \['va-none', 'va-kd', "
         r"'va-self', 'va-videoadviser', 'msd-none', 'msd-kd', 'msd-uniform', 'msd-population', 'msd-instance', "
         r"'msd-learned'\]"),
        ({"distill__students": ["va-none", "va-none"]}, ConfigError, r"distill.students must list each student once"),
        ({"teacher__train__epochs": "many"}, ConfigError, r"teacher.train.epochs: expected int"),
    ],
)
def test_check_params_fails_on_any_bad_name(base, tmp_path, edits, error, message) -> None:
    """A bad name anywhere fails whichever stage runs first, before it does any work."""
    with pytest.raises(error, match=message):
        check_params(edited(base, tmp_path, **edits))


def test_choices_declared_in_config_match_the_implementations() -> None:
    """config declares the closed choices it checks (so that loading params imports no torch); the modules
    that implement them must offer exactly those."""
    import torch

    from pipeline.core import config
    from pipeline.data.datasets import DATASETS
    from pipeline.distillation import families, losses, msd
    from pipeline.features import media
    from pipeline.tasks import retrieval
    from pipeline.training.loop import AMP_DTYPES

    assert config.DISTANCES == tuple(losses.DISTANCES.names())
    assert set(families.WEIGHTINGS) == set(msd.WEIGHTINGS.names())
    assert set(get_args(config.DatasetName)) == set(DATASETS.names())
    assert list(get_args(config.StudentName)) == families.all_students()
    assert get_args(config.Backend) == media.BACKENDS and get_args(config.Sampling) == media.SAMPLINGS
    assert set(get_args(config.Precision)) == {"fp32", *AMP_DTYPES}
    emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    outputs = {"audio_emb": emb, "visual_emb": emb.flip(0), "audio_logits": torch.randn(4, 2),
               "visual_logits": torch.randn(4, 2)}
    for objective in config.OBJECTIVES:  # every declared objective is implemented
        assert torch.isfinite(retrieval.retrieval_loss(outputs, torch.tensor([0, 1, 0, 1]), objective)["loss"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"distill__train__lr": -1}, r"distill\.train\.lr: must be > 0, got -1\.0"),
        ({"teacher__train__epochs": 0}, r"teacher\.train\.epochs: must be >= 1, got 0"),
        ({"teacher__train__device": "gpu"}, r"teacher\.train\.device: unknown device 'gpu'; expected auto, cpu, cuda"),
        ({"evaluate__device": "cuda:x"}, r"evaluate\.device: unknown device 'cuda:x'"),
        ({"extract__max_failure_ratio": 1.5}, r"extract\.max_failure_ratio: must be in \[0, 1\], got 1\.5"),
        ({"extract__audio__fmax": 9000.0}, r"extract\.audio\.fmax: need fmin < fmax <= sample_rate / 2"),
        ({"extract__text__templates": ["no slot"]}, r"extract\.text\.templates: every template must contain '\{\}'"),
        ({"distill__kd__temperature": float("inf")}, r"distill\.kd\.temperature: must be a finite number"),
        ({"distill__student__hidden_size": 63}, r"distill\.student\.heads: the tiny RoBERTa needs hidden_size "
                                                 r"divisible by heads"),
        ({"report__resamples": 10}, r"report\.resamples: must be >= 100, got 10"),
        ({"seeds": [0, -1]}, r"seeds\[1\]: must be >= 0, got -1"),
        ({"generate__synthetic_sentiment__irony": 2}, r"generate\.synthetic_sentiment\.irony: must be in \[0, 1\]"),
        ({"dataset": "synthetic_av", "prepare__test_fold": 6}, r"prepare\.test_fold=6 but synthetic_av has "
                                                               r"generate\.synthetic_av\.n_folds=5 folds"),
    ],
    ids=["lr", "epochs", "device", "eval-device", "failure-ratio", "nyquist", "template", "inf", "heads", "resamples",
         "seed", "probability", "fold"],
)
def test_values_are_checked_against_their_meaning(base, tmp_path, edit, message):
    """A value of the right type but outside its meaning fails at check time, naming its key."""
    with pytest.raises(ConfigError, match=message):
        check_params(edited(base, tmp_path, **edit))


def test_every_numeric_field_declares_its_range():
    """No int or float params field is left unchecked: each is Annotated with a Range (or says why not)."""
    import dataclasses
    import typing

    from pipeline.core.config import SECTIONS

    unchecked_on_purpose = {"TeacherParams.prompt_alpha"}  # the initial residual weight: any finite value

    def walk(cls):
        for name, tp in typing.get_type_hints(cls, include_extras=True).items():
            inner = typing.get_args(tp)[0] if typing.get_origin(tp) in (list, dict) else tp
            inner = typing.get_args(tp)[1] if typing.get_origin(tp) is dict else inner
            if dataclasses.is_dataclass(inner):
                yield from walk(inner)
            elif inner in (int, float):
                yield f"{cls.__name__}.{name}"

    missing = sorted(set(f for c in SECTIONS.values() for f in walk(c)) - unchecked_on_purpose)
    assert missing == []
