"""A noisy quadratic model to train on, with the benchmark's closed-form expected loss (after Zhang et al., 2019).

Loss ``L(x) = 0.5 * sum_i h_i x_i^2``; SGD sees the gradient ``h x`` plus Gaussian noise of variance
``sigma^2 h_i`` per coordinate, so the expected loss of any LR schedule is exact
(:class:`benchmarks.tasks.quadratic.Quadratic`). With one curvature (``flat``, the default here) the
expected loss of a constant LR is exactly ``a exp(b t) + c``: the forecasting model's own class.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.tasks.quadratic import Quadratic


class NoisyQuadratic:
    def __init__(self, dim: int = 100, sigma: float = 1.0, x0: float = 1.0, flat: bool = True, seed: int = 0) -> None:
        self.quadratic = Quadratic(dim, sigma, x0, flat)
        self.h = torch.tensor(self.quadratic.h)
        self.sigma = sigma
        self.x = torch.nn.Parameter(torch.full((dim,), x0, dtype=torch.float64))
        self.model = torch.nn.ParameterList([self.x])
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self) -> torch.Tensor:
        return 0.5 * (self.h * self.x**2).sum()

    def backward(self) -> None:
        noise = torch.randn(self.x.shape, generator=self.generator, dtype=torch.float64)
        self.x.grad = self.h * self.x.detach() + self.sigma * self.h.sqrt() * noise

    def expected_loss(self, lr: float, steps: int) -> float:
        """The exact expected loss after ``steps`` SGD steps at the constant LR ``lr``."""
        return self.quadratic.expected_loss([lr] * steps)

    def best_constant_lr(self, steps: int, lrs: np.ndarray) -> float:
        return float(lrs[int(np.argmin([self.expected_loss(lr, steps) for lr in lrs]))])
