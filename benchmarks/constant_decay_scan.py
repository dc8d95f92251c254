"""A diagnostic, not part of the bench: autolrs's schedule family with no search, on one task.

Trains a constant LR for the first 70% of the budget, then the linear decay to zero of autolrs's decay
phase over the last 30%, at each LR given, through the bench's own training run (``train_run`` replaying a
found schedule with ``autolrs.replay.ReplayLR``: same seeds, batches and evaluation as every bench run).
It measures how much the stages' choice of LR is worth when the search costs nothing.

    python -m benchmarks.constant_decay_scan --task shakespeare-char --lrs 0.001 0.0014 0.002 0.0028 --seeds 0 2
"""

from __future__ import annotations

import argparse
from multiprocessing import get_context


def _found_schedule(lr: float, budget: int, decay_fraction: float) -> dict:
    decay = int(round(decay_fraction * budget))
    hold = budget - decay
    return {"format": "autolrs.found_schedule", "version": 1, "total_steps": budget, "steps_taken": budget,
            "kept_steps": budget,
            "segments": [{"kind": "stage", "stage": 0, "start": 0, "steps": hold, "length": hold, "lr": lr,
                          "start_step": 0},
                         {"kind": "decay", "stage": 1, "start": hold, "steps": decay, "length": decay, "lr": lr,
                          "start_step": hold, "shape": "linear"}]}


def run(args: tuple[str, float, int, float]) -> tuple[float, int, float]:
    task_name, lr, seed, decay_fraction = args
    from .pool import pin_threads

    pin_threads(1)
    from . import train
    from .methods import method
    from .tasks import registered

    task = registered(task_name).spec
    schedule = _found_schedule(lr, task.budget, decay_fraction)
    trained = train.train_run

    def replayed_source(task_, m, lr_, seed_):  # the "autolrs run" a replay replays: this schedule
        if m.family == "autolrs":
            return {"summary": {"found_schedule": schedule}, "seed": seed_, "budget": task.budget,
                    "steps_taken": task.budget, "kept_steps": task.budget, "final": {}, "diverged": False,
                    "wall_s": 0.0, "eval_s": 0.0}
        return trained(task_, m, lr_, seed_)

    train.train_run = replayed_source  # train_run builds a replay's source by calling train_run
    record = trained(task, method("autolrs-replay"), None, seed)
    return lr, seed, record["final"][task.metric]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.constant_decay_scan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="shakespeare-char")
    parser.add_argument("--lrs", nargs="+", type=float, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--decay-fraction", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [(args.task, lr, seed, args.decay_fraction) for seed in args.seeds for lr in args.lrs]
    with get_context("spawn").Pool(args.workers) as pool:
        for lr, seed, value in pool.imap_unordered(run, jobs):
            print(f"{args.task} lr={lr:g} seed={seed}: {value:.4f}", flush=True)


if __name__ == "__main__":
    main()
