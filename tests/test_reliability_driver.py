"""Reliability of the PyTorch driver: everything a step changes is snapshotted, every step is counted once,
and misuse (a second scheduler, a new param group, a val_fn that leaves eval mode) is caught.

Most tests use a full-batch regression: every candidate of a stage starts from the same snapshot and sees
the same batch, so the first loss of every candidate is bit-identical exactly when the restore is complete.
"""

import copy
import warnings

import pytest
import torch

from autolrs import AutoLRS
from autolrs.torch.snapshot import Snapshot

OPTIONS = dict(min_lr=1e-3, max_lr=0.5, total_steps=400, seed=0)


def regression(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(64, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return model, x, y


def first_losses(sched):
    """Per stage, the first loss of every candidate (each is measured at that stage's snapshot)."""
    return [[c["losses"][0] for c in r["candidates"]] for r in sched.history if len(r["candidates"]) > 1]


# -- 1. everything the step changes is in the snapshot ----------------------------------------------------
def test_a_parameter_outside_the_model_is_restored_between_candidates():
    model, x, y = regression()
    log_scale = torch.nn.Parameter(torch.zeros(()))  # a learnable loss scale the model does not own
    optimizer = torch.optim.SGD([*model.parameters(), log_scale], lr=0.1)
    sched = AutoLRS(model, optimizer, **OPTIONS, loss_floor=None)  # this loss goes below 0
    while not sched.done:
        loss = torch.exp(log_scale) * torch.nn.functional.mse_loss(model(x), y) - 0.5 * log_scale
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sched.step(loss)
    stages = first_losses(sched)
    assert stages and all(len(set(firsts)) == 1 for firsts in stages), stages
    assert float(log_scale.detach()) != 0.0  # it trained


def test_two_optimizers_are_both_snapshotted_and_scheduled():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(20, 4, sparse=True)
    head = torch.nn.Linear(4, 1)
    model = torch.nn.ModuleDict({"embedding": embedding, "head": head})
    dense = torch.optim.Adam(head.parameters(), lr=0.01)
    sparse = torch.optim.SparseAdam(embedding.parameters(), lr=0.02)
    ids, target = torch.randint(0, 20, (32,)), torch.randn(32, 1)
    sched = AutoLRS(model, [dense, sparse], **OPTIONS)
    sparse_steps = []
    while not sched.done:
        loss = torch.nn.functional.mse_loss(head(embedding(ids)), target)
        dense.zero_grad()
        sparse.zero_grad()
        loss.backward()
        dense.step()
        sparse.step()
        sched.step(loss)
        state = sparse.state.get(embedding.weight)
        sparse_steps.append(int(state["step"]) if state else 0)
        assert sparse.param_groups[0]["lr"] == pytest.approx(2 * dense.param_groups[0]["lr"])  # its ratio kept
    assert all(len(set(firsts)) == 1 for firsts in first_losses(sched))
    assert sched.steps_taken == 400
    # SparseAdam's step counter went back with every restore: it ends at the kept steps, not at 400.
    assert sparse_steps[-1] == sched.kept_steps < 400


def test_grad_scaler_state_is_restored_and_its_skipped_steps_not_counted():
    model, x, y = regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    sched = AutoLRS(model, optimizer, scaler=scaler, **OPTIONS)
    steps, skipped = 0, 0
    while not sched.done:
        loss = torch.nn.functional.mse_loss(model(x), y)
        poisoned = steps % 37 == 36  # an overflow: the scaler skips this step and halves its scale
        optimizer.zero_grad()
        scaler.scale(loss * (float("inf") if poisoned else 1.0)).backward()
        scaler.step(optimizer)
        scaler.update()
        sched.step(loss)
        steps += 1
        skipped += poisoned
    assert skipped > 5
    assert sched.skipped_steps == skipped
    assert sched.steps_taken == steps - skipped == 400
    # Without the snapshot the scale would only go down (1024 / 2**skipped); restores bring it back.
    assert scaler.get_scale() > 1024.0 / 2 ** skipped


def test_snapshot_restores_a_scaler_scale():
    model, _, _ = regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=65536.0)
    snap = Snapshot(model, optimizer, scaler=scaler)
    snap.take()
    scaler.scale(torch.ones(()))  # the scale tensor is created lazily, at the first scale()
    scaler.update(new_scale=0.5)
    assert scaler.get_scale() == 0.5
    snap.restore()
    assert scaler.get_scale() == 65536.0


def test_scaler_must_be_a_grad_scaler():
    model, _, _ = regression()
    with pytest.raises(TypeError, match="scaler must be a torch.amp.GradScaler"):
        AutoLRS(model, torch.optim.SGD(model.parameters(), lr=0.1), scaler=object(), **OPTIONS)


# -- 2. a state_dict kept in memory is a roll-back point ----------------------------------------------------
def run_from(sched, model, optimizer, x, y, steps):
    lrs = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sched.step(loss)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs, [p.detach().clone() for p in model.parameters()]


def test_state_dict_kept_in_memory_rolls_back_exactly():
    model, x, y = regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = AutoLRS(model, optimizer, **OPTIONS)
    run_from(sched, model, optimizer, x, y, 30)  # mid-search of the first stage
    assert sched.phase == "explore"
    point = {"sched": sched.state_dict(), "model": copy.deepcopy(model.state_dict()),
             "optimizer": copy.deepcopy(optimizer.state_dict())}  # the scheduler's part is not deep-copied
    first = run_from(sched, model, optimizer, x, y, 200)  # new snapshots overwrite the reused storage
    model.load_state_dict(point["model"])
    optimizer.load_state_dict(point["optimizer"])
    sched.load_state_dict(point["sched"])
    again = run_from(sched, model, optimizer, x, y, 200)
    assert first[0] == again[0]
    assert all(torch.equal(a, b) for a, b in zip(first[1], again[1]))


# -- 6. real optimizer steps, counted once ------------------------------------------------------------------
def accumulation_run(call_every_micro_batch):
    model, x, y = regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = AutoLRS(model, optimizer, **OPTIONS)
    chunks = x.split(16), y.split(16)
    lrs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while not sched.done:
            optimizer.zero_grad()
            losses = []
            for i, (xb, yb) in enumerate(zip(*chunks)):
                loss = torch.nn.functional.mse_loss(model(xb), yb)
                (loss / 4).backward()
                losses.append(loss.item())
                if i == 3:
                    optimizer.step()
                if call_every_micro_batch:
                    sched.step(loss)
            if not call_every_micro_batch:
                sched.step(sum(losses) / 4)
            lrs.append(optimizer.param_groups[0]["lr"])
    return lrs, sched, [w for w in caught if "sched.step" in str(w.message)]


def test_gradient_accumulation_counts_optimizer_steps_and_averages_micro_batches():
    per_step, sched_a, quiet = accumulation_run(call_every_micro_batch=False)
    per_micro_batch, sched_b, warned = accumulation_run(call_every_micro_batch=True)
    assert sched_b.steps_taken == sched_a.steps_taken == 400
    # The same decisions: micro-batch losses are averaged into their optimizer step's, never acted on alone.
    assert per_micro_batch == pytest.approx(per_step, rel=1e-12)
    assert not quiet and len(warned) == 1 and "gradient accumulation" in str(warned[0].message)


def test_a_missed_sched_step_raises():
    model, x, y = regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = AutoLRS(model, optimizer, **OPTIONS)
    for _ in range(2):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with pytest.raises(ValueError, match="optimizer.step\\(\\) ran 2 times since the last sched.step"):
        sched.step(loss)


def test_a_second_scheduler_changing_the_lr_raises():
    model, x, y = regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = AutoLRS(model, optimizer, **OPTIONS)
    other = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    other.step()
    with pytest.raises(ValueError, match="another LR scheduler"):
        sched.step(loss)


# -- 8. a param group added after construction ----------------------------------------------------------------
def test_add_param_group_after_construction_raises():
    model, x, y = regression()
    optimizer = torch.optim.SGD(model[0].parameters(), lr=0.1)
    sched = AutoLRS(model, optimizer, **OPTIONS)
    optimizer.add_param_group({"params": model[2].parameters(), "lr": 0.01})
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with pytest.raises(ValueError, match="param groups changed since AutoLRS was built"):
        sched.step(loss)


# -- 10. val_fn and the training mode --------------------------------------------------------------------------
def test_val_fn_that_leaves_eval_mode_does_not_change_the_training_mode():
    model, x, y = regression()
    model.append(torch.nn.Dropout(0.1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def val_fn():
        model.eval()  # and never back
        calls.append(torch.is_grad_enabled())
        return torch.nn.functional.mse_loss(model(x), y)

    sched = AutoLRS(model, optimizer, val_fn=val_fn, **OPTIONS)
    while not sched.done:
        assert model.training
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sched.step(loss)
    assert calls and not any(calls)  # called, always under no_grad


# -- 11. compiled models, meta tensors and lazy modules ------------------------------------------------------
def test_a_state_saved_from_a_compiled_model_resumes_into_a_plain_one(tmp_path):
    model, x, y = regression()
    compiled = torch.compile(model, backend="eager")
    optimizer = torch.optim.SGD(compiled.parameters(), lr=0.1)
    sched = AutoLRS(compiled, optimizer, **OPTIONS)
    run_from(sched, compiled, optimizer, x, y, 30)
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    plain, _, _ = regression()
    fresh = AutoLRS(plain, torch.optim.SGD(plain.parameters(), lr=0.1), **OPTIONS)
    fresh.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    saved = sched.snapshot.model_tensors()
    assert all(torch.equal(fresh.snapshot.model_tensors()[name], saved[name]) for name in saved)


def test_meta_lazy_and_sparse_models_are_refused_with_an_autolrs_message():
    with torch.device("meta"):
        meta = torch.nn.Linear(3, 1)
    with pytest.raises(ValueError, match="meta device .* materialise the model first"):
        AutoLRS(meta, torch.optim.SGD(meta.parameters(), lr=0.1), **OPTIONS)
    sparse = torch.nn.Linear(3, 1)
    sparse.register_buffer("mask", torch.eye(3).to_sparse())
    with pytest.raises(ValueError, match="mask is a torch.sparse_coo tensor: autolrs snapshots dense"):
        AutoLRS(sparse, torch.optim.SGD(sparse.parameters(), lr=0.1), **OPTIONS)
    lazy = torch.nn.LazyLinear(1)
    with pytest.raises(ValueError, match="not initialised yet .* run one forward pass"):
        AutoLRS(lazy, torch.optim.SGD(lazy.parameters(), lr=0.1), **OPTIONS)


def test_optimizer_list_is_validated():
    model, _, _ = regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="empty list"):
        AutoLRS(model, [], **OPTIONS)
    with pytest.raises(TypeError, match=r"optimizer\[1\] must be a torch.optim.Optimizer"):
        AutoLRS(model, [opt, "adam"], **OPTIONS)
    with pytest.raises(ValueError, match="appears twice"):
        AutoLRS(model, [opt, opt], **OPTIONS)


def test_two_sched_step_calls_per_optimizer_step_count_one_step_and_warn_once():
    model, x, y = regression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = AutoLRS(model, optimizer, **OPTIONS)
    with pytest.warns(UserWarning, match="called without an optimizer.step\\(\\) since the previous call") as caught:
        for _ in range(50):
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sched.step(loss)
            sched.step(loss)  # by mistake, twice
    assert sched.steps_taken == 50
    assert sum("sched.step" in str(w.message) for w in caught) == 1
