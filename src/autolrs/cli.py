"""Command line: ``autolrs demo`` and ``autolrs plot``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "plot_replay"]


def plot_replay(path: str | Path, schedule: dict[str, Any], total_steps: int | None = None) -> Path:
    """Plot a found schedule (LR per kept step) and its :class:`~autolrs.replay.ReplayLR` replay on
    ``total_steps`` steps (default: the run's budget, search included), and save a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plot_replay needs matplotlib: pip install 'autolrs[demo]'") from error
    from .replay import replay_lrs
    from .report import save_figure

    found = replay_lrs(schedule)
    budget = total_steps if total_steps is not None else schedule.get("total_steps")
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(range(1, len(found) + 1), found, lw=2, label=f"found schedule ({len(found)} kept steps)")
    if budget is not None and budget != len(found):
        ax.plot(range(1, budget + 1), replay_lrs(schedule, budget), "--", lw=1.5,
                label=f"ReplayLR(total_steps={budget}): stretched x{budget / len(found):.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step of the replay (no search)")
    ax.set_ylabel("learning rate")
    ax.set_title("autolrs: the found schedule, replayed")
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autolrs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="MNIST-1D: autolrs against a constant LR on the same step budget")
    demo.add_argument("--steps", type=int, default=4000, help="optimizer-step budget, search included")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="autolrs-demo", help="folder for demo.json and demo.png")
    demo.add_argument("--constant-lr", type=float, default=0.1, help="LR of the constant-LR comparison")
    plot = sub.add_parser("plot", help="plot a JSON record written by `autolrs demo` (or any with 'history'), "
                                       "or a found schedule (sched.found_schedule() saved as JSON)")
    plot.add_argument("record", help="the JSON file")
    plot.add_argument("-o", "--output", help="the PNG to write (default: next to the record)")
    plot.add_argument("--replay-steps", type=int, default=None,
                      help="budget of the replayed schedule drawn (default: the run's total_steps); a record with "
                           "a found schedule also gets <output>-replay.png")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        run_demo(steps=args.steps, seed=args.seed, out=args.out, constant_lr=args.constant_lr)
        return 0
    from .report import plot_run, stage_table

    record = json.loads(Path(args.record).read_text())
    output = Path(args.output or Path(args.record).with_suffix(".png"))
    schedule = record if "segments" in record else record.get("found_schedule")
    if schedule is None and "history" not in record:
        parser.error(f"{args.record} holds neither a run's 'history' nor a found schedule ('segments').")
    if schedule is not None:
        replay_png = output if "history" not in record else output.with_name(f"{output.stem}-replay.png")
        plot_replay(replay_png, schedule, args.replay_steps)
        print(f"wrote {replay_png}")
    if "history" not in record:
        return 0
    trace = None
    if "trace" in record:
        t = record["trace"]
        trace = [(s, p, lr, float("nan") if loss is None else loss)
                 for s, p, lr, loss in zip(t["step"], t["phase"], t["lr"], t["loss"])]
    decays = [s for s in (schedule or {}).get("segments", []) if s.get("kind") == "decay"]
    plot_run(output, record["history"], trace, decay_shape=decays[0].get("shape", "linear") if decays else "linear")
    print(stage_table(record["history"]))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
