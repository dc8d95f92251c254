"""The report's reading of the figures, in words generated from the numbers (never written by hand).

Every sentence is computed from one task's results JSON, so it cannot go stale. A difference between two
methods is called clear only when it exceeds twice the standard error of the difference of their seed
means; otherwise the sentence says it is within the seeds' noise.
"""

from __future__ import annotations

import math

from .formatting import final, number

__all__ = ["compare", "task_reading", "losses", "forecast_errors", "verdict", "paired"]


def compare(result: dict, a: str, b: str) -> str:
    """``better``, ``worse`` or ``level`` for method ``a`` against method ``b`` (clear differences only)."""
    ea, eb = result["methods"][a], result["methods"][b]
    ma, mb = ea["final_mean"], eb["final_mean"]
    higher = result["task"]["higher_is_better"]
    if not math.isfinite(ma) or not math.isfinite(mb):
        if math.isfinite(ma) == math.isfinite(mb):
            return "level"
        return "better" if math.isfinite(ma) else "worse"
    sa, sb = ea["final_std"], eb["final_std"]
    n = len(result["seeds"])
    if n < 2:  # no noise estimate: the sign alone
        return "level" if ma == mb else "better" if (ma > mb) == higher else "worse"
    noise = 2 * math.sqrt(((sa if math.isfinite(sa) else 0) ** 2 + (sb if math.isfinite(sb) else 0) ** 2) / n)
    if abs(ma - mb) <= noise:
        return "level"
    return "better" if (ma > mb) == higher else "worse"


def paired(a: list[float], b: list[float], higher_is_better: bool) -> str:
    """``a`` against ``b``, run on the same seeds (same initial weights and batches), in words: "clearly better"
    or "clearly worse" when the mean of the per-seed differences exceeds twice its standard error, else
    "within noise". A non-finite figure (a diverged run) makes the method with fewer of them better."""
    bad_a = sum(not math.isfinite(x) for x in a)
    bad_b = sum(not math.isfinite(x) for x in b)
    if bad_a or bad_b:
        return "within noise" if bad_a == bad_b else "clearly better" if bad_a < bad_b else "clearly worse"
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n) if n > 1 else 0.0  # one seed: the sign alone
    if abs(mean) <= 2 * se:
        return "within noise"
    return "clearly better" if (mean > 0) == higher_is_better else "clearly worse"


def verdict(result: dict, a: str, b: str) -> str:
    """``compare`` in words: "clearly better", "clearly worse" or "within noise"."""
    return {"better": "clearly better", "worse": "clearly worse", "level": "within noise"}[compare(result, a, b)]


def losses(result: dict, label: str = "autolrs") -> list[str]:
    """The methods (baselines, not autolrs's own variants) that clearly beat ``label`` on the final metric."""
    if label not in result["methods"]:
        return []
    return [k for k, e in result["methods"].items()
            if e["family"] not in ("autolrs", "autolrs-replay") and compare(result, k, label) == "better"]


def forecast_errors(entry: dict) -> list[float]:
    """Signed relative errors ``(reached - forecast) / reached`` of every kept stage's forecast, all seeds.

    Positive: the stage ended worse than autolrs forecast when it chose the LR.
    """
    errors = []
    for run in entry.get("autolrs") or []:
        for stage in run["stages"]:
            if stage.get("kind", "search") != "search":
                continue  # the decay phase has no forecast
            f, r = stage.get("forecast"), stage.get("loss_reached")
            if f is not None and r is not None and r != 0:
                errors.append((r - f) / abs(r))
    return errors


def task_reading(result: dict) -> list[str]:
    """Sentences about autolrs on one task: quality, speed, cost, overhead, optimum, ablation, losses."""
    methods = result["methods"]
    if "autolrs" not in methods:
        return []
    task = result["task"]
    metric = task["metric"]
    a = methods["autolrs"]
    seeds = len(result["seeds"])
    out = []
    if seeds < 2:
        out.append("(One seed: no noise estimate, so \"clearly\" below means only \"by any margin\".)")
    if "cosine" in methods:
        c = methods["cosine"]
        against = {"better": "clearly better than", "worse": "clearly worse than",
                   "level": "within the seeds' noise of"}[compare(result, "autolrs", "cosine")]
        out.append(f"Final {metric}: autolrs {final(a, seeds)}, "
                   f"{against} the tuned cosine's {final(c, seeds)} "
                   f"(peak LR {number(c['lr'], '.3g')}, chosen from {c['tuning_runs']} grid points).")
    if result["target"]:
        if a["steps_to_target"] is None:
            out.append(f"autolrs never reaches the target ({number(result['target']['value'])}) within the "
                       f"{task['budget']}-step budget, so it has no speedup on this task.")
        else:
            out.append(f"autolrs reaches the target at {a['steps_to_target']} optimizer steps, search included "
                       f"({a['kept_steps_to_target']:.0f} kept steps): a speedup of "
                       f"{number(a['speedup_vs_cosine'], '.2f', 'x')} over the tuned cosine counting every step, "
                       f"{number(a['kept_speedup_vs_cosine'], '.2f', 'x')} counting kept steps only.")
    if "autolrs-replay" in methods:
        r = methods["autolrs-replay"]
        stretch = [p["stretch"] for p in r.get("replay") or []]
        how = "" if not stretch else f", stretched {min(stretch):.2f}x" if min(stretch) == max(stretch) else \
            f", stretched {min(stretch):.2f}-{max(stretch):.2f}x"
        sentence = (f"autolrs's found schedule replayed on the whole budget (no search{how}; {r['tuning_runs']} "
                    f"runs of tuning cost): {final(r, seeds)}; against autolrs itself: "
                    f"{verdict(result, 'autolrs-replay', 'autolrs')}")
        if "cosine" in methods:
            sentence += f"; against the tuned cosine: {verdict(result, 'autolrs-replay', 'cosine')}"
        out.append(sentence + ".")
    best = result.get("best_baseline")
    for peer in ("range-test", "prodigy", "schedule-free"):
        if peer in methods:
            out.append(f"Against {peer} ({final(methods[peer], seeds)}): autolrs is "
                       f"{verdict(result, 'autolrs', peer)}.")
    if best:
        b = methods[best]
        ranked = sorted((e["final_mean"] for e in methods.values() if math.isfinite(e["final_mean"])),
                        reverse=task["higher_is_better"])
        rank = ranked.index(a["final_mean"]) + 1 if a["final_mean"] in ranked else len(methods)
        out.append(f"The best baseline is {best} ({number(b['final_mean'])}); autolrs ranks {rank} of "
                   f"{len(methods)} methods by final {metric}, and is "
                   f"{ {'better': 'clearly ahead of', 'worse': 'clearly behind', 'level': 'level with'}[compare(result, 'autolrs', best)] } "
                   f"it; speedup against it: {number(a['speedup_vs_best'], '.2f', 'x')} (total steps).")
        if b["tuned"]:
            out.append(f"Its tuning cost {b['tuning_runs']} runs ({b['tuning_steps']} optimizer steps) against "
                       f"autolrs's single run ({a['tuning_steps']} steps): {b['tuning_steps'] / a['tuning_steps']:.0f}x "
                       "the compute to obtain the model.")
    search = 1 - a["kept_steps_mean"] / task["budget"]
    out.append(f"autolrs's search took {100 * search:.0f}% of the budget (it kept {a['kept_steps_mean']:.0f} of "
               f"{task['budget']} steps on average).")
    errors = forecast_errors(a)
    if errors:
        misses = sorted(abs(e) for e in errors)
        worse = sum(e > 0 for e in errors) / len(errors)
        out.append(f"autolrs's stage forecasts missed the loss the stage then reached by a median of "
                   f"{100 * misses[len(misses) // 2]:.0f}% and at most {100 * misses[-1]:.0f}% ({len(errors)} "
                   f"stages over all seeds; the stage ended worse than forecast in {100 * worse:.0f}% of them).")
    if a.get("overhead") is not None:
        out.append(f"autolrs's own computation (controller, forecasts, GP, snapshots) took "
                   f"{100 * a['overhead']:.0f}% of its runs' wall time "
                   f"({a['overhead'] * a['wall_s']:.1f} s of {a['wall_s']:.1f} s per run).")
    if "ratio_to_optimal" in a:
        parts = [f"autolrs's final loss is {number(a['ratio_to_optimal'], '.2f', 'x')} the optimal schedule's "
                 "expected loss"]
        if a.get("expected_ratio_to_optimal") is not None:
            parts.append(f"the exact expected loss of the LR sequence it kept is "
                         f"{number(a['expected_ratio_to_optimal'], '.2f', 'x')}")
        if "cosine" in methods and "ratio_to_optimal" in methods["cosine"]:
            cosine = number(methods["cosine"]["ratio_to_optimal"], ".2f", "x")
            parts.append(f"the tuned cosine's final loss is {cosine}")
        out.append("; ".join(parts) + ".")
    ablation = result.get("ablation")
    if ablation:
        worse = [k for k in ablation["rows"] if compare(result, k, "autolrs") == "worse"]
        better = [k for k in ablation["rows"] if compare(result, k, "autolrs") == "better"]
        parts = [f"Ablations ({len(ablation['rows'])} variants, each turning back one change of the default)"]
        parts.append(f"clearly worse: {', '.join(worse)}" if worse else "none clearly worse")
        parts.append(f"clearly better: {', '.join(better)}" if better else "none clearly better")
        out.append("; ".join(parts) + ".")
    beaten_by = losses(result)
    if beaten_by:
        out.append(f"Where autolrs loses: {', '.join(beaten_by)} "
                   f"{'ends' if len(beaten_by) == 1 else 'end'} clearly better on this task.")
    else:
        out.append("No method ends clearly better than autolrs on this task.")
    return out
