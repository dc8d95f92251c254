"""AutoLRSCallback in a real Lightning Trainer on CPU: the same run as the plain loop, the budget, resume,
gradient accumulation, a refused scheduler, logging, DDP guard, lazy import, and the example (2-process DDP)."""

from __future__ import annotations

import csv
import importlib
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest

pl = pytest.importorskip("lightning.pytorch")
import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from autolrs import AutoLRS, AutoLRSConfig  # noqa: E402
from autolrs.integrations.lightning import AutoLRSCallback  # noqa: E402
from autolrs.loggers import PHASE_CODES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
T = 120  # explore, keep and decay phases, three stages (see OPTIONS)
OPTIONS = dict(min_lr=1e-3, max_lr=1.0, seed=0, candidates=2, stage_steps=8, explore_steps=4, min_explore_steps=4)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever Lightning writes by default lands there, not in the checkout


def data(n=64):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=gen)
    return TensorDataset(x, x @ torch.randn(8, 1, generator=gen) + 0.1 * torch.randn(n, 1, generator=gen))


class Net(pl.LightningModule):
    def __init__(self, scheduler=False):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.scheduler = scheduler

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 10)} if self.scheduler else opt


class Recorder(pl.Callback):
    """The LR each optimizer step runs with, read from the optimizer just before it steps."""

    def __init__(self):
        self.lrs = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])


def fit(model, loader, callbacks, ckpt_path=None, **kwargs):
    kwargs = {"max_steps": T, "logger": False, "enable_checkpointing": False, **kwargs}
    trainer = pl.Trainer(accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=callbacks, **kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*(num_workers|LeafSpec|log_every_n_steps|callbacks used to create).*")
        trainer.fit(model, loader, ckpt_path=ckpt_path)
    return trainer


def plain_loop(batch_size, accumulate=1):
    """The same run without Lightning: AutoLRS in a hand-written loop on the same batches."""
    model = Net()
    opt = model.configure_optimizers()
    sched = AutoLRS(model, opt, total_steps=T, **OPTIONS)
    batches = list(DataLoader(data(), batch_size=batch_size))
    lrs, i = [], 0
    while not sched.done:
        losses = []
        for _ in range(accumulate):
            loss = model.training_step(batches[i % len(batches)], i)
            (loss / accumulate).backward()
            losses.append(loss.item())
            i += 1
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        opt.zero_grad()
        sched.step(sum(losses) / accumulate)
    return lrs, model, sched


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("accumulate", [1, 2])
def test_same_run_as_plain_loop_and_budget_exact(accumulate):
    """(1) LRs, weights and history equal the plain loop's; (2) the fit stops at exactly total_steps optimizer
    steps although max_steps allows more; (4) accumulate_grad_batches=2 counts optimizer steps, no warning."""
    ref_lrs, ref_model, ref_sched = plain_loop(16, accumulate)
    callback, recorder = AutoLRSCallback(total_steps=T, **OPTIONS), Recorder()
    model = Net()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*without an optimizer.step.*")  # AutoLRS's micro-batch warning
        trainer = fit(model, DataLoader(data(), batch_size=16), [callback, recorder], max_steps=T + 50,
                      accumulate_grad_batches=accumulate)
    assert trainer.global_step == callback.sched.steps_taken == len(recorder.lrs) == T
    assert callback.sched.done and len(set(recorder.lrs)) > 10
    assert recorder.lrs == ref_lrs
    assert torch.equal(params(model), params(ref_model))
    assert callback.sched.history == ref_sched.history


def test_resume_from_lightning_checkpoint_mid_search(tmp_path):
    """(3) trainer.fit(ckpt_path=...) from a ModelCheckpoint taken mid-candidate continues identically."""
    loader = DataLoader(data(), batch_size=64)  # full batch: the data order cannot differ after a resume
    callback, recorder = AutoLRSCallback(config=AutoLRSConfig(total_steps=T, **OPTIONS)), Recorder()
    model = Net()
    checkpoints = pl.callbacks.ModelCheckpoint(tmp_path, every_n_train_steps=23, save_top_k=-1)
    fit(model, loader, [callback, recorder, checkpoints], enable_checkpointing=True, default_root_dir=tmp_path)
    assert callback.sched.steps_taken == T and callback.sched.config.total_steps == T
    path = next(tmp_path.glob("*step=23.ckpt"))  # the 6th candidate's 3rd step of the first stage's search
    state = torch.load(path, weights_only=False)["callbacks"]["AutoLRSCallback"]["autolrs"]
    assert state["controller"]["phase"] == "explore" and state["controller"]["steps_taken"] == 23

    callback2, recorder2 = AutoLRSCallback(**OPTIONS), Recorder()  # total_steps from max_steps
    resumed = Net()
    trainer = fit(resumed, loader, [callback2, recorder2], ckpt_path=str(path))
    assert trainer.global_step == T and callback2.sched.steps_taken == T
    assert recorder2.lrs == recorder.lrs[23:]
    assert torch.equal(params(resumed), params(model))
    assert callback2.sched.history == callback.sched.history


def test_scheduler_from_configure_optimizers_is_refused():
    """(5) an LR scheduler returned by configure_optimizers raises a clear error before any step."""
    with pytest.raises(ValueError, match=r"LR scheduler \(StepLR\).*return only the optimizer"):
        fit(Net(scheduler=True), DataLoader(data(), batch_size=64), [AutoLRSCallback(**OPTIONS)])


def test_budget_beyond_max_steps_is_refused():
    with pytest.raises(ValueError, match="exceeds Trainer"):
        fit(Net(), DataLoader(data(), batch_size=64), [AutoLRSCallback(total_steps=T + 1, **OPTIONS)])


def test_lr_and_phase_reach_the_logger(tmp_path):
    """(6) autolrs/lr, autolrs/phase and autolrs/stage go through pl_module.log to the logger, and
    LearningRateMonitor sees the same LRs. The budget comes from max_epochs (estimated_stepping_batches)."""
    callback, recorder = AutoLRSCallback(**OPTIONS), Recorder()
    logger = pl.loggers.CSVLogger(tmp_path, name="run", version=0)
    monitor = pl.callbacks.LearningRateMonitor(logging_interval="step")
    trainer = fit(Net(), DataLoader(data(), batch_size=64), [callback, recorder, monitor], logger=logger,
                  log_every_n_steps=1, max_steps=-1, max_epochs=T)
    assert callback.sched.config.total_steps == T == trainer.global_step
    assert "autolrs/lr" in trainer.callback_metrics and "autolrs/phase" in trainer.progress_bar_metrics
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = [r for r in rows if r.get("autolrs/lr")]
    assert len(logged) == T
    assert [float(r["autolrs/lr"]) for r in logged] == pytest.approx(recorder.lrs, rel=1e-6)
    phases = [int(float(r["autolrs/phase"])) for r in logged]
    assert set(phases) == {PHASE_CODES[p] for p in ("explore", "keep", "decay")}
    stages = [int(float(r["autolrs/stage"])) for r in logged]
    assert stages == sorted(stages) and stages[-1] >= 2
    monitored = [float(r["lr-SGD"]) for r in rows if r.get("lr-SGD")]
    assert monitored == pytest.approx(recorder.lrs, rel=1e-6)


def test_ddp_without_a_process_group_is_refused():
    """Under DDP the loss is averaged by AutoLRS over the process group Lightning initialised (the example
    test runs 2 processes); a multi-process strategy without one would let the ranks' schedules drift."""
    model = Net()
    trainer = types.SimpleNamespace(lr_scheduler_configs=[], optimizers=[model.configure_optimizers()],
                                    world_size=2, strategy=types.SimpleNamespace())
    with pytest.raises(NotImplementedError, match="torch.distributed process group"):
        AutoLRSCallback(total_steps=T, **OPTIONS).on_fit_start(trainer, model)


def test_lazy_import_and_missing_lightning(monkeypatch):
    code = "import sys, autolrs, autolrs.integrations; assert 'lightning' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "autolrs.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install 'autolrs\[lightning\]'"):
        importlib.import_module("autolrs.integrations.lightning")
    monkeypatch.undo()
    importlib.import_module("autolrs.integrations.lightning")


def test_example_runs_under_ddp_on_two_cpu_processes():
    """examples/lightning_train.py, as CI runs it: Lightning's DDP (gloo) on 2 processes, a tiny budget."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "examples/lightning_train.py", "--steps", "120", "--quick", "--devices",
                             "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "optimizer steps 120 of 120" in result.stdout
