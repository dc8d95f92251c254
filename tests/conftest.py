import os
import sys
import warnings

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/nqm.py and helpers
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))  # benchmarks/: the harness is not installed

try:
    import torch

    torch.set_num_threads(1)  # small models: threads only add noise and contention on 2 cores
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(autouse=True)
def _quiet_retries():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
