"""The stage plan: how long a stage is, how many LRs it tries, and what opens it.

A mixin of :class:`~autolrs.controller.StageController`. A stage starts from the kept losses before it (its
start loss), with ``tau`` steps (doubled as each stage ends, up to ``max_stage_steps``) and ``k`` candidates of
``tau'`` steps each, sized to the steps left before the decay phase; a search with no previous LR opens with
a log grid over its range. When no stage fits the budget the decay phase begins instead. The arithmetic
itself is :mod:`autolrs.stages`; the search that follows is :class:`~autolrs.candidate_search.CandidateSearch`.
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np

from . import stages
from .controller_state import ControllerState
from .decision import LR_RTOL, TAIL, Decision
from .records import StageRecord, event

__all__ = ["StagePlan"]


class StagePlan(ControllerState):
    """The planning of each stage of :class:`~autolrs.controller.StageController`."""

    def _remaining(self) -> int | None:
        """Steps left in the stages' span (before the decay phase); None without a budget."""
        return None if self.stable_end is None else self.stable_end - self.steps_taken

    def _explore_length(self, tau: int) -> int:
        cfg = self.config
        return stages.explore_length(tau, cast(int, cfg.explore_steps), cast(int, cfg.stage_steps), cfg.search_ratio,
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
        span = max(TAIL, 2 * self._explore_length(self._tau_next))
        self._start_loss = float(np.mean(self._tail[-span:])) if self._tail else None
        self._keep_losses = []
        self._hi = self._max_lr
        self._attempt = 0
        self._rollbacks = 0
        plan = stages.plan_stage(self._remaining(), self._tau_next, self._explore_length(self._tau_next),
                                 self._candidates(), cfg.min_explore_steps)
        if plan is None:
            return self._begin_decay()
        objective_kind: Literal["train", "val"] = (
            "val" if cfg.use_validation and self._tau_next >= cast(int, cfg.max_stage_steps) else "train")
        self._record = self._new_record("search", objective_kind)
        tau, n = plan
        if self._hi <= cfg.min_lr * (1 + LR_RTOL):
            # Every LR above min_lr diverged earlier in the run: nothing left to search.
            self._record["events"].append(
                event("range_collapsed", "search range collapsed to min_lr after divergence: keeping min_lr"))
            self._record.update({"tau": tau + self._candidates() * n, "lr": cfg.min_lr})
            return self._start_keep(cfg.min_lr, restore=False, snapshot=True)
        self._record.update({"tau": tau, "explore_steps": n})
        return self._start_search(restore=False, snapshot=True)

    def _new_record(self, kind: str, objective_kind: Literal["train", "val"]) -> StageRecord:
        return {
            "stage": self._stage, "kind": kind, "start_step": self.steps_taken, "tau": 0, "explore_steps": 0,
            "objective": objective_kind, "min_lr": self.config.min_lr, "max_lr": self._hi,
            "start_loss": self._start_loss, "previous_lr": self._previous_lr, "candidates": [], "lr": None,
            "forecast": None, "trial_loss": None, "keep_start_step": None, "kept_steps": 0, "loss_reached": None,
            "discarded": [], "events": [],
        }
