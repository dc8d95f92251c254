"""The validated configuration of an AutoLRS run, and its two presets.

Notation (docs/algorithm.md): a *stage* trains ``tau`` kept steps at one LR; before them, ``k`` candidate LRs
are each tried for ``tau'`` steps from a common snapshot. ``tau`` doubles after every stage up to
``tau_max``. With a budget, the last ``decay_fraction`` of it is a *decay phase*: the LR falls linearly
from the last stage's to zero, with no search.

Presets (``preset=``) fill every option left unset:

* ``"default"``: fixed search windows (``tau'`` does not grow with ``tau``, so the search's share of the
  budget falls as stages grow: about 13% of it), a log grid over the range in the first stage and 5
  candidates in each later one, each searched within 3x of the previous stage's LR, the LR of the lowest
  GP posterior mean, and a final 30% linear decay to zero. Chosen on the benchmarks and the noisy
  quadratic's exact optimum (README, "How it works"; BENCHMARKS.md).
* ``"paper"``: the algorithm of the paper and its reference code: ``tau' = tau / k`` (the search costs as
  many steps as the kept stages), 10 candidates, the whole range every stage, ``kappa = 1e6``, the argmin
  of the forecasts, no decay phase. autolrs's safety nets (forecast bounds, divergence checks,
  roll-backs) stay on in both.

When a step budget (``total_steps``) is given and the stage sizes are not, they are scaled to it (see
:func:`autolrs.stages.derive_stage_sizes`), never above the paper's (tau = 1000, tau_max = 8000).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal, cast

from .stages import DECAY_SHAPES, derive_explore_steps, derive_stage_sizes, smallest_stage

__all__ = ["AutoLRSConfig", "PRESETS"]


class _PresetDefault:
    """The default of an option that its preset fills (a sentinel; never left in a resolved config)."""

    def __repr__(self) -> str:
        return "<preset default>"


PRESET_DEFAULT: Any = _PresetDefault()

# What each preset sets, for every option left unset. ``search_ratio=None`` means fixed windows.
PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(candidates=5, search_ratio=None, kappa=2.0, choose="posterior", tolerance=0.0,
                    hold_sigmas=1.0, progress_sigmas=3.0, trust_region=3.0, warm_start=True, decay_fraction=0.3, max_extrapolation=1.0,
                    forecast_noise=0.1, decay_shape="linear", first_tolerance=0.1),
    "paper": dict(candidates=10, search_ratio=1.0, kappa=1e6, choose="forecast", tolerance=0.0,
                  hold_sigmas=0.0, progress_sigmas=3.0, trust_region=None, warm_start=False, decay_fraction=0.0, max_extrapolation=3.0,
                  forecast_noise=0.0, decay_shape="linear", first_tolerance=0.0),
}


def _check_real(name: str, value: Any, *, positive: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, but got {value!r} of type {type(value).__name__}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, but got {value!r}.")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, but got {value!r}.")


def _check_int(name: str, value: Any, *, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, but got {value!r} of type {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, but got {value!r}.")


@dataclass(frozen=True)
class AutoLRSConfig:
    """Everything that defines an AutoLRS run; validated on construction.

    Options marked *(preset)* take the value of ``preset`` when left unset (see the module docstring).

    Args:
        min_lr, max_lr: the LR search range (log-uniform), ``0 < min_lr < max_lr``.
        total_steps: optimizer-step budget, search included; ``None`` runs without end (and without the
            decay phase).
        preset: ``"default"`` or ``"paper"``: the values of the options left unset.
        stage_steps: ``tau`` of the first stage (kept steps). Derived from the budget when ``None``.
        max_stage_steps: ``tau_max``; ``tau`` doubles after each stage up to it.
        candidates: *(preset)* ``k``, LRs tried per stage. A search with no previous LR to start from (the
            first stage) tries more: a log grid of two LRs per decade over the range, then two GP proposals.
        explore_steps: ``tau'`` of the first stage. Derived from ``stage_steps`` when ``None``.
        search_ratio: *(preset)* ``None``: every stage's candidates run ``explore_steps`` steps (fixed
            windows: the search's share falls as stages grow); a number: ``tau'`` grows with ``tau`` so that
            ``k x tau' = search_ratio x tau`` (the paper's 1 spends half the budget on search).
        kappa: *(preset)* LCB exploration weight, ``mu - kappa * sigma``. The reference code's 1e6 is pure
            uncertainty sampling; a small value concentrates candidates near the optimum.
        choose: *(preset)* how a stage's LR is chosen among its candidates: ``"posterior"``, by the
            Gaussian-process posterior mean at the tried LRs, which discounts a single lucky forecast; or
            ``"forecast"``, by the observed forecasts (the reference code).
        tolerance: *(preset)* the stage keeps the *largest* LR whose score is within ``tolerance`` (relative,
            above ``loss_floor``) of the best score; ``0`` (default) keeps the best. A greedy stage-by-stage
            choice favours small LRs (short-horizon bias, Wu et al. 2018): a smaller LR lowers the loss at
            once by lowering the gradient noise, a gain the final decay phase brings anyway. Measured, a
            tolerance of 0.1 chose LRs that stalled the Transformer and hurt the noisy quadratic; the decay
            phase is what counters the bias by default (BENCHMARKS.md, ablations).
        first_tolerance: *(preset)* in the first stage (fresh weights, before any roll-back), the stage keeps the
            *smallest* LR whose own forecast is within ``first_tolerance`` (relative, above ``loss_floor``) of the
            best forecast that a neighbouring LR's forecast confirms (within the same tolerance: one lucky window
            is not a reference), when that LR is below the posterior's choice (``choose="posterior"`` only); ``0``
            keeps the posterior's choice. On fresh weights a short window is biased toward high LRs: the LR at the
            edge of stability drops the loss fastest for a few steps, then stalls (the Transformer's windows put
            0.002-0.03 on one plateau, where 0.001-0.0014 is best for the run). Forecasts within the error assumed
            of any forecast (``forecast_noise``, 10%) cannot be told apart, and among those the smallest LR is the
            safe one. It also keeps the GP's extrapolated edge from overruling the windows: the posterior chose LR
            2.0 on the noisy quadratic where 1.5-1.7 had the better forecasts, and the stage then had to be rolled
            back. Measured (bench harness, same seeds; docs/algorithm.md): the Transformer 1.742 -> 1.713 (3
            seeds), the quadratic's expected final loss 1.71x -> 1.52x the optimum (8 seeds), MNIST-1D 0.932 ->
            0.932 (16 seeds, within noise). The confirmed reference was measured later, on 24 seeds of MNIST-1D
            and of the quadratic (:func:`autolrs.choice.lowest_near_best`, docs/algorithm.md).
        hold_sigmas: *(preset)* while the previous kept stage was still making progress (``progress_sigmas``),
            a stage keeps the previous stage's LR (its first candidate, ``warm_start``) unless the chosen
            candidate's posterior mean beats it by more than this many standard deviations of their
            difference (``choose="posterior"`` only). Short windows favour smaller LRs by noise and by the
            short-horizon bias; without the hold the LR fell by the full trust region in almost every stage
            (BENCHMARKS.md, ablation ``autolrs-no-hold``). ``0`` always moves, as the paper.
        progress_sigmas: *(preset)* the hold applies only if the previous kept stage's loss was still
            falling at its end: the slope of its second half (over 8 block means) below ``-progress_sigmas``
            standard errors (:func:`autolrs.choice.progress_t`). A stage that settled at the level its LR
            allows has nothing to lose by moving: the forecasts choose freely. Stricter than the usual 2
            because successive losses are correlated, which makes the standard error optimistic.
        trust_region: *(preset)* a factor > 1: each stage after the first searches only within this factor
            of the previous stage's LR (clipped to the range), so that noise in short forecasts cannot swing
            the schedule by orders of magnitude from one stage to the next. ``None`` searches the whole
            range every stage, as the paper.
        warm_start: *(preset)* propose the previous stage's LR as the first candidate of the next stage (the
            best-informed guess); otherwise the first candidate is random, as in the reference code.
        decay_fraction: *(preset)* the last fraction of the budget decays the LR linearly from the last
            stage's LR to zero, without search (needs ``total_steps``). ``0`` ends on the last stage. The
            default 0.3: on the noisy quadratic 0.2 left 2.2x the optimal loss, 0.3 1.8x, 0.5 1.7x (16 seeds,
            live runs), while on MNIST-1D 0.5 cost accuracy (0.905 against 0.925 at 0.3).
        decay_shape: *(preset)* how the decay phase falls at the fraction ``x`` of it done: ``"linear"``,
            ``lr (1 - x)``, or ``"1-sqrt"``, ``lr (1 - sqrt(x))`` (the cooldown of Hägele et al., 2024: half
            the LR a quarter of the way in). ``"1-sqrt"`` keeps the LR lower for longer without taking steps
            from the stages. Measured against linear (bench harness, same seeds; docs/algorithm.md): the
            noisy quadratic's expected final loss 1.77x -> 1.62x the optimum (8 seeds), MNIST-1D unchanged
            (16 seeds, every seed within 0.002), the Transformer 0.006 worse on each of its 3 seeds. It
            helps one task and costs another, so the default stays linear.
        warmup_steps, warmup_lr: optional linear warmup from 0 to ``warmup_lr`` before the first stage;
            ``warmup_lr`` defaults to the geometric mean of the range.
        use_validation: observe validation losses (instead of training losses) once ``tau == tau_max``.
        val_points: validation evaluations per candidate in validation mode (paper: 16).
        loss_floor: the lowest value the loss can take (0 for cross-entropy or squared losses); forecasts
            never go below it. ``None`` for losses without a floor.
        max_extrapolation: *(preset)* a forecast may predict at most this many times the decrease
            observed during the candidate's own steps. Guards against extrapolating a short window far
            (the reference code forecast cross-entropies of -3.2 that way).
        forecast_noise: *(preset)* the error every forecast is assumed to carry at least: a standard
            deviation on the Gaussian process's log scale (0.1: 10% of the forecast's height above
            ``loss_floor``), added to the noise the GP fits. A handful of forecasts let the GP fit its noise
            to ~0 and interpolate them exactly; its posterior then counts any difference as certain, and the
            hold never holds (the Transformer's LR fell 2-3x a stage on differences of ~4%, within what batch
            noise moves a 10-step window). 0.1 is the smallest median forecast miss measured on any bench
            task; no forecast has earned more trust. Used with a ``loss_floor`` only (without one the
            objective has no relative scale); ``0`` lets the GP fit exactly, as the paper.
        divergence_factor: a candidate whose recent losses (their median) stay above
            ``factor * |start loss|`` beyond the stage's start loss, or any NaN/inf, stops at once and
            counts as worst.
        min_explore_steps: the shortest candidate worth forecasting; stages are never planned shorter.
        seed: seeds every random choice of the search.
    """

    min_lr: float
    max_lr: float
    total_steps: int | None = None
    preset: Literal["default", "paper"] = "default"
    stage_steps: int | None = None
    max_stage_steps: int | None = None
    candidates: int = PRESET_DEFAULT
    explore_steps: int | None = None
    search_ratio: float | None = PRESET_DEFAULT
    kappa: float = PRESET_DEFAULT
    choose: Literal["posterior", "forecast"] = PRESET_DEFAULT
    tolerance: float = PRESET_DEFAULT
    first_tolerance: float = PRESET_DEFAULT
    hold_sigmas: float = PRESET_DEFAULT
    progress_sigmas: float = PRESET_DEFAULT
    trust_region: float | None = PRESET_DEFAULT
    warm_start: bool = PRESET_DEFAULT
    decay_fraction: float = PRESET_DEFAULT
    decay_shape: Literal["linear", "1-sqrt"] = PRESET_DEFAULT
    warmup_steps: int = 0
    warmup_lr: float | None = None
    use_validation: bool = False
    val_points: int = 16
    loss_floor: float | None = 0.0
    max_extrapolation: float = PRESET_DEFAULT
    forecast_noise: float = PRESET_DEFAULT
    divergence_factor: float = 4.0
    min_explore_steps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, but got {self.preset!r}.")
        for name, value in PRESETS[self.preset].items():
            if getattr(self, name) is PRESET_DEFAULT:
                object.__setattr__(self, name, value)
        self._validate_options()
        self._resolve_sizes()
        self._validate_sizes()

    def _validate_options(self) -> None:
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
        _check_real("search_ratio", self.search_ratio, positive=True, allow_none=True)
        _check_real("kappa", self.kappa)
        if self.kappa < 0:
            raise ValueError(f"kappa must be >= 0, but got {self.kappa!r}.")
        if self.choose not in ("posterior", "forecast"):
            raise ValueError(f"choose must be 'posterior' or 'forecast', but got {self.choose!r}.")
        _check_real("tolerance", self.tolerance)
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 (0 keeps the best-scored LR), but got {self.tolerance!r}.")
        _check_real("first_tolerance", self.first_tolerance)
        if self.first_tolerance < 0:
            raise ValueError(f"first_tolerance must be >= 0 (0 keeps the posterior's choice in the first stage), "
                             f"but got {self.first_tolerance!r}.")
        for name in ("hold_sigmas", "progress_sigmas"):
            _check_real(name, getattr(self, name))
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (a number of standard deviations), but got "
                                 f"{getattr(self, name)!r}.")
        _check_real("trust_region", self.trust_region, positive=True, allow_none=True)
        if self.trust_region is not None and self.trust_region <= 1:
            raise ValueError(f"trust_region must be a factor > 1 (or None), but got {self.trust_region!r}.")
        if not isinstance(self.warm_start, bool):
            raise TypeError(f"warm_start must be a bool, but got {self.warm_start!r}.")
        _check_real("decay_fraction", self.decay_fraction)
        if not 0 <= self.decay_fraction < 1:
            raise ValueError(f"decay_fraction must be in [0, 1), but got {self.decay_fraction!r}.")
        if not isinstance(self.decay_shape, str):
            raise TypeError(f"decay_shape must be a str, one of {', '.join(map(repr, DECAY_SHAPES))}, but got "
                            f"{type(self.decay_shape).__name__}.")
        if self.decay_shape not in DECAY_SHAPES:
            raise ValueError(f"decay_shape must be one of {', '.join(map(repr, DECAY_SHAPES))}, but got "
                             f"{self.decay_shape!r}.")
        _check_int("warmup_steps", self.warmup_steps, minimum=0)
        _check_real("warmup_lr", self.warmup_lr, positive=True, allow_none=True)
        if not isinstance(self.use_validation, bool):
            raise TypeError(f"use_validation must be a bool, but got {self.use_validation!r}.")
        _check_int("val_points", self.val_points, minimum=2)
        _check_real("loss_floor", self.loss_floor, allow_none=True)
        _check_real("max_extrapolation", self.max_extrapolation, positive=True)
        _check_real("forecast_noise", self.forecast_noise)
        if self.forecast_noise < 0:
            raise ValueError(f"forecast_noise must be >= 0 (a standard deviation), but got {self.forecast_noise!r}.")
        _check_real("divergence_factor", self.divergence_factor, positive=True)
        if self.divergence_factor <= 1:
            raise ValueError(f"divergence_factor must be > 1, but got {self.divergence_factor!r}.")
        _check_int("min_explore_steps", self.min_explore_steps, minimum=3)
        _check_int("seed", self.seed, minimum=0)

    def _resolve_sizes(self) -> None:
        """Fill the derived sizes, so that a resolved config is complete plain data."""
        stage, max_stage = derive_stage_sizes(
            self.total_steps, self.candidates, self.warmup_steps, self.min_explore_steps, self.search_ratio,
            self.decay_steps,
        )
        if self.stage_steps is None:
            if self.max_stage_steps is not None:
                stage = min(stage, self.max_stage_steps)
            object.__setattr__(self, "stage_steps", stage)
        if self.max_stage_steps is None:
            object.__setattr__(self, "max_stage_steps", max(max_stage, cast(int, self.stage_steps)))  # set above
        if self.explore_steps is None:
            object.__setattr__(self, "explore_steps", derive_explore_steps(
                cast(int, self.stage_steps), self.candidates, self.min_explore_steps, self.search_ratio))
        if self.warmup_lr is None:
            object.__setattr__(self, "warmup_lr", math.sqrt(self.min_lr * self.max_lr))

    def _validate_sizes(self) -> None:
        # _resolve_sizes has filled every size: none is None from here on.
        if cast(int, self.max_stage_steps) < cast(int, self.stage_steps):
            raise ValueError(
                f"max_stage_steps (tau_max) must be >= stage_steps (tau), but got max_stage_steps="
                f"{self.max_stage_steps} < stage_steps={self.stage_steps}."
            )
        if cast(int, self.explore_steps) < self.min_explore_steps:
            raise ValueError(
                f"explore_steps (tau') must be >= min_explore_steps={self.min_explore_steps}: a shorter loss "
                f"series cannot be forecast, but got explore_steps={self.explore_steps} (stage_steps="
                f"{self.stage_steps}, candidates={self.candidates}). Raise stage_steps or explore_steps, "
                "or lower candidates."
            )
        if cast(int, self.explore_steps) > cast(int, self.stage_steps):
            raise ValueError(
                f"explore_steps (tau') must be <= stage_steps (tau): a candidate is a short trial of the stage, "
                f"but got explore_steps={self.explore_steps} > stage_steps={self.stage_steps}."
            )
        if self.total_steps is not None:
            first_stage = (self.warmup_steps + self.decay_steps
                           + smallest_stage(self.candidates, self.min_explore_steps))
            if self.total_steps < first_stage:
                raise ValueError(
                    f"total_steps={self.total_steps} is too small for one search: warmup ({self.warmup_steps}) "
                    f"+ decay ({self.decay_steps}) + {self.candidates} candidates x {self.min_explore_steps} "
                    f"steps + a kept stage needs at least {first_stage}. Raise total_steps or lower candidates."
                )

    @property
    def decay_steps(self) -> int:
        """Steps of the final decay phase: ``decay_fraction`` of the budget (0 without a budget)."""
        if self.total_steps is None:
            return 0
        return int(round(self.decay_fraction * self.total_steps))

    @property
    def search_noise(self) -> float:
        """The forecast error the GP assumes (``forecast_noise``); none without a ``loss_floor``, where the
        objective is the raw forecast, with no relative scale."""
        return self.forecast_noise if self.loss_floor is not None else 0.0

    @property
    def explore_ratio(self) -> float | None:
        """``tau' / tau`` kept as the stages grow (proportional windows), or None (fixed windows)."""
        return None if self.search_ratio is None else cast(int, self.explore_steps) / cast(int, self.stage_steps)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AutoLRSConfig":
        if not isinstance(data, dict):
            raise TypeError(f"Expected a dict of AutoLRSConfig fields, but got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown AutoLRSConfig fields {sorted(unknown)}; expected a subset of {sorted(known)}.")
        return cls(**data)
