"""One rank of a gloo process group for test_fsdp.py: FSDP2 (``fully_shard``) runs, launched by ``run()``.

    run(rank, world, init_method, timeout_s, mode, out_dir, *args)    from a multiprocessing forkserver

Modes:
    train STEP...     an FSDP2 run of ddp_worker's task; each rank saves its own checkpoint at each STEP
    resume STEP...    every rank resumes from its own checkpoint at each STEP, with fresh objects
    restore           Snapshot take/restore/state_dict on shards, checked bit for bit; snapshot sizes
    fail SCENARIO     rank 1 raises (``loop_raises``: in the loop; ``val_raises``: in val_fn)
    refused           HSDP (a 2-D replicate x shard mesh) and FSDP1, which AutoLRS refuses

The task is ddp_worker's (float64 MLP, one global batch per step split across the ranks, val_fn on a
held-out set split across the ranks), with the MLP sharded by ``fully_shard`` layer by layer: the second
layer has 3 output rows, so its shards are uneven (2 rows on rank 0, 1 on rank 1).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import time
from pathlib import Path

import threadpoolctl
import torch
from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
from torch.distributed.tensor import DTensor

import ddp_worker
from autolrs import AutoLRS
from autolrs.torch.snapshot import Snapshot

BATCH, TOTAL, OPTIONS = ddp_worker.BATCH, ddp_worker.TOTAL, ddp_worker.OPTIONS
EXAMPLE = Path(__file__).parents[1] / "examples" / "fsdp_train.py"


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).double()


def shard(net: torch.nn.Module, mesh=None) -> torch.nn.Module:
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(net, mesh=mesh)
    return net


def build(rank: int = 0, world: int = 1, *, sharded: bool = True, options=None, before_sched_step=None):
    """ddp_worker.build's task with the MLP sharded (``sharded``) or whole (one process, global batch)."""
    net = mlp()
    if sharded:
        shard(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    data = torch.Generator().manual_seed(1)
    w = torch.randn(8, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x_val = torch.randn(128, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y_val = (x_val @ w).argmax(1)
    share = slice(rank * len(x_val) // world, (rank + 1) * len(x_val) // world)

    def val_fn():
        return torch.nn.functional.cross_entropy(net(x_val[share]), y_val[share]).item()

    sched = AutoLRS(net, optimizer, val_fn=val_fn, **(options or OPTIONS))

    def step():
        x = torch.randn(BATCH, 8, generator=data, dtype=torch.float64)
        mine = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        loss = torch.nn.functional.cross_entropy(net(x[mine]), (x[mine] @ w).argmax(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if before_sched_step is not None:
            before_sched_step(sched)
        sched.step(loss)
        return loss.item(), sched.get_last_lr()[0]

    return net, optimizer, sched, data, step


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def result(net, sched, trace) -> dict:
    """The run's trace and history, this rank's shards and the gathered parameters (a collective)."""
    return {"trace": trace, "history": sched.history, "steps_taken": sched.steps_taken,
            "shards": torch.cat([local(p).detach().flatten() for p in net.parameters()]),
            "params": torch.cat([p.full_tensor().detach().flatten() for p in net.parameters()]),
            "nbytes": sched.snapshot.nbytes}


def checkpoint(net, optimizer, sched, data) -> dict:
    """This rank's checkpoint: its shards of the model and optimizer (DTensors) and its AutoLRS state."""
    return {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "sched": sched.state_dict(),
            "data_rng": data.get_state()}


def train(rank, world, out: Path, stops: set[int]) -> None:
    net, optimizer, sched, data, step = build(rank, world)
    trace, kept = [], None
    while not sched.done:
        trace.append(step())
        if sched.steps_taken in stops:
            torch.save(checkpoint(net, optimizer, sched, data), out / f"ckpt_{sched.steps_taken}_rank{rank}.pt")
        if sched.steps_taken == 10:  # mid-candidate (test_fsdp checks the phase)
            kept = kept_state_dict_check(net, sched)
    torch.save(dict(result(net, sched, trace), kept_state_dict_ok=kept), out / f"train_rank{rank}.pt")


def kept_state_dict_check(net, sched) -> bool:
    """Mid-search, kept_state_dict() is the snapshot's shards as DTensors laid out as the live model's."""
    live, kept = net.state_dict(), sched.kept_state_dict()
    saved = sched.snapshot.model_tensors()
    return kept.keys() == live.keys() and all(
        isinstance(kept[k], DTensor) and kept[k].placements == live[k].placements and kept[k].shape == live[k].shape
        and torch.equal(kept[k].to_local(), sched.snapshot._tensors[k]) and not torch.equal(kept[k].to_local(),
                                                                                              live[k].to_local())
        for k in live) and all(isinstance(v, DTensor) for v in saved.values())


def resume(rank, world, out: Path, stops: list[int]) -> None:
    for stop in stops:
        state = torch.load(out / f"ckpt_{stop}_rank{rank}.pt", weights_only=True)  # this rank's own file
        net, optimizer, sched, data, step = build(rank, world)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["sched"])
        data.set_state(state["data_rng"])
        trace = []
        while not sched.done:
            trace.append(step())
        torch.save(result(net, sched, trace), out / f"resume_{stop}_rank{rank}.pt")


# -- restore ---------------------------------------------------------------------------------------
def everything(net, optimizer) -> dict[str, torch.Tensor]:
    """Clones of this rank's shards of every parameter, buffer and optimizer state tensor."""
    tensors = {f"m.{k}": local(v).detach().clone() for k, v in net.state_dict().items()}
    for i, p in enumerate(net.parameters()):
        for k, v in optimizer.state[p].items():
            tensors[f"o.{i}.{k}"] = local(v).clone() if torch.is_tensor(v) else torch.tensor(v)
    return tensors


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def holds_dtensor(value) -> bool:
    if isinstance(value, DTensor):
        return True
    if isinstance(value, dict):
        return any(holds_dtensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(holds_dtensor(v) for v in value)
    return False


def restore(rank, world, out: Path) -> None:
    """Snapshot take/restore on shards: every check's outcome goes to ``restore_rank{r}.json``."""
    checks, sizes = {}, {}
    g = torch.Generator().manual_seed(5 + rank)
    probe = torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(9))

    def train_steps(net, optimizer, n, seed=None):
        data = g if seed is None else torch.Generator().manual_seed(seed)
        for _ in range(n):
            loss = net(torch.randn(16, 8, dtype=torch.float64, generator=data)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    for kind in ("sgd", "adam"):
        net = shard(mlp())
        if kind == "sgd":
            optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        else:
            optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        train_steps(net, optimizer, 3)
        snap = Snapshot(net, optimizer)
        snap.take()
        before = everything(net, optimizer)
        with torch.no_grad():
            probe_loss = net(probe).sum().item()
        objects = [id(p) for p in net.parameters()]
        for _ in range(2):
            optimizer.param_groups[0]["lr"] *= 3
            train_steps(net, optimizer, 4)
            snap.restore()
            key = f"{kind}: restore is bit-exact per shard"
            checks[key] = checks.get(key, True) and same(before, everything(net, optimizer))
        with torch.no_grad():  # the next forward all-gathers the restored shards
            checks[f"{kind}: the restored model computes as before"] = net(probe).sum().item() == probe_loss
        checks[f"{kind}: parameters restored in place"] = [id(p) for p in net.parameters()] == objects
        checks[f"{kind}: nbytes counts the local shards"] = snap.nbytes == sum(
            v.numel() * v.element_size() for v in before.values())
        # optimizer state dropped after the snapshot is rebuilt as DTensors laid out as their parameters
        reference_state = None
        for drop in (False, True):
            snap.restore()
            if drop:
                optimizer.state.clear()
                snap.restore()
                rebuilt = [v for p in net.parameters() for v in optimizer.state[p].values() if v.dim() > 0]
                checks[f"{kind}: dropped state rebuilt as DTensors"] = all(
                    isinstance(v, DTensor) and v.placements == p.placements
                    for p in net.parameters() for v in optimizer.state[p].values() if v.dim() > 0) and bool(rebuilt)
                checks[f"{kind}: dropped state rebuilt bit-exact"] = same(before, everything(net, optimizer))
            train_steps(net, optimizer, 2, seed=11)
            if drop:
                checks[f"{kind}: training on from rebuilt state is the same"] = same(
                    reference_state, everything(net, optimizer))
            else:
                reference_state = everything(net, optimizer)
        # this rank's state_dict: plain tensors, loads with weights_only, restores bit-exact
        snap.restore()
        state = snap.state_dict()
        checks[f"{kind}: state_dict holds no DTensor"] = not holds_dtensor(state)
        torch.save(state, out / f"snap_{kind}_rank{rank}.pt")
        train_steps(net, optimizer, 3)
        fresh = Snapshot(net, optimizer)
        fresh.load_state_dict(torch.load(out / f"snap_{kind}_rank{rank}.pt", weights_only=True))
        fresh.restore()
        checks[f"{kind}: saved shard restores bit-exact"] = same(before, everything(net, optimizer))
        torch.distributed.barrier()  # the other rank's file is written
        other = torch.load(out / f"snap_{kind}_rank{1 - rank}.pt", weights_only=True)
        try:
            fresh.load_state_dict(other)
            checks[f"{kind}: another rank's shard is refused"] = False
        except ValueError as error:
            checks[f"{kind}: another rank's shard is refused"] = "each rank must load the file it saved" in str(error)
        checks[f"{kind}: a refused load changes nothing"] = (fresh.restore() or True) and same(
            before, everything(net, optimizer))
        sizes[kind] = snap.nbytes
    # a state saved from the unsharded model does not load into the sharded one
    net, whole = shard(mlp()), mlp()
    optimizer, whole_optimizer = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (net, whole))
    train_steps(net, optimizer, 1)
    train_steps(whole, whole_optimizer, 1)
    unsharded = Snapshot(whole, whole_optimizer)
    unsharded.take()
    try:
        Snapshot(net, optimizer).load_state_dict(unsharded.state_dict())
        checks["an unsharded model's state is refused"] = False
    except ValueError as error:
        checks["an unsharded model's state is refused"] = "resume with the parallelism" in str(error)
    sizes.update(example_sizes())
    (out / f"restore_rank{rank}.json").write_text(json.dumps({"checks": checks, "sizes": sizes}))


def example_sizes() -> dict[str, int]:
    """The per-rank snapshot size of the example's MLP and AdamW, under DDP and under FSDP2."""
    spec = importlib.util.spec_from_file_location("fsdp_train", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    sizes = {}
    for kind in ("ddp", "fsdp2"):
        torch.manual_seed(0)
        net = example.MLP()
        model = torch.nn.parallel.DistributedDataParallel(net) if kind == "ddp" else example.shard(net)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(8, net.inputs)
        model(x).sum().backward()
        optimizer.step()
        snap = Snapshot(model, optimizer)
        snap.take()
        sizes[f"example_{kind}"] = snap.nbytes
    return sizes


# -- failures --------------------------------------------------------------------------------------
def fail(rank, world, out: Path, scenario: str) -> None:
    """Rank 1 raises; every rank writes the error it ends with to ``fail_rank{r}.json``.

    Scenarios: ``loop_raises`` (before step 20's forward pass: rank 0 waits in FSDP's all-gather),
    ``val_raises`` (in val_fn: the same), ``sched_raises`` (after step 20's optimizer step, before
    sched.step(): rank 0 waits in autolrs's all_reduce).
    """
    report = out / f"fail_rank{rank}.json"
    start = time.monotonic()

    def before_sched_step(sched):
        if rank == 1 and scenario == "sched_raises" and sched.steps_taken == 20:
            raise KeyError("a bug between optimizer.step() and sched.step() on rank 1")

    try:
        net, optimizer, sched, data, step = build(rank, world, before_sched_step=before_sched_step)
        if rank == 1 and scenario == "val_raises":
            def val_fn():
                raise MemoryError("val_fn ran out of memory on rank 1")

            sched.val_fn = val_fn
        while not sched.done:
            start = time.monotonic()
            if rank == 1 and scenario == "loop_raises" and sched.steps_taken == 20:
                raise KeyError("a bug in the training loop on rank 1")
            step()
    except BaseException as error:
        report.write_text(json.dumps({"type": type(error).__name__, "message": str(error),
                                      "seconds": time.monotonic() - start}))
        raise
    report.write_text(json.dumps({"type": None, "message": "", "seconds": time.monotonic() - start}))


def refused(rank, world, out: Path) -> None:
    """HSDP and FSDP1 raise TypeError at construction, Lightning's callback refuses a fully_shard module;
    ``refused_rank{r}.json`` gets the messages."""
    from types import SimpleNamespace

    from torch.distributed.device_mesh import init_device_mesh

    errors = {}
    mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("replicate", "shard"))
    for kind in ("HSDP", "FSDP1"):
        net = mlp()
        model = shard(net, mesh) if kind == "HSDP" else FullyShardedDataParallel(net, device_id=torch.device("cpu"))
        try:
            AutoLRS(model, torch.optim.SGD(model.parameters(), lr=0.1), **OPTIONS)
        except TypeError as error:
            errors[kind] = str(error)
    try:
        from autolrs.integrations.lightning import AutoLRSCallback
    except ImportError:  # lightning is an optional extra
        AutoLRSCallback = None
    if AutoLRSCallback is not None:
        net = shard(mlp())
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        trainer = SimpleNamespace(lr_scheduler_configs=[], optimizers=[optimizer], world_size=world,
                                  strategy=SimpleNamespace(), max_steps=-1)
        try:
            AutoLRSCallback(min_lr=1e-3, max_lr=1.0, total_steps=100).on_fit_start(trainer, net)
        except NotImplementedError as error:
            errors["Lightning"] = str(error)
    (out / f"refused_rank{rank}.json").write_text(json.dumps(errors))


def run(rank: int, world: int, init_method: str, timeout_s: float, mode: str, out: str, *args) -> None:
    """One rank: join the group and run ``mode`` (as ddp_worker.run)."""
    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1)
    torch.distributed.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world,
                                         timeout=datetime.timedelta(seconds=timeout_s))
    rank, world, out = torch.distributed.get_rank(), torch.distributed.get_world_size(), Path(out)
    if mode == "train":
        train(rank, world, out, {int(s) for s in args})
    elif mode == "resume":
        resume(rank, world, out, [int(s) for s in args])
    elif mode == "restore":
        restore(rank, world, out)
    elif mode == "refused":
        refused(rank, world, out)
    else:
        fail(rank, world, out, *args)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
