"""``AutoLRSCallback``: autolrs inside Lightning's ``Trainer`` (``pip install 'autolrs[lightning]'``).

    trainer = lightning.Trainer(max_steps=4000, callbacks=[AutoLRSCallback(min_lr=1e-3, max_lr=1.0)])

A thin adapter: it builds :class:`autolrs.AutoLRS` on the LightningModule and the trainer's optimizers,
reports one loss per optimizer step (the mean of its micro-batches under ``accumulate_grad_batches``), lets
AutoLRS set the LR and snapshot/restore the module and optimizers, stops the fit at the budget, keeps its
state in Lightning's checkpoints and logs ``autolrs/lr``, ``autolrs/phase`` and ``autolrs/stage``.

Under Lightning's DDP strategy the loss is averaged by AutoLRS itself over the process group that Lightning
initialised: one all_reduce per step that also checks that every rank decided the same (README,
"Distributed training"); reducing it with ``trainer.strategy.reduce`` first would only add a second
collective. Strategies that run several processes without a ``torch.distributed`` group are refused, and so
are sharded ones (FSDP1 by AutoLRS; FSDP2's DTensor modules here: Lightning's checkpoints keep one callback
state for all ranks, where each rank's autolrs state holds its own shards).
"""

from __future__ import annotations

import math
from typing import Any, Callable, cast

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - exercised by a test that hides lightning
    raise ImportError(
        "autolrs.integrations.lightning needs Lightning: pip install 'autolrs[lightning]'"
    ) from error

import torch

from ..config import AutoLRSConfig
from ..loggers import PHASE_CODES
from ..torch.driver import AutoLRS
from ..torch.shards import dtensor_class

__all__ = ["AutoLRSCallback"]


class AutoLRSCallback(pl.Callback):
    """Finds the LR schedule of a Lightning fit; pass it in ``Trainer(callbacks=[...])``.

    Args:
        min_lr, max_lr, total_steps, **options: AutoLRS's options (every option and its default is
            :class:`~autolrs.config.AutoLRSConfig`'s). ``total_steps`` (optimizer steps, search included)
            defaults to ``Trainer(max_steps=...)``, else to ``trainer.estimated_stepping_batches``.
        config: an ``AutoLRSConfig`` instead of the keywords.
        val_fn, snapshot_device: as for :class:`autolrs.AutoLRS`.
        prog_bar: show ``autolrs/lr`` and ``autolrs/phase`` in the progress bar.

    ``configure_optimizers`` must return the optimizer(s) alone: an LR scheduler would fight autolrs for the
    LR and is refused. Several optimizers (manual optimization) are stepped together and all scheduled.
    After the fit, :attr:`sched` is the :class:`autolrs.AutoLRS` (``history``, ``found_schedule()``, ...).
    """

    def __init__(self, min_lr: float | None = None, max_lr: float | None = None, total_steps: int | None = None,
                 *, config: AutoLRSConfig | None = None, val_fn: Callable[[], float] | None = None,
                 snapshot_device: str | torch.device = "cpu", prog_bar: bool = True,
                 **options: Any) -> None:
        given = {k: v for k, v in dict(min_lr=min_lr, max_lr=max_lr, total_steps=total_steps).items() if v is not None}
        if config is not None and (given or options):
            raise TypeError("Give either config= or option keywords, not both "
                            f"(got config and {sorted({**given, **options})}).")
        self._config, self._options = config, {**given, **options}
        self._val_fn, self._snapshot_device, self._prog_bar = val_fn, snapshot_device, prog_bar
        self.sched: AutoLRS | None = None
        self._losses: list[float] = []  # losses of the micro-batches since the last optimizer step
        self._step_at_start = 0
        self._loaded: dict[str, Any] | None = None

    # -- setup ---------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.lr_scheduler_configs:
            kinds = ", ".join(type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs)
            raise ValueError(
                f"configure_optimizers returned an LR scheduler ({kinds}), but AutoLRSCallback sets the LR itself and "
                "autolrs raises when another scheduler changes it: return only the optimizer from configure_optimizers."
            )
        if not trainer.optimizers:
            raise ValueError("AutoLRSCallback needs an optimizer: configure_optimizers returned none.")
        world = trainer.world_size
        dist = torch.distributed
        if world > 1 and not (dist.is_available() and dist.is_initialized() and dist.get_world_size() == world):
            raise NotImplementedError(
                f"AutoLRSCallback runs on {world} processes only under a torch.distributed process group (Lightning's "
                f"DDP strategies); {type(trainer.strategy).__name__} has none, so the ranks would not share one "
                "schedule."
            )
        dtensor = dtensor_class()
        if dtensor is not None and any(isinstance(p, dtensor) for p in pl_module.parameters()):
            raise NotImplementedError(
                f"AutoLRSCallback supports Lightning's DDP strategies, not sharded ones ({type(trainer.strategy).__name__}"
                " shards the module: DTensor parameters): under FSDP2 each rank's autolrs state holds its own shards, "
                "and Lightning's checkpoints keep one callback state for all ranks. Use AutoLRS in a plain loop "
                "(README, 'Distributed training': examples/fsdp_train.py)."
            )
        config, options = self._config, dict(self._options)
        budget = config.total_steps if config is not None else options.get("total_steps")
        if config is None and budget is None:
            budget = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
            if not math.isfinite(budget):
                raise ValueError("AutoLRSCallback needs a budget: pass total_steps=... or Trainer(max_steps=...).")
            options["total_steps"] = budget = int(budget)
        if budget is not None and trainer.max_steps > 0 and budget > trainer.max_steps:
            raise ValueError(f"total_steps={budget} exceeds Trainer(max_steps={trainer.max_steps}): the fit would end "
                             "before the budget; raise max_steps or lower total_steps.")
        optimizers = trainer.optimizers if len(trainer.optimizers) > 1 else trainer.optimizers[0]
        scaler = getattr(trainer.precision_plugin, "scaler", None)  # 16-mixed: steps it skips are not counted
        scaler = scaler if isinstance(scaler, torch.amp.GradScaler) else None
        self._losses = []
        self.sched = AutoLRS(pl_module, optimizers, config, val_fn=self._val_fn, scaler=scaler,
                             snapshot_device=self._snapshot_device, **options)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A checkpoint's state is loaded here: after Lightning restored the optimizers (which follows on_fit_start).
        if self._loaded is not None:
            cast(AutoLRS, self.sched).load_state_dict(self._loaded["autolrs"])  # on_fit_start built it
            self._losses = [float(x) for x in self._loaded["losses"]]
            self._loaded = None
        if cast(AutoLRS, self.sched).done:
            trainer.should_stop = True

    # -- every batch ---------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._step_at_start = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        sched = cast(AutoLRS, self.sched)  # on_fit_start built it
        if sched.done:
            return  # the budget is spent (a fit held on by min_epochs/min_steps trains on at the last LR)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            raise ValueError(f"training_step returned no loss at batch {batch_idx}: AutoLRSCallback needs the loss "
                             "of every optimizer step (return it, or a dict with a 'loss' key).")
        # Lightning hands callbacks the loss divided by accumulate_grad_batches (automatic optimization).
        scale = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        self._losses.append(float(loss.detach() if torch.is_tensor(loss) else loss) * scale)
        if trainer.global_step == self._step_at_start:
            return  # a micro-batch: its loss joins the optimizer step's
        lr, phase, stage = sched.get_last_lr()[0], sched.phase, len(sched.history)
        mean, self._losses = sum(self._losses) / len(self._losses), []
        sched.step(mean)
        for name, value in (("lr", lr), ("phase", PHASE_CODES[phase]), ("stage", stage)):
            pl_module.log(f"autolrs/{name}", float(value), on_step=True, on_epoch=False, batch_size=1,
                          prog_bar=self._prog_bar and name != "stage")
        if sched.done:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.sched is not None and not self.sched.done:
            self.sched.finalize()  # a fit that ended before the budget: keep a trained state (it warns which)

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.sched is None:
            return {}
        return {"autolrs": self.sched.state_dict(), "losses": list(self._losses)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict  # applied in on_train_start, once the optimizers are built and restored
