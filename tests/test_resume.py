"""Resume anywhere: a run stopped at any step and restored in a fresh process continues bit-identically."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("resume_worker.py")


def interruption_points(history, total, warmup, count=22):
    """Steps after which to stop: warmup, every stage's boundaries, candidates, kept phases, the end.

    Of all such points, ``count`` evenly spread ones are kept, plus every step inside a diverged candidate.
    """
    points, diverged = {1, warmup // 2, warmup, total - 2, total - 1}, set()
    for stage in history:
        start = stage["start_step"]
        points |= {start, start + 1}
        step = start
        for c in stage["candidates"]:
            points |= {step + 1, step + c["steps"] // 2, step + c["steps"] - 1, step + c["steps"]}
            if c["diverged"]:
                diverged |= set(range(step + 1, step + c["steps"] + 1))
            step += c["steps"]
        keep = stage["keep_start_step"]
        if keep is not None:
            points |= {keep + 1, keep + stage["kept_steps"] // 2, keep + stage["kept_steps"] - 1}
    points = sorted(p for p in points if 0 < p < total)
    spread = {points[round(i * (len(points) - 1) / (count - 1))] for i in range(count)}
    return sorted(spread | {p for p in diverged if p < total})


def run(*args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    subprocess.run([sys.executable, str(WORKER), *map(str, args)], check=True, env=env, cwd=WORKER.parent,
                   timeout=300)


def test_resume_in_a_fresh_process_at_every_kind_of_step(tmp_path):
    sys.path.insert(0, str(WORKER.parent))
    import resume_worker

    # plan the interruption points from the same (deterministic) run, in this process
    model, optimizer, sched, data, step = resume_worker.build()
    while not sched.done:
        step()
    points = interruption_points(sched.history, resume_worker.TOTAL, resume_worker.OPTIONS["warmup_steps"])
    assert len(points) >= 20
    assert any(c["diverged"] for s in sched.history for c in s["candidates"])  # a diverged candidate is covered
    assert any(s["objective"] == "val" for s in sched.history)  # and validation mode

    run("full", tmp_path, *points)
    full = json.loads((tmp_path / "full.json").read_text())

    def resume(point):
        out = tmp_path / f"resumed_{point}.json"
        run("resume", tmp_path / f"ckpt_{point}.pt", out)
        return point, json.loads(out.read_text())

    with ThreadPoolExecutor(max_workers=2) as pool:
        for point, resumed in pool.map(resume, points):
            assert resumed["trace"] == full["trace"][point:], f"continuation differs after step {point}"
            assert resumed["history"] == full["history"], f"history differs after step {point}"
