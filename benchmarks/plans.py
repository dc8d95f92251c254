"""What each bench mode runs on each task, and what it leaves out (and why): the compute budget's cuts.

Modes:
- ``quick`` (``make bench-quick``, a few minutes): one seed, short budgets, the methods of ``default``.
- ``default`` (``make bench``, about 3 hours on the 2-core machine from an empty cache): 3 seeds, full
  budgets; every method and every ablation, except where a task declares a cut (``TaskEntry.default_tuned``,
  ``benchmarks.ablations.DEFAULT_ABLATIONS``): on the Transformer only the cosine schedule is tuned (its grid
  sets the target), because the whole grid would take ~2.6 hours there, and five of the ten ablations run.
  Then the fresh seeds (:data:`FRESH_SEEDS`) on every task.
- ``full`` (``make bench BENCH_FULL=1``): every method on every task, 3 seeds, full budgets, then the fresh seeds (~4.5 hours).
"""

from __future__ import annotations

from dataclasses import dataclass

from .ablations import ABLATIONS, DEFAULT_ABLATIONS
from .methods import SCHEDULE_NAMES, Method, method
from .methods.optimizers import SCHEDULE_FREE_DEFAULT_LR
from .tasks import registered
from .tasks.base import TaskSpec

__all__ = ["Plan", "plan", "MODES", "SEEDS", "FRESH_SEEDS", "SINGLE_RUN_METHODS"]

MODES = ("quick", "default", "full")
SEEDS = (0, 1, 2)
# Seeds no choice saw: each tuned method at the LR its grid chose on SEEDS, and each one-run method, are run
# again on these. A grid's best mean over the seeds it is judged on is an optimistic estimate of that LR (the
# winner's curse); these seeds give the unbiased one, and show an LR chosen at the edge of stability.
FRESH_SEEDS = (3, 4, 5, 6, 7)
# autolrs, its ablations, the replay of its schedule, the range test + one-cycle and Prodigy run once per seed:
# they have no LR to tune.
SINGLE_RUN_METHODS = ("autolrs", *ABLATIONS, "autolrs-replay", "range-test", "prodigy")
TUNED = (*SCHEDULE_NAMES, "schedule-free")


@dataclass(frozen=True)
class Plan:
    """The runs of one task in one mode.

    Attributes:
        tuned: methods tuned on their LR grid (every grid point x every seed).
        single: ``(method, lr)`` run once per seed (``lr`` None where the method has none).
        cuts: sentences for the report: what this mode leaves out, and why.
        max_extensions: how many times a grid may grow past an edge where its best point sits.
        fresh_seeds: seeds on which the chosen LR of every tuned method, and every one-run method except
            autolrs's ablations and replay, run again after the tuning (:data:`FRESH_SEEDS`); none: skipped.
    """

    task: TaskSpec
    mode: str
    seeds: tuple[int, ...]
    tuned: tuple[Method, ...]
    single: tuple[tuple[Method, float | None], ...]
    cuts: tuple[str, ...] = ()
    max_extensions: int = 3
    fresh_seeds: tuple[int, ...] = ()


def plan(task_name: str, mode: str = "default", *, seeds=None, budget: int | None = None,
         eval_every: int | None = None) -> Plan:
    """The plan of ``task_name`` in ``mode``; ``seeds``, ``budget`` and ``eval_every`` override it."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    entry = registered(task_name)
    task = entry.quick() if mode == "quick" else entry.spec
    if budget is not None:
        task = task.scaled(budget=budget, eval_every=eval_every or max(1, budget // 20))
    seeds = tuple(seeds if seeds is not None else (SEEDS[:1] if mode == "quick" else SEEDS))
    everything = mode == "full"
    tuned = TUNED if everything or entry.default_tuned is None else entry.default_tuned
    ablations = tuple(ABLATIONS) if everything else DEFAULT_ABLATIONS.get(task_name, tuple(ABLATIONS))
    if not entry.has_validation:  # a validation objective needs a validation split
        ablations = tuple(m for m in ablations if m != "autolrs-val")
    single = [(method(m), None) for m in SINGLE_RUN_METHODS if m not in ABLATIONS or m in ablations]
    cuts = []
    skipped = [m for m in ABLATIONS if m not in ablations and (entry.has_validation or m != "autolrs-val")]
    if skipped:
        cuts.append(f"ablations not run on {task_name} in this mode: {', '.join(skipped)} ({len(skipped) * len(seeds)} "
                    "runs; `make bench BENCH_FULL=1` runs them).")
    if "schedule-free" not in tuned:
        lr = SCHEDULE_FREE_DEFAULT_LR[task.optimizer]
        single.append((method("schedule-free"), lr))
        cuts.append(f"Schedule-Free is not tuned on {task_name} in this mode: it runs at the package's default "
                    f"LR ({lr:g}) with 5% warmup, 1 run per seed.")
    left_out = [m for m in TUNED if m not in tuned and m != "schedule-free"]
    if left_out:
        runs = len(left_out) * len(task.grid) * len(seeds)
        cuts.append(f"not run on {task_name} in this mode: {', '.join(left_out)} (their grids would add {runs} "
                    "runs; `make bench BENCH_FULL=1` runs them).")
    # every task, the Transformer included (25 runs there, ~35 min on 2 cores): it is the task where autolrs
    # and the best one-run peer are closest, and the peer's spread over 3 seeds is the widest
    fresh = () if mode == "quick" else tuple(s for s in FRESH_SEEDS if s not in seeds)
    return Plan(task, mode, seeds, tuple(method(m) for m in tuned), tuple(single), tuple(cuts), fresh_seeds=fresh)
