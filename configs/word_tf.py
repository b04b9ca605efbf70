"""Word-level Transformer on the built-in Shakespeare plays.

    python -m lm_jax.train --config=configs/word_tf.py
    python -m lm_jax.sample --workdir=runs/word_tf --prompt="ROMEO:"

Measured (command, machine, figures): experiments/results/configs/word_tf.md.

Variants (`--config=configs/word_tf.py:NAME`):
  (none) 600 steps of 16 x 64 words (8192 ids).
  smoke  a tiny model and a few steps, for tests (seconds).
"""

from lm_jax.config import base_config, smoke_train


def get_config(arg: str = ""):
  c = base_config()
  c.data.tokenizer = "word"
  c.data.vocab_size = 8192  # 6.7% of the val plays' tokens become <unk>
  c.data.min_count = 1
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.d_model = 128
  c.model.max_len = 64  # 64 words: about 300 characters of context
  c.model.dropout = 0.0  # about one epoch: too short to overfit
  c.train.batch_size = 16  # more updates per token in a short run
  c.train.seq_len = 64
  c.train.num_steps = 600
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 100
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.eval_tokens = 32768
  c.train.sample_tokens = 60
  c.train.sample_prompt = "\n"
  if arg == "smoke":
    c.data.vocab_size = 256
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.d_model = 32
    c.model.max_len = 32
    smoke_train(c, eval_tokens=512, sample_tokens=16)
  elif arg:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke'")
  return c
