import io
import json
import math

import pytest
import torch

from autolrs import AutoLRS, AutoLRSConfig, ReplayLR, StageController
from autolrs.cli import main
from autolrs.replay import replay_lrs, schedule_from_history

KEPT_PHASES = ("warmup", "keep", "decay")


def regression_problem(seed=0, group_lrs=(0.1,)):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    layers = [list(model[0].parameters()), list(model[2].parameters())]
    if len(group_lrs) == 1:
        params = [p for layer in layers for p in layer]
        optimizer = torch.optim.SGD(params, lr=group_lrs[0], momentum=0.9)
    else:
        optimizer = torch.optim.SGD([{"params": layer, "lr": lr} for layer, lr in zip(layers, group_lrs)],
                                    momentum=0.9)
    w = torch.randn(5, 1, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)

    def train_step():
        x = torch.randn(32, 5, generator=g)
        loss = torch.nn.functional.mse_loss(model(x), x @ w + 0.1 * torch.randn(32, 1, generator=g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return model, optimizer, train_step


def record_lrs(optimizer, phase=lambda: None):
    """(phase before the step, every group's LR) of each optimizer step, as it ran (a step pre-hook)."""
    used = []

    def recorded(opt, args, kwargs):
        used.append((phase(), [float(g["lr"]) for g in opt.param_groups]))

    optimizer.register_step_pre_hook(recorded)
    return used


def kept_lrs(used, history):
    """The first group's LR at every kept step: a kept phase, and not in a kept phase rolled back later."""
    discarded = [(d["start_step"], d["steps"]) for r in history for d in r["discarded"]]
    return [lrs[0] for i, (phase, lrs) in enumerate(used)
            if phase in KEPT_PHASES and not any(a <= i < a + n for a, n in discarded)]


def autolrs_run(**options):
    model, optimizer, train_step = regression_problem()
    used = record_lrs(optimizer, lambda: sched.phase)
    sched = AutoLRS(model, optimizer, **options)
    while not sched.done:
        sched.step(train_step())
    return sched, used


RUNS = {
    "warmup": dict(min_lr=1e-3, max_lr=1.0, total_steps=1000, warmup_steps=25, seed=1),
    "small stages": dict(min_lr=1e-3, max_lr=0.5, total_steps=400, stage_steps=60, explore_steps=10, candidates=3,
                         max_stage_steps=120, warmup_steps=10, seed=0),
}


@pytest.fixture(scope="module")
def finished_run():
    return autolrs_run(**RUNS["warmup"])


# -- found_schedule() --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(RUNS))
def test_found_schedule_is_the_lr_of_every_kept_step_as_it_ran(name, finished_run):
    sched, used = finished_run if name == "warmup" else autolrs_run(**RUNS[name])
    schedule = sched.found_schedule()
    assert len(schedule["lrs"]) == schedule["kept_steps"] == sched.kept_steps < sched.steps_taken
    assert schedule["lrs"] == kept_lrs(used, sched.history)  # bit for bit
    assert json.loads(json.dumps(schedule, allow_nan=False)) == schedule  # plain, strict JSON
    kinds = [s["kind"] for s in schedule["segments"]]
    assert kinds[0] == "warmup" and kinds[-1] == "decay" and set(kinds[1:-1]) == {"stage"}
    stages = [r for r in sched.history if r["kind"] == "search"]
    for segment, record in zip(schedule["segments"][1:], stages):
        assert segment["start_step"] == record["keep_start_step"] and segment["lr"] == record["lr"]
    assert schedule["total_steps"] == schedule["steps_taken"] == sched.steps_taken


def test_found_schedule_leaves_out_rolled_back_stages_and_a_restarted_decay():
    """Scripted losses: the first kept stage gives back its progress (rolled back and redone) and the decay
    diverges once (restarted from half its LR); the schedule holds only what stayed kept."""
    cfg = AutoLRSConfig(min_lr=0.01, max_lr=1.0, total_steps=1000, warmup_steps=20, seed=1)
    ctrl = StageController(cfg)
    d, state, saved, used, blown = ctrl.begin(), 0.0, None, [], False
    with pytest.warns(RuntimeWarning):
        while not d.done:
            if d.restore:
                state = saved
            if d.snapshot:
                saved = state
            record = ctrl._record
            if d.phase == "keep" and record["stage"] == 0 and not record["discarded"]:
                loss = record["start_loss"] + 0.1  # stalls above the stage's start loss
            elif d.phase == "decay" and record["kept_steps"] == 50 and not blown:
                loss, blown = float("nan"), True
            else:
                loss = 1.0 + abs(math.log10(d.lr) + 1.0) + 2.0 * math.exp(-0.01 * state)
            used.append((d.phase, [d.lr]))
            state += 1
            d = ctrl.step(loss)
    assert ctrl.history[0]["discarded"] and ctrl.history[-1]["discarded"]
    schedule = schedule_from_history(ctrl.history, cfg, kept_steps=ctrl.kept_steps, steps_taken=ctrl.steps_taken)
    assert len(schedule["lrs"]) == ctrl.kept_steps
    assert schedule["lrs"] == kept_lrs(used, ctrl.history)
    decay = schedule["segments"][-1]
    assert decay["lr"] == ctrl.history[-2]["lr"] / 2 and decay["start"] + decay["steps"] == ctrl.kept_steps


def test_found_schedule_of_a_run_stopped_mid_search_keeps_the_branch_it_kept():
    model, optimizer, train_step = regression_problem()
    used = record_lrs(optimizer, lambda: sched.phase)
    sched = AutoLRS(model, optimizer, **RUNS["small stages"])
    while not (sched.phase == "explore" and sched.history and sched.controller._candidate["steps"] == 4):
        sched.step(train_step())
    with pytest.raises(ValueError, match="finished run.*finalize"):
        sched.found_schedule()
    branch_lr = sched.get_last_lr()[0]
    with pytest.warns(UserWarning, match="kept the running candidate's branch"):
        sched.finalize()
    schedule = sched.found_schedule()
    assert len(schedule["lrs"]) == sched.kept_steps
    assert schedule["segments"][-1] == {"kind": "stage", "stage": 1, "start": sched.kept_steps - 4, "steps": 4,
                                        "length": 4, "lr": branch_lr, "start_step": sched.steps_taken - 4}
    assert schedule["lrs"][:-4] == kept_lrs(used, sched.history)  # the branch ran as "explore": not in it
    assert schedule["lrs"][-4:] == [lrs[0] for _, lrs in used[-4:]]


# -- ReplayLR ----------------------------------------------------------------------------------------------
def replay_run(schedule, total_steps=None, group_lrs=(0.1,)):
    model, optimizer, train_step = regression_problem(group_lrs=group_lrs)
    used = record_lrs(optimizer)
    replay = ReplayLR(optimizer, schedule, total_steps)
    for _ in range(replay.total_steps):
        train_step()
        replay.step()
    return [lrs for _, lrs in used], replay


def test_replay_at_the_same_budget_is_the_found_schedule_and_keeps_group_ratios(finished_run):
    schedule = finished_run[0].found_schedule()
    used, replay = replay_run(json.loads(json.dumps(schedule)), group_lrs=(0.2, 0.05))  # JSON round trip
    assert isinstance(replay, torch.optim.lr_scheduler.LRScheduler)
    assert [lrs[0] for lrs in used] == schedule["lrs"] == replay_lrs(schedule)
    assert [lrs[1] for lrs in used] == pytest.approx([0.25 * lr for lr in schedule["lrs"]], rel=1e-12)


def test_replay_stretched_x2_has_twice_the_steps_and_the_same_lr_levels(finished_run):
    schedule = finished_run[0].found_schedule()
    n = schedule["kept_steps"]
    used, replay = replay_run(schedule, total_steps=2 * n)
    lrs = [x[0] for x in used]
    assert len(lrs) == 2 * n and lrs == replay_lrs(schedule, 2 * n)
    for found, stretched in zip(schedule["segments"], replay.segments):
        assert (stretched["start"], stretched["steps"]) == (2 * found["start"], 2 * found["steps"])
        span = lrs[stretched["start"]:stretched["start"] + stretched["steps"]]
        if found["kind"] == "stage":  # piecewise constant by stage, at the found levels
            assert span == [found["lr"]] * len(span)
        elif found["kind"] == "warmup":  # linear up to the same warmup LR
            assert span[-1] == found["lr"] and span[0] == pytest.approx(found["lr"] / len(span))
        else:  # linear to zero over the stretched decay, from the same LR
            m = len(span)
            assert found["shape"] == "linear"
            assert span == pytest.approx([found["lr"] * (m - i) / (m + 1) for i in range(m)], rel=1e-12)
    assert sorted({s["lr"] for s in schedule["segments"]}) == sorted({s["lr"] for s in replay.segments})


def test_a_decay_replays_in_its_shape_and_linearly_without_one(finished_run):
    schedule = json.loads(json.dumps(finished_run[0].found_schedule()))
    decay = schedule["segments"][-1]
    assert decay["kind"] == "decay"
    n, start, steps = decay["length"], decay["start"], decay["steps"]
    decay["shape"] = "1-sqrt"  # a run with decay_shape="1-sqrt"
    assert replay_lrs(schedule)[start:start + steps] == pytest.approx(
        [decay["lr"] * (1 - math.sqrt((i + 1) / (n + 1))) for i in range(steps)], rel=1e-12)
    del decay["shape"]  # the format before shapes: its decays were linear
    assert replay_lrs(schedule)[start:start + steps] == pytest.approx(
        [decay["lr"] * (n - i) / (n + 1) for i in range(steps)], rel=1e-12)


def test_replay_shrunk_and_past_its_end(finished_run):
    schedule = finished_run[0].found_schedule()
    half = replay_lrs(schedule, schedule["kept_steps"] // 2)
    assert len(half) == schedule["kept_steps"] // 2 and half[-1] < half[0] * 0.1
    used, replay = replay_run(schedule, total_steps=40)
    replay.step()  # one step past the budget: the last LR stays
    assert replay.get_last_lr()[0] == used[-1][0] == replay.lr_at(39)


def test_replay_resumes_from_its_state_dict(finished_run):
    schedule = finished_run[0].found_schedule()
    budget = 2 * schedule["kept_steps"]
    full, _ = replay_run(schedule, budget)
    model, optimizer, train_step = regression_problem()
    before = record_lrs(optimizer)
    replay = ReplayLR(optimizer, schedule, budget)
    for _ in range(700):
        train_step()
        replay.step()
    buffer = io.BytesIO()
    torch.save({"replay": replay.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # plain data
    model, optimizer, train_step = regression_problem()
    after = record_lrs(optimizer)
    replay = ReplayLR(optimizer, schedule, budget)
    optimizer.load_state_dict(saved["optimizer"])
    replay.load_state_dict(saved["replay"])
    for _ in range(budget - 700):
        train_step()
        replay.step()
    assert [lrs for _, lrs in before + after] == full


def test_replay_rejects_bad_input(finished_run):
    schedule = finished_run[0].found_schedule()
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(TypeError, match="found schedule"):
        ReplayLR(optimizer, schedule["lrs"])
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        ReplayLR(torch.nn.Linear(2, 1), schedule)
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1"):
        ReplayLR(optimizer, schedule, total_steps=0)
    broken = json.loads(json.dumps(schedule))
    broken["segments"][1]["start"] += 1
    with pytest.raises(ValueError, match="expected it to start at"):
        ReplayLR(optimizer, broken)
    broken = json.loads(json.dumps(schedule))
    broken["lrs"].pop()
    with pytest.raises(ValueError, match="corrupt"):
        ReplayLR(optimizer, broken)
    broken = json.loads(json.dumps(schedule))
    broken["segments"][0]["lr"] = float("nan")
    with pytest.raises(ValueError, match="finite lr"):
        ReplayLR(optimizer, broken)
    broken = json.loads(json.dumps(schedule))
    broken["segments"][-1]["shape"] = "cosine"
    with pytest.raises(ValueError, match="shape='cosine'; expected one of"):
        ReplayLR(optimizer, broken)
    optimizer.param_groups[0]["lr"] = 0.0
    with pytest.raises(ValueError, match="must be > 0"):
        ReplayLR(optimizer, schedule)


def test_cli_plot_draws_a_found_schedule_and_its_replay(finished_run, tmp_path):
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(finished_run[0].found_schedule()))
    assert main(["plot", str(path), "-o", str(tmp_path / "replay.png"), "--replay-steps", "3000"]) == 0
    png = (tmp_path / "replay.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
