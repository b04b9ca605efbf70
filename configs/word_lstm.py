"""Word-level LSTM on the built-in Shakespeare plays.

    python -m lm_jax.train --config=configs/word_lstm.py
    python -m lm_jax.sample --workdir=runs/word_lstm --prompt="ROMEO:"

The word tokenizer of configs/word_tf.py (8192 ids) feeding 2 layers of 512
LSTM units, with windows of 64 words.

Measured: experiments/results/configs/word_lstm.md (not yet).

Variants (`--config=configs/word_lstm.py:NAME`):
  (none) 600 steps of 32 x 64 words.
  smoke  a tiny model and a few steps, for tests (seconds).
"""

import ml_collections

from lm_jax.config import base_config, smoke_train


def get_config(arg: str = ""):
  c = base_config()
  c.data.tokenizer = "word"
  c.data.vocab_size = 8192
  c.data.min_count = 1
  c.model = ml_collections.ConfigDict(dict(
      kind="lstm", num_layers=2, embed_dim=128, hidden_size=512, dropout=0.0,
      # The cell's backward pass written out (lm_jax/models/lstm.py); False:
      # JAX autodiff through the scan (the same gradients, slower).
      hand_written_backward=True))
  c.train.batch_size = 32
  # One JAX device for both cores: the LSTM's small sequential steps gain
  # nothing from a device per core (hidden 256: equal; 512: 15% slower).
  c.train.cpu_devices = 1
  c.train.seq_len = 64
  c.train.num_steps = 600
  c.train.learning_rate = 2e-3
  c.train.weight_decay = 0.0  # plain Adam, as char-rnn
  c.train.warmup_steps = 100
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.eval_tokens = 65536
  c.train.sample_tokens = 60
  if arg == "smoke":
    c.data.vocab_size = 256
    c.model.embed_dim = 16
    c.model.hidden_size = 32
    smoke_train(c, eval_tokens=512, sample_tokens=16)
  elif arg:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke'")
  return c
