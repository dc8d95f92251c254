"""The stage plan: how many steps each stage keeps and each candidate tries, within the budget.

Pure arithmetic on step counts (no state), shared by the configuration (which derives the default sizes)
and the controller (which plans each stage as the run goes). Notation (docs/algorithm.md):

    tau      kept steps of a stage; doubles after every stage up to tau_max
    tau'     steps each of the stage's k candidates tries
    S        the stages' span: the budget less the warmup and the final decay phase

With fixed windows (the default) every stage's candidates try ``tau'`` steps whatever ``tau``, so the
search's share of a stage falls as the stages grow; with proportional windows (the paper) ``tau'`` keeps its
ratio to ``tau``, and the search costs ``search_ratio`` steps per kept step throughout.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PAPER_STAGE_STEPS", "PAPER_MAX_STAGE_STEPS", "derive_stage_sizes", "derive_explore_steps",
           "explore_length", "plan_stage", "keep_length", "opening_grid"]

# The paper's constants, used when no budget is given (and never exceeded when one is).
PAPER_STAGE_STEPS = 1000
PAPER_MAX_STAGE_STEPS = 8000
# The opening grid covers the search range with this many LRs per decade.
GRID_PER_DECADE = 2


def derive_stage_sizes(total_steps: int | None, candidates: int, warmup_steps: int, min_explore_steps: int,
                       search_ratio: float | None = None, decay_steps: int = 0) -> tuple[int, int]:
    """``(tau, tau_max)`` for a budget: the paper's constants scaled to it.

    * Fixed windows (``search_ratio=None``): ``tau_max = S / 4`` and ``tau = tau_max / 4``: stages of tau,
      2 tau, 4 tau, 4 tau, ..., four to five of them, enough LR changes to follow a 1/t-like optimum (the
      noisy quadratic's) without spending the budget on searches.
    * Proportional windows (the paper, ``k tau' = search_ratio x tau``): the search keeps its share of every
      stage, so ``S`` keeps ``K = S / (1 + search_ratio)`` steps; ``tau_max = K / 5``, ``tau = tau_max / 4``.

    Both are floored so that every candidate sees at least ``min_explore_steps`` losses, and capped at the
    paper's 1000 / 8000. Without a budget: the paper's constants.
    """
    if total_steps is None:
        return PAPER_STAGE_STEPS, PAPER_MAX_STAGE_STEPS
    span = max(total_steps - warmup_steps - decay_steps, 0)
    if search_ratio is None:
        floor = 2 * min_explore_steps
        max_stage = min(PAPER_MAX_STAGE_STEPS, max(floor, span // 4))
    else:
        floor = math.ceil(candidates * min_explore_steps / search_ratio)
        max_stage = min(PAPER_MAX_STAGE_STEPS, max(floor, int(span / (1.0 + search_ratio)) // 5))
    stage = min(PAPER_STAGE_STEPS, max(floor, max_stage // 4))
    return stage, max(stage, max_stage)


def derive_explore_steps(stage_steps: int, candidates: int, min_explore_steps: int,
                         search_ratio: float | None = None) -> int:
    """``tau'`` of the first stage: ``tau / 10`` with fixed windows (the paper's first-stage ratio), at least
    ``min_explore_steps``; ``search_ratio x tau / k`` with proportional windows."""
    if search_ratio is None:
        return max(min_explore_steps, round(stage_steps / 10))
    return max(1, int(search_ratio * stage_steps / candidates))


def explore_length(tau: int, explore_steps: int, stage_steps: int, search_ratio: float | None,
                   min_explore_steps: int) -> int:
    """``tau'`` of a stage of ``tau`` kept steps: fixed, or proportional to ``tau``."""
    if search_ratio is None:
        return explore_steps
    return max(min_explore_steps, round(tau * explore_steps / stage_steps))


def smallest_stage(k: int, min_explore_steps: int) -> int:
    """The fewest steps a searched stage can take: ``k`` candidates of the shortest window, and a kept stage
    as long as one window. Below it no search is planned, and a remainder that small joins the stage before."""
    return (k + 1) * min_explore_steps


def plan_stage(remaining: int | None, tau: int, n: int, k: int, min_explore_steps: int) -> tuple[int, int] | None:
    """``(tau, tau')`` of the next stage given the steps ``remaining`` in the stages' span, or None if no
    search fits (``remaining=None``: no budget, the nominal sizes).

    The last stage takes every step left: it shrinks to fit, or absorbs a remainder too small for another
    worthwhile stage (less than a search plus half a stage), so that no short tail is searched for nothing.
    Windows shrink only when the stage would otherwise be shorter than two of them.
    """
    if remaining is None:
        return tau, n
    if remaining < smallest_stage(k, min_explore_steps):
        return None
    search = k * n
    if tau + search > remaining:
        if remaining - search < 2 * n:
            n = max(min_explore_steps, remaining // (k + 2))
        return remaining - k * n, n
    if remaining - (tau + search) < search + tau // 2:
        tau = remaining - search
    return tau, n


def keep_length(remaining: int | None, tau: int, smallest: int) -> int:
    """The kept steps of a stage of nominal ``tau`` with ``remaining`` steps left in the span after its
    search: a remainder smaller than ``smallest`` (too little for another stage) is kept too."""
    if remaining is None:
        return tau
    return max(0, remaining) if remaining - tau < smallest else tau


def warmup_lr(peak: float, steps: int, i: int) -> float:
    """The LR of the ``i``-th of ``steps`` warmup steps: linear from ``peak / steps`` up to ``peak``."""
    return peak * (i + 1) / steps


DECAY_SHAPES = ("linear", "1-sqrt")


def decay_lr(lr: float, steps: int, i: int, shape: str = "linear") -> float:
    """The LR of the ``i``-th of ``steps`` decay steps, from ``lr`` towards zero, never exactly 0.

    ``shape``: ``"linear"``, ``lr (1 - x)``, or ``"1-sqrt"``, ``lr (1 - sqrt(x))``, with
    ``x = (i + 1) / (steps + 1)`` the fraction of the phase done (Hägele et al., 2024: the "1-sqrt" cooldown).
    """
    if shape == "1-sqrt":
        return lr * (1.0 - math.sqrt((i + 1) / (steps + 1)))
    return lr * (steps - i) / (steps + 1)


def opening_grid(lo: float, hi: float) -> list[float]:
    """A log grid over ``[lo, hi]``, ends included, ``GRID_PER_DECADE`` LRs per decade (at least 3)."""
    count = max(3, round(GRID_PER_DECADE * math.log10(hi / lo)) + 1)
    return [float(v) for v in np.geomspace(lo, hi, count)]
