"""One rank of a gloo process group for test_distributed.py: ``run()``, or this file under torchrun.

    run(rank, world, init_method, timeout_s, mode, out_dir, *args)    from a multiprocessing forkserver
    torchrun --nproc_per_node=2 ddp_worker.py MODE OUT_DIR ARGS...    the same, env:// rendezvous

Modes:
    train STEP...     DDP runs (AutoLRS given the DDP model, then its .module); rank 0 checkpoints the
                      first at each STEP
    resume STEP...    every rank resumes from rank 0's checkpoint at each STEP, with fresh objects
    fail SCENARIO     rank 1 misbehaves; every rank writes the error it ends with to fail_rank{r}.json
    refused           what AutoLRS refuses (FSDP1 models, a scheduler built before the group) and what it
                      takes since FSDP2 support (a fully_shard model)

The task: a float64 MLP on a fixed regression-to-classes stream. Each step draws one global batch of
``BATCH`` examples and rank r trains on its slice, so the DDP run and a single process on the whole batch
compute the same gradients up to rounding. ``val_fn`` averages a held-out set split across the ranks, and
``max_lr`` is high enough for candidates to diverge.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

import threadpoolctl
import torch
import torch._dynamo  # noqa: F401  (DDP imports it when built: imported once here, ranks forked later start fast)

from autolrs import AutoLRS

BATCH = 32
TOTAL = 260
OPTIONS = dict(min_lr=1e-2, max_lr=30.0, total_steps=TOTAL, stage_steps=30, explore_steps=6, candidates=3,
               max_stage_steps=60, warmup_steps=6, min_explore_steps=4, seed=7,
               trust_region=None,  # the whole range every stage: diverging candidates are covered too
               decay_fraction=0.1)


# (collectives, bytes) autolrs ran in each sched.step() of the last build(), counted by count_collectives().
COLLECTIVES: list[tuple[int, int]] = []
_CALLS: list[int] = []  # the bytes of each collective called through torch.distributed's Python API


def count_collectives() -> None:
    """Count every collective called through ``torch.distributed`` (DDP's own run in C++, uncounted)."""
    for name in ("all_reduce", "broadcast", "all_gather", "all_gather_object", "broadcast_object_list",
                 "reduce", "gather", "scatter", "barrier", "all_to_all", "reduce_scatter"):
        original = getattr(torch.distributed, name)

        def counted(*args, _original=original, **kwargs):
            tensor = args[0] if args and torch.is_tensor(args[0]) else None
            _CALLS.append(tensor.numel() * tensor.element_size() if tensor is not None else 0)
            return _original(*args, **kwargs)

        setattr(torch.distributed, name, counted)


def build(rank: int = 0, world: int = 1, *, wrap: bool | None = None, options=None):
    """Model, optimizer, scheduler, data generator and one-step function for ``rank`` of ``world``.

    ``wrap``: None for a single process; True passes the DDP model to AutoLRS, False its ``.module``.
    """
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).double()
    model = net if wrap is None else torch.nn.parallel.DistributedDataParallel(net)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    data = torch.Generator().manual_seed(1)
    w = torch.randn(8, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x_val = torch.randn(128, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y_val = (x_val @ w).argmax(1)
    share = slice(rank * len(x_val) // world, (rank + 1) * len(x_val) // world)

    def val_fn():
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(net(x_val[share]), y_val[share]).item()

    sched = AutoLRS(net if wrap is False else model, optimizer, val_fn=val_fn, **(options or OPTIONS))
    COLLECTIVES.clear()

    def step():
        x = torch.randn(BATCH, 8, generator=data, dtype=torch.float64)
        mine = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        loss = torch.nn.functional.cross_entropy(model(x[mine]), (x[mine] @ w).argmax(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        before = len(_CALLS)
        sched.step(loss)
        COLLECTIVES.append((len(_CALLS) - before, sum(_CALLS[before:])))
        return loss.item(), sched.get_last_lr()[0]

    return net, optimizer, sched, data, step


def result(net, sched, trace) -> dict:
    return {"trace": trace, "history": sched.history, "steps_taken": sched.steps_taken,
            "params": torch.cat([p.detach().flatten() for p in net.parameters()]),
            "collectives": list(COLLECTIVES)}


def checkpoint(net, optimizer, sched, data) -> dict:
    return {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "sched": sched.state_dict(),
            "data_rng": data.get_state()}


def train(rank, world, out: Path, stops: set[int]) -> None:
    for wrap in (True, False):
        net, optimizer, sched, data, step = build(rank, world, wrap=wrap)
        trace = []
        while not sched.done:
            trace.append(step())
            if wrap and rank == 0 and sched.steps_taken in stops:
                torch.save(checkpoint(net, optimizer, sched, data), out / f"ckpt_{sched.steps_taken}.pt")
        torch.save(result(net, sched, trace), out / f"train_{'ddp' if wrap else 'module'}_rank{rank}.pt")


def resume(rank, world, out: Path, stops: list[int]) -> None:
    for stop in stops:
        state = torch.load(out / f"ckpt_{stop}.pt", weights_only=True)  # rank 0's checkpoint, on every rank
        net, optimizer, sched, data, step = build(rank, world, wrap=True)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["sched"])
        data.set_state(state["data_rng"])
        trace = []
        while not sched.done:
            trace.append(step())
        torch.save(result(net, sched, trace), out / f"resume_{stop}_rank{rank}.pt")


def fail(rank, world, out: Path, scenario: str) -> None:
    """Rank 1 misbehaves; every rank writes the error it ends with (and how long its last step took).

    Scenarios: ``options`` (rank 1 uses another seed), ``out_of_step`` (rank 1's scheduler goes back 10
    steps, as if resumed from an older checkpoint), ``desync`` (rank 1's controller decides otherwise),
    ``loop_raises`` (rank 1's loop raises before a forward pass), ``val_raises`` (rank 1's val_fn raises),
    ``stall`` (rank 1's val_fn hangs).
    """
    report = out / f"fail_rank{rank}.json"
    start = time.monotonic()
    try:
        options = dict(OPTIONS, seed=OPTIONS["seed"] + rank) if scenario == "options" else None
        net, optimizer, sched, data, step = build(rank, world, wrap=True, options=options)
        if rank == 1:
            if scenario == "desync":
                sched.controller.config = type(sched.controller.config)(**dict(OPTIONS, min_lr=0.02))
            validate = sched.val_fn

            def val_fn():
                if scenario == "val_raises":
                    raise MemoryError("val_fn ran out of memory on rank 1")
                if scenario == "stall":
                    time.sleep(120)  # the test kills this process
                return validate()

            sched.val_fn = val_fn
        earlier = None
        while not sched.done:
            start = time.monotonic()
            if rank == 1 and sched.steps_taken == 10:
                earlier = sched.state_dict()
            if rank == 1 and sched.steps_taken == 20:
                if scenario == "loop_raises":
                    raise KeyError("a bug in the training loop on rank 1")
                if scenario == "out_of_step":
                    sched.load_state_dict(earlier)
            step()
    except BaseException as error:
        report.write_text(json.dumps({"type": type(error).__name__, "message": str(error),
                                      "cause": str(error.__cause__), "seconds": time.monotonic() - start}))
        raise
    report.write_text(json.dumps({"type": None, "message": "", "seconds": time.monotonic() - start}))


def refused(rank, world, out: Path, early_step) -> None:
    """What AutoLRS refuses; every rank writes the errors to ``refused_rank{r}.json``.

    ``early_step`` steps an AutoLRS built before the process group was. A ``fully_shard`` model is
    accepted (its entry reads None); FSDP1 is refused.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

    errors = {}
    try:
        early_step()
    except RuntimeError as error:
        errors["built before init_process_group"] = str(error)
    for kind in ("FullyShardedDataParallel", "fully_shard"):
        net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))
        if kind == "fully_shard":
            model = fully_shard(net)
        else:
            model = FullyShardedDataParallel(net, device_id=torch.device("cpu"))
        try:
            AutoLRS(model, torch.optim.SGD(model.parameters(), lr=0.1), **OPTIONS)
            errors[kind] = None
        except TypeError as error:
            errors[kind] = str(error)
    (out / f"refused_rank{rank}.json").write_text(json.dumps(errors))


def run(rank: int, world: int, init_method: str, timeout_s: float, mode: str, out: str, *args) -> None:
    """One rank: join the group (``init_method`` None: torchrun's env:// variables) and run ``mode``."""
    torch.set_num_threads(1)  # 2 ranks share 2 cores with other work
    threadpoolctl.threadpool_limits(1)  # numpy/scipy BLAS of the GP fits
    early = build() if mode == "refused" else None
    torch.distributed.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world,
                                         timeout=datetime.timedelta(seconds=timeout_s))
    rank, world, out = torch.distributed.get_rank(), torch.distributed.get_world_size(), Path(out)
    count_collectives()
    if mode == "train":
        train(rank, world, out, {int(s) for s in args})
    elif mode == "resume":
        resume(rank, world, out, [int(s) for s in args])
    elif mode == "refused":
        refused(rank, world, out, early[4])
    else:
        fail(rank, world, out, *args)
    # Only after success: a forked rank that raised and destroyed its group was seen to linger at exit,
    # keeping its connections (and so its peers) open. And only once every rank is done with the group:
    # gloo may abort a rank that tears it down early.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run(-1, -1, None, 60.0, *sys.argv[1:])
