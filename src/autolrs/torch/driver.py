"""``AutoLRS`` for PyTorch training loops: carries out the controller's decisions.

The driver owns nothing of the algorithm. After each optimizer step it hands the step's loss (and, when
asked, a validation loss) to :class:`~autolrs.controller.StageController`, then performs the decision:
restore the stage snapshot, take a new one, set the LR of every param group. The decision therefore
takes effect on the very next optimizer step.

It counts real optimizer steps, not calls (:mod:`autolrs.torch.optimizer_steps`): the losses of micro-batches
under gradient accumulation are averaged into their optimizer step's, a step that ``GradScaler`` skipped (inf
gradients) is not counted, and a call that missed optimizer steps, or an LR set behind its back
(:mod:`autolrs.torch.lr_groups`), raises instead of silently desynchronising the schedule.

Under an initialised ``torch.distributed`` process group of several ranks (DDP or FSDP2 launched by
torchrun) it averages the loss over the ranks, so that every rank's controller takes the same decisions, and
checks that they do (:mod:`autolrs.torch.distributed`); every rank snapshots and restores its own replica
(DDP) or its own shards (FSDP2's ``fully_shard``).

Callbacks (``callbacks=``, :meth:`AutoLRS.add_callback`; writers in :mod:`autolrs.loggers`) observe every
step's decision, every candidate's end and every stage's end. The driver tells those ends from the
controller's records (how many are closed, how many candidates the open one holds) before and after each
step, so the controller knows nothing of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence, cast

import torch

from ..config import AutoLRSConfig
from ..controller import Decision, StageController
from ..records import StageRecord
from ..replay import schedule_from_history
from .arguments import as_float, check_keywords, make_config, optimizers_of
from .distributed import Communicator, check_parallelism
from .driver_state import DRIVER_STATE_VERSION, check_state
from .lr_groups import check_untouched, group_layout, group_ratios, param_groups, set_lr
from .optimizer_steps import OptimizerSteps
from .snapshot import Snapshot, check_snapshotable, normalise_name
from .validation import validation_loss

__all__ = ["AutoLRS"]


class AutoLRS:
    """Finds the LR schedule during training: a drop-in for a ``torch.optim.lr_scheduler``.

    Call :meth:`step` with the loss after every ``optimizer.step()``. Search steps are real optimizer steps
    on your data: they count in ``total_steps`` and in :attr:`steps_taken`.

    Args:
        model: the ``torch.nn.Module`` being trained (snapshots copy its parameters and buffers).
        optimizer: its ``torch.optim.Optimizer``, or a list of optimizers (e.g. ``[adam, sparse_adam]``)
            stepped together. The searched LR applies to the first param group of the first optimizer; every
            other group keeps its LR ratio to that one at construction. Every tensor an optimizer holds is
            snapshotted, including parameters that are not the model's.
        config: an :class:`~autolrs.config.AutoLRSConfig`; or give its options as keywords instead
            (``min_lr``, ``max_lr``, ``total_steps``, ``preset``, ...: every option and its default is
            documented there, and only there).
        val_fn: a callable returning the validation loss (a real number); when given, stages of
            ``max_stage_steps`` observe it instead of the training loss (as the paper). It runs under
            ``torch.no_grad()``; switch to ``eval()`` inside it if needed: autolrs puts every module back in
            the training mode it had before the call.
        scaler: the ``torch.amp.GradScaler`` of a mixed-precision loop: its scale is snapshotted and restored
            with the model (a diverging candidate would otherwise lower it for good), and the steps it skips
            are not counted.
        snapshot_device: where the stage snapshot lives: ``"cpu"`` (default), ``"model"`` (each tensor's
            own device: faster on a GPU, costs one copy of model and optimizer state there) or a device.
        callbacks: objects told of every decision, each defining any of ``on_step(sched, info)``,
            ``on_candidate_end(sched, candidate)`` and ``on_stage_end(sched, record)``
            (:class:`autolrs.loggers.Callback` documents them; ``JSONLinesLogger`` and ``TensorBoardLogger``
            are ready-made). They are not part of :meth:`state_dict`: pass them again when resuming.

    Under ``torch.distributed`` (an initialised process group of several ranks), build it on every rank with
    the same options, after wrapping the model in ``DistributedDataParallel`` or sharding it with FSDP2's
    ``fully_shard`` (1-D mesh; FSDP1 and HSDP are refused): the loss (and ``val_fn``'s result) is averaged
    over the ranks, so every rank decides the same, which one all_reduce per step also checks (README,
    "Distributed training"). Under FSDP2 each rank snapshots only its own shards.

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
        optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        config: AutoLRSConfig | None = None,
        *,
        val_fn: Callable[[], float] | None = None,
        scaler: torch.amp.GradScaler | None = None,
        snapshot_device: str | torch.device = "cpu",
        callbacks: Sequence[object] = (),
        **options: Any,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, but got {type(model).__name__}.")
        optimizers = optimizers_of(optimizer)
        check_parallelism(model)
        check_snapshotable(model, optimizers)
        checked_callbacks = check_keywords(val_fn, scaler, callbacks, snapshot_device)
        self.config = make_config(config, options, use_validation=val_fn is not None)
        self.model = model
        self.optimizers = optimizers
        self.optimizer = optimizers[0]
        self.scaler = scaler
        self.val_fn = val_fn
        self._layout = group_layout(optimizers)
        self._lr_ratios = group_ratios(optimizers)
        self.snapshot = Snapshot(model, optimizers, snapshot_device, scaler=scaler)
        self.controller = StageController(self.config)
        self._comm = Communicator.current()
        self._finalized = False
        self._last_lr: list[float] = []
        self._steps = OptimizerSteps(optimizers, scaler)  # which step() calls report an optimizer step
        self._callbacks = checked_callbacks
        if self._comm is not None:
            self._comm.check_same_run(self.config.to_dict(), self._lr_ratios)
        self._apply(self.controller.begin())

    # -- the loop ----------------------------------------------------------------------------------
    def step(self, loss: float | torch.Tensor) -> None:
        """Report the loss of the optimizer step just taken (a float or a one-element tensor).

        Call it once per ``optimizer.step()``. A call with no optimizer step since the previous one (a
        micro-batch under gradient accumulation) only records its loss, which is averaged into the loss of
        the next optimizer step; under a ``scaler=``, the loss of a step that the scaler skipped is dropped.
        """
        if self._finalized:
            raise ValueError(
                "step() was called after finalize() (or after the budget was spent); stop the loop when "
                "`sched.done` is true."
            )
        value = as_float(loss, "loss")
        check_untouched(self.optimizers, self._layout, self._last_lr)
        counted = self._steps.count(value)  # None: no optimizer step since the last call (recorded there)
        if counted is None:
            return
        value, scale = counted
        # Nothing is consumed until the controller has taken the step: a val_fn (or anything below) that
        # raises leaves the step to be reported again.
        # Validation is expected only when val_fn was given (the config's use_validation).
        val = (validation_loss(self.model, cast("Callable[[], float]", self.val_fn))
               if self.controller.expects_validation else None)
        if self._comm is not None:
            value, val = self._comm.average(self.controller.steps_taken, value, val, self.controller.fingerprint())
        elif Communicator.current() is not None:
            raise RuntimeError(
                "AutoLRS was built before torch.distributed.init_process_group(): build it after, on every rank, "
                "so that the ranks average their losses and follow one schedule."
            )
        if self._callbacks:
            mark, phase, lr = self._callbacks.mark(self.controller), self.controller.phase, self._last_lr[0]
        decision = self.controller.step(value, val)
        self._steps.consumed(scale)
        self._apply(decision)
        if self._callbacks:
            info = {"step": self.controller.steps_taken, "phase": phase, "lr": lr, "loss": value,
                    "val_loss": val, "decision": dataclasses.asdict(decision)}
            self._callbacks.notify(self, info, mark)

    def _apply(self, decision: Decision) -> None:
        if decision.restore:
            self.snapshot.restore()
            self._steps.rescale()
        if decision.snapshot:
            self.snapshot.take()
        self._last_lr = set_lr(self.optimizers, self._lr_ratios, decision.lr)
        if decision.done:
            self._finalized = True

    def finalize(self) -> None:
        """End the run: leave the model on a kept state (restoring the stage snapshot if mid-search).

        Runs by itself when :attr:`done` turns true; call it when you stop early. Idempotent.
        """
        if self._finalized:
            return
        mark = self._callbacks.mark(self.controller) if self._callbacks else None
        self._apply(self.controller.finish())
        self._finalized = True
        if mark is not None:
            self._callbacks.notify(self, None, mark)

    # -- callbacks ---------------------------------------------------------------------------------
    def add_callback(self, callback: object) -> None:
        """Tell ``callback`` of every decision from now on (see ``callbacks`` in the class docstring)."""
        self._callbacks.add(callback)

    # -- read-outs ---------------------------------------------------------------------------------
    def get_last_lr(self) -> list[float]:
        """The LR of each param group (of every optimizer, in order), as last set."""
        return list(self._last_lr)

    @property
    def done(self) -> bool:
        """True once the budget is spent (or after :meth:`finalize`)."""
        return self._finalized or self.controller.done

    @property
    def skipped_steps(self) -> int:
        """Optimizer steps a GradScaler skipped (inf/NaN gradients): not counted in :attr:`steps_taken`."""
        return self._steps.skipped

    @skipped_steps.setter
    def skipped_steps(self, value: int) -> None:
        self._steps.skipped = value

    @property
    def steps_taken(self) -> int:
        """Every optimizer step so far, search included (steps a GradScaler skipped are not counted)."""
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
    def history(self) -> list[StageRecord]:
        """One JSON-serialisable record per stage (see README, "The history")."""
        return self.controller.history

    def found_schedule(self) -> dict[str, Any]:
        """The schedule this run found, as plain data (JSON): the LR of every kept step, in order.

        Warmup, the kept phase of every stage and the decay, without the search steps and rolled-back
        phases: ``len(result["lrs"]) == kept_steps``, each the LR the first param group trained that step
        with. ``result["segments"]`` gives the stages' boundaries; :class:`autolrs.replay.ReplayLR` replays
        it, on this budget or stretched to another (:mod:`autolrs.replay` documents the format).

        Available once the run is finished (:attr:`done`): call :meth:`finalize` first to stop early.
        """
        if not self.done:
            raise ValueError(
                f"found_schedule() is the schedule of a finished run, but this one is at step {self.steps_taken} of "
                f"{self.config.total_steps}; call it when `sched.done` is true, or call sched.finalize() first to "
                "stop here."
            )
        return schedule_from_history(self.controller.history, self.config, kept_steps=self.controller.kept_steps,
                                     steps_taken=self.controller.steps_taken)

    def kept_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's ``state_dict()`` on the kept trajectory, whatever the phase.

        During a search the live model is a candidate's exploration branch; this returns the stage
        snapshot instead (tensors on the snapshot device; do not modify them). Use it to evaluate or save
        the model you would keep, e.g. ``eval_model.load_state_dict(sched.kept_state_dict())``. Under FSDP2
        the sharded tensors are DTensors built on this rank's snapshot shards, as ``model.state_dict()``'s.
        """
        live = self.model.state_dict()
        if self.controller.phase != "explore":
            return live
        saved = self.snapshot.model_tensors()
        return {name: saved.get(normalise_name(name), value) for name, value in live.items()}

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Resumable state as plain data: loads with ``torch.load(..., weights_only=True)``.

        Includes a copy of the stage snapshot (its own tensors: keeping the dict in memory as a roll-back
        point is safe), so a run stopped mid-search resumes mid-search. Save it with the model's, the
        optimizers' (and the scaler's) state dicts, and RNG states for bit-identical continuation.

        Under DDP it is the same on every rank: save rank 0's, and load it on every rank. Under FSDP2 it is
        per rank: the controller's state (the same on every rank) and this rank's shard of the snapshot
        (plain tensors, still loadable with ``weights_only=True``). Every rank saves its own (e.g. to
        ``f"autolrs.rank{rank}.pt"``, beside its shard of the model and optimizer state) and loads its own
        on resume, with the same number of ranks: :meth:`load_state_dict` refuses another rank's state.
        """
        return {
            "version": DRIVER_STATE_VERSION,
            "controller": self.controller.state_dict(),
            "snapshot": self.snapshot.state_dict(),
            "lr_ratios": list(self._lr_ratios),
            "finalized": self._finalized,
            "pending": list(self._steps.pending),
            "skipped_steps": self._steps.skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; load the model's and the optimizers' state dicts too.

        Everything is checked before anything changes: a state from another configuration, version, model
        or optimizer, or one with a wrong key, type or value, raises and leaves this scheduler as it was.
        """
        check_state(state, len(param_groups(self.optimizers)), self.controller, self.snapshot)
        self.controller.load_state_dict(state["controller"])
        self.snapshot.load_state_dict(state["snapshot"])
        self._lr_ratios = [float(r) for r in state["lr_ratios"]]
        self._finalized = state["finalized"]
        self._steps.resume(state["pending"], state["skipped_steps"])
        self._last_lr = set_lr(self.optimizers, self._lr_ratios, self.controller.lr)
