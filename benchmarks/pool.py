"""Runs many independent benchmark runs: cached ones are read back, the rest go to worker processes.

Threads are set deliberately. On this 2-core machine two 1-thread workers beat one 2-thread process for
every task (measured: MNIST-1D's CNN is too small to split; the Transformer takes 64 ms per step with 1
thread and 37 with 2, so two workers finish 1.7x more runs), and multi-threaded BLAS is a trap under
contention: with another process on a core, a 2-thread Transformer step took ~1 s instead of 37 ms, and
scikit-learn's GP fit inside autolrs took 60-230 ms instead of 14. So every worker pins torch, OpenMP and
BLAS to ``threads`` (1) before it imports numpy or torch.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import lru_cache

from .cache import RunCache, code_fingerprint, run_key
from .methods import AUTOLRS_FAMILIES, Method
from .tasks.base import TaskSpec

__all__ = ["Job", "run_jobs", "pin_threads"]

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Job:
    """One run to train. ``code``: the fingerprint its key was made with, taken where the job is built (the
    bench's process) and carried to the worker, which checks it against the code it imported."""

    task: TaskSpec
    method: Method
    lr: float | None
    seed: int
    code: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.code:
            object.__setattr__(self, "code", code_fingerprint(self.method.family in AUTOLRS_FAMILIES))

    @property
    def key(self) -> str:
        return run_key(self.task, self.method, self.lr, self.seed)

    def describe(self) -> str:
        lr = "" if self.lr is None else f" lr={self.lr:g}"
        return f"{self.task.name} {self.method.label}{lr} seed={self.seed}"


def pin_threads(threads: int) -> None:
    """Limit torch, OpenMP and BLAS to ``threads`` in this process (environment for later imports too)."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = str(threads)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def _init_worker(threads: int) -> None:
    pin_threads(threads)


@lru_cache(maxsize=None)
def _imported_code(autolrs: bool) -> str:
    """The code fingerprint as this process found it on disk when it first trained a run: just after it
    imported the harness and autolrs, so the code it runs (Python never re-reads a module it has loaded)."""
    return code_fingerprint.__wrapped__(autolrs)


def _execute(job: Job) -> dict:
    """Train one run (in a worker); autolrs's warnings are kept in the record instead of printed.

    A run is keyed by the code the bench fingerprinted at its start (``job.code``), but a worker imports the
    code it runs when it starts its first run, possibly later: a source edited in between (even reverted by
    the bench's end, which the end-of-bench check cannot see) would be cached under the wrong key. Such a run
    fails. (The worker's own ``code_fingerprint`` would not do: its cache starts empty in a spawned process.)
    """
    from .train import train_run

    if _imported_code(job.method.family in AUTOLRS_FAMILIES) != job.code:
        raise RuntimeError(
            f"{job.describe()}: the training code (or autolrs's source) on disk when this process imported it "
            "differs from the code the bench fingerprinted at its start; its result would be cached under the "
            "wrong code. Leave src/autolrs and the harness unchanged while a bench runs, then run it again.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = train_run(job.task, job.method, job.lr, job.seed)
    record["warnings"] = sorted({str(w.message) for w in caught if "autolrs" in str(w.message)})
    return record


def _log(done: int, total: int, job: Job, record: dict | None, error: str | None = None) -> None:
    if error:
        sys.stderr.write(f"[{done}/{total}] {job.describe()}: FAILED\n{error}\n")
    else:
        value = record["final"][job.task.metric]
        tag = " (diverged)" if record["diverged"] else ""
        sys.stderr.write(f"[{done}/{total}] {job.describe()}: {job.task.metric} {value:.4g}{tag} "
                         f"({record['wall_s']:.1f} s)\n")
    sys.stderr.flush()


def run_jobs(jobs: list[Job], cache: RunCache, workers: int, threads: int,
             stats: dict | None = None) -> dict[str, dict]:
    """Records of ``jobs`` by key. Cached records are reused; identical jobs run once.

    ``workers <= 1`` runs in this process (after pinning its threads). A run that raises is reported on
    stderr, left out of the result and not cached, so that the next bench tries it again. ``stats``, when
    given, counts the runs read from the cache (``cached``) and those trained now (``trained``).
    """
    results: dict[str, dict] = {}
    pending: dict[str, Job] = {}
    for job in jobs:
        key = job.key
        if key in results or key in pending:
            continue
        cached = cache.get(job.task.name, key)
        if cached is not None:
            results[key] = cached
        else:
            pending[key] = job
    if stats is not None:
        stats["cached"] = stats.get("cached", 0) + len(results)
        stats["trained"] = stats.get("trained", 0) + len(pending)
    # Longest first: replays (an autolrs run, then the replay), autolrs runs, then the rest, keeps both
    # workers busy to the end.
    longest = {"autolrs-replay": 0, "autolrs": 1}
    order = sorted(pending.items(), key=lambda item: longest.get(item[1].method.family, 2))
    for done, (key, job, (record, error)) in enumerate(_outcomes(order, workers, threads), start=1):
        _log(done, len(order), job, record, error)
        if record is not None:
            cache.put(job.task.name, key, record)
            results[key] = record
    return results


def _attempt(call) -> tuple[dict | None, str | None]:
    """``(record, None)``, or ``(None, traceback)`` for a run that raised: reported, the bench goes on."""
    try:
        return call(), None
    except Exception:  # noqa: BLE001
        return None, traceback.format_exc()


def _outcomes(order: list[tuple[str, Job]], workers: int, threads: int):
    """``(key, job, (record, error))`` as the runs finish, in this process or in spawned workers."""
    if not order:
        return
    if workers <= 1:
        pin_threads(threads)
        for key, job in order:
            yield key, job, _attempt(lambda: _execute(job))
        return
    for name in _THREAD_VARIABLES:  # inherited by the spawned workers before they import numpy
        os.environ[name] = str(threads)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(_execute, job): (key, job) for key, job in order}
        remaining = set(futures)
        while remaining:
            finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for future in finished:
                key, job = futures[future]
                yield key, job, _attempt(future.result)
