"""Writers for autolrs's decisions: a JSON-lines decision log and TensorBoard scalars.

A callback is any object with some of the three hooks of :class:`Callback`, passed as
``AutoLRS(..., callbacks=[...])`` or ``sched.add_callback(...)``. The hooks run after the decision was
applied, so the run is consistent whatever a callback does; if one raises, the other callbacks still run,
then ``sched.step()`` (or ``finalize()``) re-raises the first exception: that step is already counted and
its decision applied, so catch it, if you want to, and go on with the next training step.

Under ``torch.distributed`` every rank decides the same and runs its callbacks: give them to rank 0 alone
(``callbacks=[logger] if rank == 0 else []``) to log once.

No torch import here: TensorBoard's ``SummaryWriter`` is imported when a :class:`TensorBoardLogger` needs one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .report import _json_safe

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from .torch.driver import AutoLRS

__all__ = ["PHASE_CODES", "Callback", "JSONLinesLogger", "TensorBoardLogger"]

# The phase as a number, for a scalar plot: the phase a step ran in (``info["phase"]``).
PHASE_CODES = {"warmup": 0, "explore": 1, "keep": 2, "decay": 3, "done": 4}


class Callback:
    """The hooks autolrs calls; subclass it, or define any of these methods on your own object.

    ``info`` of :meth:`on_step`: ``step`` (optimizer steps so far, search included: 1 for the first),
    ``phase`` and ``lr`` (the phase and first param group's LR that step ran with), ``loss`` (the loss
    reported for it, averaged over ranks and micro-batches), ``val_loss`` (None unless the step asked for
    one) and ``decision`` (the :class:`~autolrs.controller.Decision` for the next step, as a dict: ``lr``,
    ``phase``, ``restore``, ``snapshot``, ``done``).

    ``candidate`` and ``record`` are copies of the stage records of ``sched.history`` (README, "The
    history"); a candidate carries its ``stage`` and its ``index`` in the stage too. ``sched.steps_taken``
    is the step at which they ended.
    """

    def on_step(self, sched: AutoLRS, info: dict[str, Any]) -> None:
        """After every optimizer step reported to ``sched.step()``."""

    def on_candidate_end(self, sched: AutoLRS, candidate: dict[str, Any]) -> None:
        """After a candidate LR's trial window ends (or diverges): its losses, forecast and trial loss."""

    def on_stage_end(self, sched: AutoLRS, record: dict[str, Any]) -> None:
        """After a stage (or the decay phase) ends: the chosen ``lr``, every candidate, ``forecast`` and
        ``loss_reached``."""


class JSONLinesLogger(Callback):
    """Writes one strict-JSON object per line and event (non-finite numbers become ``null``).

    Lines: ``{"event": "step", **info}``, ``{"event": "candidate_end", "step": n, "candidate": {...}}`` and
    ``{"event": "stage_end", "step": n, "record": {...}}`` (:class:`Callback` documents the payloads). Each
    line is flushed as written, so the log is readable while the run goes on.

    Args:
        path: the file to write.
        mode: ``"w"`` starts the file afresh; ``"a"`` appends (a resumed run).
        steps: write the per-step lines too; False keeps the candidate and stage lines only.

    Example:
        >>> logger = JSONLinesLogger("decisions.jsonl")                        # doctest: +SKIP
        >>> sched = AutoLRS(model, optimizer, ..., callbacks=[logger])         # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], *, mode: str = "w", steps: bool = True) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path, but got {type(path).__name__}.")
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' (a new log) or 'a' (append to a resumed run's), but got {mode!r}.")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.steps = bool(steps)
        self._file = open(self.path, mode, buffering=1, encoding="utf-8")  # line-buffered: flushed per event

    def _write(self, event: dict[str, Any]) -> None:
        if self._file.closed:
            raise ValueError(f"JSONLinesLogger({str(self.path)!r}) was closed; it cannot log any more.")
        self._file.write(json.dumps(_json_safe(event), allow_nan=False) + "\n")

    def on_step(self, sched: AutoLRS, info: dict[str, Any]) -> None:
        if self.steps:
            self._write({"event": "step", **info})

    def on_candidate_end(self, sched: AutoLRS, candidate: dict[str, Any]) -> None:
        self._write({"event": "candidate_end", "step": sched.steps_taken, "candidate": candidate})

    def on_stage_end(self, sched: AutoLRS, record: dict[str, Any]) -> None:
        self._write({"event": "stage_end", "step": sched.steps_taken, "record": record})

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "JSONLinesLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _summary_writer(log_dir: str | os.PathLike[str]) -> SummaryWriter:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ImportError(
            "TensorBoardLogger needs the tensorboard package: pip install 'autolrs[tensorboard]' "
            f"(importing torch.utils.tensorboard failed: {error})"
        ) from error
    return SummaryWriter(log_dir=str(log_dir))


class TensorBoardLogger(Callback):
    """Writes autolrs's decisions as TensorBoard scalars, against the optimizer step (search included).

    Tags (``prefix`` first, ``autolrs`` by default):

    * every step: ``lr`` and ``phase`` (the step's, :data:`PHASE_CODES`: 0 warmup, 1 explore, 2 keep,
      3 decay), ``loss`` and, when measured, ``val_loss``;
    * at each candidate's end: ``candidate/lr`` and ``candidate/forecast`` (when it did not diverge);
    * at each stage's end: ``stage/lr`` (the chosen LR; the decay's starting LR), ``stage/forecast`` (the
      chosen LR's forecast) and ``stage/loss_reached``: forecast against reached loss, stage by stage.

    Args:
        log_dir: a folder for a new ``torch.utils.tensorboard.SummaryWriter``, or a writer of yours (anything
            with ``add_scalar``, e.g. the one your training loop already logs with).
        prefix: the tags' first part.
    """

    def __init__(self, log_dir: Any, *, prefix: str = "autolrs") -> None:  # a path, or any writer
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty string, but got {prefix!r}.")
        if callable(getattr(log_dir, "add_scalar", None)):
            self.writer, self._owned = log_dir, False
        elif isinstance(log_dir, (str, os.PathLike)):
            self.writer, self._owned = _summary_writer(log_dir), True
        else:
            raise TypeError(f"log_dir must be a folder or a SummaryWriter, but got {type(log_dir).__name__}.")
        self.prefix = prefix

    def _scalar(self, tag: str, value: float | None, step: int) -> None:
        if value is not None:
            self.writer.add_scalar(f"{self.prefix}/{tag}", value, global_step=step)

    def on_step(self, sched: AutoLRS, info: dict[str, Any]) -> None:
        step = info["step"]
        self._scalar("lr", info["lr"], step)
        self._scalar("phase", PHASE_CODES[info["phase"]], step)
        self._scalar("loss", info["loss"], step)
        self._scalar("val_loss", info["val_loss"], step)

    def on_candidate_end(self, sched: AutoLRS, candidate: dict[str, Any]) -> None:
        self._scalar("candidate/lr", candidate["lr"], sched.steps_taken)
        self._scalar("candidate/forecast", candidate["forecast"], sched.steps_taken)

    def on_stage_end(self, sched: AutoLRS, record: dict[str, Any]) -> None:
        for tag, key in (("stage/lr", "lr"), ("stage/forecast", "forecast"), ("stage/loss_reached", "loss_reached")):
            self._scalar(tag, record[key], sched.steps_taken)
        self.writer.flush()  # a stage is the unit a reader waits for

    def close(self) -> None:
        """Flush; close the writer if this logger made it."""
        self.writer.flush()
        if self._owned:
            self.writer.close()
