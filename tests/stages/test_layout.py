"""The shape of pipeline/, checked from the source: imports flow one way (stages and commands -> library ->
config), no import cycles, no module imports a stage or a command, the data stages start without the heavy
libraries, and each DVC stage depends on exactly the project files it imports (so DVC reruns it when they
change).

The graph (pipeline/core/identity.py, which also digests a stage's code for its checkpoints) is built
with `ast` from every module's `import` statements, including the ones inside functions (a lazy import
is still a dependency)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.identity import closure, import_graph, module_files

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pipeline"
HEAVY = ("torch", "transformers", "open_clip", "dvclive")
LIGHT_STAGES = ("check", "prepare", "generate")
COMMANDS = ("predict",)  # top-level modules that are commands for the user, not DVC stages


def top_level_modules() -> list[str]:
    """The modules directly under pipeline/: the stages and the commands (the library lives in its subpackages)."""
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def stage_names() -> list[str]:
    """The DVC stages: the top-level modules that are not commands."""
    return [m for m in top_level_modules() if m not in COMMANDS]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_and_package_imports() -> None:
    """The checker itself: a function-level import and `from package import module` are both edges."""
    graph = import_graph()
    assert "pipeline.features.media" in graph["pipeline.features.extraction"]  # `from pipeline.features import media`
    assert "pipeline.models.students" in graph["pipeline.tasks.sentiment"]  # imported inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_module_imports_a_stage_or_a_command() -> None:
    top = {f"pipeline.{s}" for s in top_level_modules()}
    offenders = sorted(f"{m} imports {d}" for m, deps in import_graph().items() for d in deps & top)
    assert offenders == [], "what two stages or commands share belongs in the library:\n" + "\n".join(offenders)


def test_library_layers_flow_one_way() -> None:
    """core (errors, config, registry, paths, runtime, identity) imports nothing above it; config imports
    nothing but the error base class."""
    graph = import_graph()
    assert graph["pipeline.core.config"] <= {"pipeline.core.errors"}
    assert graph["pipeline.core.errors"] == set()
    for module, deps in graph.items():
        if module.startswith("pipeline.core."):
            assert all(d.startswith("pipeline.core") for d in deps), f"{module} imports {deps}"


def test_library_is_grouped_in_folders() -> None:
    """pipeline/ holds the stages as modules and the library as subpackages, nothing else."""
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert folders == ["core", "data", "distillation", "evaluation", "features", "models", "tasks", "training"]
    assert stage_names() == ["check", "distill", "evaluate", "extract", "floor", "generate", "prepare", "report",
                             "teacher"]
    assert set(COMMANDS) <= set(top_level_modules())
    tests = sorted(p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert tests == sorted([*folders, "stages"])  # the tests mirror the library; the DAG's tests apart


@pytest.mark.parametrize("stage", LIGHT_STAGES)
def test_data_stages_start_without_heavy_imports(stage: str) -> None:
    code = (f"import sys, pipeline.{stage}; from pipeline.core.config import check_params; check_params(); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"pipeline.{stage} imports {out.stdout.strip()}"


def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_every_dvc_stage_depends_on_exactly_the_code_it_imports() -> None:
    """A stage's `deps:` list every project file its module loads, and no other project module, so that
    DVC reruns it when (and only when) its code changes."""
    graph = import_graph()
    modules = module_files()
    problems = []
    for name, spec in dvc_stages().items():
        body = spec.get("do", spec)
        stage = body["cmd"].split("-m pipeline.")[1].split()[0]
        needed = {str(modules[m].relative_to(ROOT)) for m in closure(graph.__getitem__, f"pipeline.{stage}")
                  if modules[m].name != "__init__.py"}
        listed = {d for d in body["deps"] if d.startswith("pipeline/") and d.endswith(".py")}
        if needed - listed:
            problems.append(f"{name}: add {sorted(needed - listed)}")
        if listed - needed:
            problems.append(f"{name}: remove {sorted(listed - needed)} (not imported)")
    assert problems == [], "\n".join(problems)


def test_dvc_stage_names_are_the_stage_modules() -> None:
    """Stage name = module name = params section (or the stage reads none); every stage module is in the DAG,
    and no command is."""
    assert sorted(dvc_stages()) == stage_names()
    for name, spec in dvc_stages().items():
        body = spec.get("do", spec)
        assert body["cmd"].startswith(f"python -m pipeline.{name}"), name
        assert (PACKAGE / f"{name}.py").is_file()
