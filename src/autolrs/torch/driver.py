"""``AutoLRS`` for PyTorch training loops: carries out the controller's decisions.

The driver owns nothing of the algorithm. After each optimizer step it hands the step's loss (and, when
asked, a validation loss) to :class:`~autolrs.controller.StageController`, then performs the decision:
restore the stage snapshot, take a new one, set the LR of every param group. The decision therefore
takes effect on the very next optimizer step.

It counts real optimizer steps, not calls: a hook on every optimizer tells it whether ``optimizer.step()``
ran since the last call, so the losses of micro-batches under gradient accumulation are averaged into their
optimizer step's, a step that ``GradScaler`` skipped (inf gradients) is not counted, and a call that missed
optimizer steps, or an LR set behind its back, raises instead of silently desynchronising the schedule.

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
import math
import warnings
import weakref
from typing import Callable, Sequence

import torch

from ..config import AutoLRSConfig
from ..controller import Decision, StageController
from ..replay import schedule_from_history
from .arguments import as_float, make_config, optimizers_of
from .callbacks import Callbacks
from .distributed import Communicator, check_parallelism
from .snapshot import Snapshot, check_snapshotable, normalise_name

__all__ = ["AutoLRS"]

DRIVER_STATE_VERSION = 2  # 2: several optimizers, extra params and a GradScaler in the snapshot


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
        scaler=None,
        snapshot_device: str | torch.device = "cpu",
        callbacks: Sequence = (),
        **options,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, but got {type(model).__name__}.")
        optimizers = optimizers_of(optimizer)
        check_parallelism(model)
        check_snapshotable(model, optimizers)
        if val_fn is not None and not callable(val_fn):
            raise TypeError(f"val_fn must be a callable returning the validation loss, but got {val_fn!r}.")
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
            raise TypeError(f"scaler must be a torch.amp.GradScaler (or None), but got {type(scaler).__name__}.")
        if not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"callbacks must be a list of callback objects, but got {type(callbacks).__name__}; "
                            "wrap a single one in a list: callbacks=[logger].")
        callbacks = Callbacks(callbacks)
        if snapshot_device != "model":
            try:
                torch.device(snapshot_device)
            except (RuntimeError, TypeError) as error:
                raise ValueError(
                    f"snapshot_device must be 'cpu', 'model' or a torch.device, but got {snapshot_device!r}."
                ) from error
        self.config = make_config(config, options, use_validation=val_fn is not None)
        self.model = model
        self.optimizers = optimizers
        self.optimizer = optimizers[0]
        self.scaler = scaler
        self.val_fn = val_fn
        self._layout = self._group_layout()
        self._lr_ratios = self._group_ratios()
        self.snapshot = Snapshot(model, optimizers, snapshot_device, scaler=scaler)
        self.controller = StageController(self.config)
        self._comm = Communicator.current()
        self._finalized = False
        self._last_lr: list[float] = []
        # Optimizer steps counted by the hooks, and the counts at the last step() that took one.
        self._optimizer_steps = [0] * len(optimizers)
        self._seen_steps = [0] * len(optimizers)
        self._hooks = [opt.register_step_post_hook(_StepCounter(self, k)) for k, opt in enumerate(optimizers)]
        self._pending: list[float] = []  # losses of calls with no optimizer step yet (micro-batches)
        self._warned_extra_calls = False
        self._last_scale = self._scale()
        self.skipped_steps = 0
        self._callbacks = callbacks
        if self._comm is not None:
            self._comm.check_same_run(self.config.to_dict(), self._lr_ratios)
        self._apply(self.controller.begin())

    def _groups(self) -> list[dict]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    def _group_layout(self) -> list[list[int]]:
        """How many params each group of each optimizer holds: add_param_group changes it."""
        return [[len(group["params"]) for group in opt.param_groups] for opt in self.optimizers]

    def _group_ratios(self) -> list[float]:
        groups = self._groups()
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

    # -- the loop ----------------------------------------------------------------------------------
    def step(self, loss) -> None:
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
        self._check_untouched()
        new = max(now - seen for now, seen in zip(self._optimizer_steps, self._seen_steps))
        scale = self._scale()  # read once: on a GPU each read waits for the device
        skipped = scale is not None and self._last_scale is not None and scale < self._last_scale
        if new == 0 or skipped:
            # GradScaler lowers its scale exactly when it skips a step for inf/NaN gradients. A fused optimizer
            # (AdamW(fused=True)) unscales itself: GradScaler calls its step() on an inf step too, which then
            # changes nothing. The hook fires, but the fallen scale says it was skipped.
            self._no_optimizer_step(value, scale, skipped)
            return
        if new > 1:
            self._seen_steps = list(self._optimizer_steps)
            raise ValueError(
                f"optimizer.step() ran {new} times since the last sched.step(loss): call sched.step(loss) once after "
                "every optimizer step (autolrs decides the LR of each step)."
            )
        if self._pending:
            value = (sum(self._pending) + value) / (len(self._pending) + 1)
        # Nothing is consumed until the controller has taken the step: a val_fn (or anything below) that
        # raises leaves the step to be reported again.
        val = self._validate() if self.controller.expects_validation else None
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
        self._seen_steps = list(self._optimizer_steps)
        self._pending = []
        self._last_scale = scale
        self._apply(decision)
        if self._callbacks:
            info = {"step": self.controller.steps_taken, "phase": phase, "lr": lr, "loss": value,
                    "val_loss": val, "decision": dataclasses.asdict(decision)}
            self._callbacks.notify(self, info, mark)

    def _scale(self) -> float | None:
        return self.scaler.get_scale() if self.scaler is not None and self.scaler.is_enabled() else None

    def _no_optimizer_step(self, value: float, scale: float | None, skipped: bool) -> None:
        """A call after which no optimizer step ran: a step the scaler skipped, or a micro-batch."""
        self._seen_steps = list(self._optimizer_steps)
        if skipped:
            self._last_scale = scale
            self.skipped_steps += 1
            return
        self._pending.append(value)
        if not self._warned_extra_calls:
            self._warned_extra_calls = True
            warnings.warn(
                "sched.step(loss) was called without an optimizer.step() since the previous call: autolrs counts "
                "optimizer steps, so this loss is averaged into the next optimizer step's (right under gradient "
                "accumulation; a mistake if sched.step is called twice per step or before optimizer.step()).",
                UserWarning, stacklevel=3,
            )

    def _check_untouched(self) -> None:
        """Raise if a param group was added or an LR was changed since autolrs set it."""
        if self._group_layout() != self._layout:
            raise ValueError(
                f"The optimizer's param groups changed since AutoLRS was built (params per group: {self._layout} then, "
                f"{self._group_layout()} now): the new group would be neither scheduled nor snapshotted. Add every "
                "param group before building AutoLRS."
            )
        for i, (group, lr) in enumerate(zip(self._groups(), self._last_lr)):
            now = float(group["lr"]) if torch.is_tensor(group["lr"]) else group["lr"]
            if now != lr:
                raise ValueError(
                    f"Param group {i}'s lr is {now!r}, but autolrs set it to {lr!r}: another LR scheduler (or code) "
                    "changes the LR. autolrs must be the only one to set it: remove the other scheduler."
                )

    def _validate(self) -> float:
        modes = [(module, module.training) for module in self.model.modules()]
        try:
            with torch.no_grad():
                result = self.val_fn()
        finally:
            for module, training in modes:
                module.training = training
        try:
            return as_float(result, "val_fn()'s result")
        except (TypeError, ValueError) as error:
            raise type(error)(f"{error} val_fn must return the validation loss as a number.") from None

    def _apply(self, decision: Decision) -> None:
        if decision.restore:
            self.snapshot.restore()
            self._last_scale = self._scale()
        if decision.snapshot:
            self.snapshot.take()
        self._set_lr(decision.lr)
        if decision.done:
            self._finalized = True

    def _set_lr(self, lr: float) -> None:
        self._last_lr = []
        for group, ratio in zip(self._groups(), self._lr_ratios):
            value = lr * ratio
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(value)
                value = float(group["lr"])  # what the check reads back, in the tensor's precision
            else:
                group["lr"] = value
            self._last_lr.append(value)

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
    def add_callback(self, callback) -> None:
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
    def history(self) -> list[dict]:
        """One JSON-serialisable record per stage (see README, "The history")."""
        return self.controller.history

    def found_schedule(self) -> dict:
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

    def kept_state_dict(self) -> dict:
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
    def state_dict(self) -> dict:
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
            "pending": list(self._pending),
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`; load the model's and the optimizers' state dicts too.

        Everything is checked before anything changes: a state from another configuration, version, model
        or optimizer, or one with a wrong key, type or value, raises and leaves this scheduler as it was.
        """
        self._check_state_dict(state)
        self.controller.load_state_dict(state["controller"])
        self.snapshot.load_state_dict(state["snapshot"])
        self._lr_ratios = [float(r) for r in state["lr_ratios"]]
        self._finalized = state["finalized"]
        self._pending = [float(x) for x in state["pending"]]
        self.skipped_steps = state["skipped_steps"]
        self._seen_steps = list(self._optimizer_steps)
        self._last_scale = self._scale()
        self._set_lr(self.controller.lr)

    def _check_state_dict(self, state) -> None:
        keys = {"version", "controller", "snapshot", "lr_ratios", "finalized", "pending", "skipped_steps"}
        if not isinstance(state, dict) or "controller" not in state:
            raise TypeError(f"Expected a dict from AutoLRS.state_dict(), but got {type(state).__name__}.")
        if state.get("version") != DRIVER_STATE_VERSION:
            raise ValueError(
                f"This state was saved by AutoLRS state version {state.get('version')!r}; this autolrs reads "
                f"version {DRIVER_STATE_VERSION}. Resume with the autolrs release that saved it."
            )
        if set(state) != keys:
            raise ValueError(f"This AutoLRS state has keys {sorted(state)}; expected {sorted(keys)}.")
        ratios = state["lr_ratios"]
        if not isinstance(ratios, list) or len(ratios) != len(self._groups()):
            raise ValueError(
                f"This state was saved for {len(ratios) if isinstance(ratios, list) else ratios!r} param groups, but "
                f"the optimizers have {len(self._groups())}."
            )
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r >= 0
                   for r in ratios) or ratios[0] != 1.0:
            raise ValueError(f"This state's lr_ratios {ratios!r} are not finite ratios to the first group (1.0 first).")
        if not isinstance(state["finalized"], bool):
            raise TypeError(f"This state's 'finalized' is {state['finalized']!r}, not a bool.")
        pending = state["pending"]
        if not isinstance(pending, list) or not all(isinstance(x, float) for x in pending):
            raise TypeError(f"This state's 'pending' is {pending!r}, not a list of floats.")
        skipped = state["skipped_steps"]
        if not isinstance(skipped, int) or isinstance(skipped, bool) or skipped < 0:
            raise TypeError(f"This state's 'skipped_steps' is {skipped!r}, not an int >= 0.")
        self.controller.check_state_dict(state["controller"])
        if state["snapshot"] is None and state["controller"]["phase"] not in ("warmup", "done"):
            raise ValueError(
                f"This AutoLRS state has no snapshot but is in the {state['controller']['phase']!r} phase, which "
                "restores one: the state is corrupt."
            )
        self.snapshot.check_state_dict(state["snapshot"])


class _StepCounter:
    """An optimizer step post-hook that counts the optimizer's real steps for one AutoLRS.

    Holds the scheduler weakly: an optimizer outliving its scheduler keeps no scheduler alive.
    """

    def __init__(self, sched: AutoLRS, index: int) -> None:
        self.sched = weakref.ref(sched)
        self.index = index

    def __call__(self, optimizer, args, kwargs) -> None:
        sched = self.sched()
        if sched is not None:
            sched._optimizer_steps[self.index] += 1
