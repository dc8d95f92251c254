"""Property-based tests: arbitrary loss sequences never break the controller or the forecast."""

import json
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autolrs import AutoLRSConfig, StageController, forecast_loss

weird = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from([0.0, -0.0, 1e-300, 1e300, -1e300, float("nan"), float("inf"), -float("inf"), 2.3]),
)


def loss_streams():
    """Whole runs' worth of losses: arbitrary, constant, spiky, decaying with noise, or exploding."""
    arbitrary = st.lists(weird, min_size=1, max_size=250)
    constant = st.builds(lambda v, n: [v] * n, weird, st.integers(1, 250))
    spiky = st.builds(
        lambda base, spikes, n: [spikes[i % len(spikes)] if i % 7 == 0 else base for i in range(n)],
        st.floats(0.01, 10), st.lists(weird, min_size=1, max_size=5), st.integers(1, 250))
    decaying = st.builds(
        lambda a, rate, noise, seed, n: list(a * np.exp(-rate * np.arange(n))
                                             + noise * np.random.default_rng(seed).standard_normal(n)),
        st.floats(0.1, 100), st.floats(0, 0.1), st.floats(0, 1), st.integers(0, 2**16), st.integers(1, 250))
    return st.one_of(arbitrary, constant, spiky, decaying)


configs = st.builds(
    lambda k, warmup, val, floor, total, choose, seed: AutoLRSConfig(
        min_lr=1e-3, max_lr=1.0, candidates=k, stage_steps=10 * k, explore_steps=10, max_stage_steps=20 * k,
        min_explore_steps=3, warmup_steps=warmup, warmup_lr=0.1, use_validation=val, val_points=4,
        loss_floor=floor, total_steps=total, choose=choose, seed=seed),
    st.integers(2, 3), st.sampled_from([0, 5]), st.booleans(), st.sampled_from([0.0, None]),
    st.sampled_from([None, 150, 237]), st.sampled_from(["posterior", "forecast"]), st.integers(0, 100),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs, loss_streams(), st.lists(weird, min_size=1, max_size=20))
def test_controller_survives_any_losses(cfg, losses, val_losses):
    ctrl = StageController(cfg)
    decision = ctrl.begin()
    snapshots = int(decision.snapshot)
    steps = 0
    while not decision.done and steps < len(losses):
        assert math.isfinite(decision.lr)
        if decision.phase == "warmup":
            assert 0 < decision.lr <= cfg.warmup_lr
        elif decision.phase == "decay":  # to zero from the last stage's LR
            assert 0 < decision.lr <= cfg.max_lr * (1 + 1e-9)
        else:
            assert cfg.min_lr * (1 - 1e-9) <= decision.lr <= cfg.max_lr * (1 + 1e-9)
        val = val_losses[steps % len(val_losses)] if ctrl.expects_validation else None
        try:
            decision = ctrl.step(losses[steps], val_loss=val)
        except ValueError as error:  # the two losses a run cannot go on from, refused before any change
            assert "loss_floor=None" in str(error) or "at the snapshot before any LR was tried" in str(error)
            assert ctrl.steps_taken == steps
            break
        steps += 1
        assert not decision.restore or snapshots > 0, "a restore before any snapshot"
        snapshots += int(decision.snapshot)
        assert ctrl.steps_taken == steps
        assert 0 <= ctrl.kept_steps <= steps
    if cfg.total_steps is not None and steps == cfg.total_steps:
        assert decision.done
    json.dumps(ctrl.history, allow_nan=False)  # records stay strict JSON whatever the losses were
    state = json.loads(json.dumps(ctrl.state_dict()))  # and the state plain data
    StageController(cfg).load_state_dict(state)


@settings(max_examples=150, deadline=None)
@given(st.lists(weird, max_size=200), st.floats(0, 1e4), st.sampled_from(["train", "val"]),
       st.sampled_from([0.0, None, -5.0]), st.floats(0.1, 100))
def test_forecast_is_finite_for_any_series(series, horizon, kind, floor, extrapolation):
    f = forecast_loss(series, horizon, kind=kind, floor=floor, max_extrapolation=extrapolation)
    assert math.isfinite(f.value)
    if floor is not None:
        assert f.value >= floor
