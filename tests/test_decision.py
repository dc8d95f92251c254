"""The default preset's decision: stage plan, opening grid, objective, choice rule, failure tests, decay phase.

The stage mechanics (restores, snapshots, retries, resume) are tested on the paper's windows in
test_controller.py; here, what the default does differently, with exact numbers.
"""

import math

import numpy as np
import pytest

from autolrs import AutoLRSConfig, StageController
from autolrs import stages
from autolrs.choice import choose, hold, lowest_near_best, objective, progress_t
from autolrs.config import PRESETS
from autolrs.safety import diverged, divergence_threshold, lost_progress


def run(cfg, loss_fn, max_steps=100_000):
    """Drive a controller with ``loss_fn(steps_since_snapshot_state, lr)``; returns it and its decisions."""
    ctrl = StageController(cfg)
    decisions, state, saved = [ctrl.begin()], 0, None
    while not decisions[-1].done and ctrl.steps_taken < max_steps:
        d = decisions[-1]
        if d.restore:
            state = saved
        if d.snapshot:
            saved = state
        loss = loss_fn(state, d.lr)
        state += 1
        decisions.append(ctrl.step(loss))
    return ctrl, decisions


def bowl(state, lr):
    """Best LR 0.1; every step lowers the loss a little."""
    return 0.5 + 0.3 * abs(math.log10(lr) + 1.0) + 2.0 * math.exp(-0.01 * state)


@pytest.fixture(scope="module")
def default_run():
    """One 4000-step run of the default preset on the bowl (shared: GP fits make a run take seconds)."""
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000, seed=0)
    return (cfg, *run(cfg, bowl))


@pytest.fixture(scope="module")
def paper_run():
    return run(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000, seed=0, preset="paper"), bowl)[0]


# -- configuration and presets --------------------------------------------------------------------------
def test_presets_fill_only_the_options_left_unset():
    default = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000)
    paper = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000, preset="paper")
    for name, value in PRESETS["default"].items():
        assert getattr(default, name) == value
    for name, value in PRESETS["paper"].items():
        assert getattr(paper, name) == value
    mixed = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000, preset="paper", decay_fraction=0.2)
    assert mixed.decay_fraction == 0.2 and mixed.kappa == 1e6
    assert AutoLRSConfig.from_dict(mixed.to_dict()) == mixed  # a resolved config is plain data
    with pytest.raises(ValueError, match="preset must be one of"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, preset="fast")


def test_first_tolerance_is_a_preset_option_and_is_validated():
    assert AutoLRSConfig(min_lr=1e-3, max_lr=1.0).first_tolerance == 0.1
    assert AutoLRSConfig(min_lr=1e-3, max_lr=1.0, preset="paper").first_tolerance == 0.0
    with pytest.raises(ValueError, match="first_tolerance must be >= 0"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, first_tolerance=-0.1)
    with pytest.raises(TypeError, match="first_tolerance"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, first_tolerance="0.1")


def test_the_assumed_forecast_error_reaches_the_search_only_on_a_log_scale():
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000)
    assert cfg.forecast_noise == 0.1
    assert AutoLRSConfig(min_lr=1e-3, max_lr=1.0, preset="paper").forecast_noise == 0.0
    with pytest.raises(ValueError, match="forecast_noise must be >= 0"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, forecast_noise=-0.1)
    with pytest.raises(TypeError, match="forecast_noise must be a real number"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, forecast_noise="0.1")
    for floor, noise in ((0.0, 0.1), (None, 0.0)):  # without a floor the objective has no relative scale
        ctrl = StageController(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000, loss_floor=floor))
        ctrl.begin()
        ctrl.step(1.0)
        assert ctrl.state_dict()["search"]["noise"] == noise


def test_derived_sizes_for_a_4000_step_budget():
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000)
    # 30% decay leaves S = 2800: tau_max = S / 4, tau = tau_max / 4, tau' = tau / 10
    assert (cfg.decay_steps, cfg.stage_steps, cfg.max_stage_steps, cfg.explore_steps) == (1200, 175, 700, 18)
    paper = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000, preset="paper")
    # search = kept steps: K = 4000 / 2, tau_max = K / 5, tau = tau_max / 4, tau' = tau / k
    assert (paper.decay_steps, paper.stage_steps, paper.max_stage_steps, paper.explore_steps) == (0, 100, 400, 10)


# -- stage plan -------------------------------------------------------------------------------------------
def test_plan_keeps_fixed_windows_and_absorbs_a_small_remainder():
    assert stages.plan_stage(None, 400, 20, 5, 10) == (400, 20)
    assert stages.plan_stage(1000, 400, 20, 5, 10) == (400, 20)  # room for more after it
    # 400 + 100 leaves 250 < 100 + 200: kept by this stage rather than searched again
    assert stages.plan_stage(750, 400, 20, 5, 10) == (650, 20)
    assert stages.plan_stage(300, 400, 20, 5, 10) == (200, 20)  # the last stage shrinks to fit
    assert stages.plan_stage(50, 400, 20, 5, 10) is None  # not even a search fits
    assert stages.explore_length(800, 20, 200, None, 10) == 20  # fixed windows
    assert stages.explore_length(800, 20, 200, 1.0, 10) == 80  # proportional (the paper)


def test_opening_grid_covers_the_range_two_per_decade():
    grid = stages.opening_grid(1e-3, 1.0)
    assert grid[0] == pytest.approx(1e-3) and grid[-1] == pytest.approx(1.0) and len(grid) == 7
    assert np.allclose(np.diff(np.log10(grid)), 0.5)
    assert len(stages.opening_grid(0.1, 0.2)) == 3


def test_first_stage_opens_with_the_grid_then_two_gp_proposals_and_later_stages_warm_start(default_run):
    cfg, ctrl, _ = default_run
    first, second = ctrl.history[0], ctrl.history[1]
    lrs = [c["lr"] for c in first["candidates"]]
    assert lrs[:7] == pytest.approx(stages.opening_grid(1e-3, 1.0)) and len(lrs) == 9
    assert all(c["steps"] == cfg.explore_steps for c in first["candidates"])
    assert second["candidates"][0]["lr"] == first["lr"]  # warm start
    assert len(second["candidates"]) == 5
    assert all(first["lr"] / 3 * 0.999 <= c["lr"] <= first["lr"] * 3 * 1.001 for c in second["candidates"])
    # fixed windows: every stage's candidates try the same tau'
    assert {r["explore_steps"] for r in ctrl.history if r["kind"] == "search"} == {cfg.explore_steps}


def test_search_share_of_a_4000_step_run_and_the_budget_spent_exactly(default_run, paper_run):
    cfg, ctrl, decisions = default_run
    search = sum(c["steps"] for r in ctrl.history for c in r["candidates"])
    assert ctrl.steps_taken == 4000 and search + ctrl.kept_steps == 4000
    assert search / 4000 == pytest.approx(0.14, abs=0.02)  # the paper's ratio spends 50%
    paper = paper_run
    paper_search = sum(c["steps"] for r in paper.history for c in r["candidates"])
    assert 0.45 < paper_search / 4000 < 0.55


def test_decay_phase_falls_linearly_to_zero_from_the_last_stage_lr(default_run, paper_run):
    cfg, ctrl, decisions = default_run
    decay = ctrl.history[-1]
    assert decay["kind"] == "decay" and decay["start_step"] == 4000 - cfg.decay_steps == 2800
    assert decay["lr"] == ctrl.history[-2]["lr"]
    lrs = [d.lr for d in decisions[2800:4000]]
    assert all(d.phase == "decay" for d in decisions[2800:4000])
    n = cfg.decay_steps
    assert cfg.decay_shape == "linear"
    assert lrs == pytest.approx([decay["lr"] * (n - i) / (n + 1) for i in range(n)])
    assert decisions[2800].snapshot  # a divergence in the decay can be rolled back
    assert all(r["kind"] == "search" for r in paper_run.history)  # no decay phase: ends on a kept stage


def test_decay_shapes_and_their_validation():
    assert [stages.decay_lr(1.0, 3, i, "linear") for i in range(3)] == pytest.approx([0.75, 0.5, 0.25])
    assert [stages.decay_lr(1.0, 3, i, "1-sqrt") for i in range(3)] == pytest.approx([0.5, 1 - 0.5**0.5, 1 - 0.75**0.5])
    assert stages.decay_lr(0.2, 1000, 999, "1-sqrt") > 0  # never exactly 0
    assert AutoLRSConfig(min_lr=1e-3, max_lr=1.0).decay_shape == "linear"
    assert AutoLRSConfig(min_lr=1e-3, max_lr=1.0, preset="paper").decay_shape == "linear"
    with pytest.raises(ValueError, match="decay_shape must be one of 'linear', '1-sqrt', but got 'cosine'"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, decay_shape="cosine")
    with pytest.raises(TypeError, match="decay_shape must be a str"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, decay_shape=0.5)
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=1000, decay_shape="1-sqrt", seed=0)
    ctrl, decisions = run(cfg, bowl)
    lrs = [d.lr for d in decisions if d.phase == "decay"]
    n, lr = cfg.decay_steps, ctrl.history[-1]["lr"]
    assert n == 300 and lr == ctrl.history[-2]["lr"]
    assert lrs == pytest.approx([lr * (1 - math.sqrt((i + 1) / (n + 1))) for i in range(n)])
    assert lrs[n // 4] == pytest.approx(lr / 2, rel=0.01)  # half the LR a quarter of the way in


def test_decay_that_diverges_restarts_from_half_the_lr_on_the_decay_snapshot():
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=1000, seed=0)
    ctrl = StageController(cfg)
    d, state, saved, blown = ctrl.begin(), 0, None, False
    with pytest.warns(RuntimeWarning, match="decay from lr .* diverged"):
        while not d.done:
            if d.restore:
                state = saved
            if d.snapshot:
                saved = state
            loss = float("nan") if d.phase == "decay" and ctrl.kept_steps > 0 and not blown and \
                ctrl.steps_taken == 900 else bowl(state, d.lr)
            blown |= math.isnan(loss)
            state += 1
            d = ctrl.step(loss)
    decay = ctrl.history[-1]
    assert ctrl.steps_taken == 1000 and decay["discarded"] and decay["lr"] == ctrl.history[-2]["lr"] / 2


# -- objective and choice ---------------------------------------------------------------------------------
def test_objective_is_log_height_above_the_floor_and_compresses_failures():
    assert objective(1.0, 2.0, 0.0) == pytest.approx(0.0)
    assert objective(0.1, 2.0, 0.0) == pytest.approx(math.log(0.1))
    assert objective(1.5, 2.0, 1.0) == pytest.approx(math.log(0.5))
    worse, much_worse = objective(3.0, 2.0, 0.0), objective(30.0, 2.0, 0.0)
    assert math.log(2.0) < worse < much_worse < math.log(2.0) + 0.1 * math.log(15) + 1e-9  # ordered, compressed
    assert objective(-3.0, None, None) == -3.0  # no floor: the forecast itself
    assert math.isfinite(objective(0.0, 1.0, 0.0))


def test_choose_takes_the_best_or_the_largest_lr_within_tolerance():
    lrs, scores = [0.01, 0.03, 0.1, 0.3], [1.0, 0.5, 0.52, 0.9]
    assert choose(lrs, scores, 0.0, log_scale=False) == 1
    assert choose(lrs, scores, 0.05, log_scale=False) == 2  # 0.52 is within 5% of 0.5
    logs = [math.log(s) for s in scores]
    assert choose(lrs, logs, 0.05, log_scale=True) == 2 and choose(lrs, logs, 0.03, log_scale=True) == 1
    assert choose(lrs, [math.nan] * 4, 0.0, log_scale=True) == 0  # nothing to go by: the smallest LR


def test_hold_keeps_the_previous_lr_unless_the_choice_is_clearly_better():
    mean = [0.0, -0.5, -0.1]
    independent = np.diag([0.01, 0.01, 0.01])  # sd of a difference: sqrt(0.02) = 0.141
    assert hold(0, 1, mean, independent, 1.0) == 1  # 0.5 better: 3.5 sd
    assert hold(0, 2, mean, independent, 1.0) == 0  # 0.1 better: 0.7 sd, within noise
    assert hold(0, 1, mean, independent, 4.0) == 0  # a stricter threshold holds
    assert hold(0, 2, mean, independent, 0.0) == 2  # 0: always move
    assert hold(1, 1, mean, independent, 1.0) == 1
    # correlated posteriors (neighbouring LRs): their difference is known better than either value
    correlated = np.array([[0.01, 0.0099], [0.0099, 0.01]])
    assert hold(0, 1, [0.0, -0.05], correlated, 1.0) == 1  # sd of the difference 0.014


def test_progress_t_tells_a_falling_loss_from_a_settled_one():
    rng = np.random.default_rng(0)
    steps = np.arange(400)
    falling = 1.0 + np.exp(-steps / 300) + rng.normal(0, 0.02, steps.size)
    settled = 1.0 + 0.05 * np.exp(-steps / 20) + rng.normal(0, 0.02, steps.size)
    assert progress_t(falling) < -5
    assert abs(progress_t(settled)) < 3
    assert progress_t(falling[::-1]) > 5  # rising
    assert progress_t([1.0] * 10) is None  # too short to judge
    assert progress_t([1.0] * 40 + [float("nan")] * 40) is None
    assert progress_t([1.0] * 100) == 0.0 and progress_t([0.5] * 50 + [0.25] * 50) == 0.0
    assert progress_t(list(np.linspace(2.0, 1.0, 100))) < -50  # a noiseless fall


def test_the_stage_choice_follows_the_gp_posterior_to_the_best_lr():
    # first_tolerance=0: the first stage too keeps the posterior's choice (the default's rule is tested below)
    ctrl, _ = run(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=4000, seed=0, first_tolerance=0.0), bowl)
    for r in ctrl.history:
        if r["kind"] == "search":
            assert abs(math.log10(r["lr"]) + 1.0) < 0.3  # near the bowl's 0.1


def test_the_first_stage_keeps_the_smallest_lr_forecast_within_10_percent_of_the_best(default_run):
    # The bowl's LRs differ by an offset: 0.0316's forecast (2.038) is 8% above the best (1.888 at 0.1),
    # 0.01's (2.188) 16%. The rule keeps 0.0316, and the hold keeps it while the bowl's loss still falls:
    # where the LRs within the assumed forecast error really differ, the rule costs this much.
    cfg, ctrl, _ = default_run
    first = ctrl.history[0]
    forecasts = {round(c["lr"], 4): c["forecast"] for c in first["candidates"] if not c["diverged"]}
    best = min(forecasts.values())
    assert first["lr"] == pytest.approx(10 ** -1.5)
    assert first["forecast"] <= 1.1 * best < forecasts[0.01]
    assert all(lr >= 0.0316 for lr, f in forecasts.items() if f <= 1.1 * best)


def test_lowest_near_best_takes_the_smallest_lr_on_the_plateau_of_progress():
    lrs = [0.001, 0.003, 0.01, 0.03, 0.1]
    log = [math.log(v) for v in (3.70, 3.40, 3.29, 3.28, 3.45)]  # the Transformer's first stage, fresh weights
    start = math.log(4.49)
    assert lowest_near_best(lrs, log, 3, 0.1, log_scale=True, start=start) == 1  # 3.40 is within 10% of 3.28
    assert lowest_near_best(lrs, log, 3, 0.03, log_scale=True, start=start) == 2
    assert lowest_near_best(lrs, log, 3, 0.0, log_scale=True, start=start) == 3  # 0: the posterior's choice
    assert lowest_near_best(lrs, log, 1, 0.1, log_scale=True, start=start) == 1  # never above the choice
    # a slow start: the best window moved 4%, every LR too small to move is within 10% of it, none made half
    # the best's progress: no plateau of progress, the posterior's choice stands
    slow = [math.log(v) for v in (2.30, 2.29, 2.27, 2.21, 2.25)]
    assert lowest_near_best(lrs, slow, 3, 0.1, log_scale=True, start=math.log(2.30)) == 3
    assert lowest_near_best(lrs, slow, 3, 0.1, log_scale=True, start=None) == 0  # no start: the plateau alone
    # no window made progress at all: nothing to choose on
    up = [math.log(v) for v in (2.40, 2.35, 2.31, 2.32, 2.50)]
    assert lowest_near_best(lrs, up, 2, 0.1, log_scale=True, start=math.log(2.30)) == 2
    # raw scores (no loss floor): the tolerance is relative to the best's magnitude
    assert lowest_near_best(lrs, [5.0, 1.09, 1.2, 1.0, 3.0], 3, 0.1, log_scale=False) == 1
    assert lowest_near_best(lrs, [float("nan")] * 5, 3, 0.1, log_scale=False) == 3


def test_lowest_near_best_does_not_take_a_lone_window_as_its_reference():
    # The Transformer's first stage on fresh seed 5 (candidates sorted by LR): 0.0316's window forecast 2.82,
    # the LRs 15% on either side 3.23 and 3.24. As the reference it put every other LR out of tolerance, the
    # stage kept 0.0316 and the run ended at 2.60 (1.71 on the other seeds).
    lrs = [0.0001, 0.000316, 0.001, 0.00316, 0.01, 0.0275, 0.0316, 0.0371, 0.1]
    forecasts = [3.858, 3.766, 3.392, 3.53, 3.334, 3.225, 2.82, 3.244, 8.882]
    log = [math.log(v) for v in forecasts]
    start = math.log(4.438)
    # the best its neighbours confirm is 0.0275's 3.225: within 10% of it, the smallest is 0.001
    assert lowest_near_best(lrs, log, 6, 0.1, log_scale=True, start=start) == 2
    # one neighbour within the tolerance confirms it: 3.225 -> 3.05 makes 2.82 the reference again, and only
    # 0.0275 is within 10% of it
    confirmed = log[:5] + [math.log(3.05)] + log[6:]
    assert lowest_near_best(lrs, confirmed, 6, 0.1, log_scale=True, start=start) == 5
    # a lone candidate confirms itself; a diverged neighbour (inf) confirms nothing
    assert lowest_near_best([0.01], [math.log(3.0)], 0, 0.1, log_scale=True, start=start) == 0
    assert lowest_near_best([0.001, 0.01, 0.1], [math.log(3.3), math.log(2.5), math.inf], 1, 0.1,
                            log_scale=True, start=start) == 0


def killed_above_half(state, lr):
    """LRs above 0.5 raise the loss from the start (a network they kill); below, the best LR is 0.3."""
    if lr > 0.5:
        return 2.65 + 0.004 * state
    return 0.5 + 0.3 * abs(math.log10(lr / 0.3)) + 1.8 * math.exp(-0.02 * state)


@pytest.mark.parametrize("choose_by, tolerance", [("posterior", 0.3), ("forecast", 1.0)])
def test_a_candidate_forecast_above_the_start_is_never_chosen_while_another_makes_progress(choose_by, tolerance):
    # A tolerance takes the largest LR whose score is near the best; the objective compresses a failure's
    # excess tenfold and the posterior smooths it toward its neighbours, so LR 1.0 (forecast 2.72 from a
    # start of 2.60) scored within it and was kept: the network died in the first stage and no roll-back saw
    # it (its trial had gained nothing to give back).
    # first_tolerance=0: the first-stage rule would take the smallest LR near the best, not the largest
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=2000, seed=0, tolerance=tolerance,
                        choose=choose_by, first_tolerance=0.0)
    ctrl, _ = run(cfg, killed_above_half)
    first = ctrl.history[0]
    by_lr = {round(c["lr"], 6): c["forecast"] for c in first["candidates"]}
    assert by_lr[1.0] > first["start_loss"]  # the failure was measured
    assert first["lr"] == pytest.approx(10 ** -0.5)  # the largest LR within tolerance that makes progress
    assert first["forecast"] < first["start_loss"]
    assert all(r["lr"] < 0.5 for r in ctrl.history)  # later stages search around it


def test_when_every_candidate_is_forecast_above_the_start_the_best_score_is_still_chosen():
    # A plateau (every LR's window ends above the stage's start): no candidate is set aside, the choice is
    # the usual one, the LR of the lowest score.
    def plateau(state, lr):
        return 2.0 + 0.001 * state * (1.0 + abs(math.log10(lr / 0.03)))

    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=1000, seed=0)
    ctrl, _ = run(cfg, plateau)
    first = ctrl.history[0]
    valid = [c for c in first["candidates"] if not c["diverged"]]
    assert all(c["forecast"] > first["start_loss"] for c in valid)
    assert abs(math.log10(first["lr"] / 0.03)) < 0.5


# -- failure tests ----------------------------------------------------------------------------------------
def test_divergence_is_a_windowed_median_not_one_spike():
    threshold = divergence_threshold(1.0, 4.0)
    assert threshold == 4.0
    assert diverged([1.0, float("nan")], threshold)
    assert not diverged([1.0, 100.0, 1.0, 1.0, 1.0], threshold)  # one spike
    assert not diverged([1.0, 1.0, 100.0, 1.0, 100.0], threshold)  # two of five
    assert diverged([1.0, 100.0, 1.0, 100.0, 100.0], threshold)  # three of five
    assert divergence_threshold(None, 4.0) is None and not diverged([5.0, 6.0, 7.0], None)


def test_lost_progress_needs_a_clear_trial_gain_and_judges_later_stages_on_their_end_only():
    # a dead network: the trial got from 2.3 to 1.9, the kept stage is back at 2.3
    assert lost_progress(2.3, 1.9, [2.31] * 20, first_stage=True, at_end=False)
    assert lost_progress(2.3, 1.9, [2.31] * 20, first_stage=False, at_end=True)
    assert not lost_progress(2.3, 1.9, [2.31] * 20, first_stage=False, at_end=False)  # later: end only
    assert not lost_progress(2.3, 1.9, [1.8] * 20, first_stage=True, at_end=True)  # got past its trial
    assert not lost_progress(2.3, 1.9, [2.0] * 20, first_stage=True, at_end=False)  # during it: 3/4 back needed
    assert not lost_progress(2.3, 1.9, [2.0] * 20, first_stage=False, at_end=True)  # later: back at the start
    assert lost_progress(2.3, 1.9, [2.25] * 20, first_stage=True, at_end=True)  # gave back 7/8 of it
    assert not lost_progress(2.3, 2.28, [2.4] * 20, first_stage=True, at_end=True)  # no clear trial gain
    assert not lost_progress(2.3, 2.2, [2.4] * 20, first_stage=False, at_end=True)  # later stages: 10% needed
    assert not lost_progress(2.3, 1.9, [], first_stage=True, at_end=True)


def test_a_first_stage_that_ends_no_lower_than_its_trial_has_stalled():
    """MNIST-1D, seed 2 (bench, 2026-12-07): LR 0.36 took the loss from 2.30 to 1.92 in its 18-step trial and
    the 175-step stage ended at 1.94; the network never caught up (test accuracy 0.876 against 0.94)."""
    assert lost_progress(2.304, 1.921, [1.936] * 18, first_stage=True, at_end=True) == "stalled"
    assert lost_progress(2.3, 1.9, [2.31] * 18, first_stage=True, at_end=True) == "gave_back"
    assert lost_progress(2.3, 1.9, [1.95] * 18, first_stage=True, at_end=True)  # a little above the trial
    # the healthy first stages of the bench got past their trial: MNIST-1D ~0.9, the Transformer 3.07 (trial
    # 3.31), the noisy quadratic 0.021 (trial 0.58)
    assert not lost_progress(2.304, 2.128, [0.884] * 18, first_stage=True, at_end=True)
    assert not lost_progress(4.489, 3.31, [3.074] * 10, first_stage=True, at_end=True)
    assert not lost_progress(2.594, 0.582, [0.021] * 18, first_stage=True, at_end=True)
    # later stages: a converging loss wanders as much as a trial gains, so only a return to the start counts
    assert not lost_progress(1.0, 0.8, [0.85] * 18, first_stage=False, at_end=True)


def stalling_network(edge):
    """Losses where LR >= ``edge`` drops the loss fastest for 10 steps, then stalls there, creeping up (an LR at
    the edge of stability); lower LRs converge, best near 0.1."""
    def loss_fn(state, lr):
        if lr >= edge:
            return 2.0 + 0.03 * max(10 - state, 0) + 0.002 * max(state - 10, 0)
        return 2.3 - 1.3 * (1 - math.exp(-0.01 * state)) * (1 - 0.3 * abs(math.log10(lr) + 1))
    return loss_fn


def test_a_first_stage_that_stalls_after_its_trial_is_rolled_back_and_redone_lower():
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=2000, seed=0)
    with pytest.warns(RuntimeWarning, match="no lower than its 10-step trial .*: the LR stalled the model"):
        ctrl, _ = run(cfg, stalling_network(0.5))
    first = ctrl.history[0]
    [failed] = first["discarded"]
    assert failed["lr"] >= 0.5 and failed["steps"] == first["tau"]  # judged at the stage's end
    assert [e["kind"] for e in first["events"]] == ["rolled_back_lost_progress"]
    assert first["lr"] < 0.5 and first["loss_reached"] < first["start_loss"]
    assert all(r["lr"] < 0.5 for r in ctrl.history)


def dying_network(slope, dead_from, dead_loss):
    """Losses where LR >= 0.5 drops the loss by ``slope`` a step (the best of any short window) and then
    kills the network from step ``dead_from`` (``dead_loss``); lower LRs converge, best near 0.1."""
    def loss_fn(state, lr):
        if lr >= 0.5:
            return 2.3 - slope * state if state < dead_from else dead_loss
        return 2.3 - 1.3 * (1 - math.exp(-0.01 * state)) * (1 - 0.3 * abs(math.log10(lr) + 1))
    return loss_fn


def test_a_first_stage_whose_network_dies_is_rolled_back_early_and_redone_lower():
    """LR >= 0.5 drops the loss fast in a short window, then kills the network (loss back at 2.3)."""
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=2000, seed=0)
    with pytest.warns(RuntimeWarning, match="giving back the progress"):
        ctrl, _ = run(cfg, dying_network(0.05, 20, 2.3))
    first = ctrl.history[0]
    [failed] = first["discarded"]
    assert failed["lr"] >= 0.5 and failed["steps"] == 4 * cfg.explore_steps  # stopped after 4 windows
    assert first["lr"] < 0.5 and first["loss_reached"] < 2.0
    assert all(r["lr"] < 0.5 for r in ctrl.history)


def test_a_first_stage_that_ends_above_its_start_after_a_small_trial_gain_is_rolled_back():
    # measured with the paper's 10-step windows on MNIST-1D: LR 0.56-1.0 gained 6-8% in its trial, then the
    # kept stage ended above the start loss (a dead network)
    assert lost_progress(2.30, 2.15, [2.33] * 25, first_stage=True, at_end=True)
    assert not lost_progress(2.30, 2.15, [2.33] * 25, first_stage=False, at_end=True)  # later: 10% needed
    assert not lost_progress(2.30, 2.27, [2.33] * 25, first_stage=True, at_end=True)  # no clear trial gain


def test_a_first_stage_whose_network_dies_in_its_last_window_is_rolled_back():
    """A network killed in the first stage's last steps, after a good start (MNIST-1D at a 1000-step budget,
    LR 0.44: the last quarter still averaged below the start loss and the dead model went on to every later
    stage, ending at chance). The first stage is judged on its last window, the one its reached loss is."""
    # first_tolerance=0, so that the first stage keeps the fastest window's LR and the roll-back is tested
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=1000, seed=0, first_tolerance=0.0)
    with pytest.warns(RuntimeWarning, match="giving back the progress"):
        ctrl, _ = run(cfg, dying_network(0.02, 30, 2.35))  # dead in the 43-step stage's last window
    first = ctrl.history[0]
    assert [d["lr"] >= 0.5 for d in first["discarded"]] == [True]
    assert first["lr"] < 0.5 and all(r["lr"] < 0.5 for r in ctrl.history)
    # The default never keeps the killing LR: 0.0316's window is within 10% of the fastest (1.97 at >= 0.75)
    default, _ = run(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=1000, seed=0), dying_network(0.02, 30, 2.35))
    assert not default.history[0]["discarded"] and all(r["lr"] < 0.5 for r in default.history)


def test_the_smallest_stage_is_one_home_for_the_budget_check_and_the_plan():
    assert stages.smallest_stage(5, 10) == 60  # 5 windows of 10 steps and a kept stage of one window
    assert stages.plan_stage(59, 200, 20, 5, 10) is None and stages.plan_stage(60, 200, 20, 5, 10) is not None
    # the config refuses a budget below warmup + decay + the smallest stage, with the same arithmetic
    with pytest.raises(ValueError, match="needs at least 60"):
        AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=59, candidates=5, warmup_steps=0, decay_fraction=0.0)
    AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=60, candidates=5, warmup_steps=0, decay_fraction=0.0)
