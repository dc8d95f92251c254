"""The kept trajectory: the chosen LR from S0 for tau steps, the lost-progress test, and the decay phase.

A mixin of :class:`~autolrs.controller.StageController`. A kept stage that diverges or gives back its trial's
progress is rolled back (:class:`~autolrs.rollback.RollBack`); the last ``decay_fraction`` of the budget
decays to zero from the last stage's LR (``decay_shape``).
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np

from . import stages
from .controller_state import ControllerState
from .decision import MAX_ROLLBACKS, TAIL, Decision, finite_or_none
from .records import StageRecord, event
from .choice import progress_t
from .safety import LostProgress, lost_progress

__all__ = ["KeptTrajectory"]


class KeptTrajectory(ControllerState):
    """The ``keep`` and ``decay`` phases of :class:`~autolrs.controller.StageController`."""

    def _start_keep(self, lr: float, *, restore: bool, snapshot: bool = False) -> Decision:
        # Candidates that diverged stopped early and left steps over: if what would remain after this
        # stage is too little for another stage, it is kept here rather than run as a tiny last stage.
        smallest = stages.smallest_stage(self.config.candidates, self.config.min_explore_steps)
        r = cast(StageRecord, self._record)  # a kept phase belongs to the stage in progress
        r["tau"] = stages.keep_length(self._remaining(), r["tau"], smallest)
        self.phase = "keep"
        self.lr = lr
        r.update({"keep_start_step": self.steps_taken, "kept_steps": 0})
        self._keep_losses = []
        if r["tau"] <= 0:
            return self._end_stage(restore=restore, snapshot=snapshot)
        return Decision(lr, "keep", restore=restore, snapshot=snapshot)

    def _keep_step(self, loss: float, val_loss: float | None) -> Decision:
        r = cast(StageRecord, self._record)  # the stage in progress
        r["kept_steps"] += 1
        self.kept_steps += 1
        self._keep_losses.append(loss)
        if self._diverged(self._keep_losses):
            failure = self._failure_kind(self._keep_losses)
            if self._spikes_only(failure):
                self._keep_noise()
            elif self._rollbacks < MAX_ROLLBACKS or failure == "nonfinite":
                # The kept trajectory diverged: drop it, restore S0 and search lower LRs.
                why = f"the kept trajectory at lr {self.lr:.3g} diverged" + self._describe(failure, self._keep_losses)
                self._discard_keep()
                return self._retry("rolled_back_diverged", why, self.lr, failure=failure)
            else:
                self._event("spikes_kept", f"autolrs stage {self._stage}: finite losses above the divergence "
                            f"threshold were kept: the stage was already rolled back {MAX_ROLLBACKS} times", warn=False)
        self._push_tail(loss)
        window = r["explore_steps"] or TAIL
        if r["kept_steps"] < r["tau"]:
            # The first stage is also checked at 4, 8, 16, ... windows: a dead network is stopped early.
            ratio = r["kept_steps"] // window
            if (r["kept_steps"] % window == 0 and ratio >= 4 and ratio & (ratio - 1) == 0
                    and (lost := self._lost_progress(at_end=False))):
                return self._roll_back_lost_progress(lost)
            return Decision(self.lr, "keep")
        if val_loss is not None:
            r["loss_reached"] = finite_or_none(val_loss)
        else:
            r["loss_reached"] = finite_or_none(float(np.mean(self._keep_losses[-window:])))
            if lost := self._lost_progress(at_end=True):
                return self._roll_back_lost_progress(lost)
        # Was the loss still falling at the end? The next stage holds this LR only if it was.
        r["progress_t"] = progress_t(self._keep_losses)
        return self._end_stage()

    def _spikes_only(self, failure: str) -> bool:
        """Whether a kept phase's failed divergence test was spikes of batch noise, to be kept: the losses
        fell back between spikes (:func:`~autolrs.safety.failure_kind` ``"noise"``), and over the last two
        windows they sit below the threshold (median): the level did not rise, only some batches did."""
        threshold = self._threshold()
        if failure != "noise" or threshold is None:
            return False
        r = cast(StageRecord, self._record)  # the stage in progress
        recent = [x for x in self._keep_losses[-2 * (r["explore_steps"] or TAIL):] if math.isfinite(x)]
        return float(np.median(recent)) <= threshold

    def _keep_noise(self) -> None:
        """Spikes of batch noise (:meth:`_spikes_only`) stay on the kept trajectory: no roll-back, one event
        per stage.

        A kept phase runs an LR whose trial it passed; spikes over a level that did not rise are no evidence
        that it diverged, and a roll-back costs the stage's steps and halves its LR. Late in training the
        threshold (``divergence_factor`` times a start loss near 0) is within reach of ordinary batch noise:
        MNIST-1D's demo rolled back a stage at LR 0.105 (the tuned constant LR is 0.1) whose last five losses
        had a median of 0.14 against a threshold of 0.139 (start 0.035). A real divergence goes NaN/inf, or
        rises and stays up, or lifts the level itself, and is rolled back as before.
        """
        self._event("spikes_kept", f"autolrs stage {self._stage}: finite losses above the divergence threshold "
                    "fell back below it between spikes or crossed it as often as before (batch noise, not "
                    "divergence): kept", warn=False)

    def _lost_progress(self, *, at_end: bool) -> LostProgress:
        """:func:`~autolrs.safety.lost_progress` on this stage, when a roll-back could still be redone."""
        r = cast(StageRecord, self._record)  # the stage in progress
        start, trial = r["start_loss"], r["trial_loss"]
        if start is None or trial is None or r["objective"] != "train" or self._rollbacks >= MAX_ROLLBACKS:
            return None
        remaining = self._remaining()
        if remaining is not None and remaining < r["kept_steps"]:
            return None  # too few steps left to redo the stage: its gain, however small, is kept
        first_stage = r["previous_lr"] is None
        window = r["explore_steps"] or TAIL
        n = 2 * window
        if at_end:
            # The first stage is judged by where it ends, over the window its reached loss is measured on:
            # a network killed in its last steps (MNIST-1D at a 1000-step budget, LR 0.44) passes an average
            # over the last quarter and hands a dead model to every later stage. Later stages, whose losses
            # wander as much as a trial gains, are judged on their last quarter.
            n = window if first_stage else max(n, r["kept_steps"] // 4)
        if len(self._keep_losses) < n:
            return None
        return lost_progress(start, trial, self._keep_losses[-n:], first_stage=first_stage, at_end=at_end)

    def _roll_back_lost_progress(self, lost: LostProgress) -> Decision:
        r = cast(StageRecord, self._record)  # the stage in progress
        window = r["explore_steps"] or TAIL
        trial = f"its {r['explore_steps']}-step trial"
        moved = f"(from {r['start_loss']:.4g} to {r['trial_loss']:.4g})"
        if lost == "stalled":  # reached: the last window, the one the stall was judged on
            reached = float(np.mean(self._keep_losses[-window:]))
            why = (f"the kept stage at lr {self.lr:.3g} ended at loss {reached:.4g} after {r['kept_steps']} steps, "
                   f"no lower than {trial} {moved}: the LR stalled the model")
        else:
            reached = float(np.mean(self._keep_losses[-2 * window:]))
            why = (f"the kept stage at lr {self.lr:.3g} went back to loss {reached:.4g} after {r['kept_steps']} "
                   f"steps, giving back the progress {trial} had made {moved}")
        self._discard_keep(reached)
        return self._retry("rolled_back_lost_progress", why, self.lr, failure=None, persist=False)

    def _discard_keep(self, reached: float | None = None) -> None:
        """Take a failed kept phase off the kept trajectory (S0 will be restored); keep it in the record."""
        r = cast(StageRecord, self._record)  # the stage in progress
        r["discarded"].append({"start_step": r["keep_start_step"], "steps": r["kept_steps"], "lr": self.lr,
                               "loss_reached": None if reached is None else finite_or_none(reached)})
        self.kept_steps -= r["kept_steps"]
        finite = sum(1 for x in self._keep_losses if math.isfinite(x))
        self._tail = self._tail[: max(0, len(self._tail) - finite)]
        r.update({"kept_steps": 0, "loss_reached": None, "keep_start_step": None})

    def _end_stage(self, *, restore: bool = False, snapshot: bool = False) -> Decision:
        self._close_stage()
        self._previous_lr = self.lr
        self._tau_next = min(2 * self._tau_next, cast(int, self.config.max_stage_steps))  # resolved by the config
        self._stage += 1
        if self.config.total_steps is not None and self.steps_taken >= self.config.total_steps:
            self.phase = "done"
            return Decision(self.lr, "done", restore=restore, done=True)
        decision = self._begin_stage()
        return Decision(decision.lr, decision.phase, restore=restore or decision.restore,
                        snapshot=snapshot or decision.snapshot, done=decision.done)

    # -- decay phase -------------------------------------------------------------------------------
    def _begin_decay(self) -> Decision:
        """The rest of the budget: the LR falls from the last stage's LR to zero (``decay_shape``), no search.

        A short remainder with ``decay_fraction=0`` keeps the last LR instead. The phase starts from a
        snapshot, so that a divergence (unlikely: the LR only falls) is rolled back and the decay restarted
        from half the LR.
        """
        record = self._new_record("decay" if self.config.decay_steps else "hold", "train")
        start_lr = self.lr if self._previous_lr is None else self._previous_lr
        # The decay phase exists only with a budget (config.decay_steps and stable_end need total_steps).
        total_steps = cast(int, self.config.total_steps)
        record.update({"tau": total_steps - self.steps_taken, "lr": start_lr, "keep_start_step": self.steps_taken})
        if record["kind"] == "hold":
            record["events"].append(event("no_search", "no search: too few steps left in the budget"))
        self._record = record
        self.phase = "decay"
        self.lr = self._decay_lr()
        return Decision(self.lr, "decay", snapshot=True)

    def _decay_lr(self) -> float:
        r = cast(StageRecord, self._record)  # the stage in progress
        lr = cast(float, r["lr"])  # _begin_decay set the phase's LR
        if r["kind"] == "hold":
            return lr
        return stages.decay_lr(lr, r["tau"], r["kept_steps"], self.config.decay_shape)

    def _decay_step(self, loss: float) -> Decision:
        r = cast(StageRecord, self._record)  # the stage in progress
        r["kept_steps"] += 1
        self.kept_steps += 1
        self._keep_losses.append(loss)
        failure = self._failure_kind(self._keep_losses) if self._diverged(self._keep_losses) else None
        if failure is not None and self._spikes_only(failure):
            self._keep_noise()
        elif failure is not None and self._rollbacks >= MAX_ROLLBACKS and failure != "nonfinite":
            self._event("spikes_kept", f"autolrs stage {self._stage}: finite losses above the divergence threshold "
                        f"were kept: the decay was already restarted {MAX_ROLLBACKS} times", warn=False)
        elif failure is not None:
            failed = self.lr
            self._rollbacks += 1
            message = (f"autolrs stage {self._stage}: the decay from lr {r['lr']:.3g} diverged at lr {failed:.3g}"
                       f"{self._describe(failure, self._keep_losses)}; restarting it from lr "
                       f"{cast(float, r['lr']) / 2:.3g}")
            if self._rollbacks == MAX_ROLLBACKS:
                message += (f"; restarted {MAX_ROLLBACKS} times, the limit: from now on only a NaN/inf loss restarts "
                            "it" + self._advice_at_limit(failure, exhausted=False))
            self._discard_keep()
            self._event("decay_restarted", message)
            r.update({"lr": cast(float, r["lr"]) / 2, "tau": cast(int, self.config.total_steps) - self.steps_taken,
                      "keep_start_step": self.steps_taken})
            self._keep_losses = []
            self.lr = self._decay_lr()
            return Decision(self.lr, "decay", restore=True)
        self._push_tail(loss)
        if self.steps_taken >= cast(int, self.config.total_steps):  # a decay phase has a budget
            n = max(1, min(len(self._keep_losses), cast(int, self.config.explore_steps)))  # resolved by the config
            r["loss_reached"] = finite_or_none(float(np.mean(self._keep_losses[-n:])))
            self._close_stage()
            self.phase = "done"
            return Decision(self.lr, "done", done=True)
        self.lr = self._decay_lr()
        return Decision(self.lr, "decay")

