"""The validation loss of a step: the user's ``val_fn``, run as autolrs promises to run it.

It runs under ``torch.no_grad()``; it may switch modules to ``eval()``: every module is put back in the
training mode it had before the call, whether ``val_fn`` returns or raises. Its result must be a real
number (or a one-element tensor).
"""

from __future__ import annotations

from typing import Callable

import torch

from .arguments import as_float

__all__ = ["validation_loss"]


def validation_loss(model: torch.nn.Module, val_fn: Callable[[], float]) -> float:
    """``val_fn()`` as a float, run under ``torch.no_grad()`` with ``model``'s training modes put back after."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        with torch.no_grad():
            result = val_fn()
    finally:
        for module, training in modes:
            module.training = training
    try:
        return as_float(result, "val_fn()'s result")
    except (TypeError, ValueError) as error:
        raise type(error)(f"{error} val_fn must return the validation loss as a number.") from None
