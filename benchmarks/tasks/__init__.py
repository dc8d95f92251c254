"""The benchmark tasks: each module declares its :class:`~benchmarks.tasks.base.TaskEntry` (``ENTRY``), and
:data:`REGISTRY` holds them by name; plans, plots, the report, the training loop and the command line read
every task from there, so adding a task is a module here and one line below.
"""

from __future__ import annotations

from . import mnist1d, nqm, shakespeare
from .base import Problem, TaskEntry, TaskSpec

__all__ = ["REGISTRY", "registered", "spec", "make_problem", "reference", "Problem", "TaskEntry", "TaskSpec"]

# In the order of the bench and of the report. The entries hold the problem classes, so every task module is
# imported with this package: ~1 s more for `python -m benchmarks.run` (mnist1d.py imports autolrs, nqm.py
# scipy.optimize), which a bench's own process loads anyway (the cache fingerprints autolrs's source).
REGISTRY: dict[str, TaskEntry] = {
    entry.spec.name: entry for entry in (mnist1d.ENTRY, shakespeare.ENTRY, nqm.ENTRY)
}


def registered(name: str) -> TaskEntry:
    """The entry of task ``name``."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(REGISTRY)}") from None


def spec(name: str) -> TaskSpec:
    """The full-size specification of task ``name``."""
    return registered(name).spec


def make_problem(task: TaskSpec, seed: int) -> Problem:
    """A seeded instance of ``task`` (its spec may be scaled, e.g. a shorter budget)."""
    return registered(task.name).problem(task, seed)


def reference(task: TaskSpec) -> dict | None:
    """A task's known optimum under ``task`` (its budget), where it has one."""
    optimum = registered(task.name).reference
    return None if optimum is None else optimum(task)
