"""The race's reference: nanoGPT's CPU "baby" recipe on the PyTorch twin.

    python -m experiments.race_torch --data=PATH --workdir=DIR --seed=0

`experiments/race.py` runs it in its own process. It writes what an lm_jax
run writes for the race to read: `config.json` (batch and context) and
`metrics.jsonl` records with `elapsed_s` (wall seconds since this process
started, start-up included) and, in val records, `eval_s` (the seconds
spent evaluating before). The recipe: `TorchTransformerLM` with 4 layers,
4 heads, width 128, context 64, dropout 0; batches of 12 random windows;
AdamW (lr 1e-3, betas 0.9 / 0.99, weight decay 0.1 on matrices, clipping
at 1.0), warmup 100 then cosine to 1e-4 at the last step, as
`experiments/bench_runners.py: lr_at`. The text is split as nanoGPT does
(first 90% train, last 10% val) into lm_jax's character ids, and val loss is
the mean over every whole window of the val split.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import ml_collections
import numpy as np
import torch
import torch.nn.functional as F

from experiments.bench_runners import lr_at
from experiments.torch_models import TorchTransformerLM, decay_param_groups
from lm_jax.cli import process
from lm_jax.data import corpus, tokenizers

MODEL = dict(num_layers=4, num_heads=4, d_model=128, max_len=64, dropout=0.0)
TRAIN = dict(batch_size=12, seq_len=64, learning_rate=1e-3, min_lr_ratio=0.1,
             warmup_steps=100, b1=0.9, b2=0.99, weight_decay=0.1,
             grad_clip=1.0)


def val_windows(ids: np.ndarray, batch_size: int, seq_len: int) -> np.ndarray:
  """Every whole, non-overlapping window of the val ids, in batches
  (N, B, T + 1), as `lm_jax.data.windows.eval_batches` with no token limit."""
  n = (len(ids) - 1) // seq_len // batch_size * batch_size
  idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)
  return ids[idx].reshape(n // batch_size, batch_size, seq_len + 1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: np.ndarray) -> float:
  model.eval()
  total = 0.0
  for batch in torch.from_numpy(windows).long():
    logits = model(batch[:, :-1])  # (B, T, V)
    total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                             batch[:, 1:].reshape(-1), reduction="sum").item()
  model.train()
  return total / windows[..., 1:].size


def race(data: str, workdir: pathlib.Path, seed: int, num_steps: int,
         eval_every: int, started: float) -> None:
  workdir.mkdir(parents=True, exist_ok=True)
  t = ml_collections.ConfigDict(dict(TRAIN, num_steps=num_steps))
  text = corpus.load_corpus(data, val_fraction=0.1)
  tok = tokenizers.build_tokenizer("char", text.train)
  train_ids = torch.from_numpy(np.asarray(tok.encode(text.train))).long()
  windows = val_windows(np.asarray(tok.encode(text.val)), t.batch_size,
                        t.seq_len)
  (workdir / "config.json").write_text(json.dumps(
      {"model": MODEL, "train": t.to_dict(), "seed": seed}))
  log = (workdir / "metrics.jsonl").open("w")
  write = lambda **r: (log.write(json.dumps(r) + "\n"), log.flush())
  torch.manual_seed(seed)
  model = TorchTransformerLM(tok.vocab_size, **MODEL).train()
  opt = torch.optim.AdamW(decay_param_groups(model, t.weight_decay),
                          lr=t.learning_rate, betas=(t.b1, t.b2), eps=1e-8)
  gen = torch.Generator().manual_seed(seed)
  offsets = torch.arange(t.seq_len + 1)
  clock = lambda: time.perf_counter() - started
  eval_s, tick = 0.0, (clock(), 0)
  for step in range(1, num_steps + 1):
    starts = torch.randint(0, len(train_ids) - t.seq_len - 1,
                           (t.batch_size,), generator=gen)
    w = train_ids[starts[:, None] + offsets]  # (B, T + 1)
    logits = model(w[:, :-1])  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                           w[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    for group in opt.param_groups:
      group["lr"] = lr_at(t, step - 1)
    opt.step()
    if step % eval_every == 0 or step == num_steps:
      now = clock()
      rate = (step - tick[1]) * t.batch_size * t.seq_len / (now - tick[0])
      write(step=step, loss=loss.item(), elapsed_s=now, tokens_per_s=rate)
      val = evaluate(model, windows)
      write(step=step, val_loss=val, elapsed_s=now, eval_s=eval_s)
      eval_s += clock() - now
      tick = (clock(), step)
  log.close()


def main() -> None:
  started = time.perf_counter() - process.process_seconds()
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", required=True)
  parser.add_argument("--workdir", required=True, type=pathlib.Path)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_steps", type=int, default=2000)
  parser.add_argument("--eval_every", type=int, default=250)
  parser.add_argument("--threads", type=int, default=0,
                      help="PyTorch's intra-op threads (0: its default)")
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  race(args.data, args.workdir, args.seed, args.num_steps, args.eval_every,
       started)


if __name__ == "__main__":
  main()
