"""Checks of what a user hands to :class:`~autolrs.AutoLRS`: the loss, the options, the optimizers, the keywords.

Each bad value fails at once with a ``TypeError``/``ValueError`` that names it and says what to pass.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable

import torch

from ..config import AutoLRSConfig
from .callbacks import Callbacks

__all__ = ["as_float", "check_keywords", "make_config", "optimizers_of"]


def as_float(value: object, what: str) -> float:
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


def make_config(config: AutoLRSConfig | None, options: dict[str, Any], *, use_validation: bool) -> AutoLRSConfig:
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


def optimizers_of(optimizer: Any) -> list[torch.optim.Optimizer]:  # checked here, whatever it is
    """The run's optimizers: one ``torch.optim.Optimizer`` or a non-empty list or tuple of them."""
    many = isinstance(optimizer, (list, tuple))
    optimizers = list(optimizer) if many else [optimizer]
    if not optimizers:
        raise ValueError("optimizer is an empty list; pass the optimizer, or a list of every optimizer of the model.")
    for k, opt in enumerate(optimizers):
        if not isinstance(opt, torch.optim.Optimizer):
            what = f"optimizer[{k}]" if many else "optimizer"
            raise TypeError(
                f"{what} must be a torch.optim.Optimizer, but got {type(opt).__name__}; pass the optimizer itself "
                "(or a list of optimizers), not a scheduler."
            )
    if len({id(opt) for opt in optimizers}) != len(optimizers):
        raise ValueError("The same optimizer appears twice in the optimizer list.")
    return optimizers


def check_keywords(val_fn: Callable[[], float] | None, scaler: object, callbacks: object,
                   snapshot_device: str | torch.device) -> Callbacks:
    """Check AutoLRS's ``val_fn``, ``scaler``, ``callbacks`` and ``snapshot_device``; returns the run's callbacks."""
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
    return callbacks
