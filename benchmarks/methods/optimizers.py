"""The optimizers of a task: its base optimizer, and the two LR-free ones in their authors' settings.

Settings of the LR-free optimizers (from their READMEs):
- Prodigy (Mishchenko & Defazio, ``prodigyopt``): ``lr=1.0`` ("for all networks"), AdamW-style decoupled
  weight decay (its default), together with cosine annealing over the whole run (their recommendation).
- Schedule-Free (Defazio et al., ``schedulefree``): ``SGDScheduleFree`` for SGD tasks, ``AdamWScheduleFree``
  for AdamW tasks, with warmup (recommended; 5% of the budget) and no schedule. Its authors say the LR
  still needs tuning ("SGD: 10x-50x larger than classical rates"), so it is tuned on a grid like the
  schedules where the budget allows, and otherwise run at the package's default LR.
"""

from __future__ import annotations

import torch

from ..tasks.base import TaskSpec

__all__ = ["base_optimizer", "prodigy", "schedule_free", "SCHEDULE_FREE_WARMUP", "SCHEDULE_FREE_DEFAULT_LR"]

SCHEDULE_FREE_WARMUP = 0.05
SCHEDULE_FREE_DEFAULT_LR = {"sgd": 1.0, "adamw": 0.0025}  # the package's defaults


def base_optimizer(task: TaskSpec, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """The task's own optimizer: the one every schedule and autolrs drive."""
    if task.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=task.momentum)
    if task.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=task.betas)
    raise ValueError(f"unknown optimizer {task.optimizer!r}")


def prodigy(task: TaskSpec, groups: list[dict]) -> torch.optim.Optimizer:
    from prodigyopt import Prodigy

    return Prodigy(groups, lr=1.0)


def schedule_free(task: TaskSpec, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    import schedulefree

    warmup = int(SCHEDULE_FREE_WARMUP * task.budget)
    if task.optimizer == "sgd":
        # its momentum is the interpolation weight beta; the authors' default 0.9 (plain SGD has none)
        return schedulefree.SGDScheduleFree(groups, lr=lr, momentum=task.momentum or 0.9, warmup_steps=warmup)
    return schedulefree.AdamWScheduleFree(groups, lr=lr, betas=task.betas, warmup_steps=warmup)
