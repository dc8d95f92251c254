"""The shape of a :class:`~autolrs.controller.StageController` state: every key, type and range.

``load_state_dict`` checks a saved state against it before anything changes, so that a corrupted or
hand-edited state (a key missing, ``steps_taken='85'``, a NaN LR, a candidate without its losses) fails at
once with a message naming the key, instead of being accepted and failing steps later, or running on wrong.
A state that passes has the types every controller method relies on; values are as the run left them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Literal

from .decision import Decision, Phase
from .records import EVENT_KINDS, Candidate, EventKind, StageRecord

if TYPE_CHECKING:
    from .config import AutoLRSConfig
    from .search import BayesianSearch

__all__ = ["ControllerState", "check_controller_state"]

Check = Callable[[Any, str], None]

PHASES = ("warmup", "explore", "keep", "decay", "done")
FAILURES = (None, "nonfinite", "explosion", "noise", "val_nan", "val_inf")


def _fail(where: str, value: Any, expected: str) -> None:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise ValueError(f"This autolrs state is corrupt: {where} is {shown}, expected {expected}.")


def _int(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(where, value, "an integer >= 0")


def _number(value: Any, where: str, *, positive: bool = False, finite: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(where, value, "a number")
    if math.isnan(value) or (finite and math.isinf(value)):
        _fail(where, value, "a finite number")
    if positive and not value > 0:
        _fail(where, value, "a number > 0")


def _lr(value: Any, where: str) -> None:
    _number(value, where)
    if value < 0:
        _fail(where, value, "an LR >= 0")


def _optional(check: Check) -> Check:
    def run(value: Any, where: str) -> None:
        if value is not None:
            check(value, where)
    return run


def _bool(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        _fail(where, value, "True or False")


def _one_of(*choices: Any) -> Check:
    def run(value: Any, where: str) -> None:
        if isinstance(value, bool) or value not in choices:
            _fail(where, value, f"one of {list(choices)}")
    return run


def _list_of(check: Check) -> Check:
    def run(value: Any, where: str) -> None:
        if not isinstance(value, list):
            _fail(where, value, "a list")
        for i, item in enumerate(value):
            check(item, f"{where}[{i}]")
    return run


def _string(value: Any, where: str) -> None:
    if not isinstance(value, str):
        _fail(where, value, "a string")


def _dict(schema: dict[str, Check], optional: dict[str, Check] | None = None) -> Check:
    optional = optional or {}

    def run(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            _fail(where, value, "a dict")
        missing = sorted(set(schema) - set(value))
        unknown = sorted(set(value) - set(schema) - set(optional))
        if missing or unknown:
            raise ValueError(
                f"This autolrs state is corrupt: {where} lacks {missing} or has unknown keys {unknown}."
            )
        for key, check in {**schema, **optional}.items():
            if key in value:
                check(value[key], f"{where}.{key}")
    return run


def _schema(floor: float | None) -> Check:
    """The check of a whole state; losses must lie at or above ``floor`` (the config's ``loss_floor``)."""

    def loss(value: Any, where: str) -> None:
        _number(value, where)
        if floor is not None and value < floor:
            _fail(where, value, f"a loss >= loss_floor={floor}")

    def raw_loss(value: Any, where: str) -> None:  # a kept phase's raw loss: NaN/inf is what ends the phase
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(where, value, "a number")
        if floor is not None and value < floor:
            _fail(where, value, f"a loss >= loss_floor={floor}")

    def unit(value: Any, where: str) -> None:
        _number(value, where)
        if not 0.0 <= value <= 1.0:
            _fail(where, value, "a number in [0, 1]")

    def non_negative(value: Any, where: str) -> None:
        _number(value, where)
        if value < 0:
            _fail(where, value, "a number >= 0")

    positive = lambda v, w: _number(v, w, positive=True)  # noqa: E731
    opt_loss, opt_lr = _optional(loss), _optional(_lr)
    losses = _list_of(opt_loss)  # closed candidates keep non-finite losses as None
    candidate = _dict({
        "lr": _lr, "attempt": _int, "steps": _int, "losses": losses, "val_steps": _list_of(_int),
        "val_losses": losses, "forecast": opt_loss, "trial_loss": opt_loss, "diverged": _bool,
        "failure": _one_of(*FAILURES),
    }, optional={"interrupted": _bool})
    discarded = _dict({"start_step": _optional(_int), "steps": _int, "lr": _lr, "loss_reached": opt_loss})
    record = _dict({
        "stage": _int, "kind": _string, "start_step": _int, "tau": _int, "explore_steps": _int,
        "objective": _one_of("train", "val"), "min_lr": _lr, "max_lr": _lr, "start_loss": opt_loss,
        "previous_lr": opt_lr, "candidates": _list_of(candidate), "lr": opt_lr, "forecast": opt_loss,
        "trial_loss": opt_loss, "keep_start_step": _optional(_int), "kept_steps": _int,
        "loss_reached": opt_loss, "discarded": _list_of(discarded),
        "events": _list_of(_dict({"kind": _one_of(*EVENT_KINDS), "message": _string})),
    }, optional={"rollbacks": _int, "progress_t": _optional(lambda v, w: _number(v, w, finite=False))})
    search = _dict({
        "min_lr": positive, "max_lr": positive, "kappa": non_negative, "seed": _int, "first_lr": opt_lr,
        "initial": _list_of(_lr), "grid_size": _int, "min_distance": non_negative, "x": _list_of(unit),
        "y": _list_of(lambda v, w: _number(v, w, finite=False)),  # a failed candidate's value is +inf
        "theta": _optional(_list_of(_number)),
    }, optional={"noise": non_negative})
    return _dict({
        "version": _int, "config": lambda v, w: None, "search": _optional(search),
        "steps_taken": _int, "kept_steps": _int, "phase": _one_of(*PHASES), "lr": _lr,
        "history": _list_of(record), "begun": _bool, "max_lr": positive, "hi": positive, "stage": _int,
        "tau_next": _int, "attempt": _int, "rollbacks": _int, "record": _optional(record),
        "candidate": _optional(candidate), "keep_losses": _list_of(raw_loss), "tail": _list_of(loss),
        "start_loss": opt_loss, "previous_lr": opt_lr,
    })


def check_controller_state(state: Any, loss_floor: float | None) -> None:
    """Raise ``ValueError`` naming the first key whose value cannot be a controller's; changes nothing."""
    _schema(loss_floor)(state, "state")
    search = state["search"]
    if search is not None and len(search["x"]) != len(search["y"]):
        _fail("state.search.y", search["y"], f"one value per observed x ({len(search['x'])})")
    if state["kept_steps"] > state["steps_taken"]:
        _fail("state.kept_steps", state["kept_steps"], f"<= steps_taken ({state['steps_taken']})")
    phase, record, candidate = state["phase"], state["record"], state["candidate"]
    if phase == "explore" and (record is None or candidate is None or state["search"] is None):
        raise ValueError("This autolrs state is corrupt: it is mid-search but lacks the stage record, the "
                         "candidate or the search.")
    if phase in ("keep", "decay") and record is None:
        raise ValueError(f"This autolrs state is corrupt: it is in a {phase} phase but has no stage record.")
    if record is not None:
        # A candidate of the stage in progress closed either diverged or forecast: the choice reads its forecast.
        for i, closed in enumerate(record["candidates"]):
            if not closed["diverged"] and closed["forecast"] is None and not closed.get("interrupted"):
                _fail(f"state.record.candidates[{i}].forecast", None,
                      "the forecast of a candidate that closed without diverging")
    if candidate is not None and any(x is None for x in candidate["losses"]):
        _fail("state.candidate.losses", candidate["losses"], "the finite losses of a candidate still running")


class ControllerState:
    """The attributes of a :class:`~autolrs.controller.StageController` that its phase mixins share, typed.

    Declarations only (no values, no behaviour): ``StageController.__init__`` sets them. The methods below are
    the ones a mixin calls on another part of the controller; they exist for the type checker alone.
    """

    config: AutoLRSConfig
    steps_taken: int
    kept_steps: int
    phase: Phase
    lr: float
    history: list[StageRecord]
    begun: bool
    _max_lr: float
    _hi: float
    _stage: int
    _tau_next: int
    _attempt: int
    _rollbacks: int
    _record: StageRecord | None       # the stage in progress
    _candidate: Candidate | None      # the candidate in progress (its losses raw floats until it closes)
    _keep_losses: list[float]
    _tail: list[float]
    _start_loss: float | None
    _previous_lr: float | None
    _search: BayesianSearch | None

    if TYPE_CHECKING:
        # autolrs.controller
        @property
        def stable_end(self) -> int | None: ...
        def _close_stage(self) -> None: ...
        def _push_tail(self, loss: float) -> None: ...
        def _threshold(self) -> float | None: ...
        def _failure_kind(self, losses: list[float]) -> str: ...
        def _diverged(self, losses: list[float]) -> bool: ...

        # autolrs.stage_plan
        def _remaining(self) -> int | None: ...
        def _grid(self) -> list[float]: ...
        def _candidates(self) -> int: ...
        def _begin_stage(self) -> Decision: ...
        def _new_record(self, kind: str, objective_kind: Literal["train", "val"]) -> StageRecord: ...

        # autolrs.candidate_search
        def _warm_lr(self) -> float | None: ...
        def _search_range(self) -> tuple[float, float]: ...
        def _start_search(self, *, restore: bool, snapshot: bool) -> Decision: ...
        def _attempt_candidates(self) -> list[Candidate]: ...
        def _best(self, candidates: list[Candidate]) -> Candidate | None: ...
        def _keep_candidate(self, candidate: Candidate) -> Decision: ...

        # autolrs.rollback
        def _retry(self, kind: EventKind, why: str, failed_lr: float, *, failure: str | None,
                   persist: bool = True) -> Decision: ...
        def _describe(self, failure: str | None, losses: list[float]) -> str: ...
        def _advice_at_limit(self, failure: str | None, exhausted: bool) -> str: ...
        def _event(self, kind: EventKind, message: str, *, warn: bool = True) -> None: ...

        # autolrs.kept_trajectory
        def _start_keep(self, lr: float, *, restore: bool, snapshot: bool = False) -> Decision: ...
        def _begin_decay(self) -> Decision: ...
