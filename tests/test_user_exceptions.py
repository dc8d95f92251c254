"""An exception in user code (val_fn, or the loop between steps) leaves autolrs consistent."""

import ast
import io
from pathlib import Path

import pytest
import torch

from autolrs import AutoLRS

OPTIONS = dict(min_lr=1e-3, max_lr=0.5, total_steps=300, stage_steps=40, explore_steps=10, candidates=3,
               max_stage_steps=40, warmup_steps=5, seed=0)


def problem(val_failures=()):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = torch.Generator().manual_seed(1)
    x_val = torch.randn(64, 4, generator=torch.Generator().manual_seed(2))
    calls = {"n": 0}

    def val_fn():
        calls["n"] += 1
        if calls["n"] in val_failures:
            raise RuntimeError("validation data loader failed")
        with torch.no_grad():
            return model(x_val).pow(2).mean().item()

    sched = AutoLRS(model, optimizer, val_fn=val_fn, **OPTIONS)

    def train_step():
        x = torch.randn(16, 4, generator=data)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return model, optimizer, sched, data, train_step


def test_val_fn_exception_can_be_caught_and_the_step_repeated():
    _, _, reference, _, train_step = problem()
    expected = []
    while not reference.done:
        reference.step(train_step())
        expected.append(reference.get_last_lr()[0])
    assert any(s["objective"] == "val" for s in reference.history)

    _, _, sched, _, train_step = problem(val_failures={3, 17})
    got, failures = [], 0
    while not sched.done:
        loss = train_step()
        while True:
            steps = sched.steps_taken
            try:
                sched.step(loss)
                break
            except RuntimeError:
                failures += 1
                assert sched.steps_taken == steps  # the step was not counted: call again
        got.append(sched.get_last_lr()[0])
    assert failures == 2
    assert got == expected
    assert sched.history == reference.history


def test_exception_between_steps_resume_from_last_state_dict():
    model, optimizer, reference, data, train_step = problem()
    losses = []
    while not reference.done:
        losses.append(train_step().item())
        reference.step(losses[-1])

    model, optimizer, sched, data, train_step = problem()
    checkpoint = None
    with pytest.raises(KeyError):
        while not sched.done:
            if sched.steps_taken == 123:
                raise KeyError("the user's loop crashed")
            loss = train_step()
            sched.step(loss)
            if sched.steps_taken % 50 == 0:  # the user checkpoints every 50 steps
                buffer = io.BytesIO()
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "sched": sched.state_dict(), "data": data.get_state()}, buffer)
                checkpoint = buffer.getvalue()

    state = torch.load(io.BytesIO(checkpoint), weights_only=True)
    model, optimizer, sched, data, train_step = problem()
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["sched"])
    data.set_state(state["data"])
    resumed = []
    while not sched.done:
        resumed.append(train_step().item())
        sched.step(resumed[-1])
    assert resumed == losses[100:]
    assert sched.history == reference.history


def test_nan_loss_never_reaches_the_kept_model():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = AutoLRS(model, optimizer, min_lr=1e-3, max_lr=1e3, total_steps=400, stage_steps=50, candidates=4,
                    explore_steps=10, seed=0)
    g = torch.Generator().manual_seed(0)
    nonfinite_losses = 0
    while not sched.done:
        x = torch.randn(16, 4, generator=g)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if sched.get_last_lr()[0] > 30:  # an overflow: the weights themselves turn NaN
            with torch.no_grad():
                model.weight.fill_(float("nan"))
        nonfinite_losses += not torch.isfinite(loss)
        sched.step(loss)
        assert all(torch.isfinite(v).all() for v in sched.kept_state_dict().values())
    assert nonfinite_losses > 0
    # Divergence (NaN/inf, or a loss that rose and stayed up) only above 0.5. Once the noiseless loss reaches
    # round-off (~1e-17), a window whose losses jump 3x between batches and fall back reads as batch noise.
    diverged = [c for s in sched.history for c in s["candidates"] if c["diverged"] and c["failure"] != "noise"]
    assert diverged and all(c["lr"] > 0.5 for c in diverged)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_no_network_and_no_pickle_in_the_package():
    """Security: autolrs opens no socket and unpickles nothing; what it saves is plain data."""
    forbidden = {"socket", "socketserver", "pickle", "dill", "http", "urllib", "requests", "xmlrpc", "multiprocessing"}
    for path in Path(__file__).parents[1].joinpath("src", "autolrs").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load":
                assert any(k.arg == "weights_only" for k in node.keywords), f"{path.name} loads without weights_only"
