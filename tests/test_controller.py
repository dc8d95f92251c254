import json
import math
import subprocess
import sys

import pytest

from autolrs import AutoLRSConfig, Decision, StageController


def small_config(**overrides):
    """The stage mechanics with the paper's proportional windows and no decay phase (exact sequences below);
    the default preset's own behaviour is tested in test_decision.py."""
    base = dict(min_lr=0.01, max_lr=1.0, candidates=2, stage_steps=10, explore_steps=5, max_stage_steps=20,
                min_explore_steps=3, warmup_steps=2, warmup_lr=0.1, total_steps=62, choose="forecast", seed=0,
                preset="paper", kappa=2.0, trust_region=3.0, warm_start=True)
    base.update(overrides)
    return AutoLRSConfig(**base)


class FakeModel:
    """A one-number 'model' that carries out decisions exactly as a driver must (restore, snapshot, lr)."""

    def __init__(self, controller, loss_fn):
        self.ctrl, self.loss_fn = controller, loss_fn
        self.state, self.saved, self.lr = 0.0, None, None
        self.decisions = []

    def apply(self, d: Decision):
        self.decisions.append(d)
        if d.restore:
            self.state = self.saved
        if d.snapshot:
            self.saved = self.state
        self.lr = d.lr

    def run(self, max_steps=10_000):
        self.apply(self.ctrl.begin())
        while not self.ctrl.done and self.ctrl.steps_taken < max_steps:
            loss = self.loss_fn(self.state, self.lr)
            self.state += 1.0  # one optimizer step
            self.apply(self.ctrl.step(loss))
        return self


def distance_loss(state, lr):
    # closer to lr = 0.1 is better; every step lowers the loss a little
    return 1.0 + abs(math.log10(lr) + 1.0) + 2.0 * math.exp(-0.05 * state)


def test_exact_decision_sequence_for_scripted_losses():
    fake = FakeModel(StageController(small_config()), distance_loss).run()
    flags = [(d.phase, d.restore, d.snapshot, d.done) for d in fake.decisions]
    expected = (
        [("warmup", False, False, False)] * 2
        + [("explore", False, True, False)] + [("explore", False, False, False)] * 4
        + [("explore", True, False, False)] + [("explore", False, False, False)] * 4
        + [("keep", True, False, False)] + [("keep", False, False, False)] * 9
        + [("explore", False, True, False)] + [("explore", False, False, False)] * 9
        + [("explore", True, False, False)] + [("explore", False, False, False)] * 9
        + [("keep", True, False, False)] + [("keep", False, False, False)] * 19
        + [("done", False, False, True)]
    )
    assert flags == expected
    lrs = [d.lr for d in fake.decisions]
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1)  # linear warmup to warmup_lr
    h = fake.ctrl.history
    for stage, (c_start, k_start) in zip(h, [(2, 12), (22, 42)]):
        first, second = stage["candidates"]
        assert lrs[c_start] == first["lr"] and lrs[c_start + 5 * (stage["stage"] + 1)] == second["lr"]
        winner = min((first, second), key=lambda c: abs(math.log10(c["lr"]) + 1.0))
        assert stage["lr"] == winner["lr"] == lrs[k_start]
    assert h[1]["candidates"][0]["lr"] == h[0]["lr"]  # warm start: the previous stage's LR comes first
    assert [s["tau"] for s in h] == [10, 20] and [s["explore_steps"] for s in h] == [5, 10]
    assert fake.ctrl.steps_taken == 62 and fake.ctrl.kept_steps == 2 + 10 + 20


def test_restores_return_to_the_snapshot_state():
    fake = FakeModel(StageController(small_config()), distance_loss)
    states = []
    original_apply = fake.apply

    def apply(d):
        original_apply(d)
        states.append((d, fake.state))

    fake.apply = apply
    fake.run()
    for d, state in states:
        if d.restore:
            assert state in (2.0, 12.0)  # the two stage starts (restores rewind the kept steps too)


@pytest.mark.parametrize("total", [130, 200, 257, 400, 1000, 4000])
def test_budget_is_spent_exactly_and_ends_on_a_kept_phase(total):
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=total, candidates=3, min_explore_steps=5)
    fake = FakeModel(StageController(cfg), distance_loss).run()
    assert fake.ctrl.steps_taken == total
    assert fake.decisions[-1].done and not fake.decisions[-1].restore
    assert fake.decisions[-2].phase in ("keep", "decay")
    search = sum(c["steps"] for s in fake.ctrl.history for c in s["candidates"])
    rolled_back = sum(d["steps"] for s in fake.ctrl.history for d in s["discarded"])
    assert search + fake.ctrl.kept_steps + rolled_back == total


def test_candidate_stops_at_once_on_nan_and_counts_as_worst():
    def loss_fn(state, lr):
        # the first loss of a candidate is taken at S0 (state 0), before its LR has acted
        return float("nan") if lr > 0.3 and state > 0 else distance_loss(state, lr)

    cfg = small_config(candidates=4, explore_steps=5, total_steps=None, warmup_steps=0)
    ctrl = StageController(cfg)
    fake = FakeModel(ctrl, loss_fn).run(max_steps=60)
    stage = ctrl.history[0]
    diverged = [c for c in stage["candidates"] if c["diverged"]]
    assert diverged, "the search range includes LRs above 0.3"
    for c in diverged:
        assert c["steps"] == 2 and c["forecast"] is None and c["losses"][1] is None
    assert stage["lr"] <= 0.3


def test_explosion_stops_a_candidate_after_two_of_three_losses():
    def loss_fn(state, lr):
        return 100.0 if lr > 0.3 and state > 0 else distance_loss(state, lr)

    ctrl = StageController(small_config(candidates=4, total_steps=None, warmup_steps=0))
    FakeModel(ctrl, loss_fn).run(max_steps=60)
    for c in ctrl.history[0]["candidates"]:
        assert c["diverged"] == (c["lr"] > 0.3)
        if c["diverged"]:
            assert c["steps"] == 3  # S0's loss, then two exploded losses


def test_all_candidates_diverging_narrows_the_range_and_warns():
    def loss_fn(state, lr):
        return float("nan") if lr > 0.02 and state > 0 else distance_loss(state, lr)

    # seed 3: both first candidates (0.087, 1.0) diverge, then 0.033 too, then 0.01 works
    cfg = small_config(min_lr=0.01, max_lr=1.0, candidates=2, total_steps=None, warmup_steps=0, seed=3)
    ctrl = StageController(cfg)
    with pytest.warns(RuntimeWarning, match="diverged"):
        fake = FakeModel(ctrl, loss_fn).run(max_steps=100)
    stage = ctrl.history[0]
    assert [c["diverged"] for c in stage["candidates"][:2]] == [True, True]
    assert any(e["kind"] == "all_diverged" and "all 2 candidates diverged" in e["message"] for e in stage["events"])
    assert stage["lr"] <= 0.02 and stage["max_lr"] < 1.0
    assert all(0.01 <= d.lr <= 1.0 for d in fake.decisions)


def test_when_even_min_lr_diverges_the_model_stays_on_s0_and_lrs_stay_in_range():
    def loss_fn(state, lr):
        return float("nan") if state > 0 else 1.0

    ctrl = StageController(small_config(min_lr=0.1, max_lr=1.0, candidates=3, total_steps=None, warmup_steps=0))
    with pytest.warns(RuntimeWarning, match="lower min_lr"):
        fake = FakeModel(ctrl, loss_fn).run(max_steps=300)
    assert all(0.1 <= d.lr <= 1.0 for d in fake.decisions)
    assert ctrl.kept_steps == 0  # nothing that diverged was ever kept
    assert fake.decisions[-1].phase in ("explore", "keep")
    assert fake.saved == 0.0


def test_finish_mid_search_restores_the_snapshot():
    ctrl = StageController(small_config())
    fake = FakeModel(ctrl, distance_loss)
    fake.apply(ctrl.begin())
    for _ in range(5):  # 2 warmup + 3 steps of the first candidate
        loss = distance_loss(fake.state, fake.lr)
        fake.state += 1
        fake.apply(ctrl.step(loss))
    assert ctrl.phase == "explore"
    with pytest.warns(UserWarning, match="made no progress, so the model is restored to the stage snapshot, at step 2"):
        d = ctrl.finish()
    assert d.restore and d.done
    fake.apply(d)
    assert fake.state == 2.0
    assert ctrl.history[-1]["candidates"][-1]["interrupted"]
    with pytest.raises(ValueError, match="after the run finished"):
        ctrl.step(1.0)


@pytest.mark.parametrize("stop_at", [1, 2, 4, 7, 12, 15, 22, 33, 45, 61])
def test_state_round_trip_continues_identically(stop_at):
    reference = FakeModel(StageController(small_config()), distance_loss).run()

    ctrl = StageController(small_config())
    fake = FakeModel(ctrl, distance_loss)
    fake.apply(ctrl.begin())
    while ctrl.steps_taken < stop_at:
        loss = distance_loss(fake.state, fake.lr)
        fake.state += 1
        fake.apply(ctrl.step(loss))
    state = json.loads(json.dumps(ctrl.state_dict()))  # plain data only
    resumed = StageController(small_config())
    resumed.load_state_dict(state)
    fake.ctrl = resumed
    while not resumed.done:
        loss = distance_loss(fake.state, fake.lr)
        fake.state += 1
        fake.apply(resumed.step(loss))
    assert [(d.lr, d.phase, d.restore, d.snapshot) for d in fake.decisions] == \
        [(d.lr, d.phase, d.restore, d.snapshot) for d in reference.decisions]
    assert resumed.history == reference.ctrl.history


def test_load_state_dict_rejects_another_configuration_or_version():
    state = StageController(small_config()).state_dict()
    with pytest.raises(ValueError, match="another configuration"):
        StageController(small_config(kappa=5.0)).load_state_dict(state)
    state["version"] = 99
    with pytest.raises(ValueError, match="version"):
        StageController(small_config()).load_state_dict(state)


def test_validation_mode_asks_for_val_losses_at_max_stage():
    cfg = small_config(use_validation=True, val_points=4)
    ctrl = StageController(cfg)
    ctrl.begin()
    asked = []
    while not ctrl.done:
        need = ctrl.expects_validation
        asked.append((ctrl.steps_taken + 1, ctrl.phase, need))
        ctrl.step(1.0 / (ctrl.steps_taken + 1), val_loss=0.5 if need else None)
    stage0, stage1 = ctrl.history
    assert stage0["objective"] == "train" and stage1["objective"] == "val"  # tau reaches tau_max = 20
    for c in stage1["candidates"]:
        assert c["val_steps"] == [2, 4, 6, 8, 10]  # every 10 // 4 = 2 steps
    assert stage1["loss_reached"] == 0.5  # the validation loss at the end of the kept stage
    assert not any(need for step, phase, need in asked if step <= 22)


def test_missing_val_loss_is_an_error():
    ctrl = StageController(small_config(use_validation=True, stage_steps=20, warmup_steps=0))
    ctrl.begin()
    while not ctrl.expects_validation:
        ctrl.step(1.0)
    with pytest.raises(ValueError, match="val_loss"):
        ctrl.step(1.0)


def test_history_is_strict_json():
    def loss_fn(state, lr):
        return float("inf") if lr > 0.5 else distance_loss(state, lr)

    ctrl = StageController(small_config(candidates=4))
    FakeModel(ctrl, loss_fn).run()
    json.dumps(ctrl.history, allow_nan=False)


def test_core_imports_without_torch():
    code = ("import sys, autolrs, autolrs.controller, autolrs.forecast, autolrs.search, autolrs.config, "
            "autolrs.report; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_kept_stage_that_gives_back_its_trials_progress_rolls_back_to_the_next_best_candidate():
    """A high LR shines in its short window and then stalls above the stage's start loss: the stage is
    redone below half of it (the test compares measured losses, never the forecast)."""
    def loss_fn(state, lr):
        return distance_loss(state, lr)

    cfg = small_config(candidates=3, total_steps=None, warmup_steps=0, min_lr=0.01, max_lr=1.0, seed=1)
    ctrl = StageController(cfg)
    fake = FakeModel(ctrl, loss_fn)
    fake.apply(ctrl.begin())
    while not ctrl.history:
        if ctrl.phase == "keep" and not ctrl._record["discarded"]:
            loss = ctrl._record["start_loss"] + 0.1  # the first kept stage stalls above its start loss
        else:
            loss = loss_fn(fake.state, fake.lr)
        fake.state += 1
        fake.apply(ctrl.step(loss))
    stage = ctrl.history[0]
    [failed] = stage["discarded"]
    assert failed["steps"] == stage["tau"] and failed["loss_reached"] == pytest.approx(stage["start_loss"] + 0.1)
    assert stage["lr"] <= failed["lr"] / 2  # the next best candidate below half the failed LR
    assert stage["lr"] in [c["lr"] for c in stage["candidates"]]  # chosen without a new search
    assert len(stage["candidates"]) == 3
    assert "giving back the progress its 5-step trial had made" in stage["events"][0]["message"]
    assert ctrl.kept_steps == stage["tau"]  # the failed kept phase is not on the kept trajectory


def test_resume_inside_a_kept_stage_that_is_then_rolled_back():
    """The roll-back chooses among the stage's candidates again: the search must survive a resume."""
    def loss_at(ctrl, fake):
        if ctrl.phase == "keep" and not ctrl._record["discarded"]:
            return ctrl._record["start_loss"] + 0.1
        return distance_loss(fake.state, fake.lr)

    def run(stop_at=None):
        cfg = small_config(candidates=3, total_steps=None, warmup_steps=0, min_lr=0.01, max_lr=1.0, seed=1)
        ctrl = StageController(cfg)
        fake = FakeModel(ctrl, None)
        fake.apply(ctrl.begin())
        while len(ctrl.history) < 2:
            if stop_at is not None and ctrl.steps_taken == stop_at:
                assert ctrl.phase == "keep"
                state = json.loads(json.dumps(ctrl.state_dict()))
                ctrl = StageController(cfg)
                ctrl.load_state_dict(state)
                fake.ctrl = ctrl
                stop_at = None
            loss = loss_at(ctrl, fake)
            fake.state += 1
            fake.apply(ctrl.step(loss))
        return fake.decisions, ctrl.history

    reference = run()
    assert reference[1][0]["discarded"]
    assert run(stop_at=20) == reference  # 3 candidates x 5 steps, then 5 steps into the stalling keep


def test_divergence_on_the_last_step_still_restores_the_snapshot():
    cfg = small_config(total_steps=62)
    ctrl = StageController(cfg)
    fake = FakeModel(ctrl, None)
    fake.apply(ctrl.begin())
    while not ctrl.done:
        loss = float("nan") if ctrl.steps_taken == 61 else distance_loss(fake.state, fake.lr)
        fake.state += 1
        fake.apply(ctrl.step(loss))
    assert fake.decisions[-1].done and fake.decisions[-1].restore
    assert fake.state == fake.saved  # back on the stage's snapshot, not the diverged state
