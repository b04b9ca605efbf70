"""An LSTM encoder-decoder "echo bot" with attention: a reply to a phrase.

    python -m lm_jax.train --config=configs/echo_lstm.py
    python -m lm_jax.sample --workdir=runs/echo_lstm --prompt="I am tired of my work"
    python -m lm_jax.cli.inspect_run --workdir=runs/echo_lstm --prompt="I am tired"

A bidirectional LSTM encoder and an LSTM decoder with Luong attention
(lm_jax/models/lstm_s2s.py); pairs as in configs/echo_s2s.py
(`--config.data.pairs=reverse:1`, `--config.data.pairs_file=FILE`).
`:noattn` is the same as `--config.model.attention=False` (add that to
`:smoke` for a tiny one).

Measured (command, machine, figures): experiments/results/configs/echo_lstm.md.

Variants (`--config=configs/echo_lstm.py:NAME`):
  (none)  3000 steps with attention, toward 99% exact match on copy/reverse.
  smoke   a tiny model and a few steps, for tests (seconds).
  fast    the default model in under 5 minutes: 450 steps, wsd schedule.
  noattn  no attention: Sutskever et al.'s (2014) encoder-decoder.
"""

import ml_collections

from lm_jax.config import pairs_config, smoke_pairs


def model(max_len: int, **fields) -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict(dict(
      kind="lstm_s2s", num_layers=1, embed_dim=64, hidden_size=256,
      dropout=0.0, attention=True, input_feeding=True))
  m.update(max_source_len=max_len, max_target_len=max_len, **fields)
  return m


def get_config(arg: str = ""):
  if arg == "smoke":
    c = pairs_config(model(24, embed_dim=16, hidden_size=32))
    smoke_pairs(c)
  elif arg in ("", "noattn"):
    c = pairs_config(model(64, attention=arg != "noattn"))
    c.train.learning_rate = 2e-3
  elif arg == "fast":
    c = pairs_config(model(64))
    c.train.update(learning_rate=3e-3, schedule="wsd", decay_fraction=0.3,
                   warmup_steps=50, num_steps=450, eval_every=150,
                   log_every=50)
  else:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke', 'noattn' or "
                     "'fast'")
  return c
