"""Synthetic video sentiment dataset (``synthetic_sentiment``) in the MMSA layout, with its known limits.

The dataset mimics CMU-MOSI (Zadeh et al., IEEE Intelligent Systems 2016) as laid out by the MMSA
toolkit::

    <root>/label.csv                      one row per clip
    <root>/Raw/<video_id>/<clip_id>.mp4   H.264 (yuv420p) video + mono AAC audio
    <root>/limits.json                    the Bayes-optimal MAE per modality subset (see below)
    <root>/oracle.csv                     per clip: latent sentiment, irony flag, Bayes predictions

``label.csv`` has exactly the columns ``video_id, clip_id, text, label, label_T, label_A, label_V,
annotation, mode``. ``video_id`` is ``vid_000``, ``vid_001``, ...; ``clip_id`` is an integer ``0, 1,
...`` within its video (the file name is ``<clip_id>.mp4``). Every video holds several clips (4 to 8
when ``n_clips`` is large enough, the last video may hold fewer) and all clips of a video belong to the
same split (``mode`` in ``train``/``valid``/``test``), as in the real datasets. The MMSA reader
(`pipeline.data.datasets`) checks only the files under ``Raw/``, so the two files beside label.csv are
invisible to it.

Generative process
------------------
For every clip, with its own random generator derived from the dataset seed, the draws of
`pipeline.data.limits.sample` (parameters: `pipeline.data.limits.SentimentProcess`, built by `sentiment_process`):

* **latent sentiment** ``s ~ Uniform(-3, 3)``.
* **label: annotators who disagree.** ``A`` annotators (``annotators``, 5 as in CMU-MOSI) each rate
  ``r_j = clip(round(s + N(0, sigma_ann^2)), -3, 3)``, an integer; the label is their mean, a multiple
  of ``1/A`` (written with 4 decimals). ``annotation`` is ``Negative``/``Neutral``/``Positive`` from
  its sign (``Neutral`` iff it is 0).
* **irony.** With probability ``irony`` the speaker is ironic: the words say the opposite of what
  they mean, while face and voice show the true ``s``. The lexical centre is ``t = -s`` if ironic,
  else ``t = s`` (column ``label_T``).
* **text: many small lexical cues.** ``n ~ U{cues[0]..cues[1]}`` cues (independent of ``s``), each
  an entry of ``LEXICON`` (55 review words and short phrases with valences ``mu_w`` in [-3, 3]) drawn
  independently with ``P(w | t) proportional to exp(-(mu_w - t)^2 / (2 tau^2))`` (``tau`` =
  ``noise.text``). Each cue fills a spoken-style clause ("the acting was {cue}", ``TEMPLATES``); the
  clauses are joined by connectors ("and", "plus", ...) amid neutral filler (``OPENING_FILLERS``,
  ``CLOSING_FILLERS``, ``NEUTRAL_SENTENCES``) that carries no sentiment. No lexicon entry occurs
  inside another entry or in any template or filler, so every cue can be read off the text.
* **video: the face.** ``v = clip(round(s + N(0, sigma_v^2), 4), -3, 3)`` (column ``label_V``).
  ``round(seconds * fps)`` RGB frames of ``size x size`` pixels: a grey background with drifting
  sinusoidal texture and per-frame luminance noise, and a filled square (side ``size // 3``) moving in
  a straight line from a random position with a random velocity, bouncing off the borders. The
  square's *colour* encodes ``v``: its hue is interpolated from blue (``v = -3``) through grey
  (``v = 0``) to orange (``v = +3``). Its *brightness* is scaled by a random factor independent of
  ``v`` (nuisance).
* **audio: the voice.** ``a = clip(round(s + N(0, sigma_a^2), 4), -3, 3)`` (column ``label_A``).
  ``round(seconds * sample_rate)`` mono samples of a harmonic tone whose fundamental frequency encodes
  ``a``: ``f0 = 220 * 2 ** (a / 3)`` Hz (110 Hz at -3, 440 Hz at +3), with 3 weaker harmonics (random
  timbre), an attack/release envelope with random tremolo, a random overall loudness (nuisance) and a
  little white noise.

Mechanism: text reveals ``|s|`` well but not the sign of an ironic clip, whatever a model does; face
and voice are noisy but never ironic, so only they resolve irony. Each modality sees ``s`` through its
own independent noise, so none determines the label, and the annotators' disagreement puts a floor
under every predictor's error.

The renderer clips the video and audio cues to [-3, 3] (the colour and pitch ranges), so a value of
exactly -3 or 3 means "at or beyond": `pipeline.data.limits` gives it the clipped tail's probability, and an
interior value its gaussian density, which is exact for what is rendered.

Regime (defaults in params.yaml, ``generate.synthetic_sentiment``). On CMU-MOSI, text-only models are
far better than audio- or video-only ones, which do little better than a constant prediction (e.g. the
unimodal variants of the Tensor Fusion Network, Zadeh et al., EMNLP 2017), and all modalities together
are best. So here text is the most informative single
modality and video and audio are weak:

* ``tau = 1.0`` over valences spaced 0.1-0.2 apart, with 2-5 cues, pins ``t`` to within about
  ``tau / sqrt(n)``, 0.5;
* ``irony = 0.15`` costs text alone about ``0.15 * E|2s| = 0.45`` of MAE, which only face and voice
  can recover;
* ``sigma_v = sigma_a = 2.5`` puts each of them alone about halfway between text and a constant (a
  third of the clips show a clipped, saturated cue);
* ``sigma_ann = 0.9`` with 5 annotators gives an inter-annotator agreement (one-way intra-class
  correlation of the ratings) of about 0.78, close to the Krippendorff's alpha of 0.77 reported for
  MOSI's sentiment intensity.

Nothing is tuned for any model or distillation method.

Known limits (`pipeline.data.limits`)
--------------------------------
For every non-empty modality subset ``S`` (``video+audio+text``, ``video+audio``, ``video+text``,
``audio+text``, ``video``, ``audio``, ``text``), the Bayes-optimal predictor under absolute error is
the posterior median of the label given ``S``'s observations (text: the exact cue words; video and
audio: the exact rendered cue), computed on a grid over ``s`` from the process itself, not fitted to
clips. ``limits.json`` holds the process parameters, the expected MAE of each subset's predictor by
Monte Carlo (``monte_carlo`` fresh draws from their own seed, ``SeedSequence(seed,
spawn_key=(LIMITS_SPAWN_KEY,))``, independent of the clips) with its standard error, the best
constant's MAE, and the MAE of each predictor on each split's clips (``split_mae``); ``oracle.csv``
holds, per clip (``ORACLE_COLUMNS``), the label, the latent ``s``, the irony flag and the prediction
``bayes_<S>`` of every subset, so a model's test MAE can be compared with the limit on the same
clips. These are limits for a model that reads the cues exactly: one that reads them off the
decoded media (compressed frames, uint8 colours, AAC audio) can only do worse. Defaults (20000 draws,
seed 0; standard errors about 0.006): MAE ``video+audio+text`` 0.67, ``video+audio`` 0.99,
``video+text`` and ``audio+text`` 0.75, ``video`` and ``audio`` 1.15, ``text`` 0.85; the best constant
(0) 1.47.

Media: H.264 via libx264 (CRF 20, preset veryfast, macroblock-tree rate control off so
that encoding is bit-reproducible), yuv420p; AAC mono at ``sample_rate``. Decoders
(decord or PyAV) return the audio aligned with the source and padded with near-silence
to a multiple of 1024 samples (AAC frame size). ``size`` must be even, >= 32 and not 48
or 72: decord 0.6 mis-decodes those frame widths.

Regeneration: a previous ``label.csv``, ``limits.json``, ``oracle.csv`` and ``Raw/`` tree under
``root`` are deleted first (the generating stage owns the folder); each file is written atomically
(a temporary name, then a rename), ``label.csv`` last, so its presence marks a complete dataset.

Determinism: everything is derived from ``np.random.SeedSequence(seed)`` (never the
global random state): one child generator lays out the videos and splits, one child
per clip draws its content, and a reserved child draws the Monte Carlo. The same arguments
give a byte-identical ``label.csv`` and ``oracle.csv`` and identical decoded frames.

``synthetic_av`` (`generate_av`): a VEGAS-like audio-visual retrieval dataset
-----------------------------------------------------------------------------
10 classes named after VEGAS's (``AV_CLASSES``), written in the raw VEGAS layout that
`pipeline.data.vegas.read_vegas` reads::

    <root>/<class_name>/<video_id>.mp4     video ids av_00000, av_00001, ...
    <root>/folds/fold_1.txt .. fold_<n>.txt

Classes are balanced (clip i has class i mod 10, in a seeded shuffled order) and the folds
stratified (clips sorted by class go round-robin over the folds). For a clip of class k, each
modality sees k through its own gaussian noise, in units of the spacing between neighbouring
classes (``generate_av``'s ``audio_noise`` and ``visual_noise``), so neither modality alone
identifies the class every time:

* **visual**: ``v = k + N(0, visual_noise)``; the bouncing square of ``synthetic_sentiment``
  (same motion and background) is coloured with hue ``(v / 10) mod 1`` on the colour wheel
  (saturation 0.85), scaled by a random brightness (nuisance).
* **audio**: ``a = k + N(0, audio_noise)``; the harmonic tone of ``synthetic_sentiment``
  (`render_audio`) with fundamental ``f0 = 160 * 2 ** (a / 4)`` Hz (a major third per class:
  160 Hz for class 0, about 761 Hz for class 9).

Cues are rounded to 4 decimals before rendering; the returned table (``AV_TABLE_COLUMNS``) holds
them. Regeneration removes the previous class folders (``AV_CLASSES``) and ``folds/``; the fold
files are written last. Deterministic from the seed as above: the same arguments give
byte-identical mp4 and fold files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.data.limits import (
    GRID_POINTS,
    SENTIMENT_RANGE,
    SUBSETS,
    Draws,
    SentimentProcess,
    bayes_predictions,
    expected_mae,
    mae_with_se,
    prior_prediction,
    sample,
)
from pipeline.data.vegas import FOLDS_DIR, video_path, write_fold_files

logger = logging.getLogger(__name__)

DATASET_NAME = "synthetic_sentiment"
LABEL_COLUMNS: tuple[str, ...] = (
    "video_id",
    "clip_id",
    "text",
    "label",
    "label_T",
    "label_A",
    "label_V",
    "annotation",
    "mode",
)
SPLIT_NAMES: tuple[str, ...] = ("train", "valid", "test")
# Even frame widths below 256 that decord 0.6 cannot decode (wrong channel count / size
# mismatch from its row-padding handling); PyAV decodes them fine. 16 and 24 are also
# excluded by the minimum size of 32.
DECORD_UNREADABLE_SIZES: tuple[int, ...] = (16, 24, 48, 72)
CSV_DECIMALS = 4

# Clips per video_id, inclusive bounds (reduced for tiny datasets, see _clips_per_video).
MIN_CLIPS_PER_VIDEO = 4
MAX_CLIPS_PER_VIDEO = 8

# Visual cue: square colour at v = -3, 0, +3 (RGB, before the brightness nuisance).
NEGATIVE_RGB = np.array([40.0, 90.0, 230.0])  # (3,) blue
NEUTRAL_RGB = np.array([128.0, 128.0, 128.0])  # (3,) grey
POSITIVE_RGB = np.array([240.0, 120.0, 20.0])  # (3,) orange

# Audio cue: f0 = BASE_PITCH_HZ * 2 ** (a * OCTAVES_PER_UNIT) = 220 * 2 ** (a / 3) Hz.
BASE_PITCH_HZ = 220.0
OCTAVES_PER_UNIT = 1.0 / 3.0
N_HARMONICS = 4

# Sentiment lexicon: (entry, valence mu_w). Review vocabulary ordered by valence, spaced 0.1-0.2 apart
# over [-3, 3]; no entry occurs (as whole words) inside another entry or in any template or filler.
LEXICON: tuple[tuple[str, float], ...] = (
    ("a complete disaster", -3.0), ("unwatchable", -2.9), ("atrocious", -2.8), ("painful to sit through", -2.7),
    ("awful", -2.6), ("a total waste of time", -2.5), ("horrible", -2.4), ("dreadful", -2.3), ("terrible", -2.2),
    ("really bad", -2.0), ("a huge letdown", -1.9), ("pretty bad", -1.8), ("annoying", -1.7),
    ("disappointing", -1.6), ("boring", -1.5), ("poorly written", -1.4), ("weak", -1.3), ("tedious", -1.2),
    ("underwhelming", -1.1), ("forgettable", -1.0), ("a bit dull", -0.9), ("not very good", -0.8), ("flat", -0.7),
    ("slow in places", -0.6), ("a mixed bag", -0.4), ("nothing special", -0.3), ("average", -0.2), ("okay", 0.0),
    ("alright", 0.1), ("fine", 0.2), ("watchable", 0.3), ("not bad", 0.5), ("decent", 0.6), ("pleasant", 0.7),
    ("nice", 0.8), ("fun", 0.9), ("pretty good", 1.0), ("solid", 1.1), ("enjoyable", 1.2), ("charming", 1.4),
    ("well made", 1.5), ("really good", 1.7), ("impressive", 1.8), ("very entertaining", 1.9), ("great", 2.0),
    ("moving", 2.1), ("excellent", 2.2), ("beautiful", 2.3), ("wonderful", 2.4), ("fantastic", 2.5),
    ("brilliant", 2.6), ("amazing", 2.7), ("incredible", 2.8), ("a masterpiece", 2.9),
    ("the best film in years", 3.0),
)
LEXICON_VALENCES: tuple[float, ...] = tuple(valence for _, valence in LEXICON)
# One short clause per cue ("{cue}" is replaced by a lexicon entry), so that five cues with filler stay
# within ~50 words (a student's max_length must not cut cues off).
TEMPLATES: tuple[str, ...] = (
    "the movie was {cue}",
    "honestly the acting was {cue}",
    "the story was {cue}",
    "overall it was {cue}",
    "the ending was {cue}",
    "the characters were {cue}",
    "it was just {cue}",
    "the plot was {cue}",
    "the music was {cue}",
    "i thought it was {cue}",
    "the dialogue was {cue}",
    "the pacing was {cue}",
)
CONNECTORS: tuple[str, ...] = ("and", "and also", "plus", "also", "and then")
OPENING_FILLERS: tuple[str, ...] = ("um", "uh", "so", "well", "i mean", "and", "basically")
CLOSING_FILLERS: tuple[str, ...] = ("you know", "i guess", "at least for me", "anyway")
NEUTRAL_SENTENCES: tuple[str, ...] = (
    "i saw it last weekend",
    "it is about two hours long",
    "i went in without reading reviews",
    "it came out a few years ago",
    "we watched it at home",
    "the theater was pretty full",
    "it is based on a book",
)

# Defaults of the process (= params.yaml's generate.synthetic_sentiment; see "Regime" above).
DEFAULT_ANNOTATORS = 5
DEFAULT_IRONY = 0.15
DEFAULT_CUES = (2, 5)
DEFAULT_TAU = 1.0
DEFAULT_VIDEO_NOISE = 2.5
DEFAULT_AUDIO_NOISE = 2.5
DEFAULT_ANNOTATOR_NOISE = 0.9
DEFAULT_MONTE_CARLO = 20000
LIMITS_FILE = "limits.json"
ORACLE_FILE = "oracle.csv"
# Child of SeedSequence(seed) that draws the Monte Carlo: far beyond the layout (0) and the clips (1..n_clips).
LIMITS_SPAWN_KEY = 2**32 - 1
ORACLE_COLUMNS: tuple[str, ...] = (
    "video_id", "clip_id", "mode", "label", "sentiment", "ironic", *(f"bayes_{key}" for key in SUBSETS),
)


def sentiment_process(
    annotators: int = DEFAULT_ANNOTATORS,
    irony: float = DEFAULT_IRONY,
    cues: tuple[int, int] = DEFAULT_CUES,
    tau: float = DEFAULT_TAU,
    video: float = DEFAULT_VIDEO_NOISE,
    audio: float = DEFAULT_AUDIO_NOISE,
    annotator: float = DEFAULT_ANNOTATOR_NOISE,
) -> SentimentProcess:
    """The synthetic_sentiment process over ``LEXICON`` (see the module docstring for each parameter).

    Raises ValueError naming the field when a value is out of range.
    """
    return SentimentProcess(valences=LEXICON_VALENCES, tau=tau, irony=irony, cues=(int(cues[0]), int(cues[1])),
                            video=video, audio=audio, annotator=annotator, annotators=annotators)


DEFAULT_PROCESS = sentiment_process()


# --------------------------------------------------------------------------- labels


def _clean(value: float) -> float:
    """Round to CSV_DECIMALS and turn -0.0 into 0.0."""
    return float(round(float(value), CSV_DECIMALS)) + 0.0


def annotation_for(label: float) -> str:
    """MMSA ``annotation`` column: ``Negative``, ``Neutral`` or ``Positive`` from the sign of the label."""
    if label > 0:
        return "Positive"
    if label < 0:
        return "Negative"
    return "Neutral"


# --------------------------------------------------------------------------- text


def make_transcript(cues: Sequence[str], rng: np.random.Generator) -> str:
    """Lowercase spoken-style transcript: one template clause per cue (in order), joined by connectors,
    with optional neutral filler around them."""
    words: list[str] = []
    for index, cue in enumerate(cues):
        if index:
            words.append(CONNECTORS[rng.integers(len(CONNECTORS))])
        words.append(TEMPLATES[rng.integers(len(TEMPLATES))].format(cue=cue))
    if rng.random() < 0.5:
        words.insert(0, OPENING_FILLERS[rng.integers(len(OPENING_FILLERS))])
    if rng.random() < 0.3:
        words.append(CLOSING_FILLERS[rng.integers(len(CLOSING_FILLERS))])
    if rng.random() < 0.3:
        sentence = NEUTRAL_SENTENCES[rng.integers(len(NEUTRAL_SENTENCES))]
        words.insert(0 if rng.random() < 0.5 else len(words), sentence)
    return " ".join(words)


# --------------------------------------------------------------------------- video


def cue_to_rgb(video_cue: float) -> np.ndarray:
    """Square colour (float RGB in [0, 255]) for a visual cue: blue at -3, grey at 0, orange at +3."""
    weight = min(abs(video_cue) / SENTIMENT_RANGE, 1.0)
    target = POSITIVE_RGB if video_cue > 0 else NEGATIVE_RGB
    return NEUTRAL_RGB + weight * (target - NEUTRAL_RGB)  # (3,)


def _bounce(start: float, velocity: float, n_steps: int, span: float) -> np.ndarray:
    """Positions in [0, span] of a point moving at constant velocity and reflecting off both ends."""
    raw = start + velocity * np.arange(n_steps)  # (T,)
    if span <= 0:
        return np.zeros(n_steps)
    folded = np.mod(raw, 2.0 * span)  # (T,) in [0, 2 span)
    return np.where(folded > span, 2.0 * span - folded, folded)  # (T,) in [0, span]


def _background(n_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Grey luminance background with two drifting sinusoidal gratings and pixel noise, float (T, H, W)."""
    level = rng.uniform(70.0, 110.0)
    grid = np.arange(size) / size  # (W,)
    t = np.arange(n_frames)[:, None, None]  # (T, 1, 1)
    y, x = grid[None, :, None], grid[None, None, :]  # (1, H, 1), (1, 1, W)
    image = np.full((n_frames, size, size), level)  # (T, H, W)
    for _ in range(2):
        fy, fx = rng.uniform(-3.0, 3.0, size=2)
        phase, drift, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(-0.5, 0.5), rng.uniform(4.0, 10.0)
        image = image + amplitude * np.sin(2 * np.pi * (fy * y + fx * x) + phase + drift * t)  # (T, H, W)
    return image + rng.normal(0.0, 3.0, size=image.shape)  # (T, H, W)


def bouncing_square(rgb: np.ndarray, n_frames: int, size: int, rng: np.random.Generator,
                    max_brightness: float) -> np.ndarray:
    """Frames uint8 (T, size, size, 3) RGB of a square of colour ``rgb`` (3,) bouncing over a textured
    background; a random brightness in [0.6, max_brightness) scales the colour (a nuisance)."""
    side = max(2, size // 3)
    span = float(size - side)
    speed = rng.uniform(0.5, 1.5) * size / 16.0  # pixels per frame
    angle = rng.uniform(0.0, 2 * np.pi)
    top = np.round(_bounce(rng.uniform(0, span), speed * np.sin(angle), n_frames, span)).astype(int)  # (T,)
    left = np.round(_bounce(rng.uniform(0, span), speed * np.cos(angle), n_frames, span)).astype(int)  # (T,)
    brightness = rng.uniform(0.6, max_brightness)  # nuisance, independent of the colour's meaning
    color = np.clip(np.asarray(rgb, dtype=float) * brightness, 0.0, 255.0)  # (3,)

    background = _background(n_frames, size, rng)[..., None]  # (T, H, W, 1)
    rows = np.arange(size)  # (H,)
    in_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + side)  # (T, H)
    in_cols = (rows[None, :] >= left[:, None]) & (rows[None, :] < left[:, None] + side)  # (T, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :]  # (T, H, W)
    frames = np.where(mask[..., None], color, background)  # (T, H, W, 3)
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)  # (T, H, W, 3)


def render_frames(video_cue: float, n_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames uint8 (T, size, size, 3) RGB of a bouncing square whose colour encodes ``video_cue``."""
    return bouncing_square(cue_to_rgb(video_cue), n_frames, size, rng, max_brightness=1.05)


# --------------------------------------------------------------------------- audio


def cue_to_pitch(audio_cue: float) -> float:
    """Fundamental frequency in Hz for an audio cue: ``220 * 2 ** (a / 3)`` (110 Hz at -3, 440 Hz at +3)."""
    return BASE_PITCH_HZ * 2.0 ** (audio_cue * OCTAVES_PER_UNIT)


def render_audio(audio_cue: float, n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mono float32 (n,) in [-1, 1]: a harmonic tone whose pitch encodes ``audio_cue``."""
    t = np.arange(n_samples) / sample_rate  # (n,)
    f0 = cue_to_pitch(audio_cue)
    harmonics = np.arange(1, N_HARMONICS + 1)  # (K,)
    weights = np.concatenate([[1.0], rng.uniform(0.3, 0.9, N_HARMONICS - 1) / harmonics[1:]])  # (K,)
    phases = rng.uniform(0, 2 * np.pi, N_HARMONICS)  # (K,)
    tone = np.sin(2 * np.pi * f0 * harmonics[:, None] * t[None, :] + phases[:, None])  # (K, n)
    tone = weights @ tone / weights.sum()  # (n,) in [-1, 1]

    duration = n_samples / sample_rate
    attack, release = min(0.05, duration / 4), min(0.1, duration / 4)
    ramp = np.clip(np.minimum(t / attack, (duration - t) / release), 0.0, 1.0)  # (n,)
    tremolo = 1.0 + 0.2 * np.sin(2 * np.pi * rng.uniform(2.0, 6.0) * t + rng.uniform(0, 2 * np.pi))  # (n,)
    loudness = rng.uniform(0.15, 0.6)  # nuisance, independent of the cue
    wave = loudness / 1.2 * ramp * tremolo * tone + rng.normal(0.0, 0.005, n_samples)  # (n,)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)  # (n,)


# --------------------------------------------------------------------------- mp4


def _check_media(frames: np.ndarray, audio: np.ndarray | None, fps: int, sample_rate: int) -> None:
    """Raise ValueError when the arrays passed to write_mp4 are not encodable."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2 or height < 2 or width < 2:
        raise ValueError(f"frame height and width must be even (yuv420p), got {height}x{width}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if audio is not None:
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"audio must be a non-empty mono array (n,), got shape {audio.shape}")
        if sample_rate < 1:
            raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")


def _encode(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray | None, sample_rate: int) -> None:
    """Encode frames (T, H, W, 3) uint8 and optional mono audio (n,) into an mp4 container at ``path``."""
    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w", format="mp4") as container:
        # mbtree=0: x264's macroblock-tree rate control made the bitstream (and the decoded
        # frames) differ between runs on identical input; without it encoding is reproducible.
        options = {"crf": "20", "preset": "veryfast", "x264-params": "mbtree=0"}
        video = container.add_stream("libx264", rate=fps, options=options)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.thread_count = 1
        sound = container.add_stream("aac", rate=sample_rate, layout="mono") if audio is not None else None

        for index, image in enumerate(frames):  # image: (H, W, 3)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))

        if sound is not None:
            samples = np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)[None, :]  # (1, n)
            chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = sample_rate, 0, Fraction(1, sample_rate)
            container.mux(sound.encode(chunk))  # the encoder re-chunks into AAC frames of 1024 samples
            container.mux(sound.encode(None))


def write_mp4(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray | None, sample_rate: int) -> None:
    """Write an mp4 with H.264 (libx264, yuv420p) video and, if given, mono AAC audio, using PyAV.

    Args:
        path: destination file; its parent directory is created if needed.
        frames: uint8 (T, H, W, 3) RGB, H and W even.
        fps: frame rate of the video stream.
        audio: float32 (n,) mono samples in [-1, 1], or None for a file without audio stream.
        sample_rate: sample rate of ``audio`` in Hz (ignored when ``audio`` is None).

    The file is written atomically: encoded to a temporary name in the same directory,
    then moved into place with ``os.replace``. AAC pads the decoded audio to a whole
    number of 1024-sample frames, so decoders return slightly more than ``n`` samples.
    """
    path = Path(path)
    _check_media(frames, audio, fps, sample_rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _encode(tmp, frames, fps, audio, sample_rate)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- layout


def validate_splits(splits: dict[str, float]) -> dict[str, float]:
    """Check that ``splits`` maps exactly train/valid/test to positive fractions summing to 1.

    Returns the fractions ordered as train, valid, test. Raises ValueError otherwise.
    """
    if set(splits) != set(SPLIT_NAMES):
        raise ValueError(f"splits must have exactly the keys {list(SPLIT_NAMES)}, got {dict(splits)}")
    fractions = {name: float(splits[name]) for name in SPLIT_NAMES}
    if any(not (math.isfinite(value) and 0.0 < value < 1.0) for value in fractions.values()):
        raise ValueError(f"every split fraction must be in (0, 1), got {fractions}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions} (sum {total:.6g})")
    return fractions


def _clips_per_video(n_clips: int, rng: np.random.Generator) -> list[int]:
    """Number of clips of each video: 4..8, reduced so that there are always >= 3 videos."""
    high = max(1, min(MAX_CLIPS_PER_VIDEO, n_clips // len(SPLIT_NAMES)))
    low = min(MIN_CLIPS_PER_VIDEO, high)
    sizes: list[int] = []
    while sum(sizes) < n_clips:
        sizes.append(int(min(rng.integers(low, high + 1), n_clips - sum(sizes))))
    return sizes


def _assign_splits(sizes: Sequence[int], fractions: dict[str, float], rng: np.random.Generator) -> list[str]:
    """Split of each video: seeded shuffle, one video per split, then greedy on the largest clip deficit."""
    total = sum(sizes)
    targets = {name: fraction * total for name, fraction in fractions.items()}
    counts = dict.fromkeys(fractions, 0)
    modes = [""] * len(sizes)
    for rank, video in enumerate(rng.permutation(len(sizes))):
        if rank < len(SPLIT_NAMES):
            name = SPLIT_NAMES[rank]
        else:
            name = max(SPLIT_NAMES, key=lambda split: targets[split] - counts[split])
        modes[video] = name
        counts[name] += sizes[video]
    return modes


def _clip_layout(n_clips: int, fractions: dict[str, float], rng: np.random.Generator) -> list[tuple[str, int, str]]:
    """(video_id, clip_id, mode) of every clip, in clip order."""
    sizes = _clips_per_video(n_clips, rng)
    modes = _assign_splits(sizes, fractions, rng)
    width = max(3, len(str(len(sizes) - 1)))
    return [(f"vid_{video:0{width}d}", clip, modes[video]) for video, size in enumerate(sizes) for clip in range(size)]


def clip_path(root: Path, video_id: str, clip_id: int | str) -> Path:
    """Path of a clip in the MMSA layout: ``<root>/Raw/<video_id>/<clip_id>.mp4``."""
    return Path(root) / "Raw" / str(video_id) / f"{clip_id}.mp4"


def _clear_previous(root: Path) -> None:
    """Remove a previous generation (label.csv, limits.json, oracle.csv and Raw/); the generator owns the folder."""
    files = [root / name for name in ("label.csv", LIMITS_FILE, ORACLE_FILE)]
    raw = root / "Raw"
    if raw.exists() or any(path.exists() for path in files):
        logger.info("removing previous dataset files under %s", root)
    if raw.exists():
        shutil.rmtree(raw)
    for path in files:
        path.unlink(missing_ok=True)


def _check_generation_args(n_clips: int, seconds: float, fps: int, size: int, sample_rate: int) -> None:
    """Raise ValueError on arguments that cannot produce a dataset."""
    if n_clips < len(SPLIT_NAMES):
        raise ValueError(
            f"n_clips={n_clips} is too small: need at least {len(SPLIT_NAMES)} clips so that each split "
            f"{list(SPLIT_NAMES)} gets one"
        )
    if size < 32 or size % 2 or size in DECORD_UNREADABLE_SIZES:
        raise ValueError(
            f"size must be an even number >= 32 (yuv420p) other than {list(DECORD_UNREADABLE_SIZES)} "
            f"(frame widths decord 0.6 decodes to a wrong shape), got {size}"
        )
    if fps < 1 or sample_rate < 1:
        raise ValueError(f"fps and sample_rate must be >= 1, got fps={fps}, sample_rate={sample_rate}")
    if round(seconds * fps) < 1 or round(seconds * sample_rate) < 1:
        raise ValueError(f"seconds={seconds} gives no frame or no audio sample at fps={fps}, sample_rate={sample_rate}")


# --------------------------------------------------------------------------- dataset


def _label_row(video_id: str, clip_id: int, text: str, draw: Draws, mode: str) -> dict[str, object]:
    """One row of label.csv (keyed by LABEL_COLUMNS) from a single clip's draw."""
    label = _clean(draw.label[0])
    return {
        "video_id": video_id,
        "clip_id": clip_id,
        "text": text,
        "label": label,
        "label_T": _clean(draw.centre[0]),
        "label_A": _clean(draw.audio[0]),
        "label_V": _clean(draw.video[0]),
        "annotation": annotation_for(label),
        "mode": mode,
    }


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary name beside ``path``, then move it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _oracle_table(table: pd.DataFrame, draws: Draws, predictions: dict[str, np.ndarray]) -> pd.DataFrame:
    """oracle.csv (ORACLE_COLUMNS): per clip of ``table`` (label.csv), its latent ``sentiment``, ``ironic``
    (0/1) and the Bayes prediction ``bayes_<S>`` of every subset S, all rounded as label.csv."""
    oracle = table[["video_id", "clip_id", "mode", "label"]].copy()
    oracle["sentiment"] = [_clean(value) for value in draws.sentiment]
    oracle["ironic"] = draws.ironic.astype(int)
    for key in SUBSETS:
        oracle[f"bayes_{key}"] = [_clean(value) for value in predictions[key]]
    return oracle[list(ORACLE_COLUMNS)]


def _split_mae(oracle: pd.DataFrame) -> dict[str, dict[str, float]]:
    """MAE of each subset's Bayes prediction on each split's clips, from oracle.csv's columns:
    ``{split: {S: mean |label - bayes_S|}}``."""
    return {
        split: {key: float((rows["label"] - rows[f"bayes_{key}"]).abs().mean()) for key in SUBSETS}
        for split, rows in ((name, oracle[oracle["mode"] == name]) for name in SPLIT_NAMES)
    }


def _limits_record(process: SentimentProcess, seed: int, monte_carlo: int, oracle: pd.DataFrame) -> dict[str, object]:
    """The content of limits.json: the process, the Monte Carlo's size and seed, the expected MAE of every
    subset's Bayes predictor (with its standard error), the best constant's, and the MAE on each split.

    The Monte Carlo draws ``monte_carlo`` fresh clips from ``SeedSequence(seed, spawn_key=(LIMITS_SPAWN_KEY,))``,
    a stream that no clip of the dataset uses.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(LIMITS_SPAWN_KEY,)))
    draws = sample(process, monte_carlo, rng)
    constant = prior_prediction(process)
    return {
        "dataset": DATASET_NAME,
        "process": {
            "annotators": process.annotators,
            "irony": process.irony,
            "cues": list(process.cues),
            "noise": {"text": process.tau, "video": process.video, "audio": process.audio,
                      "annotator": process.annotator},
            "lexicon": dict(LEXICON),  # entry -> valence mu_w
        },
        "grid_points": GRID_POINTS,
        "monte_carlo": {"n": monte_carlo, "seed": seed, "spawn_key": [LIMITS_SPAWN_KEY]},
        "expected_mae": expected_mae(process, draws),
        "constant": {"prediction": constant, **mae_with_se(np.abs(draws.label - constant))},
        "split_size": {split: int((oracle["mode"] == split).sum()) for split in SPLIT_NAMES},
        "split_mae": _split_mae(oracle),
    }


def generate_sentiment(
    root: Path,
    n_clips: int,
    seed: int,
    splits: dict[str, float],
    seconds: float,
    fps: int,
    size: int,
    sample_rate: int,
    process: SentimentProcess = DEFAULT_PROCESS,
    monte_carlo: int = DEFAULT_MONTE_CARLO,
) -> pd.DataFrame:
    """Write the ``synthetic_sentiment`` dataset under ``root``: label.csv, Raw/..., limits.json, oracle.csv.

    Args:
        root: dataset folder; a previous label.csv, limits.json, oracle.csv and Raw/ tree in it are
            removed first.
        n_clips: number of clips (>= 3; each split gets at least one video).
        seed: seed of every random draw.
        splits: fraction of clips per split, keys exactly train/valid/test, summing to 1.
        seconds: clip duration; each clip has ``round(seconds * fps)`` frames and
            ``round(seconds * sample_rate)`` audio samples.
        fps: video frame rate.
        size: frame height and width in pixels (even, >= 32, not 48 or 72: see
            ``DECORD_UNREADABLE_SIZES``).
        sample_rate: audio sample rate in Hz.
        process: the generative process (`sentiment_process`; its valences must be ``LEXICON``'s).
        monte_carlo: fresh draws of the Monte Carlo estimate of the limits (>= 2).

    Returns:
        The label table, as written to ``label.csv`` (columns ``LABEL_COLUMNS``).

    Deterministic from ``seed``: the same arguments give a byte-identical label.csv and oracle.csv and
    identical decoded frames. Shows a tqdm progress bar; logs the expected limits.
    """
    root = Path(root)
    fractions = validate_splits(splits)
    _check_generation_args(n_clips, seconds, fps, size, sample_rate)
    if tuple(process.valences) != LEXICON_VALENCES:
        raise ValueError("process.valences must be LEXICON's valences (the words rendered in the transcripts): "
                         "build the process with sentiment_process()")
    if monte_carlo < 2:
        raise ValueError(f"monte_carlo must be >= 2 draws (for a standard error), got {monte_carlo}")
    n_frames, n_samples = int(round(seconds * fps)), int(round(seconds * sample_rate))

    layout_seq, *clip_seqs = np.random.SeedSequence(seed).spawn(n_clips + 1)
    layout = _clip_layout(n_clips, fractions, np.random.default_rng(layout_seq))

    _clear_previous(root)
    logger.info("generating %s: %d clips of %.3g s under %s", DATASET_NAME, n_clips, seconds, root)
    rows: list[dict[str, object]] = []
    draws: list[Draws] = []
    for (video_id, clip_id, mode), clip_seq in tqdm(
        zip(layout, clip_seqs, strict=True), total=n_clips, desc=DATASET_NAME, unit="clip"
    ):
        rng = np.random.default_rng(clip_seq)
        draw = sample(process, 1, rng)  # this clip's latents and cues
        text = make_transcript([LEXICON[w][0] for w in draw.words[0] if w >= 0], rng)
        frames = render_frames(float(draw.video[0]), n_frames, size, rng)  # (T, size, size, 3)
        audio = render_audio(float(draw.audio[0]), n_samples, sample_rate, rng)  # (n,)
        write_mp4(clip_path(root, video_id, clip_id), frames, fps, audio, sample_rate)
        rows.append(_label_row(video_id, clip_id, text, draw, mode))
        draws.append(draw)

    table = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    clips = Draws.concatenate(draws)
    oracle = _oracle_table(table, clips, bayes_predictions(process, clips))
    limits = _limits_record(process, seed, monte_carlo, oracle)
    for key, value in limits["expected_mae"].items():
        logger.info("known limit %-16s expected MAE %.3f ± %.3f (test clips %.3f)", key, value["mae"], value["se"],
                    limits["split_mae"]["test"][key])
    logger.info("best constant %.2f: expected MAE %.3f ± %.3f", limits["constant"]["prediction"],
                limits["constant"]["mae"], limits["constant"]["se"])

    _write_atomically(root / LIMITS_FILE, lambda path: path.write_text(json.dumps(limits, indent=2) + "\n"))
    _write_atomically(root / ORACLE_FILE, lambda path: oracle.to_csv(path, index=False))
    _write_atomically(root / "label.csv", lambda path: table.to_csv(path, index=False))
    logger.info("wrote %s, %s and %s (%s)", root / "label.csv", LIMITS_FILE, ORACLE_FILE,
                table["mode"].value_counts().to_dict())
    return table


# --------------------------------------------------------------------------- synthetic_av (VEGAS-like)

AV_DATASET_NAME = "synthetic_av"
# VEGAS's 10 classes (Zhou et al., CVPR 2018), sorted: the reader's class index is the position.
AV_CLASSES: tuple[str, ...] = ("baby_cry", "chainsaw", "dog", "drum", "fireworks", "hammer", "helicopter",
                               "printer", "rail_transport", "water_flowing")
AV_TABLE_COLUMNS: tuple[str, ...] = ("id", "label", "class_name", "fold", "audio_cue", "visual_cue")
AV_SATURATION = 0.85
AV_BASE_PITCH_HZ = 160.0  # f0 of class 0
AV_CLASSES_PER_OCTAVE = 4.0  # f0 = AV_BASE_PITCH_HZ * 2 ** (a / AV_CLASSES_PER_OCTAVE)


def av_hue_rgb(visual_cue: float, n_classes: int) -> np.ndarray:
    """Square colour (float RGB in [0, 255]) of a visual class cue: hue (cue / K) mod 1, saturation 0.85."""
    hue = (visual_cue / n_classes) % 1.0
    sector = hue * 6.0
    # HSV -> RGB at value 1: each channel ramps down with its distance from its own hue sector
    channels = np.clip(np.abs((sector + np.array([0.0, 4.0, 2.0])) % 6.0 - 3.0) - 1.0, 0.0, 1.0)  # (3,)
    return 255.0 * (1.0 - AV_SATURATION * (1.0 - channels))  # (3,)


def av_pitch(audio_cue: float) -> float:
    """Fundamental frequency in Hz of an audio class cue: ``160 * 2 ** (a / 4)``."""
    return AV_BASE_PITCH_HZ * 2.0 ** (audio_cue / AV_CLASSES_PER_OCTAVE)


def render_av_frames(color: np.ndarray, n_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames uint8 (T, size, size, 3): the bouncing square of `render_frames`, in RGB ``color`` (3,)."""
    return bouncing_square(color, n_frames, size, rng, max_brightness=1.0)


def _av_layout(n_clips: int, n_folds: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class (0..K-1) and fold (1..n_folds) of every clip: balanced classes, class-stratified folds."""
    labels = rng.permutation(np.arange(n_clips) % len(AV_CLASSES))  # (N,)
    by_class = np.argsort(labels, kind="stable")  # (N,) clips grouped by class
    folds = np.empty(n_clips, dtype=int)  # (N,)
    folds[by_class] = np.arange(n_clips) % n_folds + 1
    return labels, folds


def _clear_previous_av(root: Path) -> None:
    """Remove a previous synthetic_av generation: its class folders and folds/."""
    owned = [root / name for name in (*AV_CLASSES, FOLDS_DIR)]
    if any(p.exists() for p in owned):
        logger.info("removing previous %s files under %s", AV_DATASET_NAME, root)
    for path in owned:
        if path.is_dir():
            shutil.rmtree(path)


def generate_av(
    root: Path,
    n_clips: int,
    seed: int,
    *,
    seconds: float,
    fps: int,
    size: int,
    sample_rate: int,
    n_folds: int = 5,
    audio_noise: float,
    visual_noise: float,
) -> pd.DataFrame:
    """Write the ``synthetic_av`` dataset (VEGAS layout: class folders + fold files) under ``root``.

    Args:
        root: dataset folder; previous class folders (``AV_CLASSES``) and ``folds/`` in it are removed.
        n_clips: number of clips, >= 10 (every class) and >= n_folds (every fold).
        seed: seed of every random draw.
        seconds, fps, size, sample_rate: clip duration, frame rate, frame side in pixels (even,
            >= 32, not 48 or 72: ``DECORD_UNREADABLE_SIZES``) and audio sample rate.
        n_folds: number of fold files (VEGAS protocol: 5).
        audio_noise, visual_noise: standard deviations of the gaussian noise on each modality's class
            cue, in class spacings (see the module docstring), finite and >= 0.

    Returns:
        One row per clip (columns ``AV_TABLE_COLUMNS``), in id order.

    Deterministic from ``seed``: the same arguments give byte-identical files. Shows a tqdm
    progress bar.
    """
    root = Path(root)
    n_classes = len(AV_CLASSES)
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2 (one test fold and training folds), got {n_folds}")
    if n_clips < max(n_classes, n_folds):
        raise ValueError(f"n_clips={n_clips} is too small: need at least {max(n_classes, n_folds)} clips so that "
                         f"each of the {n_classes} classes and each of the {n_folds} folds gets one")
    for name, value in (("audio_noise", audio_noise), ("visual_noise", visual_noise)):
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"{name} must be a finite value >= 0, got {value!r}")
    _check_generation_args(n_clips, seconds, fps, size, sample_rate)
    n_frames, n_samples = int(round(seconds * fps)), int(round(seconds * sample_rate))

    layout_seq, *clip_seqs = np.random.SeedSequence(seed).spawn(n_clips + 1)
    labels, folds = _av_layout(n_clips, n_folds, np.random.default_rng(layout_seq))
    width = max(5, len(str(n_clips - 1)))
    ids = [f"av_{i:0{width}d}" for i in range(n_clips)]

    _clear_previous_av(root)
    logger.info("generating %s: %d clips of %.3g s in %d classes under %s", AV_DATASET_NAME, n_clips, seconds,
                n_classes, root)
    rows: list[dict[str, object]] = []
    for clip_id, label, fold, clip_seq in tqdm(zip(ids, labels, folds, clip_seqs, strict=True), total=n_clips,
                                               desc=AV_DATASET_NAME, unit="clip"):
        rng = np.random.default_rng(clip_seq)
        eps = rng.normal(0.0, 1.0, size=2)  # (2,) audio, visual
        audio_cue = _clean(label + audio_noise * eps[0])
        visual_cue = _clean(label + visual_noise * eps[1])
        frames = render_av_frames(av_hue_rgb(visual_cue, n_classes), n_frames, size, rng)  # (T, size, size, 3)
        # render_audio's f0 is cue_to_pitch(c) = 220 * 2 ** (c / 3): pick c so that it equals av_pitch(audio_cue)
        audio = render_audio(3.0 * math.log2(av_pitch(audio_cue) / BASE_PITCH_HZ), n_samples, sample_rate, rng)  # (n,)
        class_name = AV_CLASSES[int(label)]
        write_mp4(video_path(root, class_name, clip_id), frames, fps, audio, sample_rate)
        rows.append({"id": clip_id, "label": int(label), "class_name": class_name, "fold": int(fold),
                     "audio_cue": audio_cue, "visual_cue": visual_cue})

    write_fold_files(root, [[i for i, f in zip(ids, folds, strict=True) if f == k] for k in range(1, n_folds + 1)])
    table = pd.DataFrame(rows, columns=list(AV_TABLE_COLUMNS))
    logger.info("wrote %s under %s (clips per fold %s)", AV_DATASET_NAME, root,
                table["fold"].value_counts().sort_index().to_dict())
    return table
