"""A diagnostic, not part of the bench: do the search's short windows rank LRs as whole stages do?

From one start (``--prefix`` steps at ``--start-lr``, on the task's own problem, seed, batches and
optimizer), each LR given trains one whole stage of ``--stage`` steps, then a linear decay to zero over
``--decay`` steps. For each LR it prints:

* ``forecast``: what autolrs's search sees, the forecast (:func:`autolrs.forecast.forecast_loss`, the default
  preset's bound) from the stage's first ``--window`` losses to the stage's end, as a candidate's window is
  forecast (the horizon is the centre of the stage's last ``--window`` losses);
* ``first``: the stage's first loss, the same for every LR (the same weights and batch);
* ``reached``: what the stage really reaches, the mean of its last ``--window`` training losses;
* ``val``: the validation loss at the stage's end (tasks with a validation split);
* the task's metric after the decay: what the stage's LR is worth to the run.

Each LR rebuilds the problem from its seed and replays the prefix (deterministic on one thread), so every
branch starts from the same weights and sees the same batches. The defaults are MNIST-1D's third stage as
the bench's autolrs runs it (a stage of 700 steps from step 777, windows of 18 steps).

    python -m benchmarks.stage_oracle --task mnist1d-cnn --seeds 0 1 2 3 4 5 6 7
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from multiprocessing import get_context


def branch(args: tuple[str, int, float, int, int, int, int, float]) -> dict:
    """One LR's stage and decay from the shared start; returns its row."""
    task_name, seed, start_lr, prefix, stage, window, decay, lr = args
    import numpy as np
    import torch

    from autolrs.config import AutoLRSConfig
    from autolrs.forecast import forecast_loss

    from .methods.optimizers import base_optimizer
    from .tasks import make_problem, registered

    entry = registered(task_name)
    task = entry.spec
    torch.manual_seed(seed)
    problem = make_problem(task, seed)
    optimizer = base_optimizer(task, problem.param_groups(), start_lr)

    def step(at: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = at
        optimizer.zero_grad()
        loss = problem.training_loss()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    for _ in range(prefix):
        step(start_lr)
    losses = [step(lr) for _ in range(stage)]
    defaults = AutoLRSConfig(*task.lr_range)  # the default preset's loss floor and forecast bound
    horizon = stage - 1 - (window - 1) / 2
    forecast = forecast_loss(losses[:window], horizon, floor=defaults.loss_floor,
                             max_extrapolation=defaults.max_extrapolation).value
    row = {"seed": seed, "lr": lr, "first": losses[0], "window": float(np.mean(losses[:window])), "forecast": forecast,
           "reached": float(np.mean(losses[-window:])), "val": math.nan}
    with torch.no_grad():
        if entry.has_validation:
            row["val"] = problem.validation_loss(problem.model)
    problem.model.train()
    for i in range(decay):
        step(lr * (1 - i / decay))
    with torch.no_grad():
        row["final"] = problem.evaluate(problem.model)[task.metric]
    row["higher_is_better"] = task.higher_is_better
    return row


def summary(rows: list[dict]) -> list[str]:
    """Per quantity, how often each LR ranks first across seeds, and each LR's mean final metric."""
    seeds = sorted({r["seed"] for r in rows})
    by_seed = {s: {r["lr"]: r for r in rows if r["seed"] == s} for s in seeds}
    higher = rows[0]["higher_is_better"]
    lines = []
    for key, label in (("forecast", "lowest forecast (what the search picks)"),
                       ("reached", "lowest loss really reached at the stage's end"),
                       ("val", "lowest validation loss at the stage's end"),
                       ("final", "best metric after the decay")):
        firsts = Counter()
        for branches in by_seed.values():
            values = {lr: r[key] for lr, r in branches.items() if not math.isnan(r[key])}
            if values:
                pick = (max if key == "final" and higher else min)(values, key=values.__getitem__)
                firsts[pick] += 1
        if firsts:
            lines.append(f"{label}: " + ", ".join(f"lr {lr:g} on {n}" for lr, n in sorted(firsts.items())))
    for lr in sorted({r["lr"] for r in rows}):
        finals = [r["final"] for r in rows if r["lr"] == lr]
        lines.append(f"lr {lr:g}: mean final {sum(finals) / len(finals):.4f} over {len(finals)} seeds")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage_oracle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mnist1d-cnn")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--start-lr", type=float, default=0.1)
    parser.add_argument("--prefix", type=int, default=777)
    parser.add_argument("--stage", type=int, default=700)
    parser.add_argument("--window", type=int, default=18)
    parser.add_argument("--decay", type=int, default=1200)
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.3, 0.1, 0.033, 0.011])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if args.window < 4 or args.window > args.stage:
        parser.error(f"--window must be between 4 and --stage ({args.stage}), but got {args.window}")
    jobs = [(args.task, seed, args.start_lr, args.prefix, args.stage, args.window, args.decay, lr)
            for seed in args.seeds for lr in args.lrs]
    rows = []
    from .pool import pin_threads

    with get_context("spawn").Pool(args.workers, initializer=pin_threads, initargs=(1,)) as pool:
        for row in pool.imap_unordered(branch, jobs):
            rows.append(row)
            print(f"seed {row['seed']} lr {row['lr']:g}: window {row['window']:.4g}  forecast {row['forecast']:.4g}"
                  f"  reached {row['reached']:.4g}  val {row['val']:.4g}  final {row['final']:.4f}", flush=True)
    rows.sort(key=lambda r: (r["seed"], -r["lr"]))
    print("\n".join(summary(rows)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
