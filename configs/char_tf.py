"""Character-level Transformer on the built-in Shakespeare plays.

    python -m lm_jax.train --config=configs/char_tf.py
    python -m lm_jax.sample --workdir=runs/char_tf --prompt="ROMEO:"

The model is the plain GPT of the pipeline (lm_jax/models/transformer.py)
with the recipe options that measured (rotary positions, RMSNorm, QK-norm,
ReLU squared; docs/RECIPE.md says what each is and what it bought).
`baby`, `fast`, `speedrun` and `shakespeare` train on nanoGPT's
tinyshakespeare: set --config.data.path=../shared/data/tinyshakespeare.txt.

Measured (command, machine, figures): experiments/results/configs/char_tf.md.

Variants (`--config=configs/char_tf.py:NAME`):
  (none)       the default run: 1500 steps of 32 x 128 characters.
  smoke        a tiny model and a few steps, for tests (seconds).
  baby         nanoGPT's CPU "baby" setting (4 x 128, block 64, 2000 steps).
  fast         baby with the recipe options, raced against nanoGPT's baby.
  speedrun     the quickest route found on a 2-core CPU to nanoGPT's 1.4697.
  shakespeare  nanoGPT's GPU setting (6 x 384, context 256), for a GPU.
  hf           the default with SwiGLU, no QK-norm: exports as a Llama (--format=hf).
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
    # Measured against it (experiments/results/configs/char_tf.md): dropout
    # 0.1 ended level, for 7% of the tokens per second; the decay clocked
    # by a 15-minute budget (schedule_clock=budget) ran 1830 steps here
    # and ended higher: the run reads the text 7 times and more overfits.
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
  elif arg and arg != "hf":
    raise ValueError(f"unknown variant {arg!r}: use 'smoke', 'baby', "
                     "'fast', 'speedrun', 'shakespeare' or 'hf'")
  if arg in ("", "fast", "speedrun", "shakespeare"):  # options that measured (RECIPE.md)
    c.model.update(RECIPE)
  if arg == "hf":  # Llama's layout: rope, RMSNorm, SwiGLU (hf_checkpoint.py)
    c.model.update(RECIPE, mlp="swiglu", qk_norm=False)
  return c
