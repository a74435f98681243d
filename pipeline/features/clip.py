"""The frozen CLIP encoder (open_clip) behind extract@video and extract@text.

`clip.model` is any open_clip model name (`ViT-B-32`, `ViT-L-14`, ..., `local-dir:/path`,
or the tiny `mmdistill-tiny` architecture shipped in `model_configs/`); `clip.pretrained`
is an open_clip pretrained tag (`openai`, `laion2b_s34b_b79k`, ...), a path to a checkpoint
file, or "" for random weights (the offline default). Tags download on first use through
open_clip's own cache; nothing here downloads anything else.

A checkpoint file (or a `local-dir:` folder's weights) is read by open_clip with `weights_only=True`,
and under core/checkpoints.py `weights_only_loads`, so that open_clip's fallback `torch.load` without
`weights_only` is weights-only too whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says; `.safetensors` files
are read as such. One holding pickled Python objects is refused (`UnsafeCheckpoint`), never unpickled:
files from other people never run code when read.

Embeddings are L2-normalised (the space CLIP's contrastive loss works in).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: config.check_params reads this module without it
    import torch

from pipeline.core.config import ConfigError, did_you_mean

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


@functools.cache
def open_clip_module():
    """open_clip, imported on first use (about 9 s with torchvision: the stages that only read cached
    features never pay it), with this project's model configs (`mmdistill-tiny`) registered."""
    import open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    return open_clip


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
    """CLIP's image recipe on uint8 tensors: bicubic resize of the short side to S, centre
    crop, scale to [0, 1], normalise. Picklable, so DataLoader workers run it."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (N, H, W, 3) -> float (N, 3, S, S)."""
        from torchvision.transforms.v2 import functional as TF

        x = frames.permute(0, 3, 1, 2)  # (N, 3, H, W)
        x = TF.resize(x, [self.image_size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        x = TF.center_crop(x, [self.image_size, self.image_size])
        x = x.float().div_(255.0)
        return TF.normalize(x, list(self.mean), list(self.std))


@dataclasses.dataclass
class FrozenClip:
    """A frozen open_clip model with batched image and text embedding."""

    model: torch.nn.Module
    tokenizer: object
    preprocess: ImagePreprocess
    device: torch.device
    precision: str = "fp32"  # fp16 | bf16: autocast on GPU; the CPU always computes in fp32

    def _autocast(self) -> torch.autocast:
        import torch

        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        enabled = self.device.type == "cuda" and dtype is not None
        return torch.autocast(device_type=self.device.type, dtype=dtype, enabled=enabled)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (N, 3, S, S) -> unit-norm embeddings (N, D) float32 on CPU."""
        import torch

        with torch.inference_mode(), self._autocast():
            z = self.model.encode_image(images.to(self.device, non_blocking=True))  # (N, D)
            return torch.nn.functional.normalize(z.float(), dim=-1).cpu()

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Strings -> unit-norm embeddings (N, D) float32 on CPU (truncated to the context length)."""
        import torch

        tokens = self.tokenizer(texts).to(self.device)  # (N, context_length)
        with torch.inference_mode(), self._autocast():
            z = self.model.encode_text(tokens)  # (N, D)
            return torch.nn.functional.normalize(z.float(), dim=-1).cpu()


SCHEMAS = ("hf-hub:", "local-dir:")  # open_clip model sources that carry their own weights
CLIP_FIX = ("give a checkpoint of tensors only (`torch.save(model.state_dict(), path)`, or a .safetensors "
            "file) and rerun `dvc repro extract`")


def model_names() -> list[str]:
    """Every model name open_clip knows (`open_clip.list_models()`: its model_configs/*.json) plus this
    project's, read from the config files without importing open_clip (and torch): the `check` stage
    runs this at every params change."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise ConfigError("open_clip is not installed: `pip install -e .` installs it")
    folders = [Path(spec.origin).parent / "model_configs", MODEL_CONFIG_DIR]
    return sorted({p.stem for folder in folders for p in folder.glob("*.json")})


def check_clip_source(model_name: str, pretrained: str) -> None:
    """Refuse an unknown model or tag (ConfigError naming clip.model or clip.pretrained and the closest
    names) before anything is built and before any download. open_clip is imported only to list the
    tags of a model given with one."""
    if model_name.startswith(SCHEMAS):
        if pretrained:
            raise ConfigError(f"clip.pretrained must be empty with clip.model {model_name!r}: "
                              f"{model_name.split(':')[0]} models carry their own weights")
        return
    available = model_names()
    if model_name.replace("/", "-") not in available:
        close = difflib.get_close_matches(model_name, available, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"clip.model {model_name!r} is not an open_clip model.{hint} ({len(available)} models: "
                          "`python -c 'import open_clip; print(open_clip.list_models())'`; or give "
                          "'local-dir:/path/to/dir' or 'hf-hub:org/repo')")
    if pretrained and not Path(pretrained).expanduser().is_file():
        if Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors") or "/" in pretrained:
            raise ConfigError(f"clip.pretrained {pretrained!r}: no such checkpoint file (relative paths start at "
                              "the project root)")
        tags = open_clip_module().list_pretrained_tags_by_model(model_name.replace("/", "-"))
        if pretrained not in tags:
            raise ConfigError(f"clip.pretrained {pretrained!r} is neither a checkpoint file nor a pretrained tag "
                              f"of {model_name!r}.{did_you_mean(pretrained, tags)} Tags: {tags}")


def load_clip(model_name: str, pretrained: str, device: torch.device, init_seed: int = 0,
              precision: str = "fp32") -> FrozenClip:
    """Build the open_clip model `model_name` with weights `pretrained` (tag, file, or "").

    With no weights (pretrained "" and a plain model name) the random init is drawn from
    `init_seed`, so the embedding space is a function of the config alone.
    """
    import pickle

    import torch

    from pipeline.core.checkpoints import unsafe, weights_only_loads

    model_name = model_name.replace("/", "-") if not model_name.startswith(SCHEMAS) else model_name
    check_clip_source(model_name, pretrained)
    open_clip = open_clip_module()
    with torch.random.fork_rng(devices=[]), weights_only_loads():
        torch.manual_seed(init_seed)
        try:
            model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained or None,
                                                                device=device, weights_only=True)
        except pickle.UnpicklingError as err:  # a weights-only load refused the file: nothing in it ran
            source = (f"clip.model {model_name!r}" if model_name.startswith(SCHEMAS)
                      else f"clip.pretrained {pretrained!r}")
            raise unsafe(source, err, CLIP_FIX) from None
    if not pretrained and not model_name.startswith(SCHEMAS):
        log.info("clip %s: random weights from init_seed %d (clip.pretrained is empty)", model_name, init_seed)
    model.eval().requires_grad_(False)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    preprocess = ImagePreprocess(
        image_size=int(size),
        mean=tuple(model.visual.image_mean or open_clip.OPENAI_DATASET_MEAN),
        std=tuple(model.visual.image_std or open_clip.OPENAI_DATASET_STD),
    )
    return FrozenClip(model=model, tokenizer=open_clip.get_tokenizer(model_name), preprocess=preprocess,
                      device=device, precision=precision)


def clip_config(model_name: str, pretrained: str, init_seed: int) -> dict[str, str | int]:
    """What identifies the embedding space, recorded in feature files and checked on read."""
    random_init = not pretrained and not model_name.startswith(SCHEMAS)
    return {"model": model_name, "pretrained": pretrained, **({"init_seed": init_seed} if random_init else {})}
