"""AutoLRS under FSDP2 (``fully_shard``): 2 ranks of a gloo process group on the CPU (tests/fsdp_worker.py).

Launched as test_distributed.py's ranks are (a forkserver, every launch bounded). The task is ddp_worker's,
its MLP sharded layer by layer, so the FSDP2 run can be compared with one process on the global batch.
"""

import importlib.util
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
pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 (fully_shard) is not available")
if not hasattr(torch.distributed.fsdp, "fully_shard"):
    pytest.skip("this torch has no torch.distributed.fsdp.fully_shard (FSDP2)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402
import fsdp_worker  # noqa: E402
from ranks import PRELOAD, launch_ranks  # noqa: E402

# Checkpoints taken mid-candidate (training-loss stage), mid-candidate in validation mode, mid-keep.
STOPS = (10, 95, 140)


def launch(tmp_path: Path, mode: str, *args, pg_timeout_s: float = 60.0, deadline_s: float = 60.0) -> list:
    """Run ``mode`` on 2 ranks of fsdp_worker (:func:`ranks.launch_ranks`), FSDP2 preloaded too."""
    return launch_ranks(fsdp_worker.run, tmp_path, mode, *args, pg_timeout_s=pg_timeout_s, deadline_s=deadline_s,
                        preload=PRELOAD + ("torch.distributed.fsdp", "torch.distributed.tensor"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    assert launch(out, "train", *STOPS, deadline_s=120) == [0, 0]
    runs = [torch.load(out / f"train_rank{rank}.pt", weights_only=True) for rank in range(2)]
    return out, runs


def lrs(run):
    return [lr for _, lr in run["trace"]]


def test_fsdp2_lr_sequence_equals_a_single_process_on_the_global_batch(trained):
    _, runs = trained
    fsdp = runs[0]
    assert fsdp["steps_taken"] == ddp_worker.TOTAL and len(fsdp["history"]) >= 3
    assert any(stage["objective"] == "val" for stage in fsdp["history"])  # val_fn ran sharded, averaged
    assert any(c["diverged"] for stage in fsdp["history"] for c in stage["candidates"])  # restores happened
    # the ranks agree: one history, one LR sequence, the same gathered parameters; their shards differ
    assert runs[1]["history"] == fsdp["history"] and lrs(runs[1]) == lrs(fsdp)
    assert runs[0]["kept_state_dict_ok"] and runs[1]["kept_state_dict_ok"]  # mid-search: the snapshot's shards
    assert torch.equal(runs[1]["params"], fsdp["params"])
    assert runs[0]["shards"].numel() + runs[1]["shards"].numel() == fsdp["params"].numel()
    assert torch.equal(torch.cat([runs[0]["shards"], runs[1]["shards"]]).sort().values, fsdp["params"].sort().values)

    net, _, sched, _, step = fsdp_worker.build(sharded=False)
    trace = []
    while not sched.done:
        trace.append(step())
    assert [lr for _, lr in trace] == lrs(fsdp)  # the same LR at every step: same candidates, same choices
    assert [(s["lr"], [c["lr"] for c in s["candidates"]], [c["diverged"] for c in s["candidates"]])
            for s in sched.history] == [(s["lr"], [c["lr"] for c in s["candidates"]],
                                         [c["diverged"] for c in s["candidates"]]) for s in fsdp["history"]]
    single = torch.cat([p.detach().flatten() for p in net.parameters()])
    torch.testing.assert_close(single, fsdp["params"], rtol=1e-10, atol=1e-12)


def test_snapshot_restores_each_shard_bit_exact_and_holds_half_the_memory(tmp_path):
    assert launch(tmp_path, "restore") == [0, 0]
    reports = [json.loads((tmp_path / f"restore_rank{rank}.json").read_text()) for rank in range(2)]
    for rank, report in enumerate(reports):
        failed = [name for name, ok in report["checks"].items() if not ok]
        assert not failed and len(report["checks"]) == 2 * 11 + 1, (rank, failed)
    sizes = [report["sizes"] for report in reports]
    ddp, fsdp = [s["example_ddp"] for s in sizes], [s["example_fsdp2"] for s in sizes]
    assert ddp[0] == ddp[1] == 3 * 78_858 * 4 + 6 * 4  # float32 parameters, AdamW's two moments, 6 step counters
    assert fsdp[0] + fsdp[1] == ddp[0] + 6 * 4  # each rank holds its shards (the step counters on both)
    assert max(fsdp) <= 0.51 * ddp[0]
    print(f"snapshot per rank, the example's MLP and AdamW: DDP {ddp[0]} bytes, FSDP2 {fsdp} bytes")


def test_resume_mid_search_from_each_ranks_own_file_continues_identically(trained):
    out, runs = trained
    assert launch(out, "resume", *STOPS, deadline_s=120) == [0, 0]
    phases = []
    for stop in STOPS:
        states = [torch.load(out / f"ckpt_{stop}_rank{rank}.pt", weights_only=True)["sched"] for rank in range(2)]
        assert states[0]["controller"] == states[1]["controller"]  # the controller's state: the same on every rank
        assert [s["snapshot"]["sharding"]["rank"] for s in states] == [0, 1]  # the snapshot: each rank's shard
        phases.append((states[0]["controller"]["phase"], states[0]["controller"]["record"]["objective"]))
        for rank in range(2):
            resumed = torch.load(out / f"resume_{stop}_rank{rank}.pt", weights_only=True)
            assert resumed["trace"] == runs[rank]["trace"][stop:], (stop, rank)
            assert resumed["history"] == runs[rank]["history"], (stop, rank)
            assert torch.equal(resumed["shards"], runs[rank]["shards"]), (stop, rank)
    assert phases == [("explore", "train"), ("explore", "val"), ("keep", "val")]  # the points STOPS covers


@pytest.mark.parametrize("scenario", ["loop_raises", "val_raises", "sched_raises"])
def test_a_rank_that_raises_fails_the_job_without_a_hang(tmp_path, scenario):
    started = time.monotonic()
    codes = launch(tmp_path, "fail", scenario, pg_timeout_s=30.0, deadline_s=60.0)
    elapsed = time.monotonic() - started
    reports = [json.loads((tmp_path / f"fail_rank{rank}.json").read_text()) for rank in range(2)]
    assert codes[0] not in (0, None) and codes[1] not in (0, None)
    assert reports[1]["type"] == ("MemoryError" if scenario == "val_raises" else "KeyError")
    assert reports[0]["type"] == "RuntimeError"  # rank 0, blocked in a collective, is told at once
    if scenario == "sched_raises":  # rank 0 waited in autolrs's all_reduce: autolrs says what happened
        assert "another rank raised an exception, died" in reports[0]["message"]
    assert elapsed < 25  # gloo sees the closed connection; the 30 s timeout is not needed


def test_hsdp_and_fsdp1_are_refused_with_a_clear_message(tmp_path):
    assert launch(tmp_path, "refused") == [0, 0]
    for rank in range(2):
        errors = json.loads((tmp_path / f"refused_rank{rank}.json").read_text())
        assert set(errors) - {"Lightning"} == {"HSDP", "FSDP1"}
        if "Lightning" in errors or importlib.util.find_spec("lightning"):  # an optional extra
            assert "not sharded ones" in errors["Lightning"] and "examples/fsdp_train.py" in errors["Lightning"]
        assert "does not support HSDP" in errors["HSDP"] and "2-D mesh" in errors["HSDP"]
        assert "FullyShardedDataParallel (FSDP1)" in errors["FSDP1"] and "fully_shard" in errors["FSDP1"]


@pytest.mark.slow
def test_the_readme_torchrun_command_runs_the_fsdp_example_and_resumes(tmp_path):
    pytest.importorskip("mnist1d")
    example = Path(__file__).parents[1] / "examples" / "fsdp_train.py"
    for extra in (["--stop-after", "100"], ["--resume", str(tmp_path / "run")]):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(example),
                   "--steps", "300", "--checkpoint", str(tmp_path / "run"), "--checkpoint-every", "100", *extra]
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))
        assert done.returncode == 0, done.stderr[-3000:]
        assert "2 ranks (FSDP2)" in done.stdout
    states = [torch.load(tmp_path / f"run.rank{rank}.pt", weights_only=True)["autolrs"] for rank in range(2)]
    assert states[0]["controller"] == states[1]["controller"]
    assert states[0]["controller"]["steps_taken"] == 300
