"""What a stage snapshot covers: every tensor a training step changes, by snapshot name.

- every parameter and buffer of the model, by name, without ``torch.compile``'s ``_orig_mod.`` components;
- every parameter an optimizer holds that is not the model's (a learnable loss scale, a temperature), by
  identity, as ``optimizer.<k>.param.<i>``: restoring only the model would let such a tensor keep what each
  candidate taught it;
- an enabled ``torch.amp.GradScaler``'s state.

A sharded tensor (FSDP2's DTensor) is covered by this rank's local shard (:mod:`autolrs.torch.shards`).
:func:`check_snapshotable` refuses, before a run starts, a tensor that cannot be copied.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .shards import Layout, is_dtensor, local_tensor

__all__ = ["check_snapshotable", "local_tensors", "named_tensors", "normalise_name", "optimizer_params", "scaler_state",
           "sharded_layouts"]


def normalise_name(name: str) -> str:
    """A tensor's name without ``torch.compile``'s ``_orig_mod.`` components.

    A compiled model (``torch.compile(model)``) names its tensors ``_orig_mod.<name>``; naming the snapshot
    without that prefix lets a run saved from a compiled model resume into a plain one and back.
    """
    return ".".join(part for part in name.split(".") if part != "_orig_mod")


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


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters of every param group of ``optimizer``, in order: ``<i>`` of ``optimizer.<k>.param.<i>``."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def named_tensors(model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer]
                  ) -> tuple[dict[str, torch.Tensor], set[str]]:
    """As :func:`local_tensors`, the DTensors as they are (not their local shards)."""
    named: dict[str, torch.Tensor] = {}
    params: set[str] = set()
    p: torch.Tensor  # a model parameter, then an optimizer's
    for name, p in model.named_parameters():
        named[normalise_name(name)] = p
        params.add(normalise_name(name))
    for name, b in model.named_buffers():
        named[normalise_name(name)] = b
    model_ids = {id(p) for p in model.parameters()}
    for k in range(len(optimizers)):
        for i, p in enumerate(optimizer_params(optimizers[k])):
            if id(p) not in model_ids:
                named[f"optimizer.{k}.param.{i}"] = p
                params.add(f"optimizer.{k}.param.{i}")
    return named, params


def local_tensors(model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer]
                  ) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Every tensor copied (a DTensor's local shard), by snapshot name, and the names of the parameters.

    The model's parameters and buffers under their (normalised) names; a parameter an optimizer holds
    that the model does not, as ``optimizer.<k>.param.<i>``.
    """
    named, params = named_tensors(model, optimizers)
    return {name: local_tensor(t) for name, t in named.items()}, params


def sharded_layouts(model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, Layout]:
    """The layout of every covered tensor that is a DTensor, by snapshot name (empty: not sharded)."""
    return {name: Layout.of(t) for name, t in named_tensors(model, optimizers)[0].items() if is_dtensor(t)}


def scaler_state(scaler: torch.amp.GradScaler | None) -> dict[str, Any] | None:
    """What a snapshot keeps of a GradScaler: its ``state_dict()`` if it is enabled, else None."""
    if scaler is None or not scaler.is_enabled():
        return None
    return dict(scaler.state_dict())
