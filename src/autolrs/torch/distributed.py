"""Loss averaging and replica checks under ``torch.distributed`` (DDP or FSDP2, launched by torchrun).

Every rank runs the same loop and keeps its own replica of the controller and its own model snapshot (a
replica of the model under DDP, its shards under FSDP2's ``fully_shard``): the controller is deterministic,
so replicas fed the same losses take the same decisions, and no decision has to be sent. What is compared
across ranks is the controllers' state, never the model's (FSDP2's shards differ by design). Per optimizer step, :meth:`Communicator.average` runs one collective, an ``all_reduce(SUM)``
of 9 float64 values (72 bytes, on ``torch.cuda.current_device()`` under NCCL, on the CPU otherwise):

- ``loss, val_loss, validated``: every rank gets the step's mean loss (and mean validation loss, when the
  controller asks for one) bit-identical, as DDP's gradients are;
- three integers below 2**16, each with its square: the step counter and the two halves of the
  controller's :meth:`~autolrs.controller.StageController.fingerprint` after the previous decision. Their
  sum and sum of squares equal ``world * k`` and ``world * k**2`` only if every rank holds the same ``k``
  (zero variance), so ranks at different steps (resumed from different checkpoints) or a replica that
  decided otherwise (other options on one rank, a non-deterministic change) raise on every rank, instead
  of letting the ranks drift apart. A wrong decision is thus caught one step after it was applied; the
  last decision of a run, which depends on the step count alone, is the only one not compared.

A rank that raises or dies leaves the others blocked in a collective: gloo reports a closed connection
at once, and a rank that stalls after the process group's ``timeout``; both surface here as a
``RuntimeError`` that says what happened. (Under NCCL, the watchdog ends the process at the timeout.)
"""

from __future__ import annotations

import json
import sys
import zlib
from typing import Any, Callable, cast

import torch
import torch.distributed as dist

from .shards import dtensor_class

__all__ = ["Communicator", "check_parallelism"]

# The integers compared across ranks stay below this, so that world * k**2 is exact in float64.
_COUNTER = 2**16


def check_parallelism(model: torch.nn.Module) -> None:
    """Raise ``TypeError`` if ``model`` is parallelised in a way autolrs does not support.

    Supported: a replicated model (DDP, or none) and FSDP2's ``fully_shard`` on a 1-D mesh over every rank
    (DTensor parameters, each rank snapshotting its own shards). Refused: the older
    ``FullyShardedDataParallel`` (FSDP1: its flat parameters are not DTensors) and DTensors on a mesh of
    several dimensions (HSDP, ``fully_shard`` on a 2-D replicate x shard mesh, or FSDP with tensor
    parallelism). Only modules already imported are looked for: a model cannot use one that is not.
    """
    fsdp1 = getattr(sys.modules.get("torch.distributed.fsdp"), "FullyShardedDataParallel", None)
    if isinstance(fsdp1, type) and any(isinstance(module, fsdp1) for module in model.modules()):
        raise TypeError(
            "autolrs does not support FullyShardedDataParallel (FSDP1): use FSDP2's "
            "torch.distributed.fsdp.fully_shard, whose DTensor parameters autolrs snapshots shard by shard (README, "
            "'Distributed training'), or DistributedDataParallel."
        )
    dtensor = dtensor_class()
    if dtensor is None:
        return
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not isinstance(t, dtensor):
            continue
        mesh = t.device_mesh
        if mesh.ndim != 1:
            raise TypeError(
                f"autolrs does not support HSDP or other multi-dimensional device meshes: {name} is a DTensor on a "
                f"{mesh.ndim}-D mesh {tuple(mesh.shape)} (placements {tuple(t.placements)}). Shard the model with "
                "fully_shard on a 1-D mesh over every rank (the default), or replicate it with "
                "DistributedDataParallel."
            )
        if mesh.size() != world:
            raise TypeError(
                f"autolrs supports DTensor parameters on a mesh over every rank; {name}'s mesh has {mesh.size()} ranks "
                f"of the {world} in the process group, and autolrs averages the loss over all of them."
            )


class Communicator:
    """The collectives of one AutoLRS run over a ``torch.distributed`` process group.

    Args:
        group: the process group (``None``: the default group).

    Use :meth:`current` to get one when the script runs under an initialised process group.
    """

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        backend = str(dist.get_backend(group))
        # NCCL reduces only CUDA tensors; gloo and MPI take CPU tensors.
        if backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")

    @classmethod
    def current(cls) -> Communicator | None:
        """A communicator over the default group when one of several ranks is initialised, else None."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        return cls()

    # -- collectives -------------------------------------------------------------------------------
    def _collective(self, what: str, step: int, call: Callable[[], object]) -> None:
        try:
            call()
        except RuntimeError as error:
            raise RuntimeError(
                f"autolrs: the {what} at step {step} failed on rank {self.rank} of {self.world_size}: another rank "
                "raised an exception, died, or stopped calling sched.step() (a stalled rank shows after the process "
                "group's timeout, init_process_group(timeout=...)). The first error is in the other ranks' logs."
            ) from error

    def _tensor(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, device=self.device)

    def check_same_run(self, config: dict[str, Any], lr_ratios: list[float]) -> None:
        """Raise on every rank if the ranks built AutoLRS with different options (one collective)."""
        text = json.dumps({"config": config, "lr_ratios": lr_ratios}, sort_keys=True, default=str)
        fingerprint = float(zlib.crc32(text.encode()))  # < 2**32: exact in float64
        buffer = self._tensor([fingerprint, -fingerprint])
        self._collective("check of the options", 0,
                         lambda: dist.all_reduce(buffer, op=dist.ReduceOp.MAX, group=self.group))
        highest, lowest = buffer.tolist()[0], -buffer.tolist()[1]
        if highest != lowest:
            raise ValueError(
                "AutoLRS was built with different options (or optimizer param-group LR ratios) on different ranks: "
                "every rank must pass the same min_lr, max_lr, total_steps, seed, val_fn (given or not) and other "
                "options, so that every rank follows the same schedule. A per-rank seed is the usual cause."
            )

    def average(self, step: int, loss: float, val_loss: float | None,
                fingerprint: int) -> tuple[float, float | None]:
        """The mean of ``loss`` (and of ``val_loss``) over the ranks, checking that they agree: one all_reduce.

        Args:
            step: this rank's count of steps before this one (the controller's ``steps_taken``).
            fingerprint: this rank's controller fingerprint after its previous decision.
        """
        validated = val_loss is not None
        agreed = (step % _COUNTER, fingerprint // _COUNTER, fingerprint % _COUNTER)  # fingerprint < 2**32
        values = [loss, cast(float, val_loss) if validated else 0.0, float(validated)]  # validated: not None
        for k in agreed:
            values += [float(k), float(k) ** 2]
        buffer = self._tensor(values)
        self._collective("all_reduce of the loss", step + 1, lambda: dist.all_reduce(buffer, group=self.group))
        total, val_total, validated_ranks, *sums = buffer.tolist()
        world = self.world_size
        same = [sums[2 * i] == world * k and sums[2 * i + 1] == world * float(k) ** 2 for i, k in enumerate(agreed)]
        if not same[0]:
            raise RuntimeError(
                f"autolrs: the ranks are out of step: rank {self.rank} is at step {step + 1} and another rank is not. "
                "Resume every rank from the same state_dict(), and call sched.step() on every rank once after each "
                "optimizer step."
            )
        if not all(same):
            raise RuntimeError(
                f"autolrs: at step {step}, the ranks' controllers decided differently (rank {self.rank}'s fingerprint "
                f"{fingerprint:#010x} is not every rank's): the ranks' schedulers desynchronised. Build AutoLRS with "
                "the same options on every rank and resume every rank from the same state_dict(); if they are, this "
                "is a bug in autolrs (non-deterministic decisions): please report it."
            )
        if validated_ranks not in (0.0, float(world)):
            raise RuntimeError(
                f"autolrs: at step {step + 1}, {validated_ranks:g} of {world} ranks evaluated val_fn: the ranks' "
                "schedulers disagree; every rank must build AutoLRS with the same options, val_fn included."
            )
        return total / world, (val_total / world if validated else None)
