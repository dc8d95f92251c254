"""Bayesian optimisation over log10(LR), with an ask/tell interface (AutoLRS, Section 4.1).

Notation:
    x        log10(lr) scaled to [0, 1] over [min_lr, max_lr]
    y        the observed objective (a forecast loss); lower is better
    mu, sd   the Gaussian-process posterior mean and standard deviation at x
    LCB(x)   mu(x) - kappa * sd(x), minimised over a dense grid of x to propose the next LR

The surrogate is scikit-learn's ``GaussianProcessRegressor`` with kernel Constant * Matern(nu=2.5) + White
and normalised targets, refitted from all observations by ``fit`` (at every ``ask``); ``posterior``
queries the last fit and changes nothing. A point already evaluated (or
within half a grid cell of one) is never proposed again. All randomness comes from ``seed``, so the same
observations always give the same proposals.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from threadpoolctl import threadpool_limits

__all__ = ["BayesianSearch"]


class BayesianSearch:
    """Ask/tell Bayesian optimisation of a 1-D function of log LR.

    Args:
        min_lr, max_lr: the search range; proposals are log-uniform inside it.
        kappa: LCB exploration weight (``1e6`` reproduces the reference code's uncertainty sampling).
        seed: seeds the first random proposal and the GP optimiser restarts.
        first_lr: an optional first proposal (e.g. the previous stage's choice) instead of a random one.
        initial: LRs to propose first, in order (after ``first_lr``), e.g. a log grid that covers the range
            before the GP has anything to go on; the GP proposes the rest.
        grid_size: number of points on which the acquisition is minimised.
        min_distance: closest a proposal may come to an evaluated point, in unit (log-range) coordinates.
        noise: a standard deviation (in the observations' units) that every observation is assumed to carry
            at least, added to the noise the GP fits: a few observations would otherwise let it fit ~0 noise
            and interpolate them exactly.

    Example:
        >>> search = BayesianSearch(1e-4, 1.0, kappa=2.0, seed=0)
        >>> for _ in range(8):
        ...     lr = search.ask()
        ...     search.tell(lr, (math.log10(lr) + 2.0) ** 2)
        >>> abs(math.log10(search.best()[0]) + 2.0) < 0.25
        True
    """

    def __init__(
        self,
        min_lr: float,
        max_lr: float,
        *,
        kappa: float = 2.0,
        seed: int = 0,
        first_lr: float | None = None,
        initial: tuple[float, ...] | list[float] = (),
        grid_size: int = 1024,
        min_distance: float = 0.02,
        noise: float = 0.0,
    ) -> None:
        if not (0 < min_lr < max_lr) or not math.isfinite(max_lr):
            raise ValueError(f"Expected 0 < min_lr < max_lr < inf, but got min_lr={min_lr!r}, max_lr={max_lr!r}.")
        if kappa < 0 or not math.isfinite(kappa):
            raise ValueError(f"kappa must be finite and >= 0, but got {kappa!r}.")
        self.min_lr, self.max_lr = float(min_lr), float(max_lr)
        self.kappa = float(kappa)
        self.seed = int(seed)
        self.first_lr = first_lr
        self.initial = [float(lr) for lr in initial if self.min_lr <= lr <= self.max_lr]
        self.grid: npt.NDArray[np.float64] = np.linspace(0.0, 1.0, grid_size)
        self.min_distance = float(min_distance)
        if noise < 0 or not math.isfinite(noise):
            raise ValueError(f"noise must be a finite standard deviation >= 0, but got {noise!r}.")
        self.noise = float(noise)
        self._x: list[float] = []
        self._y: list[float] = []
        self._kernel = None  # the last fit's kernel, where the next fit starts
        self._gp: GaussianProcessRegressor | None = None  # the last fit, and how many observations it saw
        self._fitted = 0

    # -- coordinates -------------------------------------------------------------------------------
    def to_unit(self, lr: float) -> float:
        lo, hi = math.log10(self.min_lr), math.log10(self.max_lr)
        return (math.log10(lr) - lo) / (hi - lo)

    def to_lr(self, x: float) -> float:
        lo, hi = math.log10(self.min_lr), math.log10(self.max_lr)
        return float(10 ** (lo + float(np.clip(x, 0.0, 1.0)) * (hi - lo)))

    # -- ask / tell --------------------------------------------------------------------------------
    def ask(self) -> float:
        """The next LR to evaluate: the LCB minimiser among points not yet evaluated."""
        design = ([float(self.first_lr)] if self.first_lr is not None and self.min_lr <= self.first_lr <= self.max_lr
                  else []) + self.initial
        if len(self._x) < len(design):
            return design[len(self._x)]
        if not self._x:
            return self.to_lr(np.random.default_rng(self.seed).uniform())
        free = self._free_grid()
        self.fit()
        mu, sd = self.posterior(free)
        score = mu - self.kappa * sd
        # Ties (flat posterior, huge kappa with equal sd) go to the lowest x: deterministic.
        return self.to_lr(float(free[int(np.argmin(score))]))

    def tell(self, lr: float, value: float) -> None:
        """Record that ``lr`` gave ``value``; ``inf`` or NaN marks a diverged LR (worse than any other)."""
        if not (self.min_lr * (1 - 1e-9) <= lr <= self.max_lr * (1 + 1e-9)):
            raise ValueError(f"lr={lr!r} is outside the search range [{self.min_lr!r}, {self.max_lr!r}].")
        self._x.append(self.to_unit(float(lr)))
        self._y.append(float(value) if math.isfinite(value) else math.inf)

    def best(self) -> tuple[float, float]:
        """``(lr, value)`` of the lowest observed value (``inf`` if every LR diverged)."""
        if not self._y:
            raise ValueError("best() needs at least one tell(); nothing has been observed yet.")
        i = int(np.argmin(self._y))
        return self.to_lr(self._x[i]), self._y[i]

    def _targets(self) -> np.ndarray:
        """Observed values with divergence mapped to one spread above the worst finite value.

        A fixed finite stand-in keeps the GP's normalisation sane: a huge number would flatten every
        real difference between forecasts.
        """
        y = np.asarray(self._y, dtype=float)
        worst = ~np.isfinite(y)
        if worst.all():
            return np.zeros_like(y)
        finite = y[~worst]
        spread = float(finite.max() - finite.min()) or abs(float(finite.max())) or 1.0
        y[worst] = finite.max() + spread
        return y

    @property
    def observations(self) -> list[tuple[float, float]]:
        return [(self.to_lr(x), y) for x, y in zip(self._x, self._y)]

    def state_dict(self) -> dict[str, Any]:
        """Everything that defines this search, its observations and the GP's current hyperparameters
        (log-space ``theta``), as plain data: :meth:`from_state_dict` rebuilds the same search."""
        theta = None if self._kernel is None else [float(v) for v in self._kernel.theta]
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "kappa": self.kappa, "seed": self.seed,
                "first_lr": self.first_lr, "initial": list(self.initial), "grid_size": int(self.grid.size), "min_distance": self.min_distance,
                "noise": self.noise, "x": list(self._x), "y": list(self._y), "theta": theta}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "BayesianSearch":
        search = cls(state["min_lr"], state["max_lr"], kappa=state["kappa"], seed=state["seed"],
                     first_lr=state["first_lr"], initial=state.get("initial", ()), grid_size=state["grid_size"], min_distance=state["min_distance"],
                     noise=state.get("noise", 0.0))  # states saved before the option: no added noise
        search._x, search._y = [float(v) for v in state["x"]], [float(v) for v in state["y"]]
        if state["theta"] is not None:
            search._kernel = cls._default_kernel().clone_with_theta(np.asarray(state["theta"], dtype=float))
        return search

    # -- surrogate ---------------------------------------------------------------------------------
    def _free_grid(self) -> npt.NDArray[np.float64]:
        """Grid points at least ``min_distance`` from every evaluated point.

        Forecasts are noisy: two LRs a few percent apart cannot be told apart, so proposing one next to an
        evaluated point wastes a candidate. Where the whole grid is taken, the rule relaxes to half a cell.
        """
        gap = np.min(np.abs(self.grid[:, None] - np.asarray(self._x)[None, :]), axis=1)
        for distance in (self.min_distance, 0.5 / (self.grid.size - 1) + 1e-12):
            free: npt.NDArray[np.float64] = self.grid[gap > distance]
            if free.size:
                return free
        return self.grid

    @staticmethod
    def _default_kernel() -> Any:  # a scikit-learn kernel (scikit-learn has no type hints)
        return ConstantKernel(1.0, (1e-3, 1e3)) * Matern(length_scale=0.2, length_scale_bounds=(1e-2, 1e1), nu=2.5) \
            + WhiteKernel(1e-2, (1e-6, 1e0))

    def fit(self) -> None:
        """Fit the Gaussian process to every observation so far; :meth:`posterior` then queries it.

        Each fit starts from the previous one's hyperparameters: one more point barely moves them, so one
        optimiser restart is enough (three from scratch cost 3x as much for the same fit).
        """
        if not self._x:
            raise ValueError("fit() needs at least one tell(); nothing has been observed yet.")
        targets = self._targets()
        # ``noise`` is on the targets' scale; the GP fits normalised targets (scikit-learn divides by their
        # population std), so it is divided by their spread. Equal targets have nothing to tell apart: no
        # added noise. 1e-10 is scikit-learn's default jitter.
        spread = float(np.std(targets))
        alpha = (self.noise / spread) ** 2 if spread > 0 else 0.0
        gp = GaussianProcessRegressor(
            kernel=self._kernel or self._default_kernel(), normalize_y=True, n_restarts_optimizer=1,
            random_state=self.seed, alpha=max(alpha, 1e-10),
        )
        # A handful of points make tiny matrices: BLAS threads only add overhead, and on a busy machine
        # they made one fit 8x slower (650 ms instead of 80 ms measured on 2 cores).
        with threadpool_limits(limits=1), warnings.catch_warnings():
            # Few points make the marginal likelihood flat: the optimiser hits bounds, which is harmless.
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(np.asarray(self._x)[:, None], targets)
        self._gp, self._fitted = gp, len(self._x)
        self._kernel = gp.kernel_

    def posterior(self, x: npt.ArrayLike, *,
                  return_cov: bool = False) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Posterior mean and standard deviation (with ``return_cov``: covariance matrix) of the objective at
        unit coordinates ``x``, from the last :meth:`fit`. A query: it changes nothing."""
        if self._gp is None or self._fitted != len(self._x):
            raise RuntimeError("posterior() reads the last fit(); call fit() after the last tell().")
        with threadpool_limits(limits=1):
            mu, spread = self._gp.predict(np.asarray(x, dtype=float)[:, None], return_std=not return_cov,
                                          return_cov=return_cov)
        return mu, spread
