"""The compared methods, and how each is built into an LR policy for one run.

A :class:`Method` is plain data (label, family, options). Families:

- ``schedule``: a hand-designed schedule of the peak LR (``benchmarks.methods.schedules``), tuned on a grid;
- ``schedule-free``: Schedule-Free SGD/AdamW at a given LR (tuned on a grid where the budget allows);
- ``prodigy``: Prodigy, ``lr=1`` with cosine annealing: one run, no tuning;
- ``range-test``: the fast.ai recipe, one run: a 100-step LR range test over the task's LR range, then
  one-cycle at the suggested LR (``lr_min / 10``) from the initial weights, the test's steps counted;
- ``autolrs``: autolrs with the task's LR range and budget, plus ``options`` (keyword arguments of
  ``AutoLRS``; ``{"val_fn": true}`` hands it the task's validation split): one run, no tuning;
- ``autolrs-replay``: one autolrs run (default options) on the seed, then the schedule it found
  (``AutoLRS.found_schedule()``) replayed by ``autolrs.replay.ReplayLR`` from the same initial weights on the
  same batches, stretched from its kept steps to the whole budget, with no search: two runs of tuning cost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..ablations import ABLATIONS
from ..tasks.base import Problem, TaskSpec
from . import optimizers
from .policies import AutoLRSPolicy, Policy, RangeTestOneCycle, Replayed, Scheduled, ScheduleFree
from .schedules import SCHEDULES, cosine, one_cycle

__all__ = ["Method", "method", "autolrs_method", "build_policy", "SCHEDULE_NAMES", "ABLATIONS", "AUTOLRS_FAMILIES",
           "TUNING_RUNS"]

SCHEDULE_NAMES = tuple(SCHEDULES)
# autolrs and what is built from its runs: never a baseline (best baseline, "where autolrs loses").
AUTOLRS_FAMILIES = ("autolrs", "autolrs-replay")
# Runs of the budget a user spends to obtain the model, for the methods not tuned on a grid (default 1).
TUNING_RUNS = {"autolrs-replay": 2}

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
    """A method by its label: a schedule name, ``prodigy``, ``schedule-free``, ``range-test``, ``autolrs``,
    ``autolrs-replay`` or an ablation variant of autolrs (:data:`ABLATIONS`)."""
    if label in SCHEDULES:
        return Method(label, "schedule")
    if label in ("prodigy", "schedule-free", "range-test", "autolrs-replay"):
        return Method(label, label)
    if label == "autolrs":
        return autolrs_method()
    if label in ABLATIONS:
        return autolrs_method(ABLATIONS[label][0], label)
    raise ValueError(f"unknown method {label!r}; expected one of {', '.join(SCHEDULE_NAMES)}, prodigy, "
                     f"schedule-free, range-test, autolrs, autolrs-replay, {', '.join(ABLATIONS)}")


def build_policy(m: Method, task: TaskSpec, problem: Problem, lr: float | None, seed: int,
                 source: dict | None = None) -> Policy:
    """The policy (with its optimizer) that runs method ``m`` at peak LR ``lr`` on ``problem``.

    ``source``: for ``autolrs-replay`` only, the record of the autolrs run whose found schedule is replayed
    (:func:`benchmarks.train.train_run` makes it before it builds ``problem``).
    """
    groups = problem.param_groups()
    if m.family == "schedule":
        return Scheduled(optimizers.base_optimizer(task, groups, lr), task.budget, lr, SCHEDULES[m.label])
    if m.family == "prodigy":
        return Scheduled(optimizers.prodigy(task, groups), task.budget, 1.0, cosine)
    if m.family == "schedule-free":
        return ScheduleFree(optimizers.schedule_free(task, groups, lr), task.budget)
    if m.family == "range-test":
        # the one-cycle runs in the task's base optimizer; its LR is set step by step
        return RangeTestOneCycle(optimizers.base_optimizer(task, groups, task.lr_range[0]), task.budget,
                                 problem.model, task.lr_range, one_cycle)
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
    if m.family == "autolrs-replay":
        if source is None:
            raise ValueError("autolrs-replay replays the schedule of an autolrs run: pass its record as source")
        # the base optimizer at any positive LR: ReplayLR sets every step's LR (all groups at ratio 1)
        return Replayed(optimizers.base_optimizer(task, groups, task.lr_range[0]), task.budget, source)
    raise ValueError(f"unknown method family {m.family!r}")
