"""The AutoLRS stage state machine: losses in, decisions out. No framework import.

Notation (ALGORITHM.md): a stage keeps ``tau`` steps at one LR; before them, ``k`` candidate LRs each run
``tau'`` steps from the stage snapshot S0. Phases, in order:

    warmup   linear LR warmup, not searched (optional)
    explore  candidate i of the stage runs from S0; ends after tau' steps or at once on divergence
    keep     the best candidate's LR runs tau steps from S0: the kept trajectory
    done     the step budget is spent; the model is on a kept state

After every optimizer step the driver reports the loss of that step to :meth:`StageController.step`, which
returns the :class:`Decision` for the *next* step. The driver carries it out in this order: restore S0
(``restore``), save the current state as S0 (``snapshot``), set ``lr``. The controller alone decides; it
keeps no reference to models or tensors, and its whole state is plain data (:meth:`state_dict`).
"""

from __future__ import annotations

import copy
import math
import warnings
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .config import AutoLRSConfig
from .forecast import forecast_loss
from .search import BayesianSearch

__all__ = ["Decision", "Phase", "StageController", "STATE_VERSION"]

Phase = Literal["warmup", "explore", "keep", "done"]
STATE_VERSION = 1
# The loss the stage starts from is the mean of this many last kept losses.
_TAIL = 10


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
        >>> ctrl = StageController(AutoLRSConfig(min_lr=1e-3, max_lr=1.0, total_steps=400, seed=0))
        >>> decision = ctrl.begin()          # apply before the first step: snapshot + first candidate
        >>> decision.phase, decision.snapshot
        ('explore', True)
        >>> while not decision.done:
        ...     loss = 1.0 / (1 + ctrl.steps_taken * decision.lr)   # stands for a training step
        ...     decision = ctrl.step(loss)
        >>> ctrl.steps_taken
        400
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
        # (lowered further when a kept stage makes no progress). Never below min_lr.
        self._max_lr = config.max_lr
        self._hi = config.max_lr
        self._stage = 0
        self._tau_next = config.stage_steps
        self._attempt = 0
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
        loss = float(loss)
        self.steps_taken += 1
        if self.phase == "warmup":
            decision = self._warmup_step(loss)
        elif self.phase == "explore":
            decision = self._explore_step(loss, None if val_loss is None else float(val_loss))
        else:
            decision = self._keep_step(loss, None if val_loss is None else float(val_loss))
        return self._check_budget(decision)

    def finish(self) -> Decision:
        """End the run now; the returned decision leaves the model on a kept state.

        Mid-search, that means restoring S0 (never an exploration branch trained with an untested LR).
        """
        if self.done:
            return Decision(self.lr, "done", done=True)
        restore = self.phase == "explore"
        if self._record is not None:
            self._record["events"].append(f"run finished at step {self.steps_taken} during {self.phase}")
            self._close_stage()
        self.phase = "done"
        return Decision(self.lr, "done", restore=restore, done=True)

    def fingerprint(self) -> int:
        """A 32-bit checksum of the state that decides the next steps (step counts, phase, LR, bounds, stage).

        Replicas of one run (one per rank under torch.distributed) fed the same losses have the same
        fingerprint; comparing it exposes a replica that decided otherwise. Cheap: a few scalars, no history.
        """
        text = (f"{self.steps_taken}|{self.kept_steps}|{self.phase}|{self.lr!r}|{self._stage}|{self._attempt}|"
                f"{len(self.history)}|{self._max_lr!r}|{self._hi!r}|{self._tau_next}")
        return zlib.crc32(text.encode())

    @property
    def decision(self) -> Decision:
        """The decision in force now (what the next step runs with)."""
        return Decision(self.lr, self.phase, done=self.done)

    # -- phases ------------------------------------------------------------------------------------
    def _warmup_lr(self, step: int) -> float:
        return self.config.warmup_lr * (step + 1) / self.config.warmup_steps

    def _warmup_step(self, loss: float) -> Decision:
        self.kept_steps += 1
        self._push_tail(loss)
        if self.steps_taken >= self.config.warmup_steps:
            return self._begin_stage()
        self.lr = self._warmup_lr(self.steps_taken)
        return Decision(self.lr, "warmup")

    def _plan(self) -> tuple[int, int] | None:
        """``(tau, tau')`` of the next stage within the remaining budget, or None if no search fits."""
        cfg = self.config
        k, n_min = cfg.candidates, cfg.min_explore_steps
        tau = self._tau_next
        n = max(n_min, round(tau * cfg.explore_ratio))
        if cfg.total_steps is None:
            return tau, n
        remaining = cfg.total_steps - self.steps_taken
        smallest = k * n_min + n_min
        if remaining < smallest:
            return None
        if tau + k * n > remaining:
            # The last stage: shrink it to what is left, keeping tau'/tau, and give it every step left.
            n = max(n_min, int(n * remaining / (tau + k * n)))
            return remaining - k * n, n
        if remaining - (tau + k * n) < smallest:
            tau = remaining - k * n  # a remainder too small for another search is kept, not wasted
        return tau, n

    def _begin_stage(self) -> Decision:
        plan = self._plan()
        cfg = self.config
        objective = "val" if cfg.use_validation and self._tau_next >= cfg.max_stage_steps else "train"
        self._record = {
            "stage": self._stage,
            "start_step": self.steps_taken,
            "tau": 0,
            "explore_steps": 0,
            "objective": objective,
            "min_lr": self.config.min_lr,
            "max_lr": self._hi,
            "candidates": [],
            "lr": None,
            "forecast": None,
            "keep_start_step": None,
            "kept_steps": 0,
            "loss_reached": None,
            "discarded": [],
            "events": [],
        }
        self._keep_losses = []
        self._start_loss = float(np.mean(self._tail)) if self._tail else None
        self._hi = self._max_lr
        self._record["max_lr"] = self._hi
        if self._hi <= cfg.min_lr * 1.0001:
            # Every LR above min_lr diverged earlier in the run: nothing left to search.
            self._record["events"].append("search range collapsed to min_lr after divergence: keeping min_lr")
            self._record.update(tau=self._keep_length(self._tau_next), lr=cfg.min_lr)
            return self._start_keep(cfg.min_lr, restore=False, snapshot=True)
        if plan is None:
            # No room for a search: keep training at the last chosen LR until the budget is spent.
            remaining = cfg.total_steps - self.steps_taken
            self._record.update(tau=remaining, objective="train", lr=self.lr)
            self._record["events"].append("no search: too few steps left in the budget")
            return self._start_keep(self.lr, restore=False, snapshot=True)
        tau, n = plan
        self._record.update(tau=tau, explore_steps=n)
        self._attempt = 0
        return self._start_search(restore=False, snapshot=True)

    def _search_range(self) -> tuple[float, float]:
        """The stage's LR range: ``[min_lr, bound]``, or with ``trust_region`` a band around the last LR.

        A retry searches the whole range below its bound: the band is where the stage failed.
        """
        cfg = self.config
        lo, hi = cfg.min_lr, self._hi
        if cfg.trust_region is not None and self._previous_lr is not None and self._attempt == 0:
            band = (max(lo, self._previous_lr / cfg.trust_region), min(hi, self._previous_lr * cfg.trust_region))
            if band[1] > band[0] * 1.0001:
                lo, hi = band
        return lo, hi

    def _make_search(self) -> BayesianSearch:
        cfg = self.config
        lo, hi = self._search_range()
        return BayesianSearch(lo, hi, kappa=cfg.kappa, seed=_stage_seed(cfg.seed, self._stage, self._attempt),
                              first_lr=self._previous_lr if cfg.warm_start else None)

    def _start_search(self, *, restore: bool, snapshot: bool) -> Decision:
        self._search = self._make_search()
        self._record.update(min_lr=self._search.min_lr, max_lr=self._search.max_lr)
        self.phase = "explore"
        return self._start_candidate(restore=restore, snapshot=snapshot)

    def _start_candidate(self, *, restore: bool, snapshot: bool = False) -> Decision:
        self.lr = self._search.ask()
        self._candidate = {"lr": self.lr, "attempt": self._attempt, "steps": 0, "losses": [],
                           "val_steps": [], "val_losses": [], "forecast": None, "diverged": False}
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
        diverged = self._diverged(c["losses"]) or (val_loss is not None and not math.isfinite(val_loss))
        if not diverged and c["steps"] < self._record["explore_steps"]:
            return Decision(self.lr, "explore")
        self._close_candidate(diverged)
        current = [x for x in self._record["candidates"] if x["attempt"] == self._attempt]
        if len(current) < self.config.candidates:
            return self._start_candidate(restore=True)
        return self._choose(current)

    def _close_candidate(self, diverged: bool) -> None:
        c = self._candidate
        cfg = self.config
        tau = self._record["tau"]
        if diverged:
            c["diverged"] = True
        else:
            if self._record["objective"] == "val":
                series, steps, kind = c["val_losses"], c["val_steps"], "val"
            else:
                series, steps, kind = c["losses"], None, "train"
            c["forecast"] = forecast_loss(
                series, tau, steps=steps, kind=kind, floor=cfg.loss_floor, max_extrapolation=cfg.max_extrapolation
            ).value
        self._search.tell(c["lr"], math.inf if diverged else c["forecast"])
        c["losses"] = [_finite_or_none(x) for x in c["losses"]]
        c["val_losses"] = [_finite_or_none(x) for x in c["val_losses"]]
        self._record["candidates"].append(c)
        self._candidate = None

    def _best(self, candidates: list[dict]) -> dict | None:
        """The stage's best candidate among those that did not diverge and lie in the current range."""
        valid = [x for x in candidates if not x["diverged"] and x["lr"] <= self._hi * (1 + 1e-9)]
        if not valid:
            return None
        if self.config.choose == "posterior":
            # The GP's mean at the tried LRs: its white-noise term shrinks a lucky forecast toward its
            # neighbours, so one noisy series does not decide the stage.
            scores = self._search.posterior([self._search.to_unit(x["lr"]) for x in valid])[0]
        else:  # "forecast": the reference code's argmin of the observed forecasts
            scores = [x["forecast"] for x in valid]
        return valid[int(np.argmin(scores))]

    def _attempt_candidates(self) -> list[dict]:
        return [x for x in self._record["candidates"] if x["attempt"] == self._attempt]

    def _choose(self, current: list[dict]) -> Decision:
        best = self._best(current)
        if best is not None:
            self._record.update(lr=best["lr"], forecast=best["forecast"])
            return self._start_keep(best["lr"], restore=True)
        lowest = min(x["lr"] for x in current)
        return self._retry(f"all {len(current)} candidates diverged (lowest lr {lowest:.3g})", lowest)

    def _retry(self, why: str, failed_lr: float, *, persist: bool = True) -> Decision:
        """Something failed at ``failed_lr``: restore S0 and go on below half of it.

        The stage's other candidates were measured from the same S0, so the best one left below the new
        bound is kept without a new search; only when none is left is the stage searched again. The range
        never leaves ``[min_lr, max_lr]``: when even ``min_lr`` failed it is kept, with a warning, and every
        failure is rolled back to S0 again. With ``persist`` (divergence), the bound holds for the rest of
        the run; otherwise (no progress) for this stage only.
        """
        cfg = self.config
        exhausted = failed_lr <= self.config.min_lr * 1.0001
        self._hi = max(self.config.min_lr, min(self._hi, failed_lr / 2.0))
        if persist:
            self._max_lr = min(self._max_lr, self._hi)
        if exhausted:
            why += f"; every lr down to min_lr={self.config.min_lr:.3g} failed: lower min_lr"
        message = f"autolrs stage {self._stage}: {why}; going on with max_lr={self._hi:.3g}"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        self._record["events"].append(message)
        self._record.update(min_lr=self.config.min_lr, max_lr=self._hi)
        if self._previous_lr is not None and self._previous_lr > self._hi:
            self._previous_lr = None
        if not exhausted:
            best = self._best(self._attempt_candidates())
            if best is not None:
                self._record.update(lr=best["lr"], forecast=best["forecast"])
                return self._start_keep(best["lr"], restore=True)
            plan = self._plan()
            if plan is not None and self._hi > self.config.min_lr * 1.0001:
                self._attempt += 1
                self._record.update(tau=plan[0], explore_steps=plan[1])
                return self._start_search(restore=True, snapshot=False)
        lr = self.config.min_lr if exhausted else max(self.config.min_lr, min(self._hi, self.lr / 10.0))
        self._record["events"].append(f"no search possible: keeping lr={lr:.3g}")
        self._record.update(lr=lr, forecast=None, tau=self._keep_length(self._record["tau"]))
        return self._start_keep(lr, restore=True)

    def _keep_length(self, tau: int) -> int:
        """``tau`` within the budget; a remainder too small for another search is kept too."""
        if self.config.total_steps is None:
            return tau
        remaining = self.config.total_steps - self.steps_taken
        smallest = (self.config.candidates + 1) * self.config.min_explore_steps
        return remaining if remaining - tau < smallest else tau

    def _start_keep(self, lr: float, *, restore: bool, snapshot: bool = False) -> Decision:
        # Candidates that diverged stopped early and left steps over: if what would remain after this
        # stage is too little for another search, it is kept here rather than run as a tiny last stage.
        self._record["tau"] = self._keep_length(self._record["tau"])
        self.phase = "keep"
        self.lr = lr
        self._record["keep_start_step"] = self.steps_taken
        self._record["kept_steps"] = 0
        self._keep_losses = []
        return Decision(lr, "keep", restore=restore, snapshot=snapshot)

    def _keep_step(self, loss: float, val_loss: float | None) -> Decision:
        r = self._record
        r["kept_steps"] += 1
        self.kept_steps += 1
        self._keep_losses.append(loss)
        if self._diverged(self._keep_losses):
            # The kept trajectory diverged: drop it, restore S0 and search lower LRs.
            self._discard_keep()
            return self._retry(f"the kept trajectory at lr {self.lr:.3g} diverged", self.lr)
        self._push_tail(loss)
        if r["kept_steps"] < r["tau"]:
            return Decision(self.lr, "keep")
        if val_loss is not None:
            r["loss_reached"] = _finite_or_none(val_loss)
        else:
            n = max(1, r["explore_steps"] or min(len(self._keep_losses), _TAIL))
            r["loss_reached"] = _finite_or_none(float(np.mean(self._keep_losses[-n:])))
            if self._no_progress(r):
                # The forecast promised progress and a whole stage made none (a dead network looks like
                # this: loss back at chance, finite, no explosion): drop it and search lower LRs once.
                why = (f"the kept stage at lr {self.lr:.3g} went from loss {self._start_loss:.4g} to "
                       f"{r['loss_reached']:.4g}, far short of the forecast {r['forecast']:.4g}")
                self._discard_keep()
                return self._retry(why, self.lr, persist=False)
        self._close_stage()
        self._previous_lr = self.lr
        self._tau_next = min(2 * self._tau_next, self.config.max_stage_steps)
        self._stage += 1
        if self.config.total_steps is not None and self.steps_taken >= self.config.total_steps:
            self.phase = "done"
            return Decision(self.lr, "done", done=True)
        return self._begin_stage()

    def _discard_keep(self) -> None:
        """Take a failed kept phase off the kept trajectory (S0 will be restored); keep it in the record."""
        r = self._record
        r["discarded"].append({"start_step": r["keep_start_step"], "steps": r["kept_steps"], "lr": self.lr,
                               "loss_reached": r["loss_reached"]})
        self.kept_steps -= r["kept_steps"]
        r.update(kept_steps=0, loss_reached=None, keep_start_step=None)

    def _no_progress(self, record: dict) -> bool:
        """A kept stage failed: its forecast promised a clear gain (5% or more of the start loss) and it
        delivered less than a quarter of it.

        Short windows cannot see an instability that develops later: an LR that drops the loss fastest in
        its window can then stall or kill the network (whose loss sits back at chance level, finite and
        flat, so no explosion shows it). A plateau does not trip this: there the forecast promises little.
        At most 3 such roll-backs per stage.
        """
        start, reached, promised = self._start_loss, record["loss_reached"], record["forecast"]
        if start is None or reached is None or promised is None or len(record["discarded"]) >= 3:
            return False
        if self.config.total_steps is not None and self.steps_taken >= self.config.total_steps:
            return False  # no budget left to redo the stage: its gain, however small, is kept
        gain = start - promised
        return gain >= 0.05 * abs(start) and start - reached < 0.25 * gain

    def _close_stage(self) -> None:
        if self._candidate is not None:  # interrupted mid-candidate
            self._candidate["losses"] = [_finite_or_none(x) for x in self._candidate["losses"]]
            self._candidate["val_losses"] = [_finite_or_none(x) for x in self._candidate["val_losses"]]
            self._candidate["interrupted"] = True
            self._record["candidates"].append(self._candidate)
            self._candidate = None
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

    # -- divergence --------------------------------------------------------------------------------
    def _push_tail(self, loss: float) -> None:
        if math.isfinite(loss):
            self._tail.append(loss)
            del self._tail[:-_TAIL]

    def _threshold(self) -> float | None:
        start = self._start_loss
        if start is None or start == 0.0:
            return None
        return start + (self.config.divergence_factor - 1.0) * abs(start)

    def _diverged(self, losses: list[float]) -> bool:
        """NaN/inf at once; a finite explosion when 2 of the last 3 losses exceed the threshold.

        One spike (a hard batch) does not end a candidate; a persistent explosion does.
        """
        if not math.isfinite(losses[-1]):
            return True
        threshold = self._threshold()
        if threshold is None or len(losses) < 2:
            return False
        return sum(x > threshold for x in losses[-3:]) >= 2

    # -- state -------------------------------------------------------------------------------------
    _STATE_FIELDS = ("steps_taken", "kept_steps", "phase", "lr", "history", "begun", "_max_lr", "_hi", "_stage",
                     "_tau_next", "_attempt", "_record", "_candidate", "_keep_losses", "_tail", "_start_loss",
                     "_previous_lr")

    def state_dict(self) -> dict:
        """Everything needed to resume, as plain data (lists, dicts, numbers, strings)."""
        state = {name.lstrip("_"): copy.deepcopy(getattr(self, name)) for name in self._STATE_FIELDS}
        state["version"] = STATE_VERSION
        state["config"] = self.config.to_dict()
        state["search"] = None if self._search is None else self._search.state_dict()
        return state

    def check_state_dict(self, state: dict) -> None:
        """Raise if ``state`` cannot be loaded into this controller (changes nothing)."""
        if not isinstance(state, dict):
            raise TypeError(f"Expected a dict from StageController.state_dict(), but got {type(state).__name__}.")
        version = state.get("version")
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

    def load_state_dict(self, state: dict) -> None:
        self.check_state_dict(state)
        for name in self._STATE_FIELDS:
            setattr(self, name, copy.deepcopy(state[name.lstrip("_")]))
        self._search = None
        if state["search"] is not None:
            # Kept phases need it too: a rolled-back stage chooses among the same candidates again.
            self._search = BayesianSearch.from_state_dict(state["search"])
