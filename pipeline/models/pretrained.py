"""Cheap checks of `distill.student.pretrained`: a local save_pretrained folder, an HF hub id, or "".

`check_pretrained` runs before any work (the params validation stage calls it before every DAG run),
so this module imports neither torch nor transformers nor huggingface_hub, and makes no network call:
it reads the environment, the file system and a config.json. `build_student` calls it too, then loads
with `pretrained_source`'s arguments (`local_files_only` for a path), so a path never reaches the hub.

What the value is taken for:

- "" builds the tiny random RoBERTa: nothing to check.
- A *path* if it is absolute, starts with `.` or `~`, contains `\\` or two or more `/` (a hub id has at
  most one), exists on disk, or its first component is an existing folder (`models/roberta` in a project
  whose `models/` exists). Relative paths are relative to the working directory (the project root under
  DVC). It must be a folder written by save_pretrained: config.json, weights, tokenizer files.
- Anything else is an HF hub id, `name` or `org/name` (huggingface_hub's rule, `is_repo_id`). Online it is
  accepted here (it downloads at distill time, where the encoder criterion is checked on its config);
  in offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE) it must be in the local HF cache, complete.

The encoder criterion (`encoder_problem`), read from config.json alone: the text student pools the first
token's last hidden state over the whole transcript, so it needs a bidirectional encoder. A config is
refused when it says so itself (`is_encoder_decoder` or `is_decoder` true), when its model_type is a known
encoder-decoder or decoder-only family, when it was saved from a generation head (architectures ending in
ForCausalLM, LMHeadModel, ForConditionalGeneration, ...), and otherwise unless its model_type is in
`ENCODERS`, a list of text encoders whose AutoModel takes (input_ids, attention_mask) and whose first token
is a [CLS]/<s> summary token. The allowlist is deliberate: a GPT-2 saved as a bare GPT2Model has no flag
and no head to give it away, and an unknown model_type is better refused with the list than trained into
a constant. tests/models/test_pretrained.py keeps the three sets honest against transformers' own
auto mappings (ENCODERS within its masked-LM models and outside its seq2seq ones, and so on).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from pipeline.core.config import ConfigError

KEY = "distill.student.pretrained"

# Bidirectional text encoders (transformers model_type) the text student supports: each is a masked-LM
# model in transformers and none is a sequence-to-sequence one (tests check both).
ENCODERS: frozenset[str] = frozenset({
    "albert", "bert", "big_bird", "camembert", "convbert", "data2vec-text", "deberta", "deberta-v2",
    "distilbert", "electra", "ernie", "flaubert", "funnel", "ibert", "longformer", "megatron-bert",
    "mobilebert", "modernbert", "mpnet", "rembert", "roberta", "roberta-prelayernorm", "roformer",
    "squeezebert", "xlm-roberta", "xlm-roberta-xl",
})
SUGGESTED = ("roberta", "bert", "deberta-v2", "xlm-roberta", "electra")
# Families named in the messages (transformers' causal-LM models that are not masked-LM ones, and its
# seq2seq models); not exhaustive: anything outside ENCODERS is refused anyway.
DECODERS: frozenset[str] = frozenset({
    "bloom", "codegen", "falcon", "gemma", "gemma2", "gemma3_text", "gpt2", "gpt_bigcode", "gpt_neo",
    "gpt_neox", "gptj", "llama", "mistral", "mixtral", "modernbert-decoder", "olmo", "openai-gpt", "opt",
    "phi", "phi3", "qwen2", "qwen3", "stablelm", "xglm", "xlnet",
})
ENCODER_DECODERS: frozenset[str] = frozenset({
    "bart", "encoder-decoder", "led", "longt5", "m2m_100", "marian", "mbart", "mt5", "pegasus", "t5", "umt5",
})
GENERATION_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "ForSeq2SeqLM")

WEIGHT_GLOBS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "spm.model",
                   "sentencepiece.model", "tokenizer.model")
BPE_FILES = ("vocab.json", "merges.txt")  # a byte-level BPE (RoBERTa, GPT-2) needs both
TOKENIZER_HINT = ", ".join(TOKENIZER_FILES[:2] + (" + ".join(BPE_FILES),) + TOKENIZER_FILES[2:])

# huggingface_hub.utils.validate_repo_id: `name` or `namespace/name`, ASCII [A-Za-z0-9._-], each part 1-96
# characters not starting or ending with `-` or `.`; `is_repo_id` adds: no `--` or `..`, no `.git` ending.
REPO_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
REPO_ID = re.compile(rf"(?:{REPO_PART}/)?{REPO_PART}")
ENV_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub.constants.ENV_VARS_TRUE_VALUES

LOCAL_FIX = ("give a folder written by save_pretrained (config.json + weights + tokenizer files), "
             "or an HF hub id")
ENCODER_FIX = f"the text student needs a bidirectional encoder such as {', '.join(SUGGESTED)}"


def hub_offline(environ: Mapping[str, str] = os.environ) -> bool:
    """Offline mode as huggingface_hub reads it (HF_HUB_OFFLINE, else TRANSFORMERS_OFFLINE), read now: the
    hub's own constant is frozen when it is first imported."""
    value = environ.get("HF_HUB_OFFLINE") or environ.get("TRANSFORMERS_OFFLINE")
    return value is not None and value.upper() in ENV_TRUE


def hub_cache(environ: Mapping[str, str] = os.environ) -> Path:
    """The HF hub cache folder, by huggingface_hub.constants' rule: HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE,
    else $HF_HOME/hub, where HF_HOME defaults to $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface."""
    home = environ.get("HF_HOME") or os.path.join(
        environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    home = os.path.expandvars(os.path.expanduser(home))
    cache = environ.get("HF_HUB_CACHE") or environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def is_path(value: str) -> bool:
    """Whether `value` names a local folder rather than a hub id (the rules in the module docstring)."""
    if value.startswith((".", "~")) or "\\" in value or value.count("/") >= 2 or os.path.isabs(value):
        return True
    return os.path.exists(value) or os.path.isdir(value.split("/")[0])


def is_repo_id(value: str) -> bool:
    """huggingface_hub.utils.validate_repo_id's rule, without importing it."""
    return bool(REPO_ID.fullmatch(value)) and "--" not in value and ".." not in value and not value.endswith(".git")


def pretrained_source(value: str) -> tuple[str, dict[str, object]]:
    """What to hand `from_pretrained` for a non-empty `value`, and its keyword arguments: a path (with `~`
    expanded) is local_files_only, never looked up on the hub; a hub id is too in offline mode, and reads
    the cache `check_pretrained` checked (`hub_cache`, the hub's own default, read now)."""
    if is_path(value):
        return os.path.expanduser(value), {"local_files_only": True}
    return value, {"local_files_only": hub_offline(), "cache_dir": str(hub_cache())}


def encoder_problem(config: Mapping[str, object]) -> str | None:
    """Why a model config (config.json, or a loaded config's `to_dict()`) is not a bidirectional encoder
    the text student can use, or None when it is one. The criterion is the module docstring's."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        return "its config.json has no model_type"
    heads = [a for a in config.get("architectures") or () if isinstance(a, str) and a.endswith(GENERATION_HEADS)]
    if config.get("is_encoder_decoder") or model_type in ENCODER_DECODERS:
        return f"a {model_type} model is an encoder-decoder (sequence-to-sequence) model"
    if model_type in DECODERS:
        return f"a {model_type} model is a decoder-only language model"
    if config.get("is_decoder"):
        return f"this {model_type} model is configured as a decoder (is_decoder: true, causal attention)"
    if heads:
        return f"this {model_type} model was saved as a text-generation model ({heads[0]})"
    if model_type not in ENCODERS:
        return (f"a {model_type} model is not one of the bidirectional encoders the text student supports "
                f"({', '.join(sorted(ENCODERS))})")
    return None


def check_pretrained(value: str) -> None:
    """Raise ConfigError, naming `distill.student.pretrained`, the value and the fix, unless `value` is "",
    a usable save_pretrained folder, or a hub id (in offline mode: one complete in the HF cache).
    No torch, no transformers, no network: a stat, a listdir and a config.json read."""
    if not value:
        return
    if is_path(value):
        folder = Path(os.path.expanduser(value))
        if not folder.is_dir():
            where = "it is a file" if folder.exists() else f"no such folder, from {Path.cwd()}"
            raise ConfigError(f"{KEY} {value!r} is not a directory ({where}); {LOCAL_FIX}")
        check_model_folder(folder, value)
    elif not is_repo_id(value):
        raise ConfigError(f"{KEY} {value!r} is neither an existing folder (from {Path.cwd()}) nor an HF hub id "
                          "(`name` or `org/name`, each of letters, digits, '-', '_', '.', at most 96, not starting "
                          f"or ending with '-' or '.', no '--' or '..', no '.git' ending); {LOCAL_FIX}")
    elif hub_offline():
        check_cached(value)


def check_model_folder(folder: Path, value: str) -> None:
    """A local save_pretrained folder: config.json with a bidirectional encoder, weights, tokenizer files."""
    config = read_config(folder / "config.json", value)
    problem = encoder_problem(config)
    if problem:
        raise ConfigError(f"{KEY} {value!r}: {problem}; {ENCODER_FIX}")
    if not has_weights(folder):
        raise ConfigError(f"{KEY} {value!r} has no weights ({WEIGHT_GLOBS[0]} or {WEIGHT_GLOBS[2]}); save the "
                          "encoder with model.save_pretrained(dir)")
    if not has_tokenizer(folder):
        raise ConfigError(f"{KEY} {value!r} has no tokenizer files ({TOKENIZER_HINT}); save the tokenizer with "
                          "tokenizer.save_pretrained(dir) too")


def read_config(path: Path, value: str) -> Mapping[str, object]:
    if not path.is_file():
        raise ConfigError(f"{KEY} {value!r} has no config.json; {LOCAL_FIX}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{KEY} {value!r}: {path} is not readable JSON ({err}); {LOCAL_FIX}") from err
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ConfigError(f"{KEY} {value!r}: {path} has no model_type; {LOCAL_FIX}")
    return config


def has_weights(folder: Path) -> bool:
    return any(next(folder.glob(pattern), None) is not None for pattern in WEIGHT_GLOBS)


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES) or all(
        (folder / name).is_file() for name in BPE_FILES)


def cached_snapshot(repo_id: str, cache: Path) -> Path | None:
    """The folder `from_pretrained(repo_id)` reads offline (revision main) in huggingface_hub's cache layout,
    models--org--name/{refs/main, snapshots/<commit>/}, or None when it is not there."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    try:
        revision = ref.read_text().strip() if ref.is_file() else "main"
    except OSError:
        return None
    snapshot = repo / "snapshots" / revision
    return snapshot if snapshot.is_dir() else None


def check_cached(repo_id: str) -> None:
    """Offline mode: `repo_id` must be in the HF cache with config, weights and tokenizer, and an encoder."""
    cache = hub_cache()
    fix = (f"download it on a machine with network (`hf download {repo_id}`, or run once without "
           "HF_HUB_OFFLINE) and copy the cache, or save_pretrained the model and its tokenizer to a folder "
           "and give its path")
    snapshot = cached_snapshot(repo_id, cache)
    local = "" if "/" not in repo_id else f"; it is no local folder either (from {Path.cwd()})"
    if snapshot is None:
        raise ConfigError(f"{KEY} {repo_id!r} is not in the HF cache {cache} and offline mode is on "
                          f"(HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE){local}; {fix}")
    missing = [what for what, ok in (("config.json", (snapshot / "config.json").is_file()),
                                     ("weights", has_weights(snapshot)),
                                     ("tokenizer files", has_tokenizer(snapshot))) if not ok]
    if missing:
        raise ConfigError(f"{KEY} {repo_id!r} is only partly in the HF cache ({snapshot} has no "
                          f"{', '.join(missing)}) and offline mode is on; {fix}")
    problem = encoder_problem(read_config(snapshot / "config.json", repo_id))
    if problem:
        raise ConfigError(f"{KEY} {repo_id!r}: {problem}; {ENCODER_FIX}")
