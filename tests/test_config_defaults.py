"""Every default lives in AutoLRSConfig alone: the driver, the adapters and the CLI repeat none of them."""

import dataclasses
import importlib
import inspect

import pytest

from autolrs import AutoLRS, AutoLRSConfig

# the options that have a default (min_lr and max_lr have none: every caller chooses its range)
FIELDS = {f.name for f in dataclasses.fields(AutoLRSConfig)
          if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def entry_points():
    yield "AutoLRS", AutoLRS.__init__
    for module in ("autolrs.integrations.lightning", "autolrs.integrations.transformers"):
        try:
            adapter = importlib.import_module(module)
        except ImportError:  # the framework is not installed: nothing to compare
            continue
        for name, obj in vars(adapter).items():
            if inspect.isclass(obj) and obj.__module__ == module and name.startswith("AutoLRS"):
                yield f"{module}.{name}", obj.__init__


@pytest.mark.parametrize("name, function", list(entry_points()))
def test_no_entry_point_repeats_a_config_default(name, function):
    repeated = {p.name: p.default for p in inspect.signature(function).parameters.values()
                if p.name in FIELDS and p.default is not inspect.Parameter.empty and p.default is not None}
    assert not repeated, f"{name} repeats AutoLRSConfig defaults {repeated}; take them from AutoLRSConfig"


def test_the_cli_and_the_demo_repeat_no_config_default():
    from autolrs import cli, demo

    for module in (cli, demo):
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ != module.__name__:
                continue
            params = inspect.signature(function).parameters.values()
            # the demo's seed and budget are its own arguments (they seed the data too)
            repeated = {p.name: p.default for p in params if p.name in FIELDS - {"seed", "total_steps"}
                        and p.default is not inspect.Parameter.empty and p.default is not None}
            assert not repeated, f"{module.__name__}.{name} repeats AutoLRSConfig defaults {repeated}"
