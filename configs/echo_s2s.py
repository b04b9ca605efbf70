"""An encoder-decoder Transformer "echo bot": a reply to a phrase.

    python -m lm_jax.train --config=configs/echo_s2s.py
    python -m lm_jax.sample --workdir=runs/echo_s2s --prompt="I am tired of my work"
    python -m lm_jax.cli.inspect_run --workdir=runs/echo_s2s --prompt="I am tired"

Pairs are the lines of the built-in plays (up to 64 characters) and their
transformations (`--config.data.pairs=copy:1,reverse:1,swap_persons:1`;
lm_jax/data/pairs.py), or a TSV file (`--config.data.pairs_file=FILE`). Held-out
pairs come from the held-out plays. docs/SEQ2SEQ.md explains the model.

Measured: experiments/results/configs/echo_s2s.md (not yet; untuned).
`:fast` (rotary positions in every attention, half the cross-attention's
heads counting the prompt from its end; RMSNorm, QK-norm, ReLU^2: the
causal model's recipe) is the one for the echo bot's 5-minute goal,
measured by experiments/echo_fast.py: experiments/results/echo_fast_cpu.md.

Variants (`--config=configs/echo_s2s.py:NAME`):
  (none) 3000 steps toward 99% exact match on copy and reverse.
  smoke  a tiny model and 20 steps, for tests (mostly compiling).
  fast   rope and the causal model's recipe in under 5 min: 750 steps, wsd.
"""

import ml_collections

from lm_jax.config import pairs_config, smoke_pairs


def model(max_len: int, **fields) -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict(dict(
      kind="transformer_s2s", num_layers=2, num_heads=4, d_model=128,
      dropout=0.0, gelu_approximate=True,
      # The causal model's recipe (lm_jax/models/recipe.py), all off here;
      # cross_position: what cross-attention knows of positions
      # (lm_jax/models/transformer_s2s.py).
      position="learned", cross_position="none", norm="layernorm",
      qk_norm=False, mlp="gelu", zero_init_proj=False, logit_softcap=0.0))
  m.update(max_source_len=max_len, max_target_len=max_len, **fields)
  return m


# Rotary positions in every attention (cross-attention: half the heads
# counting the prompt from its end), RMSNorm, QK-norm, ReLU^2.
RECIPE = dict(position="rope", cross_position="both", norm="rmsnorm",
              qk_norm=True, mlp="relu2")


def get_config(arg: str = ""):
  if arg == "smoke":
    c = pairs_config(model(24, num_layers=1, num_heads=2, d_model=32))
    smoke_pairs(c)
  elif not arg:
    c = pairs_config(model(64))
    c.train.learning_rate = 1e-3
  elif arg == "fast":
    c = pairs_config(model(64, **RECIPE))
    c.train.update(learning_rate=3e-3, schedule="wsd", decay_fraction=0.3,
                   warmup_steps=50, num_steps=750, eval_every=250,
                   log_every=50)
  else:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke' or 'fast'")
  return c
