"""autolrs in Hugging Face's Trainer (autolrs.integrations.transformers): a real Trainer, a tiny GPT-2 from a
config (nothing downloaded), synthetic tokens, on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from autolrs import AutoLRS  # noqa: E402
from autolrs.integrations.transformers import AutoLRSCallback  # noqa: E402

ROOT = Path(__file__).parents[1]
# 40 steps: a first search of 5 candidates x 4 steps (steps 0-19), a kept stage, the decay (last 8)
OPTIONS = dict(min_lr=1e-3, max_lr=1e-2, stage_steps=6, candidates=2, min_explore_steps=4, decay_fraction=0.2, seed=0)
STEPS = 40


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A tiny model is 20x faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Tokens(torch.utils.data.Dataset):
    def __init__(self, size: int = 64, length: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        start, stride = torch.randint(0, 64, (size, 1), generator=g), torch.randint(1, 4, (size, 1), generator=g)
        self.x = (start + stride * torch.arange(length)) % 64

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i], "labels": self.x[i]}


class Recorder(TrainerCallback):
    """What the Trainer does (the LR of every param group at each optimizer step, micro-batches) and what
    autolrs saw (its on_step callback: the loss and phase of every step)."""

    def __init__(self) -> None:
        self.used, self.losses, self.phases, self.micro = [], [], [], 0

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.used.append([group["lr"] for group in optimizer.param_groups])

    def on_substep_end(self, args, state, control, **kwargs):
        self.micro += 1

    def on_step_end(self, args, state, control, **kwargs):
        self.micro += 1

    def on_step(self, sched, info):
        self.losses.append(info["loss"])
        self.phases.append(info["phase"])


def fit(out, *, max_steps=STEPS, resume=None, accumulation=1, save_steps=None, skip_step=None,
        optim="adamw_torch_fused", **options):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32, resid_pdrop=0.0,
                                       embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0))
    args = TrainingArguments(
        output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4 // accumulation,
        gradient_accumulation_steps=accumulation, learning_rate=1e-3, lr_scheduler_type="linear", warmup_steps=5,
        logging_steps=1, save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500, report_to=[],
        use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0, optim=optim,
    )
    recorder = Recorder()
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[recorder])
    if skip_step is not None:  # a GradScaler (fp16 needs a GPU: give the CPU one) and an inf gradient at that step
        trainer.accelerator.scaler = torch.amp.GradScaler("cpu")
        blowup = {"on": False}
        model.lm_head.weight.register_hook(lambda grad: grad * float("inf") if blowup["on"] else grad)
        trainer.add_callback(type("Blowup", (TrainerCallback,), {"on_step_begin": lambda self, args, state, control,
                             **kw: blowup.update(on=state.global_step == skip_step)})())
    callback = AutoLRSCallback(**{**OPTIONS, **options}, callbacks=[recorder]).attach(trainer)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback, recorder


def plain_loop(losses, total_steps=STEPS):
    """The LR of each step of a plain-loop AutoLRS fed the same losses."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = AutoLRS(model, optimizer, **OPTIONS, total_steps=total_steps)
    lrs = []
    for loss in losses:
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step(loss)
    assert sched.done
    return lrs


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry and "train_runtime" not in entry]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One 40-step fit, checkpointed every 10 steps."""
    out = tmp_path_factory.mktemp("reference")
    return (out, *fit(out, save_steps=10))


def test_lr_sequence_equals_a_plain_loop_on_the_same_losses(reference):
    _, trainer, callback, recorder = reference
    assert len(recorder.losses) == STEPS and {"explore", "keep", "decay"} <= set(recorder.phases)
    # autolrs got the Trainer's own loss of every step
    assert recorder.losses == pytest.approx(logged(trainer, "loss"), rel=1e-6)
    used = [lrs[0] for lrs in recorder.used]
    assert used == plain_loop(recorder.losses)
    assert all(len(set(lrs)) == 1 for lrs in recorder.used)  # both param groups (decay, no decay) follow it


def test_the_budget_ends_the_fit_exactly(reference, tmp_path):
    _, trainer, callback, recorder = reference
    assert trainer.state.global_step == STEPS and callback.sched.steps_taken == STEPS and callback.sched.done
    # a budget below the Trainer's max_steps stops the fit there
    trainer, callback, recorder = fit(tmp_path / "short", max_steps=50, total_steps=36)
    assert trainer.state.global_step == 36 and len(recorder.used) == 36
    assert callback.sched.steps_taken == 36 and callback.sched.phase == "done"
    with pytest.raises(ValueError, match="exceeds the Trainer's max_steps=30"):
        fit(tmp_path / "long", max_steps=30, total_steps=40)


def test_resume_from_checkpoint_mid_search_continues_identically(reference, tmp_path):
    out, trainer, callback, recorder = reference
    checkpoint = out / "checkpoint-10"
    saved = torch.load(checkpoint / "scheduler.pt", weights_only=True)
    assert saved["autolrs"]["controller"]["phase"] == "explore"  # mid-search: inside the third candidate
    resumed_trainer, resumed, resumed_recorder = fit(tmp_path, resume=str(checkpoint), save_steps=10)
    assert resumed.sched.steps_taken == STEPS and resumed_trainer.state.global_step == STEPS
    assert resumed_recorder.used == recorder.used[10:]
    assert resumed_recorder.losses == recorder.losses[10:]
    assert resumed.sched.history == callback.sched.history
    for name, value in resumed_trainer.model.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[name]), name


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*without an optimizer.step.*")
        trainer, callback, recorder = fit(tmp_path, accumulation=2)
    assert recorder.micro == 2 * STEPS and len(recorder.used) == STEPS
    assert callback.sched.steps_taken == STEPS and trainer.state.global_step == STEPS
    # the loss of each step is the mean of its two micro-batches', as the Trainer logs it
    assert recorder.losses == pytest.approx(logged(trainer, "loss"), rel=1e-6)
    assert [lrs[0] for lrs in recorder.used] == plain_loop(recorder.losses)


@pytest.mark.parametrize("optim", [
    "adamw_torch",
    # A fused optimizer (_step_supports_amp_scaling) skips inside optimizer.step(), which GradScaler still calls:
    # the step hook fires, and the driver tells the skip by the scale that fell.
    "adamw_torch_fused",
])
def test_a_step_the_grad_scaler_skips_is_not_counted(tmp_path, optim):
    # the Trainer counts the skipped step in max_steps, autolrs not in total_steps: leave the Trainer a margin
    trainer, callback, recorder = fit(tmp_path, max_steps=STEPS + 5, total_steps=STEPS, skip_step=7, optim=optim)
    assert callback.sched.skipped_steps == 1 and callback.sched.steps_taken == STEPS and callback.sched.done
    assert trainer.state.global_step == STEPS + 1 and len(recorder.losses) == STEPS  # the Trainer counts it
    used = [lrs[0] for lrs in recorder.used]
    # step 7 would have ended the second candidate: skipped, it is redone at that candidate's LR
    assert used[7] == used[8] != used[9]
    assert used[:7] + used[8:] == plain_loop(recorder.losses)


def test_the_trainers_scheduler_never_changes_the_lr(reference, tmp_path):
    _, trainer, callback, recorder = reference
    # lr_scheduler_type="linear" with 5 warmup steps would start at 0: autolrs's LRs were used instead
    assert not isinstance(trainer.lr_scheduler, torch.optim.lr_scheduler.LambdaLR)
    assert recorder.used[0][0] == OPTIONS["min_lr"]
    assert logged(trainer, "learning_rate") == [lrs[0] for lrs in recorder.used]  # and the Trainer logs them
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=STEPS, report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(),
                      optimizers=(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)))
    AutoLRSCallback(**OPTIONS).attach(trainer)
    with pytest.raises(ValueError, match=r"optimizers=\(optimizer, None\)"):
        trainer.train()
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[AutoLRSCallback(**OPTIONS)])
    with pytest.raises(RuntimeError, match=r"attach\(trainer\)"):
        trainer.train()


def test_import_is_lazy_and_names_the_extra():
    code = ("import sys, autolrs, autolrs.integrations; assert 'transformers' not in sys.modules\n"
            "sys.modules['transformers'] = None\n"
            "try:\n    import autolrs.integrations.transformers\nexcept ImportError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'autolrs[transformers]'" in done.stdout


def test_the_example_runs(tmp_path):
    command = [sys.executable, str(ROOT / "examples" / "hf_trainer.py"), "--max-steps", "120",
               "--output-dir", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "autolrs: 120 steps" in done.stdout
    state = torch.load(tmp_path / "run" / "checkpoint-120" / "scheduler.pt", weights_only=True)
    assert state["autolrs"]["controller"]["steps_taken"] == 120
