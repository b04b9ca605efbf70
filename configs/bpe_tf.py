"""Subword (byte-level BPE) Transformer on the built-in Shakespeare plays.

    python -m lm_jax.train --config=configs/bpe_tf.py
    python -m lm_jax.sample --workdir=runs/bpe_tf --prompt="ROMEO:"

The model is char_tf's (4 layers, width 128, the recipe options of
docs/RECIPE.md); the tokens are byte-level BPE subwords learnt from the
training plays by Hugging Face `tokenizers` (lm_jax/data/bpe.py): 2048 ids,
about 0.36 tokens per character, so 128 tokens of context hold about 350
characters. Bits per character are comparable with char_tf's and
word_tf's (docs/TOKENIZERS.md).

Measured (command, machine, figures): experiments/results/configs/bpe_tf.md.

Variants (`--config=configs/bpe_tf.py:NAME`):
  (none) subwords against characters at equal time (bpe_tf.md).
  smoke  a tiny model and a few steps, for tests (seconds).
"""

from lm_jax.config import base_config, smoke_train


def get_config(arg: str = ""):
  c = base_config()
  c.data.tokenizer = "bpe"
  c.data.vocab_size = 2048  # 256 bytes, 5 specials, 1787 merges
  # char_tf's RECIPE (a config file is read by path: none imports another).
  c.model.update(position="rope", norm="rmsnorm", qk_norm=True, mlp="relu2")
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.d_model = 128
  c.model.max_len = 128  # rotary positions: no table, but the sampler's window
  c.train.batch_size = 32
  c.train.seq_len = 128
  c.train.num_steps = 1500
  c.train.eval_every = 250
  c.train.sample_tokens = 80  # about 220 characters
  if arg == "smoke":
    c.data.vocab_size = 320
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.d_model = 32
    c.model.max_len = 32
    smoke_train(c, eval_tokens=512, sample_tokens=16)
  elif arg:
    raise ValueError(f"unknown variant {arg!r}: use 'smoke'")
  return c
