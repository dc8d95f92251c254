"""``AutoLRS`` for PyTorch training loops: carries out the controller's decisions.

The driver owns nothing of the algorithm. After each optimizer step it hands the step's loss (and, when
asked, a validation loss) to :class:`~autolrs.controller.StageController`, then performs the decision:
restore the stage snapshot, take a new one, set the LR of every param group. The decision therefore
takes effect on the very next optimizer step.

Under an initialised ``torch.distributed`` process group of several ranks (DDP launched by torchrun) it
averages the loss over the ranks, so that every rank's controller takes the same decisions, and checks
that they do (:mod:`autolrs.torch.distributed`); every rank snapshots and restores its own replica.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable

import torch

from ..config import AutoLRSConfig
from ..controller import Decision, StageController
from .distributed import Communicator, check_replicated
from .snapshot import Snapshot

__all__ = ["AutoLRS"]

DRIVER_STATE_VERSION = 1


def _as_float(value, what: str) -> float:
    """A Python float from a real scalar: float, int, numpy scalar or a one-element real tensor."""
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise ValueError(
                f"{what} must be a scalar, but got a tensor of shape {tuple(value.shape)}; reduce it first "
                "(e.g. loss.mean())."
            )
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{what} must be a real number, but got a tensor of dtype {value.dtype}.")
        return float(value.detach().item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number or a 0-dim tensor, but got {value!r} of type "
                        f"{type(value).__name__}.")
    return float(value)


def _make_config(config: AutoLRSConfig | None, options: dict, *, use_validation: bool) -> AutoLRSConfig:
    """The run's configuration: ``config`` itself, or one built from keyword ``options``."""
    if config is not None:
        if not isinstance(config, AutoLRSConfig):
            raise TypeError(f"config must be an AutoLRSConfig, but got {type(config).__name__}.")
        if options:
            raise TypeError(f"Give either config= or option keywords, not both (got config and {sorted(options)}).")
        if config.use_validation != use_validation:
            raise ValueError(
                f"config.use_validation={config.use_validation} but val_fn is {'set' if use_validation else 'None'}:"
                " pass val_fn exactly when the config uses validation."
            )
        return config
    known = {f.name for f in dataclasses.fields(AutoLRSConfig)} - {"use_validation"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"AutoLRS got unknown options {unknown}; the options are AutoLRSConfig's: {sorted(known)}.")
    if "min_lr" not in options or "max_lr" not in options:
        raise TypeError("AutoLRS needs min_lr and max_lr (the LR search range), e.g. min_lr=1e-4, max_lr=1.0, "
                        "or config=AutoLRSConfig(...).")
    return AutoLRSConfig(**options, use_validation=use_validation)


class AutoLRS:
    """Finds the LR schedule during training: a drop-in for a ``torch.optim.lr_scheduler``.

    Call :meth:`step` with the loss after every ``optimizer.step()``. Search steps are real optimizer steps
    on your data: they count in ``total_steps`` and in :attr:`steps_taken`.

    Args:
        model: the ``torch.nn.Module`` being trained (snapshots copy its parameters and buffers).
        optimizer: its ``torch.optim.Optimizer``. With several param groups, the searched LR applies to
            the first group and the others keep their LR ratio to it at construction.
        config: an :class:`~autolrs.config.AutoLRSConfig`; or give its options as keywords instead
            (``min_lr``, ``max_lr``, ``total_steps``, ``preset``, ...: every option and its default is
            documented there, and only there).
        val_fn: a callable returning the validation loss (a real number); when given, stages of
            ``max_stage_steps`` observe it instead of the training loss (as the paper). autolrs calls it
            in whatever mode the model is in: switch to ``eval()`` and back inside it if needed.
        snapshot_device: where the stage snapshot lives: ``"cpu"`` (default), ``"model"`` (each tensor's
            own device: faster on a GPU, costs one copy of model and optimizer state there) or a device.

    Under ``torch.distributed`` (an initialised process group of several ranks), build it on every rank with
    the same options, after wrapping the model in ``DistributedDataParallel``: the loss (and ``val_fn``'s
    result) is averaged over the ranks, so every rank decides the same, which one all_reduce per step also
    checks (README, "Distributed training (DDP)").

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 1)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> sched = AutoLRS(model, optimizer, min_lr=1e-3, max_lr=1.0, total_steps=300, seed=0)
        >>> x, y = torch.randn(64, 4), torch.randn(64, 1)
        >>> while not sched.done:
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     optimizer.zero_grad(); loss.backward(); optimizer.step()
        ...     sched.step(loss)
        >>> sched.steps_taken
        300
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        config: AutoLRSConfig | None = None,
        *,
        val_fn: Callable[[], float] | None = None,
        snapshot_device: str | torch.device = "cpu",
        **options,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, but got {type(model).__name__}.")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, but got {type(optimizer).__name__}; pass the optimizer "
                "itself, not a scheduler or a list."
            )
        check_replicated(model)
        if val_fn is not None and not callable(val_fn):
            raise TypeError(f"val_fn must be a callable returning the validation loss, but got {val_fn!r}.")
        if snapshot_device != "model":
            try:
                torch.device(snapshot_device)
            except (RuntimeError, TypeError) as error:
                raise ValueError(
                    f"snapshot_device must be 'cpu', 'model' or a torch.device, but got {snapshot_device!r}."
                ) from error
        self.config = _make_config(config, options, use_validation=val_fn is not None)
        self.model = model
        self.optimizer = optimizer
        self.val_fn = val_fn
        self._lr_ratios = self._group_ratios(optimizer)
        self.snapshot = Snapshot(model, optimizer, snapshot_device)
        self.controller = StageController(self.config)
        self._comm = Communicator.current()
        self._finalized = False
        self._last_lr: list[float] = []
        if self._comm is not None:
            self._comm.check_same_run(self.config.to_dict(), self._lr_ratios)
        self._apply(self.controller.begin())

    @staticmethod
    def _group_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
        groups = optimizer.param_groups
        if not groups:
            raise ValueError("The optimizer has no param groups.")
        lrs = []
        for i, group in enumerate(groups):
            if "lr" not in group:
                raise ValueError(
                    f"Param group {i} of the optimizer has no 'lr'; autolrs sets each group's 'lr', so use an "
                    "optimizer with a learning rate."
                )
            lr = _as_float(group["lr"], f"param group {i}'s lr")
            if not math.isfinite(lr) or lr < 0:
                raise ValueError(f"Param group {i} has lr={lr!r}; expected a finite lr >= 0.")
            lrs.append(lr)
        if lrs[0] <= 0:
            raise ValueError(
                f"The first param group's lr is {lrs[0]!r}; autolrs keeps the other groups' ratios to it, so it must "
                "be > 0 (any positive value works: autolrs replaces it)."
            )
        return [lr / lrs[0] for lr in lrs]

    # -- the loop ----------------------------------------------------------------------------------
    def step(self, loss) -> None:
        """Report the loss of the optimizer step just taken (a float or a one-element tensor)."""
        if self._finalized:
            raise ValueError(
                "step() was called after finalize() (or after the budget was spent); stop the loop when "
                "`sched.done` is true."
            )
        value = _as_float(loss, "loss")
        val = self._validate() if self.controller.expects_validation else None
        if self._comm is not None:
            value, val = self._comm.average(self.controller.steps_taken, value, val, self.controller.fingerprint())
        elif Communicator.current() is not None:
            raise RuntimeError(
                "AutoLRS was built before torch.distributed.init_process_group(): build it after, on every rank, "
                "so that the ranks average their losses and follow one schedule."
            )
        self._apply(self.controller.step(value, val))

    def _validate(self) -> float:
        with torch.no_grad():
            result = self.val_fn()
        try:
            return _as_float(result, "val_fn()'s result")
        except (TypeError, ValueError) as error:
            raise type(error)(f"{error} val_fn must return the validation loss as a number.") from None

    def _apply(self, decision: Decision) -> None:
        if decision.restore:
            self.snapshot.restore()
        if decision.snapshot:
            self.snapshot.take()
        self._set_lr(decision.lr)
        if decision.done:
            self._finalized = True

    def _set_lr(self, lr: float) -> None:
        self._last_lr = []
        for group, ratio in zip(self.optimizer.param_groups, self._lr_ratios):
            value = lr * ratio
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(value)
            else:
                group["lr"] = value
            self._last_lr.append(value)

    def finalize(self) -> None:
        """End the run: leave the model on a kept state (restoring the stage snapshot if mid-search).

        Runs by itself when :attr:`done` turns true; call it when you stop early. Idempotent.
        """
        if self._finalized:
            return
        self._apply(self.controller.finish())
        self._finalized = True

    # -- read-outs ---------------------------------------------------------------------------------
    def get_last_lr(self) -> list[float]:
        """The LR of each param group, as last set."""
        return list(self._last_lr)

    @property
    def done(self) -> bool:
        """True once the budget is spent (or after :meth:`finalize`)."""
        return self._finalized or self.controller.done

    @property
    def steps_taken(self) -> int:
        """Every optimizer step so far, search included."""
        return self.controller.steps_taken

    @property
    def kept_steps(self) -> int:
        """Steps on the kept trajectory (warmup, kept stages and decay phase), search excluded."""
        return self.controller.kept_steps

    @property
    def phase(self) -> str:
        """``"warmup"``, ``"explore"``, ``"keep"``, ``"decay"`` or ``"done"``: what the next step is."""
        return self.controller.phase

    @property
    def history(self) -> list[dict]:
        """One JSON-serialisable record per stage (see README, "The history")."""
        return self.controller.history

    def kept_state_dict(self) -> dict:
        """The model's ``state_dict()`` on the kept trajectory, whatever the phase.

        During a search the live model is a candidate's exploration branch; this returns the stage
        snapshot instead (tensors on the snapshot device; do not modify them). Use it to evaluate or save
        the model you would keep, e.g. ``eval_model.load_state_dict(sched.kept_state_dict())``.
        """
        live = self.model.state_dict()
        if self.controller.phase != "explore":
            return live
        saved = self.snapshot.state_dict()["model"]
        return {name: saved.get(name, value) for name, value in live.items()}

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Resumable state as plain data: loads with ``torch.load(..., weights_only=True)``.

        Includes the stage snapshot, so a run stopped mid-search resumes mid-search. Save it with the
        model's and the optimizer's state dicts (and RNG states for bit-identical continuation).
        """
        return {
            "version": DRIVER_STATE_VERSION,
            "controller": self.controller.state_dict(),
            "snapshot": self.snapshot.state_dict(),
            "lr_ratios": list(self._lr_ratios),
            "finalized": self._finalized,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`; load the model's and the optimizer's state dicts too.

        Everything is checked before anything changes: a state from another configuration, version, model
        or optimizer raises and leaves this scheduler as it was.
        """
        if not isinstance(state, dict) or "controller" not in state:
            raise TypeError(f"Expected a dict from AutoLRS.state_dict(), but got {type(state).__name__}.")
        if state.get("version") != DRIVER_STATE_VERSION:
            raise ValueError(
                f"This state was saved by AutoLRS state version {state.get('version')!r}; this autolrs reads "
                f"version {DRIVER_STATE_VERSION}. Resume with the autolrs release that saved it."
            )
        if len(state["lr_ratios"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"This state was saved for {len(state['lr_ratios'])} param groups, but the optimizer has "
                f"{len(self.optimizer.param_groups)}."
            )
        self.controller.check_state_dict(state["controller"])
        self.snapshot.check_state_dict(state["snapshot"])
        self.controller.load_state_dict(state["controller"])
        self.snapshot.load_state_dict(state["snapshot"])
        self._lr_ratios = list(state["lr_ratios"])
        self._finalized = bool(state["finalized"])
        self._set_lr(self.controller.lr)
