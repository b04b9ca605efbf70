"""Character-level GRU on the built-in Shakespeare plays.

    python -m lm_jax.train --config=configs/char_gru.py
    python -m lm_jax.sample --workdir=runs/char_gru --prompt="ROMEO:"

configs/char_lstm.py with a GRU in place of the LSTM: the same embedding
(128), 2 layers of 256 units, windows of 100 characters, batch 64, Adam (lr
2e-3, warmup, cosine decay) with gradient clipping, 500 steps. A GRU layer
has three gates to the LSTM's four, so about 3/4 of its parameters and
products per step.

Measured (command, machine, figures): experiments/results/configs/char_gru.md.

Variants (`--config=configs/char_gru.py:NAME`):
  (none) the GRU against char_lstm at the same budget (char_gru.md).
  smoke  a tiny model and a few steps, for tests (seconds).
  tbptt  truncated BPTT (carry_state=True), as configs/char_lstm.py:tbptt.
"""

import ml_collections

from lm_jax.config import base_config, smoke_train


def get_config(arg: str = ""):
  c = base_config()
  c.model = ml_collections.ConfigDict(dict(
      kind="gru", num_layers=2, embed_dim=128, hidden_size=256, dropout=0.0))
  c.train.batch_size = 64
  c.train.cpu_devices = 1  # small sequential steps, as the LSTM
  c.train.seq_len = 100
  c.train.num_steps = 500
  c.train.learning_rate = 2e-3
  c.train.weight_decay = 0.0  # plain Adam, as char-rnn
  c.train.grad_clip = 1.0
  c.train.warmup_steps = 100
  c.train.eval_every = 250
  c.train.log_every = 100
  if arg == "smoke":
    c.model.embed_dim = 16
    c.model.hidden_size = 32
    smoke_train(c)
  elif arg == "tbptt":
    c.train.carry_state = True
  elif arg:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke' or 'tbptt'")
  return c
