"""The benchmark harness end to end: the quick path of the NQM task on a tiny budget, and its JSON schema.

The NQM is the only task whose runs take milliseconds, so a whole bench of it (grids with edge extension,
autolrs and its ablation, Prodigy, Schedule-Free, the optimal schedule, the report and its plots) fits in
a few seconds. It goes through the same command as ``make bench-quick``, in this process, without the
cache. Prodigy and Schedule-Free come with the ``bench`` extra; without them only the experiment path
(the schedules and autolrs, same schema) runs.
"""

import importlib.util
import json
import math

from pathlib import Path

import numpy as np
import pytest

from benchmarks import run
from benchmarks.ablations import ABLATIONS
from benchmarks.methods.schedules import SCHEDULES
from benchmarks.schema import validate

BUDGET = 200  # autolrs's smallest budget with its 10 candidates is 110 steps
BENCH_EXTRA = all(importlib.util.find_spec(m) for m in ("prodigyopt", "schedulefree", "matplotlib"))


def _accepted_ablations() -> list[str]:
    """The ablation rows whose options this autolrs accepts (a row may name an option still being added)."""
    import dataclasses

    from autolrs import AutoLRSConfig

    known = {f.name for f in dataclasses.fields(AutoLRSConfig)} | {"val_fn"}
    return [label for label, (options, _) in ABLATIONS.items() if set(options) <= known]


def _strict(path: Path) -> dict:
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_experiment_results_follow_the_schema(tmp_path):
    path = tmp_path / "nqm.json"
    code = run.main(["--task", "nqm", "--methods", "cosine", "autolrs", "--seeds", "0", "1", "--budget",
                     str(BUDGET), "--workers", "1", "--no-cache", "--json", str(path),
                     "--autolrs-options", '{"candidates": 5}'])
    assert code == 0
    result = _strict(path)
    assert validate(result) == []
    assert set(result["methods"]) == {"cosine", 'autolrs{"candidates"=5}'}
    autolrs = result["methods"]['autolrs{"candidates"=5}']
    assert autolrs["options"] == {"candidates": 5}
    assert [s["seed"] for s in autolrs["per_seed"]] == [0, 1]
    assert result["target"]["value"] == result["methods"]["cosine"]["final_mean"]


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
    if not BENCH_EXTRA:
        pytest.skip("needs the bench extra: pip install -e '.[bench]'")
    out = tmp_path_factory.mktemp("bench")
    code = run.main(["--quick", "--task", "nqm", "--budget", str(BUDGET), "--workers", "1", "--no-cache",
                     "--out", str(out / "results"), "--report", str(out / "BENCHMARKS.md")])
    assert code == 0
    return out


def test_results_follow_the_schema(quick_bench):
    result = _strict(quick_bench / "results" / "nqm.json")
    assert validate(result) == []
    assert result["mode"] == "quick" and result["seeds"] == [0]
    assert result["task"]["budget"] == BUDGET


def test_every_method_ran_on_the_same_budget(quick_bench):
    result = json.loads((quick_bench / "results" / "nqm.json").read_text())
    methods = result["methods"]
    ablations = set(_accepted_ablations()) - {"autolrs-val"}  # the NQM has no validation split
    assert set(SCHEDULES) | {"schedule-free", "prodigy", "range-test", "autolrs", "autolrs-replay", *ablations} \
        == set(methods) - (set(ABLATIONS) - ablations)
    for entry in methods.values():
        assert entry["curve"]["steps"][-1] == BUDGET
        for seed in entry["per_seed"]:
            assert seed["steps_taken"] == BUDGET or seed["diverged"]
    autolrs = methods["autolrs"]
    assert autolrs["per_seed"][0]["kept_steps"] < BUDGET  # the search's steps are counted
    assert 0 < autolrs["overhead"] < 1
    replay = methods["autolrs-replay"]  # one autolrs run, then its replay: two runs to obtain the model
    assert (replay["tuning_runs"], replay["tuning_steps"], replay["tuned"]) == (2, 2 * BUDGET, False)
    assert "autolrs-replay" not in (result["ablation"] or {}).get("rows", {})
    assert result["best_baseline"] not in ("autolrs-replay", "autolrs")
    tuned = [e for e in methods.values() if e["tuned"]]
    assert tuned and all(len(e["grid"]) >= 7 and e["tuning_steps"] == len(e["grid"]) * BUDGET for e in tuned)
    # The target is the tuned cosine's final metric, which its own mean curve reaches within the budget.
    assert result["target"]["value"] == methods["cosine"]["final_mean"]
    assert methods["cosine"]["speedup_vs_cosine"] is not None


def test_nqm_reports_the_optimal_schedule(quick_bench):
    result = json.loads((quick_bench / "results" / "nqm.json").read_text())
    optimal = result["reference"]["optimal"]
    assert sum(optimal["lengths"]) == BUDGET
    cosine = result["methods"]["cosine"]
    # Nothing beats the optimum in expectation by more than the piecewise-constant class allows.
    assert cosine["expected_ratio_to_optimal"] > 0.9
    assert math.isfinite(result["methods"]["autolrs"]["expected_ratio_to_optimal"])


def test_report_is_generated_from_the_json(quick_bench):
    report = (quick_bench / "BENCHMARKS.md").read_text()
    assert "## nqm" in report and "**Reading.**" in report
    for name in ("nqm-curves.png", "nqm-lr.png", "nqm-grids.png"):
        assert (quick_bench / "results" / name).stat().st_size > 0


def test_numbers_have_one_placeholder_for_a_gap_and_say_diverged_for_infinity():
    from benchmarks.formatting import MISSING, final, number, percent

    assert MISSING == "–"
    assert [number(v) for v in (None, math.nan, math.inf, -math.inf)] == [MISSING, MISSING, "diverged", "diverged"]
    assert (number(0.0123456), number(1400, "d"), number(1.5, ".2f", "x")) == ("0.01235", "1400", "1.50x")
    assert (number(None, ".2f", "x"), number(math.inf, ".2f", "x")) == (MISSING, "diverged")  # no unit on a gap
    assert (percent(0.25), percent(0.0), percent(None)) == ("25%", "0%", MISSING)
    entry = {"final_mean": 0.91234, "final_std": 0.0123}
    assert (final(entry, 3), final(entry, 1)) == ("0.9123 ± 0.012", "0.9123")  # one seed: no spread
    # a diverged seed makes the mean infinite and the spread undefined: the mean alone says so
    assert final({"final_mean": math.inf, "final_std": math.nan}, 3) == "diverged"


def test_schedules_match_pytorchs_schedulers():
    import torch

    from benchmarks.methods.schedules import clr_triangular2, one_cycle, sgdr

    budget = 1500
    reference = {
        one_cycle: lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=budget,
                                                                 cycle_momentum=False),
        clr_triangular2: lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, base_lr=0.25, max_lr=1.0, step_size_up=budget // 8, mode="triangular2", cycle_momentum=False),
        sgdr: lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=budget // 15, T_mult=2),
    }
    for schedule, make in reference.items():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = make(optimizer)
        for t in range(budget - 1):
            assert optimizer.param_groups[0]["lr"] == pytest.approx(schedule(t, budget), abs=1e-12), (schedule, t)
            optimizer.step()
            scheduler.step()


def test_range_test_reads_a_tenth_of_the_minimum_and_the_steepest_descent():
    from benchmarks.methods.policies import range_test_suggestion

    lrs = list(np.geomspace(1e-4, 1.0, 100))
    # a loss that falls fastest around lr 1e-2, is lowest near 1e-1 and then blows up
    losses = [2.0 - math.tanh(3 * (math.log10(lr) + 2)) + (50 * (lr - 0.1) if lr > 0.1 else 0.0) for lr in lrs]
    reading = range_test_suggestion(lrs, losses, beta=0.0)  # no smoothing: exact positions
    assert reading["lr_min"] == pytest.approx(0.1, rel=0.15)
    assert reading["lr"] == pytest.approx(reading["lr_min"] / 10)
    assert reading["lr_steep"] == pytest.approx(1e-2, rel=0.15)
    smoothed = range_test_suggestion(lrs, losses)  # fast.ai's smoothing delays the minimum a little
    assert reading["lr_min"] <= smoothed["lr_min"] <= 0.3


def test_autolrs_replay_replays_the_found_schedule_stretched_to_the_budget(tmp_path):
    from autolrs.replay import replay_lrs
    from benchmarks.methods import method
    from benchmarks.plans import plan
    from benchmarks.train import train_run

    path = tmp_path / "nqm.json"
    code = run.main(["--task", "nqm", "--methods", "autolrs-replay", "--seeds", "0", "--budget", str(BUDGET),
                     "--workers", "1", "--no-cache", "--json", str(path)])
    assert code == 0
    result = _strict(path)
    assert validate(result) == []
    entry = result["methods"]["autolrs-replay"]
    # The tuning cost is two runs: the autolrs run, then the replay; not a grid.
    assert (entry["tuning_runs"], entry["tuning_steps"], entry["tuned"]) == (2, 2 * BUDGET, False)
    assert entry["per_seed"][0]["steps_taken"] == entry["per_seed"][0]["kept_steps"] == BUDGET  # no search
    replay = entry["replay"][0]
    # The replayed schedule is the one the autolrs run of the same task and seed found.
    task = plan("nqm", "default", budget=BUDGET).task
    source = train_run(task, method("autolrs"), None, 0)
    schedule = source["summary"]["found_schedule"]
    assert replay["found_schedule"] == schedule and "lrs" not in schedule
    assert replay["source"]["kept_steps"] == source["kept_steps"] == schedule["kept_steps"] < BUDGET
    assert replay["source"]["final"] == source["final"]
    assert replay["stretch"] == pytest.approx(BUDGET / source["kept_steps"])
    # From the same initial weights: both runs measure the same model at step 0.
    assert entry["curve"]["metric"][0] == source["curve"][task.metric][0]
    # Every step of the budget ran at the stretched schedule's LR (the trace holds each LR change).
    trace = entry["lr_trace"]
    assert len(trace) < 400 and trace[-1][0] == BUDGET  # not thinned
    lrs = [lr for (step, lr, _), (end, _, _) in zip(trace, trace[1:]) for _ in range(end - step)]
    assert lrs == replay_lrs(schedule, BUDGET)


def test_fresh_seeds_rerun_the_chosen_lrs_and_the_one_run_methods_on_unseen_seeds(tmp_path):
    from benchmarks import report
    from benchmarks.cache import RunCache
    from benchmarks.methods import method
    from benchmarks.plans import Plan, plan
    from benchmarks.suite import run_task

    task = plan("nqm", "default", seeds=[0], budget=BUDGET).task
    tuned = (method("constant"),)
    single = ((method("autolrs"), None), (method("autolrs-no-decay"), None))
    result = run_task(Plan(task, "default", (0,), tuned, single, fresh_seeds=(1, 2)), RunCache(None), workers=1)
    assert validate(result) == []
    fresh = result["fresh"]
    assert fresh["seeds"] == [1, 2]
    # the tuned method keeps the LR its grid chose on the bench's seeds; an ablation is not re-run
    assert set(fresh["methods"]) == {"constant", "autolrs"}
    assert fresh["methods"]["constant"]["lr"] == result["methods"]["constant"]["lr"]
    # a fresh seed's run is the run that seed gives as a bench seed (the NQM is deterministic)
    alone = run_task(Plan(task, "default", (2,), (), ((method("autolrs"), None),)), RunCache(None), workers=1)
    assert fresh["methods"]["autolrs"]["finals"][1] == alone["methods"]["autolrs"]["per_seed"][0]["final"]["loss"]
    assert result["runs"] == 7 + 2 + 4  # the grid's 7 points, the 2 one-run methods, 2 methods x 2 fresh seeds

    (tmp_path / "nqm.json").write_text(json.dumps(result))
    text = report.write_report(tmp_path, tmp_path / "BENCHMARKS.md").read_text()
    section = text[text.index("## On fresh seeds"):text.index("## Ablations")]
    assert "| **autolrs** |" in section and "| constant |" in section
    assert "expected loss / optimum" in section  # the NQM's exact figure beside the measured one
    assert "(expected loss)" in section  # and the verdict on it, where both schedules give one


def test_the_default_and_full_plans_run_fresh_seeds_and_the_quick_one_does_not():
    from benchmarks.plans import FRESH_SEEDS, plan
    from benchmarks.tasks import REGISTRY

    for name in REGISTRY:
        assert plan(name).fresh_seeds == plan(name, "full").fresh_seeds == FRESH_SEEDS
        assert plan(name, "quick").fresh_seeds == ()
    assert plan("nqm", seeds=[0, 3]).fresh_seeds == (4, 5, 6, 7)  # a bench seed is not fresh


def test_paired_verdicts_use_the_per_seed_differences():
    from benchmarks.reading import paired

    # a steady 0.01 lead on every seed is clear even though each method's own spread is larger
    assert paired([0.91, 0.95, 0.93], [0.90, 0.94, 0.92], True) == "clearly better"
    assert paired([0.91, 0.95, 0.93], [0.90, 0.94, 0.92], False) == "clearly worse"
    assert paired([0.91, 0.93, 0.95], [0.92, 0.94, 0.93], True) == "within noise"
    assert paired([1.0, math.inf], [1.1, 1.2], False) == "clearly worse"  # a diverged seed loses


def test_stage_oracle_branches_start_alike_and_report_every_quantity():
    from benchmarks.stage_oracle import branch

    rows = [branch(("mnist1d-cnn", 0, 0.1, 5, 12, 4, 3, lr)) for lr in (0.1, 0.01)]
    assert rows[0]["first"] == rows[1]["first"]  # the same weights and batch at the stage's first step
    assert rows[0]["window"] != rows[1]["window"]  # ... and then each its own LR
    for row in rows:
        assert all(math.isfinite(row[k]) for k in ("forecast", "reached", "val", "final"))
        assert 0.0 <= row["final"] <= 1.0 and row["higher_is_better"]


def test_stage_oracle_summary_counts_each_ranking_per_seed():
    from benchmarks.stage_oracle import summary

    def row(seed, lr, forecast, reached, final):
        return {"seed": seed, "lr": lr, "forecast": forecast, "reached": reached, "val": math.nan,
                "final": final, "higher_is_better": True}

    rows = [row(0, 0.1, 0.3, 0.01, 0.94), row(0, 0.03, 0.2, 0.02, 0.93),
            row(1, 0.1, 0.4, 0.01, 0.95), row(1, 0.03, 0.1, 0.03, 0.92)]
    lines = summary(rows)
    assert lines[0] == "lowest forecast (what the search picks): lr 0.03 on 2"
    assert lines[1] == "lowest loss really reached at the stage's end: lr 0.1 on 2"
    assert lines[2] == "best metric after the decay: lr 0.1 on 2"  # no validation loss: no line
    assert lines[3:] == ["lr 0.03: mean final 0.9250 over 2 seeds", "lr 0.1: mean final 0.9450 over 2 seeds"]
