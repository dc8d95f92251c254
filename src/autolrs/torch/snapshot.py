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
import math
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch

__all__ = ["Snapshot", "check_snapshotable", "dtensor_class", "local_tensor", "normalise_name"]

_PLAIN = (bool, int, float, str, type(None))
# GradScaler.state_dict()'s keys (torch.amp.GradScaler, enabled).
_SCALER_KEYS = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}


def normalise_name(name: str) -> str:
    """A tensor's name without ``torch.compile``'s ``_orig_mod.`` components.

    A compiled model (``torch.compile(model)``) names its tensors ``_orig_mod.<name>``; naming the snapshot
    without that prefix lets a run saved from a compiled model resume into a plain one and back.
    """
    return ".".join(part for part in name.split(".") if part != "_orig_mod")


def dtensor_class() -> type | None:
    """``torch.distributed.tensor.DTensor`` if it is imported (a model cannot hold one otherwise), else None."""
    for name in ("torch.distributed.tensor", "torch.distributed._tensor"):
        kind = getattr(sys.modules.get(name), "DTensor", None)
        if isinstance(kind, type):
            return kind
    return None


def _is_dtensor(t: Any) -> bool:
    kind = dtensor_class()
    return kind is not None and isinstance(t, kind)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The tensor this rank holds of ``t``: a DTensor's local shard (its storage, not a copy), else ``t``."""
    if _is_dtensor(t):
        with torch.no_grad():  # to_local() under no_grad is the local tensor itself, not an autograd view
            return t.to_local()
    return t


@dataclass(frozen=True)
class _Layout:
    """How a DTensor is spread over the ranks: what turns a saved local shard back into a DTensor."""

    mesh: Any
    placements: tuple
    shape: tuple
    stride: tuple

    @classmethod
    def of(cls, t: torch.Tensor) -> _Layout:
        return cls(t.device_mesh, tuple(t.placements), tuple(t.shape), tuple(t.stride()))

    def wrap(self, local: torch.Tensor) -> torch.Tensor:
        return dtensor_class().from_local(local, self.mesh, self.placements, run_check=False,
                                          shape=torch.Size(self.shape), stride=self.stride)


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _storage_like(t: torch.Tensor, device: str | torch.device, home: torch.device | str | None = None) -> torch.Tensor:
    """Empty storage for a copy of ``t``; ``home`` is the device ``t`` lives on in training."""
    home = torch.device(home) if home is not None else t.device
    target = home if device == "model" else torch.device(device)
    pin = target.type == "cpu" and home.type == "cuda"  # pinned host memory makes GPU copies faster
    return torch.empty(t.shape, dtype=t.dtype, device=target, pin_memory=pin)


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _is_plain(v) for k, v in value.items())
    return False


def _non_finite(value: Any) -> bool:
    """Whether a number (or a list of numbers) in a param group is NaN or infinite."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


def _negative(value: Any) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value < 0
    if isinstance(value, (list, tuple)):
        return any(_negative(v) for v in value)
    return False


def check_snapshotable(model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Raise if a tensor of ``model`` or of ``optimizers`` cannot be copied now (meta device, lazy module)."""
    from torch.nn.parameter import is_lazy

    named = list(model.named_parameters()) + list(model.named_buffers())
    named += [(f"optimizer {k}, param {i}", p) for k, opt in enumerate(optimizers)
              for i, p in enumerate(p for g in opt.param_groups for p in g["params"])]
    for name, t in named:
        if is_lazy(t):
            raise ValueError(
                f"{name} is not initialised yet (a lazy module, e.g. nn.LazyLinear): run one forward pass to "
                "materialise it, then build the optimizer and AutoLRS."
            )
        if t.layout != torch.strided:
            raise ValueError(
                f"{name} is a {t.layout} tensor: autolrs snapshots dense (strided) tensors only. Keep the parameter "
                "dense (sparse *gradients*, e.g. nn.Embedding(sparse=True) with SparseAdam, are fine)."
            )
        if t.device.type == "meta":
            raise ValueError(
                f"{name} is on the meta device (no data to snapshot): materialise the model first (e.g. "
                "model.to_empty(device=...) and initialise it), then build the optimizer and AutoLRS."
            )


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

    def __init__(self, model: torch.nn.Module, optimizer, device: str | torch.device = "cpu", *, scaler=None):
        self.model = model
        self.optimizers: list[torch.optim.Optimizer] = (
            list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer])
        self.scaler = scaler
        self.device = device
        self._tensors: dict[str, torch.Tensor] = {}             # model tensors and extra params, by name
        self._optim: list[dict[int, dict[str, Any]]] = []        # per optimizer: state by param index
        self._optim_devices: list[dict[int, dict[str, str]]] = []
        self._optim_layouts: list[dict[int, dict[str, _Layout]]] = []  # optimizer state that is a DTensor
        self._groups: list[list[dict[str, Any]]] = []
        self._scaler: dict | None = None
        self.taken = False

    # -- what is copied ----------------------------------------------------------------------------
    def _params(self, k: int) -> list[torch.Tensor]:
        return [p for group in self.optimizers[k].param_groups for p in group["params"]]

    def _live(self) -> tuple[dict[str, torch.Tensor], set[str]]:
        """Every tensor copied (a DTensor's local shard), by snapshot name, and the names of the parameters.

        The model's parameters and buffers under their (normalised) names; a parameter an optimizer holds
        that the model does not, as ``optimizer.<k>.param.<i>``.
        """
        named, params = self._live_global()
        return {name: local_tensor(t) for name, t in named.items()}, params

    def _layouts(self) -> dict[str, _Layout]:
        """The layout of every live tensor that is a DTensor, by snapshot name (empty: not sharded)."""
        return {name: _Layout.of(t) for name, t in self._live_global()[0].items() if _is_dtensor(t)}

    def _live_global(self) -> tuple[dict[str, torch.Tensor], set[str]]:
        """As :meth:`_live`, the DTensors as they are (not their local shards)."""
        named: dict[str, torch.Tensor] = {}
        params: set[str] = set()
        for name, p in self.model.named_parameters():
            named[normalise_name(name)] = p
            params.add(normalise_name(name))
        for name, b in self.model.named_buffers():
            named[normalise_name(name)] = b
        model_ids = {id(p) for p in self.model.parameters()}
        for k in range(len(self.optimizers)):
            for i, p in enumerate(self._params(k)):
                if id(p) not in model_ids:
                    named[f"optimizer.{k}.param.{i}"] = p
                    params.add(f"optimizer.{k}.param.{i}")
        return named, params

    def _scaler_state(self) -> dict | None:
        if self.scaler is None or not self.scaler.is_enabled():
            return None
        return dict(self.scaler.state_dict())

    # -- take / restore ----------------------------------------------------------------------------
    @torch.no_grad()
    def take(self) -> None:
        """Copy the current model, optimizer and scaler state (this rank's shards) into the snapshot."""
        live, _ = self._live()
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
            for i, p in enumerate(self._params(k)):
                state = optimizer.state.get(p)
                if not state:
                    continue
                previous = previous_all.get(i, {})
                entry, where, layout = {}, {}, {}
                for key, value in state.items():
                    if torch.is_tensor(value):
                        if _is_dtensor(value):
                            layout[key], value = _Layout.of(value), local_tensor(value)
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
        self._scaler = self._scaler_state()
        self.taken = True

    @torch.no_grad()
    def restore(self) -> None:
        """Put the model, optimizers and scaler back exactly as they were at :meth:`take` (bit-identical)."""
        if not self.taken:
            raise ValueError("restore() needs a snapshot; take() was never called.")
        live, _ = self._live()
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
            for i, p in enumerate(self._params(k)):
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
                            _is_dtensor(current) == (layout is not None) else None
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
        if self._scaler is not None:
            self.scaler.load_state_dict(self._scaler)

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
        layouts = self._layouts()
        return {name: layouts[name].wrap(t) if name in layouts else t
                for name, t in self._tensors.items() if not name.startswith("optimizer.")}

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict | None:
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
                    "param_shapes": [list(p.shape) for p in self._params(k)],
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
        layouts = self._layouts()
        if layouts:
            rank, world = _rank_and_world()
            state["sharding"] = {
                "rank": rank,
                "world_size": world,
                "shapes": {name: list(layout.shape) for name, layout in layouts.items()},
                "optimizer_state": [{i: sorted(keys) for i, keys in layout_all.items()}
                                    for layout_all in self._optim_layouts],
            }
        return state

    def check_state_dict(self, state: dict | None) -> None:
        """Raise ``ValueError``/``TypeError`` if ``state`` does not fit these objects; changes nothing.

        Checks every key, type, shape and dtype, the optimizers' kinds and layout, and that no parameter or
        optimizer state holds NaN (autolrs never snapshots a diverged model).
        """
        if state is None:
            return
        keys = {"model", "optimizers", "scaler"}
        if not isinstance(state, dict) or set(state) - {"sharding"} != keys:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"The saved snapshot is not a Snapshot.state_dict() (got {keys}).")
        self._check_sharding(state.get("sharding"), state["optimizers"])
        self._check_tensors(state["model"])
        saved_optims = state["optimizers"]
        if not isinstance(saved_optims, list) or len(saved_optims) != len(self.optimizers):
            count = len(saved_optims) if isinstance(saved_optims, list) else type(saved_optims).__name__
            raise ValueError(f"The saved snapshot holds {count} optimizers; this run has {len(self.optimizers)}.")
        for k, saved in enumerate(saved_optims):
            self._check_optimizer(k, saved)
        self._check_scaler(state["scaler"])

    def _check_sharding(self, saved: Any, saved_optims: Any) -> None:
        """Raise unless ``saved`` (a state's ``"sharding"``) is this rank's, for this sharded model."""
        layouts = self._layouts()
        if (saved is None) != (not layouts):
            raise ValueError(
                "The saved snapshot was taken from a " + ("sharded (FSDP2) model, and this one is not" if saved
                                                          is not None else "model that was not sharded, and this one "
                                                          "is (FSDP2, DTensor parameters)") +
                "; resume with the parallelism of the run that saved it."
            )
        if saved is None:
            return
        if not isinstance(saved, dict) or set(saved) != {"rank", "world_size", "shapes", "optimizer_state"}:
            raise ValueError("The saved snapshot's 'sharding' is not in the form Snapshot.state_dict() writes.")
        rank, world = _rank_and_world()
        if saved["rank"] != rank or saved["world_size"] != world:
            raise ValueError(
                f"This is the state of rank {saved['rank']} of {saved['world_size']}, loaded on rank {rank} of {world}: "
                "under FSDP2 each rank's state holds its own shards, so each rank must load the file it saved "
                "(with the same number of ranks)."
            )
        shapes = {name: list(layout.shape) for name, layout in layouts.items()}
        if saved["shapes"] != shapes:
            raise ValueError(
                "The saved snapshot's sharded tensors (names or global shapes) are not this model's; load it into the "
                "architecture, sharded the same way, that saved it."
            )
        sharded = saved["optimizer_state"]
        if not isinstance(sharded, list) or not isinstance(saved_optims, list) or \
                len(sharded) != len(self.optimizers) or len(saved_optims) != len(sharded):
            raise ValueError("The saved snapshot's 'sharding' does not list the optimizers' state of this run.")
        for k, (entries, optim) in enumerate(zip(sharded, saved_optims)):
            params = self._params(k)
            state = optim.get("state") if isinstance(optim, dict) else None
            for i, keys in (entries.items() if isinstance(entries, dict) else [(None, None)]):
                if not isinstance(i, int) or not isinstance(state, dict) or not isinstance(state.get(i), dict) \
                        or not 0 <= i < len(params) or not _is_dtensor(params[i]) or not isinstance(keys, list) \
                        or not all(torch.is_tensor(state[i].get(key)) for key in keys):
                    raise ValueError(
                        f"The saved snapshot's optimizer {k} lists sharded state {i!r} that is not the state of one "
                        "of this optimizer's sharded parameters."
                    )

    def _check_tensors(self, saved: Any) -> None:
        live, params = self._live()
        if not isinstance(saved, dict) or set(saved) != set(live):
            names = set(saved) if isinstance(saved, dict) else set()
            differ = sorted(names ^ set(live))[:4]
            hint = ""
            if any("_orig_mod" in str(n) for n in names):
                hint = (" The saved names carry torch.compile's '_orig_mod.' prefix, which this autolrs removes: the "
                        "state was saved by an older autolrs from a compiled model; resume with a compiled model.")
            raise ValueError(
                f"The saved snapshot does not match this model's parameters and buffers and the optimizers' "
                f"parameters (names differ: {differ}); load it into the same architecture and optimizers that saved "
                f"it.{hint}"
            )
        for name, t in saved.items():
            if not torch.is_tensor(t):
                raise TypeError(f"The saved snapshot's {name!r} is a {type(t).__name__}, not a tensor.")
            if tuple(t.shape) != tuple(live[name].shape) or t.dtype != live[name].dtype:
                raise ValueError(
                    f"The saved snapshot's {name!r} is {t.dtype} {tuple(t.shape)}, this model's is "
                    f"{live[name].dtype} {tuple(live[name].shape)}; load it into the architecture that saved it."
                )
            if name in params and t.is_floating_point() and bool(torch.isnan(t).any()):
                raise ValueError(f"The saved snapshot's parameter {name!r} holds NaN; it cannot be a state autolrs kept.")

    def _check_optimizer(self, k: int, saved: Any) -> None:
        optimizer = self.optimizers[k]
        keys = {"kind", "param_shapes", "group_sizes", "state", "devices", "param_groups"}
        if not isinstance(saved, dict) or set(saved) != keys:
            raise ValueError(f"The saved snapshot's optimizer {k} is not in the form Snapshot.state_dict() writes.")
        if saved["kind"] != type(optimizer).__name__:
            raise ValueError(
                f"The saved snapshot's optimizer {k} is a {saved['kind']!r}, this run's is a "
                f"{type(optimizer).__name__!r}; resume with the optimizer that saved it."
            )
        params = self._params(k)
        if saved["group_sizes"] != [len(g["params"]) for g in optimizer.param_groups] or \
                saved["param_shapes"] != [list(p.shape) for p in params]:
            raise ValueError(
                f"The saved snapshot's optimizer {k} has param groups of sizes {saved['group_sizes']} (or other "
                f"parameter shapes) where this one has {[len(g['params']) for g in optimizer.param_groups]}; build the "
                "optimizer with the same param groups, in the same order, as the run that saved it."
            )
        state, devices, groups = saved["state"], saved["devices"], saved["param_groups"]
        if not isinstance(state, dict) or not isinstance(devices, dict) or set(state) != set(devices):
            raise ValueError(f"The saved snapshot's optimizer {k} state and devices do not match.")
        for i, entry in state.items():
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(params):
                raise ValueError(f"The saved snapshot's optimizer {k} has state for parameter {i!r}, which it lacks.")
            if not isinstance(entry, dict) or not isinstance(devices[i], dict):
                raise TypeError(f"The saved snapshot's optimizer {k} state of parameter {i} is not a dict.")
            for key, value in entry.items():
                if torch.is_tensor(value):
                    try:
                        torch.device(devices[i].get(key))
                    except (RuntimeError, TypeError):
                        raise ValueError(f"The saved snapshot's optimizer {k} state {i}.{key} has no valid device.")
                    if value.is_floating_point() and bool(torch.isnan(value).any()):
                        raise ValueError(f"The saved snapshot's optimizer {k} state {i}.{key} holds NaN.")
                elif not _is_plain(value):
                    raise TypeError(f"The saved snapshot's optimizer {k} state {i}.{key} is a {type(value).__name__}.")
        if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
            raise ValueError(f"The saved snapshot's optimizer {k} has another number of param groups than this one.")
        for g, (saved_group, live_group) in enumerate(zip(groups, optimizer.param_groups)):
            if not isinstance(saved_group, dict) or set(saved_group) != set(live_group) - {"params"}:
                raise ValueError(
                    f"The saved snapshot's optimizer {k} param group {g} has other settings than this optimizer's "
                    f"({sorted(saved_group) if isinstance(saved_group, dict) else saved_group!r}); resume with the "
                    "optimizer that saved it."
                )
            for key, value in saved_group.items():
                live_value = live_group[key]
                same_kind = type(value) is type(live_value) or (
                    isinstance(value, (int, float)) and isinstance(live_value, (int, float))
                    and not isinstance(value, bool) and not isinstance(live_value, bool))
                if not same_kind or not (_is_plain(value) or torch.is_tensor(value)) or _non_finite(value) \
                        or _negative(value):  # torch's optimizers refuse negative settings too
                    raise ValueError(
                        f"The saved snapshot's optimizer {k} param group {g} has {key}={value!r} where this "
                        f"optimizer has {live_value!r}; build the optimizer with the settings of the run that saved it."
                    )

    def _check_scaler(self, saved: Any) -> None:
        live = self._scaler_state()
        if (saved is None) != (live is None):
            raise ValueError(
                "The saved snapshot was taken " + ("without" if saved is None else "with") + " an enabled GradScaler "
                "and this run has " + ("one" if saved is None else "none") + "; pass the same scaler= as the run "
                "that saved it."
            )
        if saved is None:
            return
        if not isinstance(saved, dict) or set(saved) != set(live) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in saved.values()):
            raise ValueError(f"The saved snapshot's GradScaler state is not a GradScaler.state_dict(): {saved!r}.")

    def load_state_dict(self, state: dict | None) -> None:
        self.check_state_dict(state)
        if state is None:
            self.taken = False
            self._tensors, self._optim, self._optim_devices, self._groups, self._scaler = {}, [], [], [], None
            self._optim_layouts = []
            return
        live, _ = self._live()
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
            {int(i): {key: _Layout.of(self._params(k)[int(i)]) for key in keys} for i, keys in entries.items()}
            for k, entries in enumerate(sharded)
        ]
        self._groups = [copy.deepcopy(saved["param_groups"]) for saved in state["optimizers"]]
        self._scaler = copy.deepcopy(state["scaler"])
        self.taken = True
