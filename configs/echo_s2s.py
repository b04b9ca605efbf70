"""An encoder-decoder Transformer "echo bot": a reply to a phrase.

    python -m lm_jax.train --config=configs/echo_s2s.py
    python -m lm_jax.sample --workdir=runs/echo_s2s --prompt="I am tired of my work"
    python -m lm_jax.cli.inspect_run --workdir=runs/echo_s2s --prompt="I am tired"

Pairs are the lines of the built-in plays (up to 64 characters) and their
transformations (`--config.data.pairs=copy:1,reverse:1,swap_persons:1`;
lm_jax/data/pairs.py), or a TSV file (`--config.data.pairs_file=FILE`). Held-out
pairs come from the held-out plays. docs/SEQ2SEQ.md explains the model.

Measured: experiments/results/configs/echo_s2s.md (not yet; untuned).

Variants (`--config=configs/echo_s2s.py:NAME`):
  (none) 3000 steps toward 99% exact match on copy and reverse.
  smoke  a tiny model and 20 steps, for tests (mostly compiling).
"""

import ml_collections

from lm_jax.config import pairs_config, smoke_pairs


def model(max_len: int, **fields) -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict(dict(
      kind="transformer_s2s", num_layers=2, num_heads=4, d_model=128,
      dropout=0.0, gelu_approximate=True))
  m.update(max_source_len=max_len, max_target_len=max_len, **fields)
  return m


def get_config(arg: str = ""):
  if arg == "smoke":
    c = pairs_config(model(24, num_layers=1, num_heads=2, d_model=32))
    smoke_pairs(c)
  elif not arg:
    c = pairs_config(model(64))
    c.train.learning_rate = 1e-3
  else:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke'")
  return c
