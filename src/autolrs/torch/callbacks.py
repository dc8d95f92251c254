"""The callbacks of one :class:`~autolrs.AutoLRS` run: who is told of each step, candidate and stage.

A callback defines any of ``on_step(sched, info)``, ``on_candidate_end(sched, candidate)`` and
``on_stage_end(sched, record)`` (:class:`autolrs.loggers.Callback` documents them). The ends of candidates and
stages are told apart from the controller's records (how many are closed, how many candidates the open one
holds) before and after each step, so the controller knows nothing of callbacks.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from ..controller import StageController
    from .driver import AutoLRS

__all__ = ["Callbacks", "HOOKS"]

HOOKS = ("on_step", "on_candidate_end", "on_stage_end")


def _check_callback(callback: object) -> None:
    if not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
        raise TypeError(
            f"A callback must define at least one of {', '.join(HOOKS)} (see autolrs.loggers.Callback), but "
            f"{type(callback).__name__} defines none."
        )


class Callbacks:
    """The callbacks of a run, checked when added; falsy when there are none (nothing to track)."""

    def __init__(self, callbacks: Iterable[object] = ()) -> None:
        self._callbacks: list[object] = []  # duck-typed: any object defining one of HOOKS
        for callback in callbacks:
            self.add(callback)

    def add(self, callback: object) -> None:
        _check_callback(callback)
        self._callbacks.append(callback)

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    @staticmethod
    def mark(controller: StageController) -> tuple[int, int]:
        """How many stage records are closed, and how many candidates the open one holds."""
        # Read only: the record of the stage in progress (None in the warmup, and between stages).
        record = controller._record
        return len(controller.history), 0 if record is None else len(record["candidates"])

    def notify(self, sched: AutoLRS, info: dict[str, Any] | None, mark: tuple[int, int]) -> None:
        """Run the callbacks for the step ``info`` and the candidates and stages closed since ``mark``.

        Called after the decision was applied: whatever a callback does, the run is consistent. Every
        callback runs; the first exception raised is then re-raised (the step is already counted: go on
        with the next training step, do not report this one again). Callbacks get copies of the records,
        so a callback that changes them cannot change the run.
        """
        controller = sched.controller
        closed, n_candidates = mark
        records = controller.history[closed:]
        open_record = controller._record
        candidates: list[dict[str, object]] = []
        for k, record in enumerate(records + ([open_record] if open_record is not None else [])):
            skip = n_candidates if k == 0 else 0  # the first is the record that was open at the mark
            candidates += [{"stage": record["stage"], "index": i, **copy.deepcopy(c)}
                           for i, c in enumerate(record["candidates"][skip:], start=skip)]
        events: list[tuple[str, object]] = [("on_step", info)] if info is not None else []
        events += [("on_candidate_end", c) for c in candidates]
        events += [("on_stage_end", copy.deepcopy(r)) for r in records]
        error = None
        for hook, payload in events:
            for callback in self._callbacks:
                method = getattr(callback, hook, None)
                if method is None:
                    continue
                try:
                    method(sched, payload)
                except Exception as exc:  # noqa: BLE001 - re-raised below, once every callback has run
                    error = error or exc
        if error is not None:
            raise error
