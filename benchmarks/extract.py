"""Benchmark of the extract@video stage: where the time goes, and how far it is from its bounds.

Generates N synthetic clips once (cached, deterministic) and prints one table with the time per
clip and the clips/s of:

  (a) decode      `pipeline.extract.LoadFrames` on every clip, sequentially in this process: decode
                  the F sampled frames (`media.read_frames`, the chosen backend) and preprocess them
                  (`ImagePreprocess`), i.e. exactly the work a DataLoader worker does per clip.
  (b) encode      `FrozenClip.encode_images` on preprocessed batches of the size the stage uses
                  (B clips x F frames, the last batch partial), including the concatenation and the
                  conversion of the embeddings to numpy. Inputs are clips decoded in (a).
  (c) full stage  `pipeline.extract.run("video", ...)` in-process, on a manifest of the N clips in a
                  fresh temporary project directory, once per `--workers` count. Nothing is excluded:
                  model load, DataLoader start-up, chunked HDF5 writes and the final merge are all in
                  (c). The stage is run once on 2 clips beforehand so that one-time imports (decord,
                  librosa, h5py, ...) are paid outside the timing; the model load that every run
                  still pays is measured on its own and shown as a footnote.
  (d) naive       for each clip: PyAV decodes *every* frame (`to_ndarray("rgb24")`, PyAV's default
                  codec threading), keeps the F frames the stage samples (same indices), then
                  preprocesses and encodes them one at a time (batch size 1). Nothing is written.

and the ratios the issue sets targets for:

  workers = 0   (c) / ((a) + (b))     <= 1.15   decoding and encoding alternate in one process
  workers > 0   (c) / max((a), (b))   <= 1.10   decoding overlaps encoding; only meaningful with at
                                                least workers + 1 cores (marked n/a otherwise: the
                                                decode workers and the encoder share the cores)
  speedup       (d) / (c)             >= 5

Memory: the full stage is run for N and for 4N clips, each in a fresh subprocess (this script with
`--rss-child`), which reports its own peak RSS (`ru_maxrss` of itself, plus the largest worker's
when `--rss-workers` > 0). The 4N manifest lists the N files four times under distinct clip ids, so
the stage does 4x the work and writes 4x the features. Target: RSS(4N) / RSS(N) < 1.2, which holds
when features are written as they are computed rather than gathered in memory.

All timings in this process use `torch.set_num_threads(--threads)` (default: every available core);
DataLoader workers run with one thread each (PyTorch's default) and decode single-threaded (as the
stage configures decord and PyAV). Timings are wall clock (`time.perf_counter`); with `--repeats R`
each of (a), (b), (c) is measured R times and the fastest run is kept.

Run from the repository root (first run generates the clips, ~1 s per clip per core at 224x224):

    .venv/bin/python benchmarks/extract.py                          # defaults, a few minutes on 2 cores
    .venv/bin/python benchmarks/extract.py --clips 32 --no-rss      # quick look
    .venv/bin/python benchmarks/extract.py --backend pyav --workers 0 2 4

The table goes to stdout; it is also written as JSON to `--out` for later comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # the stage's progress bars; read when tqdm is imported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from common import chdir, machine  # noqa: E402  benchmarks/common.py

from pipeline import extract  # noqa: E402
from pipeline.core.config import ClipParams, ExtractParams, load_section  # noqa: E402
from pipeline.core.runtime import resolve_device, seed_everything, setup_logging  # noqa: E402
from pipeline.data.datasets import MANIFEST_COLUMNS, clip_key, write_manifest  # noqa: E402
from pipeline.data.synthetic import render_frames, write_mp4  # noqa: E402
from pipeline.features import media  # noqa: E402
from pipeline.features.clip import FrozenClip, load_clip  # noqa: E402
from pipeline.features.store import FeatureReader  # noqa: E402

log = logging.getLogger("benchmarks.extract")

DATASET = "bench"
SEED = 0
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmdistill-bench"
TARGET_SERIAL, TARGET_OVERLAP, TARGET_SPEEDUP, TARGET_RSS = 1.15, 1.10, 5.0, 1.2


# --------------------------------------------------------------------------- clips


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """The synthetic clips: `count` H.264 mp4s (no audio) of `seconds` at `fps`, `size` x `size`."""

    count: int
    seconds: float
    fps: int
    size: int
    seed: int = SEED

    @property
    def frames(self) -> int:
        return int(round(self.seconds * self.fps))

    def folder(self, cache: Path) -> Path:
        return cache / f"clips-{self.seconds:g}s-{self.fps}fps-{self.size}px-seed{self.seed}"


def _write_clip(path: Path, index: int, spec: ClipSpec) -> None:
    """Clip `index`: the synthetic dataset's bouncing square (colour cue drawn from the index's seed)."""
    rng = np.random.default_rng([spec.seed, index])
    frames = render_frames(float(rng.uniform(-3.0, 3.0)), spec.frames, spec.size, rng)  # (T, S, S, 3)
    write_mp4(path, frames, spec.fps, None, 16000)


def ensure_clips(spec: ClipSpec, cache: Path, jobs: int) -> list[Path]:
    """The `spec.count` clip files, generating the missing ones (files are written atomically)."""
    folder = spec.folder(cache)
    paths = [folder / f"clip_{i:05d}.mp4" for i in range(spec.count)]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        log.info("generating %d of %d clips in %s (%d processes)", len(missing), spec.count, folder, jobs)
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(_write_clip, [paths[i] for i in missing], missing, [spec] * len(missing)))
        log.info("generated %d clips in %.1f s", len(missing), time.perf_counter() - start)
    else:
        log.info("reusing %d clips in %s", spec.count, folder)
    return paths


def keyframe_interval(path: Path) -> float:
    """Mean number of frames per keyframe (GOP length) of a clip, from its packets."""
    with av.open(str(path)) as container:
        packets = [pk for pk in container.demux(video=0) if pk.size > 0]
    return len(packets) / max(1, sum(pk.is_keyframe for pk in packets))


def write_bench_manifest(paths: Sequence[Path], project: Path, repeat: int = 1) -> list[str]:
    """data/prepared/<DATASET>/manifest.csv under `project` listing `paths` `repeat` times; the clip ids."""
    rows = [{"id": clip_key(f"rep{r}", f"{i:05d}"), "split": "train", "label": 0.0, "text": "",
             "video": str(p), "video_id": f"rep{r}", "clip_id": f"{i:05d}"}
            for r in range(repeat) for i, p in enumerate(paths)]
    write_manifest(pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)), project / "data/prepared" / DATASET
                   / "manifest.csv")
    return [row["id"] for row in rows]


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every measurement shares: the stage's params (params.yaml overridden by the CLI)."""

    params: ExtractParams
    clip: ClipParams
    device: torch.device

    @classmethod
    def from_args(cls, args: argparse.Namespace, workers: int = 0) -> Setup:
        base: ExtractParams = load_section("extract", REPO / "params.yaml")
        clip: ClipParams = load_section("clip", REPO / "params.yaml")
        run = dataclasses.replace(base.run, device=args.device, batch_size=args.batch_size, num_workers=workers,
                                  precision=args.precision)
        video = dataclasses.replace(base.video, backend=args.backend, sampling="uniform", frames=args.frames)
        return cls(params=dataclasses.replace(base, run=run, video=video),
                   clip=dataclasses.replace(clip, model=args.model, pretrained=args.pretrained),
                   device=resolve_device(args.device))

    def with_workers(self, workers: int) -> Setup:
        run = dataclasses.replace(self.params.run, num_workers=workers)
        return dataclasses.replace(self, params=dataclasses.replace(self.params, run=run))

    def load_clip(self) -> FrozenClip:
        return load_clip(self.clip.model, self.clip.pretrained, self.device, self.clip.init_seed,
                         self.params.run.precision)

    def loader(self, clip: FrozenClip) -> extract.LoadFrames:
        """The per-clip decode + preprocess work of the stage run without workers (decoder threads: auto)."""
        return extract.LoadFrames(media.FrameSampler.from_params(self.params.video), self.params.video.backend,
                                  clip.preprocess, threads=0)


def best_of(repeats: int, run_once: Callable[[], float]) -> float:
    return min(run_once() for _ in range(max(1, repeats)))


# --------------------------------------------------------------------------- measurements


def time_decode(paths: Sequence[Path], load: extract.LoadFrames, keep: int) -> tuple[float, list[torch.Tensor]]:
    """(a): seconds to load every clip sequentially, and the first `keep` preprocessed clips (F, 3, S, S)."""
    kept: list[torch.Tensor] = []
    start = time.perf_counter()
    for path in paths:
        x = load(path)
        if len(kept) < keep:
            kept.append(x)
    return time.perf_counter() - start, kept


def batch_sizes(n: int, batch: int) -> list[int]:
    return [batch] * (n // batch) + ([n % batch] if n % batch else [])


def time_encode(clip: FrozenClip, clips: Sequence[torch.Tensor], n: int, batch: int) -> float:
    """(b): seconds to encode `n` clips in batches of `batch` clips, as the stage does (cat, encode, split)."""
    start = time.perf_counter()
    for size in batch_sizes(n, batch):
        emb = clip.encode_images(torch.cat(list(clips[:size])))  # (size * F, D)
        _ = [e.numpy() for e in emb.split([len(x) for x in clips[:size]])]
    return time.perf_counter() - start


def time_stage(setup: Setup, paths: Sequence[Path], probe_id: str | None = None) -> tuple[float, np.ndarray | None]:
    """(c): seconds of `extract.run("video")` on `paths` in a fresh project dir; the features of `probe_id`."""
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp, chdir(Path(tmp)):
        write_bench_manifest(paths, Path(tmp))
        start = time.perf_counter()
        extract.run("video", DATASET, setup.params, setup.clip)
        seconds = time.perf_counter() - start
        probe = None
        if probe_id is not None:
            with FeatureReader(Path("data/features") / DATASET / "video.h5") as reader:
                probe = reader.read(probe_id)["frames"]  # (F, D)
    return seconds, probe


def naive_clip(path: Path, clip: FrozenClip, frames: int) -> np.ndarray:
    """(d) for one clip: decode every frame with PyAV, keep the sampled ones, encode them one at a time."""
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]  # T x (H, W, 3)
    picked = media.uniform_indices(len(decoded), frames)  # (F,) the stage's frames
    embeddings = [clip.encode_images(clip.preprocess(torch.from_numpy(decoded[i][None]))) for i in picked]
    return torch.cat(embeddings).numpy()  # (F, D)


def time_naive(paths: Sequence[Path], clip: FrozenClip, frames: int) -> tuple[float, np.ndarray]:
    """(d): seconds of the naive loop over every clip, and the embeddings of the first clip (F, D)."""
    start = time.perf_counter()
    first = [naive_clip(p, clip, frames) for p in paths][0]
    return time.perf_counter() - start, first


# --------------------------------------------------------------------------- memory (subprocesses)


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now, VmHWM: peak since start or last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_child(args: argparse.Namespace) -> None:
    """In a fresh process: run the stage on the manifest under `args.rss_child`, print peak RSS as JSON.

    `rss_self_kib` is the process's peak (ru_maxrss, imports included); `stage_growth_kib` is how far
    the resident set rose above its level at the start of the stage (VmHWM after a reset).
    """
    torch.set_num_threads(args.threads)
    seed_everything(SEED)
    setup = Setup.from_args(args, workers=args.rss_workers)
    before = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    with chdir(Path(args.rss_child)):
        start = time.perf_counter()
        extract.run("video", DATASET, setup.params, setup.clip)
        seconds = time.perf_counter() - start
    growth = _status_kib("VmHWM") - before if reset else None
    print(json.dumps({"rss_before_kib": before, "stage_growth_kib": growth,
                      "rss_self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "rss_children_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                      "seconds": seconds}))


def child_argv(args: argparse.Namespace, project: Path) -> list[str]:
    flags = {"--frames": args.frames, "--batch-size": args.batch_size, "--model": args.model,
             "--pretrained": args.pretrained, "--backend": args.backend, "--device": args.device,
             "--precision": args.precision, "--threads": args.threads, "--rss-workers": args.rss_workers}
    return [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(project),
            *[str(x) for kv in flags.items() for x in kv]]


def peak_rss(args: argparse.Namespace, paths: Sequence[Path], repeat: int) -> dict[str, float]:
    """Peak RSS (MiB) of a fresh process running the stage on `paths` listed `repeat` times."""
    with tempfile.TemporaryDirectory(prefix="bench-extract-rss-") as tmp:
        write_bench_manifest(paths, Path(tmp), repeat=repeat)
        done = subprocess.run(child_argv(args, Path(tmp)), capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"the --rss-child run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    workers = report["rss_children_kib"] if args.rss_workers > 0 else 0
    return {"clips": len(paths) * repeat, "peak_mib": (report["rss_self_kib"] + workers) / 1024,
            "self_mib": report["rss_self_kib"] / 1024, "before_stage_mib": report["rss_before_kib"] / 1024,
            "worker_mib": workers / 1024, "seconds": report["seconds"],
            "stage_growth_mib": None if report["stage_growth_kib"] is None else report["stage_growth_kib"] / 1024}


# --------------------------------------------------------------------------- table


@dataclasses.dataclass
class Row:
    name: str
    seconds_per_clip: float | None = None
    ratio: float | None = None
    ratio_of: str = ""
    target: str = ""
    result: str = ""
    value: str = ""  # shown instead of s/clip and clips/s (memory rows)

    @property
    def clips_per_s(self) -> float | None:
        return 1.0 / self.seconds_per_clip if self.seconds_per_clip else None

    def cells(self) -> list[str]:
        if self.value:
            time_cells = [self.value, ""]
        elif self.seconds_per_clip is not None:
            time_cells = [f"{self.seconds_per_clip:.4f}", f"{self.clips_per_s:.1f}"]
        else:
            time_cells = ["", ""]
        ratio = f"{self.ratio:.2f} x {self.ratio_of}".rstrip() if self.ratio is not None else ""
        return [self.name, *time_cells, ratio, self.target, self.result]


def verdict(ok: bool, applicable: bool = True) -> str:
    return ("PASS" if ok else "MISS") + ("" if applicable else " (n/a)")


def format_table(rows: Sequence[Row]) -> str:
    header = ["measurement", "s/clip", "clips/s", "ratio", "target", "result"]
    body = [row.cells() for row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    align = ["<", ">", ">", "<", "<", "<"]
    lines = ["  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, align, widths, strict=True)).rstrip()
             for r in [header, *body]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=96, help="N clips (the RSS check also runs 4N)")
    p.add_argument("--seconds", type=float, default=8.0, help="clip duration")
    p.add_argument("--fps", type=int, default=25, help="native frame rate of the clips")
    p.add_argument("--size", type=int, default=224, help="frame height and width of the clips")
    p.add_argument("--frames", type=int, default=8, help="F: frames sampled per clip (extract.video.frames)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts for (c)")
    p.add_argument("--batch-size", type=int, default=32, help="B: clips per encoder batch (extract.run.batch_size)")
    p.add_argument("--model", default="mmdistill-tiny", help="clip.model")
    p.add_argument("--pretrained", default="", help='clip.pretrained ("" = random weights)')
    p.add_argument("--backend", default="decord", choices=media.BACKENDS, help="extract.video.backend")
    p.add_argument("--device", default="auto", help="extract.run.device")
    p.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "bf16"), help="extract.run.precision")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch.set_num_threads")
    p.add_argument("--repeats", type=int, default=1, help="measure (a), (b), (c) this many times, keep the fastest")
    p.add_argument("--rss-workers", type=int, default=0, help="DataLoader workers of the RSS runs")
    p.add_argument("--no-rss", action="store_true", help="skip the N / 4N peak RSS runs")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where generated clips are kept")
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON result (default: <cache>/results)")
    p.add_argument("--rss-child", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


@dataclasses.dataclass
class Results:
    """Raw numbers of one benchmark run (seconds per clip unless said otherwise)."""

    clips: int
    decode: float  # (a)
    encode: float  # (b)
    stage: dict[int, float]  # (c) per worker count
    naive: float  # (d)
    model_load_s: float  # one load_clip, paid by every (c) run
    naive_vs_stage: float  # max |embedding difference| of clip 0 between (d) and (c)
    keyframe_interval: float  # frames per keyframe of the clips
    rss: list[dict[str, float]]  # peak RSS runs for N and 4N clips


def measure(args: argparse.Namespace, setup: Setup, paths: Sequence[Path]) -> Results:
    """(a), (b), (c) per worker count, (d), then the RSS subprocesses."""
    n = len(paths)
    start = time.perf_counter()
    clip = setup.load_clip()
    load_s = time.perf_counter() - start
    load = setup.loader(clip)

    log.info("warm-up: decode, encode and a 2-clip stage run")
    time_encode(clip, time_decode(paths[:2], load, 2)[1], 2, args.batch_size)
    time_stage(setup, paths[:2])

    log.info("(a) decode + preprocess %d clips", n)
    decoded = [time_decode(paths, load, keep=min(args.batch_size, n)) for _ in range(max(1, args.repeats))]
    decode, kept = min(s for s, _ in decoded) / n, decoded[0][1]

    log.info("(b) encode %d clips in batches of %d", n, args.batch_size)
    time_encode(clip, kept, min(args.batch_size, n), args.batch_size)  # warm-up at the full batch size
    encode = best_of(args.repeats, lambda: time_encode(clip, kept, n, args.batch_size)) / n

    stage: dict[int, float] = {}
    probe = None
    for workers in args.workers:
        log.info("(c) full stage, %d workers", workers)
        runs = [time_stage(setup.with_workers(workers), paths, clip_key("rep0", f"{0:05d}"))
                for _ in range(max(1, args.repeats))]
        stage[workers] = min(s for s, _ in runs) / n
        probe = runs[0][1]

    log.info("(d) naive loop over %d clips", n)
    naive_s, naive_first = time_naive(paths, clip, args.frames)

    rss = []
    for repeat in () if args.no_rss else (1, 4):
        log.info("peak RSS: stage on %d clips in a fresh process", n * repeat)
        rss.append(peak_rss(args, paths, repeat))
    return Results(clips=n, decode=decode, encode=encode, stage=stage, naive=naive_s / n, model_load_s=load_s,
                   naive_vs_stage=float(np.abs(naive_first - probe).max()) if probe is not None else float("nan"),
                   keyframe_interval=keyframe_interval(paths[0]), rss=rss)


def stage_rows(r: Results, cores: int) -> list[Row]:
    a, b = r.decode, r.encode
    rows = []
    for workers, c in r.stage.items():
        if workers == 0:
            ratio = c / (a + b)
            rows.append(Row("(c) full stage, 0 workers", c, ratio, "(a)+(b)", f"<= {TARGET_SERIAL}",
                            verdict(ratio <= TARGET_SERIAL)))
            continue
        ratio = c / max(a, b)
        rows.append(Row(f"(c) full stage, {workers} workers", c, ratio, "max(a,b)", f"<= {TARGET_OVERLAP}",
                        verdict(ratio <= TARGET_OVERLAP, applicable=cores >= workers + 1)))
        parallel = min(workers, cores)
        rows.append(Row(f"    vs perfect parallel decode: max((a)/{parallel}, (b))", None, c / max(a / parallel, b),
                        "", "info"))
    return rows


def table_rows(r: Results, args: argparse.Namespace, cores: int) -> list[Row]:
    a, b = r.decode, r.encode
    rows = [Row("(a) decode + preprocess sampled frames", a),
            Row(f"(b) encode, batches of {args.batch_size} clips x {args.frames} frames", b),
            Row("    bound, 0 workers: (a) + (b)", a + b),
            Row("    bound, workers: max((a), (b))", max(a, b)),
            *stage_rows(r, cores),
            Row("(d) naive: PyAV every frame, encode 1 by 1", r.naive)]
    for workers, c in r.stage.items():
        rows.append(Row(f"    speedup (d) / (c), {workers} workers", None, r.naive / c, "", f">= {TARGET_SPEEDUP:g}",
                        verdict(r.naive / c >= TARGET_SPEEDUP)))
    for run in r.rss:
        growth = "" if run["stage_growth_mib"] is None else f" (stage +{run['stage_growth_mib']:.0f})"
        rows.append(Row(f"peak RSS, stage on {run['clips']} clips", value=f"{run['peak_mib']:.0f} MiB{growth}"))
    if len(r.rss) == 2:
        ratio = r.rss[1]["peak_mib"] / r.rss[0]["peak_mib"]
        rows.append(Row("    RSS(4N) / RSS(N)", None, ratio, "", f"< {TARGET_RSS}", verdict(ratio < TARGET_RSS)))
    return rows


def footnotes(r: Results, args: argparse.Namespace, spec: ClipSpec, setup: Setup, cores: int) -> list[str]:
    cpu_fp32 = " (the CPU computes fp32)" if setup.device.type == "cpu" else ""
    notes = [
        f"clips: {r.clips} synthetic H.264 mp4s (pipeline.data.synthetic: libx264 crf 20, "
        f"{r.keyframe_interval:.0f} frames "
        f"per keyframe, no audio), {spec.seconds:g} s x {spec.fps} fps = {spec.frames} frames of "
        f"{spec.size}x{spec.size}; F={args.frames} sampled uniformly",
        f"stage: backend {args.backend}, model {args.model} ({args.pretrained or 'random weights'}), "
        f"device {setup.device}, precision {args.precision}{cpu_fp32}, torch threads {torch.get_num_threads()}",
        f"(c) includes everything; its model load alone takes {r.model_load_s:.2f} s per run "
        f"({r.model_load_s / r.clips:.4f} s/clip); imports were warmed up by a 2-clip run",
        "(d) decodes all frames with PyAV's default codec threading, keeps the stage's F frames and "
        "preprocesses + encodes them one at a time; it writes nothing",
        f"check: (d) and (c) embeddings of clip 0 agree to {r.naive_vs_stage:.1e} (max abs difference)",
    ]
    if any(w > 0 and cores < w + 1 for w in r.stage):
        notes.append(f"n/a: {cores} cores < workers + 1, so the decode workers and the encoder compete for the "
                     "cores; the overlap target assumes a core per worker plus one for the encoder")
    if r.rss:
        notes.append("RSS: fresh process per run (includes the interpreter, torch and the model); the 4N run lists "
                     f"the N files 4 times; workers {args.rss_workers}; resident before the stage: "
                     + ", ".join(f"{run['before_stage_mib']:.0f} MiB" for run in r.rss)
                     + "; (stage +X): peak rise above that during the stage")
    return notes


def write_json(out: Path, args: argparse.Namespace, info: dict[str, Any], rows: Sequence[Row],
               notes: Sequence[str], raw: dict[str, Any], seconds: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"extract-{stamp}.json"
    payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "machine": info, "rows": [{**dataclasses.asdict(r), "clips_per_s": r.clips_per_s} for r in rows],
               "notes": list(notes), "raw": raw, "total_seconds": seconds}
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


class _QuietRootInfo(logging.Filter):
    """Drop open_clip's INFO chatter (it logs through the root logger) from the progress log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root" or record.levelno >= logging.WARNING


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietRootInfo())
    if args.rss_child is not None:
        rss_child(args)
        return
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    seed_everything(SEED)
    spec = ClipSpec(args.clips, args.seconds, args.fps, args.size)
    paths = ensure_clips(spec, args.cache, jobs=len(os.sched_getaffinity(0)))
    setup = Setup.from_args(args)
    results = measure(args, setup, paths)
    total = time.perf_counter() - start

    info = machine()
    rows = table_rows(results, args, info["cores"])
    notes = footnotes(results, args, spec, setup, info["cores"])
    print(f"\nextract@video benchmark: {args.clips} clips, {info['cores']} cores ({info['cpu']}), "
          f"torch {info['torch']} with {info['torch_threads']} threads, GPU: {info['gpu'] or 'none'}")
    print(format_table(rows))
    for note in notes:
        print(f"  * {note}")
    print(f"  * total benchmark time {total:.0f} s (clip generation included)")
    path = write_json(args.out or args.cache / "results", args, info, rows, notes, dataclasses.asdict(results), total)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
