"""An LSTM encoder-decoder "echo bot" with attention: a reply to a phrase.

    python -m lm_jax.train --config=configs/echo_lstm.py
    python -m lm_jax.sample --workdir=runs/echo_lstm --prompt="I am tired of my work"
    python -m lm_jax.cli.inspect_run --workdir=runs/echo_lstm --prompt="I am tired"

A bidirectional LSTM encoder and an LSTM decoder with Luong attention
(lm_jax/models/lstm_s2s.py); pairs as in configs/echo_s2s.py
(`--config.data.pairs=reverse:1`, `--config.data.pairs_file=FILE`).

The full 3000 steps are not measured yet. 250 of them (experiments/
echo_length.py, 2-core AMD EPYC shared with other jobs, 8-9 minutes):
greedy exact match on held-out lines 91.8% for `copy`, 88.5% for
`reverse`; without attention (`:noattn`) 0.4% and 0.0%
(docs/SEQ2SEQ_LSTM.md).

Variants (`--config=configs/echo_lstm.py:NAME`):
  smoke   a tiny model and a few steps, for tests (seconds).
  noattn  no attention: the classic Sutskever et al. (2014) encoder-decoder,
          the prompt reaching the decoder only through its first state.
          The same as `--config.model.attention=False` (add that to
          `:smoke` for a tiny one).
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
  else:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke' or 'noattn'")
  return c
