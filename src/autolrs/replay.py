"""Replay the schedule a run found: as plain data, and as a ``torch.optim.lr_scheduler.LRScheduler``.

The *found schedule* is the LR of every kept step of a finished run, in order: the warmup, the kept phase
of each stage, the decay phase. Search steps and rolled-back kept phases are not in it, so its length is
the run's ``kept_steps``. It is plain data (:func:`schedule_from_history`, ``AutoLRS.found_schedule()``)::

    {"format": "autolrs.found_schedule", "version": 1,
     "total_steps": 4000,    # the run's budget, search included (None without one)
     "steps_taken": 4000,    # the run's optimizer steps, search included
     "kept_steps": 3480,     # len(lrs)
     "lrs": [...],           # the LR of each kept step (the first param group's)
     "segments": [{"kind": "warmup" | "stage" | "hold" | "decay", "stage": 0, "start": 0, "steps": 175,
                   "length": 175, "lr": 0.21, "start_step": 45}, ...]}  # a decay also has "shape"

A segment covers kept steps ``start .. start + steps - 1`` (``start_step``: where it began in the run,
search included). Its ``i``-th step runs at ``lr * (i + 1) / length`` (warmup, up to ``lr``), ``lr``
(a stage's kept phase, or the ``hold`` of a budget too short for a last search) or, for the decay,
``lr (1 - sqrt(x))`` (``"shape": "1-sqrt"``) or ``lr (1 - x)`` (``"linear"``, the default of a segment
without a shape) with ``x = (i + 1) / (length + 1)``, exactly the controller's formulas;
``length`` is the phase's planned length (a run stopped early may keep fewer steps). ``lrs`` is these
values, for reading; a replay recomputes them from the segments.

:class:`ReplayLR` replays it, optionally stretched to another budget: every segment boundary ``b`` moves to
``round(b * total_steps / kept_steps)``, each stage's LR stays constant over its stretched span (piecewise
constant by stage) and the warmup and the decay keep their shapes over theirs (a complete decay still falls
to zero at the new end). At ``total_steps=kept_steps`` the replay is step-for-step the found schedule.
"""

from __future__ import annotations

import bisect
import math
import numbers
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.optim.lr_scheduler import LRScheduler

from . import stages
from .records import StageRecord

if TYPE_CHECKING:
    from .config import AutoLRSConfig

__all__ = ["SCHEDULE_FORMAT", "ReplayLR", "check_schedule", "replay_lrs", "schedule_from_history"]

SCHEDULE_FORMAT = "autolrs.found_schedule"
SCHEDULE_VERSION = 1
_KINDS = ("warmup", "stage", "hold", "decay")


# -- the schedule as data --------------------------------------------------------------------------------
def schedule_from_history(history: list[StageRecord], config: AutoLRSConfig, *, kept_steps: int,
                          steps_taken: int) -> dict[str, Any]:
    """The found schedule of a finished run, from its history and configuration.

    Args:
        history: the run's stage records (``AutoLRS.history`` / ``StageController.history``).
        config: its :class:`~autolrs.config.AutoLRSConfig` (for the warmup, which has no record).
        kept_steps, steps_taken: the run's counts at its end.
    """
    segments: list[dict[str, Any]] = []
    covered = 0

    def add(kind: str, stage: int | None, start_step: int, steps: int, lr: float, length: int) -> None:
        nonlocal covered
        if steps > 0:
            segment: dict[str, Any] = {"kind": kind, "stage": stage, "start": covered, "steps": steps, "length": length,
                       "lr": float(lr), "start_step": start_step}
            if kind == "decay":
                segment["shape"] = config.decay_shape
            segments.append(segment)
            covered += steps

    # Every stage starts after the whole warmup; a run stopped in its warmup kept only the steps it took.
    warmup = config.warmup_steps if history else min(config.warmup_steps, kept_steps)
    add("warmup", None, 0, warmup, cast(float, config.warmup_lr), config.warmup_steps)  # resolved by the config
    for r in history:
        # A record's kept phase is the last one it ran: rolled-back ones were moved to r["discarded"].
        if r["keep_start_step"] is None or r["kept_steps"] == 0:
            continue
        kind = "stage" if r["kind"] == "search" else r["kind"]
        add(kind, r["stage"], r["keep_start_step"], r["kept_steps"], cast(float, r["lr"]),  # a kept phase has its LR
            r["tau"] if kind == "decay" else r["kept_steps"])
    missing = kept_steps - covered
    if missing:
        # finalize() during a search keeps the running candidate's branch when it made progress: its steps
        # count as kept, but no record marks them kept (the stage's search never finished).
        last = history[-1] if history else None
        branch = last["candidates"][-1] if last and last["candidates"] else None
        if missing < 0 or branch is None or not branch.get("interrupted") or branch["steps"] != missing:
            raise RuntimeError(
                f"autolrs: the history accounts for {covered} kept steps but the run kept {kept_steps}; the "
                "history does not belong to this run (or is corrupt)."
            )
        # A branch implies a last record.
        add("stage", cast(StageRecord, last)["stage"], steps_taken - missing, missing, branch["lr"], missing)
    return {"format": SCHEDULE_FORMAT, "version": SCHEDULE_VERSION, "total_steps": config.total_steps,
            "steps_taken": steps_taken, "kept_steps": covered,
            "lrs": [_segment_lr(s, i) for s in segments for i in range(s["steps"])], "segments": segments}


def _segment_lr(segment: dict[str, Any], i: int) -> float:
    """The LR of the ``i``-th step of a segment: the controller's own formulas (bit-equal)."""
    lr: float
    kind, lr, length = segment["kind"], segment["lr"], segment["length"]
    if kind == "warmup":
        return stages.warmup_lr(lr, length, i)
    if kind == "decay":
        return stages.decay_lr(lr, length, i, segment.get("shape", "linear"))
    return lr


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_schedule(schedule: object) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``schedule`` is a found schedule (see the module docstring)."""
    if not isinstance(schedule, dict) or "segments" not in schedule or "kept_steps" not in schedule:
        raise TypeError(
            f"Expected a found schedule (the dict of AutoLRS.found_schedule(), or its JSON loaded back), but got "
            f"{type(schedule).__name__}{' without segments/kept_steps' if isinstance(schedule, dict) else ''}."
        )
    if schedule.get("format", SCHEDULE_FORMAT) != SCHEDULE_FORMAT or schedule.get("version", 1) != SCHEDULE_VERSION:
        raise ValueError(f"This schedule is {schedule.get('format')!r} version {schedule.get('version')!r}; this "
                         f"autolrs reads {SCHEDULE_FORMAT!r} version {SCHEDULE_VERSION}.")
    segments, kept = schedule["segments"], schedule["kept_steps"]
    if not _is_int(kept) or kept < 1:
        raise ValueError(f"The schedule's kept_steps must be an integer >= 1, but got {kept!r}: nothing to replay.")
    if not isinstance(segments, list):
        raise TypeError(f"The schedule's segments must be a list, but got {type(segments).__name__}.")
    start = 0
    for k, s in enumerate(segments):
        what = f"Segment {k} of the schedule"
        if not isinstance(s, dict) or s.get("kind") not in _KINDS:
            raise ValueError(f"{what} must be a dict with a kind in {list(_KINDS)}, but got {s!r}.")
        if not all(_is_int(s.get(key)) for key in ("start", "steps", "length")):
            raise TypeError(f"{what} needs integer start, steps and length, but got {s!r}.")
        if s["start"] != start or s["steps"] < 1 or s["length"] < s["steps"]:
            raise ValueError(f"{what} covers steps {s['start']}..{s['start'] + s['steps'] - 1} with length "
                             f"{s['length']}; expected it to start at {start}, with 1 <= steps <= length.")
        lr = s.get("lr")
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"{what} has lr={lr!r}; expected a finite lr >= 0.")
        if s["kind"] == "decay" and s.get("shape", "linear") not in stages.DECAY_SHAPES:
            raise ValueError(f"{what} has shape={s['shape']!r}; expected one of {list(stages.DECAY_SHAPES)}.")
        start += s["steps"]
    if start != kept or ("lrs" in schedule and len(schedule["lrs"]) != kept):
        raise ValueError(f"The schedule's segments cover {start} steps and its lrs "
                         f"{len(schedule.get('lrs', []))}, but kept_steps is {kept}: the schedule is corrupt.")


def _check_total_steps(total_steps: int | None) -> None:
    if total_steps is not None and (not _is_int(total_steps) or total_steps < 1):
        raise ValueError(f"total_steps must be an integer >= 1 (the replay's budget) or None, but got "
                         f"{total_steps!r}.")


def _stretch(schedule: dict[str, Any], total_steps: int) -> list[dict[str, Any]]:
    """The schedule's segments on a budget of ``total_steps`` steps (module docstring: how it stretches)."""
    kept = schedule["kept_steps"]
    out: list[dict[str, Any]] = []
    for s in schedule["segments"]:
        # Integer rounding, half up: the last boundary lands exactly on total_steps.
        a = (2 * s["start"] * total_steps + kept) // (2 * kept)
        b = (2 * (s["start"] + s["steps"]) * total_steps + kept) // (2 * kept)
        if b == a:
            continue  # shrunk to nothing
        complete = s["length"] == s["steps"]
        length = b - a if complete else max(b - a, (2 * s["length"] * total_steps + kept) // (2 * kept))
        out.append({**s, "start": a, "steps": b - a, "length": length})
    return out


def replay_lrs(schedule: dict[str, Any], total_steps: int | None = None) -> list[float]:
    """The LR of every step of a replay (:class:`ReplayLR`'s), without an optimizer.

    Args:
        schedule: a found schedule.
        total_steps: the replay's budget; None: the schedule's own ``kept_steps`` (the found LRs exactly).
    """
    check_schedule(schedule)
    _check_total_steps(total_steps)
    segments = _stretch(schedule, schedule["kept_steps"] if total_steps is None else total_steps)
    return [_segment_lr(s, i) for s in segments for i in range(s["steps"])]


# -- the replay as a scheduler ---------------------------------------------------------------------------
class ReplayLR(LRScheduler):
    """Replays a found schedule, one LR per ``scheduler.step()``, as any PyTorch LR scheduler.

    No search: every step is a training step. Call ``scheduler.step()`` after each ``optimizer.step()``
    (Lightning and Hugging Face's Trainer take it like any ``LRScheduler``). Steps past ``total_steps`` keep
    its last LR. The schedule's LRs are absolute; the optimizer's own LRs only set each param group's ratio
    to the first group's, which is kept (as in ``AutoLRS``).

    Args:
        optimizer: the optimizer whose LRs are set.
        schedule: a found schedule: ``AutoLRS.found_schedule()``, or that dict saved as JSON and loaded back.
        total_steps: the replay's budget in optimizer steps; None replays the schedule as found
            (``schedule["kept_steps"]`` steps). Another value stretches it linearly (module docstring).
        last_epoch: as every ``LRScheduler``'s; use :meth:`load_state_dict` to resume instead.

    Example:
        >>> import torch
        >>> schedule = {"kept_steps": 4, "segments": [
        ...     {"kind": "stage", "stage": 0, "start": 0, "steps": 2, "length": 2, "lr": 0.1},
        ...     {"kind": "decay", "stage": 1, "start": 2, "steps": 2, "length": 2, "lr": 0.1}]}
        >>> optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
        >>> replay = ReplayLR(optimizer, schedule, total_steps=8)
        >>> lrs = []
        >>> for _ in range(8):
        ...     lrs.append(round(optimizer.param_groups[0]["lr"], 4)); optimizer.step(); replay.step()
        >>> lrs
        [0.1, 0.1, 0.1, 0.1, 0.08, 0.06, 0.04, 0.02]
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: dict[str, Any], total_steps: int | None = None,
                 last_epoch: int = -1) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, but got {type(optimizer).__name__}.")
        check_schedule(schedule)
        _check_total_steps(total_steps)
        first = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0].get("lr"))
        if first is None or float(first) <= 0:
            raise ValueError(f"The first param group's lr is {first!r}; ReplayLR keeps the other groups' ratios "
                             "to it, so it must be > 0 (any positive value works: the schedule replaces it).")
        self.total_steps = schedule["kept_steps"] if total_steps is None else total_steps
        # Plain data only: LRScheduler.state_dict() saves every attribute (loads with weights_only=True).
        self.segments = _stretch(schedule, self.total_steps)
        self._starts = [s["start"] for s in self.segments]
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int) -> float:
        """The scheduled LR (first param group) of the optimizer step ``step`` (0-based)."""
        step = min(max(step, 0), self.total_steps - 1)
        segment = self.segments[bisect.bisect_right(self._starts, step) - 1]
        return _segment_lr(segment, step - segment["start"])

    def get_lr(self) -> list[float | torch.Tensor]:  # LRScheduler's type; these are all floats
        lr, first = self.lr_at(self.last_epoch), float(self.base_lrs[0])
        # The ratio first, so that the first group gets the scheduled LR bit for bit (x 1.0).
        return [lr * (float(base) / first) for base in self.base_lrs]

    _get_closed_form_lr = get_lr  # get_lr depends on last_epoch alone
