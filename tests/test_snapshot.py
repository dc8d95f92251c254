import pytest
import torch

from autolrs.torch.snapshot import Snapshot


def make(optimizer_cls, **kwargs):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return model, optimizer_cls(model.parameters(), **kwargs)


def train(model, optimizer, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=g)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def everything(model, optimizer):
    tensors = {f"m.{k}": v.clone() for k, v in model.state_dict().items()}
    for i, (p, state) in enumerate(optimizer.state.items()):
        for k, v in state.items():
            tensors[f"o.{i}.{k}"] = v.clone() if torch.is_tensor(v) else torch.tensor(v)
    return tensors


def assert_bit_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("optimizer_cls, kwargs", [
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=5e-4)),
    (torch.optim.Adam, dict(lr=1e-2)),
    (torch.optim.AdamW, dict(lr=1e-2, amsgrad=True)),
    (torch.optim.RMSprop, dict(lr=1e-3, momentum=0.5)),
])
@pytest.mark.parametrize("device", ["cpu", "model"])
def test_restore_is_bit_exact(optimizer_cls, kwargs, device):
    model, optimizer = make(optimizer_cls, **kwargs)
    train(model, optimizer, 3, seed=1)
    snap = Snapshot(model, optimizer, device)
    snap.take()
    before = everything(model, optimizer)
    params = [id(p) for p in model.parameters()]
    for trial in range(3):
        optimizer.param_groups[0]["lr"] *= 3
        train(model, optimizer, 5, seed=10 + trial)
        snap.restore()
        assert_bit_identical(before, everything(model, optimizer))
        assert optimizer.param_groups[0]["lr"] == kwargs["lr"]
    assert [id(p) for p in model.parameters()] == params  # restored in place: the optimizer still points at them
    # and training on from the restored state is the same as training from the original
    train(model, optimizer, 4, seed=99)
    after_restore = everything(model, optimizer)
    model2, optimizer2 = make(optimizer_cls, **kwargs)
    train(model2, optimizer2, 3, seed=1)
    train(model2, optimizer2, 4, seed=99)
    assert_bit_identical(everything(model2, optimizer2), after_restore)


def test_state_created_after_the_snapshot_is_removed():
    model, optimizer = make(torch.optim.Adam, lr=1e-2)
    snap = Snapshot(model, optimizer)
    snap.take()  # Adam has no state yet (lazy init)
    train(model, optimizer, 2, seed=0)
    assert len(optimizer.state) > 0
    snap.restore()
    assert len(optimizer.state) == 0


def test_snapshot_state_dict_round_trip(tmp_path):
    model, optimizer = make(torch.optim.SGD, lr=0.1, momentum=0.9)
    train(model, optimizer, 3, seed=1)
    snap = Snapshot(model, optimizer)
    snap.take()
    before = everything(model, optimizer)
    torch.save(snap.state_dict(), tmp_path / "snap.pt")
    train(model, optimizer, 3, seed=2)
    fresh = Snapshot(model, optimizer)
    fresh.load_state_dict(torch.load(tmp_path / "snap.pt", weights_only=True))
    fresh.restore()
    assert_bit_identical(before, everything(model, optimizer))


def test_nbytes_is_one_copy_of_parameters_buffers_and_optimizer_state():
    model, optimizer = make(torch.optim.Adam, lr=1e-2)
    train(model, optimizer, 1, seed=0)
    snap = Snapshot(model, optimizer)
    snap.take()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    optim = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values())
    assert snap.nbytes == params + buffers + optim


def test_restore_without_take_is_an_error():
    model, optimizer = make(torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="take"):
        Snapshot(model, optimizer).restore()
