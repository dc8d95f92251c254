"""Roll-backs: what a stage does when a candidate, its kept phase or the decay fails.

A mixin of :class:`~autolrs.controller.StageController`. Every failure restores S0 and goes on below half
the failed LR: the best other candidate of the stage if one is left, else a new search below the bound, else
one band step down; the run's bound falls only after a real divergence above ``min_lr``; at most
``MAX_ROLLBACKS`` per stage; the warning gives advice only when the failure shows it (docs/algorithm.md,
"Roll-backs"). The failure tests themselves are :mod:`autolrs.safety`.
"""

from __future__ import annotations

import warnings
from typing import cast

import numpy as np

from . import stages
from .controller_state import ControllerState
from .decision import LR_RTOL, MAX_ROLLBACKS, Decision
from .records import EventKind, StageRecord, event

__all__ = ["RollBack"]


class RollBack(ControllerState):
    """The roll-back rules of :class:`~autolrs.controller.StageController`."""

    def _retry(self, kind: EventKind, why: str, failed_lr: float, *, failure: str | None,
               persist: bool = True) -> Decision:
        """Something failed at ``failed_lr``: restore S0 and go on below half of it.

        The stage's other candidates were measured from the same S0, so the best one left below the new
        bound is kept without a new search. When none is left: after a divergence (``persist``) the stage is
        searched again below the bound; after lost progress it keeps ``failed_lr / trust_region`` (one band
        step down, 3x without a trust region) without a new search. The range never leaves
        ``[min_lr, max_lr]``: when even ``min_lr`` failed it is kept, with a warning. With ``persist`` a
        divergence above ``min_lr`` also lowers the run-wide bound (:meth:`_lower_run_bound`); a failure at
        ``min_lr``, or one that looks like batch noise, bounds its own stage only.

        ``failure`` is how it failed (:func:`~autolrs.safety.failure_kind`, ``"val_nan"``/``"val_inf"``, or
        None for lost progress); it decides the advice. The ``MAX_ROLLBACKS``-th roll-back of a stage keeps
        the lowest LR tried (below the new bound, at least ``min_lr``) for the rest of the stage, and from then
        on only a NaN/inf loss rolls it back again.
        """
        cfg, r = self.config, cast(StageRecord, self._record)  # a failure happens during a stage
        exhausted = failed_lr <= cfg.min_lr * (1 + LR_RTOL)
        self._rollbacks += 1
        self._hi = max(cfg.min_lr, min(self._hi, failed_lr / 2.0))
        if persist and not exhausted and failure != "noise":
            self._lower_run_bound(self._hi)
        if exhausted:
            why += self._advice_at_min_lr(failure)
        r["max_lr"] = self._hi
        if self._rollbacks >= MAX_ROLLBACKS:
            tried = [x["lr"] for x in r["candidates"]] + [d["lr"] for d in r["discarded"]]
            lr = max(cfg.min_lr, min([self._hi, *tried]))
            if self._rollbacks == MAX_ROLLBACKS:
                action = (f"rolled back {MAX_ROLLBACKS} times in this stage, the limit: keeping lr {lr:.3g} for the "
                          "rest of the stage, which only a NaN/inf loss rolls back from now on"
                          + self._advice_at_limit(failure, exhausted))
            else:
                action = f"past the limit of {MAX_ROLLBACKS} roll-backs (NaN/inf only): keeping lr {lr:.3g}"
            self._event(kind, f"autolrs stage {self._stage}: {why}; {action}")
            r.update({"lr": lr, "forecast": None, "trial_loss": None})
            return self._start_keep(lr, restore=True)
        self._event(kind, f"autolrs stage {self._stage}: {why}; going on with max_lr={self._hi:.3g}")
        if not exhausted:
            best = self._best(self._attempt_candidates())
            if best is not None:
                return self._keep_candidate(best)
            plan = self._plan_retry() if persist else None
            if plan is not None and self._hi > cfg.min_lr * (1 + LR_RTOL):
                self._attempt += 1
                r.update({"tau": plan[0], "explore_steps": plan[1]})
                return self._start_search(restore=True, snapshot=False)
        lr = cfg.min_lr if exhausted else max(cfg.min_lr, min(self._hi, failed_lr / (cfg.trust_region or 3.0)))
        self._event("no_search", f"no search: keeping lr={lr:.3g}", warn=False)
        r.update({"lr": lr, "forecast": None, "trial_loss": None})
        return self._start_keep(lr, restore=True)

    def _lower_run_bound(self, bound: float) -> None:
        """Lower the run-wide ``max_lr`` after a divergence above ``min_lr``: to ``bound``, never below a floor.

        A later stage recovers from a bound left too high: a candidate above its divergence point stops at
        once (a few steps lost) and the stage lowers its own bound. It never recovers from one set too low:
        the run-wide bound only falls and no stage searches above it. So one failure lowers it to half the
        failed LR, never below one trust band above ``min_lr`` (``min_lr x trust_region``, 3x without a trust
        region): the next stage can still compare LRs over that band, including the LR near ``min_lr`` that
        failed (it may have failed on batch noise; if not, it fails again there at the cost of one
        candidate). A failure at ``min_lr`` itself lowers nothing beyond its stage (:meth:`_retry`): it says
        nothing about higher LRs that the failures above it had not already said, and it once pinned the
        whole rest of a run to ``min_lr`` after one noisy window. Nor does a failure that looks like batch
        noise (finite losses falling back between spikes, :func:`~autolrs.safety.failure_kind`): it is no
        evidence about the LR, and four of them in one stage once took a run's ``max_lr`` from 1.0 to min_lr.
        """
        cfg = self.config
        floor = min(cfg.max_lr, cfg.min_lr * (cfg.trust_region or 3.0))
        self._max_lr = min(self._max_lr, max(bound, floor))

    def _describe(self, failure: str | None, losses: list[float]) -> str:
        """A parenthesised account of a failed series, for the messages."""
        threshold = self._threshold()
        if failure == "nonfinite":
            return " (the loss went NaN/inf)"
        if failure == "explosion":
            return f" (its loss rose above {threshold:.4g}, divergence_factor x the start loss, and stayed there)"
        if failure == "noise":
            median = float(np.median(losses[-5:]))
            return (f" (finite losses: the median of the last 5, {median:.4g}, is above {threshold:.4g} but they fell "
                    "back below it between spikes: likely batch noise)")
        return ""

    def _advice_at_min_lr(self, failure: str | None) -> str:
        """What to change when even ``min_lr`` failed, by how it failed: only what the failure shows."""
        cfg = self.config
        at = f"min_lr={cfg.min_lr:.3g}"
        if failure in ("nonfinite", "explosion"):
            return f"; {at} itself diverged: lower min_lr"
        if failure == "noise":
            return (f"; at {at} the losses stayed finite and fell back below the divergence threshold between spikes: "
                    f"batch noise, not divergence: raise divergence_factor (now {cfg.divergence_factor:g}) or "
                    "average the loss over more samples")
        if failure in ("val_nan", "val_inf"):
            return f"; {at} failed too: check val_fn"
        return f"; {at} is the lowest lr allowed"

    def _advice_at_limit(self, failure: str | None, exhausted: bool) -> str:
        """What to change when a stage reaches the roll-back limit above ``min_lr``: only for noise or val_fn
        (a real divergence above ``min_lr`` is handled: the bounds fall below it)."""
        if exhausted:
            return ""  # _advice_at_min_lr said it
        if failure == "noise":
            return (f"; the failure had finite losses that fell back between spikes: if it is batch noise, raise "
                    f"divergence_factor (now {self.config.divergence_factor:g}) or average the loss over more samples")
        if failure in ("val_nan", "val_inf"):
            return "; check val_fn"
        return ""

    def _event(self, kind: EventKind, message: str, *, warn: bool = True) -> None:
        """Record an event in the stage's record (and warn), once per stage: a stage that fails the same way
        again (NaN at min_lr past the roll-back limit) adds nothing new."""
        events = cast(StageRecord, self._record)["events"]  # events belong to the stage in progress
        if any(e["message"] == message for e in events):
            return
        events.append(event(kind, message))
        if warn:
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _plan_retry(self) -> tuple[int, int] | None:
        """``(tau, tau')`` of a new search of the current stage from S0, or None if none fits."""
        cfg = self.config
        remaining, k = self._remaining(), self._candidates() + 1  # +1: the retry may open with a grid
        r = cast(StageRecord, self._record)  # a retry plans the stage in progress
        n = r["explore_steps"]
        if remaining is None:
            return r["tau"], n
        if remaining < stages.smallest_stage(k, cfg.min_explore_steps):
            return None
        n = max(cfg.min_explore_steps, min(n, remaining // (2 * k)))
        return max(n, min(r["tau"], remaining - k * n)), n

