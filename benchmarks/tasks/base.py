"""What a benchmark task is: a fixed training problem, its budget, its metric and its LR grid.

A :class:`TaskSpec` is plain data (it goes into the results JSON and into the cache key); a
:class:`Problem` is one seeded instance of the task in a worker process: a model, its parameter groups, an
endless stream of training losses and an evaluation of any model of the same architecture; a
:class:`TaskEntry` is all the harness knows of a task, declared by its module and registered in
:data:`benchmarks.tasks.REGISTRY`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

__all__ = ["TaskSpec", "Problem", "TaskEntry", "log_grid"]


def log_grid(low: float, high: float, points: int) -> tuple[float, ...]:
    """``points`` log-spaced values from ``low`` to ``high``, rounded to 4 significant digits."""
    return tuple(float(f"{v:.4g}") for v in np.geomspace(low, high, points))


@dataclass(frozen=True)
class TaskSpec:
    """A task's fixed set-up: every method is trained and measured under exactly this.

    Attributes:
        name: the task's identifier (``mnist1d-cnn``).
        title: one line for the report.
        budget: optimizer steps per run, search included for autolrs.
        eval_every: the metric curve's spacing, in optimizer steps (kept model, search steps counted).
        metric: the reported metric's key in :meth:`Problem.evaluate`'s result.
        higher_is_better: accuracy (True) or loss (False).
        worst: the metric given to a diverged run.
        extra_metrics: other keys of :meth:`Problem.evaluate` reported alongside.
        optimizer: ``"sgd"`` or ``"adamw"``: the base optimizer of every scheduled method and of autolrs.
        momentum, betas, weight_decay: its settings (weight decay as the problem's groups apply it).
        grid: the log grid of peak LRs for tuned schedules; ``grid_overrides`` per method.
        lr_range: autolrs's ``(min_lr, max_lr)``: the same span as the grid, the same prior knowledge.
        threads: ``torch.set_num_threads`` in each worker; ``workers``: worker processes (measured per task).
        notes: set-up details for the report.
    """

    name: str
    title: str
    budget: int
    eval_every: int
    metric: str
    higher_is_better: bool
    worst: float
    optimizer: str
    grid: tuple[float, ...]
    lr_range: tuple[float, float]
    extra_metrics: tuple[str, ...] = ()
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grid_overrides: dict = field(default_factory=dict)
    threads: int = 1
    workers: int = 2
    notes: str = ""

    def grid_for(self, method: str) -> tuple[float, ...]:
        return tuple(self.grid_overrides.get(method, self.grid))

    def better(self, a: float, b: float) -> bool:
        """Whether metric value ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def reached(self, value: float, target: float) -> bool:
        """Whether ``value`` is at least as good as ``target``."""
        return value >= target if self.higher_is_better else value <= target

    def sanitize(self, value: float) -> float:
        """A non-finite metric (a NaN model) counts as the worst value."""
        return value if math.isfinite(value) else self.worst

    def scaled(self, **changes) -> "TaskSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["worst"] = data["worst"] if math.isfinite(data["worst"]) else None
        return data


class Problem:
    """One seeded instance of a task, built inside a worker.

    Subclasses set :attr:`model` and implement the methods below. The training stream depends on the
    seed only, so every method sees the same batches in the same order.
    """

    model: torch.nn.Module

    def param_groups(self) -> list[dict]:
        """The optimizer's parameter groups, each with its ``weight_decay``."""
        raise NotImplementedError

    def training_loss(self) -> torch.Tensor:
        """The loss of the next training mini-batch (a 0-dim tensor to backpropagate)."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """The task's metrics for ``model`` (any model of this architecture), in eval mode."""
        raise NotImplementedError

    def validation_loss(self, model: torch.nn.Module) -> float:
        """A held-out loss, disjoint from the reported metric's data: what autolrs's ``val_fn`` may see."""
        raise NotImplementedError(f"{type(self).__name__} has no validation split for val_fn")

    def expected_loss(self, kept_lrs: list[float]) -> float | None:
        """The exact expected final loss of a kept LR sequence, where the task has a closed form."""
        return None


@dataclass(frozen=True)
class TaskEntry:
    """Everything the harness needs of a task besides its code, declared once, in the task's module.

    Attributes:
        spec: the full-size set-up (``make bench``).
        problem: the :class:`Problem` a worker builds, as ``problem(spec, seed)``.
        quick_budget, quick_eval_every: the budget and the curve spacing of ``make bench-quick``.
        default_tuned: the tuned methods of the default mode, where it cannot afford them all (None: all of
            them); ``--full`` runs everything. (Its ablation variants: ``benchmarks.ablations``, outside the
            code the run cache hashes.)
        log_metric: plot the metric on a log scale (it falls by decades).
        reference: the task's known optimum under a spec (its budget), where it has one: the results'
            ``reference``, against which the report measures every method.
    """

    spec: TaskSpec
    problem: type[Problem]
    quick_budget: int
    quick_eval_every: int
    default_tuned: tuple[str, ...] | None = None
    log_metric: bool = False
    reference: Callable[[TaskSpec], dict] | None = None

    @property
    def has_validation(self) -> bool:
        """Whether the problem has a validation split for an autolrs ``val_fn``: it implements one."""
        return self.problem.validation_loss is not Problem.validation_loss

    def quick(self) -> TaskSpec:
        """The spec of ``make bench-quick``."""
        return self.spec.scaled(budget=self.quick_budget, eval_every=self.quick_eval_every)
