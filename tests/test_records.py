"""Stage records and their events: typed, read by kind, shown by the stage table; older states upgrade."""

import copy
import math
import warnings

import pytest

from autolrs import AutoLRSConfig, StageController
from autolrs.records import EVENT_KINDS, event
from autolrs.report import EVENT_LABELS, stage_table
from test_controller import FakeModel, distance_loss, small_config


def drive(cfg, loss_at, max_steps=400):
    """Run a controller with ``loss_at(ctrl, fake)`` until it has closed a stage or two."""
    ctrl = StageController(cfg)
    fake = FakeModel(ctrl, None)
    fake.apply(ctrl.begin())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while len(ctrl.history) < 2 and ctrl.steps_taken < max_steps:
            loss = loss_at(ctrl, fake)
            fake.state += 1
            fake.apply(ctrl.step(loss))
    return ctrl


def retry_run():
    """Every candidate of the first search diverges: the stage is searched again lower (a retry)."""
    def loss_at(ctrl, fake):
        first = ctrl.phase == "explore" and ctrl._record["stage"] == 0 and ctrl._attempt == 0
        at_s0 = first and ctrl._candidate["steps"] == 0  # S0's own loss is finite: the LRs diverge after it
        return math.nan if first and not at_s0 else distance_loss(fake.state, fake.lr)
    return drive(small_config(total_steps=None, warmup_steps=0), loss_at)


def divergence_run():
    """The first kept stage diverges: it is rolled back to the snapshot."""
    def loss_at(ctrl, fake):
        if ctrl.phase == "keep" and ctrl._record["stage"] == 0 and not ctrl._record["discarded"]:
            return math.nan
        return distance_loss(fake.state, fake.lr)
    return drive(small_config(total_steps=None, warmup_steps=0), loss_at)


def lost_progress_run():
    """The first kept stage stalls above its start loss after a trial that gained: rolled back."""
    def loss_at(ctrl, fake):
        if ctrl.phase == "keep" and ctrl._record["stage"] == 0 and not ctrl._record["discarded"]:
            return ctrl._record["start_loss"] + 0.1
        return distance_loss(fake.state, fake.lr)
    return drive(small_config(candidates=3, total_steps=None, warmup_steps=0, seed=1), loss_at)


@pytest.mark.parametrize("run, kind, label", [
    (retry_run, "all_diverged", "all diverged"),
    (divergence_run, "rolled_back_diverged", "rolled back (diverged)"),
    (lost_progress_run, "rolled_back_lost_progress", "rolled back (lost progress)"),
])
def test_events_have_a_kind_and_the_stage_table_labels_them_by_it(run, kind, label):
    ctrl = run()
    first = ctrl.history[0]
    assert [e["kind"] for e in first["events"]][0] == kind
    table = stage_table(ctrl.history)
    row = table.splitlines()[2]  # header, rule, stage 0
    assert f"  {label}" in row, table
    assert "stopped" not in row  # the bug this fixes: every retry used to read "stopped"


def test_a_stopped_run_and_every_kind_has_a_label():
    ctrl = StageController(small_config())
    fake = FakeModel(ctrl, distance_loss)
    fake.apply(ctrl.begin())
    for _ in range(5):
        fake.apply(ctrl.step(distance_loss(fake.state, fake.lr)))
        fake.state += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctrl.finish()
    assert [e["kind"] for e in ctrl.history[-1]["events"]] == ["stopped_mid_search", "stopped"]
    assert stage_table(ctrl.history).splitlines()[-1].endswith("stopped mid-search; stopped")
    assert set(EVENT_LABELS) == set(EVENT_KINDS) - {"note"}


def test_an_unknown_event_kind_is_refused():
    with pytest.raises(ValueError, match="Unknown event kind 'retrying'"):
        event("retrying", "x")


def test_a_state_saved_before_forecast_noise_existed_resumes_only_as_it_ran():
    ctrl = drive(small_config(candidates=3, total_steps=None, warmup_steps=0, seed=1),
                 lambda ctrl, fake: distance_loss(fake.state, fake.lr))  # paper preset: forecast_noise 0
    state = copy.deepcopy(ctrl.state_dict())
    del state["config"]["forecast_noise"]  # the previous release's config
    if state["search"] is not None:
        del state["search"]["noise"]
    noisy = AutoLRSConfig.from_dict({**ctrl.config.to_dict(), "forecast_noise": 0.1})
    with pytest.raises(ValueError, match=r"another configuration \(differs in \['forecast_noise'\]\)"):
        StageController(noisy).load_state_dict(state)  # it would assume a forecast error the run did not
    as_it_ran = StageController(ctrl.config)
    as_it_ran.load_state_dict(state)
    assert as_it_ran.fingerprint() == ctrl.fingerprint()


def test_a_state_saved_before_decay_shape_existed_resumes_only_with_its_linear_decay():
    ctrl = drive(small_config(candidates=3, total_steps=None, warmup_steps=0, seed=1),
                 lambda ctrl, fake: distance_loss(fake.state, fake.lr))  # paper preset: linear decay
    state = copy.deepcopy(ctrl.state_dict())
    del state["config"]["decay_shape"]  # the previous release's config, whose decay was linear
    sqrt = AutoLRSConfig.from_dict({**ctrl.config.to_dict(), "decay_shape": "1-sqrt"})
    with pytest.raises(ValueError, match=r"another configuration \(differs in \['decay_shape'\]\)"):
        StageController(sqrt).load_state_dict(state)
    as_it_ran = StageController(ctrl.config)
    as_it_ran.load_state_dict(state)
    assert as_it_ran.fingerprint() == ctrl.fingerprint()


def test_a_state_saved_before_first_tolerance_existed_resumes_only_without_the_first_stage_rule():
    ctrl = drive(small_config(candidates=3, total_steps=None, warmup_steps=0, seed=1),
                 lambda ctrl, fake: distance_loss(fake.state, fake.lr))  # paper preset: no first-stage rule
    state = copy.deepcopy(ctrl.state_dict())
    del state["config"]["first_tolerance"]  # the previous release's config: its first stage took the best score
    ruled = AutoLRSConfig.from_dict({**ctrl.config.to_dict(), "first_tolerance": 0.1})
    with pytest.raises(ValueError, match=r"another configuration \(differs in \['first_tolerance'\]\)"):
        StageController(ruled).load_state_dict(state)
    as_it_ran = StageController(ctrl.config)
    as_it_ran.load_state_dict(state)
    assert as_it_ran.fingerprint() == ctrl.fingerprint()


def test_a_state_of_the_previous_version_with_text_events_is_upgraded():
    ctrl = lost_progress_run()
    state = copy.deepcopy(ctrl.state_dict())
    for record in state["history"] + ([state["record"]] if state["record"] else []):
        record["events"] = [e["message"] for e in record["events"]]  # version 3 kept messages only
    state["version"] = 3
    fresh = StageController(ctrl.config)
    fresh.load_state_dict(state)
    assert state["version"] == 3 and isinstance(state["history"][0]["events"][0], str)  # the input is untouched
    events = fresh.history[0]["events"]
    assert events[0] == {"kind": "note", "message": ctrl.history[0]["events"][0]["message"]}
    assert fresh.fingerprint() == ctrl.fingerprint()
    assert stage_table(fresh.history).splitlines()[2].rstrip().endswith("autolrs stage 0")  # its message's head
