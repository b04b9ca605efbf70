"""Word-level masked LM (a bidirectional encoder) on the built-in plays.

    python -m lm_jax.train --config=configs/word_mlm.py
    python -m lm_jax.sample --workdir=runs/word_mlm \\
        --fill="To be, or not to _, that is the question"

configs/word_tf.py's data and sizes with the masked model of
configs/char_mlm.py (BERT masking; `:diffusion` for masked diffusion):
each blank `_` hides one word.

Measured: experiments/results/configs/word_mlm.md (not yet).

Variants (`--config=configs/word_mlm.py:NAME`):
  (none)     BERT masking, 600 steps of 16 x 64 words.
  smoke      a tiny model and a few steps, for tests (seconds).
  diffusion  masked diffusion (see configs/char_mlm.py).
"""

from lm_jax.config import masked_config, smoke_train


def get_config(arg: str = ""):
  c = masked_config()
  c.data.tokenizer = "word"
  c.data.vocab_size = 8192  # <unk>, <pad>, <bos>, <eos>, <mask> included
  c.data.min_count = 1
  c.model.update(num_layers=4, num_heads=4, d_model=128, max_len=64,
                 position="rope", norm="rmsnorm", qk_norm=True, mlp="relu2")
  c.train.batch_size = 16
  c.train.seq_len = 64  # 64 words: about 300 characters of context
  c.train.num_steps = 600
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 100
  c.train.log_every = 50
  c.train.eval_every = 200
  if arg == "smoke":
    c.data.vocab_size = 256
    c.model.update(num_layers=2, num_heads=2, d_model=32, max_len=32)
    smoke_train(c, eval_tokens=512, sample_tokens=0)
  elif arg == "diffusion":
    c.train.mask_scheme = "diffusion"
  elif arg:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke' or 'diffusion'")
  return c
