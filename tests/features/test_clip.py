"""Tests of the frozen CLIP encoder (pipeline.features.clip) and the prompt ensembling of extract@text.

Everything runs offline on the tiny `mmdistill-tiny` architecture (random weights, 64-d
embeddings, 64x64 images): the pretrained-loading paths (checkpoint file, `local-dir:`)
are exercised with checkpoints written here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import RunsCode
from PIL import Image

from pipeline.core.checkpoints import FORCE_NO, UnsafeCheckpoint
from pipeline.core.config import ConfigError
from pipeline.features.clip import MODEL_CONFIG_DIR, FrozenClip, ImagePreprocess, clip_config, load_clip
from pipeline.features.extraction import prompt_embeddings

CPU = torch.device("cpu")
MODEL = "mmdistill-tiny"
DIM, SIZE = 64, 64
TEXTS = ["i thought the movie was great", "the story was awful", "um so basically it was okay you know"]
# torchvision's uint8 bicubic-antialias resize and PIL's both resize separably (rows, then columns)
# with a uint8 intermediate, each with its own fixed-point coefficients: each pass may round to the
# other side of .5, so a pixel may differ by at most one grey level per pass, 2 in all, and only
# rarely (measured on random-noise images, the worst case: < 1% of values differ, never by 3).
MAX_LEVELS = 2
MAX_FRACTION_DIFFERENT = 0.02



@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything tries to fetch weights."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"attempted download: {args} {kwargs}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(open_clip.factory, "download_pretrained", refuse)
    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", refuse)


@pytest.fixture(scope="module")
def clip0() -> FrozenClip:
    """The seed-0 random tiny CLIP, shared by the tests that only read it."""
    return _load(0)


@pytest.fixture(scope="module")
def pil_transform():
    """open_clip's own (PIL) eval preprocessing of the tiny model."""
    return open_clip.create_model_and_transforms(MODEL)[2]


def _load(seed: int, pretrained: str = "", model: str = MODEL) -> FrozenClip:
    return load_clip(model, pretrained, CPU, init_seed=seed)


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    """Preprocessed-looking images (n, 3, 64, 64)."""
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _uint8(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _tiny_config() -> dict:
    return json.loads((MODEL_CONFIG_DIR / f"{MODEL}.json").read_text())


# --------------------------------------------------------------------------- embeddings


def test_random_model_embeddings_shape_and_norm(clip0: FrozenClip) -> None:
    clip = clip0
    img = clip.encode_images(_images(5))
    txt = clip.encode_texts(TEXTS)
    assert img.shape == (5, DIM) and txt.shape == (len(TEXTS), DIM)
    assert img.dtype == torch.float32 and txt.dtype == torch.float32
    assert img.device.type == "cpu"
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(len(TEXTS)))
    assert not torch.allclose(img[0], img[1])  # different inputs, different embeddings


def test_model_is_frozen_and_in_eval_mode(clip0: FrozenClip) -> None:
    clip = clip0
    assert not clip.model.training
    assert not any(p.requires_grad for p in clip.model.parameters())


def test_text_longer_than_context_is_truncated(clip0: FrozenClip) -> None:
    clip = clip0
    z = clip.encode_texts(["word " * 500])
    assert z.shape == (1, DIM) and torch.isfinite(z).all()


def test_same_seed_same_random_weights_other_seed_differs() -> None:
    x = _images()
    a, b, c = _load(0).encode_images(x), _load(0).encode_images(x), _load(1).encode_images(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-2


def test_batched_encoding_equals_one_at_a_time(clip0: FrozenClip) -> None:
    clip = clip0
    x = _images(4)
    batched = clip.encode_images(x)
    single = torch.cat([clip.encode_images(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    batched_t = clip.encode_texts(TEXTS)
    single_t = torch.cat([clip.encode_texts([t]) for t in TEXTS])
    torch.testing.assert_close(batched_t, single_t, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- pretrained weights


def test_checkpoint_file_loads_the_saved_weights(clip0: FrozenClip, tmp_path: Path) -> None:
    source = clip0
    ckpt = tmp_path / "tiny.pt"
    torch.save(source.model.state_dict(), ckpt)

    loaded = _load(123, str(ckpt))  # another seed: only the checkpoint can make the weights equal
    fresh = _load(123)
    x = _images()
    torch.testing.assert_close(loaded.encode_images(x), source.encode_images(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode_texts(TEXTS), source.encode_texts(TEXTS), rtol=0, atol=0)
    assert (fresh.encode_images(x) - source.encode_images(x)).abs().max() > 1e-2
    assert (fresh.encode_texts(TEXTS) - source.encode_texts(TEXTS)).abs().max() > 1e-2
    for name, tensor in source.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_checkpoint_with_state_dict_key_loads(clip0: FrozenClip, tmp_path: Path) -> None:
    """Training checkpoints wrap the weights in {'state_dict': ...} (open_clip's own format)."""
    source = clip0
    ckpt = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": source.model.state_dict()}, ckpt)
    x = _images()
    torch.testing.assert_close(_load(7, str(ckpt)).encode_images(x), source.encode_images(x), rtol=0, atol=0)


@pytest.mark.parametrize("where", ["file", "local-dir"])
def test_tampered_checkpoint_is_refused_without_running_code(clip0: FrozenClip, tmp_path: Path, where: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLIP checkpoint is read weights-only, even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD set."""
    monkeypatch.setenv(FORCE_NO, "1")
    marker = tmp_path / "marker"
    folder = tmp_path / "my-clip"
    folder.mkdir()
    ckpt = folder / ("tiny.pt" if where == "file" else "open_clip_pytorch_model.bin")
    torch.save({"state_dict": clip0.model.state_dict(), "payload": RunsCode(marker)}, ckpt)
    if where == "file":
        model, pretrained, source = MODEL, str(ckpt), f"clip.pretrained {str(ckpt)!r}"
    else:
        (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": _tiny_config(), "preprocess_cfg": {}}))
        model, pretrained, source = f"local-dir:{folder}", "", f"clip.model 'local-dir:{folder}'"
    with pytest.raises(UnsafeCheckpoint, match=r"holds pickled Python objects.*will not unpickle") as err:
        load_clip(model, pretrained, CPU)
    assert not marker.exists()
    assert str(err.value).startswith(source) and "rerun `dvc repro extract`" in str(err.value)


def test_local_dir_loads_config_and_weights_offline(clip0: FrozenClip, tmp_path: Path) -> None:
    source = clip0
    folder = tmp_path / "my-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": _tiny_config(), "preprocess_cfg": {}}))
    torch.save(source.model.state_dict(), folder / "open_clip_pytorch_model.bin")

    loaded = _load(99, model=f"local-dir:{folder}")
    x = _images()
    torch.testing.assert_close(loaded.encode_images(x), source.encode_images(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode_texts(TEXTS), source.encode_texts(TEXTS), rtol=0, atol=0)
    assert loaded.preprocess == source.preprocess
    # a local dir carries its weights: no init_seed in the recorded config
    assert clip_config(f"local-dir:{folder}", "", 5) == {"model": f"local-dir:{folder}", "pretrained": ""}
    with pytest.raises(ValueError, match="must be empty"):
        load_clip(f"local-dir:{folder}", "openai", CPU)


def test_random_init_is_recorded_and_does_not_touch_the_global_rng() -> None:
    assert clip_config(MODEL, "", 3) == {"model": MODEL, "pretrained": "", "init_seed": 3}
    assert clip_config(MODEL, "/some/ckpt.pt", 3) == {"model": MODEL, "pretrained": "/some/ckpt.pt"}
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    _load(0)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_openai_style_model_name_with_slash_is_accepted() -> None:
    x = _images()
    torch.testing.assert_close(load_clip("mmdistill/tiny", "", CPU).encode_images(x),
                               _load(0).encode_images(x), rtol=0, atol=0)


def test_local_dir_preprocess_cfg_sets_normalisation(clip0: FrozenClip, tmp_path: Path) -> None:
    folder = tmp_path / "clip-custom-norm"
    folder.mkdir()
    cfg = {"model_cfg": _tiny_config(), "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.save(clip0.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    clip = _load(0, model=f"local-dir:{folder}")
    assert clip.preprocess == ImagePreprocess(64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    grey = np.full((1, 64, 64, 3), 255, np.uint8)
    torch.testing.assert_close(clip.preprocess(torch.from_numpy(grey)), torch.full((1, 3, 64, 64), 2.0))


def test_local_dir_without_config_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        _load(0, model=f"local-dir:{tmp_path}")


# --------------------------------------------------------------------------- name and tag errors


def test_unknown_model_names_the_closest_ones() -> None:
    with pytest.raises(ConfigError, match=r"clip\.model 'ViT-B-99' is not an open_clip model\. Did you mean "
                                          r"'ViT-B-\d+'") as err:
        _load(0, model="ViT-B-99")
    message = str(err.value)
    assert "open_clip.list_models()" in message and "local-dir:" in message and len(message) < 400


def test_model_names_match_open_clip_without_importing_it() -> None:
    """The check stage lists the names from the config files; they are exactly open_clip's list."""
    from pipeline.features.clip import model_names, open_clip_module

    assert model_names() == sorted(open_clip_module().list_models())


def test_unknown_tag_lists_the_model_tags_without_downloading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model must not be built for an unknown tag")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse)
    with pytest.raises(ValueError, match=r"'nonexistent_tag' is neither a checkpoint file nor a pretrained tag "
                                         r"of 'ViT-B-32'\. Tags: \[") as err:
        load_clip("ViT-B-32", "nonexistent_tag", CPU)
    assert "'openai'" in str(err.value) and "'laion2b_s34b_b79k'" in str(err.value)


def test_missing_checkpoint_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"clip\.pretrained '.*missing\.pt': no such checkpoint file"):
        _load(0, str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="neither a checkpoint file nor a pretrained tag"):
        _load(0, "missing")


# --------------------------------------------------------------------------- image preprocessing


@pytest.mark.parametrize("hw", [(64, 64), (32, 32), (40, 90), (120, 80), (33, 47), (200, 300)])
def test_preprocess_shape_and_matches_open_clip_pil(clip0: FrozenClip, pil_transform, hw: tuple[int, int]) -> None:
    clip = clip0
    frames = _uint8((3, *hw, 3), seed=hw[0] * 1000 + hw[1])  # (N, H, W, 3)
    ours = clip.preprocess(torch.from_numpy(frames))
    assert ours.shape == (3, 3, SIZE, SIZE) and ours.dtype == torch.float32
    reference = torch.stack([pil_transform(Image.fromarray(f)) for f in frames])  # (N, 3, 64, 64)
    diff = (ours - reference).abs()
    if hw == (SIZE, SIZE):
        # no resize needed: crop, scale and normalise only, so the two agree to float rounding
        assert diff.max() < 1e-5, diff.max()
    else:
        std = torch.tensor(open_clip.OPENAI_DATASET_STD)[:, None, None]
        levels = diff * std * 255.0  # back to uint8 grey levels
        assert levels.max() <= MAX_LEVELS + 1e-3, levels.max()
        assert (levels > 0.5).float().mean() < MAX_FRACTION_DIFFERENT


def test_preprocess_values_by_hand(clip0: FrozenClip) -> None:
    """On a 64x64 image (no resize) the output is (x / 255 - mean) / std, computed independently."""
    mean, std = np.array(open_clip.OPENAI_DATASET_MEAN), np.array(open_clip.OPENAI_DATASET_STD)
    frames = _uint8((2, 64, 64, 3))
    expected = (frames / 255.0 - mean) / std  # (N, H, W, 3)
    ours = clip0.preprocess(torch.from_numpy(frames))
    np.testing.assert_allclose(ours.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)


def test_preprocess_centre_crops_the_long_side(clip0: FrozenClip) -> None:
    """A 64x128 image whose left and right quarters are black and middle white: the crop keeps the middle."""
    frames = np.zeros((1, 64, 128, 3), np.uint8)
    frames[:, :, 32:96] = 255
    out = clip0.preprocess(torch.from_numpy(frames))
    white = (1.0 - np.array(open_clip.OPENAI_DATASET_MEAN)) / np.array(open_clip.OPENAI_DATASET_STD)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), np.broadcast_to(white, (64, 64, 3)), atol=1e-5)


def test_preprocessed_embeddings_match_open_clip_pipeline(clip0: FrozenClip, pil_transform) -> None:
    """End to end on 64x64 frames: FrozenClip(ImagePreprocess(uint8)) == model.encode_image(PIL transform)."""
    clip = clip0
    frames = _uint8((3, 64, 64, 3), seed=5)
    ours = clip.encode_images(clip.preprocess(torch.from_numpy(frames)))
    with torch.no_grad():
        ref = clip.model.encode_image(torch.stack([pil_transform(Image.fromarray(f)) for f in frames]))
    torch.testing.assert_close(ours, torch.nn.functional.normalize(ref, dim=-1), rtol=1e-5, atol=1e-5)


def test_image_preprocess_is_picklable(clip0: FrozenClip) -> None:
    import pickle

    p = clip0.preprocess
    assert pickle.loads(pickle.dumps(p)) == p


# --------------------------------------------------------------------------- prompt ensembling


def test_prompt_embeddings_with_tiny_clip(clip0: FrozenClip) -> None:
    clip = clip0
    templates = ["a person talking with {} sentiment", "a video of someone expressing a {} opinion"]
    classes = ["negative", "neutral", "positive"]
    z = prompt_embeddings(clip.encode_texts, templates, classes)
    assert z.shape == (3, DIM)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    # by hand: per class, normalise the mean over templates of the (unit) template embeddings
    for k, name in enumerate(classes):
        per_template = clip.encode_texts([t.format(name) for t in templates])  # (T, D)
        expected = per_template.mean(0) / per_template.mean(0).norm()
        torch.testing.assert_close(z[k], expected, rtol=1e-5, atol=1e-5)


def test_prompt_embeddings_ensemble_arithmetic() -> None:
    """With a fake encoder of known vectors the ensemble is the normalised mean, row k = class k."""
    table = {"a x": [1.0, 0.0], "b x": [0.0, 1.0], "a y": [1.0, 0.0], "b y": [1.0, 0.0]}

    def encode(texts: list[str]) -> torch.Tensor:
        return torch.tensor([table[t] for t in texts])

    z = prompt_embeddings(encode, ["a {}", "b {}"], ["x", "y"])
    s = 1 / np.sqrt(2)
    torch.testing.assert_close(z, torch.tensor([[s, s], [1.0, 0.0]], dtype=torch.float32))


def test_prompt_templates_without_placeholder_raise() -> None:
    def encode(texts: list[str]) -> torch.Tensor:
        raise AssertionError("nothing should be encoded")

    with pytest.raises(ValueError, match=r"must contain '\{\}'.*'a photo'"):
        prompt_embeddings(encode, ["a {} video", "a photo"], ["happy", "sad"])
