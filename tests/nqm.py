"""Noisy quadratic models with a closed-form expected loss (after Zhang et al., 2019).

Loss ``L(x) = 0.5 * sum_i h_i x_i^2``; SGD sees the gradient ``h x`` plus Gaussian noise of variance
``sigma^2 h_i`` per coordinate. Per coordinate the second moment evolves as
``m' = (1 - lr h)^2 m + lr^2 sigma^2 h``, so the expected loss of any LR schedule is exact.
With one curvature (``spectrum="flat"``) the expected loss of a constant LR is exactly
``a exp(b t) + c``: the forecasting model's own class.
"""

from __future__ import annotations

import numpy as np
import torch


class NoisyQuadratic:
    def __init__(self, dim: int = 100, sigma: float = 1.0, x0: float = 1.0, spectrum: str = "flat",
                 seed: int = 0) -> None:
        i = torch.arange(1, dim + 1, dtype=torch.float64)
        self.h = torch.ones(dim, dtype=torch.float64) if spectrum == "flat" else 1.0 / i
        self.sigma = sigma
        self.x0 = x0
        self.x = torch.nn.Parameter(torch.full((dim,), x0, dtype=torch.float64))
        self.model = torch.nn.ParameterList([self.x])
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self) -> torch.Tensor:
        return 0.5 * (self.h * self.x**2).sum()

    def backward(self) -> None:
        noise = torch.randn(self.x.shape, generator=self.generator, dtype=torch.float64)
        self.x.grad = self.h * self.x.detach() + self.sigma * self.h.sqrt() * noise

    def expected_loss(self, lr: float, steps: int) -> float:
        h = self.h.numpy()
        m = np.full(h.shape, self.x0**2)
        for _ in range(steps):
            m = (1 - lr * h) ** 2 * m + lr**2 * self.sigma**2 * h
        return float(0.5 * np.sum(h * m))

    def best_constant_lr(self, steps: int, lrs: np.ndarray) -> float:
        return float(lrs[int(np.argmin([self.expected_loss(lr, steps) for lr in lrs]))])
