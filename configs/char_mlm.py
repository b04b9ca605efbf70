"""Character-level masked LM (a bidirectional encoder) on the built-in plays.

    python -m lm_jax.train --config=configs/char_mlm.py
    python -m lm_jax.sample --workdir=runs/char_mlm \\
        --fill="To be, or not to __, that is the question"

The causal model of configs/char_tf.py (same blocks, same recipe options)
without the causal mask (lm_jax/models/mlm.py), trained on BERT's masking:
15% of each window's characters chosen, 80% of those hidden as <mask>, 10%
a random character, 10% left; the loss counts the chosen ones
(lm_jax/data/masking.py). docs/MASKED.md explains the task.

`:diffusion` is masked diffusion: a rate per window ~ U(0, 1] (the
batch's on a grid, one per 1/B: config.train.stratified_rates), every
chosen character hidden, loss weighted 1/rate; its val_loss is a bound on
nats per character, comparable with char_tf's.

Measured (command, machine, figures): experiments/results/configs/char_mlm.md.

Variants (`--config=configs/char_mlm.py:NAME`):
  (none)     BERT masking; masked-token accuracy against the 60% goal.
  smoke      a tiny model and a few steps, for tests (seconds).
  diffusion  masked diffusion (see above), its bound against char_tf's loss.
"""

from lm_jax.config import masked_config, smoke_train

# The options that measured for the causal model (docs/RECIPE.md).
RECIPE = dict(position="rope", norm="rmsnorm", qk_norm=True, mlp="relu2")


def get_config(arg: str = ""):
  c = masked_config()
  c.model.update(RECIPE)
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.d_model = 128
  c.model.max_len = 128
  c.train.batch_size = 32
  c.train.seq_len = 128
  c.train.num_steps = 1500
  c.train.learning_rate = 2e-3  # a sparser signal than next-token: 15%
  c.train.warmup_steps = 100
  c.train.eval_every = 250
  c.train.log_every = 50
  c.train.eval_tokens = 32768
  if arg == "smoke":
    c.model.update(num_layers=2, num_heads=2, d_model=32, max_len=32)
    smoke_train(c, sample_tokens=0)
  elif arg == "diffusion":
    c.train.mask_scheme = "diffusion"
  elif arg:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke' or 'diffusion'")
  return c
