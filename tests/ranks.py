"""Launching a test's 2 ranks (test_distributed.py, test_fsdp.py): forked from a forkserver, every launch bounded.

The forkserver imports torch and autolrs once (``preload``), so a launch costs a fork, not an interpreter start.
The worker module itself cannot be preloaded: the forkserver of Python < 3.13 ignores sys.path, and tests/ is
not on it.
"""

import multiprocessing
import time
from pathlib import Path
from typing import Callable, Sequence

PRELOAD = ("torch", "torch._dynamo", "threadpoolctl", "autolrs.torch.driver")


def launch_ranks(run: Callable, tmp_path: Path, mode: str, *args, preload: Sequence[str] = PRELOAD,
                 pg_timeout_s: float = 60.0, deadline_s: float = 60.0, wait_for=(0, 1)) -> list:
    """Run ``run(rank, 2, init_method, pg_timeout_s, mode, tmp_path, *args)`` on 2 ranks; returns their exit
    codes (None: still running when the ranks in ``wait_for`` had exited or ``deadline_s`` passed, then killed)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    rendezvous = tmp_path / f"rendezvous_{mode}_{time.monotonic_ns()}"
    ranks = [context.Process(target=run, daemon=True,
                             args=(rank, 2, f"file://{rendezvous}", pg_timeout_s, mode, str(tmp_path), *args))
             for rank in range(2)]
    for process in ranks:
        process.start()
    end = time.monotonic() + deadline_s
    for rank in wait_for:
        ranks[rank].join(max(0.0, end - time.monotonic()))
    codes = [process.exitcode for process in ranks]
    for process in ranks:
        if process.is_alive():
            process.kill()
            process.join()
    return codes
