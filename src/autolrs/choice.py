"""How a stage scores its candidates and chooses its LR. Pure functions of numbers.

Notation: a candidate's *forecast* is the loss its stage is predicted to reach (:mod:`autolrs.forecast`);
its *objective* is what the Gaussian process models: the log of the forecast's height above ``loss_floor``,
capped at the stage's start loss. The choice is made on the objective's scale.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["objective", "choose", "lowest_near_best", "hold", "progress_t"]

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


def choose(lrs: Sequence[float], scores: Sequence[float] | npt.NDArray[np.float64], tolerance: float, *,
           log_scale: bool) -> int:
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


def lowest_near_best(lrs: Sequence[float], scores: Sequence[float], chosen: int, tolerance: float, *,
                     log_scale: bool, start: float | None = None) -> int:
    """``chosen``, or the smallest LR below it whose own score is within ``tolerance`` of the best score
    and, given the start's score ``start``, made at least half the best's progress from it.

    For the first stage, on fresh weights, where a short window is biased toward high LRs: the LR at the
    edge of stability drops the loss fastest for a few steps and then stalls, so the windows put a wide band
    of LRs on one plateau (the Transformer's 0.002-0.03 within 5%, where 0.001-0.0014 is best for the run).
    Scores within the error any forecast is assumed to carry cannot be told apart; the smallest of them
    is the safe one. ``scores`` are the candidates' own (on the scale of :func:`objective`), not the
    posterior's: the posterior pulls an isolated LR toward the mean of the others (MNIST-1D's 0.03, whose
    window barely moved, came within 7% of the best) and extrapolates a trend past the range's edge (the
    noisy quadratic's 2.0 scored best on the posterior with a worse forecast than 1.5's). The tolerance is
    relative on a log scale (``log_scale``), as in :func:`choose`. The progress condition keeps a plateau
    of *no* progress out: where the best window itself moved by less than the tolerance (a slow start),
    every LR too small to move anything would be within it, and the smallest is ``min_lr``. The best score
    is the best that a neighbouring window confirms (:func:`_confirmed_best`): one lucky window does not set
    the bar for the others.
    """
    own = np.asarray(scores, dtype=float)
    own = np.where(np.isnan(own), np.inf, own)
    if tolerance <= 0 or not np.isfinite(own).any():
        return chosen
    if start is not None and not math.isfinite(start):
        start = None
    lowest = float(own.min())
    if start is not None and lowest >= start:
        return chosen  # no window made progress: no plateau of progress to choose on
    gap = math.log1p(tolerance) if log_scale else tolerance * abs(lowest)
    best = _confirmed_best(lrs, own, gap)
    near = [i for i in range(len(lrs)) if own[i] <= best + gap and lrs[i] < lrs[chosen]
            and (start is None or start - own[i] >= 0.5 * (start - best))]
    return min(near, key=lambda i: lrs[i]) if near else chosen


def _confirmed_best(lrs: Sequence[float], own: npt.NDArray[np.float64], gap: float) -> float:
    """The best score that a neighbouring window confirms: one of the two candidates next to it in LR
    scored within ``gap`` of it (a lone candidate confirms itself). Never empty: the lowest score confirms
    its neighbours.

    A single short window can be lucky: on the Transformer (fresh seeds 5 and 7) LR 0.0316 was forecast
    at 2.5-2.8 while 0.0275 and 0.037 beside it were forecast at 3.2-4.4, a window whose loss fell in a
    straight line that the forecast extrapolated; as the reference of :func:`lowest_near_best` it put every
    other LR out of tolerance, the stage kept 0.0316 and the run ended at 2.5-2.6 instead of 1.71. Real
    progress is smooth in the LR, so a best score that its neighbours contradict is not a reference.
    Measured (bench harness, against the best score as the reference): those two runs 2.60 / 2.52 ->
    1.710 / 1.706; MNIST-1D 0.9305 -> 0.9306 (24 seeds, 5 first stages moved one candidate down, both
    ways); the noisy quadratic's expected loss level over 24 seeds (3 changed: one worse by 45%, two
    better by 9-13%).
    """
    order = sorted(range(len(lrs)), key=lambda i: lrs[i])
    confirmed = []
    for p, i in enumerate(order):
        beside = [float(own[order[q]]) for q in (p - 1, p + 1) if 0 <= q < len(order)]
        if not beside or min(beside) <= own[i] + gap:
            confirmed.append(float(own[i]))
    return min(confirmed)


def hold(previous: int, chosen: int, mean: Sequence[float] | npt.NDArray[np.float64], cov: npt.ArrayLike,
         sigmas: float) -> int:
    """``previous`` (the index of the previous stage's LR) unless ``chosen`` beats it by more than ``sigmas``
    standard deviations of their difference under the posterior (``mean``, covariance ``cov``).

    Short windows are noisy, and their errors are not neutral in the LR: within a short window a smaller LR
    looks better at once because it lowers the gradient noise (short-horizon bias, Wu et al. 2018), a gain
    the final decay phase brings anyway. A stage that moves on every insignificant difference drifts to the
    bottom of its trust region stage after stage (BENCHMARKS.md showed the LR falling 3x per stage); holding
    the LR until the evidence is clear keeps what worked. ``sigmas = 0`` always moves to ``chosen``.
    """
    if previous == chosen or sigmas <= 0:
        return chosen
    cov = np.asarray(cov, dtype=float)
    var = cov[previous, previous] + cov[chosen, chosen] - 2.0 * cov[previous, chosen]
    gain = float(mean[previous]) - float(mean[chosen])
    return chosen if gain > sigmas * math.sqrt(max(var, 0.0)) else previous


# Block means tame the correlation of successive losses (momentum, slowly changing weights) in the slope's
# standard error; 8 blocks still leave 6 degrees of freedom.
_PROGRESS_BLOCKS = 8


def progress_t(losses: Sequence[float]) -> float | None:
    """How clearly a kept stage was still making progress at its end: the t statistic of the slope of the
    loss over the stage's second half (fitted to ``_PROGRESS_BLOCKS`` block means); clearly negative while
    the loss still falls, near 0 once it has settled at the level its LR allows. ``None`` when too short
    or not finite.
    """
    half = np.asarray(losses[len(losses) // 2:], dtype=float)
    if half.size < 2 * _PROGRESS_BLOCKS or not np.isfinite(half).all():
        return None
    means = np.array([block.mean() for block in np.array_split(half, _PROGRESS_BLOCKS)])
    t = np.arange(_PROGRESS_BLOCKS, dtype=float)
    slope, intercept = np.polyfit(t, means, 1)
    residual = means - (slope * t + intercept)
    se = math.sqrt(float(residual.var(ddof=2)) / float(((t - t.mean()) ** 2).sum()))
    tiny = 1e-12 * max(float(np.abs(means).max()), 1e-300)  # round-off of a constant series
    if se <= tiny:
        return 0.0 if abs(slope) <= tiny else math.copysign(math.inf, slope)
    return float(slope / se)
