"""The tests that decide when a candidate or a kept stage has failed. Pure functions of measured losses.

Both use measured losses only, never a forecast: a forecast that promised progress is no evidence that a
stage failed to make it (the roll-back that compared stages with their forecasts discarded useful stages
whenever a forecast overshot).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["divergence_threshold", "diverged", "lost_progress"]

# A trial that gained less than this share of the start loss made no clear progress to lose: 10% in a
# later stage (a converging loss wanders by about that much), 2% in the first, from fresh weights, where
# a 10-step trial of an LR that then kills the network gained 6-8% (MNIST-1D, measured).
MIN_GAIN = 0.1
MIN_GAIN_FIRST = 0.02


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


def lost_progress(start: float, trial: float, recent: Sequence[float], *, first_stage: bool, at_end: bool) -> bool:
    """Whether a kept stage has given back the progress its candidate's trial had made.

    The kept stage replays the chosen candidate's LR from the same snapshot, so it should get at least as
    far as the trial did. An LR that drops the loss fastest in a short window can then stall the model or
    kill it (a finite, flat loss back at chance level, which no explosion check sees). Needs a trial that
    gained at least ``MIN_GAIN`` of the start loss (``MIN_GAIN_FIRST`` in the first stage), and then:

    * at the end of a stage (``recent``: its last quarter), the loss averages at or above the start loss:
      the stage made no progress at all;
    * in the first stage (no LR that worked to go by), also during it: the loss is back more than three
      quarters of the way from the trial's level to the start loss (a dead network is stopped early).

    A converging model's loss wanders by as much as a short trial gains (measured on the noisy quadratic,
    where a looser test fired on fluctuations), so later stages are judged on their long end average only.
    """
    gain = start - trial
    if gain < (MIN_GAIN_FIRST if first_stage else MIN_GAIN) * abs(start) or not len(recent):
        return False
    level = float(np.mean(recent))
    if not math.isfinite(level):
        return False
    if at_end and level >= start:
        return True
    return first_stage and level >= trial + 0.75 * gain
