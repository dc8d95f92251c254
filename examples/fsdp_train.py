"""AutoLRS under FSDP2 (``fully_shard``), launched by torchrun: an MLP on MNIST-1D, CPUs (gloo) or GPUs (NCCL).

    torchrun --standalone --nproc_per_node=2 examples/fsdp_train.py
    torchrun --standalone --nproc_per_node=2 examples/fsdp_train.py --stop-after 200        # interrupted...
    torchrun --standalone --nproc_per_node=2 examples/fsdp_train.py --resume autolrs-fsdp   # ...continued

The loop is the single-process one. The model is sharded layer by layer with ``fully_shard``, so each rank
holds a shard of every parameter and of AdamW's state; AutoLRS snapshots and restores each rank's own
shards and averages the loss over the ranks, so every rank's scheduler takes the same decisions. Each rank
saves its own checkpoint file (its shards of the model, the optimizer and the AutoLRS snapshot, plus the
controller's state, the same on every rank) and loads its own on resume. Needs mnist1d:
pip install 'autolrs[demo]'.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.nn.functional import cross_entropy

from autolrs import AutoLRS
from autolrs.demo import load_mnist1d
from autolrs.report import stage_table


class MLP(nn.Sequential):
    """MNIST-1D's (1, 40) sequences flattened, then 40 -> 256 -> 256 -> 10 with ReLUs: 78,858 parameters."""

    inputs = 40

    def __init__(self, hidden: int = 256, classes: int = 10) -> None:
        super().__init__(nn.Flatten(), nn.Linear(self.inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, classes))


def shard(model: nn.Module) -> nn.Module:
    """FSDP2 layer by layer, then the root: every Linear's parameters become DTensors sharded on dim 0."""
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="optimizer-step budget, search included")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split across the ranks")
    parser.add_argument("--checkpoint", default="autolrs-fsdp",
                        help="checkpoint prefix: rank r saves <prefix>.rank<r>.pt")
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--resume", help="a checkpoint prefix to continue from (each rank loads its own file)")
    parser.add_argument("--stop-after", type=int, help="stop after this many steps, as if interrupted (then --resume)")
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
    model = shard(MLP().to(device))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

    def val_fn() -> float:  # every rank calls it at the same steps: the forward pass all-gathers the shards
        return cross_entropy(model(x_val), y_val).item()

    sched = AutoLRS(model, optimizer, min_lr=1e-4, max_lr=0.1, total_steps=args.steps, seed=0, val_fn=val_fn)
    if args.resume:
        state = torch.load(f"{args.resume}.rank{rank}.pt", map_location=device, weights_only=True)
        model.load_state_dict(state["model"])  # DTensors: this rank's shards
        optimizer.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["autolrs"])  # refuses another rank's file

    def global_batch(step: int) -> torch.Tensor:
        """The indices of step ``step``'s global batch: the same on every rank, and a function of the step
        alone, so a resumed run draws the batches the stopped one would have."""
        per_epoch = len(x) // args.batch_size
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(step // per_epoch))
        return order[(step % per_epoch) * args.batch_size:][:args.batch_size]

    start, first_step = time.perf_counter(), sched.steps_taken
    while not sched.done and sched.steps_taken - first_step != args.stop_after:
        mine = global_batch(sched.steps_taken)[rank::world].to(device)
        loss = cross_entropy(model(x[mine]), y[mine])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sched.step(loss)
        if sched.steps_taken % args.checkpoint_every == 0:  # every rank saves its own shards
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "autolrs": sched.state_dict()}, f"{args.checkpoint}.rank{rank}.pt")
    seconds = time.perf_counter() - start

    with torch.no_grad():  # a collective: every rank runs the forward pass on its share of the test set
        x_test, y_test = data["x_test"][rank::world].to(device), data["y_test"][rank::world].to(device)
        correct = torch.tensor([(model(x_test).argmax(1) == y_test).sum().item(), len(y_test)], device=device)
    dist.all_reduce(correct)
    if rank == 0:
        print(stage_table(sched.history))
        done = sched.steps_taken - first_step
        print(f"{world} ranks (FSDP2), {done} steps in {seconds:.1f} s ({1000 * seconds / max(1, done):.2f} ms/step); "
              f"{sched.kept_steps} kept steps; snapshot {sched.snapshot.nbytes / 1024:.0f} KiB per rank; "
              f"test accuracy {correct[0].item() / correct[1].item():.3f}")
    dist.barrier()  # no rank tears the group down while another still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
