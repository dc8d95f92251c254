"""Read-outs of a run: the stage table, a JSON record and a plot of the schedule.

Everything here works from :attr:`AutoLRS.history` (plain data) and an optional per-step trace
``[(step, phase, lr, loss), ...]`` that a training loop can record; no torch import. matplotlib is
imported only by :func:`plot_run`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, cast

from . import stages
from .records import Candidate, Event, StageRecord

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["stage_table", "write_json", "plot_run", "candidate_steps"]


def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


# What the stage table's note column says for each event kind (autolrs.records.EVENT_KINDS).
EVENT_LABELS = {
    "all_diverged": "all diverged",
    "val_fn_failed": "val_fn failed",
    "rolled_back_diverged": "rolled back (diverged)",
    "rolled_back_lost_progress": "rolled back (lost progress)",
    "decay_restarted": "decay restarted",
    "spikes_kept": "spikes kept",
    "range_collapsed": "range collapsed",
    "no_search": "no search",
    "stopped": "stopped",
    "stopped_mid_search": "stopped mid-search",
}


def _event_label(event: Event) -> str:
    """A short label for a stage event (the full message is in the history and the warning)."""
    return EVENT_LABELS.get(event["kind"], event["message"].split(":")[0])


def stage_table(history: Sequence[StageRecord]) -> str:
    """A fixed-width table: one row per stage (tau, candidates tried, chosen LR, forecast vs loss reached)."""
    header = ("stage", "start", "tau", "tau'", "tried", "div.", "objective", "chosen lr", "forecast", "reached",
              "note")
    rows = []
    for r in history:
        tried = len(r["candidates"])
        diverged = sum(1 for c in r["candidates"] if c["diverged"])
        note = "; ".join(_event_label(e) for e in r["events"])
        objective = r["objective"] if r.get("kind", "search") == "search" else r["kind"]
        rows.append((str(r["stage"]), str(r["start_step"]), str(r["tau"]), str(r["explore_steps"]), str(tried),
                     str(diverged), objective, _fmt(r["lr"], ".3g"), _fmt(r["forecast"]),
                     _fmt(r["loss_reached"]), note))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | Path, **record: Any) -> Path:
    """Write ``record`` as strict JSON (non-finite floats become null); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(record), indent=1, allow_nan=False))
    return path


def candidate_steps(record: StageRecord) -> Iterable[tuple[int, Candidate]]:
    """``(first step, candidate)`` for each candidate of a stage record, in the order they ran."""
    step = record["start_step"]
    discarded = list(record.get("discarded", []))
    attempt = 0
    for c in record["candidates"]:
        while c["attempt"] > attempt:  # a failed kept phase ran between two attempts
            attempt += 1
            if discarded:
                step += discarded.pop(0)["steps"]
        yield step, c
        step += c["steps"]


def plot_run(path: str | Path, history: Sequence[StageRecord], trace: Sequence[Sequence[Any]] | None = None,
             title: str = "autolrs", decay_shape: str = "linear") -> Path:
    """Plot LR and loss against the optimizer step (search included) and save a PNG.

    Args:
        path: the PNG to write.
        history: :attr:`AutoLRS.history`.
        trace: optional ``(step, phase, lr, loss)`` rows, one per optimizer step.
        decay_shape: the run's ``AutoLRSConfig.decay_shape`` (how its decay phase fell).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plot_run needs matplotlib: pip install 'autolrs[demo]'") from error

    fig, (ax_lr, ax_loss) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    labelled, any_discarded = set(), False
    for r in history:
        for step, c in candidate_steps(r):
            label = "candidate, diverged" if c["diverged"] else "candidate (search)"
            ax_lr.plot([step, step + c["steps"]], [c["lr"], c["lr"]], color="tab:red" if c["diverged"]
                       else "tab:orange", alpha=0.5, lw=1.5, label=None if label in labelled else label)
            labelled.add(label)
        for d in r.get("discarded", []):  # a rolled-back kept phase had started: its start_step is set
            ax_lr.plot([d["start_step"], cast(int, d["start_step"]) + d["steps"]], [d["lr"], d["lr"]], color="tab:gray",
                       lw=2.5, alpha=0.7, label="kept stage, rolled back" if not any_discarded else None)
            any_discarded = True
        if r["lr"] is not None and r["keep_start_step"] is not None:
            start, end = r["keep_start_step"], r["keep_start_step"] + r["kept_steps"]
            if r.get("kind") == "decay":  # to zero over the phase, in the run's shape
                n = max(1, r["kept_steps"])
                points = sorted({*range(0, n, max(1, n // 200)), n - 1})
                ax_lr.plot([start + i for i in points],
                           [stages.decay_lr(r["lr"], r["tau"], i, decay_shape) for i in points],
                           color="tab:purple", lw=2.5, label="decay phase")
            else:
                ax_lr.plot([start, end], [r["lr"], r["lr"]], color="tab:blue", lw=2.5,
                           label="kept stage" if r["stage"] == 0 else None)
    if trace:
        steps = [row[0] for row in trace]
        warm = [(row[0], row[2]) for row in trace if row[1] == "warmup"]
        if warm:
            ax_lr.plot(*zip(*warm), color="tab:green", lw=2, label="warmup")
        kept = [(row[0], row[3]) for row in trace if row[1] in ("keep", "warmup", "decay") and math.isfinite(row[3])]
        explore = [(row[0], row[3]) for row in trace if row[1] == "explore" and math.isfinite(row[3])]
        if explore:
            ax_loss.plot(*zip(*explore), ".", color="tab:orange", ms=1.5, alpha=0.4, label="candidates")
        if kept:
            ax_loss.plot(*zip(*kept), ".", color="tab:blue", ms=1.5, alpha=0.6, label="kept trajectory")
        ax_loss.set_xlim(0, max(steps) + 1)
    labelled = set()
    for r in history:
        if r["forecast"] is None or r["keep_start_step"] is None:
            continue
        end = r["keep_start_step"] + r["kept_steps"]
        val = r["objective"] == "val"
        kind = "validation" if val else "training"
        for value, marker, what in ((r["forecast"], "x", "forecast"), (r["loss_reached"], "o", "reached")):
            if value is None:
                continue
            label = f"{kind} loss at stage end: {what}"
            ax_loss.plot([end], [value], marker, color="tab:purple" if val else "black", ms=7,
                         mfc="none" if marker == "o" else None, label=None if label in labelled else label)
            labelled.add(label)
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.legend(loc="best", fontsize=8)
    ax_lr.set_title(title)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.set_xlabel("optimizer step (search included)")
    ax_loss.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Lay out ``fig``, write it as a PNG at ``path`` (creating its folder) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
