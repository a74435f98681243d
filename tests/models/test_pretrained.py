"""Tests of pipeline.models.pretrained: `distill.student.pretrained` checked before any work (tiny models
saved under tmp_path, no network), and `build_student` loading what it accepts without touching the hub."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerFast, RobertaConfig, RobertaModel

from pipeline.core.config import ConfigError, StudentParams
from pipeline.models import pretrained
from pipeline.models.pretrained import (
    DECODERS,
    ENCODER_DECODERS,
    ENCODERS,
    KEY,
    check_pretrained,
    encoder_problem,
    hub_cache,
    hub_offline,
    is_path,
    is_repo_id,
    pretrained_source,
)
from pipeline.models.students import SPECIAL_TOKENS, TextStudent, build_student, tokenize, train_bpe_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["i thought the movie was great", "honestly the acting felt awful to me", "it was okay i guess"] * 4
STUDENT = StudentParams(pretrained="", hidden_size=32, layers=1, heads=2, intermediate_size=64,
                        vocab_size=300, max_length=24, head_hidden=16, dropout=0.0, video_tokens=3, audio_tokens=5)
LOCAL_FIX = "give a folder written by save_pretrained (config.json + weights + tokenizer files), or an HF hub id"
ENCODER_FIX = "the text student needs a bidirectional encoder such as roberta, bert, deberta-v2, xlm-roberta, electra"
HUB_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME",
           "XDG_CACHE_HOME")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Every test here runs in tmp_path, online as far as the hub knows, with the network refused and
    recorded: a check or a load that tried the hub fails the test, even if the library swallowed the error."""
    calls: list[object] = []

    def refuse(*args, **kwargs):
        calls.append(args[1:] or kwargs)
        raise OSError("test: no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for name in HUB_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.chdir(tmp_path)
    yield
    assert calls == [], f"network calls: {calls}"


def go_offline(monkeypatch: pytest.MonkeyPatch, var: str = "HF_HUB_OFFLINE", value: str = "1") -> None:
    """Offline mode as a process started in it sees it: the variable, and huggingface_hub's constant (read
    once at its import, which in this process came first)."""
    import huggingface_hub.constants

    monkeypatch.setenv(var, value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def tokenizer(pad: bool = True) -> PreTrainedTokenizerFast:
    tok = train_bpe_tokenizer(TEXTS, vocab_size=300, max_length=24)
    if pad:
        return tok
    return PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, model_max_length=24,
                                   **{k: v for k, v in SPECIAL_TOKENS.items() if k != "pad_token"})


def save_roberta(folder: Path, pad: bool = True, pad_token_id: int | None = 1) -> RobertaModel:
    """A tiny RoBERTa and its BPE tokenizer, as save_pretrained writes them (pad id 1, as in RoBERTa)."""
    torch.manual_seed(0)
    tok = tokenizer(pad)
    encoder = RobertaModel(RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=40,
                                         pad_token_id=pad_token_id))
    encoder.save_pretrained(folder)
    tok.save_pretrained(folder)
    return encoder


def assert_message(err: pytest.ExceptionInfo, value: str, *fix: str) -> None:
    message = str(err.value)
    assert isinstance(err.value, ConfigError)
    assert KEY in message and repr(value) in message, message
    for part in fix:
        assert part in message, message


def student(value: str) -> tuple[TextStudent, object]:
    return build_student(dataclasses.replace(STUDENT, pretrained=value), "text", TEXTS, num_classes=7)


# --------------------------------------------------------------------------- accepted values


def test_empty_is_the_tiny_random_roberta() -> None:
    check_pretrained("")


def test_a_saved_roberta_passes_and_builds_the_student(tmp_path: Path) -> None:
    encoder = save_roberta(tmp_path / "my-roberta")
    for value in (str(tmp_path / "my-roberta"), "my-roberta", "./my-roberta"):
        check_pretrained(value)
        assert pretrained_source(value) == (value, {"local_files_only": True})
    model, tok = student("my-roberta")
    assert isinstance(model.encoder, RobertaModel) and tok.pad_token_id == 1
    for name, tensor in encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    out = model(**tokenize(tok, TEXTS[:3], STUDENT.max_length))
    assert out["reg"].shape == (3,) and out["logits"].shape == (3, 7)


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_roberta(tmp_path / "home" / "enc")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    check_pretrained("~/enc")
    assert pretrained_source("~/enc") == (str(tmp_path / "home" / "enc"), {"local_files_only": True})
    assert isinstance(student("~/enc")[0].encoder, RobertaModel)


def test_a_hub_id_online_is_left_to_distill() -> None:
    """Online, a well-formed id is accepted unchecked (it downloads at distill time), from the cache checked."""
    check_pretrained("FacebookAI/roberta-base")
    check_pretrained("roberta-base")
    assert pretrained_source("roberta-base") == (
        "roberta-base", {"local_files_only": False, "cache_dir": os.environ["HF_HUB_CACHE"]})


def test_online_hub_ids_are_checked_when_distill_loads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Online, the encoder criterion runs on the downloaded config before the weights; a hub id the hub does
    not serve (`models/roberta` in a fresh clone, with no models/ yet) is one line saying how to write a path."""
    from transformers import AutoConfig

    def gpt2(*args, **kwargs):
        return GPT2Config(n_embd=32, n_layer=1, n_head=2)

    monkeypatch.setattr(AutoConfig, "from_pretrained", gpt2)
    with pytest.raises(ConfigError) as err:
        student("openai-community/gpt2")
    assert_message(err, "openai-community/gpt2", "a gpt2 model is a decoder-only language model", ENCODER_FIX)

    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nmore lines")

    monkeypatch.setattr(AutoConfig, "from_pretrained", unreachable)
    with pytest.raises(ConfigError) as err:
        student("models/roberta")
    assert_message(err, "models/roberta", "could not be loaded from the HF hub (We couldn't connect",
                   "give an absolute path or ./models/roberta")
    assert "more lines" not in str(err.value)


def fake_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """huggingface_hub's cache layout for `repo_id` at revision main, with `source`'s files as the snapshot."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)
    return repo / "snapshots" / commit


def test_offline_hub_id_in_the_cache_passes_and_loads_from_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    save_roberta(tmp_path / "src")
    fake_cache(tmp_path / "cache", "acme/tiny-roberta", tmp_path / "src")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    go_offline(monkeypatch)
    check_pretrained("acme/tiny-roberta")
    assert pretrained_source("acme/tiny-roberta")[1] == {"local_files_only": True, "cache_dir": str(tmp_path / "cache")}
    assert isinstance(student("acme/tiny-roberta")[0].encoder, RobertaModel)


def test_missing_pad_token_comes_from_the_model_config(tmp_path: Path) -> None:
    save_roberta(tmp_path / "nopad", pad=False)
    model, tok = student("nopad")
    assert tok.pad_token == "<pad>" and tok.pad_token_id == model.encoder.config.pad_token_id == 1
    batch = tokenize(tok, ["great", "honestly the acting felt awful"], STUDENT.max_length)
    assert batch["input_ids"][0, -1].item() == 1 and batch["attention_mask"][0, -1].item() == 0


# --------------------------------------------------------------------------- refused values


@pytest.mark.parametrize("value", ["models/nothere", "./nothere", "../nothere", "~/nothere/enc", "a/b/c"])
def test_a_missing_path_fails_at_once(tmp_path: Path, value: str) -> None:
    (tmp_path / "models").mkdir()  # a project's models/ (DVC outputs): `models/x` is a path, not a hub id
    assert is_path(value)
    with pytest.raises(ConfigError) as err:
        check_pretrained(value)
    assert_message(err, value, "is not a directory (no such folder", LOCAL_FIX)
    with pytest.raises(ConfigError) as err:  # build_student too: no 90-line traceback, no hub retries
        student(value)
    assert_message(err, value, "is not a directory")


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ConfigError) as err:
        check_pretrained("weights.bin")
    assert_message(err, "weights.bin", "is not a directory (it is a file)", LOCAL_FIX)


@pytest.mark.parametrize("head", [GPT2Model, GPT2LMHeadModel])
def test_gpt2_is_refused_as_decoder_only(tmp_path: Path, head: type) -> None:
    """The issue's GPT-2: accepted silently, its student predicted a constant on 2 of 3 seeds."""
    tok = tokenizer()
    head(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=40)).save_pretrained(
        tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    for value in ("gpt2", str(tmp_path / "gpt2")):
        with pytest.raises(ConfigError) as err:
            check_pretrained(value)
        assert_message(err, value, "a gpt2 model is a decoder-only language model", ENCODER_FIX)


def test_a_roberta_without_tokenizer_files_is_named(tmp_path: Path) -> None:
    save_roberta(tmp_path / "enc")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "enc" / name).unlink()
    with pytest.raises(ConfigError) as err:
        check_pretrained("enc")
    assert_message(err, "enc", "has no tokenizer files (tokenizer.json, vocab.txt, vocab.json + merges.txt",
                   "save the tokenizer with tokenizer.save_pretrained(dir) too")
    with pytest.raises(ConfigError):
        student("enc")


def test_a_folder_without_config_or_weights_is_named(tmp_path: Path) -> None:
    tokenizer().save_pretrained(tmp_path / "tok-only")
    with pytest.raises(ConfigError) as err:
        check_pretrained("tok-only")
    assert_message(err, "tok-only", "has no config.json", LOCAL_FIX)
    save_roberta(tmp_path / "enc")
    (tmp_path / "enc" / "model.safetensors").unlink()
    with pytest.raises(ConfigError) as err:
        check_pretrained("enc")
    assert_message(err, "enc", "has no weights", "model.save_pretrained(dir)")
    (tmp_path / "enc" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError) as err:
        check_pretrained("enc")
    assert_message(err, "enc", "is not readable JSON", LOCAL_FIX)


def test_no_pad_token_anywhere_is_a_config_error(tmp_path: Path) -> None:
    save_roberta(tmp_path / "nopad", pad=False, pad_token_id=None)
    with pytest.raises(ConfigError) as err:
        student("nopad")
    assert_message(err, "nopad", "tokenizer has no pad token", "tokenizer.save_pretrained(dir)")


@pytest.mark.parametrize("value", ["acme/roberta-base", "roberta-base", "models/roberta"])
def test_offline_hub_id_not_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """`models/roberta` with no models/ folder reads as a hub id: offline it fails at once, naming both."""
    go_offline(monkeypatch)
    with pytest.raises(ConfigError) as err:
        check_pretrained(value)
    assert_message(err, value, f"is not in the HF cache {tmp_path / 'empty-hub-cache'} and offline mode is on",
                   "download it on a machine with network", "save_pretrained the model and its tokenizer to a "
                   "folder and give its path")
    assert ("no local folder either" in str(err.value)) == ("/" in value)
    with pytest.raises(ConfigError):
        student(value)


def test_offline_partial_or_decoder_cache_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    go_offline(monkeypatch, "TRANSFORMERS_OFFLINE", "yes")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    save_roberta(tmp_path / "src")
    snapshot = fake_cache(tmp_path / "cache", "acme/partial", tmp_path / "src")
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(ConfigError) as err:
        check_pretrained("acme/partial")
    assert_message(err, "acme/partial", "is only partly in the HF cache", "has no weights)",
                   "download it on a machine with network")
    snapshot = fake_cache(tmp_path / "cache", "acme/gen", tmp_path / "src")
    config = json.loads((snapshot / "config.json").read_text())
    (snapshot / "config.json").write_text(json.dumps({**config, "is_decoder": True}))
    with pytest.raises(ConfigError) as err:
        check_pretrained("acme/gen")
    assert_message(err, "acme/gen", "configured as a decoder (is_decoder: true", ENCODER_FIX)


@pytest.mark.parametrize("value", ["org/-name", "org/name.", "a--b", "a..b", "org/na me", "café", "x.git",
                                   "C:model", "x" * 97])
def test_a_malformed_hub_id_is_named(value: str) -> None:
    assert not is_path(value)
    with pytest.raises(ConfigError) as err:
        check_pretrained(value)
    assert_message(err, value, "is neither an existing folder", "nor an HF hub id", LOCAL_FIX)


# --------------------------------------------------------------------------- the criterion and the rules


@pytest.mark.parametrize(("config", "reason"), [
    ({"model_type": "roberta", "architectures": ["RobertaModel"]}, None),
    ({"model_type": "bert", "architectures": ["BertForMaskedLM"], "is_decoder": False}, None),
    ({"model_type": "deberta-v2"}, None),
    ({}, "has no model_type"),
    ({"model_type": "gpt2", "architectures": ["GPT2Model"]}, "a gpt2 model is a decoder-only language model"),
    ({"model_type": "llama"}, "a llama model is a decoder-only"),
    ({"model_type": "bart", "is_encoder_decoder": True}, "a bart model is an encoder-decoder"),
    ({"model_type": "t5"}, "a t5 model is an encoder-decoder"),
    ({"model_type": "roberta", "is_decoder": True}, "this roberta model is configured as a decoder"),
    ({"model_type": "bert", "architectures": ["BertLMHeadModel"]}, "saved as a text-generation model"),
    ({"model_type": "newthing", "architectures": ["NewThingForCausalLM"]}, "saved as a text-generation model"),
    ({"model_type": "newthing"}, "a newthing model is not one of the bidirectional encoders"),
])
def test_encoder_criterion(config: dict, reason: str | None) -> None:
    problem = encoder_problem(config)
    assert problem == reason if reason is None else reason in problem


def test_the_model_type_sets_agree_with_transformers() -> None:
    """ENCODERS are masked-LM models that are no seq2seq model and whose AutoModel takes an attention mask;
    DECODERS are causal LMs with no masked-LM model; ENCODER_DECODERS are seq2seq models."""
    import transformers
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
        MODEL_MAPPING_NAMES,
    )
    masked, causal, seq2seq = (set(m) for m in (MODEL_FOR_MASKED_LM_MAPPING_NAMES, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                 MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES))
    assert ENCODERS <= masked - seq2seq, sorted(ENCODERS - (masked - seq2seq))
    assert DECODERS <= causal - masked, sorted(DECODERS - (causal - masked))
    assert ENCODER_DECODERS <= seq2seq, sorted(ENCODER_DECODERS - seq2seq)
    assert set(pretrained.SUGGESTED) <= ENCODERS
    for model_type in sorted(ENCODERS):
        names = MODEL_MAPPING_NAMES[model_type]
        for name in (names,) if isinstance(names, str) else names:  # funnel: (FunnelModel, FunnelBaseModel)
            forward = inspect.signature(getattr(transformers, name).forward).parameters
            assert {"input_ids", "attention_mask"} <= set(forward), name


def test_repo_id_rule_is_huggingface_hubs() -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    def hub_accepts(value: str) -> bool:
        try:
            validate_repo_id(value)
        except HFValidationError:
            return False
        return True

    samples = ["roberta-base", "FacebookAI/roberta-base", "a", "a/b", "_x_/y_", "1.2-3_4", "x" * 96, "x" * 97,
               f"{'o' * 96}/{'n' * 96}", "org/-name", "-org/name", "org./name", "name.", "a--b", "a..b", "a/b/c",
               "org/na me", "café", "x.git", "C:model", "", "/abs", "org/", "/name", "a\\b"]
    assert [is_repo_id(v) for v in samples] == [hub_accepts(v) for v in samples]


def test_offline_and_cache_rules_are_huggingface_hubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hub_offline` and `hub_cache` read the environment as huggingface_hub.constants does at import."""
    cases = [{}, {"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "true"}, {"TRANSFORMERS_OFFLINE": "ON"},
             {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "1"},
             {"HF_HOME": str(tmp_path / "home")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")},
             {"HUGGINGFACE_HUB_CACHE": str(tmp_path / "legacy")}, {"HF_HUB_CACHE": "~/hub", "HF_HOME": "/h"},
             {"HF_HOME": "$HOME/hf"}]
    script = ("import importlib, json, os, sys\nimport huggingface_hub.constants as c\nout = []\n"
              "for env in json.loads(sys.argv[1]):\n"
              f"    for k in {HUB_ENV!r}: os.environ.pop(k, None)\n"
              "    os.environ.update(env); importlib.reload(c)\n"
              "    out.append([c.HF_HUB_OFFLINE, c.HF_HUB_CACHE])\nprint(json.dumps(out))")
    out = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True, text=True,
                         check=True, env={**os.environ, "HOME": str(tmp_path)})
    monkeypatch.setenv("HOME", str(tmp_path))  # `~` and `$HOME` expand from the process environment
    for env, (offline, cache) in zip(cases, json.loads(out.stdout), strict=True):
        assert hub_offline(env) is offline, env
        assert str(hub_cache({"HOME": str(tmp_path), **env})) == cache, env


def test_the_module_imports_no_torch_or_transformers() -> None:
    """The validation stage runs it before every DAG run: it must stay cheap."""
    code = ("import sys, pipeline.models.pretrained as p; p.check_pretrained(''); p.check_pretrained('roberta-base'); "
            "print('torch' in sys.modules, 'transformers' in sys.modules, 'huggingface_hub' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.split() == ["False", "False", "False"]
