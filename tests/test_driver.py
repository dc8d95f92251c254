import io
import json
import math

import numpy as np
import pytest
import torch

from autolrs import AutoLRS
from autolrs.report import candidate_steps
from nqm import NoisyQuadratic


class Recorder:
    """Wraps optimizer.step to record the LR of every group and the parameters each step starts from."""

    def __init__(self, optimizer, model):
        self.lrs, self.params = [], []
        step = optimizer.step

        def recorded_step(*args, **kwargs):
            self.lrs.append([g["lr"] for g in optimizer.param_groups])
            self.params.append(torch.cat([p.detach().flatten() for p in model.parameters()]).clone())
            return step(*args, **kwargs)

        optimizer.step = recorded_step


def regression_problem(seed=0, groups=False):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    if groups:
        params = [{"params": model[0].parameters(), "lr": 0.1}, {"params": model[2].parameters(), "lr": 0.01}]
    else:
        params = model.parameters()
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    w = torch.randn(5, 1, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)

    def batch():
        x = torch.randn(32, 5, generator=g)
        return x, x @ w + 0.1 * torch.randn(32, 1, generator=g)

    return model, optimizer, batch


def train_step(model, optimizer, batch):
    x, y = batch()
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


OPTIONS = dict(min_lr=1e-3, max_lr=0.5, total_steps=400, stage_steps=60, explore_steps=10, candidates=3,
               max_stage_steps=120, warmup_steps=10, seed=0)


def test_decisions_take_effect_on_the_next_step_and_candidates_run_exactly_tau_prime():
    model, optimizer, batch = regression_problem()
    rec = Recorder(optimizer, model)
    sched = AutoLRS(model, optimizer, **OPTIONS)
    set_after = [sched.get_last_lr()[0]]
    while not sched.done:
        sched.step(train_step(model, optimizer, batch))
        set_after.append(sched.get_last_lr()[0])
    used = [lrs[0] for lrs in rec.lrs]
    assert used == set_after[:-1]  # the LR set after step s is the one step s + 1 uses
    assert sched.steps_taken == len(used) == 400
    for stage in sched.history:
        s0 = rec.params[stage["start_step"]]
        for first, c in candidate_steps(stage):
            assert used[first:first + c["steps"]] == [c["lr"]] * c["steps"]
            assert c["steps"] == stage["explore_steps"] or c["diverged"]
            assert torch.equal(rec.params[first], s0)  # every candidate starts from S0
        k0 = stage["keep_start_step"]
        if stage["kind"] == "decay":  # linearly to zero from the last stage's LR, from the last kept state
            n = stage["tau"]
            assert used[k0:k0 + n] == pytest.approx([stage["lr"] * (n - i) / (n + 1) for i in range(n)])
            assert stage["lr"] == sched.history[-2]["lr"] and k0 + n == 400
            continue
        assert used[k0:k0 + stage["kept_steps"]] == [stage["lr"]] * stage["kept_steps"]
        if stage["kept_steps"]:  # (a roll-back on the budget's last step leaves an empty kept phase)
            assert torch.equal(rec.params[k0], s0)  # the kept phase starts from S0 too


def test_param_groups_keep_their_ratio():
    model, optimizer, batch = regression_problem(groups=True)
    rec = Recorder(optimizer, model)
    sched = AutoLRS(model, optimizer, **OPTIONS)
    while not sched.done:
        sched.step(train_step(model, optimizer, batch))
    for a, b in rec.lrs:
        assert b == pytest.approx(0.1 * a)
    assert sched.get_last_lr() == [g["lr"] for g in optimizer.param_groups]


def test_steps_kept_steps_and_history():
    model, optimizer, batch = regression_problem()
    sched = AutoLRS(model, optimizer, **OPTIONS)
    while not sched.done:
        sched.step(train_step(model, optimizer, batch).item())  # floats are accepted too
    search = sum(c["steps"] for s in sched.history for c in s["candidates"])
    rolled_back = sum(d["steps"] for s in sched.history for d in s["discarded"])
    assert sched.steps_taken == 400 and sched.kept_steps + search + rolled_back == 400
    json.dumps(sched.history, allow_nan=False)
    for stage in sched.history:
        assert {"start_step", "tau", "candidates", "lr"} <= stage.keys()
        for c in stage["candidates"]:
            assert {"lr", "forecast", "losses"} <= c.keys()
    with pytest.raises(ValueError, match="after finalize"):
        sched.step(1.0)


def test_finalize_mid_search_keeps_a_branch_that_made_progress_and_says_so():
    model, optimizer, batch = regression_problem()
    sched = AutoLRS(model, optimizer, **OPTIONS)
    while not (sched.phase == "explore" and sched.controller._candidate["steps"] == 4 and sched.history):
        sched.step(train_step(model, optimizer, batch))
    candidate = sched.controller._candidate
    # this branch made progress: the median of its last losses is below the stage's start loss
    assert float(torch.tensor(candidate["losses"][-4:]).median()) < sched.controller._start_loss
    live = {k: v.clone() for k, v in model.state_dict().items()}
    kept = sched.kept_steps
    with pytest.warns(UserWarning, match="kept the running candidate's branch"):
        sched.finalize()
    assert all(torch.equal(value, live[name]) for name, value in model.state_dict().items())
    assert sched.kept_steps == kept + 4
    assert sched.get_last_lr()[0] == candidate["lr"]
    assert sched.done
    sched.finalize()  # idempotent


def test_finalize_in_the_first_search_without_a_budget_does_not_reset_the_model():
    """Issue 10, case 5: total_steps=None and a stop during the first search used to restore the initial
    weights (S0), losing every step silently."""
    model, optimizer, batch = regression_problem()
    options = dict(OPTIONS, total_steps=None, warmup_steps=0)  # S0 of the first stage: the initial weights
    sched = AutoLRS(model, optimizer, **options)
    x, y = batch()
    initial = torch.nn.functional.mse_loss(model(x), y).item()
    while not (sched.phase == "explore" and len(sched.controller._record["candidates"]) == 2
               and sched.controller._candidate["steps"] == 6):
        sched.step(train_step(model, optimizer, lambda: (x, y)))
    assert sched.kept_steps == 0 and not sched.history
    with pytest.warns(UserWarning, match="finished during the search of stage 0"):
        sched.finalize()
    final = torch.nn.functional.mse_loss(model(x), y).item()
    assert final < initial and sched.kept_steps > 0


def _run(stop_at=None, state=None):
    """Train to the end, or to ``stop_at`` steps returning everything needed to resume."""
    model, optimizer, batch = regression_problem()
    sched = AutoLRS(model, optimizer, **OPTIONS)
    losses = []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["sched"])
        for _ in range(state["step"]):
            batch()  # the data stream continues where it stopped
    while not sched.done:
        loss = train_step(model, optimizer, batch)
        sched.step(loss)
        losses.append(loss.item())
        if stop_at is not None and sched.steps_taken == stop_at:
            buffer = io.BytesIO()
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "sched": sched.state_dict(), "step": stop_at}, buffer)
            buffer.seek(0)
            return torch.load(buffer, weights_only=True)
    return losses, sched


@pytest.mark.parametrize("stop_at", [5, 10, 43, 75, 130, 399])
def test_state_dict_loads_with_weights_only_and_resumes_identically(stop_at):
    full_losses, full = _run()
    state = _run(stop_at=stop_at)
    losses, resumed = _run(state=state)
    assert losses == full_losses[stop_at:]  # bit-identical continuation
    assert resumed.history == full.history
    assert resumed.steps_taken == full.steps_taken and resumed.kept_steps == full.kept_steps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_quadratic_chosen_lr_within_2x_of_best_constant(seed):
    """One curvature: a constant LR's expected loss is exactly a exp(b t) + c, the forecast's own model.

    The best constant LR for a stage of tau steps is computed in closed form; the stage's chosen LR must be
    within 2x of it. (tau' = tau / 2: the forecast extrapolates 2x; see BENCHMARKS.md for short windows.)
    """
    tau = 200
    problem = NoisyQuadratic(dim=100, sigma=1.0, x0=0.5, seed=seed)
    best = problem.best_constant_lr(tau, np.logspace(-3, 0, 300))
    optimizer = torch.optim.SGD(problem.model.parameters(), lr=0.1)
    sched = AutoLRS(problem.model, optimizer, min_lr=1e-3, max_lr=1.0, stage_steps=tau, explore_steps=tau // 2,
                    candidates=6, max_stage_steps=tau, seed=seed)
    while not sched.history:
        loss = problem.loss()
        problem.backward()
        optimizer.step()
        sched.step(loss)
    chosen = sched.history[0]["lr"]
    assert best / 2 <= chosen <= best * 2, (chosen, best)
    # and so its loss is no worse than that of the LRs 2x off the best
    worst_allowed = max(problem.expected_loss(best / 2, tau), problem.expected_loss(best * 2, tau))
    assert problem.expected_loss(chosen, tau) <= worst_allowed


def test_kept_state_dict_is_the_snapshot_during_search_and_the_model_otherwise():
    model, optimizer, batch = regression_problem()
    sched = AutoLRS(model, optimizer, **OPTIONS)
    seen = set()
    while not sched.done:
        sched.step(train_step(model, optimizer, batch))
        kept = sched.kept_state_dict()
        seen.add(sched.phase)
        reference = sched.snapshot.state_dict()["model"] if sched.phase == "explore" else model.state_dict()
        for name, value in model.state_dict().items():
            assert torch.equal(kept[name], reference[name])
    assert {"warmup", "explore", "keep"} <= seen


def test_config_object_or_keywords_but_not_both_and_unknown_options_are_named():
    from autolrs import AutoLRSConfig

    model, optimizer, batch = regression_problem()
    cfg = AutoLRSConfig(min_lr=1e-3, max_lr=0.5, total_steps=400, preset="paper")
    sched = AutoLRS(model, optimizer, cfg)
    assert sched.config is cfg
    assert AutoLRS(model, optimizer, min_lr=1e-3, max_lr=0.5, total_steps=400, preset="paper").config == cfg
    with pytest.raises(TypeError, match="either config= or option keywords"):
        AutoLRS(model, optimizer, cfg, kappa=3.0)
    with pytest.raises(TypeError, match=r"unknown options \['tau'\]"):
        AutoLRS(model, optimizer, min_lr=1e-3, max_lr=0.5, tau=100)
    with pytest.raises(TypeError, match="needs min_lr and max_lr"):
        AutoLRS(model, optimizer, total_steps=400)
    with pytest.raises(ValueError, match="use_validation"):
        AutoLRS(model, optimizer, AutoLRSConfig(min_lr=1e-3, max_lr=0.5, use_validation=True))
