"""How a stage scores its candidates and chooses its LR. Pure functions of numbers.

Notation: a candidate's *forecast* is the loss its stage is predicted to reach (:mod:`autolrs.forecast`);
its *objective* is what the Gaussian process models: the log of the forecast's height above ``loss_floor``,
capped at the stage's start loss. The choice is made on the objective's scale.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["objective", "choose"]

# A forecast above the stage's start loss counts this fraction of its excess (on the objective's scale).
_COMPRESSION = 0.1


def objective(forecast: float, start_loss: float | None, floor: float | None) -> float:
    """The GP's target for a candidate whose stage is forecast to reach ``forecast``.

    Losses move by factors (one stage can cut the loss tenfold, the next by 10%), so the GP works on a log
    scale above the floor, where a 10% difference counts the same at any loss level. A candidate forecast
    above the stage's start loss failed the stage whatever its value: its excess is compressed tenfold
    (still ordered, so that among failures the least bad is preferred), because an outlier (a loss of 11
    among losses of 3) would otherwise dominate the GP's normalised targets and hide every real difference
    between the others. Without a floor (losses that can be negative), the forecast itself, compressed.
    """
    def scale(v: float) -> float:
        return v if floor is None else math.log(max(v - floor, 1e-12 * max(1.0, abs(floor))))

    if start_loss is None or not math.isfinite(start_loss) or forecast <= start_loss:
        return scale(forecast)
    return scale(start_loss) + _COMPRESSION * (scale(forecast) - scale(start_loss))


def choose(lrs: Sequence[float], scores: Sequence[float], tolerance: float, *, log_scale: bool) -> int:
    """Index of the chosen LR: the largest whose score is within ``tolerance`` of the best score.

    ``tolerance = 0`` is the argmin. On a log scale (``log_scale``, scores from :func:`objective` with a
    floor) the tolerance is relative: ``log(1 + tolerance)``; otherwise it is relative to the best score's
    magnitude. A positive tolerance leans toward larger LRs against the short-horizon bias (Wu et al. 2018);
    measured here it cost more than it gained (README, "How it works"), hence the default 0.
    """
    scores = np.asarray(scores, dtype=float)
    scores = np.where(np.isnan(scores), np.inf, scores)
    if not np.isfinite(scores).any():
        return min(range(len(lrs)), key=lambda i: lrs[i])  # nothing to go by: the most careful LR
    best = int(np.argmin(scores))
    gap = math.log1p(tolerance) if log_scale else tolerance * abs(float(scores[best]))
    near = [i for i, s in enumerate(scores) if s <= scores[best] + gap]
    return max(near, key=lambda i: lrs[i])
