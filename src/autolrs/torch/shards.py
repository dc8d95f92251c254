"""DTensor helpers for sharded models (FSDP2's ``fully_shard``): a tensor's local shard and its layout.

A sharded model's parameters and their optimizer state are ``DTensor``s. A stage snapshot copies the local
shard this rank holds (``DTensor.to_local()``, with no communication) and turns a saved shard back into a
DTensor with the :class:`Layout` it had. Nothing here imports ``torch.distributed.tensor``: a model cannot
hold a DTensor unless it is imported already.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard, cast

import torch

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

__all__ = ["Layout", "dtensor_class", "is_dtensor", "local_tensor", "rank_and_world"]


def dtensor_class() -> type[DTensor] | None:
    """``torch.distributed.tensor.DTensor`` if it is imported (a model cannot hold one otherwise), else None."""
    for name in ("torch.distributed.tensor", "torch.distributed._tensor"):
        kind = getattr(sys.modules.get(name), "DTensor", None)
        if isinstance(kind, type):
            return cast("type[DTensor]", kind)  # the DTensor class of that torch module
    return None


def is_dtensor(t: Any) -> TypeGuard[DTensor]:
    kind = dtensor_class()
    return kind is not None and isinstance(t, kind)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The tensor this rank holds of ``t``: a DTensor's local shard (its storage, not a copy), else ``t``."""
    if is_dtensor(t):
        with torch.no_grad():  # to_local() under no_grad is the local tensor itself, not an autograd view
            return t.to_local()
    return t


@dataclass(frozen=True)
class Layout:
    """How a DTensor is spread over the ranks: what turns a saved local shard back into a DTensor."""

    mesh: Any
    placements: tuple[Any, ...]
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @classmethod
    def of(cls, t: DTensor) -> Layout:
        return cls(t.device_mesh, tuple(t.placements), tuple(t.shape), tuple(t.stride()))

    def wrap(self, local: torch.Tensor) -> torch.Tensor:
        dtensor = cast("type[DTensor]", dtensor_class())  # a Layout exists only where DTensor is imported
        return dtensor.from_local(local, self.mesh, self.placements, run_check=False,
                                  shape=torch.Size(self.shape), stride=self.stride)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size under an initialised process group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
