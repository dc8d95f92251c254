"""One task's benchmark: run its plan, tune the grids (growing them past an edge), aggregate the figures.

Tuning is what a careful user does: every grid point with every seed, the point with the best metric
averaged over seeds wins, and a best point on the edge of the grid means the grid was wrong, so it grows
by one point past that edge (up to ``Plan.max_extensions`` times). The target of "steps to target" is
the tuned cosine's mean final metric; the best baseline is the non-autolrs method with the best mean final
metric. Tuning cost counts what one user spends: grid points x budget for a tuned method (one seed each),
one budget for autolrs and Prodigy, two for autolrs-replay (the autolrs run, then the replay).

The fresh seeds (``Plan.fresh_seeds``): after the tuning, each tuned method at its chosen LR and each one-run
method (not autolrs's ablations or replay) train again on seeds no choice saw; the results' ``fresh``.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone

from . import metrics
from .ablations import ABLATIONS
from .cache import RunCache
from .methods import AUTOLRS_FAMILIES, TUNING_RUNS, Method
from .plans import Plan
from .pool import Job, run_jobs

__all__ = ["run_task", "TARGET_METHOD", "SCHEMA"]

SCHEMA = "autolrs-bench/1"
TARGET_METHOD = "cosine"


def _grid_stats(plan: Plan, m: Method, grid: list[float], records: dict) -> list[dict]:
    rows = []
    for lr in grid:
        runs = [records.get(Job(plan.task, m, lr, s).key) for s in plan.seeds]
        runs = [r for r in runs if r is not None]
        finals = [r["final"][plan.task.metric] for r in runs]
        mean, std = metrics.mean_std(finals) if finals else (math.nan, math.nan)
        rows.append({"lr": lr, "mean": mean, "std": std, "finals": finals, "seeds": [r["seed"] for r in runs],
                     "diverged": sum(r["diverged"] for r in runs), "complete": len(runs) == len(plan.seeds)})
    return rows


def _best_index(plan: Plan, rows: list[dict]) -> int | None:
    best = None
    for i, row in enumerate(rows):
        if not row["complete"] or math.isnan(row["mean"]):
            continue
        if best is None or plan.task.better(row["mean"], rows[best]["mean"]):
            best = i
    return best


def _tune(plan: Plan, cache: RunCache, workers: int, stats: dict) -> tuple[dict[str, list[float]], dict]:
    """Run every grid and single run; grow grids whose best point is on an edge. Returns grids, records."""
    task = plan.task
    grids = {m.label: list(task.grid_for(m.label)) for m in plan.tuned}
    tuned = {m.label: m for m in plan.tuned}
    jobs = [Job(task, tuned[name], lr, s) for name, grid in grids.items() for lr in grid for s in plan.seeds]
    jobs += [Job(task, m, lr, s) for m, lr in plan.single for s in plan.seeds]
    records = run_jobs(jobs, cache, workers, task.threads, stats)
    for _ in range(plan.max_extensions):
        jobs = []
        for name, grid in grids.items():
            rows = _grid_stats(plan, tuned[name], grid, records)
            best = _best_index(plan, rows)
            if best is None or 0 < best < len(grid) - 1:
                continue
            ratio = grid[1] / grid[0]
            lr = float(f"{(grid[0] / ratio if best == 0 else grid[-1] * ratio):.4g}")
            grid.insert(0, lr) if best == 0 else grid.append(lr)
            jobs += [Job(task, tuned[name], lr, s) for s in plan.seeds]
        if not jobs:
            break
        records.update(run_jobs(jobs, cache, workers, task.threads, stats))
    return grids, records


def _summarise(plan: Plan, m: Method, lr: float | None, runs: list[dict]) -> dict:
    """The figures of one method at its chosen LR (target-dependent figures are added later)."""
    task = plan.task
    finals = [r["final"][task.metric] for r in runs]
    mean, std = metrics.mean_std(finals)
    extra = {k: metrics.mean_std([r["final"][k] for r in runs])[0] for k in task.extra_metrics}
    per_seed = [{
        "seed": r["seed"], "final": r["final"], "diverged": r["diverged"], "diverged_at": r["diverged_at"],
        "steps_taken": r["steps_taken"], "kept_steps": r["kept_steps"], "expected_loss": r["expected_loss"],
        "wall_s": r["wall_s"], "overhead_s": r["overhead_s"], "overhead": r["overhead"],
        "warnings": r.get("warnings", []),
    } for r in runs]
    overheads = [r["overhead"] for r in runs if r["overhead"] is not None]
    entry = {
        **m.to_dict(), "lr": lr, "final_mean": mean, "final_std": std, "extra_means": extra,
        "per_seed": per_seed, "curve": metrics.mean_curve(runs, task.metric),
        "wall_s": sum(r["wall_s"] for r in runs) / len(runs),
        "overhead": sum(overheads) / len(overheads) if overheads and m.family == "autolrs" else None,
        "kept_steps_mean": sum(r["kept_steps"] for r in runs) / len(runs),
        "lr_trace": runs[0]["lr_trace"],
    }
    expected = [r["expected_loss"] for r in runs]
    if all(e is not None for e in expected):
        entry["expected_loss_mean"] = metrics.mean_std(expected)[0]
    if m.family == "autolrs":
        entry["autolrs"] = [dict(seed=r["seed"], **r["summary"]) for r in runs]
    if m.family == "autolrs-replay":
        entry["replay"] = [dict(seed=r["seed"], **r["summary"]["replay"]) for r in runs]
    if m.family == "range-test":
        entry["range_test"] = [dict(seed=r["seed"], **r["summary"]["range_test"]) for r in runs]
    return entry


def _method_entries(plan: Plan, grids: dict, records: dict) -> dict[str, dict]:
    task = plan.task
    entries = {}
    for m in plan.tuned:
        name, grid = m.label, grids[m.label]
        rows = _grid_stats(plan, m, grid, records)
        best = _best_index(plan, rows)
        if best is None:
            continue
        runs = [records[Job(task, m, grid[best], s).key] for s in plan.seeds]
        entry = _summarise(plan, m, grid[best], runs)
        entry.update(tuned=True, grid=grid, grid_results=rows, best_at_edge=best in (0, len(grid) - 1),
                     extensions=len(grid) - len(task.grid_for(name)), tuning_runs=len(grid),
                     tuning_steps=len(grid) * task.budget, benchmark_runs=len(grid) * len(plan.seeds))
        entries[name] = entry
    for m, lr in plan.single:
        name = m.label
        runs = [records.get(Job(task, m, lr, s).key) for s in plan.seeds]
        if any(r is None for r in runs):
            continue  # a failed run was reported on stderr
        entry = _summarise(plan, m, lr, runs)
        runs_per_model = TUNING_RUNS.get(m.family, 1)
        entry.update(tuned=False, grid=None, grid_results=None, best_at_edge=False, extensions=0,
                     tuning_runs=runs_per_model, tuning_steps=runs_per_model * task.budget,
                     benchmark_runs=runs_per_model * len(plan.seeds))
        entries[name] = entry
    return entries


def _add_targets(plan: Plan, entries: dict, target: float | None) -> str | None:
    """Steps to target and speedups of every method; returns the best baseline's label."""
    task = plan.task
    baselines = [k for k, e in entries.items()
                 if e["family"] not in AUTOLRS_FAMILIES and math.isfinite(e["final_mean"])]
    best = None
    for k in baselines:
        if best is None or task.better(entries[k]["final_mean"], entries[best]["final_mean"]):
            best = k
    for e in entries.values():
        e["steps_to_target"], e["kept_steps_to_target"] = metrics.steps_to_target(e["curve"], target, task)
    reference = entries.get(TARGET_METHOD, {}).get("steps_to_target")
    best_steps = entries[best]["steps_to_target"] if best else None
    for e in entries.values():
        e["speedup_vs_cosine"] = metrics.speedup(reference, e["steps_to_target"])
        e["kept_speedup_vs_cosine"] = metrics.speedup(reference, e["kept_steps_to_target"])
        e["speedup_vs_best"] = metrics.speedup(best_steps, e["steps_to_target"])
        e["kept_speedup_vs_best"] = metrics.speedup(best_steps, e["kept_steps_to_target"])
    return best


def _fresh(plan: Plan, cache: RunCache, workers: int, stats: dict, entries: dict) -> tuple[dict | None, dict]:
    """Every tuned method at its chosen LR and every one-run method on ``plan.fresh_seeds``: the figures, records."""
    if not plan.fresh_seeds:
        return None, {}
    task = plan.task
    chosen = [(m, entries[m.label]["lr"]) for m in plan.tuned if m.label in entries]
    chosen += [(m, lr) for m, lr in plan.single
               if m.label in entries and m.label not in ABLATIONS and m.family != "autolrs-replay"]
    jobs = [Job(task, m, lr, s) for m, lr in chosen for s in plan.fresh_seeds]
    records = run_jobs(jobs, cache, workers, task.threads, stats)
    methods = {}
    for m, lr in chosen:
        runs = [records.get(Job(task, m, lr, s).key) for s in plan.fresh_seeds]
        if any(r is None for r in runs):
            continue  # a failed run was reported on stderr
        finals = [r["final"][task.metric] for r in runs]
        mean, std = metrics.mean_std(finals)
        methods[m.label] = {"family": m.family, "lr": lr, "tuned": m.tunable, "final_mean": mean,
                            "final_std": std, "finals": finals, "diverged": sum(r["diverged"] for r in runs),
                            "expected_loss": [r["expected_loss"] for r in runs]}
    return {"seeds": list(plan.fresh_seeds), "methods": methods}, records


def run_task(plan: Plan, cache: RunCache, workers: int | None = None, target: float | None = None,
             run_id: str | None = None) -> dict:
    """Everything ``benchmarks/results/<task>.json`` holds, for ``plan``.

    ``target`` (when given) replaces the tuned cosine's mean final metric, e.g. for a run without cosine.
    """
    from .tasks import reference

    task = plan.task
    start = time.perf_counter()
    stats: dict = {}
    grids, records = _tune(plan, cache, task.workers if workers is None else workers, stats)
    entries = _method_entries(plan, grids, records)
    source = None
    if target is None and TARGET_METHOD in entries:
        target, source = entries[TARGET_METHOD]["final_mean"], {"method": TARGET_METHOD,
                                                               "lr": entries[TARGET_METHOD]["lr"]}
    best = _add_targets(plan, entries, target)
    fresh, fresh_records = _fresh(plan, cache, task.workers if workers is None else workers, stats, entries)
    ref = reference(task)
    if ref is not None and "optimal" in ref:
        optimal = ref["optimal"]["expected_loss"]
        for e in entries.values():
            e["ratio_to_optimal"] = e["final_mean"] / optimal
            if e.get("expected_loss_mean") is not None:
                e["expected_ratio_to_optimal"] = e["expected_loss_mean"] / optimal
    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "mode": plan.mode,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": task.to_dict(),
        "seeds": list(plan.seeds),
        "cuts": list(plan.cuts),
        "target": None if target is None else {"metric": task.metric, "value": target, "source": source},
        "best_baseline": best,
        "methods": entries,
        "ablation": _ablation(entries),
        "fresh": fresh,
        "reference": ref,
        "wall_s": time.perf_counter() - start,
        "runs": len(records) + len(fresh_records),
        "runs_trained": stats.get("trained", 0),
        "runs_cached": stats.get("cached", 0),
        "run_seconds": sum(_run_seconds(r) for r in [*records.values(), *fresh_records.values()]),
    }


def _run_seconds(record: dict) -> float:
    """Training + evaluation time of a run; a replay's includes the autolrs run it made first."""
    source = (record.get("summary") or {}).get("replay", {}).get("source") or {}
    return record["wall_s"] + record["eval_s"] + source.get("wall_s", 0.0) + source.get("eval_s", 0.0)


def _ablation(entries: dict) -> dict | None:
    """The ablation variants that ran, against the default (the verdicts are the report's)."""
    if "autolrs" not in entries:
        return None
    rows = {label: {"options": ABLATIONS[label][0], "description": ABLATIONS[label][1],
                    "final_mean": entries[label]["final_mean"], "final_std": entries[label]["final_std"],
                    "kept_steps_mean": entries[label]["kept_steps_mean"]}
            for label in ABLATIONS if label in entries}
    return {"reference": "autolrs", "rows": rows} if rows else None
