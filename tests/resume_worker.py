"""Run by test_resume.py in fresh processes: train, checkpoint at given steps, or resume from one.

    python resume_worker.py full OUT_DIR STEP [STEP ...]   uninterrupted run; checkpoints at each STEP
    python resume_worker.py resume CHECKPOINT OUT_JSON     a fresh process resumes and finishes the run

The task uses everything that must survive a restart: BatchNorm buffers, dropout (torch's global RNG),
SGD momentum, a data stream with its own generator, a validation function and a diverging candidate.
"""

import json
import sys
from pathlib import Path

import torch

from autolrs import AutoLRS

torch.set_num_threads(1)
TOTAL = 330
OPTIONS = dict(min_lr=1e-3, max_lr=30.0, total_steps=TOTAL, stage_steps=40, explore_steps=8, candidates=3,
               max_stage_steps=80, warmup_steps=6, min_explore_steps=4, seed=7,
               trust_region=None,  # the whole range every stage: diverging candidates are covered too
               decay_fraction=0.1)


def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                torch.nn.Dropout(0.1), torch.nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    data = torch.Generator().manual_seed(1)
    w = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    x_val = torch.randn(256, 8, generator=torch.Generator().manual_seed(3))
    y_val = (x_val @ w).argmax(1)

    def val_fn():
        model.eval()
        loss = torch.nn.functional.cross_entropy(model(x_val), y_val).item()
        model.train()
        return loss

    sched = AutoLRS(model, optimizer, val_fn=val_fn, **OPTIONS)

    def step():
        x = torch.randn(32, 8, generator=data)
        loss = torch.nn.functional.cross_entropy(model(x), (x @ w).argmax(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sched.step(loss)
        return loss.item(), sched.get_last_lr()[0]

    return model, optimizer, sched, data, step


def checkpoint(model, optimizer, sched, data):
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "sched": sched.state_dict(),
            "torch_rng": torch.get_rng_state(), "data_rng": data.get_state()}


def main(argv):
    mode = argv[0]
    if mode == "full":
        out, stops = Path(argv[1]), {int(s) for s in argv[2:]}
        model, optimizer, sched, data, step = build()
        trace = []
        while not sched.done:
            trace.append(step())
            if sched.steps_taken in stops:
                torch.save(checkpoint(model, optimizer, sched, data), out / f"ckpt_{sched.steps_taken}.pt")
        (out / "full.json").write_text(json.dumps({"trace": trace, "history": sched.history}))
    else:
        state = torch.load(argv[1], weights_only=True)
        model, optimizer, sched, data, step = build()
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["torch_rng"])
        data.set_state(state["data_rng"])
        trace = []
        while not sched.done:
            trace.append(step())
        Path(argv[2]).write_text(json.dumps({"trace": trace, "history": sched.history}))


if __name__ == "__main__":
    main(sys.argv[1:])
