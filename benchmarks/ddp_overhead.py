"""What autolrs costs per optimizer step under DDP and in one process: MNIST-1D CNN, CPUs (gloo).

    torchrun --standalone --nproc_per_node=2 benchmarks/ddp_overhead.py    # 2 ranks, global batch 64
    torchrun --standalone --nproc_per_node=1 benchmarks/ddp_overhead.py    # one process, the same batch

Trains the example's model (examples/ddp_train.py) for ``--steps`` steps twice, with the same data: at a
constant LR without autolrs, then with AutoLRS (no val_fn, so that only autolrs itself is timed). Rank 0
prints the median and mean step time of each, the time inside ``sched.step()`` and, with several ranks,
the time in autolrs's collectives (timed around ``torch.distributed.all_reduce``: waiting for the slower
rank included) and their count and bytes per step. One torch thread per rank: the ranks share the cores.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.distributed as dist
from torch.nn.functional import cross_entropy
from torch.nn.parallel import DistributedDataParallel

from autolrs import AutoLRS
from autolrs.demo import ConvNet, load_mnist1d

_COLLECTIVES: list[tuple[float, int]] = []  # (seconds, bytes) of each all_reduce autolrs called


def _timed_all_reduce():
    original = dist.all_reduce

    def all_reduce(tensor, *args, **kwargs):
        start = time.perf_counter()
        result = original(tensor, *args, **kwargs)
        _COLLECTIVES.append((time.perf_counter() - start, tensor.numel() * tensor.element_size()))
        return result

    dist.all_reduce = all_reduce


def run(x, y, rank, world, steps, batch, autolrs: bool) -> dict:
    torch.manual_seed(0)
    net = ConvNet()
    model = DistributedDataParallel(net) if world > 1 else net
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = AutoLRS(model, optimizer, min_lr=1e-3, max_lr=1.0, total_steps=steps, seed=0) if autolrs else None
    order = torch.Generator().manual_seed(1)
    step_times, sched_times = [], []
    _COLLECTIVES.clear()
    for _ in range(steps):
        indices = torch.randint(len(x), (batch,), generator=order)[rank::world]
        start = time.perf_counter()
        loss = cross_entropy(model(x[indices]), y[indices])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if sched is not None:
            inside = time.perf_counter()
            sched.step(loss)
            sched_times.append(time.perf_counter() - inside)
        step_times.append(time.perf_counter() - start)
        if sched is not None and sched.done:
            break
    ms = lambda values: (1000 * statistics.median(values), 1000 * statistics.fmean(values))  # noqa: E731
    out = {"steps": len(step_times), "step_ms": ms(step_times)}
    if sched_times:
        out["autolrs_ms"] = ms(sched_times)
    if _COLLECTIVES:
        out["collective_ms"] = ms([seconds for seconds, _ in _COLLECTIVES])
        out["collectives_per_step"] = len(_COLLECTIVES) / len(step_times)
        out["bytes_per_step"] = sum(size for _, size in _COLLECTIVES) / len(step_times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split across the ranks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="autolrs")
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    _timed_all_reduce()
    data = load_mnist1d()
    x, y = data["x"][:3500], data["y"][:3500]
    for autolrs in (False, True):
        result = run(x, y, rank, world, args.steps, args.batch_size, autolrs)
        if rank == 0:
            figures = ", ".join(f"{key} {value[0]:.2f} median / {value[1]:.2f} mean" if isinstance(value, tuple)
                                else f"{key} {value:g}" for key, value in result.items())
            print(f"{world} rank(s), {'autolrs' if autolrs else 'constant LR'}: {figures}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
