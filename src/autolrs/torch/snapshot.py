"""In-memory snapshot and bit-exact restore of everything a training step changes.

A stage snapshot S0 is taken once per stage and restored before every candidate after the first and
before the kept phase (docs/algorithm.md). It holds one copy of:

- every parameter and buffer of the model, by name;
- every parameter an optimizer holds that is not the model's (a learnable loss scale, a temperature), by
  identity: restoring only the model would let such a tensor keep what each candidate taught it;
- the state and param groups of every optimizer (several optimizers, e.g. SparseAdam beside Adam);
- a ``torch.amp.GradScaler``'s scale and growth tracker, which a diverging candidate would lower for good.

It lives on the device asked for ("cpu" frees accelerator memory; "model" keeps each tensor on its own
device, which makes restores cheaper on a GPU). Storage is allocated once and reused, and restore copies in
place, so the optimizers keep pointing at the same parameter objects.

Its parts: :mod:`autolrs.torch.snapshot_scope` (what it covers, by which names), :mod:`autolrs.torch.shards`
(DTensor local shards and layouts) and :mod:`autolrs.torch.snapshot_check` (the checks of a saved state).

A sharded model (FSDP2's ``fully_shard``: its parameters and their optimizer state are DTensors) is
snapshotted shard by shard: each rank copies the local shards it holds (``DTensor.to_local()``) and restores
them in place, with no communication, so the snapshot of a rank holds about ``1/world_size`` of the model and
optimizer state. Its :meth:`Snapshot.state_dict` is that rank's shard, as plain tensors, with a ``sharding``
entry (rank, world size, global shapes) that :meth:`Snapshot.check_state_dict` checks: each rank must load the
state it saved.

:meth:`Snapshot.state_dict` returns copies (a saved state is a roll-back point that later stages must not
overwrite); :meth:`Snapshot.check_state_dict` validates a saved state against the live objects before
anything changes.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, cast

import torch

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

from .shards import Layout, dtensor_class, is_dtensor, local_tensor, rank_and_world
from .snapshot_check import check_state_dict
from .snapshot_scope import (check_snapshotable, local_tensors, normalise_name, optimizer_params, scaler_state,
                             sharded_layouts)

__all__ = ["Snapshot", "check_snapshotable", "dtensor_class", "local_tensor", "normalise_name"]


def _storage_like(t: torch.Tensor, device: str | torch.device, home: torch.device | str | None = None) -> torch.Tensor:
    """Empty storage for a copy of ``t``; ``home`` is the device ``t`` lives on in training."""
    home = torch.device(home) if home is not None else t.device
    target = home if device == "model" else torch.device(device)
    pin = target.type == "cpu" and home.type == "cuda"  # pinned host memory makes GPU copies faster
    return torch.empty(t.shape, dtype=t.dtype, device=target, pin_memory=pin)


class Snapshot:
    """A reusable in-memory copy of a model, its optimizers and a gradient scaler.

    Args:
        model: the ``torch.nn.Module`` being trained.
        optimizer: its ``torch.optim.Optimizer``, or a list of them.
        device: where the copy lives: ``"cpu"`` (default), ``"model"`` (each tensor's own device), or any
            ``torch.device``.
        scaler: a ``torch.amp.GradScaler`` whose state is copied too (None: none).

    Under FSDP2 (``DTensor`` parameters) every tensor is this rank's local shard, :attr:`nbytes` included.
    """

    def __init__(self, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer | list[torch.optim.Optimizer] | tuple[torch.optim.Optimizer, ...],
                 device: str | torch.device = "cpu", *, scaler: torch.amp.GradScaler | None = None) -> None:
        self.model = model
        self.optimizers: list[torch.optim.Optimizer] = (
            list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer])
        self.scaler = scaler
        self.device = device
        self._tensors: dict[str, torch.Tensor] = {}             # model tensors and extra params, by name
        self._optim: list[dict[int, dict[str, Any]]] = []        # per optimizer: state by param index
        self._optim_devices: list[dict[int, dict[str, str]]] = []
        self._optim_layouts: list[dict[int, dict[str, Layout]]] = []  # optimizer state that is a DTensor
        self._groups: list[list[dict[str, Any]]] = []
        self._scaler: dict[str, Any] | None = None
        self.taken = False

    # -- take / restore ----------------------------------------------------------------------------
    @torch.no_grad()
    def take(self) -> None:
        """Copy the current model, optimizer and scaler state (this rank's shards) into the snapshot."""
        live, _ = local_tensors(self.model, self.optimizers)
        for name, t in live.items():
            store = self._tensors.get(name)
            if store is None or store.shape != t.shape or store.dtype != t.dtype:
                store = self._tensors[name] = _storage_like(t, self.device)
            store.copy_(t.detach())
        for name in set(self._tensors) - set(live):
            del self._tensors[name]
        optims, devices, layouts = [], [], []
        for k, optimizer in enumerate(self.optimizers):
            previous_all = self._optim[k] if k < len(self._optim) else {}
            optim, where_all, layout_all = {}, {}, {}
            for i, p in enumerate(optimizer_params(optimizer)):
                state = optimizer.state.get(p)
                if not state:
                    continue
                previous = previous_all.get(i, {})
                entry, where, layout = {}, {}, {}
                for key, value in state.items():
                    if torch.is_tensor(value):
                        if is_dtensor(value):
                            layout[key], value = Layout.of(value), local_tensor(value)
                        store = previous.get(key)
                        if not torch.is_tensor(store) or store.shape != value.shape or store.dtype != value.dtype:
                            store = _storage_like(value, self.device)
                        store.copy_(value.detach())
                        entry[key], where[key] = store, str(value.device)
                    else:
                        entry[key] = copy.deepcopy(value)
                optim[i], where_all[i] = entry, where
                if layout:
                    layout_all[i] = layout
            optims.append(optim)
            devices.append(where_all)
            layouts.append(layout_all)
        self._optim, self._optim_devices, self._optim_layouts = optims, devices, layouts
        self._groups = [
            [{key: copy.deepcopy(v) for key, v in group.items() if key != "params"} for group in opt.param_groups]
            for opt in self.optimizers
        ]
        self._scaler = scaler_state(self.scaler)
        self.taken = True

    @torch.no_grad()
    def restore(self) -> None:
        """Put the model, optimizers and scaler back exactly as they were at :meth:`take` (bit-identical)."""
        if not self.taken:
            raise ValueError("restore() needs a snapshot; take() was never called.")
        live, _ = local_tensors(self.model, self.optimizers)
        missing = set(self._tensors) ^ set(live)
        if missing:
            raise ValueError(
                f"The model's or the optimizers' tensors changed since the snapshot (names {sorted(missing)[:5]}); "
                "autolrs cannot restore a model whose parameters were replaced or added during the run."
            )
        for name, t in live.items():
            t.copy_(self._tensors[name])
        for k, optimizer in enumerate(self.optimizers):
            saved_all, devices, layouts = self._optim[k], self._optim_devices[k], self._optim_layouts[k]
            for i, p in enumerate(optimizer_params(optimizer)):
                saved = saved_all.get(i)
                if saved is None:
                    optimizer.state.pop(p, None)  # state created after the snapshot (lazy init) goes away
                    continue
                state = optimizer.state[p]
                for key in list(state):
                    if key not in saved:
                        del state[key]
                for key, value in saved.items():
                    if torch.is_tensor(value):
                        layout = layouts.get(i, {}).get(key)
                        current = state.get(key)
                        current = local_tensor(current) if torch.is_tensor(current) and \
                            is_dtensor(current) == (layout is not None) else None
                        if current is not None and current.shape == value.shape and current.dtype == value.dtype:
                            current.copy_(value)
                        else:
                            copied = value.to(devices[i][key], copy=True)
                            state[key] = copied if layout is None else layout.wrap(copied)
                    else:
                        state[key] = copy.deepcopy(value)
            for group, saved in zip(optimizer.param_groups, self._groups[k]):
                for key, value in saved.items():
                    group[key] = copy.deepcopy(value)
        if self._scaler is not None:  # saved only from an enabled scaler
            cast("torch.amp.GradScaler", self.scaler).load_state_dict(self._scaler)

    @property
    def nbytes(self) -> int:
        """Memory held by the snapshot, in bytes (on this rank: under FSDP2, this rank's shards)."""
        total = sum(t.numel() * t.element_size() for t in self._tensors.values())
        for optim in self._optim:
            for entry in optim.values():
                total += sum(v.numel() * v.element_size() for v in entry.values() if torch.is_tensor(v))
        return total

    def model_tensors(self) -> dict[str, torch.Tensor]:
        """The snapshot's model parameters and buffers by (normalised) name: views, do not modify them.

        A tensor the model holds as a DTensor comes back as one, built on this rank's saved shard.
        """
        layouts = sharded_layouts(self.model, self.optimizers)
        return {name: layouts[name].wrap(t) if name in layouts else t
                for name, t in self._tensors.items() if not name.startswith("optimizer.")}

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any] | None:
        """Plain data, loadable with ``torch.load(weights_only=True)``; its tensors are copies.

        Copies, unlike ``nn.Module.state_dict()``'s views: the snapshot's storage is reused by every later
        stage, so a state kept in memory as a roll-back point would otherwise change under the caller.

        Under FSDP2 it is this rank's shard: its local shards as plain tensors, and a ``"sharding"`` entry
        (this rank, the world size, the global shape of every sharded tensor, which optimizer state entries
        are sharded) by which :meth:`check_state_dict` refuses another rank's shard.
        """
        if not self.taken:
            return None
        state = {
            "model": {name: t.clone() for name, t in self._tensors.items()},
            "optimizers": [
                {
                    "kind": type(optimizer).__name__,
                    "param_shapes": [list(p.shape) for p in optimizer_params(optimizer)],
                    "group_sizes": [len(g["params"]) for g in optimizer.param_groups],
                    "state": {i: {key: v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for key, v in e.items()}
                              for i, e in self._optim[k].items()},
                    "devices": {i: dict(d) for i, d in self._optim_devices[k].items()},
                    "param_groups": copy.deepcopy(self._groups[k]),
                }
                for k, optimizer in enumerate(self.optimizers)
            ],
            "scaler": copy.deepcopy(self._scaler),
        }
        layouts = sharded_layouts(self.model, self.optimizers)
        if layouts:
            rank, world = rank_and_world()
            state["sharding"] = {
                "rank": rank,
                "world_size": world,
                "shapes": {name: list(layout.shape) for name, layout in layouts.items()},
                "optimizer_state": [{i: sorted(keys) for i, keys in layout_all.items()}
                                    for layout_all in self._optim_layouts],
            }
        return state

    def check_state_dict(self, state: dict[str, Any] | None) -> None:
        """Raise ``ValueError``/``TypeError`` if ``state`` does not fit these objects; changes nothing.

        Checks every key, type, shape and dtype, the optimizers' kinds and layout, and that no parameter or
        optimizer state holds NaN (autolrs never snapshots a diverged model): :mod:`autolrs.torch.snapshot_check`.
        """
        check_state_dict(state, self.model, self.optimizers, self.scaler)

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.check_state_dict(state)
        if state is None:
            self.taken = False
            self._tensors, self._optim, self._optim_devices, self._groups, self._scaler = {}, [], [], [], None
            self._optim_layouts = []
            return
        live, _ = local_tensors(self.model, self.optimizers)
        tensors = {}
        for name, t in state["model"].items():
            tensors[name] = _storage_like(live[name], self.device)
            tensors[name].copy_(t)
        optims, devices = [], []
        for saved in state["optimizers"]:
            optim = {}
            for i, entry in saved["state"].items():
                stored = {}
                for key, value in entry.items():
                    if torch.is_tensor(value):
                        stored[key] = _storage_like(value, self.device, home=saved["devices"][i][key])
                        stored[key].copy_(value)
                    else:
                        stored[key] = copy.deepcopy(value)
                optim[int(i)] = stored
            optims.append(optim)
            devices.append({int(i): dict(d) for i, d in saved["devices"].items()})
        self._tensors, self._optim, self._optim_devices = tensors, optims, devices
        # Sharded optimizer state is laid out as its parameter (torch's optimizers build it with zeros_like(p)).
        sharded = state.get("sharding", {}).get("optimizer_state") or [{} for _ in self.optimizers]
        self._optim_layouts = [
            # an entry here is a parameter that is a DTensor (it was sharded when saved)
            {int(i): {key: Layout.of(cast("DTensor", optimizer_params(self.optimizers[k])[int(i)])) for key in keys}
             for i, keys in entries.items()}
            for k, entries in enumerate(sharded)
        ]
        self._groups = [copy.deepcopy(saved["param_groups"]) for saved in state["optimizers"]]
        self._scaler = copy.deepcopy(state["scaler"])
        self.taken = True
