"""With max_lr 100x too high on the demo task, no NaN reaches the kept model and accuracy holds (slow)."""

import numpy as np
import pytest
import torch

from autolrs import AutoLRS
from autolrs.demo import ConvNet, batches, evaluate, load_mnist1d, train

SEEDS = range(4)


def run(seed, max_lr, data):
    torch.manual_seed(seed)
    model = ConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x_val, y_val = data["x"][3500:], data["y"][3500:]
    sched = AutoLRS(model, optimizer, min_lr=1e-3, max_lr=max_lr, total_steps=4000, seed=seed,
                    val_fn=lambda: evaluate(model, x_val, y_val)[1])
    stream = batches(data["x"][:3500], data["y"][:3500], 128, torch.Generator().manual_seed(seed))
    nonfinite_kept = []
    train(model, optimizer, stream, 4000, sched, on_step=lambda: nonfinite_kept.append(
        not all(torch.isfinite(v).all() for v in sched.kept_state_dict().values())))
    nonfinite_kept = sum(nonfinite_kept)
    diverged = sum(c["diverged"] for s in sched.history for c in s["candidates"])
    return evaluate(model, data["x_test"], data["y_test"])[0], nonfinite_kept, diverged


@pytest.mark.slow
def test_max_lr_100x_too_high_on_the_demo_task():
    data = load_mnist1d()
    sane = [run(seed, 1.0, data) for seed in SEEDS]
    high = [run(seed, 100.0, data) for seed in SEEDS]
    print("\nmax_lr=1   accuracy", [round(a, 3) for a, _, _ in sane], "diverged candidates", [d for _, _, d in sane])
    print("max_lr=100 accuracy", [round(a, 3) for a, _, _ in high], "diverged candidates", [d for _, _, d in high])
    assert all(n == 0 for _, n, _ in sane + high)  # never a NaN/inf in the kept model
    assert sum(d for _, _, d in high) > sum(d for _, _, d in sane)  # the high range does diverge
    assert np.mean([a for a, _, _ in high]) >= np.mean([a for a, _, _ in sane]) - 0.02
