"""The autolrs benchmark harness: autolrs against tuned schedules and LR-free optimizers.

Not part of the package. Every method gets the same optimizer, step budget and seeds; autolrs's search
steps count in its budget; tuned baselines get a log grid of their peak LR, tuned on the reported metric
averaged over seeds. ``python -m benchmarks.run --help`` is the entry point; ``make bench`` and
``make bench-quick`` call it and regenerate ``BENCHMARKS.md`` from ``benchmarks/results/*.json``.
"""
