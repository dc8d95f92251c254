"""The compared methods, and how each is built into an LR policy for one run.

A :class:`Method` is plain data (label, family, options). Families:

- ``schedule``: a hand-designed schedule of the peak LR (``benchmarks.methods.schedules``), tuned on a grid;
- ``schedule-free``: Schedule-Free SGD/AdamW at a given LR (tuned on a grid where the budget allows);
- ``prodigy``: Prodigy, ``lr=1`` with cosine annealing: one run, no tuning;
- ``autolrs``: autolrs with the task's LR range and budget, plus ``options`` (keyword arguments of
  ``AutoLRS``; ``{"val_fn": true}`` hands it the task's validation split): one run, no tuning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..tasks.base import Problem, TaskSpec
from . import optimizers
from .policies import AutoLRSPolicy, Policy, Scheduled, ScheduleFree
from .schedules import SCHEDULES, cosine

__all__ = ["Method", "method", "autolrs_method", "build_policy", "SCHEDULE_NAMES"]

SCHEDULE_NAMES = tuple(SCHEDULES)


@dataclass(frozen=True)
class Method:
    label: str
    family: str
    options: dict = field(default_factory=dict)

    @property
    def tunable(self) -> bool:
        """Whether the method has a peak LR a user would tune on a grid."""
        return self.family in ("schedule", "schedule-free")

    def to_dict(self) -> dict:
        return {"label": self.label, "family": self.family, "options": dict(self.options)}


def autolrs_method(options: dict | None = None, label: str | None = None) -> Method:
    """autolrs with ``options``; the label says which (``autolrs`` for the defaults)."""
    options = dict(options or {})
    if label is None:
        label = "autolrs" if not options else "autolrs" + json.dumps(options, sort_keys=True, separators=(",", "="))
    return Method(label, "autolrs", options)


def method(label: str) -> Method:
    """A method by its label: a schedule name, ``prodigy``, ``schedule-free``, ``autolrs`` or
    ``autolrs-kappa1e6`` (the reference code's pure-exploration kappa, the ablation)."""
    if label in SCHEDULES:
        return Method(label, "schedule")
    if label in ("prodigy", "schedule-free"):
        return Method(label, label)
    if label == "autolrs":
        return autolrs_method()
    if label == "autolrs-kappa1e6":
        return autolrs_method({"kappa": 1e6}, label)
    raise ValueError(f"unknown method {label!r}; expected one of {', '.join(SCHEDULE_NAMES)}, prodigy, "
                     "schedule-free, autolrs, autolrs-kappa1e6")


def build_policy(m: Method, task: TaskSpec, problem: Problem, lr: float | None, seed: int) -> Policy:
    """The policy (with its optimizer) that runs method ``m`` at peak LR ``lr`` on ``problem``."""
    groups = problem.param_groups()
    if m.family == "schedule":
        return Scheduled(optimizers.base_optimizer(task, groups, lr), task.budget, lr, SCHEDULES[m.label])
    if m.family == "prodigy":
        return Scheduled(optimizers.prodigy(task, groups), task.budget, 1.0, cosine)
    if m.family == "schedule-free":
        return ScheduleFree(optimizers.schedule_free(task, groups, lr), task.budget)
    if m.family == "autolrs":
        options = dict(m.options)
        if options.pop("val_fn", False):
            model = problem.model
            options["val_fn"] = lambda: problem.validation_loss(model)
        options.setdefault("min_lr", task.lr_range[0])
        options.setdefault("max_lr", task.lr_range[1])
        options.setdefault("seed", seed)
        placeholder = options["min_lr"]  # autolrs sets every LR itself
        return AutoLRSPolicy(optimizers.base_optimizer(task, groups, placeholder), task.budget, problem.model,
                             options)
    raise ValueError(f"unknown method family {m.family!r}")
