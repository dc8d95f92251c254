"""AutoLRS under torch.distributed: 2 ranks of a gloo process group on the CPU (tests/ddp_worker.py).

The ranks are forked from a multiprocessing forkserver that imports torch and autolrs once, so a launch
costs a fork, not an interpreter start; the README's torchrun command runs the example once. Every launch
is bounded: a rank still running at its deadline is killed and its exit code reads None.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("torch.distributed")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402
from ranks import launch_ranks  # noqa: E402

# Checkpoints taken mid-candidate (training-loss stage), mid-candidate in validation mode, mid-keep.
STOPS = (10, 95, 140)
# A single process on the global batch computes the same gradients up to float64 rounding.
LOSS_RTOL = 1e-12


def launch(tmp_path: Path, mode: str, *args, pg_timeout_s: float = 60.0, deadline_s: float = 60.0,
           wait_for=(0, 1)) -> list:
    """Run ``mode`` on 2 ranks of ddp_worker (:func:`ranks.launch_ranks`)."""
    return launch_ranks(ddp_worker.run, tmp_path, mode, *args, pg_timeout_s=pg_timeout_s, deadline_s=deadline_s,
                        wait_for=wait_for)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    assert launch(out, "train", *STOPS, deadline_s=90) == [0, 0]
    runs = {f"{kind}_rank{rank}": torch.load(out / f"train_{kind}_rank{rank}.pt", weights_only=True)
            for kind in ("ddp", "module") for rank in range(2)}
    return out, runs


def lrs(run):
    return [lr for _, lr in run["trace"]]


def test_one_collective_of_72_bytes_per_step(trained):
    _, runs = trained
    for name, run in runs.items():
        assert len(run["collectives"]) == ddp_worker.TOTAL, name
        assert set(run["collectives"]) == {(1, 72)}, name  # one all_reduce of 9 float64 per sched.step()


def test_ranks_end_bit_identical_with_identical_histories(trained):
    _, runs = trained
    reference = runs["ddp_rank0"]
    assert len(reference["history"]) >= 3 and reference["steps_taken"] == ddp_worker.TOTAL
    assert any(stage["objective"] == "val" for stage in reference["history"])  # val_fn averaged too
    assert any(c["diverged"] for stage in reference["history"] for c in stage["candidates"])
    # The model passed wrapped in DDP or as its .module: the same run, bit for bit.
    for name, run in runs.items():
        assert torch.equal(run["params"], reference["params"]), name
        assert run["history"] == reference["history"], name
        assert lrs(run) == lrs(reference), name
    # the ranks trained on different halves of each batch, so their local losses differ
    assert [loss for loss, _ in runs["ddp_rank1"]["trace"]] != [loss for loss, _ in reference["trace"]]


def test_ddp_matches_a_single_process_on_the_global_batch(trained):
    _, runs = trained
    ddp = runs["ddp_rank0"]
    net, _, sched, _, step = ddp_worker.build()
    trace = []
    while not sched.done:
        trace.append(step())
    assert [lr for _, lr in trace] == lrs(ddp)  # the same LR at every step: same candidates, same choices
    single_params = torch.cat([p.detach().flatten() for p in net.parameters()])
    torch.testing.assert_close(single_params, ddp["params"], rtol=LOSS_RTOL, atol=1e-13)
    assert len(sched.history) == len(ddp["history"])
    for ours, theirs in zip(sched.history, ddp["history"]):
        assert ours["lr"] == theirs["lr"] and ours["objective"] == theirs["objective"]
        assert [c["lr"] for c in ours["candidates"]] == [c["lr"] for c in theirs["candidates"]]
        assert [c["diverged"] for c in ours["candidates"]] == [c["diverged"] for c in theirs["candidates"]]
        for a, b in zip(ours["candidates"], theirs["candidates"]):
            for key in ("losses", "val_losses"):
                assert [x is None for x in a[key]] == [x is None for x in b[key]]  # diverged at the same step
                finite = [x for x in a[key] if x is not None]
                assert finite == pytest.approx([x for x in b[key] if x is not None], rel=LOSS_RTOL)


def test_resume_from_rank_0s_checkpoint_continues_identically(trained):
    out, runs = trained
    assert launch(out, "resume", *STOPS, deadline_s=90) == [0, 0]
    full = runs["ddp_rank0"]
    phases = [torch.load(out / f"ckpt_{stop}.pt", weights_only=True)["sched"]["controller"] for stop in STOPS]
    assert [(c["phase"], c["record"]["objective"]) for c in phases] == [
        ("explore", "train"), ("explore", "val"), ("keep", "val")]  # the points STOPS means to cover
    for stop in STOPS:
        for rank in range(2):
            resumed = torch.load(out / f"resume_{stop}_rank{rank}.pt", weights_only=True)
            uninterrupted = runs[f"ddp_rank{rank}"]
            assert resumed["trace"] == uninterrupted["trace"][stop:], (stop, rank)
            assert resumed["history"] == full["history"], (stop, rank)
            assert torch.equal(resumed["params"], full["params"]), (stop, rank)


def failure(tmp_path, scenario, pg_timeout_s=30.0, wait_for=(0, 1)):
    started = time.monotonic()
    codes = launch(tmp_path, "fail", scenario, pg_timeout_s=pg_timeout_s, deadline_s=pg_timeout_s + 30,
                   wait_for=wait_for)
    elapsed = time.monotonic() - started
    reports = [json.loads(p.read_text()) if p.exists() else None
               for p in (tmp_path / f"fail_rank{rank}.json" for rank in range(2))]
    return codes, reports, elapsed


def test_other_options_on_one_rank_fail_every_rank_at_construction(tmp_path):
    codes, reports, _ = failure(tmp_path, "options")
    assert codes[0] != 0 and codes[1] != 0
    for report in reports:
        assert report["type"] == "ValueError" and "different options" in report["message"]


def test_ranks_at_different_steps_fail_every_rank(tmp_path):
    codes, reports, _ = failure(tmp_path, "out_of_step")
    assert codes[0] != 0 and codes[1] != 0
    for report in reports:
        assert report["type"] == "RuntimeError" and "out of step" in report["message"]


def test_a_replica_that_decides_otherwise_raises_and_the_others_fail(tmp_path):
    codes, reports, elapsed = failure(tmp_path, "desync")
    assert codes[0] not in (0, None) and codes[1] not in (0, None)
    for report in reports:  # every rank sees the fingerprints differ in the same all_reduce
        assert report["type"] == "RuntimeError" and "desynchronised" in report["message"]
    assert elapsed < 25


@pytest.mark.parametrize("scenario", ["loop_raises", "val_raises"])
def test_a_rank_that_raises_fails_the_others_at_once(tmp_path, scenario):
    codes, reports, elapsed = failure(tmp_path, scenario)
    assert codes[0] not in (0, None) and codes[1] not in (0, None)
    assert reports[1]["type"] in ("KeyError", "MemoryError")
    assert reports[0]["type"] == "RuntimeError"
    if scenario == "val_raises":  # rank 0 waited in autolrs's all_reduce: autolrs says what happened
        assert "another rank raised an exception, died" in reports[0]["message"]
    assert elapsed < 25  # gloo sees the closed connection; the 30 s timeout is not needed


def test_a_rank_that_stalls_fails_the_others_after_the_timeout(tmp_path):
    codes, reports, elapsed = failure(tmp_path, "stall", pg_timeout_s=4.0, wait_for=(0,))
    assert codes[0] not in (0, None) and codes[1] is None  # rank 1 hung until killed
    assert reports[0]["type"] == "RuntimeError" and "stopped calling sched.step()" in reports[0]["message"]
    assert "Timed out" in reports[0]["cause"]
    assert 3.5 <= reports[0]["seconds"] < 20


def test_fsdp1_and_schedulers_built_before_the_group_are_refused_and_fully_shard_is_taken(tmp_path):
    assert launch(tmp_path, "refused") == [0, 0]
    for rank in range(2):
        errors = json.loads((tmp_path / f"refused_rank{rank}.json").read_text())
        assert set(errors) == {"FullyShardedDataParallel", "fully_shard", "built before init_process_group"}
        assert "does not support FullyShardedDataParallel (FSDP1)" in errors["FullyShardedDataParallel"]
        assert errors["fully_shard"] is None  # FSDP2: tests/test_fsdp.py
        assert "build it after" in errors["built before init_process_group"]


def test_the_readme_torchrun_command_runs_the_example(tmp_path):
    pytest.importorskip("mnist1d")
    example = Path(__file__).parents[1] / "examples" / "ddp_train.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(example),
               "--steps", "300", "--checkpoint", str(tmp_path / "run.pt"), "--checkpoint-every", "100"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 ranks, 300 steps" in done.stdout
    state = torch.load(tmp_path / "run.pt", weights_only=True)
    assert state["autolrs"]["controller"]["steps_taken"] == 300
