"""The candidate search of a stage: each candidate LR from S0 for tau' steps, its forecast, the choice.

A mixin of :class:`~autolrs.controller.StageController` (it reads and writes the controller's state): the
stage's candidates come from :class:`~autolrs.search.BayesianSearch` (an opening grid, then GP proposals),
each window's loss curve is forecast to the stage's end (:mod:`autolrs.forecast`), and the stage keeps the
candidate :func:`~autolrs.choice.choose` picks on the GP posterior. Failures go to
:class:`~autolrs.rollback.RollBack`. A run finished mid-search keeps the running candidate's branch or
restores S0 (:meth:`~autolrs.controller.StageController.finish`).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, cast

import numpy as np
import numpy.typing as npt

from .choice import choose, hold, lowest_near_best, objective
from .controller_state import ControllerState
from .decision import LR_RTOL, Decision, finite_or_none
from .forecast import forecast_loss
from .records import Candidate, EventKind, StageRecord, event
from .search import BayesianSearch

__all__ = ["CandidateSearch"]


def _stage_seed(seed: int, stage: int, attempt: int) -> int:
    """An independent, reproducible seed per stage and retry (no RNG state to save or restore)."""
    return int(np.random.SeedSequence([seed, stage, attempt]).generate_state(1)[0])


class CandidateSearch(ControllerState):
    """The ``explore`` phase of :class:`~autolrs.controller.StageController`."""

    def _warm_lr(self) -> float | None:
        """The previous stage's LR, proposed first (warm start), when it is a candidate of this search."""
        if not self.config.warm_start or self._attempt > 0 or self._previous_lr is None:
            return None
        return self._previous_lr if self._previous_lr <= self._hi * (1 + LR_RTOL) else None

    def _search_range(self) -> tuple[float, float]:
        """The search's LR range: ``[min_lr, bound]``, or with ``trust_region`` a band around the last LR.

        A retry after divergence searches the band just below its bound (the whole range below it without
        ``trust_region``).
        """
        cfg = self.config
        lo, hi = cfg.min_lr, self._hi
        if cfg.trust_region is None:
            return lo, hi
        if self._attempt > 0:
            return max(lo, hi / cfg.trust_region ** 2), hi
        if self._previous_lr is not None:
            band = (max(lo, self._previous_lr / cfg.trust_region), min(hi, self._previous_lr * cfg.trust_region))
            if band[1] > band[0] * (1 + LR_RTOL):
                return band
        return lo, hi

    def _start_search(self, *, restore: bool, snapshot: bool) -> Decision:
        cfg = self.config
        lo, hi = self._search_range()
        self._search = BayesianSearch(lo, hi, kappa=cfg.kappa, seed=_stage_seed(cfg.seed, self._stage, self._attempt),
                                      first_lr=self._warm_lr(), initial=self._grid(),
                                      noise=cfg.search_noise)
        cast(StageRecord, self._record).update({"min_lr": lo, "max_lr": hi})  # called during a stage only
        self.phase = "explore"
        return self._start_candidate(restore=restore, snapshot=snapshot)

    def _start_candidate(self, *, restore: bool, snapshot: bool = False) -> Decision:
        self.lr = cast(BayesianSearch, self._search).ask()  # _start_search made it
        self._candidate = {"lr": self.lr, "attempt": self._attempt, "steps": 0, "losses": [], "val_steps": [],
                           "val_losses": [], "forecast": None, "trial_loss": None, "diverged": False,
                           "failure": None}
        return Decision(self.lr, "explore", restore=restore, snapshot=snapshot)

    def _val_interval(self) -> int:
        return max(1, cast(StageRecord, self._record)["explore_steps"] // self.config.val_points)

    def _explore_step(self, loss: float, val_loss: float | None) -> Decision:
        # A search is running: its stage and candidate exist; the candidate's losses are raw floats until it closes.
        c, r = cast(Candidate, self._candidate), cast(StageRecord, self._record)
        losses = cast("list[float]", c["losses"])
        c["steps"] += 1
        c["losses"].append(loss)
        if val_loss is not None:
            c["val_steps"].append(c["steps"])
            c["val_losses"].append(val_loss)
        if not self._tail and c["steps"] == 1 and math.isfinite(loss):
            # No kept loss yet (first stage, no warmup): every candidate's first loss is taken at S0,
            # so their mean estimates the start loss.
            firsts = [x["losses"][0] for x in r["candidates"] if x["losses"] and x["losses"][0] is not None]
            self._start_loss = float(np.mean(firsts + [loss]))
            r["start_loss"] = self._start_loss
        failure = None
        if self._diverged(losses):
            failure = self._failure_kind(losses)
        elif val_loss is not None and not math.isfinite(val_loss):
            failure = "val_nan" if math.isnan(val_loss) else "val_inf"  # the training losses were finite
        if failure is None and c["steps"] < r["explore_steps"]:
            return Decision(self.lr, "explore")
        self._close_candidate(failure)
        if len(self._attempt_candidates()) < self._candidates():
            return self._start_candidate(restore=True)
        return self._choose()

    def _close_candidate(self, failure: str | None) -> None:
        """Forecast the candidate and tell the search; ``failure``: how it failed (:func:`failure_kind`, or
        ``"val_nan"``/``"val_inf"``: ``val_fn`` returned NaN/inf), None if it did not."""
        # Called when a running candidate ends: it and its stage exist, its losses are raw floats.
        c, cfg, r = cast(Candidate, self._candidate), self.config, cast(StageRecord, self._record)
        failed = failure is not None
        series: list[float]
        steps: list[int] | None
        kind: Literal["train", "val"]
        horizon: float
        if failed:
            c["diverged"], c["failure"] = True, failure
        else:
            if r["objective"] == "val":
                series, steps, kind, horizon = cast("list[float]", c["val_losses"]), c["val_steps"], "val", r["tau"]
            else:
                # The kept stage reports the mean of its last tau' losses, centred (tau' - 1) / 2 steps
                # before its end; index 0 is the loss of the candidate's first step.
                n = min(r["explore_steps"], r["tau"])
                series, steps, kind = cast("list[float]", c["losses"]), None, "train"
                horizon = r["tau"] - 1 - (n - 1) / 2
            forecast = forecast_loss(series, horizon, steps=steps, kind=kind, floor=cfg.loss_floor,
                                     max_extrapolation=cfg.max_extrapolation)
            c["forecast"], c["trial_loss"] = forecast.value, forecast.observed_end
        # Not failed: its forecast was just set (a float). The search began with the stage.
        value = math.inf if failed else objective(cast(float, c["forecast"]), self._start_loss, cfg.loss_floor)
        cast(BayesianSearch, self._search).tell(c["lr"], value)
        c["losses"] = [finite_or_none(x) for x in cast("list[float]", c["losses"])]
        c["val_losses"] = [finite_or_none(x) for x in cast("list[float]", c["val_losses"])]
        r["candidates"].append(c)
        self._candidate = None

    def _attempt_candidates(self) -> list[Candidate]:
        return [x for x in cast(StageRecord, self._record)["candidates"] if x["attempt"] == self._attempt]

    def _best(self, candidates: list[Candidate]) -> Candidate | None:
        """The stage's choice among candidates that did not diverge and lie in the current range.

        Each gets a score on the objective's scale: the GP posterior mean at its LR (``choose="posterior"``:
        its white-noise term shrinks a lucky forecast toward its neighbours) or its own forecast
        (``"forecast"``, the reference code); :func:`~autolrs.choice.choose` takes the largest LR within
        ``tolerance`` of the best; on the posterior, :func:`~autolrs.choice.hold` keeps the previous stage's
        LR unless that choice is clearly better (``hold_sigmas``, ``progress_sigmas``). In the first stage
        :func:`~autolrs.choice.lowest_near_best` lowers the choice to the smallest LR whose own forecast is
        within ``first_tolerance`` of the best (fresh weights bias short windows toward high LRs).

        In the first stage, a candidate forecast to end the stage no lower than its start loss failed by its
        own measure: on fresh weights every workable LR lowers the loss. While another is forecast to make
        progress it is not chosen, whatever its score. The posterior smooths it toward its neighbours and
        ``tolerance`` takes the largest LR near the best score, so together they could keep an LR whose own
        window went up: MNIST-1D with ``tolerance=0.1`` kept LR 1.0 (forecast 2.62 from a start of 2.30, its
        neighbour 0.36 forecast 1.83), killed the network and ended at chance; no roll-back saw it, its trial
        had gained nothing to give back. Later stages are left alone: near convergence a forecast wanders
        above the start as often as below, and setting such LRs aside would undo the hold.
        """
        cfg = self.config
        valid = [x for x in candidates if not x["diverged"] and x["lr"] <= self._hi * (1 + 1e-9)]
        start, r = self._start_loss, cast(StageRecord, self._record)  # called during a stage only
        # The start is a training loss: a validation forecast is on another footing.
        if start is not None and math.isfinite(start) and r["previous_lr"] is None and r["objective"] == "train":
            progress = [x for x in valid if cast(float, x["forecast"]) < start]  # not diverged: forecast
            valid = progress or valid
        if not valid:
            return None
        lrs, log_scale = [x["lr"] for x in valid], cfg.loss_floor is not None
        # Each candidate's own score; a candidate that did not diverge was forecast when it closed (a float).
        own = [objective(cast(float, x["forecast"]), start, cfg.loss_floor) for x in valid]
        if cfg.choose != "posterior":
            return valid[choose(lrs, own, cfg.tolerance, log_scale=log_scale)]
        scores: npt.NDArray[np.float64]
        search = cast(BayesianSearch, self._search)  # made when the stage's search began
        search.fit()
        scores, cov = search.posterior([search.to_unit(lr) for lr in lrs], return_cov=True)
        index = choose(lrs, scores, cfg.tolerance, log_scale=log_scale)
        if r["previous_lr"] is None and self._rollbacks == 0:
            # Fresh weights: the windows' bias toward high LRs (first_tolerance). After a roll-back the LRs
            # that failed are out of range and the rest barely moved: their plateau is one of no progress.
            at_start = None if start is None else objective(start, start, cfg.loss_floor)
            index = lowest_near_best(lrs, own, index, cfg.first_tolerance, log_scale=log_scale, start=at_start)
        previous = self._held_candidate(lrs)
        return valid[index if previous is None else hold(previous, index, scores, cov, cfg.hold_sigmas)]

    def _held_candidate(self, lrs: list[float]) -> int | None:
        """The index of the previous stage's LR among ``lrs`` if the hold applies: it is this search's warm
        start and the last kept stage was still clearly making progress (``progress_sigmas``)."""
        warm = self._warm_lr()
        kept = [r for r in self.history if r.get("progress_t") is not None]
        if warm is None or not kept or cast(float, kept[-1]["progress_t"]) > -self.config.progress_sigmas:
            return None
        return next((i for i, lr in enumerate(lrs) if abs(lr - warm) <= LR_RTOL * warm), None)

    def _choose(self) -> Decision:
        current = self._attempt_candidates()
        best = self._best(current)
        if best is not None:
            return self._keep_candidate(best)
        lowest = min(current, key=lambda x: x["lr"])
        on_val = sorted((x for x in current if str(x.get("failure")).startswith("val_")), key=lambda x: x["lr"])
        if on_val:
            # A NaN validation loss after finite training losses: the weights turned NaN at the last step, or
            # val_fn fails. Either way it is val_fn that returned it, not the loss that diverged.
            what = "NaN" if any(x["failure"] == "val_nan" for x in on_val) else "inf"
            others = f" and at {len(on_val) - 1} higher lrs" if len(on_val) > 1 else ""
            rest = len(current) - len(on_val)
            why = (f"val_fn returned {what} at lr {on_val[0]['lr']:.3g}{others} while the training losses stayed "
                   f"finite (all {len(current)} candidates failed"
                   + (f", {rest} of them by a diverging training loss)" if rest else ")"))
        else:
            tags: dict[str | None, str] = {
                "nonfinite": ": NaN/inf", "explosion": ": its loss rose above the threshold and stayed there",
                "noise": ": finite losses falling back between spikes, likely batch noise"}
            tag = tags.get(lowest.get("failure"), "")
            why = f"all {len(current)} candidates diverged (lowest lr {lowest['lr']:.3g}{tag})"
        kind: EventKind = "val_fn_failed" if on_val else "all_diverged"
        return self._retry(kind, why, lowest["lr"], failure=lowest.get("failure"))

    def _keep_candidate(self, candidate: Candidate) -> Decision:
        cast(StageRecord, self._record).update(  # called during a stage only
            {"lr": candidate["lr"], "forecast": candidate["forecast"], "trial_loss": candidate["trial_loss"]})
        return self._start_keep(candidate["lr"], restore=True)

    # -- a run that finishes mid-search ------------------------------------------------------------
    def _branch_made_progress(self) -> bool:
        """Whether the running candidate's last losses (median of up to 5) are below the stage's start."""
        c = cast(Candidate, self._candidate)  # training losses, the start loss's own kind (also in a validation stage)
        start = self._start_loss if self._start_loss is not None else (c["losses"][0] if c["losses"] else None)
        recent = cast("list[float]", c["losses"][-5:])  # a running candidate's losses are raw floats
        if start is None or not recent or not all(math.isfinite(x) for x in recent):
            return False
        return float(np.median(recent)) < start

    def _finish_search(self, restore: bool) -> None:
        c, r = cast(Candidate, self._candidate), cast(StageRecord, self._record)  # called mid-search only
        if not restore:
            # The branch becomes the kept trajectory: its steps count as kept.
            self.kept_steps += c["steps"]
            message = (f"autolrs: finished during the search of stage {self._stage}: kept the running candidate's "
                       f"branch (lr {c['lr']:.3g}, {c['steps']} steps, its loss below the stage's start), not the "
                       "stage snapshot; the LR was not chosen by a finished search")
        else:
            done = [x for x in self._attempt_candidates() if not x["diverged"] and x["forecast"] is not None]
            best = self._best(done) if done else None
            self.lr = best["lr"] if best is not None else (self._previous_lr or self.lr)
            where = f"step {r['start_step']}"
            if self.kept_steps == 0:
                where = "the initial weights: no step of this run is kept"
                if self.config.total_steps is None:
                    where += "; give total_steps so that autolrs plans the run and ends on a kept stage"
            message = (f"autolrs: finished during the search of stage {self._stage}: the running candidate made no "
                       f"progress, so the model is restored to the stage snapshot, at {where}; lr set to "
                       f"{self.lr:.3g}")
        r["events"].append(event("stopped_mid_search", message))
        warnings.warn(message, UserWarning, stacklevel=4)
