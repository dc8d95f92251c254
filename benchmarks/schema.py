"""The schema of ``benchmarks/results/<task>.json`` (``"schema": "autolrs-bench/1"``), and its check.

Strict JSON: a non-finite number (a diverged run's loss, a missing figure) is ``null``. Top level::

    schema          "autolrs-bench/1"
    run_id          the bench invocation (one id for every task of one ``make bench``)
    mode            "quick" | "default" | "full" | "experiment"
    generated_at    ISO time (UTC)
    task            the TaskSpec: name, title, budget, eval_every, metric, higher_is_better, worst,
                    extra_metrics, optimizer, momentum, betas, weight_decay, grid, grid_overrides, lr_range,
                    threads, workers, notes
    seeds           [int]
    cuts            [str]: what this mode left out on this task, and why
    target          {metric, value, source: {method, lr} | null} | null: the tuned cosine's mean final metric
    best_baseline   the non-autolrs method with the best mean final metric
    methods         {label: method entry}, below
    ablation        {reference: "autolrs", rows: {label: {options, description, final_mean, final_std,
                    kept_steps_mean}}} | null
    fresh           {seeds: [int], methods: {label: {family, lr, tuned, final_mean, final_std, finals,
                    diverged, expected_loss: [float | null]}}} | null (absent in older results): each tuned
                    method at its chosen LR and each one-run method on seeds no choice saw
    reference       {optimal: {lrs, lengths, expected_loss, pieces, method}} (nqm) | null
    wall_s          the task's wall time; runs: records used; run_seconds: their training + evaluation time;
                    runs_trained / runs_cached: how many this invocation trained / read from the cache

Method entry::

    label, family ("schedule" | "schedule-free" | "prodigy" | "range-test" | "autolrs" | "autolrs-replay"),
                    options (autolrs keyword arguments)
    tuned           bool: chosen on an LR grid
    lr              the chosen peak LR (tuned), the fixed LR, or null
    grid            [lr] tried (with extensions) | null;  grid_results: [{lr, mean, std, finals, seeds,
                    diverged, complete}] | null;  best_at_edge: bool;  extensions: int
    tuning_runs     runs a user needs to obtain the model (grid points; 2 for autolrs-replay; else 1);
                    tuning_steps: x budget
    benchmark_runs  runs this benchmark spent on the method (tuning_runs x seeds)
    final_mean, final_std   the metric at the budget over seeds (the chosen LR);  extra_means: {metric: mean}
    per_seed        [{seed, final: {metric: value}, diverged, diverged_at, steps_taken, kept_steps,
                    expected_loss, wall_s, overhead_s, overhead, warnings}]
    curve           {steps, kept_steps, metric}: the seed-mean curve of the kept model
    steps_to_target, kept_steps_to_target      first evaluation reaching the target (null: never)
    speedup_vs_cosine, kept_speedup_vs_cosine, speedup_vs_best, kept_speedup_vs_best   (null: not reached)
    wall_s, overhead (autolrs: time inside autolrs / run wall time), kept_steps_mean
    lr_trace        [[step, lr, phase]] of the first seed: LR changes (thinned), phase "keep" | "explore" |
                    "warmup", last row "end"
    expected_loss_mean, ratio_to_optimal, expected_ratio_to_optimal   (nqm only)
    autolrs         [{seed, stages: [...], config, found_schedule}] (autolrs only): every stage's candidates
                    and choice; the found schedule without its per-step lrs (autolrs.replay's format)
    replay          [{seed, source: {seed, budget, steps_taken, kept_steps, final, diverged, wall_s, eval_s},
                    found_schedule, stretch}] (autolrs-replay only): the autolrs run replayed, its schedule
                    and budget / its kept steps
    range_test      [{seed, steps, lr, lr_min, lr_steep}] (range-test only): the range test's reading
"""

from __future__ import annotations

__all__ = ["validate", "TOP_LEVEL", "METHOD_FIELDS"]

TOP_LEVEL = {
    "schema": str, "run_id": (str, type(None)), "mode": str, "generated_at": str, "task": dict, "seeds": list,
    "cuts": list, "target": (dict, type(None)), "best_baseline": (str, type(None)), "methods": dict,
    "ablation": (dict, type(None)), "reference": (dict, type(None)), "wall_s": (int, float), "runs": int,
    "run_seconds": (int, float),
}
NUMBER = (int, float, type(None))
METHOD_FIELDS = {
    "label": str, "family": str, "options": dict, "tuned": bool, "lr": NUMBER, "grid": (list, type(None)),
    "grid_results": (list, type(None)), "best_at_edge": bool, "extensions": int, "tuning_runs": int,
    "tuning_steps": int, "benchmark_runs": int, "final_mean": NUMBER, "final_std": NUMBER,
    "extra_means": dict, "per_seed": list, "curve": dict, "steps_to_target": NUMBER,
    "kept_steps_to_target": NUMBER, "speedup_vs_cosine": NUMBER, "kept_speedup_vs_cosine": NUMBER,
    "speedup_vs_best": NUMBER, "kept_speedup_vs_best": NUMBER, "wall_s": NUMBER, "overhead": NUMBER,
    "kept_steps_mean": NUMBER, "lr_trace": list,
}
TASK_FIELDS = ("name", "title", "budget", "eval_every", "metric", "higher_is_better", "grid", "lr_range")
SEED_FIELDS = ("seed", "final", "diverged", "steps_taken", "kept_steps", "wall_s", "overhead")
FAMILIES = ("schedule", "schedule-free", "prodigy", "range-test", "autolrs", "autolrs-replay")


def _type_errors(where: str, data: dict, fields: dict) -> list[str]:
    errors = []
    for key, kind in fields.items():
        if key not in data:
            errors.append(f"{where}: missing {key!r}")
        elif isinstance(data[key], bool) and kind in (NUMBER, int, (int, float)):
            errors.append(f"{where}.{key}: a bool where a number belongs")
        elif not isinstance(data[key], kind):
            errors.append(f"{where}.{key}: {type(data[key]).__name__} is not {kind}")
    return errors


def validate(result: dict) -> list[str]:
    """Every way ``result`` departs from the schema (empty when it conforms)."""
    errors = _type_errors("result", result, TOP_LEVEL)
    if errors:
        return errors
    if result["schema"] != "autolrs-bench/1":
        errors.append(f"unknown schema {result['schema']!r}")
    errors += [f"task: missing {k!r}" for k in TASK_FIELDS if k not in result["task"]]
    metric = result["task"].get("metric")
    for label, entry in result["methods"].items():
        where = f"methods[{label!r}]"
        errors += _type_errors(where, entry, METHOD_FIELDS)
        if entry.get("family") not in FAMILIES:
            errors.append(f"{where}.family: {entry.get('family')!r}")
        if entry.get("tuned") and len(entry.get("grid") or []) < 7:
            errors.append(f"{where}: a tuned method needs a grid of at least 7 points")
        for seed in entry.get("per_seed", []):
            errors += [f"{where}.per_seed: missing {k!r}" for k in SEED_FIELDS if k not in seed]
            if metric not in seed.get("final", {}):
                errors.append(f"{where}.per_seed: final lacks {metric!r}")
        if len(entry.get("per_seed", [])) != len(result["seeds"]):
            errors.append(f"{where}: {len(entry.get('per_seed', []))} seeds, expected {len(result['seeds'])}")
        curve = entry.get("curve", {})
        lengths = {len(curve.get(k, [])) for k in ("steps", "kept_steps", "metric")}
        if len(lengths) != 1 or 0 in lengths:
            errors.append(f"{where}.curve: steps, kept_steps and metric must have one equal, non-zero length")
    fresh = result.get("fresh")
    if fresh is not None:
        if not isinstance(fresh, dict) or not isinstance(fresh.get("seeds"), list) \
                or not isinstance(fresh.get("methods"), dict):
            errors.append("fresh: expected {seeds: [...], methods: {...}}")
        else:
            for label, f in fresh["methods"].items():
                if len(f.get("finals", [])) != len(fresh["seeds"]):
                    errors.append(f"fresh.methods[{label!r}]: {len(f.get('finals', []))} finals, "
                                  f"expected {len(fresh['seeds'])}")
    if result["target"] is not None and "value" not in result["target"]:
        errors.append("target: missing 'value'")
    return errors
