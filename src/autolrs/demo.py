"""The demo task: MNIST-1D (generated offline) with a small 1-D CNN and SGD with momentum.

MNIST-1D (Greydanus, 2020) is a procedurally generated 1-D analogue of MNIST: 4000 training and 1000
test sequences of length 40, 10 classes. It is small enough to train in seconds on a CPU yet, unlike
MNIST, separates models and schedules. ``make_dataset`` builds it locally (``get_dataset`` would
download it).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

__all__ = ["load_mnist1d", "ConvNet", "batches", "evaluate"]


def load_mnist1d(seed: int = 42) -> dict[str, torch.Tensor]:
    """MNIST-1D as tensors ``x, y, x_test, y_test``; the data are the same for every run with ``seed``.

    ``make_dataset`` reseeds numpy's and Python's global RNGs: they are saved and put back, so loading the
    data changes nothing else in the caller's process.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("The demo needs mnist1d: pip install 'autolrs[demo]'") from error
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        args = get_dataset_args()
        args.seed = seed
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x": torch.tensor(data["x"], dtype=torch.float32).unsqueeze(1),
        "y": torch.tensor(data["y"], dtype=torch.long),
        "x_test": torch.tensor(data["x_test"], dtype=torch.float32).unsqueeze(1),
        "y_test": torch.tensor(data["y_test"], dtype=torch.long),
    }


class ConvNet(nn.Module):
    """The 1-D CNN of the MNIST-1D paper: three strided convolutions and a linear classifier (~5k weights)."""

    def __init__(self, channels: int = 25, classes: int = 10, length: int = 40) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )
        with torch.no_grad():
            width = self.features(torch.zeros(1, 1, length)).numel()
        self.classifier = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Endless shuffled mini-batches (a new permutation each epoch)."""
    while True:
        order = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0] - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` on ``(x, y)``."""
    was_training = model.training
    model.eval()
    logits = model(x)
    model.train(was_training)
    loss = nn.functional.cross_entropy(logits, y).item()
    return float((logits.argmax(1) == y).float().mean()), float(loss)
