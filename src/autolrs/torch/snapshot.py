"""In-memory snapshot and bit-exact restore of a model and its optimizer.

A stage snapshot S0 is taken once per stage and restored before every candidate after the first and
before the kept phase (ALGORITHM.md). It holds one copy of every parameter and buffer and of the
optimizer state, on the device asked for ("cpu" frees accelerator memory; "model" keeps each tensor on
its own device, which makes restores cheaper on a GPU). Storage is allocated once and reused, and restore
copies in place, so the optimizer keeps pointing at the same parameter objects.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

__all__ = ["Snapshot"]


def _storage_like(t: torch.Tensor, device: str | torch.device, home: torch.device | str | None = None) -> torch.Tensor:
    """Empty storage for a copy of ``t``; ``home`` is the device ``t`` lives on in training."""
    home = torch.device(home) if home is not None else t.device
    target = home if device == "model" else torch.device(device)
    pin = target.type == "cpu" and home.type == "cuda"  # pinned host memory makes GPU copies faster
    return torch.empty(t.shape, dtype=t.dtype, device=target, pin_memory=pin)


class Snapshot:
    """A reusable in-memory copy of ``model`` and ``optimizer`` state.

    Args:
        model: the ``torch.nn.Module`` being trained.
        optimizer: its ``torch.optim.Optimizer``.
        device: where the copy lives: ``"cpu"`` (default), ``"model"`` (each tensor's own device), or any
            ``torch.device``.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: str | torch.device = "cpu"):
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self._tensors: dict[str, torch.Tensor] = {}       # model parameters and buffers, by name
        self._optim: dict[int, dict[str, Any]] = {}       # optimizer state, by parameter index
        self._optim_devices: dict[int, dict[str, str]] = {}
        self._groups: list[dict[str, Any]] = []
        self.taken = False

    # -- what is copied ----------------------------------------------------------------------------
    def _model_tensors(self) -> dict[str, torch.Tensor]:
        named = dict(self.model.named_parameters())
        for name, buffer in self.model.named_buffers():
            named[name] = buffer
        return named

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    # -- take / restore ----------------------------------------------------------------------------
    @torch.no_grad()
    def take(self) -> None:
        """Copy the current model and optimizer state into the snapshot."""
        for name, t in self._model_tensors().items():
            store = self._tensors.get(name)
            if store is None or store.shape != t.shape or store.dtype != t.dtype:
                store = self._tensors[name] = _storage_like(t, self.device)
            store.copy_(t.detach())
        optim, devices = {}, {}
        for i, p in enumerate(self._params()):
            state = self.optimizer.state.get(p)
            if not state:
                continue
            previous = self._optim.get(i, {})
            entry, where = {}, {}
            for key, value in state.items():
                if torch.is_tensor(value):
                    store = previous.get(key)
                    if not torch.is_tensor(store) or store.shape != value.shape or store.dtype != value.dtype:
                        store = _storage_like(value, self.device)
                    store.copy_(value.detach())
                    entry[key], where[key] = store, str(value.device)
                else:
                    entry[key] = copy.deepcopy(value)
            optim[i], devices[i] = entry, where
        self._optim, self._optim_devices = optim, devices
        self._groups = [
            {k: copy.deepcopy(v) for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups
        ]
        self.taken = True

    @torch.no_grad()
    def restore(self) -> None:
        """Put the model and optimizer back exactly as they were at :meth:`take` (bit-identical)."""
        if not self.taken:
            raise ValueError("restore() needs a snapshot; take() was never called.")
        tensors = self._model_tensors()
        missing = set(self._tensors) ^ set(tensors)
        if missing:
            raise ValueError(f"The model's tensors changed since the snapshot (names {sorted(missing)[:5]}).")
        for name, t in tensors.items():
            t.copy_(self._tensors[name])
        params = self._params()
        for i, p in enumerate(params):
            saved = self._optim.get(i)
            if saved is None:
                self.optimizer.state.pop(p, None)  # state created after the snapshot (lazy init) goes away
                continue
            live = self.optimizer.state[p]
            for key in list(live):
                if key not in saved:
                    del live[key]
            for key, value in saved.items():
                if torch.is_tensor(value):
                    current = live.get(key)
                    if torch.is_tensor(current) and current.shape == value.shape and current.dtype == value.dtype:
                        current.copy_(value)
                    else:
                        live[key] = value.to(self._optim_devices[i][key], copy=True)
                else:
                    live[key] = copy.deepcopy(value)
        for group, saved in zip(self.optimizer.param_groups, self._groups):
            for key, value in saved.items():
                group[key] = copy.deepcopy(value)

    @property
    def nbytes(self) -> int:
        """Memory held by the snapshot, in bytes."""
        total = sum(t.numel() * t.element_size() for t in self._tensors.values())
        for entry in self._optim.values():
            total += sum(v.numel() * v.element_size() for v in entry.values() if torch.is_tensor(v))
        return total

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict | None:
        """Plain data (tensors, numbers, strings), loadable with ``torch.load(weights_only=True)``."""
        if not self.taken:
            return None
        return {
            "model": dict(self._tensors),
            "optimizer": {i: dict(entry) for i, entry in self._optim.items()},
            "optimizer_devices": {i: dict(d) for i, d in self._optim_devices.items()},
            "param_groups": copy.deepcopy(self._groups),
        }

    def check_state_dict(self, state: dict | None) -> None:
        """Raise if ``state`` does not fit this model and optimizer (changes nothing)."""
        if state is None:
            return
        if not isinstance(state, dict) or not {"model", "optimizer", "optimizer_devices", "param_groups"} <= set(state):
            raise ValueError("The saved snapshot is not a Snapshot.state_dict().")
        live = self._model_tensors()
        if set(state["model"]) != set(live):
            raise ValueError(
                "The saved snapshot does not match this model's parameters and buffers (names differ); load it "
                "into the same architecture that saved it."
            )
        wrong = [n for n, t in state["model"].items() if tuple(t.shape) != tuple(live[n].shape)]
        if wrong:
            raise ValueError(
                f"The saved snapshot's tensors {wrong[:3]} have other shapes than this model's; load it into the "
                "same architecture that saved it."
            )
        if any(int(i) >= len(self._params()) for i in state["optimizer"]):
            raise ValueError("The saved snapshot has optimizer state for more parameters than this optimizer holds.")
        if len(state["param_groups"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"The saved snapshot has {len(state['param_groups'])} optimizer param groups; this optimizer has "
                f"{len(self.optimizer.param_groups)}."
            )

    def load_state_dict(self, state: dict | None) -> None:
        self.check_state_dict(state)
        if state is None:
            self.taken = False
            self._tensors, self._optim, self._optim_devices, self._groups = {}, {}, {}, []
            return
        live = self._model_tensors()
        self._tensors = {}
        for name, t in state["model"].items():
            self._tensors[name] = _storage_like(live[name], self.device)
            self._tensors[name].copy_(t)
        self._optim = {}
        self._optim_devices = {int(i): dict(d) for i, d in state["optimizer_devices"].items()}
        for i, entry in state["optimizer"].items():
            i = int(i)
            stored = {}
            for key, value in entry.items():
                if torch.is_tensor(value):
                    stored[key] = _storage_like(value, self.device, home=self._optim_devices[i][key])
                    stored[key].copy_(value)
                else:
                    stored[key] = copy.deepcopy(value)
            self._optim[i] = stored
        self._groups = copy.deepcopy(state["param_groups"])
        self.taken = True
