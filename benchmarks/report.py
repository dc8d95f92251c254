"""``BENCHMARKS.md``: generated from the results JSON of one bench run (and never edited by hand).

``python -m benchmarks.report [results folder] [report]`` regenerates it (and the plots) without running
anything. Every number in it is read from ``<results>/<task>.json`` and ``<results>/bench.json``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from . import plots, reading
from .cache import package_versions
from .formatting import MISSING, final, number, percent
from .methods.optimizers import SCHEDULE_FREE_WARMUP
from .train import DIVERGENCE_FACTOR
from .tasks import REGISTRY

__all__ = ["write_report", "write_manifest", "code_state"]


def code_state() -> dict:
    """The git commit, and whether autolrs's source differs from it (call when the bench starts)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).resolve().parent).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {"git_commit": git("rev-parse", "HEAD") or None,
            "autolrs_uncommitted_changes": bool(git("status", "--porcelain", "--", "../src/autolrs"))}


def write_manifest(folder: Path, **fields) -> Path:
    """``bench.json``: what the whole bench run was (mode, wall time, code, machine)."""
    import torch

    manifest = {
        **fields,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "torch": torch.__version__},
        # Figures move with these (a fresh environment moved every MNIST-1D figure by up to 0.01), and they
        # are part of the cache key: recorded, so that a reader can rebuild the environment of a run.
        "packages": package_versions(),
    }
    path = Path(folder) / "bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1))
    return path


def _method_table(result: dict) -> list[str]:
    task = result["task"]
    extra = list(task["extra_metrics"])
    has_optimum = bool((result.get("reference") or {}).get("optimal"))
    head = ["method", "peak LR", f"final {task['metric']} (mean ± std)", *[f"final {k}" for k in extra],
            "steps to target", "kept steps to target", "speedup vs cosine (total / kept)",
            "speedup vs best baseline", "tuning runs (steps)", "autolrs overhead"]
    if has_optimum:
        head += ["final / optimal", "expected / optimal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, e in result["methods"].items():
        lr = number(e["lr"], ".3g") + (" (edge)" if e["best_at_edge"] else "")
        if e["family"] == "schedule-free" and not e["tuned"]:
            lr += " (default)"
        speed = f"{number(e['speedup_vs_cosine'], '.2f')} / {number(e['kept_speedup_vs_cosine'], '.2f')}" \
            if e["family"] == "autolrs" else number(e["speedup_vs_cosine"], ".2f")
        kept = number(e["kept_steps_to_target"], ".0f") if e["family"] == "autolrs" else "(same)"
        row = [f"**{label}**" if label == "autolrs" else label, lr, final(e, len(result["seeds"])),
               *[number(e["extra_means"].get(k)) for k in extra], number(e["steps_to_target"]), kept, speed,
               number(e["speedup_vs_best"], ".2f"), f"{e['tuning_runs']} ({e['tuning_steps']})",
               percent(e["overhead"])]
        if has_optimum:
            row += [number(e.get("ratio_to_optimal"), ".2f"), number(e.get("expected_ratio_to_optimal"), ".2f")]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _grid_details(result: dict) -> list[str]:
    lines = ["<details><summary>Grids and per-seed results</summary>", ""]
    seeds = result["seeds"]
    lines += ["| method | LR | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | diverged |",
              "|---|---|" + "---|" * len(seeds) + "---|---|"]
    for label, e in result["methods"].items():
        rows = e["grid_results"] or [{"lr": e["lr"], "finals": [p["final"][result["task"]["metric"]]
                                                                 for p in e["per_seed"]],
                                      "mean": e["final_mean"], "diverged": sum(p["diverged"] for p in e["per_seed"])}]
        for row in rows:
            mark = " **(best)**" if e["tuned"] and row["lr"] == e["lr"] else ""
            lr = number(row["lr"])
            lines.append(f"| {label} | {lr}{mark} | " + " | ".join(number(v) for v in row["finals"]) +
                         f" | {number(row['mean'])} | {row['diverged']} |")
    lines += ["", "</details>", ""]
    return lines


def _autolrs_details(result: dict) -> list[str]:
    e = result["methods"].get("autolrs")
    if not e or not e.get("autolrs"):
        return []
    lines = ["<details><summary>autolrs's stages (chosen LR x kept steps; the decay phase starts from the last "
             "LR), per seed</summary>", ""]
    for run in e["autolrs"]:
        stages = ", ".join(f"{number(s['lr'], '.3g')} x {s['kept_steps']}"
                           + (" decay" if s.get("kind") == "decay" else "")
                           + ("" if not s.get("discarded") else f" ({s['discarded']} rolled back)")
                           for s in run["stages"] if s["lr"])
        lines.append(f"- seed {run['seed']}: {stages}")
    rt = result["methods"].get("range-test")
    if rt:
        picks = ", ".join(number(p.get("lr"), ".3g") for p in rt.get("range_test") or [])
        if picks:
            lines += ["", f"range-test's suggested peak LRs (lr_min / 10), per seed: {picks}"]
    warned = sorted({w for p in e["per_seed"] for w in p["warnings"]})
    if warned:
        lines += ["", f"{len(warned)} distinct autolrs warnings, e.g.: `{warned[0]}`"]
    lines += ["", "</details>", ""]
    return lines


def _task_section(result: dict, folder: Path, report: Path) -> list[str]:
    task = result["task"]
    name = task["name"]
    rel = os.path.relpath(folder, report.parent)
    pictures = [plots.plot_curves(result, folder / f"{name}-curves.png"),
                plots.plot_lrs(result, folder / f"{name}-lr.png")]
    if any(e["tuned"] for e in result["methods"].values()):
        pictures.append(plots.plot_grids(result, folder / f"{name}-grids.png"))
    target = result["target"]
    lines = [f"## {name}", "", f"{task['title']}; budget {task['budget']} optimizer steps; metric: "
             f"`{task['metric']}` ({'higher' if task['higher_is_better'] else 'lower'} is better), evaluated on "
             f"the kept model every {task['eval_every']} steps; seeds {result['seeds']}; "
             f"grid of peak LRs {list(task['grid'])}; autolrs range {list(task['lr_range'])}.", "",
             f"Set-up: {task['notes']}", ""]
    if target:
        src = target["source"]
        lines += [f"Target: {number(target['value'])}" + (f" (the tuned {src['method']}'s mean final "
                  f"{task['metric']}, peak LR {src['lr']:.3g})." if src else " (given)."), ""]
    for cut in result["cuts"]:
        lines += [f"- Cut: {cut}"]
    if result["cuts"]:
        lines.append("")
    per_run = result["run_seconds"] / max(result["runs"], 1)
    trained = result.get("runs_trained")
    lines += [f"{result['runs']} runs, {per_run:.0f} s each on average (training and evaluation, 1 thread)"
              + ("" if trained is None else f"; {trained} trained by this bench, the rest read from its cache")
              + f"; task wall time {result['wall_s'] / 60:.1f} min.", ""]
    lines += _method_table(result) + [""]
    optimal = (result.get("reference") or {}).get("optimal")
    if optimal:
        lines += [f"Optimal reference: {optimal['pieces']} equal pieces, expected final loss "
                  f"{number(optimal['expected_loss'])}; LRs " + ", ".join(f"{v:.3g}" for v in optimal["lrs"]) +
                  f" ({optimal['method']}).", ""]
    lines += [f"![{p.stem}]({rel}/{p.name})" for p in pictures] + [""]
    lines += _grid_details(result) + _autolrs_details(result)
    lines += ["**Reading.** " + " ".join(reading.task_reading(result)), ""]
    return lines


def _headline(results: list[dict]) -> list[str]:
    head = ["task", "autolrs final", "tuned cosine final", "best baseline", "speedup vs cosine (total / kept)",
            "speedup vs best (total / kept)", "tuning steps: best baseline / autolrs", "autolrs overhead"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        m = r["methods"]
        a, c = m.get("autolrs"), m.get("cosine")
        if a is None:
            continue
        best = r["best_baseline"]
        b = m.get(best) if best else None
        lines.append("| " + " | ".join([
            r["task"]["name"], final(a, len(r["seeds"])),
            final(c, len(r["seeds"])) if c else MISSING,
            f"{best}: {number(b['final_mean'])}" if b else MISSING,
            f"{number(a['speedup_vs_cosine'], '.2f')} / {number(a['kept_speedup_vs_cosine'], '.2f')}",
            f"{number(a['speedup_vs_best'], '.2f')} / {number(a['kept_speedup_vs_best'], '.2f')}",
            f"{b['tuning_steps']} / {a['tuning_steps']}" if b else MISSING,
            percent(a["overhead"])]) + " |")
    return lines


def _fresh_section(results: list[dict]) -> list[str]:
    """Each method on seeds no choice saw: the tuned LRs chosen on the bench's seeds, autolrs as it runs."""
    present = [r for r in results if r.get("fresh") and "autolrs" in r["fresh"]["methods"]]
    if not present:
        return []
    lines = ["## On fresh seeds", "",
             "A tuned method's figure above is the best of its grid on the same seeds it is reported on, which "
             "flatters it (the winner's curse). Here each tuned method keeps the LR its grid chose there, and "
             "every one-run method runs as it would for a user, on seeds that no choice saw. *Against autolrs*: "
             "autolrs's figure against the method's, seed by seed (same initial weights and batches); *clear* when "
             "the mean difference exceeds twice its standard error.", ""]
    for r in present:
        fresh, task = r["fresh"], r["task"]
        optimal = ((r.get("reference") or {}).get("optimal") or {}).get("expected_loss")

        def exact(f: dict) -> bool:  # the NQM's exact expected loss, where the method's schedule gives one
            return bool(optimal) and all(e is not None for e in f.get("expected_loss") or [None])

        auto = fresh["methods"]["autolrs"]
        auto_exact = exact(auto)
        head = ["method", f"LR (chosen on seeds {', '.join(map(str, r['seeds']))})",
                f"{task['metric']}, seeds {', '.join(map(str, fresh['seeds']))}", "per seed",
                "on the bench's seeds", "autolrs against it"]
        if auto_exact:
            head.insert(4, "expected loss / optimum")
        lines += [f"**{task['name']}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        order = sorted(fresh["methods"].items(), key=lambda kv: kv[1]["final_mean"],
                       reverse=task["higher_is_better"])
        for label, f in order:
            if label == "autolrs":
                against = "–"
            elif auto_exact and exact(f):  # one noisy sample of the loss is not the figure where the exact one is
                against = reading.paired(auto["expected_loss"], f["expected_loss"], False) + " (expected loss)"
            else:
                against = reading.paired(auto["finals"], f["finals"], task["higher_is_better"])
            row = [f"**{label}**" if label == "autolrs" else label, number(f["lr"]) if f["lr"] is not None else "–",
                   f"{number(f['final_mean'])} ± {number(f['final_std'], '.2g')}"
                   + (f" ({f['diverged']} diverged)" if f["diverged"] else ""),
                   " / ".join(number(x, ".3g") for x in f["finals"]),
                   number(r["methods"][label]["final_mean"]) if label in r["methods"] else MISSING, against]
            if auto_exact:
                row.insert(4, f"{sum(f['expected_loss']) / len(f['expected_loss']) / optimal:.2f}x" if exact(f)
                           else MISSING)
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return lines


def _ablation_table(results: list[dict]) -> list[str]:
    """One row per ablation variant, one column per task: its final metric and the verdict against the default."""
    from .ablations import ABLATIONS

    present = [r for r in results if r.get("ablation")]
    if not present:
        return []
    head = ["variant (one change of the default turned back)", *[r["task"]["name"] for r in present]]
    lines = ["## Ablations", "",
             "Each variant turns back one change of autolrs's default (or runs the paper's algorithm), on the "
             "same seeds; the verdict against the default (in bold: its figure) is *clear* when the difference "
             "exceeds twice its standard error. Kept steps in brackets (the default's in the first row).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    row = ["**autolrs (default)**"]
    for r in present:
        a = r["methods"]["autolrs"]
        row.append(f"**{final(a, len(r['seeds']))}** ({a['kept_steps_mean']:.0f})")
    lines.append("| " + " | ".join(row) + " |")
    for label, (_, description) in ABLATIONS.items():
        row = [f"{label}: {description}"]
        for r in present:
            e = r["methods"].get(label)
            row.append("not run" if e is None else
                       f"{final(e, len(r['seeds']))} ({e['kept_steps_mean']:.0f}), "
                       f"{reading.verdict(r, label, 'autolrs')}")
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def _forecast_table(results: list[dict]) -> list[str]:
    """The median absolute relative error of autolrs's stage-end forecasts, per task."""
    rows = []
    for r in results:
        a = r["methods"].get("autolrs")
        errors = sorted(abs(e) for e in reading.forecast_errors(a)) if a else []
        if errors:
            rows.append(f"| {r['task']['name']} | {100 * errors[len(errors) // 2]:.0f}% | {100 * errors[-1]:.0f}% | "
                        f"{len(errors)} |")
    if not rows:
        return []
    return ["Forecast error of the default (each stage's forecast against the loss the kept stage then reached, "
            "as |reached - forecast| / reached; target: median <= 20%):", "",
            "| task | median | max | stages |", "|---|---|---|---|", *rows, ""]


SETUP = f"""\
## Protocol

- **Same optimizer, budget and seeds for every method.** Each task fixes its optimizer (SGD or AdamW and
  their settings), its step budget and its seeds; a seed fixes the initial weights and the order of the
  mini-batches, so every method sees the same data.
- **autolrs pays for its search.** Its budget is the same number of optimizer steps, search included.
  Curves are plotted against all optimizer steps; its *kept steps* (the trajectory it keeps) are reported
  beside them.
- **The kept model is what is measured**, every `eval_every` optimizer steps: for autolrs, the model it
  would leave if stopped at that step: during a search the stage snapshot (`AutoLRS.kept_state_dict()`),
  never a candidate branch; during a kept stage the live model (a kept stage that autolrs later rolls
  back counts while it lasts).
- **Tuned baselines are tuned as their users would**: a log grid of the peak LR (at least 7 points, the same
  span as autolrs's search range), every point with every seed, the best mean over seeds wins (tuned on the
  reported metric itself, which favours the baselines), and a best point on an edge grows the grid.
  *On fresh seeds* measures that favour: the chosen LRs, and every one-run method, on seeds no choice saw.
  Schedules: constant; step (x0.1 at 50% and 75%); cosine to zero; one-cycle (PyTorch's `OneCycleLR`
  shape: 30% cosine warm-up from peak/25, then down to peak/2.5e5); CLR `triangular2` (base peak/4, 4
  cycles); SGDR (periods 1, 2, 4, 8 units filling the budget). Only the LR is scheduled.
- **The fast.ai recipe, one run** (`range-test`): an LR range test (100 steps, the LR raised exponentially
  over the task's LR range, losses smoothed by a bias-corrected moving average with beta 0.98, stopped once
  the smoothed loss exceeds 4x its minimum), then one-cycle from the initial weights (restored, as
  fast.ai's `lr_find` does) for the rest of the budget, at peak `lr_min / 10`; the test's steps count.
- **LR-free optimizers in their authors' settings**: Prodigy `lr=1.0` with cosine annealing over the run
  (one run); Schedule-Free SGD/AdamW with {SCHEDULE_FREE_WARMUP:.0%} warmup, evaluated at its averaged iterate (`optimizer.eval()`),
  its LR tuned on a grid where the budget allows (its authors say it needs tuning), else the package default.
- **A run whose loss turns NaN/inf or grows {DIVERGENCE_FACTOR:g}-fold** stops and counts as diverged with the worst metric
  (accuracy 0, loss infinite) for the rest of its curve; autolrs handles diverging candidates itself.
- **Steps to target**: the target is the tuned cosine's mean final metric; a method's steps to target is the
  first evaluation at which its seed-mean curve is at least as good (autolrs: total steps, and the mean kept
  steps at that evaluation). Speedup = the reference's steps to target / the method's.
- **autolrs's schedule replayed** (`autolrs-replay`): one autolrs run (default options) on the seed, then the
  schedule it found (`AutoLRS.found_schedule()`: the LR of its kept steps) replayed with no search by
  `autolrs.replay.ReplayLR` from the same initial weights on the same batches, stretched from its kept steps
  to the whole budget (stages piecewise constant, warmup and decay linear); the replay is the model measured.
- **Tuning cost**: optimizer steps a user spends to obtain the model: grid points x budget for a tuned
  method, one budget for autolrs, the range test + one-cycle and Prodigy, two budgets for `autolrs-replay`.
- **autolrs overhead**: wall time inside autolrs (its constructor and `step`: controller, forecasts, GP
  fits, snapshots and restores, `val_fn` if any), measured with `perf_counter` in the same runs, divided by
  the run's wall time (training loop without the harness's curve evaluations).
- **Threads**: each of 2 worker processes runs one run at a time with 1 thread (torch, OpenMP and BLAS).
- A difference is called *clear* when it exceeds twice the standard error of the difference of the seed
  means.
"""


def write_report(folder: Path, report: Path) -> Path:
    """Write the report (and the plots, in ``folder``) from ``folder/<task>.json``."""
    folder, report = Path(folder), Path(report)
    results = []
    for name in REGISTRY:
        path = folder / f"{name}.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
    manifest_path = folder / "bench.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    run_ids = sorted({r["run_id"] for r in results if r.get("run_id")})
    lines = ["# Benchmarks", "",
             "*Generated by `make bench` (`python -m benchmarks.run`) from `benchmarks/results/*.json`; do not "
             "edit by hand: `python -m benchmarks.report` regenerates it from the JSON.*", ""]
    modes = sorted({r["mode"] for r in results})
    lines.append(f"Mode: {', '.join(modes)}; bench run {', '.join(run_ids) or MISSING}"
                 + (f"; whole bench {manifest['wall_s'] / 60:.1f} min" if manifest.get("wall_s") else "")
                 + (f" on {manifest['machine']['cpus']} CPU cores, torch {manifest['machine']['torch']}"
                    if manifest.get("machine") else "")
                 + (f"; code at commit {manifest['git_commit'][:10]}" if manifest.get("git_commit") else "")
                 + (" with uncommitted changes to autolrs" if manifest.get("autolrs_uncommitted_changes") else "")
                 + ".")
    if manifest.get("packages"):
        lines.append("Packages: " + ", ".join(f"{k} {v}" for k, v in manifest["packages"].items()) + ".")
    compute = sum(r["run_seconds"] for r in results)
    trained = [r.get("runs_trained") for r in results]
    if results:
        lines.append(f"The {sum(r['runs'] for r in results)} runs' training and evaluation add up to "
                     f"{compute / 3600:.1f} hours of one core (measured, on a machine shared with other jobs)"
                     + (f"; this invocation trained {sum(trained)} of them and read the rest from the cache "
                        "of earlier invocations of the same set-up and code" if None not in trained else "")
                     + ".")
    if manifest.get("autolrs_changed_during_run"):
        lines.append("**Warning: autolrs's source changed while this bench ran; its runs may mix versions.**")
    if len(run_ids) > 1:
        lines.append(f"**Warning: these tasks come from {len(run_ids)} different bench runs.**")
    lines += ["", "## Headline", ""] + _headline(results) + [""] + _forecast_table(results) + \
        _fresh_section(results) + _ablation_table(results) + [SETUP]
    for r in results:
        lines += _task_section(r, folder, report)
    lines += ["## Reproduce", "", "```bash",
              "make bench                 # this report (3 seeds, the cuts above, fresh seeds 3-7; about 3 h on 2 cores from an empty cache)",
              "make bench BENCH_FULL=1    # every method on every task",
              "make bench-quick           # 1 seed, short budgets, a few minutes (benchmarks/.cache/quick/)",
              "python -m benchmarks.run --task mnist1d-cnn --methods autolrs --seeds 0 1 2 3 4 \\",
              "    --autolrs-options '{\"candidates\": 5}'   # an autolrs variant against the published target",
              "```", "", "Runs are cached in `benchmarks/.cache/` (keyed by set-up and code), so an interrupted "
              "bench resumes.", ""]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines))
    return report


if __name__ == "__main__":  # pragma: no cover
    here = Path(__file__).resolve().parent
    args = sys.argv[1:]
    write_report(Path(args[0]) if args else here / "results",
                 Path(args[1]) if len(args) > 1 else here.parent / "BENCHMARKS.md")
