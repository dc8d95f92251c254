"""autolrs in Hugging Face's ``Trainer`` (``pip install 'autolrs[transformers]'``).

    trainer = Trainer(model=model, args=args, train_dataset=train)
    AutoLRSCallback(min_lr=1e-4, max_lr=1e-2).attach(trainer)   # the one line
    trainer.train()                                             # or trainer.train(resume_from_checkpoint=...)

A plain ``TrainerCallback`` sees neither the loss of each step nor the Trainer's scheduler, so
:meth:`AutoLRSCallback.attach` gives it the trainer: it wraps ``trainer.training_step`` to sum the losses it
returns (the Trainer's own per-step loss: the mean over the ``gradient_accumulation_steps`` micro-batches, NaN
included), and ``trainer.create_scheduler`` to build :class:`autolrs.AutoLRS` and, in place of the Trainer's
schedule (``lr_scheduler_type`` and ``warmup_*`` are ignored), a scheduler that never changes an LR and saves
autolrs's state in the checkpoint's ``scheduler.pt``. ``sched.step(loss)`` runs once per optimizer step
(``on_optimizer_step``); the fit stops when autolrs's budget is spent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

try:
    import transformers
    from transformers import TrainerCallback
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "autolrs.integrations.transformers needs Hugging Face transformers (and accelerate): "
        "pip install 'autolrs[transformers]'"
    ) from error

import torch

from ..config import AutoLRSConfig
from ..torch.driver import AutoLRS

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

__all__ = ["AutoLRSCallback"]


class AutoLRSCallback(TrainerCallback):
    """Lets :class:`autolrs.AutoLRS` set the LR of a Hugging Face ``Trainer``; attach it with :meth:`attach`.

    Args:
        config: an :class:`autolrs.AutoLRSConfig`; or give its options as keywords (``min_lr``, ``max_lr``,
            ...). ``total_steps`` defaults to the Trainer's ``max_steps`` (its step count for
            ``num_train_epochs`` when ``max_steps`` is unset) and may not exceed it; with ``config=``, the
            config's ``total_steps`` is used as it is.
        **kwargs: the other arguments of :class:`autolrs.AutoLRS` (``val_fn``, ``callbacks``,
            ``snapshot_device``). The Trainer's ``GradScaler`` (fp16) is passed as ``scaler`` by itself.

    ``callback.sched`` is the run's ``AutoLRS`` once training has begun (``history``, ``found_schedule()``,
    ``kept_state_dict()``). When the fit stops before the budget (another callback stopping it), the run is
    finalized at the end of ``train()``. Under fp16, a step the GradScaler skips counts in the Trainer's
    ``max_steps`` but not in ``total_steps``: give ``max_steps`` a margin above ``total_steps``.
    """

    def __init__(self, config: AutoLRSConfig | None = None, **kwargs: Any) -> None:
        self.config = config
        self.kwargs = kwargs
        self.sched: AutoLRS | None = None
        self.trainer: transformers.Trainer | None = None
        self._loss: torch.Tensor | None = None  # the sum of training_step's losses since the last optimizer step

    def attach(self, trainer: transformers.Trainer) -> AutoLRSCallback:
        """Hand ``trainer``'s LR to autolrs (adds this callback to it if needed); returns this callback."""
        if not isinstance(trainer, transformers.Trainer):
            raise TypeError(f"attach() takes a transformers.Trainer, but got {type(trainer).__name__}.")
        if self.trainer is not None:
            raise ValueError("This AutoLRSCallback is already attached to a Trainer; build one per Trainer.")
        if getattr(trainer, "is_deepspeed_enabled", False):
            raise ValueError("AutoLRSCallback does not support DeepSpeed (it sets the LR and snapshots the model "
                             "itself); use DDP.")
        self.trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        training_step = trainer.training_step

        def step_and_record(*args: Any, **kwargs: Any) -> torch.Tensor:
            loss = training_step(*args, **kwargs)
            self._loss = loss.detach() if self._loss is None else self._loss + loss.detach()
            return loss

        def create_autolrs(num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
                           ) -> torch.optim.lr_scheduler.LRScheduler:
            if trainer.lr_scheduler is not None and not isinstance(trainer.lr_scheduler, _KeepLR):
                raise ValueError(
                    "The Trainer was given an LR scheduler (optimizers=(optimizer, scheduler)), but autolrs sets the "
                    "LR: pass optimizers=(optimizer, None) when using AutoLRSCallback."
                )
            # The Trainer creates its optimizer before its scheduler.
            self._build(cast(torch.optim.Optimizer, optimizer or trainer.optimizer), num_training_steps)
            trainer._created_lr_scheduler = True  # so that the next train() builds a new one
            return cast(torch.optim.lr_scheduler.LRScheduler, trainer.lr_scheduler)  # _build set it

        # Wrapping this Trainer's own methods (on the instance) is the point: mypy forbids assigning to a method.
        trainer.training_step = step_and_record  # type: ignore[method-assign]
        trainer.create_scheduler = create_autolrs  # type: ignore[method-assign]
        return self

    def _build(self, optimizer: torch.optim.Optimizer, max_steps: int) -> None:
        kwargs = dict(self.kwargs)
        if self.config is None:
            kwargs.setdefault("total_steps", max_steps)
        budget = kwargs.get("total_steps") if self.config is None else self.config.total_steps
        if budget is not None and budget > max_steps:
            raise ValueError(f"total_steps={budget} exceeds the Trainer's max_steps={max_steps}: the Trainer would "
                             "stop first. Raise max_steps (or num_train_epochs), or lower total_steps.")
        trainer = cast(transformers.Trainer, self.trainer)  # built from create_scheduler, after attach()
        scaler = getattr(trainer.accelerator, "scaler", None)
        if isinstance(scaler, torch.amp.GradScaler):
            kwargs["scaler"] = scaler
        # accelerate wraps the torch optimizer; autolrs hooks and snapshots the torch one.
        inner = getattr(optimizer, "optimizer", optimizer)
        self._loss = None
        # The scheduler first: it adds "initial_lr" to the param groups, which the snapshot must hold from the start.
        # transformers annotates lr_scheduler as a LambdaLR; the Trainer takes any LRScheduler.
        trainer.lr_scheduler = keep = _KeepLR(optimizer)  # type: ignore[assignment]
        model = cast(torch.nn.Module, trainer.model)  # a Trainer is built with its model
        self.sched = keep.autolrs = AutoLRS(model, inner, self.config, **kwargs)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if self.trainer is None or self.sched is None:
            raise RuntimeError("AutoLRSCallback needs its Trainer: call AutoLRSCallback(...).attach(trainer) "
                               "before trainer.train() (putting it in callbacks=[...] is not enough).")

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          **kwargs: Any) -> TrainerControl:
        loss, self._loss = self._loss, None
        if loss is None:
            raise RuntimeError("The optimizer stepped without a training_step: AutoLRSCallback has no loss for it.")
        sched = cast(AutoLRS, self.sched)  # on_train_begin checked that it is built
        sched.step(loss)  # a step that the GradScaler skipped is not counted
        if sched.done:
            control.should_training_stop = True
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.sched is not None and not self.sched.done:
            self.sched.finalize()


class _KeepLR(torch.optim.lr_scheduler.LRScheduler):
    """The Trainer's scheduler under autolrs: keeps each LR as autolrs set it (so the Trainer logs the LR of
    every step), and carries autolrs's state in the checkpoint (plain data: ``weights_only=True`` loads it)."""

    autolrs: AutoLRS

    def get_lr(self) -> list[float | torch.Tensor]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"autolrs": self.autolrs.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or set(state_dict) != {"autolrs"}:
            raise ValueError("This checkpoint's scheduler.pt was not saved under AutoLRSCallback: resume an autolrs "
                             "run from its own checkpoints (to start autolrs from a model, load the weights instead).")
        self.autolrs.load_state_dict(state_dict["autolrs"])
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
