"""Character-level Transformer on the built-in Shakespeare plays.

    python -m lm_jax.train --config=configs/char_tf.py
    python -m lm_jax.sample --workdir=runs/char_tf --prompt="ROMEO:"

The model is the plain GPT of the pipeline (lm_jax/models/transformer.py)
with the recipe options that measured (rotary positions, RMSNorm, QK-norm,
ReLU squared; docs/RECIPE.md says what each is and what it bought).
Measured with `make train` (this config, a cold compilation cache) on a
2-core Intel Xeon (Sapphire Rapids class, KVM), the machine otherwise
idle, 2026-12-02: 1500 steps of 32 x 128 characters in 4m32s wall
(`time make train`; start-up, 6 evaluations and samples included; about
25k tokens/s on one JAX device per core), final val loss 1.5249 nats,
2.2000 bits per character on the 4 held-out plays; 1.6489 nats at step
500, 100 s in. Samples have speaker lines and mostly real words, e.g.
"PANDARUS:\nSeement, that's the earth of her greest man,--".
The same 1500 steps without the recipe options (learned positions,
LayerNorm, GELU), on a 2-core AMD EPYC, 2026-11-26: 5m45s wall (344.9 s),
final val loss 1.7020 nats, 2.4555 bits per character.

Variants (`--config=configs/char_tf.py:NAME`):
  smoke  a tiny model and a few steps, for tests (seconds).
  baby   nanoGPT's CPU "baby" setting on tinyshakespeare (4 layers, 4 heads,
         width 128, block 64, batch 12, 2000 steps); set
         --config.data.path=../shared/data/tinyshakespeare.txt. In the race
         below: final val 1.9052 and 1.8915 nats (2 seeds) against the
         PyTorch twin's 1.8913 and 1.8980 with the same recipe.
  fast   baby's data, sizes, optimiser and steps with the recipe options
         that measured (rotary positions, RMSNorm, QK-norm, ReLU squared;
         docs/RECIPE.md). Raced against nanoGPT's baby recipe on the
         PyTorch twin (`python experiments/race.py --seeds=2
         --eval_every=125`, experiments/results/race_cpu.md; 2-core Intel
         Xeon, quiet, 2026-12-02): the reference's final val loss, 1.8946
         nats, in 27.5 s of wall time against its 49.4 s (0.56x; start-up
         and compiling included, evaluations excluded; 29.9 s with an empty
         compilation cache, 25.0 s with the first seed's programs cached),
         and 1.6551 nats at 2000 steps (medians of 2 seeds, val over the
         whole last 10%). On a 2-core AMD EPYC, evaluating every 250 steps:
         0.53x (experiments/results/race_cpu_fast_adamw.md).
  speedrun  the quickest route found to nanoGPT's GPU val loss (1.4697)
         on a 2-core CPU: a model small enough for the CPU (4 layers,
         width 192, context 128; 1.8M parameters), 32 x 128 characters a
         step, Muon on the hidden matrices (AdamW at 2e-3 for the rest)
         and a warmup-stable-decay schedule whose linear decay takes the
         last half of 1650 steps, with the recipe options; set
         --config.data.path as for baby. Raced with `python
         experiments/race.py --speedrun` (experiments/results/
         race_speedrun_cpu.md; 2-core Intel Xeon, quiet, 2026-12-03; two
         seeds, val over the whole last 10% every 200 steps): train
         seconds (start-up and compiling included, evaluations apart) to
         val 1.60: 314, 1.55: 506, 1.50: 758 (800; 716); final val 1.4852
         (1.4949; 1.4755) at 834 s, 8,246 tokens/s; 1.47 not reached
         within the 15 minutes. An earlier run of the same model with the
         decay over the last 30% of 1800 steps ended at 1.4896 (seed 0)
         in 970 s with other work on the machine.
  shakespeare  nanoGPT's GPU setting for tinyshakespeare (6 layers, 6
         heads, width 384, context 256, batch 64, dropout 0.2, 5000 steps;
         nanoGPT reaches 1.4697 on an A100 in about 3 minutes) with the
         recipe options; set --config.data.path as for baby. Meant for a
         GPU: on a 2-core CPU a step takes seconds (the 6L/384 rows of
         experiments/results/cpu_gpt6_levers.md). Not yet measured on a
         GPU.
"""

from lm_jax.config import base_config, smoke_train

# What the default, `fast` and `shakespeare` add to the plain GPT
# (lm_jax/models/recipe.py).
RECIPE = dict(position="rope", norm="rmsnorm", qk_norm=True, mlp="relu2")


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
  elif arg == "speedrun":
    c.model.update(num_layers=4, num_heads=4, d_model=192, max_len=128)
    c.train.update(batch_size=32, seq_len=128, num_steps=1650,
                   optimizer="muon", learning_rate=2e-3, schedule="wsd",
                   decay_fraction=0.5, warmup_steps=50, eval_every=200,
                   log_every=50)
  elif arg == "shakespeare":
    c.model.update(num_layers=6, num_heads=6, d_model=384, max_len=256,
                   dropout=0.2)
    c.train.update(batch_size=64, seq_len=256, num_steps=5000,
                   learning_rate=1e-3, min_lr_ratio=0.1, warmup_steps=100,
                   eval_every=500, log_every=100)
  elif arg:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke', 'baby', "
                     "'fast', 'speedrun' or 'shakespeare'")
  if arg in ("", "fast", "speedrun", "shakespeare"):  # options that measured (RECIPE.md)
    c.model.update(RECIPE)
  return c
