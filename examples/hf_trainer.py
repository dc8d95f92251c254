"""AutoLRS in Hugging Face's Trainer: a tiny GPT-2 learns synthetic token sequences, on CPU, in seconds.

    python examples/hf_trainer.py                          # 300 optimizer steps
    python examples/hf_trainer.py --max-steps 120          # the quick run CI makes (one search)
    python examples/hf_trainer.py --resume                 # continue from the last checkpoint in --output-dir

The script is an ordinary Trainer script plus one line, ``AutoLRSCallback(...).attach(trainer)``: autolrs then
sets the LR of every optimizer step (the Trainer's ``lr_scheduler_type`` is ignored), ends the fit at the
budget (``max_steps`` here) and saves its state in every checkpoint, so ``--resume`` continues the search
exactly where it stopped. The model is built from a config and the data is generated: nothing is downloaded.
Needs pip install 'autolrs[transformers]'.
"""

from __future__ import annotations

import argparse

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from autolrs.integrations.transformers import AutoLRSCallback
from autolrs.report import stage_table

VOCAB, LENGTH = 64, 16


class Progressions(torch.utils.data.Dataset):
    """Token sequences ``a, a+d, a+2d, ...`` (mod VOCAB): a language model can learn to continue them."""

    def __init__(self, size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, VOCAB, (size, 1), generator=g)
        stride = torch.randint(1, 8, (size, 1), generator=g)
        self.tokens = (start + stride * torch.arange(LENGTH)) % VOCAB

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.tokens[i], "labels": self.tokens[i]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=300, help="optimizer-step budget, search included")
    parser.add_argument("--output-dir", default="autolrs-hf", help="the Trainer's checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=LENGTH,
                                       bos_token_id=0, eos_token_id=0))
    training = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=8,
        gradient_accumulation_steps=2, save_strategy="steps", save_steps=max(args.max_steps // 3, 1),
        logging_steps=max(args.max_steps // 10, 1), report_to=[], use_cpu=True, dataloader_num_workers=0,
        disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=model, args=training, train_dataset=Progressions(2048, seed=0))
    autolrs = AutoLRSCallback(min_lr=1e-4, max_lr=1e-2, seed=0).attach(trainer)  # the one line
    trainer.train(resume_from_checkpoint=True if args.resume else None)

    sched = autolrs.sched
    print(stage_table(sched.history))
    schedule = sched.found_schedule()
    held_out = Progressions(256, seed=1).tokens
    model.eval()
    with torch.no_grad():
        loss = model(input_ids=held_out, labels=held_out).loss.item()
    print(f"autolrs: {sched.steps_taken} steps ({sched.kept_steps} kept, {len(sched.history)} stages), "
          f"final LR {schedule['lrs'][-1]:.3g}, held-out loss {loss:.3f}")


if __name__ == "__main__":
    main()
