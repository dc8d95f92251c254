"""autolrs: learning-rate schedules found during training (AutoLRS, ICLR 2021).

``import autolrs`` does not import torch: the framework-free core (configuration, forecasting, search and
the stage controller) can drive any framework. :class:`AutoLRS`, the PyTorch driver, and :class:`ReplayLR`,
the scheduler that replays a found schedule, are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import AutoLRSConfig
from .controller import Decision, StageController
from .forecast import Forecast, forecast_loss
from .loggers import JSONLinesLogger, TensorBoardLogger
from .search import BayesianSearch

__version__ = "0.1.0"
__all__ = ["AutoLRS", "AutoLRSConfig", "BayesianSearch", "Decision", "Forecast", "JSONLinesLogger", "ReplayLR",
           "StageController", "TensorBoardLogger", "forecast_loss", "__version__"]

if TYPE_CHECKING:
    from .replay import ReplayLR
    from .torch.driver import AutoLRS


def __getattr__(name: str) -> type:
    if name == "AutoLRS":
        from .torch.driver import AutoLRS

        return AutoLRS
    if name == "ReplayLR":
        from .replay import ReplayLR

        return ReplayLR
    raise AttributeError(f"module 'autolrs' has no attribute {name!r}")
