"""Every wrong argument or call fails at once with a TypeError/ValueError that names the value and the fix."""

import re

import pytest
import torch

from autolrs import AutoLRS


def model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def build(**overrides):
    model, optimizer = model_and_optimizer()
    options = dict(min_lr=1e-3, max_lr=1.0, total_steps=1000)
    options.update(overrides)
    return AutoLRS(model, optimizer, **options)


def one_step(sched):
    loss = sched.model(torch.randn(4, 3)).pow(2).mean()
    sched.optimizer.zero_grad()
    loss.backward()
    sched.optimizer.step()
    return loss


@pytest.mark.parametrize("overrides, error, message", [
    (dict(min_lr=0.0), ValueError, "min_lr must be > 0, but got 0.0"),
    (dict(min_lr=-1e-3), ValueError, "min_lr must be > 0, but got -0.001"),
    (dict(max_lr=float("nan")), ValueError, "max_lr must be finite, but got nan"),
    (dict(min_lr=1.0, max_lr=0.1), ValueError, "min_lr must be smaller than max_lr, but got min_lr=1.0 >= max_lr=0.1"),
    (dict(min_lr="1e-3"), TypeError, "min_lr must be a real number, but got '1e-3' of type str"),
    (dict(candidates=1), ValueError, "candidates must be an integer >= 2, but got 1"),
    (dict(candidates=4.0), TypeError, "candidates must be an integer, but got 4.0 of type float"),
    (dict(stage_steps=100, explore_steps=200), ValueError, "explore_steps (tau') must be <= stage_steps (tau)"),
    (dict(stage_steps=100, explore_steps=5), ValueError, "explore_steps (tau') must be >= min_explore_steps=10"),
    (dict(stage_steps=400, max_stage_steps=200), ValueError, "max_stage_steps (tau_max) must be >= stage_steps (tau)"),
    (dict(total_steps=50), ValueError, "total_steps=50 is too small for one search"),
    (dict(total_steps=True), TypeError, "total_steps must be an integer, but got True"),
    (dict(kappa=-1.0), ValueError, "kappa must be >= 0, but got -1.0"),
    (dict(warmup_steps=10, warmup_lr=0.0), ValueError, "warmup_lr must be > 0, but got 0.0"),
    (dict(choose="best"), ValueError, "choose must be 'posterior' or 'forecast', but got 'best'"),
    (dict(seed=-1), ValueError, "seed must be an integer >= 0, but got -1"),
    (dict(divergence_factor=1.0), ValueError, "divergence_factor must be > 1, but got 1.0"),
    (dict(val_fn="loss"), TypeError, "val_fn must be a callable returning the validation loss, but got 'loss'"),
    (dict(snapshot_device="gpu0"), ValueError, "snapshot_device must be 'cpu', 'model' or a torch.device, but got 'gpu0'"),
])
def test_bad_options(overrides, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build(**overrides)


def test_model_must_be_a_module():
    _, optimizer = model_and_optimizer()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, but got dict"):
        AutoLRS({"w": torch.zeros(1)}, optimizer, min_lr=1e-3, max_lr=1.0)


def test_optimizer_must_be_an_optimizer():
    model, optimizer = model_and_optimizer()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer, but got StepLR; pass the optimizer"):
        AutoLRS(model, scheduler, min_lr=1e-3, max_lr=1.0)


def test_param_groups_need_an_lr():
    model, optimizer = model_and_optimizer()
    del optimizer.param_groups[0]["lr"]
    with pytest.raises(ValueError, match="Param group 0 of the optimizer has no 'lr'"):
        AutoLRS(model, optimizer, min_lr=1e-3, max_lr=1.0)


def test_first_group_lr_must_be_positive():
    model, optimizer = model_and_optimizer()
    optimizer.param_groups[0]["lr"] = 0.0
    with pytest.raises(ValueError, match="The first param group's lr is 0.0; .* must be > 0"):
        AutoLRS(model, optimizer, min_lr=1e-3, max_lr=1.0)


@pytest.mark.parametrize("loss, error, message", [
    ("0.5", TypeError, "loss must be a real number or a 0-dim tensor, but got '0.5' of type str"),
    (None, TypeError, "loss must be a real number or a 0-dim tensor, but got None"),
    (True, TypeError, "loss must be a real number or a 0-dim tensor, but got True of type bool"),
    (torch.ones(3), ValueError, "loss must be a scalar, but got a tensor of shape (3,); reduce it first"),
    (torch.tensor(1 + 2j), TypeError, "loss must be a real number, but got a tensor of dtype torch.complex64"),
])
def test_loss_must_be_a_real_scalar(loss, error, message):
    sched = build()
    one_step(sched)
    with pytest.raises(error, match=re.escape(message)):
        sched.step(loss)
    assert sched.steps_taken == 0  # nothing was counted: the call can be repeated with a proper loss
    sched.step(0.5)
    assert sched.steps_taken == 1


def test_step_after_finalize():
    sched = build()
    with pytest.warns(UserWarning, match="no step of this run is kept; lr set to"):  # nothing to keep yet
        sched.finalize()
    with pytest.raises(ValueError, match="step\\(\\) was called after finalize\\(\\)"):
        sched.step(1.0)


def test_load_state_dict_from_another_configuration_changes_nothing():
    saved = build(kappa=2.0)
    one_step(saved)
    saved.step(1.0)
    other = build(kappa=5.0)
    before = other.state_dict()
    with pytest.raises(ValueError, match=re.escape("saved with another configuration (differs in ['kappa'])")):
        other.load_state_dict(saved.state_dict())
    assert other.state_dict()["controller"] == before["controller"]


def test_load_state_dict_from_another_version():
    state = build().state_dict()
    state["version"] = 0
    with pytest.raises(ValueError, match="saved by AutoLRS state version 0; this autolrs reads version 2"):
        build().load_state_dict(state)


def test_load_state_dict_needs_a_state_dict():
    with pytest.raises(TypeError, match="Expected a dict from AutoLRS.state_dict\\(\\), but got list"):
        build().load_state_dict([1, 2])


def test_load_state_dict_from_another_model():
    state = build().state_dict()
    bigger = torch.nn.Linear(3, 2)
    sched = AutoLRS(bigger, torch.optim.SGD(bigger.parameters(), lr=0.1), min_lr=1e-3, max_lr=1.0, total_steps=1000)
    with pytest.raises(ValueError, match=r"'weight' is torch.float32 \(1, 3\), this model's is torch.float32 \(2, 3\)"):
        sched.load_state_dict(state)
    assert not torch.isnan(bigger.weight).any()


@pytest.mark.parametrize("result, error, message", [
    ("0.3", TypeError, "val_fn()'s result must be a real number or a 0-dim tensor, but got '0.3' of type str. "
                       "val_fn must return the validation loss as a number."),
    (None, TypeError, "val_fn()'s result must be a real number or a 0-dim tensor, but got None"),
    (torch.ones(2), ValueError, "val_fn()'s result must be a scalar, but got a tensor of shape (2,)"),
])
def test_val_fn_must_return_a_number(result, error, message):
    sched = build(val_fn=lambda: result, stage_steps=100, max_stage_steps=100, total_steps=None)
    with pytest.raises(error, match=re.escape(message)):
        while True:
            sched.step(one_step(sched))
