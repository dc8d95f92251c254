import math

import numpy as np
import pytest

from autolrs.forecast import denoise, fit_exponential, forecast_loss


def test_exact_exponential_is_recovered():
    t = np.arange(60)
    f = forecast_loss(2.0 * np.exp(-0.05 * t) + 0.5, horizon=600)
    assert f.method == "exponential"
    assert f.a == pytest.approx(2.0, rel=1e-3)
    assert f.b == pytest.approx(-0.05, rel=1e-3)
    assert f.c == pytest.approx(0.5, abs=1e-3)
    assert f.value == pytest.approx(0.5 + 2.0 * math.exp(-0.05 * 600), abs=1e-3)


def noisy_curve(seed: int):
    """2 exp(-0.03 t) + 0.5 over 100 steps with N(0, 0.05) noise, and the generator that drew it."""
    rng = np.random.default_rng(seed)
    t = np.arange(100)
    return rng, 2.0 * np.exp(-0.03 * t) + 0.5 + rng.normal(0, 0.05, t.size)


def test_noisy_exponential_parameters_within_tolerance():
    estimates = []
    for seed in range(20):
        _, y = noisy_curve(seed)
        f = forecast_loss(y, horizon=1000)
        estimates.append((f.a, f.b, f.c))
    a, b, c = np.mean(estimates, axis=0)
    assert a == pytest.approx(2.0, rel=0.05)
    assert b == pytest.approx(-0.03, rel=0.1)
    assert c == pytest.approx(0.5, abs=0.05)


def test_outliers_in_first_half_do_not_bend_the_fit():
    errors = []
    for seed in range(10):
        rng, y = noisy_curve(seed)
        y[rng.choice(50, 3, replace=False)] += 2.0  # three hard batches
        errors.append(forecast_loss(y, horizon=1000).c - 0.5)
    assert abs(np.mean(errors)) < 0.05


def test_denoise_drops_spikes_and_never_extrapolates():
    t = np.arange(40.0)
    y = np.exp(-0.1 * t)
    y[5] += 5.0
    kept_t, smooth = denoise(t, y)
    assert 5.0 not in kept_t
    assert kept_t[0] >= t[0] and kept_t[-1] <= t[-1]
    assert np.max(np.abs(smooth - np.exp(-0.1 * kept_t))) < 0.01


def test_floor_keeps_forecast_above_zero():
    # a nearly linear decrease, which an unconstrained exponential extrapolates below zero
    y = np.linspace(1.0, 0.6, 25)
    assert forecast_loss(y, horizon=250, floor=0.0).value >= 0.0
    assert forecast_loss(y, horizon=250, floor=0.5).value >= 0.5


@pytest.mark.parametrize("m", [0.5, 1.0, 3.0])
def test_extrapolation_is_capped(m):
    y = np.linspace(2.0, 1.8, 30)  # observed change 0.2
    f = forecast_loss(y, horizon=300, floor=None, max_extrapolation=m)
    end = f.predict(29)
    assert end - f.value <= m * 0.2 * 1.05 + 1e-9


def test_rising_series_forecasts_higher_loss():
    y = np.linspace(1.0, 1.5, 30)
    f = forecast_loss(y, horizon=300)
    assert f.value > 1.4


@pytest.mark.parametrize(
    "series",
    [
        [],
        [float("nan")] * 10,
        [float("inf"), 1.0],
        [1.0],
        [2.0, 1.0],
        [3.0] * 50,
        [0.0] * 20,
        [1e300, 1e299, 1e300, 5e299, 1e298, 1e301],
        [-1e300, 1e300] * 5,
        [1e-300 * i for i in range(20)],
        list(np.linspace(5, 1, 20)) + [float("nan")] * 3,
        [-5.0, -6.0, -7.0, -8.0, -9.0],
        [1.0, 1.0 + 1e-15, 1.0, 1.0 - 1e-15] * 5,
    ],
)
def test_degenerate_series_give_finite_forecasts(series):
    for floor in (0.0, None):
        f = forecast_loss(series, horizon=100, floor=floor)
        assert math.isfinite(f.value)
        if floor is not None:
            assert f.value >= floor


def test_flat_series_forecasts_its_level():
    assert forecast_loss([3.0] * 50, horizon=500).value == pytest.approx(3.0)


def test_steps_and_losses_must_match():
    with pytest.raises(ValueError, match="same length"):
        forecast_loss([1.0, 2.0], horizon=3, steps=[0.0])


def test_fit_exponential_units_are_the_callers():
    t = np.arange(10.0, 70.0)
    y = 4.0 * np.exp(-0.1 * (t - 10.0)) + 1.0
    a, b, c = fit_exponential(t, y, floor=0.0, max_extrapolation=10.0)
    assert (a, b, c) == pytest.approx((4.0, -0.1, 1.0), rel=1e-3)
