"""The validated configuration of an AutoLRS run.

Notation (ALGORITHM.md): a *stage* trains ``tau`` kept steps at one LR; before it, ``k`` candidate LRs are
each tried for ``tau'`` steps from a common snapshot. ``tau`` doubles after every stage up to ``tau_max``;
``tau'`` keeps the ratio ``tau' / tau`` of the first stage.

The paper's constants (tau = 1000, tau' = 100, tau_max = 8000, k = 10) fit ImageNet-scale runs. When a
step budget (``total_steps``) is given and the stage sizes are not, they are scaled to it (see
:func:`derive_stage_sizes`), never above the paper's.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Literal

__all__ = ["AutoLRSConfig", "derive_stage_sizes"]

# The paper's constants, used when no budget is given.
PAPER_STAGE_STEPS = 1000
PAPER_MAX_STAGE_STEPS = 8000
PAPER_CANDIDATES = 10


def _check_real(name: str, value, *, positive: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, but got {value!r} of type {type(value).__name__}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, but got {value!r}.")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, but got {value!r}.")


def _check_int(name: str, value, *, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, but got {value!r} of type {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, but got {value!r}.")


def derive_stage_sizes(
    total_steps: int | None, candidates: int, warmup_steps: int, min_explore_steps: int,
    search_ratio: float = 1.0,
) -> tuple[int, int]:
    """Return ``(stage_steps, max_stage_steps)`` for a budget, as the paper's constants scaled down.

    Search costs ``search_ratio`` steps per kept step (``k x tau' = search_ratio x tau``), so a budget ``B``
    keeps about ``K = (B - warmup) / (1 + search_ratio)`` steps. ``tau_max = K / 5`` gives the schedule six
    to eight pieces, and ``tau = tau_max / 4`` a first stage short enough to react early; both are floored
    so that a candidate sees at least ``min_explore_steps`` losses (a shorter series cannot be forecast)
    and capped at the paper's 1000 / 8000.
    """
    if total_steps is None:
        return PAPER_STAGE_STEPS, PAPER_MAX_STAGE_STEPS
    kept = int(max(total_steps - warmup_steps, 0) / (1.0 + search_ratio))
    floor = math.ceil(candidates * min_explore_steps / search_ratio)
    max_stage = min(PAPER_MAX_STAGE_STEPS, max(floor, kept // 5))
    stage = min(PAPER_STAGE_STEPS, max(floor, max_stage // 4))
    return stage, max(stage, max_stage)


@dataclass(frozen=True)
class AutoLRSConfig:
    """Everything that defines an AutoLRS run; validated on construction.

    Args:
        min_lr, max_lr: the LR search range (log-uniform), ``0 < min_lr < max_lr``.
        total_steps: optimizer-step budget, search included; ``None`` runs without end.
        stage_steps: ``tau`` of the first stage (kept steps). Derived from the budget when ``None``.
        max_stage_steps: ``tau_max``; ``tau`` doubles after each stage up to it.
        candidates: ``k``, LRs tried per stage.
        explore_steps: ``tau'`` of the first stage; default ``search_ratio x stage_steps / candidates``.
        search_ratio: search steps per kept step, ``k x tau' / tau``. The paper's 1 spends half the budget
            on search; less keeps more of it, with shorter windows or fewer candidates.
        kappa: LCB exploration weight, ``mu - kappa * sigma``. The reference code's 1e6 is pure
            uncertainty sampling; a small value concentrates candidates near the optimum.
        warmup_steps, warmup_lr: optional linear warmup from 0 to ``warmup_lr`` before the first stage;
            ``warmup_lr`` defaults to the geometric mean of the range.
        use_validation: observe validation losses (instead of training losses) once ``tau == tau_max``.
        val_points: validation evaluations per candidate in validation mode (paper: 16).
        loss_floor: the lowest value the loss can take (0 for cross-entropy or squared losses); forecasts
            never go below it. ``None`` for losses without a floor.
        max_extrapolation: a forecast may predict at most this many times the decrease (or increase)
            observed during the candidate's own steps. Guards against extrapolating a nearly linear
            trend 10x (the reference code forecast cross-entropies of -3.2 that way).
        divergence_factor: a loss above ``factor * |start loss|`` beyond the stage's start loss (or NaN/inf)
            stops a candidate at once and counts it as worst.
        min_explore_steps: the shortest candidate worth forecasting; stages are never planned shorter.
        choose: how a stage's LR is chosen among its candidates: ``"posterior"`` (default), the lowest
            Gaussian-process posterior mean at the tried LRs, which discounts a single lucky forecast; or
            ``"forecast"``, the lowest observed forecast (the reference code).
        trust_region: a factor > 1: each stage after the first searches only within this factor of the
            previous stage's LR (clipped to the range), so that noise in short forecasts cannot swing the
            schedule by orders of magnitude from one stage to the next. ``None`` searches the whole range
            every stage, as the paper. The default 3 was chosen by benchmark (BENCHMARKS.md).
        warm_start: propose the previous stage's LR as the first candidate of the next stage (it is the
            best-informed guess); otherwise the first candidate is random, as in the reference code.
        seed: seeds every random choice of the search.
    """

    min_lr: float
    max_lr: float
    total_steps: int | None = None
    stage_steps: int | None = None
    max_stage_steps: int | None = None
    candidates: int = PAPER_CANDIDATES
    explore_steps: int | None = None
    search_ratio: float = 1.0
    kappa: float = 2.0
    warmup_steps: int = 0
    warmup_lr: float | None = None
    use_validation: bool = False
    val_points: int = 16
    loss_floor: float | None = 0.0
    max_extrapolation: float = 3.0
    divergence_factor: float = 4.0
    min_explore_steps: int = 10
    choose: Literal["posterior", "forecast"] = "posterior"
    trust_region: float | None = 3.0
    warm_start: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _check_real("min_lr", self.min_lr, positive=True)
        _check_real("max_lr", self.max_lr, positive=True)
        if self.min_lr >= self.max_lr:
            raise ValueError(
                f"min_lr must be smaller than max_lr, but got min_lr={self.min_lr!r} >= max_lr={self.max_lr!r}. "
                "Give a range that spans the LRs worth trying, e.g. min_lr=1e-4, max_lr=1.0."
            )
        _check_int("total_steps", self.total_steps, minimum=1, allow_none=True)
        _check_int("stage_steps", self.stage_steps, minimum=2, allow_none=True)
        _check_int("max_stage_steps", self.max_stage_steps, minimum=2, allow_none=True)
        _check_int("candidates", self.candidates, minimum=2)
        _check_int("explore_steps", self.explore_steps, minimum=1, allow_none=True)
        _check_real("search_ratio", self.search_ratio, positive=True)
        _check_real("kappa", self.kappa)
        if self.kappa < 0:
            raise ValueError(f"kappa must be >= 0, but got {self.kappa!r}.")
        _check_int("warmup_steps", self.warmup_steps, minimum=0)
        _check_real("warmup_lr", self.warmup_lr, positive=True, allow_none=True)
        if not isinstance(self.use_validation, bool):
            raise TypeError(f"use_validation must be a bool, but got {self.use_validation!r}.")
        _check_int("val_points", self.val_points, minimum=2)
        _check_real("loss_floor", self.loss_floor, allow_none=True)
        _check_real("max_extrapolation", self.max_extrapolation, positive=True)
        _check_real("divergence_factor", self.divergence_factor, positive=True)
        if self.divergence_factor <= 1:
            raise ValueError(f"divergence_factor must be > 1, but got {self.divergence_factor!r}.")
        _check_int("min_explore_steps", self.min_explore_steps, minimum=3)
        if self.choose not in ("posterior", "forecast"):
            raise ValueError(f"choose must be 'posterior' or 'forecast', but got {self.choose!r}.")
        _check_real("trust_region", self.trust_region, positive=True, allow_none=True)
        if self.trust_region is not None and self.trust_region <= 1:
            raise ValueError(f"trust_region must be a factor > 1 (or None), but got {self.trust_region!r}.")
        if not isinstance(self.warm_start, bool):
            raise TypeError(f"warm_start must be a bool, but got {self.warm_start!r}.")
        _check_int("seed", self.seed, minimum=0)

        # Fill the derived sizes, so that a resolved config is complete plain data.
        stage, max_stage = derive_stage_sizes(
            self.total_steps, self.candidates, self.warmup_steps, self.min_explore_steps, self.search_ratio
        )
        if self.stage_steps is None:
            if self.max_stage_steps is not None:
                stage = min(stage, self.max_stage_steps)
            object.__setattr__(self, "stage_steps", stage)
        if self.max_stage_steps is None:
            object.__setattr__(self, "max_stage_steps", max(max_stage, self.stage_steps))
        if self.explore_steps is None:
            object.__setattr__(
                self, "explore_steps", max(1, int(self.search_ratio * self.stage_steps / self.candidates)))
        if self.warmup_lr is None:
            object.__setattr__(self, "warmup_lr", math.sqrt(self.min_lr * self.max_lr))

        if self.max_stage_steps < self.stage_steps:
            raise ValueError(
                f"max_stage_steps (tau_max) must be >= stage_steps (tau), but got max_stage_steps="
                f"{self.max_stage_steps} < stage_steps={self.stage_steps}."
            )
        if self.explore_steps < self.min_explore_steps:
            raise ValueError(
                f"explore_steps (tau') must be >= min_explore_steps={self.min_explore_steps}: a shorter loss "
                f"series cannot be forecast, but got explore_steps={self.explore_steps} (stage_steps="
                f"{self.stage_steps}, candidates={self.candidates}). Raise stage_steps or explore_steps, "
                "or lower candidates."
            )
        if self.explore_steps > self.stage_steps:
            raise ValueError(
                f"explore_steps (tau') must be <= stage_steps (tau): a candidate is a short trial of the stage, "
                f"but got explore_steps={self.explore_steps} > stage_steps={self.stage_steps}."
            )
        if self.total_steps is not None:
            first_stage = self.warmup_steps + self.candidates * self.min_explore_steps + self.min_explore_steps
            if self.total_steps < first_stage:
                raise ValueError(
                    f"total_steps={self.total_steps} is too small for one search: warmup ({self.warmup_steps}) "
                    f"+ {self.candidates} candidates x {self.min_explore_steps} steps + a kept stage needs at "
                    f"least {first_stage}. Raise total_steps or lower candidates."
                )

    @property
    def explore_ratio(self) -> float:
        """``tau' / tau``, kept as the stages grow."""
        return self.explore_steps / self.stage_steps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AutoLRSConfig":
        if not isinstance(data, dict):
            raise TypeError(f"Expected a dict of AutoLRSConfig fields, but got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown AutoLRSConfig fields {sorted(unknown)}; expected a subset of {sorted(known)}.")
        return cls(**data)
