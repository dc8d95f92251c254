"""LR policies: what sets the LR of each optimizer step in a run, behind one small interface.

The training loop (:mod:`benchmarks.train`) is the same for every method; a policy tells it the LR of the
next step, hears each step's loss, says when the budget is spent, and names the model to evaluate (the
kept one: for autolrs, the stage snapshot during a search).
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch

__all__ = ["Policy", "Scheduled", "ScheduleFree", "AutoLRSPolicy"]


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
        """The stage history without the per-step losses: enough to read every decision."""
        stages = []
        for r in self.sched.history:
            stages.append({
                "stage": r["stage"], "start_step": r["start_step"], "tau": r["tau"],
                "explore_steps": r["explore_steps"], "objective": r["objective"], "lr": r["lr"],
                "forecast": r["forecast"], "loss_reached": r["loss_reached"], "kept_steps": r["kept_steps"],
                "candidates": [[c["lr"], c["forecast"], c["diverged"]] for c in r["candidates"]],
                "discarded": len(r["discarded"]), "events": list(r["events"]),
            })
        return {"stages": stages, "config": self.sched.config.to_dict()}
