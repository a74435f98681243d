"""The task table: every dataset's task is implemented, every task implements the whole interface, and
the per-task tables outside tasks/ (the floors) name exactly the same tasks."""

from __future__ import annotations

import inspect
from typing import get_args

import pytest

from pipeline.core.config import DatasetName
from pipeline.data.datasets import DATASETS
from pipeline.distillation.families import FAMILIES
from pipeline.models.floor import FLOORS
from pipeline.tasks.base import Task
from pipeline.tasks.table import TASKS, task_of

INTERFACE = [name for name, _ in inspect.getmembers(Task) if not name.startswith("_")]
ATTRIBUTES = list(inspect.get_annotations(Task))


def test_every_dataset_has_an_implemented_task() -> None:
    assert {DATASETS.get(name).task for name in get_args(DatasetName)} <= set(TASKS.names())
    assert task_of("synthetic_sentiment").name == "sentiment" and task_of("vegas").name == "retrieval"


def test_floors_cover_exactly_the_tasks() -> None:
    assert FLOORS.names() == TASKS.names()


@pytest.mark.parametrize("name", TASKS.names())
def test_task_implements_the_interface(name: str) -> None:
    task = TASKS.get(name)
    assert task.name == name
    missing = [m for m in [*INTERFACE, *ATTRIBUTES] if not hasattr(task, m)]
    assert missing == [], f"task {name!r} lacks {missing}"
    for method in INTERFACE:  # same parameters as the interface (names, in order)
        if callable(getattr(Task, method)):
            expected = list(inspect.signature(getattr(Task, method)).parameters)
            assert list(inspect.signature(getattr(type(task), method)).parameters) == expected, method
    assert set(task.student_kinds) == set(FAMILIES)  # a student for every family
    assert task.teacher_output in ("reg", "logits") and set(task.self_modalities) <= {"video", "audio", "text"}
