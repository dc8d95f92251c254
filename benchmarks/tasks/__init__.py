"""The benchmark tasks, by name: each a :class:`~benchmarks.tasks.base.TaskSpec` and a problem factory."""

from __future__ import annotations

from .base import Problem, TaskSpec

__all__ = ["TASKS", "spec", "make_problem", "reference", "Problem", "TaskSpec"]

TASKS = ("mnist1d-cnn", "shakespeare-char", "nqm")


def spec(name: str) -> TaskSpec:
    """The full-size specification of task ``name``."""
    if name == "mnist1d-cnn":
        from .mnist1d import SPEC
    elif name == "shakespeare-char":
        from .shakespeare import SPEC
    elif name == "nqm":
        from .nqm import SPEC
    else:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return SPEC


def make_problem(task: TaskSpec, seed: int) -> Problem:
    """A seeded instance of ``task`` (its spec may be scaled, e.g. a shorter budget)."""
    if task.name == "mnist1d-cnn":
        from .mnist1d import MNIST1DProblem as cls
    elif task.name == "shakespeare-char":
        from .shakespeare import ShakespeareProblem as cls
    elif task.name == "nqm":
        from .nqm import NQMProblem as cls
    else:
        raise ValueError(f"unknown task {task.name!r}")
    return cls(task, seed)


def reference(task: TaskSpec) -> dict | None:
    """A task's known optimum, where it has one: the NQM's optimal piecewise-constant schedule."""
    if task.name != "nqm":
        return None
    from .quadratic import optimal_schedule
    from .nqm import QUADRATIC

    optimal = optimal_schedule(QUADRATIC, task.budget)
    return {"optimal": {**optimal.to_dict(), "pieces": len(optimal.lrs),
                        "method": "L-BFGS-B on the log-LRs of equal pieces, exact closed-form expected loss"}}
