"""Checks of a saved snapshot state against the live objects, before anything changes.

A state (:meth:`Snapshot.state_dict <autolrs.torch.snapshot.Snapshot.state_dict>`) is loaded only if it fits
this run: every key, type, shape and dtype, the optimizers' kinds and layout, a GradScaler if and only if the
run that saved it had one, and, under FSDP2, this rank's shard of the same sharded model. No parameter or
optimizer state may hold NaN (autolrs never snapshots a diverged model). Each misfit raises a
``ValueError``/``TypeError`` that says what differs and what to resume with.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, cast

import torch

from .shards import is_dtensor, rank_and_world
from .snapshot_scope import local_tensors, optimizer_params, scaler_state, sharded_layouts

__all__ = ["check_state_dict"]

_PLAIN = (bool, int, float, str, type(None))
# GradScaler.state_dict()'s keys (torch.amp.GradScaler, enabled).
_SCALER_KEYS = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}


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


def check_state_dict(state: dict[str, Any] | None, model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer],
                     scaler: torch.amp.GradScaler | None = None) -> None:
    """Raise ``ValueError``/``TypeError`` if ``state`` does not fit these objects; changes nothing.

    Checks every key, type, shape and dtype, the optimizers' kinds and layout, and that no parameter or
    optimizer state holds NaN (autolrs never snapshots a diverged model).
    """
    if state is None:
        return
    keys: set[str] | list[str] | str = {"model", "optimizers", "scaler"}
    if not isinstance(state, dict) or set(state) - {"sharding"} != keys:
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"The saved snapshot is not a Snapshot.state_dict() (got {keys}).")
    _check_sharding(state.get("sharding"), state["optimizers"], model, optimizers)
    _check_tensors(state["model"], model, optimizers)
    saved_optims = state["optimizers"]
    if not isinstance(saved_optims, list) or len(saved_optims) != len(optimizers):
        count = len(saved_optims) if isinstance(saved_optims, list) else type(saved_optims).__name__
        raise ValueError(f"The saved snapshot holds {count} optimizers; this run has {len(optimizers)}.")
    for k, saved in enumerate(saved_optims):
        _check_optimizer(k, saved, optimizers)
    _check_scaler(state["scaler"], scaler)


def _check_sharding(saved: Any, saved_optims: Any, model: torch.nn.Module,
                    optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Raise unless ``saved`` (a state's ``"sharding"``) is this rank's, for this sharded model."""
    layouts = sharded_layouts(model, optimizers)
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
    rank, world = rank_and_world()
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
            len(sharded) != len(optimizers) or len(saved_optims) != len(sharded):
        raise ValueError("The saved snapshot's 'sharding' does not list the optimizers' state of this run.")
    for k, (entries, optim) in enumerate(zip(sharded, saved_optims)):
        params = optimizer_params(optimizers[k])
        state = optim.get("state") if isinstance(optim, dict) else None
        for i, keys in (entries.items() if isinstance(entries, dict) else [(None, None)]):
            if not isinstance(i, int) or not isinstance(state, dict) or not isinstance(state.get(i), dict) \
                    or not 0 <= i < len(params) or not is_dtensor(params[i]) or not isinstance(keys, list) \
                    or not all(torch.is_tensor(state[i].get(key)) for key in keys):
                raise ValueError(
                    f"The saved snapshot's optimizer {k} lists sharded state {i!r} that is not the state of one "
                    "of this optimizer's sharded parameters."
                )


def _check_tensors(saved: Any, model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> None:
    live, params = local_tensors(model, optimizers)
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


def _check_optimizer(k: int, saved: Any, optimizers: Sequence[torch.optim.Optimizer]) -> None:
    optimizer = optimizers[k]
    keys = {"kind", "param_shapes", "group_sizes", "state", "devices", "param_groups"}
    if not isinstance(saved, dict) or set(saved) != keys:
        raise ValueError(f"The saved snapshot's optimizer {k} is not in the form Snapshot.state_dict() writes.")
    if saved["kind"] != type(optimizer).__name__:
        raise ValueError(
            f"The saved snapshot's optimizer {k} is a {saved['kind']!r}, this run's is a "
            f"{type(optimizer).__name__!r}; resume with the optimizer that saved it."
        )
    params = optimizer_params(optimizer)
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


def _check_scaler(saved: Any, scaler: torch.amp.GradScaler | None) -> None:
    live = scaler_state(scaler)
    if (saved is None) != (live is None):
        raise ValueError(
            "The saved snapshot was taken " + ("without" if saved is None else "with") + " an enabled GradScaler "
            "and this run has " + ("one" if saved is None else "none") + "; pass the same scaler= as the run "
            "that saved it."
        )
    if saved is None:
        return
    # live is None exactly when saved is (checked above)
    if not isinstance(saved, dict) or set(saved) != set(cast("dict[str, Any]", live)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in saved.values()):
        raise ValueError(f"The saved snapshot's GradScaler state is not a GradScaler.state_dict(): {saved!r}.")
