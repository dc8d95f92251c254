"""The LR of every param group of every optimizer: one searched LR, each group at its own ratio to it.

The searched LR applies to the first param group of the first optimizer; every other group keeps the ratio
of its LR to that one at construction. autolrs must be the only one to set the LR: a param group added, or an
LR changed, behind its back raises instead of silently desynchronising the schedule.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .arguments import as_float

__all__ = ["check_untouched", "group_layout", "group_ratios", "param_groups", "set_lr"]


def param_groups(optimizers: Sequence[torch.optim.Optimizer]) -> list[dict[str, Any]]:
    """Every param group of every optimizer, in order."""
    return [group for opt in optimizers for group in opt.param_groups]


def group_layout(optimizers: Sequence[torch.optim.Optimizer]) -> list[list[int]]:
    """How many params each group of each optimizer holds: add_param_group changes it."""
    return [[len(group["params"]) for group in opt.param_groups] for opt in optimizers]


def group_ratios(optimizers: Sequence[torch.optim.Optimizer]) -> list[float]:
    """Each param group's LR as a ratio to the first group's; raises unless every LR is finite, >= 0, the first > 0."""
    groups = param_groups(optimizers)
    if not groups:
        raise ValueError("The optimizer has no param groups.")
    lrs = []
    for i, group in enumerate(groups):
        if "lr" not in group:
            raise ValueError(
                f"Param group {i} of the optimizer has no 'lr'; autolrs sets each group's 'lr', so use an "
                "optimizer with a learning rate."
            )
        lr = as_float(group["lr"], f"param group {i}'s lr")
        if not math.isfinite(lr) or lr < 0:
            raise ValueError(f"Param group {i} has lr={lr!r}; expected a finite lr >= 0.")
        lrs.append(lr)
    if lrs[0] <= 0:
        raise ValueError(
            f"The first param group's lr is {lrs[0]!r}; autolrs keeps the other groups' ratios to it, so it must "
            "be > 0 (any positive value works: autolrs replaces it)."
        )
    return [lr / lrs[0] for lr in lrs]


def set_lr(optimizers: Sequence[torch.optim.Optimizer], ratios: Sequence[float], lr: float) -> list[float]:
    """Set every param group's LR to ``lr`` times its ratio; returns the LRs set, as the groups now hold them."""
    last_lr = []
    for group, ratio in zip(param_groups(optimizers), ratios):
        value = lr * ratio
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(value)
            value = float(group["lr"])  # what the check reads back, in the tensor's precision
        else:
            group["lr"] = value
        last_lr.append(value)
    return last_lr


def check_untouched(optimizers: Sequence[torch.optim.Optimizer], layout: list[list[int]], last_lr: list[float]) -> None:
    """Raise if a param group was added or an LR was changed since autolrs set it."""
    if group_layout(optimizers) != layout:
        raise ValueError(
            f"The optimizer's param groups changed since AutoLRS was built (params per group: {layout} then, "
            f"{group_layout(optimizers)} now): the new group would be neither scheduled nor snapshotted. Add every "
            "param group before building AutoLRS."
        )
    for i, (group, lr) in enumerate(zip(param_groups(optimizers), last_lr)):
        now = float(group["lr"]) if torch.is_tensor(group["lr"]) else group["lr"]
        if now != lr:
            raise ValueError(
                f"Param group {i}'s lr is {now!r}, but autolrs set it to {lr!r}: another LR scheduler (or code) "
                "changes the LR. autolrs must be the only one to set it: remove the other scheduler."
            )
