"""A controller's state as plain data: save, check, load, and upgrade a state saved by the previous version.

A mixin of :class:`~autolrs.controller.StageController`. :meth:`~StatePersistence.state_dict` copies the
fields that decide the next steps (and the search's own state); loading checks the version, the
configuration and the shape of every key (:func:`~autolrs.controller_state.check_controller_state`) before
anything changes, and reads a version-3 state (events as plain strings) by upgrading a copy of it.
"""

from __future__ import annotations

import copy
from typing import Any

from .controller_state import ControllerState, check_controller_state
from .records import event
from .search import BayesianSearch

__all__ = ["STATE_VERSION", "StatePersistence"]

STATE_VERSION = 4  # 4: events are {kind, message}; a version-3 state is upgraded on load


class StatePersistence(ControllerState):
    """``state_dict``, ``check_state_dict`` and ``load_state_dict`` of :class:`~autolrs.controller.StageController`."""

    _STATE_FIELDS = ("steps_taken", "kept_steps", "phase", "lr", "history", "begun", "_max_lr", "_hi", "_stage",
                     "_tau_next", "_attempt", "_rollbacks", "_record", "_candidate", "_keep_losses", "_tail",
                     "_start_loss", "_previous_lr")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as plain data (lists, dicts, numbers, strings)."""
        state = {name.lstrip("_"): copy.deepcopy(getattr(self, name)) for name in self._STATE_FIELDS}
        state["version"] = STATE_VERSION
        state["config"] = self.config.to_dict()
        state["search"] = None if self._search is None else self._search.state_dict()
        return state

    def check_state_dict(self, state: dict[str, Any]) -> None:
        """Raise if ``state`` cannot be loaded into this controller (changes nothing)."""
        self._checked(state)

    def _checked(self, state: dict[str, Any]) -> dict[str, Any]:
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
        if isinstance(saved, dict) and "forecast_noise" not in saved:  # saved before the option: no added noise
            saved = {**saved, "forecast_noise": 0.0}
        if isinstance(saved, dict) and "decay_shape" not in saved:  # saved before the option: linear decay
            saved = {**saved, "decay_shape": "linear"}
        if isinstance(saved, dict) and "first_tolerance" not in saved:  # saved before the option: no first-stage rule
            saved = {**saved, "first_tolerance": 0.0}
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
                search = BayesianSearch.from_state_dict(copy.deepcopy(state["search"]))
            except (TypeError, ValueError) as error:
                raise ValueError(f"This autolrs state's search cannot be rebuilt: {error}") from None
            # The search's noise comes from the configuration: a state where they differ (a search without
            # its noise under a config with one) is corrupt, and resuming it would change the run.
            if search.noise != self.config.search_noise:
                raise ValueError(f"This autolrs state's search assumes a forecast error of {search.noise!r}, but "
                                 f"its configuration {self.config.search_noise!r}: the state is corrupt.")
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = self._checked(state)
        for name in self._STATE_FIELDS:
            setattr(self, name, copy.deepcopy(state[name.lstrip("_")]))
        self._search = None
        if state["search"] is not None:
            # Kept phases need it too: a rolled-back stage chooses among the same candidates again.
            self._search = BayesianSearch.from_state_dict(state["search"])


def _upgrade_from_3(state: dict[str, Any]) -> dict[str, Any]:
    """A version-3 state (events as plain strings) as version 4 (events as ``{kind, message}``), copied."""
    state = copy.deepcopy(state)
    records = [r for r in [*(state.get("history") or []), state.get("record")] if isinstance(r, dict)]
    for record in records:
        events = record.get("events")
        if isinstance(events, list):
            record["events"] = [event("note", e) if isinstance(e, str) else e for e in events]
    state["version"] = 4
    return state
