"""``mnist1d-cnn``: the demo task (MNIST-1D, 1-D CNN, SGD with momentum) as a benchmark.

The data, model and evaluation are the package's demo (:mod:`autolrs.demo`), so the benchmark measures
what ``make demo`` shows. The training set is split as in the demo: 3500 sequences to train on, 500
held out for an optional autolrs ``val_fn``; the reported metric is on the 1000 test sequences.
"""

from __future__ import annotations

import functools

import torch

from autolrs.demo import ConvNet, batches, evaluate, load_mnist1d

from .base import Problem, TaskEntry, TaskSpec, log_grid

__all__ = ["SPEC", "MNIST1DProblem", "ENTRY"]

TRAIN = 3500  # the rest of the 4000 training sequences is the validation split

# Measured on the 2-core machine: ~2.5 ms per step with 1 thread, and barely faster with 2 (the model is
# too small to split); two 1-thread worker processes run two runs in the time of one.
SPEC = TaskSpec(
    name="mnist1d-cnn",
    title="MNIST-1D, 1-D CNN (~5k weights), SGD momentum 0.9, weight decay 5e-4, batch 128",
    budget=4000,
    eval_every=100,
    metric="test_accuracy",
    higher_is_better=True,
    worst=0.0,
    extra_metrics=("test_loss",),
    optimizer="sgd",
    momentum=0.9,
    weight_decay=5e-4,
    grid=log_grid(1e-3, 1.0, 7),
    lr_range=(1e-3, 1.0),
    # Schedule-Free's authors: SGD needs an LR "10x-50x larger than classical rates".
    grid_overrides={"schedule-free": log_grid(1e-2, 10.0, 7)},
    threads=1,
    workers=2,
    notes="training on 3500 of the 4000 MNIST-1D training sequences (500 are the validation split an "
          "autolrs `val_fn` may use); accuracy and loss on the 1000 test sequences.",
)


@functools.lru_cache(maxsize=1)
def _data() -> dict[str, torch.Tensor]:
    return load_mnist1d()


class MNIST1DProblem(Problem):
    batch_size = 128

    def __init__(self, spec: TaskSpec, seed: int) -> None:
        self.spec = spec
        data = _data()
        self.x, self.y = data["x"][:TRAIN], data["y"][:TRAIN]
        self.x_val, self.y_val = data["x"][TRAIN:], data["y"][TRAIN:]
        self.x_test, self.y_test = data["x_test"], data["y_test"]
        torch.manual_seed(seed)
        self.model = ConvNet()
        self._stream = batches(self.x, self.y, self.batch_size, torch.Generator().manual_seed(seed))

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.model.parameters()), "weight_decay": self.spec.weight_decay}]

    def training_loss(self) -> torch.Tensor:
        x, y = next(self._stream)
        return torch.nn.functional.cross_entropy(self.model(x), y)

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        accuracy, loss = evaluate(model, self.x_test, self.y_test)
        return {"test_accuracy": accuracy, "test_loss": loss}

    def validation_loss(self, model: torch.nn.Module) -> float:
        return evaluate(model, self.x_val, self.y_val)[1]


ENTRY = TaskEntry(SPEC, MNIST1DProblem, quick_budget=1000, quick_eval_every=50)
