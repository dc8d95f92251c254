"""The tests that decide when a candidate or a kept stage has failed. Pure functions of measured losses.

Both use measured losses only, never a forecast: a forecast that promised progress is no evidence that a
stage failed to make it (the roll-back that compared stages with their forecasts discarded useful stages
whenever a forecast overshot).
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Sequence, cast

import numpy as np

__all__ = ["SPIKE_RATE", "LostProgress", "divergence_threshold", "diverged", "failure_kind", "lost_progress"]

# A trial that gained less than this share of the start loss made no clear progress to lose: 10% in a
# later stage (a converging loss wanders by about that much), 2% in the first, from fresh weights, where
# a 10-step trial of an LR that then kills the network gained 6-8% (MNIST-1D, measured).
MIN_GAIN = 0.1
MIN_GAIN_FIRST = 0.02

# How a kept stage lost its trial's progress: it went back toward the start loss, or (the first stage) it
# ended no lower than the trial had got.
LostProgress = Optional[Literal["gave_back", "stalled"]]


def divergence_threshold(start_loss: float | None, factor: float) -> float | None:
    """The loss above which a run has exploded: ``factor x |start|`` above the start (None: no threshold)."""
    if start_loss is None or start_loss == 0.0:
        return None
    return start_loss + (factor - 1.0) * abs(start_loss)


def diverged(losses: Sequence[float], threshold: float | None) -> bool:
    """NaN/inf at once; a finite explosion when the median of the last 5 losses exceeds ``threshold``.

    Spikes (hard batches) do not end a run: 3 of the last 5 losses must be above the threshold.
    """
    if not math.isfinite(losses[-1]):
        return True
    if threshold is None or len(losses) < 3:
        return False
    return float(np.median(losses[-5:])) > threshold


# Kept losses above the divergence threshold on their own in at least this share of steps make a window of
# 3 of 5 above it a matter of chance: about once in 13,000 steps at 2% (10 p^3), so that a long stage
# (8000 steps) meets one about half the time; a chi-square loss of one sample (4.6% above 4x its mean) once
# in 1100 steps.
SPIKE_RATE = 0.02


def failure_kind(losses: Sequence[float | None], threshold: float | None, reference: Sequence[float] = ()) -> str:
    """How a series that :func:`diverged` failed: what the message says and what advice it may give.

    * ``"nonfinite"``: a NaN/inf loss (``None`` stands for one in a stored record);
    * ``"explosion"``: finite, every loss of the last 5 from the first one above ``threshold`` on is above it
      (the loss rose and stayed up, as a diverging run's does), and the kept losses before it
      (``reference``) rarely crossed the threshold on their own (less than ``SPIKE_RATE`` of them);
    * ``"noise"``: finite, and the losses fell back below the threshold between spikes, or the kept losses
      before it crossed it often enough that such a window comes by chance: hard batches of a small-batch
      loss, not divergence.
    """
    if any(x is None or not math.isfinite(x) for x in losses):
        return "nonfinite"
    if threshold is None:
        return "noise"  # unreachable for a series that diverged(): without a threshold only NaN/inf fails
    above = [x > threshold for x in cast("Sequence[float]", losses)[-5:]]  # no None: returned above
    stayed_up = True in above and all(above[above.index(True):])
    spikes = sum(1 for x in reference if x > threshold)
    if stayed_up and spikes < SPIKE_RATE * max(len(reference), 1):
        return "explosion"
    return "noise"


def lost_progress(start: float, trial: float, recent: Sequence[float], *, first_stage: bool,
                  at_end: bool) -> LostProgress:
    """Whether (and how) a kept stage has lost the progress its candidate's trial had made: None if it has not.

    The kept stage replays the chosen candidate's LR from the same snapshot, so it should get at least as
    far as the trial did. An LR that drops the loss fastest in a short window can then stall the model or
    kill it (a finite, flat loss back at chance level, which no explosion check sees). Needs a trial that
    gained at least ``MIN_GAIN`` of the start loss (``MIN_GAIN_FIRST`` in the first stage), and then:

    * at the end of a stage (``recent``: its last window in the first stage, its last quarter later), the
      loss averages at or above the start loss: the stage made no progress at all (``"gave_back"``);
    * at the end of the first stage (``"stalled"``), the loss averages at or above the trial's level: the whole stage (ten
      trials long by default), at the trial's LR from the same snapshot, got no further than the trial. On
      fresh weights that is an LR at the edge of stability: the fastest short window, then a stall (MNIST-1D,
      LR 0.36: 2.30 -> 1.92 in the 18-step trial, 1.94 after the 175-step stage, against ~0.9 at 0.32 on
      the other seeds; the stalled network never caught up: 0.876 test accuracy against 0.94, and the
      ablations that shared the stall ended at 0.38-0.91);
    * in the first stage (no LR that worked to go by), also during it: the loss is back more than three
      quarters of the way from the trial's level to the start loss (a dead network is stopped early;
      ``"gave_back"``).

    A converging model's loss wanders by as much as a short trial gains (measured on the noisy quadratic,
    where a looser test fired on fluctuations), so later stages are judged on their long end average only.
    """
    gain = start - trial
    if gain < (MIN_GAIN_FIRST if first_stage else MIN_GAIN) * abs(start) or not len(recent):
        return None
    level = float(np.mean(recent))
    if not math.isfinite(level):
        return None
    if at_end and level >= start:
        return "gave_back"
    if at_end and first_stage and level >= trial:
        return "stalled"
    return "gave_back" if first_stage and level >= trial + 0.75 * gain else None
