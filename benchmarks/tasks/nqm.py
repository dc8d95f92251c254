"""``nqm``: the noisy quadratic model, where the optimal LR schedule is known.

``L(x) = 0.5 * sum_i x_i^2 / i`` over 100 coordinates from ``x = 1``; plain SGD (no momentum, no weight
decay) sees the gradient plus Gaussian noise of variance ``sigma^2 h_i`` (``sigma = 0.1``). The training
loss every method observes is the exact ``L(x)`` of the current iterate (only the gradient is noisy), and
the metric is the final iterate's ``L(x)``. Because the expected loss of any LR sequence is exact
(:mod:`benchmarks.tasks.quadratic`), the report also gives the expected final loss of the schedule each run
kept, and the best piecewise-constant schedule's, against which every method is measured.

With these constants (measured with :func:`~benchmarks.tasks.quadratic.optimal_schedule`, budget 4000): the
optimal 20-piece schedule decays about as 1/t from 1.5 to 0.003 and reaches 1.9e-4; the best constant LR
reaches 6.3x that, the best cosine 1.5x: scheduling matters, and there is room between the two.
"""

from __future__ import annotations

import math

import torch

from .base import Problem, TaskEntry, TaskSpec, log_grid
from .quadratic import Quadratic, optimal_schedule

__all__ = ["SPEC", "QUADRATIC", "NQMProblem", "ENTRY"]

QUADRATIC = Quadratic(dim=100, sigma=0.1, x0=1.0)

# A 100-coordinate step costs ~0.1 ms: autolrs's own work dominates these runs; one thread each.
SPEC = TaskSpec(
    name="nqm",
    title="Noisy quadratic model (Zhang et al., 2019): h_i = 1/i, 100 coordinates, gradient noise "
          "variance 0.01 h_i, plain SGD",
    budget=4000,
    eval_every=100,
    metric="loss",
    higher_is_better=False,
    worst=math.inf,
    optimizer="sgd",
    grid=log_grid(2e-3, 2.0, 7),
    lr_range=(2e-3, 2.0),
    threads=1,
    workers=2,
    notes="the training loss seen by every method is the exact L(x) of the iterate (only gradients are "
          "noisy); metric: L(x) of the final kept iterate; 'expected' is the exact expected final loss of "
          "the LR sequence a run kept (closed form; not defined for Prodigy and Schedule-Free, whose steps "
          "are not plain SGD).",
)


class Iterate(torch.nn.Module):
    def __init__(self, dim: int, x0: float) -> None:
        super().__init__()
        self.x = torch.nn.Parameter(torch.full((dim,), x0, dtype=torch.float64))


class NQMProblem(Problem):
    def __init__(self, spec: TaskSpec, seed: int) -> None:
        self.spec = spec
        self.h = torch.tensor(QUADRATIC.h)
        self.noise_scale = QUADRATIC.sigma * self.h.sqrt()
        self.model = Iterate(QUADRATIC.dim, QUADRATIC.x0)
        self.generator = torch.Generator().manual_seed(seed)

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.model.parameters()), "weight_decay": 0.0}]

    def _loss(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.sum(self.h * x * x)

    def training_loss(self) -> torch.Tensor:
        x = self.model.x
        noise = self.noise_scale * torch.randn(x.shape, generator=self.generator, dtype=torch.float64)
        linear = torch.sum(noise * x)
        # value L(x), gradient h x + noise: the noise enters the gradient only
        return self._loss(x) + linear - linear.detach()

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        return {"loss": float(self._loss(model.x))}

    def expected_loss(self, kept_lrs: list[float]) -> float | None:
        return QUADRATIC.expected_loss(kept_lrs)


def optimal_reference(task: TaskSpec) -> dict:
    """The optimal piecewise-constant schedule for ``task``'s budget, with its exact expected final loss."""
    optimal = optimal_schedule(QUADRATIC, task.budget)
    return {"optimal": {**optimal.to_dict(), "pieces": len(optimal.lrs),
                        "method": "L-BFGS-B on the log-LRs of equal pieces, exact closed-form expected loss"}}


# No validation split (NQMProblem has no validation_loss): the loss is exact, there is nothing to hold out.
ENTRY = TaskEntry(SPEC, NQMProblem, quick_budget=1000, quick_eval_every=50, log_metric=True,
                  reference=optimal_reference)
