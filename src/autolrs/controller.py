"""The AutoLRS stage state machine: losses in, decisions out. No framework import.

Notation (docs/algorithm.md): a stage keeps ``tau`` steps at one LR; before them, ``k`` candidate LRs each run
``tau'`` steps from the stage snapshot S0. Phases, in order:

    warmup   linear LR warmup, not searched (optional)
    explore  candidate i of the stage runs from S0; ends after tau' steps or at once on divergence
    keep     the chosen LR runs tau steps from S0: the kept trajectory
    decay    the last ``decay_fraction`` of the budget: the LR falls to zero (``decay_shape``), no search
    done     the step budget is spent; the model is on a kept state

After every optimizer step the driver reports the loss of that step to :meth:`StageController.step`, which
returns the :class:`Decision` for the *next* step. The driver carries it out in this order: restore S0
(``restore``), save the current state as S0 (``snapshot``), set ``lr``. The controller alone decides; it
keeps no reference to models or tensors, and its whole state is plain data (:meth:`state_dict`). The
arithmetic of the stage plan is :mod:`autolrs.stages`, the choice rule :mod:`autolrs.choice`, the failure
tests :mod:`autolrs.safety`. The parts of the algorithm live in their own modules, as mixins of
:class:`StageController`: :mod:`autolrs.stage_plan` (sizing and opening each stage),
:mod:`autolrs.candidate_search` (explore), :mod:`autolrs.kept_trajectory` (keep, decay),
:mod:`autolrs.rollback` (what a failure does) and :mod:`autolrs.controller_persistence` (the state dict);
this module holds the state, the step dispatch, the input checks, the warmup and the stage bookkeeping.
"""

from __future__ import annotations

import math
import zlib
from typing import cast

from . import stages
from .candidate_search import CandidateSearch
from .config import AutoLRSConfig
from .controller_persistence import STATE_VERSION, StatePersistence
from .decision import TAIL_MAX, Decision, Phase, finite_or_none
from .kept_trajectory import KeptTrajectory
from .records import Candidate, StageRecord, event
from .rollback import RollBack
from .safety import divergence_threshold, diverged, failure_kind
from .search import BayesianSearch
from .stage_plan import StagePlan

__all__ = ["Decision", "Phase", "StageController", "STATE_VERSION"]


class StageController(StagePlan, CandidateSearch, RollBack, KeptTrajectory, StatePersistence):
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
        self.lr = cast(float, config.warmup_lr)  # a constructed config has resolved it (never None)
        self.history: list[StageRecord] = []
        self.begun = False
        # Upper bounds of the search: for the run (lowered when an LR diverges) and for the current stage
        # (lowered further when a kept stage loses its progress). Never below min_lr.
        self._max_lr = config.max_lr
        self._hi = config.max_lr
        self._stage = 0
        self._tau_next = cast(int, config.stage_steps)  # resolved by the config, as below
        self._attempt = 0
        self._rollbacks = 0                  # roll-backs of the stage in progress (at most MAX_ROLLBACKS)
        self._record: StageRecord | None = None     # the stage in progress
        self._candidate: Candidate | None = None    # the candidate in progress
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
        if self.phase == "explore":  # a search is running: it has its candidate
            return (cast(Candidate, self._candidate)["steps"] + 1) % self._val_interval() == 0
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
            return cast(Candidate, self._candidate)["steps"] == 0 and not r["candidates"]
        return r["kept_steps"] == 0 and not r["candidates"] and not r["discarded"]

    # -- warmup ------------------------------------------------------------------------------------
    def _warmup_lr(self, step: int) -> float:
        return stages.warmup_lr(cast(float, self.config.warmup_lr), self.config.warmup_steps, step)

    def _warmup_step(self, loss: float) -> Decision:
        self.kept_steps += 1
        self._push_tail(loss)
        if self.steps_taken >= self.config.warmup_steps:
            return self._begin_stage()
        self.lr = self._warmup_lr(self.steps_taken)
        return Decision(self.lr, "warmup")

    # -- bookkeeping -------------------------------------------------------------------------------
    def _close_stage(self) -> None:
        record = cast(StageRecord, self._record)  # called only while a stage is in progress
        if self._candidate is not None:  # interrupted mid-candidate; its losses are still raw floats
            self._candidate["losses"] = [finite_or_none(x) for x in cast("list[float]", self._candidate["losses"])]
            self._candidate["val_losses"] = [finite_or_none(x)
                                             for x in cast("list[float]", self._candidate["val_losses"])]
            self._candidate["interrupted"] = True
            record["candidates"].append(self._candidate)
            self._candidate = None
        record["rollbacks"] = self._rollbacks
        self.history.append(record)
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
            del self._tail[:-TAIL_MAX]

    def _threshold(self) -> float | None:
        return divergence_threshold(self._start_loss, self.config.divergence_factor)

    def _failure_kind(self, losses: list[float]) -> str:
        """:func:`~autolrs.safety.failure_kind` of a failed series, against the kept losses before it."""
        own = min(len(losses), 5) - 1 if self.phase in ("keep", "decay") else 0  # its own, already in the tail
        return failure_kind(losses, self._threshold(), self._tail[: len(self._tail) - own])

    def _diverged(self, losses: list[float]) -> bool:
        """The one divergence test, :func:`~autolrs.safety.diverged`, of candidates, kept stages and the decay."""
        return diverged(losses, self._threshold())
