"""The PyTorch driver of autolrs: carries out the framework-free controller's decisions."""

from .driver import AutoLRS
from .snapshot import Snapshot

__all__ = ["AutoLRS", "Snapshot"]
