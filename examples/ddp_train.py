"""AutoLRS under DistributedDataParallel, launched by torchrun: MNIST-1D on CPUs (gloo) or GPUs (NCCL).

    torchrun --nproc_per_node=2 examples/ddp_train.py
    torchrun --nproc_per_node=2 examples/ddp_train.py --resume autolrs-ddp.pt   # continue a stopped run

The loop is the single-process one: AutoLRS finds the initialised process group and averages the loss
(and val_fn's result) over the ranks, so every rank's scheduler takes the same decisions. Each rank trains
on its share of every global batch; rank 0 saves the checkpoint and prints. Needs mnist1d:
pip install 'autolrs[demo]'.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch
import torch.distributed as dist
from torch.nn.functional import cross_entropy
from torch.nn.parallel import DistributedDataParallel

from autolrs import AutoLRS
from autolrs.demo import ConvNet, evaluate, load_mnist1d
from autolrs.report import stage_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="optimizer-step budget, search included")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split across the ranks")
    parser.add_argument("--checkpoint", default="autolrs-ddp.pt", help="where rank 0 saves the run")
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--resume", help="a checkpoint to continue from (every rank loads it)")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda") if cuda else torch.device("cpu")
    if rank != 0:  # every rank's scheduler warns the same: rank 0 speaks for all
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="autolrs")

    data = load_mnist1d()
    x, y = data["x"][:3500].to(device), data["y"][:3500].to(device)
    # 500 held-out training sequences for val_fn, shared out across the ranks (autolrs averages the losses)
    x_val, y_val = data["x"][3500 + rank::world].to(device), data["y"][3500 + rank::world].to(device)

    torch.manual_seed(0)
    model = DistributedDataParallel(ConvNet().to(device), device_ids=[device] if cuda else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = AutoLRS(model, optimizer, min_lr=1e-3, max_lr=1.0, total_steps=args.steps, seed=0,
                    val_fn=lambda: evaluate(model.module, x_val, y_val)[1])
    if args.resume:
        state = torch.load(args.resume, map_location=device, weights_only=True)
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["autolrs"])

    def global_batch(step: int) -> torch.Tensor:
        """The indices of step ``step``'s global batch: the same on every rank, and a function of the step
        alone, so a resumed run draws the batches the stopped one would have."""
        per_epoch = len(x) // args.batch_size
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(step // per_epoch))
        return order[(step % per_epoch) * args.batch_size:][:args.batch_size]

    start, first_step = time.perf_counter(), sched.steps_taken
    while not sched.done:
        mine = global_batch(sched.steps_taken)[rank::world].to(device)
        loss = cross_entropy(model(x[mine]), y[mine])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sched.step(loss)
        if rank == 0 and sched.steps_taken % args.checkpoint_every == 0:
            torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                        "autolrs": sched.state_dict()}, args.checkpoint)
    seconds = time.perf_counter() - start

    if rank == 0:
        print(stage_table(sched.history))
        accuracy, _ = evaluate(model.module, data["x_test"].to(device), data["y_test"].to(device))
        print(f"{world} ranks, {sched.steps_taken - first_step} steps in {seconds:.1f} s "
              f"({1000 * seconds / max(1, sched.steps_taken - first_step):.2f} ms/step); "
              f"{sched.kept_steps} kept steps; test accuracy {accuracy:.3f}")
    dist.barrier()  # no rank tears the group down while another still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
