"""Command line of the benchmark harness.

Bench modes (write ``<out>/<task>.json``, the plots and the report)::

    python -m benchmarks.run                 # make bench: 3 seeds, full budgets, the default cuts
    python -m benchmarks.run --full          # every method on every task
    python -m benchmarks.run --quick         # make bench-quick: 1 seed, short budgets (own folder)

Experiments (print the figures; write nothing unless ``--json``)::

    python -m benchmarks.run --task mnist1d-cnn --methods autolrs --seeds 0 1 2 3 4 \\
        --autolrs-options '{"candidates": 5}'

The target of an experiment (for steps to target) is, in order: ``--target``; the tuned cosine of the same
run if ``cosine`` is among the methods; the published target in ``benchmarks/results/<task>.json`` if its
budget matches.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before numpy and torch load: see benchmarks/pool.py

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

from .cache import CACHE_DIR, RunCache, code_fingerprint  # noqa: E402
from .formatting import MISSING, number, percent  # noqa: E402
from .methods import Method, autolrs_method, method  # noqa: E402
from .plans import Plan, plan  # noqa: E402
from .suite import run_task  # noqa: E402
from .tasks import REGISTRY  # noqa: E402

__all__ = ["main", "RESULTS_DIR", "QUICK_DIR"]

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
QUICK_DIR = CACHE_DIR / "quick"  # bench-quick never overwrites the published results
REPORT = HERE.parent / "BENCHMARKS.md"


def summary_table(result: dict) -> str:
    """A plain-text table of one task's figures, one method per row."""
    task = result["task"]
    head = (f"{'method':<34}{'lr':>9}{task['metric'] + ' mean':>17}{'std':>9}{'to target':>11}{'kept':>8}"
            f"{'x cosine':>9}{'overhead':>9}")
    lines = [head, "-" * len(head)]
    for label, e in result["methods"].items():
        lines.append(f"{label:<34}{number(e['lr'], '.3g'):>9}{number(e['final_mean']):>17}"
                     f"{number(e['final_std'], '.2g'):>9}"
                     f"{number(e['steps_to_target'], 'd'):>11}{number(e['kept_steps_to_target'], '.0f'):>8}"
                     f"{number(e['speedup_vs_cosine'], '.2f'):>9}{percent(e['overhead']):>9}")
    target = result["target"]
    lines.append(f"target: {number(target['value']) if target else MISSING}; seeds {result['seeds']}; "
                 f"budget {task['budget']} steps")
    return "\n".join(lines)


def _write(result: dict, path: Path) -> Path:
    from autolrs.report import write_json

    return write_json(path, **result)


def _published_target(task: str, budget: int) -> float | None:
    try:
        published = json.loads((RESULTS_DIR / f"{task}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if published["task"]["budget"] != budget or not published.get("target"):
        return None
    return published["target"]["value"]


def _experiment_plan(args) -> Plan:
    base = plan(args.task, "default", seeds=args.seeds, budget=args.budget)
    methods: list[Method] = []
    for label in args.methods:
        if label == "autolrs" and args.autolrs_options:
            methods.append(autolrs_method(json.loads(args.autolrs_options)))
        else:
            methods.append(method(label))
    tuned = tuple(m for m in methods if m.tunable)
    single = tuple((m, None) for m in methods if not m.tunable)
    return Plan(base.task, "experiment", base.seeds, tuned, single)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1 seed, short budgets (make bench-quick)")
    mode.add_argument("--full", action="store_true", help="every method on every task (hours)")
    parser.add_argument("--task", "--tasks", dest="tasks", nargs="+", choices=list(REGISTRY),
                        default=list(REGISTRY))
    parser.add_argument("--methods", nargs="+", help="an experiment: only these methods (no report)")
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--autolrs-options", help="JSON of AutoLRS keyword arguments for the 'autolrs' method")
    parser.add_argument("--budget", type=int, help="optimizer steps per run (default: the task's)")
    parser.add_argument("--target", type=float, help="the metric value for steps to target")
    parser.add_argument("--workers", type=int, help="worker processes (default: the task's, 2)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the run cache")
    parser.add_argument("--out", type=Path, help="results folder of a bench (default: benchmarks/results)")
    parser.add_argument("--report", type=Path, help="the report to write (default: BENCHMARKS.md)")
    parser.add_argument("--json", type=Path, help="an experiment's results file")
    args = parser.parse_args(argv)
    if args.autolrs_options and not (args.methods and "autolrs" in args.methods):
        parser.error("--autolrs-options needs --methods ... autolrs")
    cache = RunCache(None if args.no_cache else CACHE_DIR)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    start = time.perf_counter()

    if args.methods:
        for task in args.tasks:
            p = _experiment_plan(argparse.Namespace(**{**vars(args), "task": task}))
            target = args.target
            if target is None and "cosine" not in [m.label for m in p.tuned]:
                target = _published_target(task, p.task.budget)
            result = run_task(p, cache, args.workers, target, run_id)
            print(f"\n{task}\n{summary_table(result)}")
            if args.json:
                _write(result, args.json if len(args.tasks) == 1 else args.json.with_name(f"{task}-{args.json.name}"))
        return 0

    from .report import code_state, write_manifest, write_report

    code = code_state()
    autolrs_source = code_fingerprint.__wrapped__(True)  # to detect edits to autolrs during the bench
    mode_name = "quick" if args.quick else "full" if args.full else "default"
    out = args.out or (QUICK_DIR / "results" if args.quick else RESULTS_DIR)
    report = args.report or (QUICK_DIR / "BENCHMARKS.md" if args.quick else REPORT)
    for task in args.tasks:
        p = plan(task, mode_name, seeds=args.seeds, budget=args.budget)
        result = run_task(p, cache, args.workers, args.target, run_id)
        path = _write(result, out / f"{task}.json")
        print(f"\n{task} ({result['wall_s']:.0f} s)\n{summary_table(result)}\nwrote {path}", flush=True)
    wall = time.perf_counter() - start
    code["autolrs_changed_during_run"] = code_fingerprint.__wrapped__(True) != autolrs_source
    write_manifest(out, run_id=run_id, mode=mode_name, wall_s=wall, tasks=args.tasks, **code)
    write_report(out, report)
    print(f"\nwrote {report} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
