"""AutoLRS in a Lightning fit: one callback finds the LR schedule (pip install 'autolrs[lightning]').

    python examples/lightning_train.py                    # 600 optimizer steps on CPU, well under a minute
    python examples/lightning_train.py --steps 120 --quick  # the CI smoke run: seconds
    python examples/lightning_train.py --devices 2        # Lightning's DDP on 2 CPU processes (gloo)

A small MLP regresses a fixed random teacher network. The LightningModule is plain Lightning: its
configure_optimizers returns the optimizer alone (no LR scheduler: autolrs sets the LR). The fit stops when
the budget is spent; checkpoints (``--ckpt-dir``) hold autolrs's state, so ``--resume PATH`` continues a
stopped run, mid-search included.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from autolrs.integrations.lightning import AutoLRSCallback


def make_data(n: int = 2048, dim: int = 16) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    for p in teacher.parameters():
        p.data.normal_(generator=gen)
    teacher[2].weight.data /= 32 ** 0.5  # targets of unit scale
    x = torch.randn(n, dim, generator=gen)
    with torch.no_grad():
        y = teacher(x) + 0.05 * torch.randn(n, 1, generator=gen)
    return TensorDataset(x, y)


class Regressor(pl.LightningModule):
    def __init__(self, dim: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)  # the LR is autolrs's from step 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="optimizer-step budget, search included")
    parser.add_argument("--quick", action="store_true", help="small stages, for a budget of ~100 steps")
    parser.add_argument("--devices", type=int, default=1, help="CPU processes (2 or more: Lightning's DDP)")
    parser.add_argument("--accumulate", type=int, default=1, help="accumulate_grad_batches")
    parser.add_argument("--ckpt-dir", default=None, help="save a checkpoint every 50 steps here")
    parser.add_argument("--resume", default=None, help="a checkpoint to continue from")
    args = parser.parse_args()

    pl.seed_everything(0, verbose=False)
    options = dict(candidates=2, stage_steps=8, explore_steps=4, min_explore_steps=4) if args.quick else {}
    autolrs = AutoLRSCallback(min_lr=1e-3, max_lr=1.0, seed=0, **options)  # total_steps: Trainer's max_steps
    callbacks = [autolrs]
    if args.ckpt_dir:
        callbacks.append(pl.callbacks.ModelCheckpoint(args.ckpt_dir, every_n_train_steps=50, save_top_k=-1))
    trainer = pl.Trainer(max_steps=args.steps, accelerator="cpu", devices=args.devices,
                         strategy="ddp" if args.devices > 1 else "auto", accumulate_grad_batches=args.accumulate,
                         callbacks=callbacks, logger=False, enable_checkpointing=bool(args.ckpt_dir),
                         enable_progress_bar=False, enable_model_summary=False)
    loader = DataLoader(make_data(), batch_size=64, shuffle=True)
    trainer.fit(Regressor(), loader, ckpt_path=args.resume)

    sched = autolrs.sched
    if trainer.is_global_zero:
        lrs = [round(record["lr"], 4) for record in sched.history if record["lr"] is not None]
        print(f"optimizer steps {trainer.global_step} of {sched.config.total_steps} ({sched.kept_steps} kept); "
              f"loss {trainer.callback_metrics['train_loss']:.4f}; stage LRs {lrs}")


if __name__ == "__main__":
    main()
