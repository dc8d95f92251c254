"""The figures computed from run records: seed statistics, mean curves, steps to target, speedups.

Steps to target are read on the seed-mean curve of the metric (evaluated every ``eval_every`` optimizer
steps on the kept model): the first evaluation at which it is at least as good as the target. On the mean
curve the tuned cosine, whose mean final value *is* the target, reaches it by the end of the budget by
construction; a single seed's curve would miss it half of the time by noise alone. For autolrs the same
first evaluation also gives its kept steps (the mean over seeds of the steps on its kept trajectory then).
"""

from __future__ import annotations

import math

import numpy as np

from .tasks.base import TaskSpec

__all__ = ["mean_std", "mean_curve", "steps_to_target", "speedup"]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); a non-finite value makes both non-finite."""
    x = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(x)):
        return math.inf if np.any(np.isposinf(x)) else math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def mean_curve(records: list[dict], metric: str) -> dict[str, list[float]]:
    """The seed-mean curve: ``steps``, mean ``kept_steps`` and mean ``metric`` at each evaluation."""
    length = min(len(r["curve"]["steps"]) for r in records)
    steps = records[0]["curve"]["steps"][:length]
    for r in records[1:]:
        if r["curve"]["steps"][:length] != steps:
            raise ValueError(f"seeds of {r['method']} were evaluated at different steps")
    kept = np.mean([r["curve"]["kept_steps"][:length] for r in records], axis=0)
    values = np.mean([r["curve"][metric][:length] for r in records], axis=0)
    return {"steps": list(steps), "kept_steps": [float(k) for k in kept], "metric": [float(v) for v in values]}


def steps_to_target(curve: dict, target: float | None, task: TaskSpec) -> tuple[int | None, float | None]:
    """``(optimizer steps, kept steps)`` at the first evaluation reaching ``target``; None if never."""
    if target is None or not math.isfinite(target):
        return None, None
    for step, kept, value in zip(curve["steps"], curve["kept_steps"], curve["metric"]):
        if step > 0 and task.reached(value, target):
            return step, kept
    return None, None


def speedup(reference: float | None, steps: float | None) -> float | None:
    """How many times fewer steps than ``reference`` (None where either never reached the target)."""
    if reference is None or steps is None or steps <= 0:
        return None
    return reference / steps
