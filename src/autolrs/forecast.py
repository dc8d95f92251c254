"""Exponential loss forecasting (AutoLRS, Section 4.2).

Notation:
    t        step index of a loss within a candidate's series (0 = the candidate's first step)
    L(t)     the loss; model ``L(t) = a * exp(b * t) + c`` with ``b < 0``
    T        the span of the observed series, ``t_last - t_first``
    r        the decay over that span, ``r = -b * T`` (so ``exp(b * t) = exp(-r * t / T)``)
    horizon  the step whose loss is predicted (``tau`` for a stage of ``tau`` kept steps)

Pipeline, after the paper and its reference code: (1) denoise with a degree-2 smoothing spline, dropping
the worst outliers of the first half of the series in a few rounds; (2) for each fixed ``r`` the pair
``(a, c)`` is a linear least-squares problem, so the fit minimises the residual over ``r`` alone (1-D);
(3) evaluate the curve at ``horizon``.

Two constraints the reference code lacks, because it produced negative cross-entropy forecasts by
extrapolating a nearly linear trend tenfold:
    * ``c >= floor``: the curve never goes below what the loss can reach (0 for cross-entropy);
    * ``r >= ln(1 + 1 / max_extrapolation)``: beyond the observed span, the curve moves at most
      ``max_extrapolation`` times what it moved within it (``a e^{-r} / (a (1 - e^{-r})) = 1 / (e^r - 1)``).

Every input, however degenerate (empty, NaN, flat, rising, huge), gives a finite forecast; nothing raises.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import numpy.typing as npt
from scipy.interpolate import UnivariateSpline
from scipy.ndimage import median_filter
from scipy.optimize import minimize_scalar

__all__ = ["Forecast", "forecast_loss", "fit_exponential", "denoise"]

# Decay over the observed span: above ~40 the curve is flat after the first few points anyway.
_MAX_RATE = 40.0
_RATE_GRID = 48


@dataclass(frozen=True)
class Forecast:
    """A forecast and the fit behind it.

    ``value`` is the predicted loss at the horizon; the fitted curve is ``a * exp(b * (t - t0)) + c`` in the
    caller's units and steps (``b`` per step, ``t0`` the first observed step); ``method`` says which path
    produced it: ``"exponential"`` for a fit, or a fallback (``"empty"``, ``"mean"``, ``"flat"``).
    ``observed_end`` is the fitted loss at the last observed step: where the series got to, measured.
    """

    value: float
    a: float
    b: float
    c: float
    method: str
    t0: float = 0.0
    observed_end: float | None = None

    def predict(self, t: npt.ArrayLike) -> np.ndarray | float:
        return self.a * np.exp(self.b * (np.asarray(t, dtype=float) - self.t0)) + self.c


def _robust_noise_variance(y: np.ndarray) -> float:
    """Noise variance from second differences, robust to outliers.

    A smooth trend nearly cancels in ``y[i+1] - 2 y[i] + y[i-1]`` while white noise of variance
    ``sigma^2`` gives it variance ``6 sigma^2``; the MAD makes one spike count as one point.
    """
    d = np.diff(y, n=2)
    if d.size < 2:
        return 0.0
    mad = np.median(np.abs(d - np.median(d)))
    return float((1.4826 * mad) ** 2 / 6.0)


def _spline(t: np.ndarray, y: np.ndarray) -> UnivariateSpline | None:
    if t.size < 4:
        return None
    s = t.size * _robust_noise_variance(y)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spline = UnivariateSpline(t, y, k=2, s=max(s, 1e-12))
    except Exception:  # scipy raises several types on ill-posed input: fall back to the raw series
        return None
    return spline


def denoise(
    t: np.ndarray, y: np.ndarray, kind: Literal["train", "val"] = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(t, smoothed y)``: a smoothing spline through the series with its outliers removed.

    The reference code drops the points farthest from a spline (training losses: 10 rounds of 3%;
    validation: 1 point), only in the first half of the series, where steps are the noisiest. A smoothing
    spline bends toward a spike, though, so here the distance is taken from a running median (which a
    lone spike does not move), a point counts as an outlier only beyond 3 noise standard deviations, and
    at most the reference's share is dropped (30% of the points, or 1 for validation losses). The spline
    is evaluated only inside the span of the kept points, never extrapolated.
    """
    budget = int(0.3 * t.size) if kind == "train" else 1
    keep = np.ones(t.size, dtype=bool)
    if t.size >= 8 and budget > 0:
        residual = np.abs(y - median_filter(y, size=5, mode="nearest"))
        residual[t.size // 2 :] = 0.0
        threshold = 3.0 * math.sqrt(_robust_noise_variance(y))
        worst = np.argsort(residual)[::-1][:budget]
        keep[worst[residual[worst] > threshold]] = False
    t, y = t[keep], y[keep]
    spline = _spline(t, y)
    if spline is None:
        return t, y
    smooth = spline(t)
    return (t, smooth) if np.all(np.isfinite(smooth)) else (t, y)


def _fit_for_rate(s: np.ndarray, z: np.ndarray, rate: float, floor: float | None) -> tuple[float, float, float]:
    """Least-squares ``(a, c)`` for ``z ~ a exp(-rate s) + c`` with ``c >= floor``; returns (sse, a, c)."""
    e = np.exp(-rate * s)
    e_mean, z_mean = e.mean(), z.mean()
    var_e = np.mean((e - e_mean) ** 2)
    if var_e <= 1e-18:  # exp is constant: only c is identifiable
        a, c = 0.0, z_mean
    else:
        a = float(np.mean((e - e_mean) * (z - z_mean)) / var_e)
        c = float(z_mean - a * e_mean)
    if floor is not None and c < floor:
        c = floor
        denom = float(np.dot(e, e))
        a = float(np.dot(e, z - c) / denom) if denom > 0 else 0.0
    sse = float(np.sum((a * e + c - z) ** 2))
    return sse, a, c


def fit_exponential(
    t: np.ndarray, y: np.ndarray, *, floor: float | None = 0.0, max_extrapolation: float = 1.0
) -> tuple[float, float, float]:
    """Fit ``y ~ a exp(b (t - t[0])) + c`` (``b < 0``) to a clean, finite series; returns ``(a, b, c)``.

    Works in normalised units (``s = (t - t0) / T`` in [0, 1], ``z`` scaled to [0, 1]) so that the fit is
    the same at any loss scale; the decay ``r`` is searched on a log grid and refined by bounded Brent.
    """
    t0, span = float(t[0]), float(t[-1] - t[0])
    shift, scale = float(np.min(y)), float(np.max(y) - np.min(y))
    if span <= 0 or scale <= 0 or not math.isfinite(scale):
        c = float(np.mean(y))
        return 0.0, 0.0, c if floor is None else max(c, floor)
    s = (t - t0) / span
    z = (y - shift) / scale
    z_floor = None if floor is None else (floor - shift) / scale
    min_rate = math.log1p(1.0 / max_extrapolation)
    lo, hi = math.log(min_rate), math.log(_MAX_RATE)
    grid = np.linspace(lo, hi, _RATE_GRID)
    sse = np.array([_fit_for_rate(s, z, math.exp(g), z_floor)[0] for g in grid])
    i = int(np.argmin(sse))
    left, right = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    best_log_rate = grid[i]
    if right > left:
        res = minimize_scalar(
            lambda g: _fit_for_rate(s, z, math.exp(g), z_floor)[0], bounds=(left, right), method="bounded",
            options={"xatol": 1e-4},
        )
        if res.success and res.fun <= sse[i]:
            best_log_rate = float(res.x)
    rate = math.exp(best_log_rate)
    _, a, c = _fit_for_rate(s, z, rate, z_floor)
    # Back to the caller's units: z = a e^{-rate (t - t0) / T} + c  =>  y = A e^{b (t - t0)} + C.
    b = -rate / span
    a_units = a * scale
    c_units = c * scale + shift
    return float(a_units), float(b), float(c_units)


def forecast_loss(
    losses: Sequence[float],
    horizon: float,
    *,
    steps: Sequence[float] | None = None,
    kind: Literal["train", "val"] = "train",
    floor: float | None = 0.0,
    max_extrapolation: float = 1.0,
) -> Forecast:
    """Forecast the loss at step ``horizon`` from an observed series.

    Args:
        losses: the observed losses (non-finite entries are ignored).
        horizon: the step to predict, in the units of ``steps``.
        steps: the step of each loss; default ``0, 1, 2, ...``.
        kind: ``"train"`` (every step, noisy) or ``"val"`` (sparse, cleaner): sets the outlier removal.
        floor: lowest possible loss, or ``None``.
        max_extrapolation: see the module docstring.

    Example:
        >>> import numpy as np
        >>> t = np.arange(50)
        >>> round(forecast_loss(2.0 * np.exp(-0.05 * t) + 0.5, horizon=500).value, 3)
        0.5
    """
    y = np.asarray(losses, dtype=float).ravel()
    t = np.arange(y.size, dtype=float) if steps is None else np.asarray(steps, dtype=float).ravel()
    if t.size != y.size:
        raise ValueError(f"steps and losses must have the same length, but got {t.size} and {y.size}.")
    finite = np.isfinite(y) & np.isfinite(t)
    y, t = y[finite], t[finite]
    floor = None if floor is None or not math.isfinite(floor) else float(floor)

    def _clip(v: float) -> float:
        return v if floor is None else max(v, floor)

    if y.size == 0:
        v = 0.0 if floor is None else floor
        return Forecast(v, 0.0, 0.0, v, "empty", observed_end=None)
    # Work relative to the largest magnitude: squares of 1e300 would overflow.
    magnitude = float(np.max(np.abs(y)))
    if magnitude == 0.0:
        return Forecast(_clip(0.0), 0.0, 0.0, _clip(0.0), "flat", observed_end=0.0)
    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order] / magnitude
    f = None if floor is None else floor / magnitude
    if y.size < 4 or t[-1] <= t[0]:
        end = float(np.mean(y[-3:])) * magnitude
        v = _clip(end)
        return Forecast(v, 0.0, 0.0, v, "mean", observed_end=end)
    if float(np.max(y) - np.min(y)) <= 1e-12:
        v = _clip(float(y[-1]) * magnitude)
        return Forecast(v, 0.0, 0.0, v, "flat", observed_end=float(y[-1]) * magnitude)

    t, smooth = denoise(t, y, kind)
    a, b, c = fit_exponential(t, smooth, floor=f, max_extrapolation=max_extrapolation)
    with np.errstate(over="ignore", invalid="ignore"):
        value = (a * math.exp(min(b * (float(horizon) - t[0]), 700.0)) + c) * magnitude
    if not math.isfinite(value):
        end = float(smooth[-1]) * magnitude
        return Forecast(_clip(end), 0.0, 0.0, _clip(end), "mean", observed_end=end)
    # Where the series got to: the fitted curve at the last observed step (a fit to every point is a less
    # noisy level than the last points themselves, or a spline's end).
    end = (a * math.exp(b * (float(t[-1]) - t[0])) + c) * magnitude
    return Forecast(_clip(value), a * magnitude, b, c * magnitude, "exponential", float(t[0]), observed_end=end)
