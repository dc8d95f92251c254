import io
import json
import math
import sys

import pytest
import torch

from autolrs import AutoLRS, JSONLinesLogger, TensorBoardLogger
from autolrs.loggers import PHASE_CODES, Callback
from test_replay import regression_problem  # the same noisy regression

OPTIONS = dict(min_lr=1e-3, max_lr=0.5, total_steps=400, stage_steps=60, explore_steps=10, candidates=3,
               max_stage_steps=120, warmup_steps=10, seed=0)


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_step(self, sched, info):
        self.events.append(("step", info))

    def on_candidate_end(self, sched, candidate):
        self.events.append(("candidate", candidate, sched.steps_taken))

    def on_stage_end(self, sched, record):
        self.events.append(("stage", record, sched.steps_taken))

    def of(self, kind):
        return [e[1] for e in self.events if e[0] == kind]


def run(callbacks=(), add=(), stop=None):
    """An autolrs run of OPTIONS; returns the scheduler and (phase, lr) of each optimizer step as it ran."""
    model, optimizer, train_step = regression_problem()
    used = []
    optimizer.register_step_pre_hook(lambda opt, a, k: used.append((sched.phase, opt.param_groups[0]["lr"])))
    sched = AutoLRS(model, optimizer, callbacks=list(callbacks), **OPTIONS)
    for callback in add:
        sched.add_callback(callback)
    while not sched.done and (stop is None or not stop(sched)):
        sched.step(train_step())
    return sched, used


def test_callbacks_see_every_step_candidate_and_stage():
    given, added = Recorder(), Recorder()
    sched, used = run(callbacks=[given], add=[added])
    assert given.events == added.events
    steps = given.of("step")
    assert [i["step"] for i in steps] == list(range(1, 401))
    assert [(i["phase"], i["lr"]) for i in steps] == used  # the phase and LR each step ran with
    assert [i["decision"]["lr"] for i in steps[:-1]] == [lr for _, lr in used[1:]]  # the next step's
    assert steps[-1]["decision"]["done"] and all(math.isfinite(i["loss"]) for i in steps)
    # Every candidate once, as in the history, when its window ended; every stage once, in order.
    expected = [{"stage": r["stage"], "index": i, **c} for r in sched.history for i, c in enumerate(r["candidates"])]
    assert given.of("candidate") == expected
    assert given.of("stage") == sched.history
    ends = {(e[1]["stage"], e[1]["index"]): e[2] for e in given.events if e[0] == "candidate"}
    for r in sched.history:
        first = r["start_step"]
        for i, c in enumerate(r["candidates"]):
            first += c["steps"]
            assert ends[(r["stage"], i)] == first  # told at the step its window ended
    stage_ends = [e[2] for e in given.events if e[0] == "stage"]
    assert stage_ends == [r["keep_start_step"] + r["kept_steps"] for r in sched.history]


def test_callbacks_get_copies_and_are_not_in_the_state_dict():
    class Vandal(Callback):
        def on_candidate_end(self, sched, candidate):
            candidate["lr"] = -1.0
            candidate["losses"].clear()

        def on_stage_end(self, sched, record):
            record["candidates"].clear()
            record["lr"] = None

    sched, used = run(callbacks=[Vandal()])
    reference, reference_used = run()
    assert sched.history == reference.history and used == reference_used
    plain = AutoLRS(*regression_problem()[:2], **OPTIONS).state_dict()
    with_callbacks = AutoLRS(*regression_problem()[:2], callbacks=[Recorder()], **OPTIONS).state_dict()
    assert with_callbacks.keys() == plain.keys()
    buffer = io.BytesIO()
    torch.save(with_callbacks, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=True)


def test_a_callback_that_raises_propagates_after_the_decision_and_the_run_goes_on():
    class Fails(Callback):
        def on_stage_end(self, sched, record):
            if record["stage"] == 1:
                raise RuntimeError("the disk is full")

    witness = Recorder()
    model, optimizer, train_step = regression_problem()
    sched = AutoLRS(model, optimizer, callbacks=[Fails(), witness], **OPTIONS)
    raised = 0
    while not sched.done:
        try:
            sched.step(train_step())
        except RuntimeError as error:  # the step was counted and its decision applied: go on
            assert "disk is full" in str(error)
            raised += 1
    reference, _ = run()
    assert raised == 1
    assert sched.history == reference.history and sched.steps_taken == 400
    assert witness.of("stage") == reference.history  # the other callback was told anyway


def test_finalize_tells_the_interrupted_candidate_and_stage():
    recorder = Recorder()
    sched, _ = run(callbacks=[recorder], stop=lambda s: s.history and s.phase == "explore")
    count = len(recorder.of("stage"))
    with pytest.warns(UserWarning, match="finished during the search"):
        sched.finalize()
    assert len(recorder.of("stage")) == count + 1 and recorder.of("stage")[-1] == sched.history[-1]
    assert recorder.of("candidate")[-1]["interrupted"]


def test_bad_callbacks_raise_type_errors():
    model, optimizer, _ = regression_problem()
    with pytest.raises(TypeError, match="at least one of on_step, on_candidate_end, on_stage_end"):
        AutoLRS(model, optimizer, callbacks=[object()], **OPTIONS)
    with pytest.raises(TypeError, match="wrap a single one in a list"):
        AutoLRS(model, optimizer, callbacks=Recorder(), **OPTIONS)
    sched = AutoLRS(model, optimizer, **OPTIONS)
    with pytest.raises(TypeError, match="defines none"):
        sched.add_callback(lambda sched, info: None)


# -- JSON lines --------------------------------------------------------------------------------------------
def _strict(text):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_jsonlines_logger_writes_one_strict_json_object_per_event(tmp_path):
    path = tmp_path / "logs" / "decisions.jsonl"
    with JSONLinesLogger(path) as logger:
        sched, used = run(callbacks=[logger])
    lines = [_strict(line) for line in path.read_text().splitlines()]
    steps = [x for x in lines if x["event"] == "step"]
    assert [(x["phase"], x["lr"]) for x in steps] == used
    candidates = [x["candidate"] for x in lines if x["event"] == "candidate_end"]
    assert len(candidates) == sum(len(r["candidates"]) for r in sched.history)
    records = [x["record"] for x in lines if x["event"] == "stage_end"]
    assert records == json.loads(json.dumps(sched.history))
    with pytest.raises(ValueError, match="closed"):
        logger.on_stage_end(sched, sched.history[0])


def test_jsonlines_logger_nan_is_null_and_appends(tmp_path):
    class Sched:
        steps_taken = 7

    path = tmp_path / "log.jsonl"
    JSONLinesLogger(path).on_step(Sched(), {"step": 7, "loss": float("nan"), "lr": 0.1})
    logger = JSONLinesLogger(path, mode="a", steps=False)
    logger.on_step(Sched(), {"step": 8, "loss": 1.0})  # not written: steps=False
    logger.on_candidate_end(Sched(), {"lr": 0.1, "forecast": float("inf")})
    logger.close()
    lines = [_strict(line) for line in path.read_text().splitlines()]
    assert lines == [{"event": "step", "step": 7, "loss": None, "lr": 0.1},
                     {"event": "candidate_end", "step": 7, "candidate": {"lr": 0.1, "forecast": None}}]
    with pytest.raises(ValueError, match="mode must be"):
        JSONLinesLogger(path, mode="x")


# -- TensorBoard -------------------------------------------------------------------------------------------
def test_tensorboard_event_file_reads_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path / "tb")
    sched, used = run(callbacks=[logger])
    logger.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()

    def scalars(tag):
        return [(e.step, e.value) for e in events.Scalars(f"autolrs/{tag}")]

    assert [s for s, _ in scalars("lr")] == list(range(1, 401))
    assert [v for _, v in scalars("lr")] == pytest.approx([lr for _, lr in used], rel=1e-6)  # float32
    assert [v for _, v in scalars("phase")] == [PHASE_CODES[phase] for phase, _ in used]
    assert len(scalars("loss")) == 400
    candidates = [c for r in sched.history for c in r["candidates"]]
    assert [v for _, v in scalars("candidate/lr")] == pytest.approx([c["lr"] for c in candidates], rel=1e-6)
    forecasts = [c["forecast"] for c in candidates if c["forecast"] is not None]
    assert [v for _, v in scalars("candidate/forecast")] == pytest.approx(forecasts, rel=1e-6)
    assert [v for _, v in scalars("stage/lr")] == pytest.approx([r["lr"] for r in sched.history], rel=1e-6)
    assert [s for s, _ in scalars("stage/lr")] == [r["keep_start_step"] + r["kept_steps"] for r in sched.history]
    reached = [r["loss_reached"] for r in sched.history if r["loss_reached"] is not None]
    assert [v for _, v in scalars("stage/loss_reached")] == pytest.approx(reached, rel=1e-6)
    assert len(scalars("stage/forecast")) == sum(r["forecast"] is not None for r in sched.history) > 0


def test_tensorboard_logger_takes_your_writer_and_a_prefix():
    class Writer:
        def __init__(self):
            self.scalars, self.flushed = [], 0

        def add_scalar(self, tag, value, global_step=None):
            self.scalars.append((tag, value, global_step))

        def flush(self):
            self.flushed += 1

    writer = Writer()
    logger = TensorBoardLogger(writer, prefix="train/autolrs")
    sched, _ = run(callbacks=[logger])
    logger.close()  # not ours to close: flushed only
    tags = {tag for tag, _, _ in writer.scalars}
    assert {"train/autolrs/lr", "train/autolrs/phase", "train/autolrs/candidate/forecast",
            "train/autolrs/stage/loss_reached"} <= tags
    assert writer.flushed == len(sched.history) + 1
    with pytest.raises(TypeError, match="folder or a SummaryWriter"):
        TensorBoardLogger(42)


def test_tensorboard_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ImportError, match=r"pip install 'autolrs\[tensorboard\]'"):
        TensorBoardLogger(tmp_path)
