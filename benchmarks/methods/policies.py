"""LR policies: what sets the LR of each optimizer step in a run, behind one small interface.

The training loop (:mod:`benchmarks.train`) is the same for every method; a policy tells it the LR of the
next step, hears each step's loss, says when the budget is spent, and names the model to evaluate (the
kept one: for autolrs, the stage snapshot during a search).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from typing import Callable

import numpy as np
import torch

__all__ = ["Policy", "Scheduled", "ScheduleFree", "AutoLRSPolicy", "Replayed", "RangeTestOneCycle",
           "range_test_suggestion"]


class Policy:
    """A fixed-budget run driven step by step; subclasses set the LR."""

    overhead_s = 0.0  # wall time spent inside the method's own LR machinery (autolrs)

    def __init__(self, optimizer: torch.optim.Optimizer, budget: int) -> None:
        self.optimizer = optimizer
        self.budget = budget
        self.steps_taken = 0

    @property
    def phase(self) -> str:
        """What the next step is: ``keep`` for every step of a scheduled run."""
        return "keep"

    @property
    def kept_steps(self) -> int:
        return self.steps_taken

    @property
    def done(self) -> bool:
        return self.steps_taken >= self.budget

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def before_step(self) -> None:
        """Set the LR of the next step."""

    def after_step(self, loss: float) -> None:
        self.steps_taken += 1

    def kept_state(self) -> dict | None:
        """The kept model's state dict when it is not the live model, else None."""
        return None

    def evaluation(self):
        """A context in which the live model holds the weights to evaluate."""
        return contextlib.nullcontext()

    def summary(self) -> dict:
        return {}

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr


class Scheduled(Policy):
    """A hand-designed schedule: ``peak * multiplier(step, budget)``."""

    def __init__(self, optimizer, budget: int, peak: float, multiplier: Callable[[int, int], float]) -> None:
        super().__init__(optimizer, budget)
        self.peak, self.multiplier = peak, multiplier

    def before_step(self) -> None:
        self._set_lr(self.peak * self.multiplier(self.steps_taken, self.budget))


class ScheduleFree(Policy):
    """Schedule-Free: a constant LR (the optimizer warms up itself); evaluation at its averaged iterate."""

    def __init__(self, optimizer, budget: int) -> None:
        super().__init__(optimizer, budget)
        optimizer.train()

    @contextlib.contextmanager
    def evaluation(self):
        # The authors' protocol: optimizer.eval() where model.eval() is called, train() after.
        self.optimizer.eval()
        try:
            yield
        finally:
            self.optimizer.train()


class AutoLRSPolicy(Policy):
    """autolrs drives the LR; the time spent in its constructor and ``step`` is its overhead."""

    def __init__(self, optimizer, budget: int, model: torch.nn.Module, options: dict) -> None:
        super().__init__(optimizer, budget)
        from autolrs import AutoLRS

        start = time.perf_counter()
        self.sched = AutoLRS(model, optimizer, total_steps=budget, **options)
        self.overhead_s = time.perf_counter() - start

    @property
    def phase(self) -> str:
        return self.sched.phase

    @property
    def kept_steps(self) -> int:
        return self.sched.kept_steps

    @property
    def done(self) -> bool:
        return self.sched.done

    def after_step(self, loss: float) -> None:
        start = time.perf_counter()
        self.sched.step(loss)
        self.overhead_s += time.perf_counter() - start
        self.steps_taken = self.sched.steps_taken

    def kept_state(self) -> dict | None:
        return self.sched.kept_state_dict() if self.sched.phase == "explore" else None

    def summary(self) -> dict:
        """The stage history without the per-step losses: enough to read every decision.

        Once the run is done, ``found_schedule`` is ``AutoLRS.found_schedule()`` without its ``lrs`` (one float
        per kept step; the segments define them, and a replay recomputes them from the segments).
        """
        stages = []
        for r in self.sched.history:
            stages.append({
                "stage": r["stage"], "kind": r.get("kind", "search"), "start_step": r["start_step"], "tau": r["tau"],
                "explore_steps": r["explore_steps"], "objective": r["objective"], "lr": r["lr"],
                "forecast": r["forecast"], "trial_loss": r.get("trial_loss"), "start_loss": r.get("start_loss"),
                "loss_reached": r["loss_reached"], "kept_steps": r["kept_steps"],
                "candidates": [[c["lr"], c["forecast"], c["diverged"]] for c in r["candidates"]],
                "discarded": len(r["discarded"]), "events": list(r["events"]),
            })
        found = None
        if self.sched.done:
            found = {k: v for k, v in self.sched.found_schedule().items() if k != "lrs"}
        return {"stages": stages, "config": self.sched.config.to_dict(), "found_schedule": found}


class Replayed(Policy):
    """The schedule an autolrs run found, replayed with no search by ``autolrs.replay.ReplayLR``.

    ``source`` is the record of that run (:func:`benchmarks.train.train_run`; its summary holds the found
    schedule). The schedule's ``kept_steps`` are stretched to the whole ``budget`` (``ReplayLR``: segment
    boundaries scaled, each stage's LR constant over its span, warmup and decay linear over theirs), so
    every step of the budget trains at ``replay_lrs(schedule, budget)[step]``.
    """

    def __init__(self, optimizer, budget: int, source: dict) -> None:
        super().__init__(optimizer, budget)
        from autolrs.replay import ReplayLR

        self.schedule = source["summary"]["found_schedule"]
        if self.schedule is None:
            raise ValueError("the autolrs run to replay did not finish: it has no found schedule")
        self.scheduler = ReplayLR(optimizer, self.schedule, total_steps=budget)  # sets the first step's LR
        self.source = {"seed": source["seed"], "budget": source["budget"], "steps_taken": source["steps_taken"],
                       "kept_steps": source["kept_steps"], "final": source["final"],
                       "diverged": source["diverged"], "wall_s": source["wall_s"], "eval_s": source["eval_s"]}

    def after_step(self, loss: float) -> None:
        super().after_step(loss)
        self.scheduler.step()  # the next step's LR

    def summary(self) -> dict:
        return {"replay": {"source": self.source, "found_schedule": self.schedule,
                           "stretch": self.budget / self.schedule["kept_steps"]}}


def range_test_suggestion(lrs: list[float], losses: list[float], beta: float = 0.98) -> dict:
    """The LR range test's reading (Smith 2017; fast.ai's ``lr_find``): ``lr_min / 10`` and ``lr_steep``.

    The losses are smoothed by a bias-corrected exponential moving average (``beta`` = 0.98, fast.ai's);
    ``lr_min`` is the LR of the lowest smoothed loss and ``lr_steep`` the LR where the smoothed loss falls
    fastest against log LR. The suggestion is fast.ai's ``lr_min / 10`` ("an order of magnitude before the
    minimum"), the most common reading; ``lr_steep`` is reported beside it.
    """
    smooth, average = [], 0.0
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        smooth.append(average / (1 - beta**i))
    smooth = np.asarray(smooth)
    finite = np.isfinite(smooth)
    if not finite.any():
        return {"lr": lrs[0], "lr_min": lrs[0], "lr_steep": lrs[0]}
    lr_min = float(lrs[int(np.nanargmin(np.where(finite, smooth, np.nan)))])
    upto = int(np.argmax(~finite)) if not finite.all() else len(smooth)
    if upto >= 3:
        slope = np.gradient(smooth[:upto], np.log(np.asarray(lrs[:upto])))
        lr_steep = float(lrs[int(np.argmin(slope))])
    else:
        lr_steep = lr_min
    return {"lr": lr_min / 10.0, "lr_min": lr_min, "lr_steep": lr_steep}


class RangeTestOneCycle(Policy):
    """The fast.ai recipe in one run: an LR range test, then one-cycle from the initial weights.

    The range test raises the LR exponentially from ``lr_range[0]`` to ``lr_range[1]`` over ``sweep`` steps
    (stopping early once the smoothed loss exceeds 4x its minimum, as fast.ai), then the model and optimizer
    are put back to their initial state (fast.ai's ``lr_find`` does the same) and one-cycle runs for the
    rest of the budget with the suggested peak LR. The sweep's steps count in the budget.
    """

    def __init__(self, optimizer, budget: int, model: torch.nn.Module, lr_range: tuple[float, float],
                 multiplier: Callable[[int, int], float], sweep: int = 100) -> None:
        super().__init__(optimizer, budget)
        self.model, self.lr_range, self.multiplier = model, lr_range, multiplier
        self.sweep = min(sweep, budget // 4)
        self._initial = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
        self._lrs: list[float] = []
        self._losses: list[float] = []
        self._start: int | None = None  # first step of the one-cycle phase
        self.suggestion: dict | None = None

    @property
    def phase(self) -> str:
        return "explore" if self._start is None else "keep"

    @property
    def kept_steps(self) -> int:
        return 0 if self._start is None else self.steps_taken - self._start

    def _sweep_lr(self, i: int) -> float:
        lo, hi = self.lr_range
        return lo * (hi / lo) ** (i / max(1, self.sweep - 1))

    def before_step(self) -> None:
        if self._start is None:
            self._set_lr(self._sweep_lr(self.steps_taken))
        else:
            t, n = self.steps_taken - self._start, self.budget - self._start
            self._set_lr(self.suggestion["lr"] * self.multiplier(t, n))

    def after_step(self, loss: float) -> None:
        super().after_step(loss)
        if self._start is not None:
            return
        self._lrs.append(float(self.optimizer.param_groups[0]["lr"]))
        self._losses.append(loss if math.isfinite(loss) else math.inf)
        smooth_min = min(self._losses)
        diverged = not math.isfinite(loss) or (len(self._losses) > 10 and loss > 4 * smooth_min)
        if len(self._losses) >= self.sweep or diverged:
            self.suggestion = range_test_suggestion(self._lrs, self._losses)
            self.model.load_state_dict(self._initial[0])
            self.optimizer.load_state_dict(self._initial[1])
            self._start = self.steps_taken

    def kept_state(self) -> dict | None:
        return self._initial[0] if self._start is None else None

    def summary(self) -> dict:
        return {"range_test": {"steps": len(self._lrs), **(self.suggestion or {})}}
