"""What the controller tells the driver after each step, and the constants its phases share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["Decision", "Phase", "TAIL", "TAIL_MAX", "MAX_ROLLBACKS", "LR_RTOL", "finite_or_none"]

Phase = Literal["warmup", "explore", "keep", "decay", "done"]
# The loss a stage starts from is the mean of the last kept losses: at least TAIL of them and two
# candidate windows' worth (as precise as the levels it is compared with); at most TAIL_MAX are kept.
TAIL = 10
TAIL_MAX = 256
# A stage is rolled back to its snapshot (all candidates diverged, the kept trajectory diverged or lost its
# progress, the decay diverged) at most this many times. The last roll-back keeps the lowest LR tried, and
# from then on only a NaN/inf loss rolls the stage back (a non-finite state is never kept): batch noise taken
# for divergence once rolled one stage back 142 times in a row (total_steps=None, chi-square losses).
MAX_ROLLBACKS = 3
# Relative tolerance of LR comparisons (an LR "at" a bound).
LR_RTOL = 1e-4


@dataclass(frozen=True)
class Decision:
    """What the driver does before the next optimizer step.

    Attributes:
        lr: the LR of the next step (the searched LR; a driver scales it per param group).
        phase: the phase the next step belongs to.
        restore: restore the stage snapshot S0 first (a candidate ended, or the search did).
        snapshot: then save the current state as the new S0 (a stage starts).
        done: the budget is spent; no further step is expected.
    """

    lr: float
    phase: Phase
    restore: bool = False
    snapshot: bool = False
    done: bool = False


def finite_or_none(x: float) -> float | None:
    """``x`` as a float, or None when it is NaN/inf (records stay strict JSON)."""
    return float(x) if math.isfinite(x) else None
