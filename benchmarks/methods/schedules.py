"""The hand-designed LR schedules, as multipliers of the peak LR at step ``t`` of a ``budget``-step run.

Each follows its paper's (or PyTorch's) standard form, with the constants a user would take by default;
only the peak LR is tuned. One-cycle, CLR and SGDR equal PyTorch's ``OneCycleLR``, ``CyclicLR`` and
``CosineAnnealingWarmRestarts`` step for step (tests/test_benchmarks.py checks it). Only the LR is scheduled (no momentum cycling), so every method runs the same
optimizer. Written as plain functions (not ``torch.optim.lr_scheduler`` objects) so that the exact LR
sequence is known without running it, e.g. for the noisy quadratic model's closed form.
"""

from __future__ import annotations

import math
from typing import Callable

__all__ = ["SCHEDULES", "multiplier"]


def constant(t: int, budget: int) -> float:
    return 1.0


def step_decay(t: int, budget: int) -> float:
    """x0.1 at 50% and again at 75% of the budget (the ResNet recipe's shape)."""
    return 1.0 if t < budget // 2 else 0.1 if t < (3 * budget) // 4 else 0.01


def cosine(t: int, budget: int) -> float:
    """Cosine decay to zero over the budget (Loshchilov & Hutter's annealing, no restart)."""
    return 0.5 * (1 + math.cos(math.pi * t / budget))


def one_cycle(t: int, budget: int, warm: float = 0.3, div: float = 25.0, final_div: float = 1e4) -> float:
    """Smith & Topin's 1cycle with ``torch.optim.lr_scheduler.OneCycleLR``'s defaults.

    Cosine rise from ``peak / 25`` to the peak over 30% of the budget, then cosine descent to
    ``peak / 25 / 1e4``.
    """
    up = warm * budget - 1
    if t <= up:
        start, end, x = 1 / div, 1.0, t / up
    else:
        start, end, x = 1.0, 1 / (div * final_div), (t - up) / (budget - 1 - up)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * x))


def clr_triangular2(t: int, budget: int, cycles: int = 4, base_fraction: float = 0.25) -> float:
    """Smith's cyclical LR, ``triangular2`` policy: the amplitude halves every cycle.

    Between ``peak / 4`` (Smith: a base of 1/3 to 1/4 of the maximum) and the peak, with ``cycles`` full
    cycles in the budget (a half cycle is ``budget / 8`` steps, within Smith's 2-10 epochs here).
    """
    half = max(1, budget // (2 * cycles))  # whole steps, as torch.optim.lr_scheduler.CyclicLR
    cycle = math.floor(1 + t / (2 * half))
    x = abs(t / half - 2 * cycle + 1)
    amplitude = max(0.0, 1 - x) / 2 ** (cycle - 1)
    return base_fraction + (1 - base_fraction) * amplitude


def sgdr(t: int, budget: int, restarts: int = 4, mult: int = 2) -> float:
    """SGDR (cosine annealing with warm restarts), ``T_mult = 2``, to zero.

    ``restarts`` periods of 1, 2, 4 and 8 units fill the budget exactly, so the run ends at the end of a
    period, as its users choose.
    """
    period = budget / sum(mult**i for i in range(restarts))
    start = 0.0
    while t >= start + period and period > 0:
        start += period
        period *= mult
    return 0.5 * (1 + math.cos(math.pi * (t - start) / period))


SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": constant,
    "step": step_decay,
    "cosine": cosine,
    "one-cycle": one_cycle,
    "clr-triangular2": clr_triangular2,
    "sgdr": sgdr,
}


def multiplier(name: str, t: int, budget: int) -> float:
    return SCHEDULES[name](t, budget)
