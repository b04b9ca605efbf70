"""Character-level LSTM on the built-in Shakespeare plays.

    python -m lm_jax.train --config=configs/char_lstm.py
    python -m lm_jax.sample --workdir=runs/char_lstm --prompt="ROMEO:"

The sizes of classic char-rnn tutorials: embedding 128, 2 layers of 512
hidden units, windows of 100 characters, batch 64, Adam with gradient
clipping.

Measured: TODO

Variants (`--config=configs/char_lstm.py:NAME`):
  smoke  a tiny model and a few steps, for tests (seconds).
"""

import ml_collections

from lm_jax.config import base_config


def get_config(arg: str = ""):
  c = base_config()
  c.model = ml_collections.ConfigDict(dict(
      kind="lstm", num_layers=2, embed_dim=128, hidden_size=256, dropout=0.0))
  c.train.batch_size = 64
  c.train.seq_len = 100
  c.train.num_steps = 1000
  c.train.learning_rate = 2e-3
  c.train.weight_decay = 0.0  # plain Adam, as char-rnn
  c.train.grad_clip = 1.0
  c.train.warmup_steps = 100
  c.train.eval_every = 250
  c.train.log_every = 100
  if arg == "smoke":
    c.model.embed_dim = 16
    c.model.hidden_size = 32
    c.train.batch_size = 8
    c.train.seq_len = 32
    c.train.num_steps = 20
    c.train.warmup_steps = 2
    c.train.steps_per_call = 4
    c.train.log_every = 4
    c.train.eval_every = 10
    c.train.eval_tokens = 2048
    c.train.sample_tokens = 32
  elif arg:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke'")
  return c
