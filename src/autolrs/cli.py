"""Command line: ``autolrs demo`` and ``autolrs plot``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main", "plot_replay", "run_demo"]


class Progress:
    """A minimal progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.tty = sys.stderr.isatty()
        self._shown = -1

    def update(self, done: int, info: str = "") -> None:
        fraction = min(done / self.total, 1.0)
        if self.tty:
            if int(fraction * 200) == self._shown and done < self.total:
                return
            self._shown = int(fraction * 200)
            bar = "#" * int(30 * fraction) + "." * (30 - int(30 * fraction))
            sys.stderr.write(f"\r{self.label} [{bar}] {done}/{self.total} {info:<28}")
            if done >= self.total:
                sys.stderr.write("\n")
        elif int(fraction * 10) > self._shown:
            self._shown = int(fraction * 10)
            sys.stderr.write(f"{self.label}: {done}/{self.total} steps {info}\n")
        sys.stderr.flush()


def run_demo(steps: int = 4000, seed: int = 0, out: str | Path = "autolrs-demo", constant_lr: float = 0.1,
             min_lr: float = 1e-3, max_lr: float = 1.0, batch_size: int = 128) -> dict:
    """Train the MNIST-1D CNN with autolrs and with a constant LR on the same budget; report both."""
    import torch

    from . import AutoLRS
    from .demo import ConvNet, batches, evaluate, load_mnist1d
    from .report import plot_run, stage_table, write_json

    # A ~5k-weight CNN gains nothing from more threads, and on a busy machine they spin: with another
    # process on each of 2 cores, 2 threads made a step 200x slower than 1 thread (measured).
    torch.set_num_threads(1)
    data = load_mnist1d()
    # The benchmark's split (3500 training sequences; the other 500 are its validation split, which autolrs's
    # validation objective did not improve on, BENCHMARKS.md); the test set gives the final figure.
    x_train, y_train = data["x"][:3500], data["y"][:3500]

    def make(seed_: int):
        torch.manual_seed(seed_)
        model = ConvNet()
        optimizer = torch.optim.SGD(model.parameters(), lr=constant_lr, momentum=0.9, weight_decay=5e-4)
        return model, optimizer, batches(x_train, y_train, batch_size, torch.Generator().manual_seed(seed_))

    # autolrs
    model, optimizer, stream = make(seed)
    sched = AutoLRS(model, optimizer, min_lr=min_lr, max_lr=max_lr, total_steps=steps, seed=seed)
    trace = []
    bar = Progress(steps, "autolrs ")
    start = time.perf_counter()
    while not sched.done:
        phase, lr = sched.phase, sched.get_last_lr()[0]
        x, y = next(stream)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sched.step(loss)
        trace.append((sched.steps_taken, phase, lr, loss.item()))
        bar.update(sched.steps_taken, f"stage {len(sched.history)} {sched.phase}")
    autolrs_time = time.perf_counter() - start
    autolrs_acc, autolrs_loss = evaluate(model, data["x_test"], data["y_test"])

    # constant LR, same number of optimizer steps
    model, optimizer, stream = make(seed)
    bar = Progress(steps, "constant")
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x, y = next(stream)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        bar.update(step)
    constant_time = time.perf_counter() - start
    constant_acc, constant_loss = evaluate(model, data["x_test"], data["y_test"])

    out = Path(out)
    record = {
        "task": "MNIST-1D, 1-D CNN, SGD momentum 0.9, weight decay 5e-4, batch 128",
        "seed": seed,
        "budget_steps": steps,
        "autolrs": {"test_accuracy": autolrs_acc, "test_loss": autolrs_loss, "steps_taken": sched.steps_taken,
                    "kept_steps": sched.kept_steps, "wall_s": autolrs_time, "config": sched.config.to_dict()},
        "constant_lr": {"lr": constant_lr, "test_accuracy": constant_acc, "test_loss": constant_loss,
                        "steps_taken": steps, "wall_s": constant_time},
        "history": sched.history,
        "found_schedule": sched.found_schedule(),
        "trace": {"step": [t[0] for t in trace], "phase": [t[1] for t in trace], "lr": [t[2] for t in trace],
                  "loss": [t[3] for t in trace]},
    }
    json_path = write_json(out / "demo.json", **record)
    png_path = plot_run(out / "demo.png", sched.history, trace,
                        title=f"autolrs on MNIST-1D: test accuracy {autolrs_acc:.3f} (constant {constant_lr}: "
                              f"{constant_acc:.3f})")

    print()
    print(stage_table(sched.history))
    print()
    print(f"{'':22}{'test accuracy':>14}{'test loss':>11}{'optimizer steps':>17}{'kept steps':>12}{'wall':>8}")
    print(f"{'autolrs':22}{autolrs_acc:>14.4f}{autolrs_loss:>11.4f}{sched.steps_taken:>17}{sched.kept_steps:>12}"
          f"{autolrs_time:>7.1f}s")
    print(f"{f'constant lr {constant_lr:g}':22}{constant_acc:>14.4f}{constant_loss:>11.4f}{steps:>17}{steps:>12}"
          f"{constant_time:>7.1f}s")
    print(f"\nwrote {json_path} and {png_path}")
    return record


def plot_replay(path: str | Path, schedule: dict, total_steps: int | None = None) -> Path:
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
    plot_run(output, record["history"], trace)
    print(stage_table(record["history"]))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
