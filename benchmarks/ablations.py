"""The ablation: the paper's algorithm, and each change of autolrs's default turned back one at a time.

Which variants the bench runs is not how any run trains, so this list lives outside the code the run cache
hashes as training code (``benchmarks.cache.TRAINING_CODE``): a new row runs that row, not every baseline
again. A variant's options are part of its runs' cache key (``Method.options``), so changing a row's options
re-runs that row.
"""

from __future__ import annotations

__all__ = ["ABLATIONS", "DEFAULT_ABLATIONS"]

# label: (options of AutoLRS, what the variant is). Every row is run against the default on the same seeds.
ABLATIONS: dict[str, tuple[dict, str]] = {
    "autolrs-paper": ({"preset": "paper"}, "the paper's algorithm: preset='paper' (search = kept steps, k = 10, "
                      "kappa 1e6, argmin of forecasts, whole range, no decay)"),
    "autolrs-no-decay": ({"decay_fraction": 0.0}, "no final decay phase (decay_fraction=0)"),
    "autolrs-proportional": ({"search_ratio": 1.0}, "the paper's proportional windows: the search costs as many "
                             "steps as the kept stages (search_ratio=1)"),
    "autolrs-whole-range": ({"trust_region": None}, "every stage searches the whole range (trust_region=None)"),
    "autolrs-tolerance": ({"tolerance": 0.1}, "the largest LR within 10% of the best (tolerance=0.1)"),
    "autolrs-extrapolation3": ({"max_extrapolation": 3.0}, "the previous forecast bound (max_extrapolation=3)"),
    "autolrs-val": ({"val_fn": True}, "the validation objective in stages of tau_max (val_fn)"),
    "autolrs-no-hold": ({"hold_sigmas": 0.0}, "no hold: every stage moves to its best-scored LR (hold_sigmas=0)"),
    "autolrs-exact-gp": ({"forecast_noise": 0.0}, "the GP may fit forecasts exactly: no assumed forecast error "
                         "(forecast_noise=0)"),
    "autolrs-first-posterior": ({"first_tolerance": 0.0}, "the first stage keeps the posterior's choice, not the "
                                "smallest LR within 10% of the best forecast (first_tolerance=0)"),
}

# The ablations of the default mode (``make bench``) on a task that cannot afford them all (absent: all);
# ``make bench BENCH_FULL=1`` runs every one everywhere.
DEFAULT_ABLATIONS: dict[str, tuple[str, ...]] = {
    # The Transformer (~140 s per run on one core): the variants that change the most there: the paper, no
    # decay, validation, the GP without an assumed forecast error (its 10-step windows are where exact
    # interpolation misled the hold), and the first-stage rule (measured on this task's first-stage plateau).
    "shakespeare-char": ("autolrs-paper", "autolrs-no-decay", "autolrs-val", "autolrs-exact-gp",
                         "autolrs-first-posterior"),
}
