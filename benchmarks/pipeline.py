"""Benchmark of the whole default run: where `dvc repro` spends its time, stage by stage.

Clones the repository's committed state (HEAD, or `--rev`) into a fresh temporary directory, runs
`dvc repro` there exactly as the README's main job does, and prints one row per stage:

  wall       from the stage's "Running stage '<name>'" line to the next one (or to the end of the
             run): everything the stage costs, DVC's own bookkeeping (hashing and caching its
             outputs, writing dvc.lock) included.
  work       the seconds the stage logs itself (`runtime.stage`: "[<name>] wrote: ... (N s)"), i.e.
             reading inputs, computing and writing outputs, after its imports and params checks.
  overhead   wall - work: interpreter start-up, imports, `check_params`, and DVC around the command.
  import     a separate measurement: a fresh `python -c "import pipeline.<module>"` in the clone
             (median of `--import-repeats`, after one warm-up so the page cache is hot), the floor
             of every stage's start-up whatever it computes.

and the totals: the run's wall time, the sum of work, the sum of overheads and the sum of the
import floors over the stages that ran. Stage names and their modules come from the run's own
output and from dvc.yaml's `cmd` (`python -m pipeline.<module>`), so the table follows the DAG as it
is. Timestamps are taken as each output line arrives (DVC streams the stage's stdout and stderr).

Run from the repository root with the project's virtual environment (about as long as `dvc repro`,
10 minutes on 2 cores for the default, plus a minute for the imports):

    .venv/bin/python benchmarks/pipeline.py
    .venv/bin/python benchmarks/pipeline.py --rev HEAD~3 --keep   # an earlier commit; keep the clone

The table goes to stdout; the figures also go as JSON to `--out`
(default `~/.cache/mmdistill-bench/results/pipeline-<timestamp>.json`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNNING = re.compile(r"^Running stage '([^']+)'")
WROTE = re.compile(r"\[([^\]]+)\] wrote: .* \(([0-9.]+) s\)\s*$")
MODULE = re.compile(r"python -m pipeline\.(\w+)")


def stage_modules(dvc_yaml: Path) -> dict[str, str]:
    """Stage name (before any `@item`) -> the pipeline module its command runs."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    modules = {}
    for name, spec in stages.items():
        body = spec.get("do", spec)  # foreach stages keep their command under `do`
        found = MODULE.search(str(body.get("cmd", "")))
        if found is None:
            raise SystemExit(f"{dvc_yaml}: stage {name!r} has no `python -m pipeline.<module>` command")
        modules[name] = found.group(1)
    return modules


def run_repro(project: Path, env: dict[str, str], log_path: Path) -> tuple[list[tuple[str, float]], dict[str, float],
                                                                           float]:
    """`dvc repro` in project; returns (stage, start offset) in order, stage -> logged work, total wall."""
    starts: list[tuple[str, float]] = []
    work: dict[str, float] = {}
    t0 = time.perf_counter()
    with log_path.open("w") as log, subprocess.Popen(["dvc", "repro"], cwd=project, env=env, text=True,
                                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                     bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter() - t0
            log.write(line)
            if (found := RUNNING.match(line)) is not None:
                starts.append((found.group(1), now))
                print(f"{now:7.1f} s  {found.group(1)}", file=sys.stderr, flush=True)
            elif (found := WROTE.search(line)) is not None:
                work[found.group(1)] = float(found.group(2))
        code = proc.wait()
    total = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"dvc repro failed with exit code {code}; its output is in {log_path}")
    return starts, work, total


def import_seconds(project: Path, module: str, env: dict[str, str], repeats: int) -> float:
    """Median wall time of a fresh interpreter importing pipeline.<module> (after one warm-up)."""
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import pipeline.{module}"], cwd=project, env=env, check=True)
        if i > 0:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the commit to clone and run (default: HEAD)")
    parser.add_argument("--import-repeats", type=int, default=3, help="fresh imports timed per stage module")
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON figures")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="mmdistill-pipeline-bench-"))
    project = workdir / "project"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
    subprocess.run(["git", "checkout", "-q", args.rev], cwd=project, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project, check=True, text=True,
                            capture_output=True).stdout.strip()
    # The clone runs with this interpreter's environment, as `. .venv/bin/activate && dvc repro` does.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(project)}
    try:
        modules = stage_modules(project / "dvc.yaml")
        starts, work, total = run_repro(project, env, workdir / "repro.log")
        ends = [start for _, start in starts[1:]] + [total]
        imports = {module: import_seconds(project, module, env, args.import_repeats)
                   for module in sorted({modules[name.split("@")[0]] for name, _ in starts})}
    finally:
        if args.keep:
            print(f"clone kept at {project}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    rows = []
    for (name, start), end in zip(starts, ends, strict=True):
        module = modules[name.split("@")[0]]
        wall = end - start
        done = work.get(name)
        rows.append({"stage": name, "module": module, "wall_s": wall, "work_s": done,
                     "overhead_s": None if done is None else wall - done, "import_s": imports[module]})

    print(f"dvc repro of {commit} on {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
          f"Python {platform.python_version()}\n")
    print(f"| {'stage':<28} | {'wall (s)':>8} | {'work (s)':>8} | {'overhead (s)':>12} | {'import (s)':>10} |")
    print(f"|{'-' * 30}|{'-' * 10}:|{'-' * 10}:|{'-' * 14}:|{'-' * 12}:|")

    def cell(x: float | None, width: int) -> str:
        return f"{'n/a':>{width}}" if x is None else f"{x:>{width}.1f}"

    for row in rows:
        print(f"| {row['stage']:<28} | {cell(row['wall_s'], 8)} | {cell(row['work_s'], 8)} | "
              f"{cell(row['overhead_s'], 12)} | {cell(row['import_s'], 10)} |")
    work_sum = sum(r["work_s"] or 0.0 for r in rows)
    import_sum = sum(r["import_s"] for r in rows)
    print(f"| {'total (' + str(len(rows)) + ' stages)':<28} | {cell(total, 8)} | {cell(work_sum, 8)} | "
          f"{cell(total - work_sum, 12)} | {cell(import_sum, 10)} |")
    print(f"\nbefore the first stage: {starts[0][1] if starts else total:.1f} s (dvc start-up); "
          f"overhead is {100 * (total - work_sum) / total:.0f} % of the run, the import floors "
          f"{100 * import_sum / total:.0f} %.")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path.home() / ".cache" / "mmdistill-bench" / "results" / f"pipeline-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"commit": commit, "cores": os.cpu_count(), "total_s": total, "work_s": work_sum,
                               "import_s": import_sum, "stages": rows}, indent=2))
    print(f"figures written to {out}")


if __name__ == "__main__":
    main()
