"""One benchmark run: a method trains a seeded task instance for the budget; the kept model is measured.

The loop is the same for every method: set the LR, take the step, report the loss. Every
``eval_every`` optimizer steps (search steps included) the *kept* model is evaluated: the live model for
schedules, and for autolrs the stage snapshot while it searches (:meth:`AutoLRS.kept_state_dict`), so a
curve never credits a method with a branch it may throw away. Evaluation time is not part of the run's
wall time. A scheduled run whose loss turns NaN/inf (or explodes) stops there and counts as diverged,
with the task's worst metric for the rest of its curve; autolrs handles diverging candidates itself.

``autolrs-replay`` first makes the autolrs run of the same task and seed (this function, default options),
then seeds and builds its own problem exactly as every other run does (same initial weights, same
batches) and replays that run's found schedule on it.
"""

from __future__ import annotations

import copy
import math
import time

import torch

from .methods import AUTOLRS_FAMILIES, Method, autolrs_method, build_policy
from .tasks import make_problem
from .tasks.base import TaskSpec

__all__ = ["train_run", "DIVERGENCE_FACTOR", "TRACE_POINTS"]

DIVERGENCE_FACTOR = 100.0  # a loss this many times the first one has diverged
TRACE_POINTS = 400  # the LR trace keeps every change, thinned to about this many points


def _thin(trace: list[list], points: int) -> list[list]:
    if len(trace) <= points:
        return trace
    stride = math.ceil(len(trace) / points)
    return trace[::stride] + ([trace[-1]] if (len(trace) - 1) % stride else [])


def train_run(task: TaskSpec, m: Method, lr: float | None, seed: int) -> dict:
    """Run method ``m`` at peak LR ``lr`` (None for methods without one) on seed ``seed``; return the record."""
    # autolrs-replay: the autolrs run comes first, so that it leaves no trace on this run's seeding below
    source = train_run(task, autolrs_method(), None, seed) if m.family == "autolrs-replay" else None
    torch.manual_seed(seed)
    problem = make_problem(task, seed)
    model = problem.model
    policy = build_policy(m, task, problem, lr, seed, source=source)
    optimizer = policy.optimizer
    eval_model = copy.deepcopy(model)  # receives the kept state while the live model is a search branch
    metric_keys = (task.metric, *task.extra_metrics)
    curve: dict[str, list] = {"steps": [], "kept_steps": [], **{k: [] for k in metric_keys}}

    def measure(worst_at: int | None = None) -> None:
        if worst_at is not None:
            values = {k: (task.worst if k == task.metric else math.nan) for k in metric_keys}
        else:
            state = policy.kept_state()
            with torch.no_grad(), policy.evaluation():
                if state is not None:
                    eval_model.load_state_dict(state)
                values = problem.evaluate(eval_model if state is not None else model)
            values[task.metric] = task.sanitize(values[task.metric])
        curve["steps"].append(policy.steps_taken if worst_at is None else worst_at)
        curve["kept_steps"].append(policy.kept_steps if worst_at is None else worst_at)
        for k in metric_keys:
            curve[k].append(values[k])

    measure()
    trace: list[list] = []
    kept_lrs: list[float] = []
    first_loss = None
    diverged_at = None
    eval_s = 0.0
    start = time.perf_counter()
    while not policy.done:
        phase = policy.phase
        policy.before_step()
        step_lr = policy.lr
        loss = problem.training_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not trace or trace[-1][1:] != [step_lr, phase]:
            trace.append([policy.steps_taken, step_lr, phase])
        policy.after_step(value)
        if phase in ("warmup", "keep", "decay"):
            kept_lrs.append(step_lr)
        del kept_lrs[policy.kept_steps:]  # a kept stage autolrs rolled back is no longer kept
        first_loss = value if first_loss is None else first_loss
        if m.family != "autolrs" and (not math.isfinite(value) or abs(value) > DIVERGENCE_FACTOR * abs(first_loss)):
            diverged_at = policy.steps_taken
            break
        if policy.steps_taken % task.eval_every == 0 or policy.done:
            tick = time.perf_counter()
            measure()
            eval_s += time.perf_counter() - tick
    wall_s = time.perf_counter() - start - eval_s
    if diverged_at is not None:  # the rest of the curve, at the worst value
        first = math.ceil(diverged_at / task.eval_every) * task.eval_every
        for step in [*range(first, task.budget, task.eval_every), task.budget]:
            measure(worst_at=step)
    trace.append([policy.steps_taken, policy.lr, "end"])
    expected = problem.expected_loss(kept_lrs) if m.family in ("schedule", *AUTOLRS_FAMILIES) and diverged_at is None \
        else None
    return {
        "task": task.name, "method": m.label, "family": m.family, "options": dict(m.options), "lr": lr,
        "seed": seed, "budget": task.budget, "steps_taken": policy.steps_taken, "kept_steps": policy.kept_steps,
        "diverged": diverged_at is not None, "diverged_at": diverged_at,
        "final": {k: curve[k][-1] for k in metric_keys},
        "expected_loss": expected,
        "curve": curve,
        "wall_s": wall_s, "eval_s": eval_s, "overhead_s": policy.overhead_s,
        "overhead": policy.overhead_s / wall_s if wall_s > 0 else None,
        "threads": torch.get_num_threads(),
        "lr_trace": _thin(trace, TRACE_POINTS),
        "summary": policy.summary(),
    }
