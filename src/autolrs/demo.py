"""The demo task: MNIST-1D (generated offline) with a small 1-D CNN and SGD with momentum.

MNIST-1D (Greydanus, 2020) is a procedurally generated 1-D analogue of MNIST: 4000 training and 1000
test sequences of length 40, 10 classes. It is small enough to train in seconds on a CPU yet, unlike
MNIST, separates models and schedules. ``make_dataset`` builds it locally (``get_dataset`` would
download it).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, cast

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from .torch.driver import AutoLRS

__all__ = ["load_mnist1d", "ConvNet", "batches", "evaluate", "train", "run_demo", "Progress"]


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
        return cast(torch.Tensor, self.classifier(self.features(x).flatten(1)))  # nn.Module.__call__ is Any


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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


class Progress:
    """A minimal progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.tty = sys.stderr.isatty()
        self._shown = -1

    def update(self, done: int, info: str = "") -> None:
        fraction = min(done / self.total, 1.0)
        if self.tty:
            if int(fraction * 200) == self._shown and done < self.total:
                return
            self._shown = int(fraction * 200)
            bar = "#" * int(30 * fraction) + "." * (30 - int(30 * fraction))
            sys.stderr.write(f"\r{self.label} [{bar}] {done}/{self.total} {info:<28}")
            if done >= self.total:
                sys.stderr.write("\n")
        elif int(fraction * 10) > self._shown:
            self._shown = int(fraction * 10)
            sys.stderr.write(f"{self.label}: {done}/{self.total} steps {info}\n")
        sys.stderr.flush()


def train(model: nn.Module, optimizer: torch.optim.Optimizer, stream: Iterator[tuple[torch.Tensor, torch.Tensor]],
          steps: int, sched: AutoLRS | None = None, progress: Progress | None = None,
          on_step: Callable[[], object] | None = None) -> tuple[float, list[tuple[int, str, float, float]]]:
    """The demo's training loop: cross-entropy on ``stream``'s batches for ``steps`` optimizer steps, or
    until ``sched.done`` when an :class:`~autolrs.AutoLRS` ``sched`` drives the LR; ``on_step()`` (if given)
    runs after every step.

    Returns the wall time and, with ``sched``, the trace ``(step, phase, lr, loss)`` of every step.
    """
    trace: list[tuple[int, str, float, float]] = []
    start = time.perf_counter()
    step = 0
    while not sched.done if sched is not None else step < steps:
        if sched is not None:
            phase, lr, stage = sched.phase, sched.get_last_lr()[0], len(sched.history)
        x, y = next(stream)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward has no annotations
        optimizer.step()
        step += 1
        if sched is not None:
            sched.step(loss)
            trace.append((sched.steps_taken, phase, lr, loss.item()))
            info = f"stage {stage} {phase}"  # the stage this step belonged to, as the table numbers it
        else:
            info = ""
        if progress is not None:
            progress.update(step, info)
        if on_step is not None:
            on_step()
    return time.perf_counter() - start, trace


def run_demo(steps: int = 4000, seed: int = 0, out: str | Path = "autolrs-demo", constant_lr: float = 0.1,
             min_lr: float = 1e-3, max_lr: float = 1.0, batch_size: int = 128) -> dict[str, Any]:
    """Train the MNIST-1D CNN with autolrs and with a constant LR on the same budget; report both."""
    from . import AutoLRS
    from .report import plot_run, stage_table, write_json

    # A ~5k-weight CNN gains nothing from more threads, and on a busy machine they spin: with another
    # process on each of 2 cores, 2 threads made a step 200x slower than 1 thread (measured).
    torch.set_num_threads(1)
    data = load_mnist1d()
    # The benchmark's split (3500 training sequences; the other 500 are its validation split, which autolrs's
    # validation objective did not improve on, BENCHMARKS.md); the test set gives the final figure.
    x_train, y_train = data["x"][:3500], data["y"][:3500]

    def make(seed_: int) -> tuple[ConvNet, torch.optim.SGD, Iterator[tuple[torch.Tensor, torch.Tensor]]]:
        torch.manual_seed(seed_)
        model = ConvNet()
        optimizer = torch.optim.SGD(model.parameters(), lr=constant_lr, momentum=0.9, weight_decay=5e-4)
        return model, optimizer, batches(x_train, y_train, batch_size, torch.Generator().manual_seed(seed_))

    model, optimizer, stream = make(seed)
    sched = AutoLRS(model, optimizer, min_lr=min_lr, max_lr=max_lr, total_steps=steps, seed=seed)
    autolrs_time, trace = train(model, optimizer, stream, steps, sched, Progress(steps, "autolrs "))
    autolrs_acc, autolrs_loss = evaluate(model, data["x_test"], data["y_test"])

    # constant LR, same number of optimizer steps
    model, optimizer, stream = make(seed)
    constant_time, _ = train(model, optimizer, stream, steps, progress=Progress(steps, "constant"))
    constant_acc, constant_loss = evaluate(model, data["x_test"], data["y_test"])

    out = Path(out)
    record = {
        "task": "MNIST-1D, 1-D CNN, SGD momentum 0.9, weight decay 5e-4, batch 128",
        "seed": seed,
        "budget_steps": steps,
        "autolrs": {"test_accuracy": autolrs_acc, "test_loss": autolrs_loss, "steps_taken": sched.steps_taken,
                    "kept_steps": sched.kept_steps, "wall_s": autolrs_time, "config": sched.config.to_dict()},
        "constant_lr": {"lr": constant_lr, "test_accuracy": constant_acc, "test_loss": constant_loss,
                        "steps_taken": steps, "wall_s": constant_time},
        "history": sched.history,
        "found_schedule": sched.found_schedule(),
        "trace": {"step": [t[0] for t in trace], "phase": [t[1] for t in trace], "lr": [t[2] for t in trace],
                  "loss": [t[3] for t in trace]},
    }
    json_path = write_json(out / "demo.json", **record)
    png_path = plot_run(out / "demo.png", sched.history, trace, decay_shape=sched.config.decay_shape,
                        title=f"autolrs on MNIST-1D: test accuracy {autolrs_acc:.3f} (constant {constant_lr}: "
                              f"{constant_acc:.3f})")

    print()
    print(stage_table(sched.history))
    print()
    print(f"{'':22}{'test accuracy':>14}{'test loss':>11}{'optimizer steps':>17}{'kept steps':>12}{'wall':>8}")
    print(f"{'autolrs':22}{autolrs_acc:>14.4f}{autolrs_loss:>11.4f}{sched.steps_taken:>17}{sched.kept_steps:>12}"
          f"{autolrs_time:>7.1f}s")
    print(f"{f'constant lr {constant_lr:g}':22}{constant_acc:>14.4f}{constant_loss:>11.4f}{steps:>17}{steps:>12}"
          f"{constant_time:>7.1f}s")
    print(f"\nwrote {json_path} and {png_path}")
    return record
