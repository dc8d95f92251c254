"""Reliability, round 2 (issue 10), the controller's part: a loss below ``loss_floor`` (item 3), batch noise
taken for divergence (item 4), and clearer failures for a NaN ``val_fn`` or a NaN snapshot (item 9).

Every test drives :class:`StageController` with synthetic losses, as a driver would; each one failed on the
code before this change (the docstrings say how).
"""

import json
import math
import warnings

import numpy as np
import pytest

from autolrs import AutoLRSConfig, StageController
from autolrs.safety import SPIKE_RATE, diverged, divergence_threshold, failure_kind


class Run:
    """A one-number model driven as a driver must: restore, snapshot, then the LR, after every decision.

    ``loss_fn(step, state, lr)``: ``step`` indexes a fixed batch stream (the same batch at the same step
    whatever the LR), ``state`` counts the optimizer steps along the restored path (0 is the initial weights).
    """

    def __init__(self, cfg, loss_fn, *, val_fn=None, ctrl=None):
        self.loss_fn, self.val_fn = loss_fn, val_fn
        self.state, self.saved, self.messages = 0, None, []
        if ctrl is None:
            self.ctrl = StageController(cfg)
            self.decisions = []
            self.apply(self.ctrl.begin())
        else:
            self.ctrl = ctrl

    def apply(self, d):
        self.decisions.append(d)
        if d.restore:
            self.state = self.saved
        if d.snapshot:
            self.saved = self.state

    def go(self, max_steps=100_000, stop_when=None):
        ctrl = self.ctrl
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                while not ctrl.done and ctrl.steps_taken < max_steps:
                    if stop_when is not None and stop_when(self):
                        break
                    loss = self.loss_fn(ctrl.steps_taken, self.state, self.decisions[-1].lr)
                    self.state += 1
                    val = self.val_fn(self.state, self.decisions[-1].lr) if ctrl.expects_validation else None
                    self.apply(ctrl.step(loss, val))
            finally:
                self.messages += [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        return self


def drive(cfg, loss_fn, max_steps=100_000, **kwargs):
    """Run to the end (or ``max_steps``); returns the :class:`Run` (its controller, decisions, warnings)."""
    stop_when = kwargs.pop("stop_when", None)
    return Run(cfg, loss_fn, **kwargs).go(max_steps, stop_when)


def bowl(state, lr, best=0.1):
    """Best LR ``best``; every step lowers the loss a little."""
    return 0.5 + 0.3 * abs(math.log10(lr) - math.log10(best)) + 2.0 * math.exp(-0.01 * state)


def chi2(step):
    """The squared error of one sample: a chi-square(1) factor, 4.6% of it above 4x its mean (one batch)."""
    return float(np.random.default_rng([7, step]).standard_normal()) ** 2


def noisy(step, state, lr):
    """The bowl seen through batches of one sample: finite, but spiky enough to fool the divergence test."""
    return bowl(state, lr) * chi2(step)


def frozen(ctrl):
    return json.dumps(ctrl.state_dict(), sort_keys=True)


# -- item 3: a loss below loss_floor ----------------------------------------------------------------------
def test_a_loss_below_loss_floor_raises_naming_loss_floor_none_and_changes_nothing():
    """Before: a negative NLL with the default loss_floor=0.0 ran to the end without a word, every forecast
    clamped at 0.0 and lr 1.0 (max_lr) chosen in every stage."""
    def nll(step, state, lr):  # crosses 0 after ~70 steps at the best LR
        return bowl(state, lr) - 1.5

    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=2000, seed=0)
    run = drive(cfg, nll, stop_when=lambda r: nll(r.ctrl.steps_taken, r.state, r.decisions[-1].lr) < 0)
    ctrl, steps = run.ctrl, run.ctrl.steps_taken
    assert not ctrl.done and steps > 10  # stopped just before the first negative loss
    loss = nll(steps, run.state, run.decisions[-1].lr)
    before = frozen(ctrl)
    with pytest.raises(ValueError) as error:
        ctrl.step(loss)
    message = str(error.value)
    assert "loss_floor=None" in message and f"loss {loss!r} at step {steps + 1}" in message
    assert "below loss_floor=0.0" in message
    assert frozen(ctrl) == before and ctrl.steps_taken == steps  # nothing changed: the step can be retried
    ctrl.step(0.0)  # a loss at the floor is fine
    assert ctrl.steps_taken == steps + 1

    # From the first loss, as the NLL: raised at step 1, the controller untouched.
    fresh = StageController(cfg)
    fresh.begin()
    before = frozen(fresh)
    with pytest.raises(ValueError, match=r"the loss -1\.0 at step 1 is below loss_floor=0\.0.*loss_floor=None"):
        fresh.step(-1.0)
    assert frozen(fresh) == before

    # loss_floor=None is the fix the message names: the same losses then steer the search to the best LR.
    free = drive(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=2000, seed=0, loss_floor=None), nll).ctrl
    assert free.done and free.steps_taken == 2000
    searches = [r for r in free.history if r["kind"] == "search"]
    assert all(abs(math.log10(r["lr"]) + 1.0) < 0.5 for r in searches)  # near 0.1, not max_lr


def test_a_validation_loss_below_loss_floor_raises_too():
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, use_validation=True, stage_steps=20, max_stage_steps=20,
                        explore_steps=10, candidates=3, seed=0, loss_floor=0.5)
    ctrl = StageController(cfg)
    ctrl.begin()
    while not ctrl.expects_validation:
        ctrl.step(1.0)
    before = frozen(ctrl)
    with pytest.raises(ValueError, match=r"validation loss 0\.25 at step \d+ is below loss_floor=0\.5.*loss_floor=None"):
        ctrl.step(1.0, val_loss=0.25)
    assert frozen(ctrl) == before


# -- item 9 (b): NaN at the snapshot ----------------------------------------------------------------------
S0_MESSAGE = "the loss is NaN at the snapshot before any LR was tried; check the data and the loss function"


@pytest.mark.parametrize("warmup", [0, 5])
def test_a_loss_that_is_nan_from_the_first_step_fails_fast(warmup):
    """Before: no error; 3992 RuntimeWarnings "lower min_lr" over a 4000-step budget, 0 steps kept."""
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000, seed=0, warmup_steps=warmup)
    ctrl = StageController(cfg)
    ctrl.begin()
    before = frozen(ctrl)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not one warning on the way
        with pytest.raises(ValueError) as error:
            ctrl.step(float("nan"))
    assert S0_MESSAGE in str(error.value)
    assert str(error.value) == ("autolrs: the loss is NaN at the snapshot before any LR was tried; check the data and "
                                "the loss function (the first loss of the run, at the initial weights). Every "
                                "candidate restarts from this snapshot: no LR can recover from it.")
    assert frozen(ctrl) == before and ctrl.steps_taken == 0
    with pytest.raises(ValueError, match="the loss is inf at the snapshot before any LR was tried"):
        ctrl.step(float("inf"))


def test_weights_that_are_nan_at_a_later_stage_snapshot_fail_fast():
    """The weights turn NaN at the last step of stage 0's kept phase, so every candidate of stage 1 restarts
    from a NaN snapshot. Before: no error; stage 1 was rolled back 2453 times and the decay restarted 1200
    times, with 3655 RuntimeWarnings (2453 "lower min_lr") until the 4000-step budget ran out."""
    nan_from = {}

    def loss_fn(step, state, lr):
        return float("nan") if "state" in nan_from and state >= nan_from["state"] else bowl(state, lr)

    def mark(run):  # stage 1's snapshot was just taken: the weights are NaN from here on
        if run.ctrl._stage == 1 and "state" not in nan_from:
            nan_from["state"] = run.saved
        return False

    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000, seed=0)
    with pytest.raises(ValueError) as error:
        drive(cfg, loss_fn, stop_when=mark)
    assert S0_MESSAGE in str(error.value)
    assert "(step 338, the first loss of stage 1 at its snapshot; if the weights themselves are not finite, the " \
           "optimizer step before the snapshot made them so)" in str(error.value)


def test_a_nan_first_loss_of_a_later_candidate_is_that_candidates_divergence_not_an_error():
    """The snapshot was seen finite by the stage's first candidate: a NaN first loss of another candidate is
    its batch's, and it only stops that candidate (as before)."""
    bad = {}

    def loss_fn(step, state, lr):
        return float("nan") if step == bad.get("step") else bowl(state, lr)

    def mark(run):  # the first step of stage 0's second candidate
        ctrl = run.ctrl
        if ctrl.phase == "explore" and len(ctrl._record["candidates"]) == 1 and ctrl._candidate["steps"] == 0:
            bad.setdefault("step", ctrl.steps_taken)
        return False

    ctrl = drive(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=1000, seed=0), loss_fn, stop_when=mark).ctrl
    second = ctrl.history[0]["candidates"][1]
    assert ctrl.done and second["diverged"] and second["steps"] == 1 and second["failure"] == "nonfinite"


# -- item 9 (a): a NaN from val_fn ------------------------------------------------------------------------
def test_a_nan_validation_loss_names_val_fn_not_a_divergence():
    """Before: "all 9 candidates diverged (lowest lr 0.001); every lr down to min_lr=0.001 failed: lower
    min_lr" while the training losses were finite."""
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, use_validation=True, stage_steps=20, max_stage_steps=20,
                        explore_steps=10, candidates=3, seed=0)
    run = drive(cfg, lambda step, state, lr: 1.0 / (1 + 0.01 * state), max_steps=400,
                val_fn=lambda state, lr: float("nan"))
    ctrl, messages = run.ctrl, run.messages
    assert messages[0] == ("autolrs stage 0: val_fn returned NaN at lr 0.001 and at 8 higher lrs while the training "
                           "losses stayed finite (all 9 candidates failed); min_lr=0.001 failed too: check val_fn; "
                           "going on with max_lr=0.001")
    assert all("val_fn returned NaN at lr" in m and "check val_fn" in m for m in messages)
    assert not any("candidates diverged" in m or "lower min_lr" in m for m in messages)
    assert all(c["failure"] == "val_nan" for c in ctrl.history[0]["candidates"])
    assert ctrl._max_lr == 1.0  # a failure at min_lr bounds its own stage only


# -- item 4 (a): one failure never collapses the run-wide range ---------------------------------------------
def _one_nan_in_stage_0s_kept_phase(best):
    blown = {}

    def loss_fn(step, state, lr):
        return float("nan") if step == blown.get("step") else bowl(state, lr, best)

    def mark(run):
        ctrl = run.ctrl
        if ctrl.phase == "keep" and ctrl._stage == 0 and ctrl._record["kept_steps"] == 20:
            blown.setdefault("step", ctrl.steps_taken)
        return False

    # forecast_noise=0 and first_tolerance=0: the scenario needs stage 0 to prefer 0.121 to min_lr on this
    # noiseless bowl; the default's assumed 10% forecast error counts their small difference as noise, and its
    # first-stage rule keeps the smallest LR within 10% of the best forecast: min_lr.
    return drive(AutoLRSConfig(min_lr=0.1, max_lr=10.0, total_steps=4000, seed=0, forecast_noise=0.0,
                               first_tolerance=0.0), loss_fn, stop_when=mark)


def test_one_failure_at_min_lr_bounds_its_stage_only():
    """Stage 0 keeps min_lr (the best LR here) and one batch gives NaN. Before: max_lr was pinned to min_lr for
    the rest of the run: stages 1-4 "search range collapsed to min_lr", no candidate tried."""
    run = _one_nan_in_stage_0s_kept_phase(best=0.1)
    ctrl, messages = run.ctrl, run.messages
    assert messages == ["autolrs stage 0: the kept trajectory at lr 0.1 diverged (the loss went NaN/inf); min_lr=0.1 "
                        "itself diverged: lower min_lr; going on with max_lr=0.1"]
    assert ctrl._max_lr == 10.0
    stages = [r for r in ctrl.history if r["kind"] == "search"]
    assert stages[0]["max_lr"] == 0.1 and stages[0]["rollbacks"] == 1
    assert [len(r["candidates"]) for r in stages[1:]] == [5, 5, 5, 5]  # searched again, not collapsed
    assert not any(e["kind"] == "range_collapsed" for r in ctrl.history for e in r["events"])


def test_one_failure_just_above_min_lr_leaves_a_band_above_min_lr():
    """Best LR 0.15; stage 0 keeps 0.121 and one batch gives NaN. Before: half of 0.121 is below min_lr, so
    max_lr became min_lr = 0.1 for the rest of the run (every later stage kept 0.1 without a search). Now the
    run-wide bound stops one trust band above min_lr (0.3) and later stages find 0.14-0.17."""
    run = _one_nan_in_stage_0s_kept_phase(best=0.15)
    ctrl, messages = run.ctrl, run.messages
    assert messages == ["autolrs stage 0: the kept trajectory at lr 0.121 diverged (the loss went NaN/inf); going on "
                        "with max_lr=0.1"]
    assert ctrl._max_lr == pytest.approx(0.3)
    later = [r for r in ctrl.history if r["kind"] == "search"][1:]
    assert all(len(r["candidates"]) == 5 and 0.13 < r["lr"] < 0.18 for r in later)


# -- item 4 (b), (c): noise, the roll-back limit and the advice ---------------------------------------------
def test_failure_kinds_tell_noise_from_divergence():
    t = divergence_threshold(1.0, 4.0)
    assert failure_kind([1.0, 2.0, float("nan")], t) == "nonfinite"
    assert failure_kind([1.0, None, 1.0], t) == "nonfinite"  # a stored record
    assert failure_kind([1.0, 1.0, 5.0, 9.0, 30.0], t) == "explosion"  # rose and stayed up
    assert failure_kind([1.0, 100.0, 100.0], t) == "explosion"
    assert failure_kind([5.0, 1.0, 6.0, 1.0, 7.0], t) == "noise"  # fell back between spikes
    assert diverged([5.0, 1.0, 6.0, 1.0, 7.0], t)  # what the divergence test alone cannot tell
    # three spikes in a row after kept losses that cross the threshold on their own in 3% of steps: noise
    reference = [1.0] * 97 + [5.0] * 3
    assert 3 / 100 >= SPIKE_RATE
    assert failure_kind([1.0, 1.0, 5.0, 6.0, 7.0], t, reference) == "noise"
    assert failure_kind([1.0, 1.0, 5.0, 6.0, 7.0], t, [1.0] * 100) == "explosion"


def test_noisy_losses_under_the_default_forecast_noise_keep_the_same_limits():
    """The scenario below with the default's assumed forecast error: other stages, the same guarantees."""
    run = drive(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, seed=0), noisy, max_steps=30_000)
    ctrl, messages = run.ctrl, run.messages
    assert all(len(r["discarded"]) <= 3 for r in ctrl.history + [ctrl._record])
    assert ctrl._max_lr == 1.0
    assert not any("lower min_lr" in m for m in messages)
    assert ctrl.kept_steps > 10_000


def lifted(phase="keep", stage=None):
    """Finite spikes on 3 of every 5 kept steps (of ``stage``, or of the decay): each window of 5 falls back
    between spikes (``failure_kind`` "noise"), but the level itself is up (the median of the recent losses
    is over the threshold), so the divergence test fails for good reason. Returns (holder, loss_fn): put
    the :class:`Run` in ``holder["run"]``."""
    holder = {}

    def loss_fn(step, state, lr):
        ctrl = holder["run"].ctrl
        k = ctrl._record["kept_steps"] if ctrl._record else 0
        up = ctrl.phase == phase and (stage is None or ctrl._stage == stage) and k % 5 in (0, 2, 4)
        return bowl(state, lr) * (6.0 if up else 1.0)

    return holder, loss_fn


def test_batch_noise_stays_on_the_kept_trajectory_and_never_pins_the_range():
    """Batches of one sample, no budget (30,000 steps). Two releases ago: stage 2 was rolled back 25 times in a
    row, max_lr pinned at min_lr, 4075 of 30,000 steps kept; then at most 3 roll-backs per stage, 14,840 kept.
    Now spikes over a level that did not rise are kept (one event per stage): 19,345 kept, and the one
    roll-back left is lost progress (stage 4 ended its 8000 steps above its start loss)."""
    # forecast_noise=0: the scenario of the figures above (another assumed forecast error takes other stages)
    run = drive(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, seed=0, forecast_noise=0.0), noisy, max_steps=30_000)
    ctrl, messages = run.ctrl, run.messages
    records = ctrl.history + [ctrl._record]
    assert [len(r["discarded"]) for r in records] == [0, 0, 0, 0, 1]
    assert ctrl._max_lr == 1.0
    assert ctrl.kept_steps == 19_345
    assert [e["kind"] for r in records for e in r["events"]] == ["spikes_kept"] * 3 + ["rolled_back_lost_progress"]
    assert records[2]["events"][0]["message"] == (
        "autolrs stage 2: finite losses above the divergence threshold fell back below it between spikes or "
        "crossed it as often as before (batch noise, not divergence): kept")
    assert len(messages) == 1 and "giving back the progress" in messages[0]  # spikes kept: recorded, no warning


def test_a_noisy_4000_step_run_rolls_no_stage_back():
    """Batches of one sample, 4000-step budget (seed 1). Two releases ago: stage 2 rolled back 5 times and
    max_lr pinned at min_lr; then 3 roll-backs of stage 2 and 1 of stage 4. Now none: spikes are kept."""
    def loss_fn(step, state, lr):
        return noisy(step + 100_000, state, lr)

    run = drive(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000, seed=1), loss_fn)
    ctrl, messages = run.ctrl, run.messages
    assert ctrl.steps_taken == 4000 and ctrl.done
    assert [r["rollbacks"] for r in ctrl.history] == [0, 0, 0, 0, 0, 0]
    assert [e["kind"] for r in ctrl.history for e in r["events"]] == ["spikes_kept"] * 3
    assert ctrl._max_lr == 1.0 and not messages


def test_spikes_that_lift_the_level_roll_a_stage_back_at_most_3_times_and_never_pin_the_range():
    holder, loss_fn = lifted(stage=2)
    # stages at the bowl's best LR, 0.1: the first-stage rule would keep 0.03, within 10% of its forecast
    run = holder["run"] = Run(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000, seed=0, first_tolerance=0.0), loss_fn)
    run.go()
    ctrl, messages = run.ctrl, run.messages
    assert ctrl.steps_taken == 4000 and ctrl.done
    assert [r["rollbacks"] for r in ctrl.history] == [0, 0, 3, 0, 0]
    assert ctrl._max_lr == 1.0  # batch noise is no evidence about the LR: the run-wide range is untouched
    assert len(messages) == 3 and not any("lower min_lr" in m for m in messages)
    assert messages[0] == ("autolrs stage 2: the kept trajectory at lr 0.1 diverged (finite losses: the median of the "
                           "last 5, 3.062, is above 2.051 but they fell back below it between spikes: likely batch "
                           "noise); going on with max_lr=0.05")
    assert "rolled back 3 times in this stage, the limit: keeping lr 0.00185 for the rest of the stage, which only " \
           "a NaN/inf loss rolls back from now on" in messages[2]
    assert messages[2].endswith("raise divergence_factor (now 4) or average the loss over more samples")
    # past the limit, finite spikes stay on the kept trajectory, recorded once
    assert [e["kind"] for e in ctrl.history[2]["events"]] == ["rolled_back_diverged"] * 3 + ["spikes_kept"]


def test_a_decay_whose_level_lifts_is_restarted_at_most_3_times():
    """The decay seen through spikes on 3 of 5 steps, 10,000 steps. Two releases ago (heavy-tailed batches):
    restarted 113 times, each from half the LR, down to 9.6e-36. Now: 3 restarts (from 0.1 to 0.0125), then
    the spikes stay on the kept trajectory."""
    holder, loss_fn = lifted(phase="decay")
    # stages at the bowl's best LR, 0.1: the first-stage rule would keep 0.03, within 10% of its forecast
    run = holder["run"] = Run(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=10_000, seed=0, first_tolerance=0.0), loss_fn)
    run.go()
    decay = run.ctrl.history[-1]
    assert run.ctrl.steps_taken == 10_000 and decay["kind"] == "decay"
    assert decay["rollbacks"] == 3 and len(decay["discarded"]) == 3
    assert run.ctrl.history[-2]["lr"] == pytest.approx(0.1) and decay["lr"] == pytest.approx(0.0125)
    assert run.ctrl.kept_steps == 8715 and len(run.messages) == 3
    assert "restarted 3 times, the limit: from now on only a NaN/inf loss restarts it; the failure had finite " \
           "losses that fell back between spikes: if it is batch noise, raise divergence_factor (now 4)" in run.messages[2]
    assert decay["events"][-1]["message"] == ("autolrs stage 5: finite losses above the divergence threshold were kept: the "
                                              "decay was already restarted 3 times")


def test_a_noisy_decay_keeps_its_spikes():
    """Clean losses, then a decay seen through heavy-tailed batches (a squared chi-square): its spikes are
    kept, the decay is never restarted (before: 3 restarts, from 0.1 down to 0.0125, and 8248 steps kept)."""
    holder = {}

    def loss_fn(step, state, lr):
        z = float(np.random.default_rng([11, step]).standard_normal())
        return bowl(state, lr) * (z ** 4 / 3.0 if holder["run"].ctrl.phase == "decay" else 1.0)

    # stages at the bowl's best LR, 0.1: the first-stage rule would keep 0.03, within 10% of its forecast
    run = holder["run"] = Run(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=10_000, seed=0, first_tolerance=0.0), loss_fn)
    run.go()
    decay = run.ctrl.history[-1]
    assert decay["kind"] == "decay" and decay["rollbacks"] == 0 and decay["lr"] == pytest.approx(0.1)
    assert [e["kind"] for e in decay["events"]] == ["spikes_kept"] and not run.messages
    assert run.ctrl.kept_steps == 10_000 - sum(c["steps"] for r in run.ctrl.history for c in r["candidates"])


def test_nan_at_min_lr_past_the_limit_still_rolls_back_but_says_so_once():
    """min_lr itself gives NaN after one step: never kept, so the stage keeps rolling back (the right advice is
    "lower min_lr"). Before: 148 warnings and 296 events in 300 steps; now 4 warnings, 5 events."""
    cfg = AutoLRSConfig(min_lr=0.1, max_lr=1.0, candidates=3, stage_steps=10, explore_steps=5, max_stage_steps=20,
                        min_explore_steps=3, total_steps=None, choose="forecast", seed=0, preset="paper", kappa=2.0,
                        trust_region=3.0, warm_start=True)
    run = drive(cfg, lambda step, state, lr: float("nan") if state > 0 else 1.0, 300)
    ctrl, messages = run.ctrl, run.messages
    assert ctrl.kept_steps == 0 and run.saved == 0  # nothing that diverged was kept
    assert ctrl._rollbacks == 148 and len(ctrl._record["discarded"]) == 147
    assert len(messages) == 4 and len(ctrl._record["events"]) == 5
    assert all("lower min_lr" in m for m in messages[1:])
    assert "rolled back 3 times in this stage, the limit" in messages[2]


def test_the_rollback_count_is_saved_and_resumes_identically():
    """The per-stage counter is in the state dict; a run resumed mid-stage, after 2 of its 3 roll-backs,
    continues exactly as the uninterrupted one."""
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, seed=0)
    assert StageController(cfg).state_dict()["rollbacks"] == 0
    holder, loss_fn = lifted()
    reference = holder["run"] = Run(cfg, loss_fn)
    reference.go(max_steps=6000)
    assert [r["rollbacks"] for r in reference.ctrl.history] == [3, 0]

    holder, loss_fn = lifted()
    run = holder["run"] = Run(cfg, loss_fn)
    run.go(stop_when=lambda r: r.ctrl._stage == 0 and r.ctrl._rollbacks == 2)
    state = json.loads(json.dumps(run.ctrl.state_dict()))  # plain data
    assert state["rollbacks"] == 2
    run.ctrl = StageController(cfg)
    run.ctrl.load_state_dict(state)
    run.go(max_steps=6000)
    assert [(d.lr, d.phase, d.restore, d.snapshot) for d in run.decisions] == \
        [(d.lr, d.phase, d.restore, d.snapshot) for d in reference.decisions]
    assert run.ctrl.history == reference.ctrl.history and run.ctrl._rollbacks == reference.ctrl._rollbacks


def test_states_of_the_previous_version_are_refused_with_the_version_message():
    state = StageController(AutoLRSConfig(min_lr=1e-3, max_lr=1.0)).state_dict()
    state["version"] = 2
    del state["rollbacks"]
    with pytest.raises(ValueError, match="saved by controller state version 2; this autolrs reads version 4"):
        StageController(AutoLRSConfig(min_lr=1e-3, max_lr=1.0)).load_state_dict(state)
