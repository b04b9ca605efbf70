"""Character-level Transformer on the built-in Shakespeare plays.

    python -m lm_jax.train --config=configs/char_tf.py
    python -m lm_jax.sample --workdir=runs/char_tf --prompt="ROMEO:"

Measured: see the README's results section (filled in from a run of this
exact command).

Variants (`--config=configs/char_tf.py:NAME`):
  smoke  a tiny model and a few steps, for tests (seconds).
  baby   nanoGPT's CPU "baby" setting on tinyshakespeare (4 layers, 4 heads,
         width 128, block 64, batch 12, 2000 steps); set
         --config.data.path=../shared/data/tinyshakespeare.txt.
"""

from lm_jax.config import base_config, smoke_train


def get_config(arg: str = ""):
  c = base_config()
  if arg == "smoke":
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.d_model = 32
    c.model.max_len = 32
    smoke_train(c)
  elif arg == "baby":
    c.model.max_len = 64
    c.train.batch_size = 12
    c.train.seq_len = 64
    c.train.num_steps = 2000
    c.train.learning_rate = 1e-3
    c.train.min_lr_ratio = 0.1
    c.train.warmup_steps = 100
    c.train.eval_every = 500
    c.train.log_every = 100
  elif arg:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke' or 'baby'")
  return c
