"""Which ``sched.step(loss)`` calls report an optimizer step: counted by a hook on every optimizer.

:class:`~autolrs.AutoLRS` counts real optimizer steps, not calls: a hook on every optimizer tells it whether
``optimizer.step()`` ran since the last call, so the losses of micro-batches under gradient accumulation are
averaged into their optimizer step's (with one warning: a mistake if ``sched.step`` is called twice per step),
a step that ``GradScaler`` skipped (inf gradients) is not counted, and a call that missed optimizer steps
raises instead of silently desynchronising the schedule.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Sequence

import torch

__all__ = ["OptimizerSteps"]


class OptimizerSteps:
    """The optimizer steps of one :class:`~autolrs.AutoLRS` run, its pending micro-batch losses and skipped steps.

    Nothing is consumed until :meth:`consumed`: the caller may still fail (a ``val_fn`` that raises) and
    the step is then reported again.
    """

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer], scaler: torch.amp.GradScaler | None = None) -> None:
        self.scaler = scaler
        # Optimizer steps counted by the hooks, and the counts at the last step() that took one.
        self.counts = [0] * len(optimizers)
        self.seen = [0] * len(optimizers)
        self.hooks = [opt.register_step_post_hook(_StepCounter(self, k)) for k, opt in enumerate(optimizers)]
        self.pending: list[float] = []  # losses of calls with no optimizer step yet (micro-batches)
        self.warned_extra_calls = False
        self.last_scale = self.scale()
        self.skipped = 0

    def scale(self) -> float | None:
        """The GradScaler's scale, or None without an enabled one."""
        return self.scaler.get_scale() if self.scaler is not None and self.scaler.is_enabled() else None

    def count(self, value: float) -> tuple[float, float | None] | None:
        """The loss of the optimizer step just taken and the scaler's scale, or None if none was taken.

        ``value`` is the loss of this call; a call after which no optimizer step ran (a step the scaler
        skipped, a micro-batch) is recorded and gives None. Raises if several optimizer steps ran.
        """
        new = max(now - seen for now, seen in zip(self.counts, self.seen))
        scale = self.scale()  # read once: on a GPU each read waits for the device
        skipped = scale is not None and self.last_scale is not None and scale < self.last_scale
        if new == 0 or skipped:
            # GradScaler lowers its scale exactly when it skips a step for inf/NaN gradients. A fused optimizer
            # (AdamW(fused=True)) unscales itself: GradScaler calls its step() on an inf step too, which then
            # changes nothing. The hook fires, but the fallen scale says it was skipped.
            self._no_optimizer_step(value, scale, skipped)
            return None
        if new > 1:
            self.seen = list(self.counts)
            raise ValueError(
                f"optimizer.step() ran {new} times since the last sched.step(loss): call sched.step(loss) once after "
                "every optimizer step (autolrs decides the LR of each step)."
            )
        if self.pending:
            value = (sum(self.pending) + value) / (len(self.pending) + 1)
        return value, scale

    def _no_optimizer_step(self, value: float, scale: float | None, skipped: bool) -> None:
        """A call after which no optimizer step ran: a step the scaler skipped, or a micro-batch."""
        self.seen = list(self.counts)
        if skipped:
            self.last_scale = scale
            self.skipped += 1
            return
        self.pending.append(value)
        if not self.warned_extra_calls:
            self.warned_extra_calls = True
            warnings.warn(
                "sched.step(loss) was called without an optimizer.step() since the previous call: autolrs counts "
                "optimizer steps, so this loss is averaged into the next optimizer step's (right under gradient "
                "accumulation; a mistake if sched.step is called twice per step or before optimizer.step()).",
                UserWarning, stacklevel=4,  # the caller of AutoLRS.step, which called count()
            )

    def consumed(self, scale: float | None) -> None:
        """The step that :meth:`count` returned was taken by the controller, at the scaler's ``scale``."""
        self.seen = list(self.counts)
        self.pending = []
        self.last_scale = scale

    def rescale(self) -> None:
        """Read the scaler's scale again: a restored snapshot put back the scale it had."""
        self.last_scale = self.scale()

    def resume(self, pending: list[float], skipped: int) -> None:
        """Resume with a saved state's pending losses and skipped steps, from the optimizers' steps so far."""
        self.pending = [float(x) for x in pending]
        self.skipped = skipped
        self.seen = list(self.counts)
        self.last_scale = self.scale()


class _StepCounter:
    """An optimizer step post-hook that counts the optimizer's real steps for one AutoLRS.

    Holds the counts weakly: an optimizer outliving its scheduler keeps no scheduler alive.
    """

    def __init__(self, steps: OptimizerSteps, index: int) -> None:
        self.steps = weakref.ref(steps)
        self.index = index

    def __call__(self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        steps = self.steps()
        if steps is not None:
            steps.counts[self.index] += 1
