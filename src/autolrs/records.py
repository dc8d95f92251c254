"""The records a run keeps: one per stage, one per candidate, and the events of a stage.

They are plain dicts (``sched.history`` is JSON and ``state_dict()`` loads with ``weights_only=True``), typed
here so that readers (``autolrs.report``, the benchmarks) rely on keys and on an event's ``kind``, never on
the wording of its message.
"""

from __future__ import annotations

from typing import Literal, Optional, TypedDict

__all__ = ["EVENT_KINDS", "EventKind", "Event", "Candidate", "Discarded", "StageRecord", "event"]

EventKind = Literal[
    "all_diverged",               # every candidate of a search diverged: the stage goes on lower
    "val_fn_failed",              # val_fn returned NaN/inf for the candidates
    "rolled_back_diverged",       # the kept stage diverged: back to the snapshot
    "rolled_back_lost_progress",  # the kept stage gave back its trial's progress: back to the snapshot
    "decay_restarted",            # the decay phase diverged: restarted from half the LR
    "spikes_kept",                # finite spikes stay on the kept trajectory: batch noise, or past the roll-back limit
    "range_collapsed",            # every LR above min_lr failed earlier: min_lr kept without a search
    "no_search",                  # an LR kept without a (new) search
    "stopped",                    # the run finished (finalize() or budget) during this stage
    "stopped_mid_search",         # finalize() during a search: which trained state was kept, and why
    "note",                       # an event of a state saved before events had kinds
]
EVENT_KINDS: tuple[str, ...] = EventKind.__args__  # type: ignore[attr-defined]


class Event(TypedDict):
    kind: EventKind
    message: str


class Candidate(TypedDict, total=False):
    lr: float
    attempt: int
    steps: int
    losses: list[Optional[float]]      # one per step; None where it was NaN/inf
    val_steps: list[int]
    val_losses: list[Optional[float]]
    forecast: Optional[float]          # the loss forecast for the stage's end (None: diverged)
    trial_loss: Optional[float]        # the loss level its window reached
    diverged: bool
    failure: Optional[str]             # how it failed: autolrs.safety.failure_kind, "val_nan", "val_inf"
    interrupted: bool                  # the run stopped during it


class Discarded(TypedDict):
    start_step: Optional[int]
    steps: int
    lr: float
    loss_reached: Optional[float]


class StageRecord(TypedDict, total=False):
    stage: int
    kind: str                          # "search", "decay" or "hold"
    start_step: int
    tau: int
    explore_steps: int
    objective: Literal["train", "val"]
    min_lr: float
    max_lr: float
    start_loss: Optional[float]
    previous_lr: Optional[float]
    candidates: list[Candidate]
    lr: Optional[float]
    forecast: Optional[float]
    trial_loss: Optional[float]
    keep_start_step: Optional[int]
    kept_steps: int
    loss_reached: Optional[float]
    discarded: list[Discarded]
    events: list[Event]
    rollbacks: int
    progress_t: Optional[float]        # autolrs.choice.progress_t of the kept stage (absent before it ends)


def event(kind: EventKind, message: str) -> Event:
    """An event of ``kind`` (one of :data:`EVENT_KINDS`) with its human-readable ``message``."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"Unknown event kind {kind!r}; expected one of {list(EVENT_KINDS)}.")
    return {"kind": kind, "message": message}
