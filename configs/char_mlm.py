"""Character-level masked LM (a bidirectional encoder) on the built-in plays.

    python -m lm_jax.train --config=configs/char_mlm.py
    python -m lm_jax.sample --workdir=runs/char_mlm \\
        --fill="To be, or not to __, that is the question"

The causal model of configs/char_tf.py (same blocks, same recipe options)
without the causal mask (lm_jax/models/mlm.py), trained on BERT's masking:
15% of each window's characters chosen, 80% of those hidden as <mask>, 10%
a random character, 10% left; the loss counts the chosen ones
(lm_jax/data/masking.py). docs/MASKED.md explains the task.

Measured (experiments/results/masked_vs_causal.md, `python
experiments/masked_vs_causal.py --steps=400 --parallel`) on a 2-core Intel
Xeon shared with other sessions (1-minute load average 15-20, several
times a quiet machine's step time), 2026-12-03: 400 steps in 16.6 min
wall, 58.1% top-1 and 86.9% top-5 accuracy on the chosen characters of
the 4 held-out plays, 1.3955 nats (2.0133 bits) per chosen character;
52.1% at step 250.

On the quiet machine (2-core Intel Xeon, 2026-12-03; `python -m
lm_jax.train --config=char_mlm`, stopped after step 1000's evaluation):
top-1 accuracy on the chosen characters of the held-out plays 51.8% at
step 250 (66 s of wall time, start-up included), 58.5% at 500 (120 s),
62.1% at 750 (173 s) and 65.1% at 1000 (227 s), top-5 90.4%, masked loss
1.1503 nats (1.66 bits) per chosen character: past the 60% goal in under
3 minutes. A fill at step 750: "N_y, answer__e: stan_, a_d unfol_
yourself." -> "Nay, answer he: stand, and unfold yourself."

Variants (`--config=configs/char_mlm.py:NAME`):
  smoke      a tiny model and a few steps, for tests (seconds).
  diffusion  masked diffusion: a rate per window ~ U(0, 1], every chosen
             character hidden, loss weighted 1/rate; its val_loss is a
             bound on nats per character, comparable with char_tf's.
             Measured in the same run: 400 steps in 19.3 min (with the
             causal model of this size training at once, load 15-20),
             bound 2.5244 nats/char against the causal 1.6963.
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
