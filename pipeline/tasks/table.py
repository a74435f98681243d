"""The table of tasks (one module each, behind tasks/base.py's interface). A dataset names its task
(data/datasets.py `DatasetSpec.task`); `task_of(dataset)` resolves it."""

from __future__ import annotations

from pipeline.core.registry import Registry
from pipeline.data.datasets import DATASETS
from pipeline.tasks import retrieval, sentiment
from pipeline.tasks.base import Task

TASKS: Registry[Task] = Registry("task")
TASKS.add("sentiment", sentiment.TASK)
TASKS.add("retrieval", retrieval.TASK)


def task_of(dataset: str) -> Task:
    """The task of a dataset in data/datasets.py's table."""
    return TASKS.get(DATASETS.get(dataset).task)
