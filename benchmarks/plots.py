"""The report's figures, drawn from one task's results JSON only (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path

from .tasks import registered

__all__ = ["plot_curves", "plot_lrs", "plot_grids"]

# One colour per method, stable across figures.
COLOURS = {
    "autolrs": "black", "autolrs-paper": "dimgray", "range-test": "tab:olive", "cosine": "tab:blue", "constant": "tab:gray",
    "step": "tab:brown", "one-cycle": "tab:purple", "clr-triangular2": "tab:pink", "sgdr": "tab:cyan",
    "prodigy": "tab:green", "schedule-free": "tab:orange", "autolrs-replay": "teal",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str, columns: int = 1) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=columns)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _finite(xs, ys):
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    return ([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else ([], [])


def _log_metric(result: dict) -> bool:
    return registered(result["task"]["name"]).log_metric


def _shown(label: str, e: dict) -> bool:
    """Curves and grids show the baselines, autolrs, the paper's algorithm and the replay of autolrs's schedule
    (the ablation is a table)."""
    return e["family"] != "autolrs" or label in ("autolrs", "autolrs-paper")


def plot_curves(result: dict, path: Path) -> Path:
    """Metric of the kept model (seed mean) against optimizer steps, search included, for every method.

    autolrs's curve against its kept steps is drawn dashed: the same model, without the search's cost.
    """
    plt = _pyplot()
    task = result["task"]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for label, e in result["methods"].items():
        if not _shown(label, e):
            continue
        colour = COLOURS.get(label.split("{")[0], None)
        xs, ys = _finite(e["curve"]["steps"], e["curve"]["metric"])
        lr = "" if e["lr"] is None else f" (lr {e['lr']:.3g})"
        ax.plot(xs, ys, color=colour, lw=2.2 if e["family"] == "autolrs" else 1.3, label=label + lr)
        if e["family"] == "autolrs":
            kx, ky = _finite(e["curve"]["kept_steps"], e["curve"]["metric"])
            ax.plot(kx, ky, color=colour, lw=1.2, ls="--", label=f"{label} vs kept steps")
    if result["target"]:
        ax.axhline(result["target"]["value"], color="red", lw=0.8, ls=":", label="target (tuned cosine)")
    if _log_metric(result):
        ax.set_yscale("log")
    else:
        finals = [e["final_mean"] for e in result["methods"].values() if math.isfinite(e["final_mean"])]
        if finals:  # zoom on the end of training, where the methods differ
            lo, hi = min(finals), max(finals)
            pad = max(hi - lo, 0.01 * abs(hi))
            if task["higher_is_better"]:
                ax.set_ylim(max(0.0, lo - 2 * pad), hi + 0.5 * pad)
            else:
                ax.set_ylim(lo - 0.5 * pad, hi + 2 * pad)
    return _save(plt, fig, ax, path, "optimizer steps (autolrs: search included)",
                 f"{task['metric']} (kept model, mean of {len(result['seeds'])} seeds)", task["name"], columns=2)


def _steps(trace: list[list]) -> tuple[list, list]:
    """A stairs line through an LR trace ``[step, lr, phase]`` (LR held until the next entry)."""
    xs, ys = [], []
    for (step, lr, _), (nxt, _, _) in zip(trace, trace[1:]):
        xs += [step, nxt]
        ys += [lr, lr]
    return xs, ys


def plot_lrs(result: dict, path: Path) -> Path:
    """LR against optimizer step: autolrs (seed 0; search and kept steps), its schedule replayed on the whole
    budget, the tuned cosine, the optimum."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    methods = result["methods"]
    if "cosine" in methods:
        ax.plot(*_steps(methods["cosine"]["lr_trace"]), color=COLOURS["cosine"], lw=1.5,
                label=f"tuned cosine (peak {methods['cosine']['lr']:.3g})")
    optimal = (result.get("reference") or {}).get("optimal")
    if optimal:
        xs, ys, start = [], [], 0
        for lr, n in zip(optimal["lrs"], optimal["lengths"]):
            xs += [start, start + n]
            ys += [lr, lr]
            start += n
        ax.plot(xs, ys, color="red", lw=1.8, label=f"optimal {optimal['pieces']}-piece schedule")
    for label in ("autolrs",):
        if label not in methods:
            continue
        trace = methods[label]["lr_trace"]
        labelled = set()
        for (step, lr, phase), (end, _, _) in zip(trace, trace[1:]):
            kept = phase in ("keep", "warmup", "decay")
            name = "autolrs kept stages" if kept else "autolrs candidates (search steps)"
            ax.plot([step, end], [lr, lr], color="black" if kept else "tab:orange", lw=2.2 if kept else 1.2,
                    label=None if name in labelled else name)
            labelled.add(name)
    if "autolrs-replay" in methods:
        ax.plot(*_steps(methods["autolrs-replay"]["lr_trace"]), color=COLOURS["autolrs-replay"], lw=1.3, ls="--",
                label="autolrs's schedule replayed (stretched, no search)")
    ax.set_yscale("log")
    ax.set_ylim(bottom=result["task"]["lr_range"][0] / 10)  # cosine's last steps tend to zero
    return _save(plt, fig, ax, path, "optimizer step (autolrs: search included)", "learning rate",
                 f"{result['task']['name']}: LR schedules (seed {result['seeds'][0]})")


def plot_grids(result: dict, path: Path) -> Path:
    """Tuning curves: each tuned method's mean final metric against its peak LR; autolrs as a line."""
    plt = _pyplot()
    task = result["task"]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for label, e in result["methods"].items():
        if e["tuned"]:
            xs, ys = _finite([row["lr"] for row in e["grid_results"]], [row["mean"] for row in e["grid_results"]])
            ax.plot(xs, ys, "o-", ms=3, color=COLOURS.get(label), label=label)
        elif e["family"] in ("autolrs", "autolrs-replay") and _shown(label, e) and math.isfinite(e["final_mean"]):
            ax.axhline(e["final_mean"], color=COLOURS.get(label, "black"), lw=1.5,
                       ls="-" if label == "autolrs" else "--",
                       label=f"{label} ({e['tuning_runs']} runs)" if e["tuning_runs"] > 1 else f"{label} (no tuning)")
    ax.set_xscale("log")
    if _log_metric(result):
        ax.set_yscale("log")
    elif task["higher_is_better"]:
        finals = [e["final_mean"] for e in result["methods"].values() if math.isfinite(e["final_mean"])]
        if finals:
            ax.set_ylim(max(0.0, min(finals) - 0.3), max(finals) + 0.02)
    return _save(plt, fig, ax, path, "peak LR", f"final {task['metric']} (mean of seeds)",
                 f"{task['name']}: tuning grids", columns=2)
