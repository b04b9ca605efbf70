"""Character-level Transformer on the built-in Shakespeare plays.

    python -m lm_jax.train --config=configs/char_tf.py
    python -m lm_jax.sample --workdir=runs/char_tf --prompt="ROMEO:"

Measured with exactly this command on a 2-core AMD EPYC CPU (the machine
otherwise idle), 2026-11-26: 1500 steps of 32 x 128 characters, 5m45s wall
(344.9 s, start-up, 6 evaluations and samples included; about 20k tokens/s
on one JAX device per core), final val loss 1.7020 nats, 2.4555 bits per
character on the 4 held-out plays. (The same run on one device for both
cores, 2026-11-25: 529.5 s, the same losses.) Samples have speaker lines,
line breaks and mostly real words, e.g. "BOLTHOL:\nThat honest our out the
mans lords to my seem".

Variants (`--config=configs/char_tf.py:NAME`):
  smoke  a tiny model and a few steps, for tests (seconds).
  baby   nanoGPT's CPU "baby" setting on tinyshakespeare (4 layers, 4 heads,
         width 128, block 64, batch 12, 2000 steps); set
         --config.data.path=../shared/data/tinyshakespeare.txt. Measured on
         the same machine: 125.0 s wall, val loss 1.9105 nats (on the first
         32k tokens of the last 10%); nanoGPT itself: 1.8857 in 72-75 s.
  fast   baby's data, sizes and steps with the recipe options that measured
         (rotary positions, RMSNorm, QK-norm, ReLU squared; Muon for the
         hidden matrices): the race against nanoGPT's baby run is
         experiments/results/race_cpu.md (`python experiments/race.py`).
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
  elif arg in ("baby", "fast"):
    c.model.max_len = 64
    c.train.batch_size = 12
    c.train.seq_len = 64
    c.train.num_steps = 2000
    c.train.learning_rate = 1e-3
    c.train.min_lr_ratio = 0.1
    c.train.warmup_steps = 100
    c.train.eval_every = 500
    c.train.log_every = 100
    if arg == "fast":  # the recipe options that measured (docs/RECIPE.md)
      c.model.update(position="rope", norm="rmsnorm", qk_norm=True,
                     mlp="relu2")
      c.train.optimizer = "muon"
  elif arg:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke', 'baby' or "
                     "'fast'")
  return c
