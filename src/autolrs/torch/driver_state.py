"""The form of :meth:`AutoLRS.state_dict <autolrs.torch.driver.AutoLRS.state_dict>`: its version and its checks.

A state is plain data (``torch.load(..., weights_only=True)`` loads it): the controller's state, the stage
snapshot's (:class:`~autolrs.torch.snapshot.Snapshot`), the param groups' LR ratios and the step counting's
pending losses and skipped steps. :func:`check_state` checks all of it before anything changes, so that a state
from another configuration, version, model or optimizer raises and leaves the scheduler as it was.
"""

from __future__ import annotations

import math
from typing import Any

from ..controller import StageController
from .snapshot import Snapshot

__all__ = ["DRIVER_STATE_VERSION", "check_state"]

DRIVER_STATE_VERSION = 2  # 2: several optimizers, extra params and a GradScaler in the snapshot


def check_state(state: Any, groups: int, controller: StageController, snapshot: Snapshot) -> None:
    """Raise unless ``state`` is an AutoLRS state for ``groups`` param groups, this controller and this snapshot."""
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
    if not isinstance(ratios, list) or len(ratios) != groups:
        raise ValueError(
            f"This state was saved for {len(ratios) if isinstance(ratios, list) else ratios!r} param groups, but "
            f"the optimizers have {groups}."
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
    controller.check_state_dict(state["controller"])
    if state["snapshot"] is None and state["controller"]["phase"] not in ("warmup", "done"):
        raise ValueError(
            f"This AutoLRS state has no snapshot but is in the {state['controller']['phase']!r} phase, which "
            "restores one: the state is corrupt."
        )
    snapshot.check_state_dict(state["snapshot"])
