"""Scale by simulation: loading, one teacher epoch and one student epoch on feature stores of CMU-MOSEI's size.

For each size N (`--sizes`, default 1000 5000 23000; CMU-MOSEI has about 23k clips) the script builds,
in a fresh project directory laid out as the pipeline expects (pipeline/core/paths.py), what the stages
upstream of the teacher would have written for a paper-scale run, with random contents:

  data/prepared/bench/manifest.csv   N clips (video ids of 8 clips each), splits train / valid / test in
                                     proportions 0.7 / 0.1 / 0.2 (about CMU-MOSEI's 16.3k / 1.9k / 4.7k),
                                     labels uniform on [-3, 3], transcripts from pipeline.data.synthetic's
                                     `make_transcript` with 2-5 cues drawn from its lexicon (8-40 words)
  data/features/bench/video.h5       `frames` (F, D) float32 per clip, unit-norm rows: F = 12 frames of
                                     ViT-B-32 (D = 512), as extract@video stores them
  data/features/bench/audio.h5       `logmel` (T, 64) float32 per clip, N(-40, 15^2) dB: 10 s at the
                                     params' 10 ms hop, T = 1 + 10 s / 10 ms = 1001 frames, as
                                     extract@audio stores them (raw frames; they are pooled on load)
  data/features/bench/text.h5        `text` (D,) float32 unit-norm per clip, and extra/prompts: K = 7
                                     unit-norm prompt embeddings with the params' classes and templates
  models/bench/teacher/seed_0/preds.h5   a teacher-predictions table with random columns (logits (N, K),
                                     reg, reg_only_<m>, reg_without_<m>, saliency_<m> >= 0), what the
                                     students read from the teacher stage

Every file is written by the project's own writers (`features/store.py` FeatureWriter, 32 clips per chunk as
extract's default batch, then `finalize`; `data/datasets.py` write_manifest; `write_table`), with the
recorded configs the readers require (`extract.feature_config` of params.yaml's `extract` section with
`video.frames` = F and `clip` = ViT-B-32 / openai), so the real readers accept them.

Then each measurement runs in its own fresh subprocess (this script with `--child`), so sizes and
measurements do not share memory:

  build     writing the stores above: the seconds spent in FeatureWriter.write / flush / finalize over
            the three feature files (drawing the random arrays is not counted). Shown for information:
            it is the extract stage's writer, not a target of the issue.
  load      `datasets.read_manifest` + `features.load_features` with the teacher's token counts
            (video F = 12 tokens, audio 32; teacher.video_tokens is set to F, as params.yaml advises for
            uniform sampling): every clip's three arrays read from HDF5 and pooled into in-memory tensors.
  teacher   what the teacher stage does for one seed, cut to one epoch: read_manifest + load_features
            (as `load`, not counted in the time), then `training/teacher.py` train_teacher with params.yaml's
            `teacher` section except train.epochs = 1 (min_epochs 0): it builds the PromptTeacher from the
            feature shapes (D = 512, F = 12, 64 mel bins, A = 32, K = 7), sets the audio statistics, and
            runs `training.fit` for one epoch over the train split (modality dropout, the joint CE + L1
            loss, AdamW, the end-of-epoch resumable checkpoint and dvclive row) and one validation pass
            over the valid split. The time is that call, whole.
  student   what distill@<student> does for one seed, cut to one epoch: read_manifest, (multimodal
            student: load_features with distill.student's token counts, video 8, audio 16, not counted),
            `teacher.read_teacher_predictions` on the table above (not counted), then
            `distillation/train.py` train_student with params.yaml's `distill` section except train.epochs = 1
            (min_epochs 0): it trains the BPE tokenizer on the train transcripts, builds the tiny random
            RoBERTa student (`build_student`), tokenizes every transcript, and runs one epoch of `fit` over
            the train split and one validation pass. The time is that call, whole. Two students: the text
            student with `--text-student` (default va-kd: L1 + Hinton KD on the bin logits) and the
            multimodal student with `--mm-student` (default msd-population: L1 + KD + the three
            modality-specific terms with population weights, four masking patterns per forward).

Time is wall clock (`time.perf_counter`) with `torch.set_num_threads(--threads)` (default: every
available core) and training on `--device` (default auto: the GPU if there is one, else the CPU). It is
shown per clip of the dataset (seconds / N), although an epoch visits only the train split (0.7 N) and
validates on the valid split (0.1 N): the proportions are the same at every size.

Memory: `peak` is the child's peak resident set (`ru_maxrss`: the whole process, interpreter and
imports included); `base` is its resident set right after the imports, before it reads anything
(VmRSS); `above base` = peak - base is what the measurement itself holds at its peak, and is shown per
clip (KiB / clip). For teacher and student the peak includes the loaded features, as in the stage.

Linearity (the issue: "costs must grow at most linearly with the clips"): for each measurement, with
n0 the smallest and n1 the largest size,

  time growth   (t(n1) / t(n0)) / (n1 / n0) = per-clip time at n1 / per-clip time at n0
  RSS growth    the same on `above base`

target <= 1.25 (PASS / MISS): 1 is exactly linear, below 1 means fixed costs amortised. Fixed costs
(model, tokenizer, interpreter pages) make the smallest size look expensive per clip and can hide a
super-linear term, so the table also shows the marginal growth (info): the per-clip cost of the clips
added between the two largest sizes over that between the two smallest, (c(n2) - c(n1)) / (n2 - n1)
over (c(n1) - c(n0)) / (n1 - n0), which is 1 for a linear cost whatever its fixed part.

Run from the repository root (about 30 minutes on 2 cores at the default sizes, 10 of them the 23k
teacher epoch; the 23k stores take ~6.2 GB of disk, 5.5 GB of it audio, while they exist). On a
machine that other processes share, `--threads 1` can be much faster than two threads (a 1k-clip
teacher epoch: 27 s with one thread, 69 s with two, on 2 cores at a load average of ~3.5):

    .venv/bin/python benchmarks/scale.py                      # 1k, 5k, 23k clips
    .venv/bin/python benchmarks/scale.py --threads 1          # the same, one torch thread per process
    .venv/bin/python benchmarks/scale.py --quick              # smoke run: 100, 200, 400 clips
    .venv/bin/python benchmarks/scale.py --sizes 2000 8000 --mm-student msd-none

The table goes to stdout; it is also written as JSON to `--out` for later comparison (default
`~/.cache/mmdistill-bench/results/scale-<timestamp>.json`). The stores are written under `--work`
(default: a temporary directory) and deleted after each size unless `--keep`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # the training loop's progress bars; read when tqdm is imported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

# Project code: every import from `pipeline` is in this block (the library is being reorganised into
# subpackages; only these lines should need to change).
from common import chdir, machine  # noqa: E402  benchmarks/common.py

from pipeline.core import paths  # noqa: E402
from pipeline.core.config import MODALITIES, ClipParams, DistillParams, ExtractParams, TeacherParams, load_section  # noqa: E402
from pipeline.core.runtime import seed_everything, setup_logging  # noqa: E402
from pipeline.data.datasets import MANIFEST_COLUMNS, clip_key, read_manifest, write_manifest  # noqa: E402
from pipeline.data.synthetic import LEXICON, make_transcript  # noqa: E402
from pipeline.distillation.families import parse_student  # noqa: E402
from pipeline.distillation.train import train_student  # noqa: E402
from pipeline.features.arrays import load_features  # noqa: E402
from pipeline.features.extraction import feature_config  # noqa: E402
from pipeline.features.store import FeatureWriter, write_table  # noqa: E402
from pipeline.tasks.table import TASKS  # noqa: E402
from pipeline.training.teacher import read_teacher_predictions, train_teacher  # noqa: E402

SENTIMENT = TASKS.get("sentiment")

log = logging.getLogger("benchmarks.scale")

DATASET = "bench"
SEED = 0
CLIP_MODEL, CLIP_PRETRAINED = "ViT-B-32", "openai"  # recorded in the stores' configs (no model is loaded)
SPLIT_FRACTIONS = {"train": 0.7, "valid": 0.1, "test": 0.2}
CLIPS_PER_VIDEO = 8
WRITE_BATCH = 32  # clips per FeatureWriter chunk: extract.run.batch_size of params.yaml
TARGET_GROWTH = 1.25
MEASUREMENTS = ("build", "load", "teacher", "student-text", "student-mm")
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmdistill-bench"


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class Setup:
    """params.yaml's sections with the paper-scale shapes and one-epoch training (see the docstring)."""

    extract: ExtractParams
    clip: ClipParams
    teacher: TeacherParams
    distill: DistillParams
    frames: int
    dim: int
    audio_frames: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Setup:
        params = REPO / "params.yaml"
        extract: ExtractParams = load_section("extract", params)
        extract = dataclasses.replace(extract, video=dataclasses.replace(extract.video, sampling="uniform",
                                                                         frames=args.frames))
        clip = dataclasses.replace(load_section("clip", params), model=CLIP_MODEL, pretrained=CLIP_PRETRAINED)
        teacher: TeacherParams = load_section("teacher", params)
        teacher = dataclasses.replace(teacher, video_tokens=args.frames, train=one_epoch(teacher.train, args.device))
        distill: DistillParams = load_section("distill", params)
        distill = dataclasses.replace(distill, train=one_epoch(distill.train, args.device))
        hop = extract.audio.hop_ms / 1000.0
        return cls(extract=extract, clip=clip, teacher=teacher, distill=distill, frames=args.frames, dim=args.dim,
                   audio_frames=1 + int(round(args.audio_seconds / hop)))


def one_epoch(train: Any, device: str) -> Any:
    return dataclasses.replace(train, epochs=1, min_epochs=0, device=device)


# --------------------------------------------------------------------------- the simulated stores


def unit_rows(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random float32 rows of unit norm (CLIP embeddings are normalised): shape (..., D)."""
    x = rng.standard_normal(shape, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def simulated_manifest(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """N clips with splits in SPLIT_FRACTIONS (shuffled), labels U[-3, 3] and synthetic transcripts."""
    counts = [int(round(f * n)) for f in SPLIT_FRACTIONS.values()]
    counts[0] = n - sum(counts[1:])
    splits = rng.permutation(np.repeat(list(SPLIT_FRACTIONS), counts))
    words = [entry for entry, _ in LEXICON]
    texts = [make_transcript([words[k] for k in rng.integers(len(words), size=rng.integers(2, 6))], rng)
             for _ in range(n)]
    video_ids = [f"v{i // CLIPS_PER_VIDEO:05d}" for i in range(n)]
    clip_ids = [str(i % CLIPS_PER_VIDEO) for i in range(n)]
    return pd.DataFrame({"id": [clip_key(v, c) for v, c in zip(video_ids, clip_ids, strict=True)],
                         "split": splits, "label": np.round(rng.uniform(-3.0, 3.0, n), 4), "text": texts,
                         "video": [f"data/raw/{DATASET}/Raw/{v}/{c}.mp4" for v, c in zip(video_ids, clip_ids,
                                                                                         strict=True)],
                         "video_id": video_ids, "clip_id": clip_ids}, columns=list(MANIFEST_COLUMNS))


def write_store(modality: str, ids: Sequence[str], setup: Setup, rng: np.random.Generator) -> float:
    """Write data/features/<DATASET>/<modality>.h5 with FeatureWriter; seconds spent in the writer."""
    config = feature_config(modality, setup.extract, setup.clip, None)
    writer = FeatureWriter(paths.features(DATASET, modality), config, {"benchmark": "benchmarks/scale.py"})
    spent = 0.0
    if modality == "text":
        text = setup.extract.text
        prompts = unit_rows(rng, (len(text.classes), setup.dim))  # (K, D)
        start = time.perf_counter()
        writer.write_extra("prompts", {"embeddings": prompts, "classes": list(text.classes),
                                       "templates": list(text.templates)})
        spent += time.perf_counter() - start
    for first in range(0, len(ids), WRITE_BATCH):
        chunk = ids[first : first + WRITE_BATCH]
        if modality == "video":
            arrays = [{"frames": x} for x in unit_rows(rng, (len(chunk), setup.frames, setup.dim))]  # (F, D) each
        elif modality == "audio":
            mel = rng.standard_normal((len(chunk), setup.audio_frames, setup.extract.audio.n_mels), dtype=np.float32)
            arrays = [{"logmel": x} for x in 15.0 * mel - 40.0]  # (T, n_mels) each, dB
        else:
            arrays = [{"text": x} for x in unit_rows(rng, (len(chunk), setup.dim))]  # (D,) each
        start = time.perf_counter()
        for clip_id, a in zip(chunk, arrays, strict=True):
            writer.write(clip_id, a)
        writer.flush()
        spent += time.perf_counter() - start
    start = time.perf_counter()
    writer.finalize()
    return spent + time.perf_counter() - start


def write_teacher_table(manifest: pd.DataFrame, k: int, rng: np.random.Generator) -> None:
    """models/<DATASET>/teacher/seed_<SEED>/preds.h5 with random columns of the teacher stage's names."""
    n = len(manifest)
    columns: dict[str, Any] = {"id": manifest["id"].tolist(), "split": manifest["split"].tolist(),
                               "label": manifest["label"].to_numpy(np.float32),
                               "logits": rng.standard_normal((n, k), dtype=np.float32),
                               "reg": rng.uniform(-3, 3, n).astype(np.float32)}
    for m in MODALITIES:
        columns[f"reg_only_{m}"] = rng.uniform(-3, 3, n).astype(np.float32)
        columns[f"reg_without_{m}"] = rng.uniform(-3, 3, n).astype(np.float32)
        columns[f"saliency_{m}"] = rng.exponential(0.5, n).astype(np.float32)
    write_table(paths.teacher_predictions(DATASET, SEED), columns, config={"benchmark": "benchmarks/scale.py"})


def build(n: int, setup: Setup) -> dict[str, float]:
    """Every simulated input of the teacher and distill stages, in the current directory."""
    rng = np.random.default_rng(SEED)
    manifest = simulated_manifest(n, rng)
    write_manifest(manifest, paths.manifest(DATASET))
    ids = manifest["id"].tolist()
    seconds = {m: write_store(m, ids, setup, rng) for m in MODALITIES}
    write_teacher_table(manifest, len(setup.extract.text.classes), rng)
    sizes = {f"{m}_mib": paths.features(DATASET, m).stat().st_size / 2**20 for m in MODALITIES}
    return {"seconds": sum(seconds.values()), **{f"{m}_s": s for m, s in seconds.items()}, **sizes}


# --------------------------------------------------------------------------- the measurements (children)


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now); 0 where there is no /proc."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def load_average() -> float:
    """The 1-minute load average (other processes competing for the cores make every time longer)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def measure(what: str, n: int, setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in the current directory (a project of n clips); its seconds and side figures."""
    if what == "build":
        return build(n, setup)
    start = time.perf_counter()
    manifest = read_manifest(paths.manifest(DATASET))
    manifest_s = time.perf_counter() - start
    labels = torch.tensor(manifest["label"].to_numpy(), dtype=torch.float32)
    splits = manifest["split"].to_numpy()
    if what in ("load", "teacher"):
        t = setup.teacher
        start = time.perf_counter()
        data = load_features(manifest, DATASET, setup.clip, setup.extract, t.video_tokens, t.audio_tokens)
        load_s = time.perf_counter() - start
        if what == "load":
            return {"seconds": manifest_s + load_s, "manifest_s": manifest_s, "load_features_s": load_s,
                    "tensor_mib": sum(x.numel() * x.element_size() for x in (data.video, data.audio, data.text))
                    / 2**20}
        seed_everything(SEED)
        start = time.perf_counter()
        _, best = train_teacher(data, labels, splits, t, SEED, DATASET, SENTIMENT)
        return {"seconds": time.perf_counter() - start, "load_s": manifest_s + load_s, "best": best}
    student = parse_student(args.text_student if what == "student-text" else args.mm_student)
    features, load_s = None, 0.0
    if SENTIMENT.student_kinds[student.family.name] != "text":
        s = setup.distill.student
        start = time.perf_counter()
        features = load_features(manifest, DATASET, setup.clip, setup.extract, s.video_tokens, s.audio_tokens)
        load_s = time.perf_counter() - start
    teacher = read_teacher_predictions(manifest, paths.teacher_predictions(DATASET, SEED))
    seed_everything(SEED)
    start = time.perf_counter()
    _, _, best = train_student(SENTIMENT, student, manifest["text"].tolist(), labels, splits, teacher, features,
                               setup.distill, SEED, DATASET)
    return {"seconds": time.perf_counter() - start, "load_s": manifest_s + load_s, "student": student.name,
            "best": best}


def child(args: argparse.Namespace) -> None:
    """In a fresh process: one measurement in the project `--project`; prints its figures as JSON."""
    torch.set_num_threads(args.threads)
    base = _status_kib("VmRSS")  # after the imports, before any work
    setup = Setup.from_args(args)
    load_before = load_average()
    with chdir(args.project):
        result = measure(args.child, args.clips, setup, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({**result, "load_average": [load_before, load_average()], "base_kib": base, "peak_kib": peak},
                     default=str))


def child_argv(args: argparse.Namespace, what: str, project: Path, n: int) -> list[str]:
    flags = {"--child": what, "--project": project, "--clips": n, "--frames": args.frames, "--dim": args.dim,
             "--audio-seconds": args.audio_seconds, "--threads": args.threads, "--device": args.device,
             "--text-student": args.text_student, "--mm-student": args.mm_student}
    return [sys.executable, str(Path(__file__).resolve()), *[str(x) for kv in flags.items() for x in kv]]


def run_child(args: argparse.Namespace, what: str, project: Path, n: int) -> dict[str, Any]:
    """Run one measurement in a fresh subprocess; its JSON report, with the wall time of the whole process."""
    start = time.perf_counter()
    done = subprocess.run(child_argv(args, what, project, n), capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"the {what} child on {n} clips failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["process_s"] = time.perf_counter() - start
    log.info("%-12s %6d clips: %7.1f s, peak RSS %6.0f MiB (base %.0f)", what, n, report["seconds"],
             report["peak_kib"] / 1024, report["base_kib"] / 1024)
    return report


# --------------------------------------------------------------------------- table


def growth(costs: Sequence[float], sizes: Sequence[int]) -> float:
    """(c(n1) / c(n0)) / (n1 / n0) for the smallest and largest sizes."""
    return (costs[-1] / costs[0]) / (sizes[-1] / sizes[0]) if costs[0] > 0 else float("nan")


def marginal(costs: Sequence[float], sizes: Sequence[int]) -> float | None:
    """Per-clip cost of the clips added between the two largest sizes over that between the two smallest."""
    if len(sizes) < 3:
        return None
    low = (costs[1] - costs[0]) / (sizes[1] - sizes[0])
    high = (costs[-1] - costs[-2]) / (sizes[-1] - sizes[-2])
    return high / low if low > 0 else float("nan")


def verdict(value: float, info: bool = False) -> str:
    if info:
        return "info"
    return "PASS" if value <= TARGET_GROWTH else "MISS"


def format_table(header: Sequence[str], body: Sequence[Sequence[str]], align: str) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, align, widths, strict=True)).rstrip()
             for r in [header, *body]]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def label(what: str, args: argparse.Namespace) -> str:
    return {"student-text": f"student {args.text_student}", "student-mm": f"student {args.mm_student}"}.get(what, what)


def measurement_rows(results: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace) -> list[list[str]]:
    rows = []
    for what, by_size in results.items():
        for n, r in by_size.items():
            peak, above = r["peak_kib"] / 1024, (r["peak_kib"] - r["base_kib"]) / 1024
            rows.append([label(what, args), f"{n}", f"{r['seconds']:.1f}", f"{1000 * r['seconds'] / n:.2f}",
                         f"{peak:.0f}", f"{above:.0f}", f"{1024 * above / n:.1f}"])
    return rows


def scaling_rows(results: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace) -> list[list[str]]:
    rows = []
    for what, by_size in results.items():
        sizes = sorted(by_size)
        if len(sizes) < 2:
            continue
        info = what == "build"
        for kind, costs in (("time", [by_size[n]["seconds"] for n in sizes]),
                            ("RSS", [by_size[n]["peak_kib"] - by_size[n]["base_kib"] for n in sizes])):
            g, m = growth(costs, sizes), marginal(costs, sizes)
            rows.append([label(what, args), kind, f"{g:.2f}", "" if m is None else f"{m:.2f}",
                         "info" if info else f"<= {TARGET_GROWTH}", verdict(g, info)])
    return rows


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 23000], help="clips per simulated dataset")
    p.add_argument("--quick", action="store_true", help="smoke run: sizes 100 200 400")
    p.add_argument("--measurements", nargs="+", default=list(MEASUREMENTS), choices=MEASUREMENTS,
                   help="what to measure (build always runs: the others read what it writes)")
    p.add_argument("--frames", type=int, default=12, help="F: CLIP frames per clip (ViT-B-32 setting: 12)")
    p.add_argument("--dim", type=int, default=512, help="D: CLIP embedding size (ViT-B-32: 512)")
    p.add_argument("--audio-seconds", type=float, default=10.0, help="clip length behind the log-mel frames")
    p.add_argument("--text-student", default="va-kd", help="the text student trained for one epoch")
    p.add_argument("--mm-student", default="msd-population", help="the multimodal student trained for one epoch")
    p.add_argument("--device", default="auto", help="teacher.train.device and distill.train.device")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch.set_num_threads")
    p.add_argument("--work", type=Path, default=None, help="where the stores are written (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep each size's project directory")
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON result (default: <cache>/results)")
    p.add_argument("--child", choices=MEASUREMENTS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--project", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--clips", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [100, 200, 400]
    args.sizes = sorted(set(args.sizes))
    for what in ("student-text", "student-mm"):
        student = parse_student(args.text_student if what == "student-text" else args.mm_student)
        want = "text" if what == "student-text" else "multimodal"
        kind = SENTIMENT.student_kinds[student.family.name]
        if kind != want:
            p.error(f"--{what.split('-')[1]}-student {student.name} trains a {kind} student, "
                    f"expected a {want} one (tasks/sentiment.py student_kinds)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    if args.child is not None:
        child(args)
        return
    start = time.perf_counter()
    measurements = ["build", *(m for m in args.measurements if m != "build")]
    results: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in measurements}
    work = Path(tempfile.mkdtemp(prefix="mmdistill-scale-", dir=args.work))
    try:
        for n in args.sizes:
            project = work / f"clips-{n}"
            project.mkdir()
            for what in measurements:
                results[what][n] = run_child(args, what, project, n)
            if not args.keep:
                shutil.rmtree(project)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log.info("projects kept in %s", work)
    total = time.perf_counter() - start

    info = machine()
    build = results["build"][args.sizes[-1]]
    rows, scaling = measurement_rows(results, args), scaling_rows(results, args)
    loads = [x for by_size in results.values() for r in by_size.values() for x in r["load_average"]]
    notes = [
        f"stores per clip: video ({args.frames}, {args.dim}) float32, audio (1 + {args.audio_seconds:g} s / 10 ms, 64) "
        f"float32 log-mel, text ({args.dim},) float32; at {args.sizes[-1]} clips the files take "
        + ", ".join(f"{m} {build[f'{m}_mib']:.0f} MiB" for m in MODALITIES),
        "time: build = FeatureWriter calls only; load = read_manifest + load_features; teacher / student = "
        "train_teacher / train_student with train.epochs = 1 (model build, one epoch on the train split (70 %), "
        "one validation pass (10 %)), after loading what they read (not counted)",
        "RSS: fresh process per row; peak = ru_maxrss; above base = peak - VmRSS after the imports",
        f"growth = per-clip cost at {args.sizes[-1]} / at {args.sizes[0]}; marginal = per-clip cost of the clips "
        "added between the two largest sizes / between the two smallest (1 = linear, fixed costs cancel)",
        "stores are read right after they were written, so from the page cache when it holds them",
        f"1-minute load average at the start and end of the measurements: {min(loads):.1f} to {max(loads):.1f} "
        f"on {info['cores']} cores (above the core count, other processes competed for them)",
    ]
    print(f"\nscale benchmark: sizes {args.sizes}, {info['cores']} cores ({info['cpu']}), torch {info['torch']} "
          f"with {args.threads} threads, GPU: {info['gpu'] or 'none'}")
    print(format_table(["measurement", "clips", "seconds", "ms/clip", "peak MiB", "above base MiB", "KiB/clip"],
                       rows, "<>>>>>>"))
    print()
    print(format_table(["measurement", "cost", "growth", "marginal", "target", "result"], scaling, "<<>><<"))
    for note in notes:
        print(f"  * {note}")
    print(f"  * total benchmark time {total:.0f} s")

    out = args.out or DEFAULT_CACHE / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"scale-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "machine": info,
               "rows": rows, "scaling": scaling, "notes": notes, "raw": results, "total_seconds": total}
    path.write_text(json.dumps(payload, indent=2, default=str))
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
