"""The noisy quadratic model's closed form, and the optimal piecewise-constant LR schedule it implies.

After Zhang et al. (2019), "Which algorithmic choices matter at which batch sizes?": the loss is
``L(x) = 0.5 * sum_i h_i x_i^2`` and SGD sees the gradient ``h x`` plus Gaussian noise of variance
``sigma^2 h_i`` on coordinate ``i``. Coordinates evolve independently, and the second moment of each obeys

    m' = (1 - lr h)^2 m + lr^2 sigma^2 h,

so the expected loss ``0.5 * sum_i h_i m_i`` of *any* LR sequence is exact. Over ``n`` steps at one LR the
recursion sums in closed form, which makes the expected final loss of a piecewise-constant schedule a
smooth function of its log-LRs: minimising it (L-BFGS-B, from several starts) gives the best schedule of
that class for the budget, the reference the benchmark measures every method against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize

__all__ = ["Quadratic", "OptimalSchedule", "optimal_schedule"]


@dataclass(frozen=True)
class Quadratic:
    """The model's constants: curvatures ``h_i = 1 / i`` (i = 1..dim), noise scale, start point.

    ``flat``: every curvature 1 instead, as the driver's tests use it (``tests/nqm.py``): with one
    curvature the expected loss of a constant LR is exactly ``a exp(b t) + c``, autolrs's forecast model.
    """

    dim: int
    sigma: float
    x0: float
    flat: bool = False

    @property
    def h(self) -> np.ndarray:
        if self.flat:
            return np.ones(self.dim)
        return 1.0 / np.arange(1, self.dim + 1, dtype=np.float64)

    def expected_loss(self, lrs) -> float:
        """The exact expected loss after running SGD with the LR sequence ``lrs`` (one per step)."""
        h = self.h
        m = np.full(self.dim, self.x0**2)
        for lr, count in _runs(lrs):
            m = _advance(m, h, lr, count, self.sigma)
        return float(0.5 * np.sum(h * m))

    def piecewise_loss(self, log_lrs: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """The expected final loss of ``exp(log_lrs[j])`` held for ``lengths[j]`` steps (differentiable)."""
        h = torch.tensor(self.h)
        m = torch.full((self.dim,), self.x0**2, dtype=torch.float64)
        for log_lr, n in zip(log_lrs, lengths):
            lr = torch.exp(log_lr)
            a = (1 - lr * h) ** 2
            fixed = lr**2 * self.sigma**2 * h / (1 - a)  # the fixed point (a < 1 inside the bounds)
            m = fixed + a**n * (m - fixed)
        return 0.5 * torch.sum(h * m)


def _runs(lrs):
    """Run-length encoding of an LR sequence: ``(lr, count)`` pairs."""
    out: list[list] = []
    for lr in lrs:
        if out and out[-1][0] == lr:
            out[-1][1] += 1
        else:
            out.append([lr, 1])
    return out


def _advance(m: np.ndarray, h: np.ndarray, lr: float, n: int, sigma: float) -> np.ndarray:
    """``n`` steps of the second-moment recursion at one LR, summed in closed form."""
    a = (1 - lr * h) ** 2
    noise = lr**2 * sigma**2 * h
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        geometric = np.where(np.isclose(a, 1.0), float(n), (1 - a**n) / (1 - a))
        return a**n * m + noise * geometric


@dataclass(frozen=True)
class OptimalSchedule:
    """The optimised schedule: ``lrs[j]`` for ``lengths[j]`` steps; ``loss`` its expected final loss."""

    lrs: tuple[float, ...]
    lengths: tuple[int, ...]
    loss: float

    def per_step(self) -> list[float]:
        return [lr for lr, n in zip(self.lrs, self.lengths) for _ in range(n)]

    def to_dict(self) -> dict:
        return {"lrs": list(self.lrs), "lengths": list(self.lengths), "expected_loss": self.loss}


def optimal_schedule(model: Quadratic, budget: int, pieces: int = 20, lr_bounds=(1e-5, 1.99)) -> OptimalSchedule:
    """The piecewise-constant schedule (``pieces`` equal pieces) of least expected loss after ``budget`` steps.

    Deterministic: L-BFGS-B on the log-LRs with exact gradients (autograd of the closed form), started
    from several constant schedules; the best end point wins. The upper bound keeps ``lr * h_max < 2``
    (beyond it SGD diverges on the sharpest coordinate).
    """
    lengths = [budget // pieces + (1 if j < budget % pieces else 0) for j in range(pieces)]
    bounds = [(float(np.log(lr_bounds[0])), float(np.log(lr_bounds[1])))] * pieces

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        log_lrs = torch.tensor(z, dtype=torch.float64, requires_grad=True)
        loss = torch.log(model.piecewise_loss(log_lrs, lengths))  # log: well scaled over decades
        loss.backward()
        return float(loss.detach()), log_lrs.grad.numpy()

    best = None
    for start in np.log(np.geomspace(1e-3, 1.0, 7)):
        result = minimize(objective, np.full(pieces, start), jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-10})
        if best is None or result.fun < best.fun:
            best = result
    lrs = tuple(float(v) for v in np.exp(best.x))
    return OptimalSchedule(lrs, tuple(lengths), model.expected_loss([lr for lr, n in zip(lrs, lengths)
                                                                      for _ in range(n)]))
