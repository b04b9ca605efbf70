"""Character-level LSTM on the built-in Shakespeare plays.

    python -m lm_jax.train --config=configs/char_lstm.py
    python -m lm_jax.sample --workdir=runs/char_lstm --prompt="ROMEO:"

The sizes of classic char-rnn tutorials: embedding 128, 2 layers of 256
hidden units, windows of 100 characters, batch 64, Adam (lr 2e-3, warmup,
cosine decay) with gradient clipping. 500 steps see 3.2M characters, about
three quarters of the training text.

`:tbptt` trains as char-rnn does: truncated backpropagation through time
(config.train.carry_state=True). Each of the 64 batch rows reads its own
contiguous lane of the text, window after window, and the LSTM state at
the end of a window starts the next one (no gradient across windows).

Measured (command, machine, figures): experiments/results/configs/char_lstm.md.

Variants (`--config=configs/char_lstm.py:NAME`):
  (none) char-rnn's model and steps; time, losses, JAX vs nn.LSTM speed.
  smoke  a tiny model and a few steps, for tests (seconds).
  tbptt  the same model and steps by truncated BPTT (see above).
"""

import ml_collections

from lm_jax.config import base_config, smoke_train


def get_config(arg: str = ""):
  c = base_config()
  c.model = ml_collections.ConfigDict(dict(
      kind="lstm", num_layers=2, embed_dim=128, hidden_size=256, dropout=0.0,
      # The cell's backward pass written out (lm_jax/models/lstm.py); False:
      # JAX autodiff through the scan (the same gradients, slower).
      hand_written_backward=True))
  c.train.batch_size = 64
  # One JAX device for both cores: the LSTM's small sequential steps gain
  # nothing from a device per core (hidden 256: equal; 512: 15% slower).
  c.train.cpu_devices = 1
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
