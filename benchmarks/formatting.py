"""Numbers as the report, its reading and the command line's summary print them: one rule for every gap.

A value that is absent (None: a method with no LR, a target never reached) or undefined (NaN: the spread
of seeds of which one diverged) prints as :data:`MISSING`; an infinite one as ``diverged``, because the
harness makes a value infinite in one way only: a diverged run's loss counts as infinite (the task's worst).
"""

from __future__ import annotations

import math

__all__ = ["MISSING", "number", "percent", "final"]

MISSING = "–"


def number(x: float | None, spec: str = ".4g", suffix: str = "") -> str:
    """``x`` formatted by ``spec``, then ``suffix``; a missing or infinite value as its placeholder alone."""
    if x is None or math.isnan(x):
        return MISSING
    if math.isinf(x):
        return "diverged"
    return format(x, spec) + suffix


def percent(fraction: float | None) -> str:
    """A fraction as a whole percentage (``0.25``: ``25%``)."""
    return number(None if fraction is None else 100 * fraction, ".0f", "%")


def final(entry: dict, seeds: int) -> str:
    """A method's final metric over ``seeds`` seeds: ``mean ± std``, the mean alone for one seed or an
    undefined spread."""
    mean, std = entry["final_mean"], entry["final_std"]
    if seeds < 2 or std is None or not math.isfinite(std):
        return number(mean)
    return f"{number(mean)} ± {number(std, '.2g')}"
