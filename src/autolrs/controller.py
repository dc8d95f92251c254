"""The AutoLRS stage state machine: losses in, decisions out. No framework import.

Notation (docs/algorithm.md): a stage keeps ``tau`` steps at one LR; before them, ``k`` candidate LRs each run
``tau'`` steps from the stage snapshot S0. Phases, in order:

    warmup   linear LR warmup, not searched (optional)
    explore  candidate i of the stage runs from S0; ends after tau' steps or at once on divergence
    keep     the chosen LR runs tau steps from S0: the kept trajectory
    decay    the last ``decay_fraction`` of the budget: the LR falls linearly to zero, no search
    done     the step budget is spent; the model is on a kept state

After every optimizer step the driver reports the loss of that step to :meth:`StageController.step`, which
returns the :class:`Decision` for the *next* step. The driver carries it out in this order: restore S0
(``restore``), save the current state as S0 (``snapshot``), set ``lr``. The controller alone decides; it
keeps no reference to models or tensors, and its whole state is plain data (:meth:`state_dict`). The
arithmetic of the stage plan is :mod:`autolrs.stages`, the choice rule :mod:`autolrs.choice`, the failure
tests :mod:`autolrs.safety`.
"""

from __future__ import annotations

import copy
import math
import warnings
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import stages
from .choice import choose, objective
from .config import AutoLRSConfig
from .controller_state import check_controller_state
from .forecast import forecast_loss
from .records import EventKind, event
from .safety import divergence_threshold, diverged, failure_kind, lost_progress
from .search import BayesianSearch

__all__ = ["Decision", "Phase", "StageController", "STATE_VERSION"]

Phase = Literal["warmup", "explore", "keep", "decay", "done"]
STATE_VERSION = 4  # 4: events are {kind, message}; a version-3 state is upgraded on load
# The loss a stage starts from is the mean of the last kept losses: at least _TAIL of them and two
# candidate windows' worth (as precise as the levels it is compared with); at most _TAIL_MAX are kept.
_TAIL = 10
_TAIL_MAX = 256
# A stage is rolled back to its snapshot (all candidates diverged, the kept trajectory diverged or lost its
# progress, the decay diverged) at most this many times. The last roll-back keeps the lowest LR tried, and
# from then on only a NaN/inf loss rolls the stage back (a non-finite state is never kept): batch noise taken
# for divergence once rolled one stage back 142 times in a row (total_steps=None, chi-square losses).
_MAX_ROLLBACKS = 3
# Relative tolerance of LR comparisons (an LR "at" a bound).
_LR_RTOL = 1e-4


@dataclass(frozen=True)
class Decision:
    """What the driver does before the next optimizer step.

    Attributes:
        lr: the LR of the next step (the searched LR; a driver scales it per param group).
        phase: the phase the next step belongs to.
        restore: restore the stage snapshot S0 first (a candidate ended, or the search did).
        snapshot: then save the current state as the new S0 (a stage starts).
        done: the budget is spent; no further step is expected.
    """

    lr: float
    phase: Phase
    restore: bool = False
    snapshot: bool = False
    done: bool = False


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _stage_seed(seed: int, stage: int, attempt: int) -> int:
    """An independent, reproducible seed per stage and retry (no RNG state to save or restore)."""
    return int(np.random.SeedSequence([seed, stage, attempt]).generate_state(1)[0])


class StageController:
    """Decides every LR of an AutoLRS run from the losses it is told.

    Args:
        config: a validated :class:`AutoLRSConfig`.

    Example:
        >>> ctrl = StageController(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=600, seed=0))
        >>> decision = ctrl.begin()          # apply before the first step: snapshot + first candidate
        >>> decision.phase, decision.snapshot
        ('explore', True)
        >>> while not decision.done:
        ...     loss = 1.0 / (1 + ctrl.steps_taken * decision.lr)   # stands for a training step
        ...     decision = ctrl.step(loss)
        >>> ctrl.steps_taken
        600
    """

    def __init__(self, config: AutoLRSConfig) -> None:
        if not isinstance(config, AutoLRSConfig):
            raise TypeError(f"Expected an AutoLRSConfig, but got {type(config).__name__}.")
        self.config = config
        self.steps_taken = 0
        self.kept_steps = 0
        self.phase: Phase = "warmup"
        self.lr = config.warmup_lr
        self.history: list[dict] = []
        self.begun = False
        # Upper bounds of the search: for the run (lowered when an LR diverges) and for the current stage
        # (lowered further when a kept stage loses its progress). Never below min_lr.
        self._max_lr = config.max_lr
        self._hi = config.max_lr
        self._stage = 0
        self._tau_next = config.stage_steps
        self._attempt = 0
        self._rollbacks = 0                  # roll-backs of the stage in progress (at most _MAX_ROLLBACKS)
        self._record: dict | None = None     # the stage in progress
        self._candidate: dict | None = None  # the candidate in progress
        self._keep_losses: list[float] = []
        self._tail: list[float] = []         # last kept losses: the start loss of the next stage
        self._start_loss: float | None = None
        self._previous_lr: float | None = None
        self._search: BayesianSearch | None = None

    # -- public API --------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.phase == "done"

    @property
    def stable_end(self) -> int | None:
        """The step at which the decay phase starts (where the stages end); None without a budget."""
        if self.config.total_steps is None:
            return None
        return self.config.total_steps - self.config.decay_steps

    @property
    def expects_validation(self) -> bool:
        """Whether the next :meth:`step` must carry ``val_loss`` (validation mode, at this step)."""
        if self._record is None or self._record["objective"] != "val":
            return False
        if self.phase == "explore":
            return (self._candidate["steps"] + 1) % self._val_interval() == 0
        if self.phase == "keep":
            return self._record["kept_steps"] + 1 == self._record["tau"]
        return False

    def begin(self) -> Decision:
        """The decision to apply before the first optimizer step."""
        if self.begun:
            raise ValueError("begin() was already called; call step(loss) after each optimizer step.")
        self.begun = True
        if self.config.warmup_steps > 0:
            self.lr = self._warmup_lr(0)
            return Decision(self.lr, "warmup")
        return self._begin_stage()

    def step(self, loss: float, val_loss: float | None = None) -> Decision:
        """Report the loss of the optimizer step just taken; returns the decision for the next one.

        Args:
            loss: that step's training loss (NaN/inf mean divergence).
            val_loss: the validation loss after that step, required when :attr:`expects_validation`.
        """
        if not self.begun:
            raise ValueError("Call begin() and apply its decision before the first step().")
        if self.done:
            raise ValueError(
                f"step() was called after the run finished ({self.steps_taken} steps taken, budget "
                f"{self.config.total_steps}); stop the loop when `done` is true."
            )
        if isinstance(loss, bool) or not isinstance(loss, (int, float)):
            raise TypeError(f"loss must be a real number, but got {loss!r} of type {type(loss).__name__}.")
        if not self.expects_validation:
            val_loss = None  # not asked for at this step: not an observation
        else:
            if val_loss is None:
                raise ValueError("This step needs val_loss (validation mode): pass step(loss, val_loss=...).")
            if isinstance(val_loss, bool) or not isinstance(val_loss, (int, float)):
                raise TypeError(f"val_loss must be a real number, but got {val_loss!r}.")
            val_loss = float(val_loss)
        loss = float(loss)
        self._check_loss(loss, val_loss)  # raises before anything changes
        self.steps_taken += 1
        if self.phase == "warmup":
            decision = self._warmup_step(loss)
        elif self.phase == "explore":
            decision = self._explore_step(loss, val_loss)
        elif self.phase == "keep":
            decision = self._keep_step(loss, val_loss)
        else:
            decision = self._decay_step(loss)
        return self._check_budget(decision)

    def finish(self) -> Decision:
        """End the run now; the returned decision leaves the model on the best trained state it has.

        Outside a search that is the live model. Mid-search there are two: the stage snapshot S0 and the
        running candidate's branch. The branch is kept when its recent losses are below S0's (training it
        was progress, e.g. a run without a budget stopped in its first search, whose S0 is the initial
        weights), else S0 is restored and the LR set to the best candidate's so far. Either way a warning
        says which, since the model is not on a trajectory autolrs chose.
        """
        if self.done:
            return Decision(self.lr, "done", done=True)
        restore = False
        if self.phase == "explore":
            restore = not self._branch_made_progress()
            self._finish_search(restore)
        if self._record is not None:
            message = f"run finished at step {self.steps_taken} during {self.phase}"
            self._record["events"].append(event("stopped", message))
            self._close_stage()
        self.phase = "done"
        return Decision(self.lr, "done", restore=restore, done=True)

    def _branch_made_progress(self) -> bool:
        """Whether the running candidate's last losses (median of up to 5) are below the stage's start."""
        c = self._candidate  # training losses, the start loss's own kind (also in a validation stage)
        start = self._start_loss if self._start_loss is not None else (c["losses"][0] if c["losses"] else None)
        recent = c["losses"][-5:]
        if start is None or not recent or not all(math.isfinite(x) for x in recent):
            return False
        return float(np.median(recent)) < start

    def _finish_search(self, restore: bool) -> None:
        c, r = self._candidate, self._record
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

    def fingerprint(self) -> int:
        """A 32-bit checksum of the state that decides the next steps (step counts, phase, LR, bounds, stage).

        Replicas of one run (one per rank under torch.distributed) fed the same losses have the same
        fingerprint; comparing it exposes a replica that decided otherwise. Cheap: a few scalars, no history.
        """
        text = (f"{self.steps_taken}|{self.kept_steps}|{self.phase}|{self.lr!r}|{self._stage}|{self._attempt}|"
                f"{len(self.history)}|{self._max_lr!r}|{self._hi!r}|{self._tau_next}|{self._rollbacks}")
        return zlib.crc32(text.encode())

    @property
    def decision(self) -> Decision:
        """The decision in force now (what the next step runs with)."""
        return Decision(self.lr, self.phase, done=self.done)

    # -- input checks ------------------------------------------------------------------------------
    def _check_loss(self, loss: float, val_loss: float | None) -> None:
        """Raise on a loss the run cannot go on from; called before :meth:`step` changes anything."""
        floor = self.config.loss_floor
        for name, value in (("loss", loss), ("validation loss", val_loss)):
            if floor is not None and value is not None and math.isfinite(value) and value < floor:
                # Forecasts are clamped at the floor: below it every candidate forecasts the floor, the
                # search sees no difference between LRs and chooses blindly in every stage.
                raise ValueError(
                    f"autolrs: the {name} {value!r} at step {self.steps_taken + 1} is below loss_floor={floor!r}. "
                    "Forecasts never go below the floor, so every candidate would look alike and the LR search "
                    f"would be blind. For a loss that can go below {floor!r} (a negative log-likelihood, a "
                    "shifted or regularised loss), pass loss_floor=None; otherwise set loss_floor to the "
                    "loss's true lower bound."
                )
        if not math.isfinite(loss) and self._at_new_snapshot():
            what = "NaN" if math.isnan(loss) else "inf"
            if self.steps_taken == 0:
                where = "the first loss of the run, at the initial weights"
            else:
                where = (f"step {self.steps_taken + 1}, the first loss of stage {self._stage} at its snapshot; "
                         "if the weights themselves are not finite, the optimizer step before the snapshot "
                         "made them so")
            raise ValueError(
                f"autolrs: the loss is {what} at the snapshot before any LR was tried; check the data and the loss "
                f"function ({where}). Every candidate restarts from this snapshot: no LR can recover from it."
            )

    def _at_new_snapshot(self) -> bool:
        """Whether the next loss is the first one measured at a new snapshot S0.

        The loss a step reports is computed before that step's update: the first loss after a snapshot is
        S0's own, before the stage's LRs have acted. Those are the run's first loss (the initial weights) and
        the first loss of each stage's first candidate (or of a phase that starts from a new snapshot without
        a search: the decay, a range collapsed to min_lr). A later candidate's first loss is S0's too, but S0
        was then already seen finite: a NaN there is that batch's, and counts as that candidate diverging.
        """
        r = self._record
        if self.steps_taken == 0:
            return True
        if r is None or self.phase == "warmup":
            return False
        if self.phase == "explore":
            return self._candidate["steps"] == 0 and not r["candidates"]
        return r["kept_steps"] == 0 and not r["candidates"] and not r["discarded"]

    # -- warmup ------------------------------------------------------------------------------------
    def _warmup_lr(self, step: int) -> float:
        return self.config.warmup_lr * (step + 1) / self.config.warmup_steps

    def _warmup_step(self, loss: float) -> Decision:
        self.kept_steps += 1
        self._push_tail(loss)
        if self.steps_taken >= self.config.warmup_steps:
            return self._begin_stage()
        self.lr = self._warmup_lr(self.steps_taken)
        return Decision(self.lr, "warmup")

    # -- stage plan --------------------------------------------------------------------------------
    def _remaining(self) -> int | None:
        """Steps left in the stages' span (before the decay phase); None without a budget."""
        return None if self.stable_end is None else self.stable_end - self.steps_taken

    def _explore_length(self, tau: int) -> int:
        cfg = self.config
        return stages.explore_length(tau, cfg.explore_steps, cfg.stage_steps, cfg.search_ratio,
                                     cfg.min_explore_steps)

    def _grid(self) -> list[float]:
        """The opening design of a search with no previous LR to start from: a log grid over the range
        (two LRs per decade, ends included), so that no decade goes untried; a random first point and a
        few GP proposals can miss the good one. None for the paper preset."""
        if self.config.preset == "paper" or self._warm_lr() is not None:
            return []
        return stages.opening_grid(*self._search_range())

    def _candidates(self) -> int:
        """``k`` of the current search: the grid and two GP proposals after it, where there is a grid."""
        grid = self._grid()
        return max(self.config.candidates, len(grid) + 2) if grid else self.config.candidates

    def _begin_stage(self) -> Decision:
        cfg = self.config
        span = max(_TAIL, 2 * self._explore_length(self._tau_next))
        self._start_loss = float(np.mean(self._tail[-span:])) if self._tail else None
        self._keep_losses = []
        self._hi = self._max_lr
        self._attempt = 0
        self._rollbacks = 0
        plan = stages.plan_stage(self._remaining(), self._tau_next, self._explore_length(self._tau_next),
                                 self._candidates(), cfg.min_explore_steps)
        if plan is None:
            return self._begin_decay()
        objective_kind = "val" if cfg.use_validation and self._tau_next >= cfg.max_stage_steps else "train"
        self._record = self._new_record("search", objective_kind)
        tau, n = plan
        if self._hi <= cfg.min_lr * (1 + _LR_RTOL):
            # Every LR above min_lr diverged earlier in the run: nothing left to search.
            self._record["events"].append(
                event("range_collapsed", "search range collapsed to min_lr after divergence: keeping min_lr"))
            self._record.update(tau=tau + self._candidates() * n, lr=cfg.min_lr)
            return self._start_keep(cfg.min_lr, restore=False, snapshot=True)
        self._record.update(tau=tau, explore_steps=n)
        return self._start_search(restore=False, snapshot=True)

    def _new_record(self, kind: str, objective_kind: str) -> dict:
        return {
            "stage": self._stage, "kind": kind, "start_step": self.steps_taken, "tau": 0, "explore_steps": 0,
            "objective": objective_kind, "min_lr": self.config.min_lr, "max_lr": self._hi,
            "start_loss": self._start_loss, "previous_lr": self._previous_lr, "candidates": [], "lr": None,
            "forecast": None, "trial_loss": None, "keep_start_step": None, "kept_steps": 0, "loss_reached": None,
            "discarded": [], "events": [],
        }

    # -- search ------------------------------------------------------------------------------------
    def _warm_lr(self) -> float | None:
        """The previous stage's LR, proposed first (warm start), when it is a candidate of this search."""
        if not self.config.warm_start or self._attempt > 0 or self._previous_lr is None:
            return None
        return self._previous_lr if self._previous_lr <= self._hi * (1 + _LR_RTOL) else None

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
            if band[1] > band[0] * (1 + _LR_RTOL):
                return band
        return lo, hi

    def _start_search(self, *, restore: bool, snapshot: bool) -> Decision:
        cfg = self.config
        lo, hi = self._search_range()
        self._search = BayesianSearch(lo, hi, kappa=cfg.kappa, seed=_stage_seed(cfg.seed, self._stage, self._attempt),
                                      first_lr=self._warm_lr(), initial=self._grid())
        self._record.update(min_lr=lo, max_lr=hi)
        self.phase = "explore"
        return self._start_candidate(restore=restore, snapshot=snapshot)

    def _start_candidate(self, *, restore: bool, snapshot: bool = False) -> Decision:
        self.lr = self._search.ask()
        self._candidate = {"lr": self.lr, "attempt": self._attempt, "steps": 0, "losses": [], "val_steps": [],
                           "val_losses": [], "forecast": None, "trial_loss": None, "diverged": False,
                           "failure": None}
        return Decision(self.lr, "explore", restore=restore, snapshot=snapshot)

    def _val_interval(self) -> int:
        return max(1, self._record["explore_steps"] // self.config.val_points)

    def _explore_step(self, loss: float, val_loss: float | None) -> Decision:
        c = self._candidate
        c["steps"] += 1
        c["losses"].append(loss)
        if val_loss is not None:
            c["val_steps"].append(c["steps"])
            c["val_losses"].append(val_loss)
        if not self._tail and c["steps"] == 1 and math.isfinite(loss):
            # No kept loss yet (first stage, no warmup): every candidate's first loss is taken at S0,
            # so their mean estimates the start loss.
            firsts = [x["losses"][0] for x in self._record["candidates"] if x["losses"] and x["losses"][0] is not None]
            self._start_loss = float(np.mean(firsts + [loss]))
            self._record["start_loss"] = self._start_loss
        failure = None
        if self._diverged(c["losses"]):
            failure = self._failure_kind(c["losses"])
        elif val_loss is not None and not math.isfinite(val_loss):
            failure = "val_nan" if math.isnan(val_loss) else "val_inf"  # the training losses were finite
        if failure is None and c["steps"] < self._record["explore_steps"]:
            return Decision(self.lr, "explore")
        self._close_candidate(failure)
        if len(self._attempt_candidates()) < self._candidates():
            return self._start_candidate(restore=True)
        return self._choose()

    def _close_candidate(self, failure: str | None) -> None:
        """Forecast the candidate and tell the search; ``failure``: how it failed (:func:`failure_kind`, or
        ``"val_nan"``/``"val_inf"``: ``val_fn`` returned NaN/inf), None if it did not."""
        c, cfg, r = self._candidate, self.config, self._record
        failed = failure is not None
        if failed:
            c["diverged"], c["failure"] = True, failure
        else:
            if r["objective"] == "val":
                series, steps, kind, horizon = c["val_losses"], c["val_steps"], "val", r["tau"]
            else:
                # The kept stage reports the mean of its last tau' losses, centred (tau' - 1) / 2 steps
                # before its end; index 0 is the loss of the candidate's first step.
                n = min(r["explore_steps"], r["tau"])
                series, steps, kind, horizon = c["losses"], None, "train", r["tau"] - 1 - (n - 1) / 2
            forecast = forecast_loss(series, horizon, steps=steps, kind=kind, floor=cfg.loss_floor,
                                     max_extrapolation=cfg.max_extrapolation)
            c["forecast"], c["trial_loss"] = forecast.value, forecast.observed_end
        value = math.inf if failed else objective(c["forecast"], self._start_loss, cfg.loss_floor)
        self._search.tell(c["lr"], value)
        c["losses"] = [_finite_or_none(x) for x in c["losses"]]
        c["val_losses"] = [_finite_or_none(x) for x in c["val_losses"]]
        r["candidates"].append(c)
        self._candidate = None

    def _attempt_candidates(self) -> list[dict]:
        return [x for x in self._record["candidates"] if x["attempt"] == self._attempt]

    def _best(self, candidates: list[dict]) -> dict | None:
        """The stage's choice among candidates that did not diverge and lie in the current range.

        Each gets a score on the objective's scale: the GP posterior mean at its LR (``choose="posterior"``:
        its white-noise term shrinks a lucky forecast toward its neighbours) or its own forecast
        (``"forecast"``, the reference code); :func:`~autolrs.choice.choose` takes the largest LR within
        ``tolerance`` of the best.
        """
        cfg = self.config
        valid = [x for x in candidates if not x["diverged"] and x["lr"] <= self._hi * (1 + 1e-9)]
        if not valid:
            return None
        if cfg.choose == "posterior":
            scores = self._search.posterior([self._search.to_unit(x["lr"]) for x in valid])[0]
        else:
            scores = [objective(x["forecast"], self._start_loss, cfg.loss_floor) for x in valid]
        index = choose([x["lr"] for x in valid], scores, cfg.tolerance, log_scale=cfg.loss_floor is not None)
        return valid[index]

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
            tags = {"nonfinite": ": NaN/inf", "explosion": ": its loss rose above the threshold and stayed there",
                    "noise": ": finite losses falling back between spikes, likely batch noise"}
            tag = tags.get(lowest.get("failure"), "")
            why = f"all {len(current)} candidates diverged (lowest lr {lowest['lr']:.3g}{tag})"
        kind = "val_fn_failed" if on_val else "all_diverged"
        return self._retry(kind, why, lowest["lr"], failure=lowest.get("failure"))

    def _keep_candidate(self, candidate: dict) -> Decision:
        self._record.update(lr=candidate["lr"], forecast=candidate["forecast"], trial_loss=candidate["trial_loss"])
        return self._start_keep(candidate["lr"], restore=True)

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
        None for lost progress); it decides the advice. The ``_MAX_ROLLBACKS``-th roll-back of a stage keeps
        the lowest LR tried (below the new bound, at least ``min_lr``) for the rest of the stage, and from then
        on only a NaN/inf loss rolls it back again.
        """
        cfg, r = self.config, self._record
        exhausted = failed_lr <= cfg.min_lr * (1 + _LR_RTOL)
        self._rollbacks += 1
        self._hi = max(cfg.min_lr, min(self._hi, failed_lr / 2.0))
        if persist and not exhausted and failure != "noise":
            self._lower_run_bound(self._hi)
        if exhausted:
            why += self._advice_at_min_lr(failure)
        r["max_lr"] = self._hi
        if self._rollbacks >= _MAX_ROLLBACKS:
            tried = [x["lr"] for x in r["candidates"]] + [d["lr"] for d in r["discarded"]]
            lr = max(cfg.min_lr, min([self._hi, *tried]))
            if self._rollbacks == _MAX_ROLLBACKS:
                action = (f"rolled back {_MAX_ROLLBACKS} times in this stage, the limit: keeping lr {lr:.3g} for the "
                          "rest of the stage, which only a NaN/inf loss rolls back from now on"
                          + self._advice_at_limit(failure, exhausted))
            else:
                action = f"past the limit of {_MAX_ROLLBACKS} roll-backs (NaN/inf only): keeping lr {lr:.3g}"
            self._event(kind, f"autolrs stage {self._stage}: {why}; {action}")
            r.update(lr=lr, forecast=None, trial_loss=None)
            return self._start_keep(lr, restore=True)
        self._event(kind, f"autolrs stage {self._stage}: {why}; going on with max_lr={self._hi:.3g}")
        if not exhausted:
            best = self._best(self._attempt_candidates())
            if best is not None:
                return self._keep_candidate(best)
            plan = self._plan_retry() if persist else None
            if plan is not None and self._hi > cfg.min_lr * (1 + _LR_RTOL):
                self._attempt += 1
                r.update(tau=plan[0], explore_steps=plan[1])
                return self._start_search(restore=True, snapshot=False)
        lr = cfg.min_lr if exhausted else max(cfg.min_lr, min(self._hi, failed_lr / (cfg.trust_region or 3.0)))
        self._event("no_search", f"no search: keeping lr={lr:.3g}", warn=False)
        r.update(lr=lr, forecast=None, trial_loss=None)
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
        if any(e["message"] == message for e in self._record["events"]):
            return
        self._record["events"].append(event(kind, message))
        if warn:
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _plan_retry(self) -> tuple[int, int] | None:
        """``(tau, tau')`` of a new search of the current stage from S0, or None if none fits."""
        cfg = self.config
        remaining, k = self._remaining(), self._candidates() + 1  # +1: the retry may open with a grid
        n = self._record["explore_steps"]
        if remaining is None:
            return self._record["tau"], n
        if remaining < (k + 1) * cfg.min_explore_steps:
            return None
        n = max(cfg.min_explore_steps, min(n, remaining // (2 * k)))
        return max(n, min(self._record["tau"], remaining - k * n)), n

    # -- kept stage --------------------------------------------------------------------------------
    def _start_keep(self, lr: float, *, restore: bool, snapshot: bool = False) -> Decision:
        # Candidates that diverged stopped early and left steps over: if what would remain after this
        # stage is too little for another stage, it is kept here rather than run as a tiny last stage.
        smallest = (self.config.candidates + 1) * self.config.min_explore_steps
        self._record["tau"] = stages.keep_length(self._remaining(), self._record["tau"], smallest)
        self.phase = "keep"
        self.lr = lr
        self._record.update(keep_start_step=self.steps_taken, kept_steps=0)
        self._keep_losses = []
        if self._record["tau"] <= 0:
            return self._end_stage(restore=restore, snapshot=snapshot)
        return Decision(lr, "keep", restore=restore, snapshot=snapshot)

    def _keep_step(self, loss: float, val_loss: float | None) -> Decision:
        r = self._record
        r["kept_steps"] += 1
        self.kept_steps += 1
        self._keep_losses.append(loss)
        if self._diverged(self._keep_losses):
            failure = self._failure_kind(self._keep_losses)
            if self._rollbacks < _MAX_ROLLBACKS or failure == "nonfinite":
                # The kept trajectory diverged: drop it, restore S0 and search lower LRs.
                why = f"the kept trajectory at lr {self.lr:.3g} diverged" + self._describe(failure, self._keep_losses)
                self._discard_keep()
                return self._retry("rolled_back_diverged", why, self.lr, failure=failure)
            self._event("spikes_kept", f"autolrs stage {self._stage}: finite losses above the divergence threshold "
                        f"were kept: the stage was already rolled back {_MAX_ROLLBACKS} times", warn=False)
        self._push_tail(loss)
        window = r["explore_steps"] or _TAIL
        if r["kept_steps"] < r["tau"]:
            # The first stage is also checked at 4, 8, 16, ... windows: a dead network is stopped early.
            ratio = r["kept_steps"] // window
            if (r["kept_steps"] % window == 0 and ratio >= 4 and ratio & (ratio - 1) == 0
                    and self._lost_progress(at_end=False)):
                return self._roll_back_lost_progress()
            return Decision(self.lr, "keep")
        if val_loss is not None:
            r["loss_reached"] = _finite_or_none(val_loss)
        else:
            r["loss_reached"] = _finite_or_none(float(np.mean(self._keep_losses[-window:])))
            if self._lost_progress(at_end=True):
                return self._roll_back_lost_progress()
        return self._end_stage()

    def _lost_progress(self, *, at_end: bool) -> bool:
        """:func:`~autolrs.safety.lost_progress` on this stage, when a roll-back could still be redone."""
        r = self._record
        start, trial = r["start_loss"], r["trial_loss"]
        if start is None or trial is None or r["objective"] != "train" or self._rollbacks >= _MAX_ROLLBACKS:
            return False
        remaining = self._remaining()
        if remaining is not None and remaining < r["kept_steps"]:
            return False  # too few steps left to redo the stage: its gain, however small, is kept
        first_stage = r["previous_lr"] is None
        window = r["explore_steps"] or _TAIL
        n = 2 * window
        if at_end:
            # The first stage is judged by where it ends, over the window its reached loss is measured on:
            # a network killed in its last steps (MNIST-1D at a 1000-step budget, LR 0.44) passes an average
            # over the last quarter and hands a dead model to every later stage. Later stages, whose losses
            # wander as much as a trial gains, are judged on their last quarter.
            n = window if first_stage else max(n, r["kept_steps"] // 4)
        if len(self._keep_losses) < n:
            return False
        return lost_progress(start, trial, self._keep_losses[-n:], first_stage=first_stage, at_end=at_end)

    def _roll_back_lost_progress(self) -> Decision:
        r = self._record
        reached = float(np.mean(self._keep_losses[-2 * (r["explore_steps"] or _TAIL):]))
        why = (f"the kept stage at lr {self.lr:.3g} went back to loss {reached:.4g} after {r['kept_steps']} steps, "
               f"giving back the progress its {r['explore_steps']}-step trial had made (from "
               f"{r['start_loss']:.4g} to {r['trial_loss']:.4g})")
        self._discard_keep(reached)
        return self._retry("rolled_back_lost_progress", why, self.lr, failure=None, persist=False)

    def _discard_keep(self, reached: float | None = None) -> None:
        """Take a failed kept phase off the kept trajectory (S0 will be restored); keep it in the record."""
        r = self._record
        r["discarded"].append({"start_step": r["keep_start_step"], "steps": r["kept_steps"], "lr": self.lr,
                               "loss_reached": None if reached is None else _finite_or_none(reached)})
        self.kept_steps -= r["kept_steps"]
        finite = sum(1 for x in self._keep_losses if math.isfinite(x))
        self._tail = self._tail[: max(0, len(self._tail) - finite)]
        r.update(kept_steps=0, loss_reached=None, keep_start_step=None)

    def _end_stage(self, *, restore: bool = False, snapshot: bool = False) -> Decision:
        self._close_stage()
        self._previous_lr = self.lr
        self._tau_next = min(2 * self._tau_next, self.config.max_stage_steps)
        self._stage += 1
        if self.config.total_steps is not None and self.steps_taken >= self.config.total_steps:
            self.phase = "done"
            return Decision(self.lr, "done", restore=restore, done=True)
        decision = self._begin_stage()
        return Decision(decision.lr, decision.phase, restore=restore or decision.restore,
                        snapshot=snapshot or decision.snapshot, done=decision.done)

    # -- decay phase -------------------------------------------------------------------------------
    def _begin_decay(self) -> Decision:
        """The rest of the budget: the LR falls linearly from the last stage's LR to zero, no search.

        A short remainder with ``decay_fraction=0`` keeps the last LR instead. The phase starts from a
        snapshot, so that a divergence (unlikely: the LR only falls) is rolled back and the decay restarted
        from half the LR.
        """
        record = self._new_record("decay" if self.config.decay_steps else "hold", "train")
        start_lr = self.lr if self._previous_lr is None else self._previous_lr
        record.update(tau=self.config.total_steps - self.steps_taken, lr=start_lr, keep_start_step=self.steps_taken)
        if record["kind"] == "hold":
            record["events"].append(event("no_search", "no search: too few steps left in the budget"))
        self._record = record
        self.phase = "decay"
        self.lr = self._decay_lr()
        return Decision(self.lr, "decay", snapshot=True)

    def _decay_lr(self) -> float:
        r = self._record
        if r["kind"] == "hold":
            return r["lr"]
        # Linear to zero: the i-th of n steps runs at lr * (n - i) / (n + 1), never exactly 0.
        return r["lr"] * (r["tau"] - r["kept_steps"]) / (r["tau"] + 1)

    def _decay_step(self, loss: float) -> Decision:
        r = self._record
        r["kept_steps"] += 1
        self.kept_steps += 1
        self._keep_losses.append(loss)
        failure = self._failure_kind(self._keep_losses) if self._diverged(self._keep_losses) else None
        if failure is not None and self._rollbacks >= _MAX_ROLLBACKS and failure != "nonfinite":
            self._event("spikes_kept", f"autolrs stage {self._stage}: finite losses above the divergence threshold "
                        f"were kept: the decay was already restarted {_MAX_ROLLBACKS} times", warn=False)
        elif failure is not None:
            failed = self.lr
            self._rollbacks += 1
            message = (f"autolrs stage {self._stage}: the decay from lr {r['lr']:.3g} diverged at lr {failed:.3g}"
                       f"{self._describe(failure, self._keep_losses)}; restarting it from lr {r['lr'] / 2:.3g}")
            if self._rollbacks == _MAX_ROLLBACKS:
                message += (f"; restarted {_MAX_ROLLBACKS} times, the limit: from now on only a NaN/inf loss restarts "
                            "it" + self._advice_at_limit(failure, exhausted=False))
            self._discard_keep()
            self._event("decay_restarted", message)
            r.update(lr=r["lr"] / 2, tau=self.config.total_steps - self.steps_taken, keep_start_step=self.steps_taken)
            self._keep_losses = []
            self.lr = self._decay_lr()
            return Decision(self.lr, "decay", restore=True)
        self._push_tail(loss)
        if self.steps_taken >= self.config.total_steps:
            n = max(1, min(len(self._keep_losses), self.config.explore_steps))
            r["loss_reached"] = _finite_or_none(float(np.mean(self._keep_losses[-n:])))
            self._close_stage()
            self.phase = "done"
            return Decision(self.lr, "done", done=True)
        self.lr = self._decay_lr()
        return Decision(self.lr, "decay")

    # -- bookkeeping -------------------------------------------------------------------------------
    def _close_stage(self) -> None:
        if self._candidate is not None:  # interrupted mid-candidate
            self._candidate["losses"] = [_finite_or_none(x) for x in self._candidate["losses"]]
            self._candidate["val_losses"] = [_finite_or_none(x) for x in self._candidate["val_losses"]]
            self._candidate["interrupted"] = True
            self._record["candidates"].append(self._candidate)
            self._candidate = None
        self._record["rollbacks"] = self._rollbacks
        self.history.append(self._record)
        self._record = None

    def _check_budget(self, decision: Decision) -> Decision:
        total = self.config.total_steps
        if decision.done or total is None or self.steps_taken < total:
            return decision
        # The plan ends on a kept phase; this guards the rest, e.g. a divergence on the last step, whose
        # restore must survive the end of the run.
        final = self.finish()
        return Decision(final.lr, "done", restore=final.restore or decision.restore, done=True)

    def _push_tail(self, loss: float) -> None:
        if math.isfinite(loss):
            self._tail.append(loss)
            del self._tail[:-_TAIL_MAX]

    def _threshold(self) -> float | None:
        return divergence_threshold(self._start_loss, self.config.divergence_factor)

    def _failure_kind(self, losses: list[float]) -> str:
        """:func:`~autolrs.safety.failure_kind` of a failed series, against the kept losses before it."""
        own = min(len(losses), 5) - 1 if self.phase in ("keep", "decay") else 0  # its own, already in the tail
        return failure_kind(losses, self._threshold(), self._tail[: len(self._tail) - own])

    def _diverged(self, losses: list[float]) -> bool:
        """The one divergence test, :func:`~autolrs.safety.diverged`, of candidates, kept stages and the decay."""
        return diverged(losses, self._threshold())

    # -- state -------------------------------------------------------------------------------------
    _STATE_FIELDS = ("steps_taken", "kept_steps", "phase", "lr", "history", "begun", "_max_lr", "_hi", "_stage",
                     "_tau_next", "_attempt", "_rollbacks", "_record", "_candidate", "_keep_losses", "_tail",
                     "_start_loss", "_previous_lr")

    def state_dict(self) -> dict:
        """Everything needed to resume, as plain data (lists, dicts, numbers, strings)."""
        state = {name.lstrip("_"): copy.deepcopy(getattr(self, name)) for name in self._STATE_FIELDS}
        state["version"] = STATE_VERSION
        state["config"] = self.config.to_dict()
        state["search"] = None if self._search is None else self._search.state_dict()
        return state

    def check_state_dict(self, state: dict) -> None:
        """Raise if ``state`` cannot be loaded into this controller (changes nothing)."""
        self._checked(state)

    def _checked(self, state: dict) -> dict:
        """``state`` checked, and upgraded (as a copy) when it was saved by the previous version."""
        if not isinstance(state, dict):
            raise TypeError(f"Expected a dict from StageController.state_dict(), but got {type(state).__name__}.")
        version = state.get("version")
        if version == 3:
            state = _upgrade_from_3(state)
            version = state["version"]
        if version != STATE_VERSION:
            raise ValueError(
                f"This state was saved by controller state version {version!r}; this autolrs reads version "
                f"{STATE_VERSION}. Resume with the autolrs release that saved it."
            )
        saved, ours = state.get("config"), self.config.to_dict()
        if saved != ours:
            diff = sorted(k for k in ours if not isinstance(saved, dict) or saved.get(k) != ours[k])
            raise ValueError(
                f"This state was saved with another configuration (differs in {diff}); build AutoLRS with the "
                "same options as the run that saved it."
            )
        missing = [name.lstrip("_") for name in self._STATE_FIELDS if name.lstrip("_") not in state]
        if missing or "search" not in state:
            raise ValueError(f"This state is incomplete (missing {missing or ['search']}).")
        check_controller_state(state, self.config.loss_floor)
        if state["search"] is not None:
            try:
                BayesianSearch.from_state_dict(copy.deepcopy(state["search"]))
            except (TypeError, ValueError) as error:
                raise ValueError(f"This autolrs state's search cannot be rebuilt: {error}") from None
        return state

    def load_state_dict(self, state: dict) -> None:
        state = self._checked(state)
        for name in self._STATE_FIELDS:
            setattr(self, name, copy.deepcopy(state[name.lstrip("_")]))
        self._search = None
        if state["search"] is not None:
            # Kept phases need it too: a rolled-back stage chooses among the same candidates again.
            self._search = BayesianSearch.from_state_dict(state["search"])


def _upgrade_from_3(state: dict) -> dict:
    """A version-3 state (events as plain strings) as version 4 (events as ``{kind, message}``), copied."""
    state = copy.deepcopy(state)
    records = [r for r in [*(state.get("history") or []), state.get("record")] if isinstance(r, dict)]
    for record in records:
        events = record.get("events")
        if isinstance(events, list):
            record["events"] = [event("note", e) if isinstance(e, str) else e for e in events]
    state["version"] = 4
    return state
