"""Paired data (lm_jax/data/pairs.py): transformations, TSV lines, encoding."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lm_jax.data import pairs, tokenizers
from lm_jax.training import losses
from lm_jax.data.tokenizers import BOS_ID, EOS_ID, PAD_ID
from lm_jax.errors import UserError


@pytest.mark.parametrize("text, swapped", [
    ("I am tired of my work", "You are tired of your work"),
    ("you are kind to me", "I am kind to you"),
    ("I love you", "You love me"),
    ("Give me your hand; I am yours.", "Give you my hand; you are mine."),
    ("YOU are MY lord", "I am YOUR lord"),
    ("Tell me what you think, and you shall see.",
     "Tell you what I think, and I shall see."),
    ("give you the book", "give me the book"),
    ("No person here.", "No person here."),
])
def test_swap_persons(text, swapped):
  assert pairs.swap_persons(text) == swapped


def test_transforms():
  t = pairs.TRANSFORMS
  assert t["copy"]("To be, or") == "To be, or"
  assert t["reverse"]("To be, or") == "ro ,eb oT"
  assert t["reverse_words"]("To be, or") == "or be, To"
  assert t["upper"]("To be, or") == "TO BE, OR"


def test_parse_mix():
  assert pairs.parse_mix("copy:1, reverse:2,upper") == {
      "copy": 1.0, "reverse": 2.0, "upper": 1.0}
  for spec, message in [("copy:1,shout:1", "unknown transformation 'shout'"),
                        ("copy:0", "must be a positive number"),
                        ("copy:x", "must be a positive number"),
                        (" , ", "config.data.pairs is empty")]:
    with pytest.raises(UserError, match=message):
      pairs.parse_mix(spec)


def test_transform_pairs_is_seeded_and_weighted():
  lines = [f"line {i}" for i in range(2000)]
  mix = {"copy": 1.0, "reverse": 3.0}
  made = pairs.transform_pairs(lines, mix, seed=0)
  assert made == pairs.transform_pairs(lines, mix, seed=0)
  assert [p for p, _ in made] == lines
  reversed_share = np.mean([r == p[::-1] for p, r in made])
  assert reversed_share == pytest.approx(0.75, abs=0.03)


def test_text_lines_drop_headings_and_blanks():
  text = "HAMLET:\nTo be, or not to be\n\n  \nLORD POLONIUS:\nMy lord.\n"
  assert pairs.text_lines(text) == ["To be, or not to be", "My lord."]


def test_split_tsv_counts_bad_lines():
  skipped = pairs.Skipped()
  text = "hi\thello\nno tab here\n\t reply\nprompt\t \n\nkey\tva\tlue\n"
  assert pairs.split_tsv(text, skipped) == [("hi", "hello"),
                                            ("key", "va\tlue")]
  assert skipped.counts == {"no tab": 1, "empty side": 2}
  assert skipped.line("train") == (
      "train: skipped 3 line(s) (empty side: 2, no tab: 1)")
  assert pairs.Skipped().line("val") == "val: no line skipped"


def char_tokenizer(text="abcdefgh xyz"):
  return tokenizers.build_tokenizer("char", text, specials=True)


def test_specials_are_reserved():
  tok = char_tokenizer()
  assert tok.vocab[:4] == ["<unk>", "<pad>", "<bos>", "<eos>"]
  assert (PAD_ID, BOS_ID, EOS_ID) == (1, 2, 3)
  assert tok.decode(tok.encode("abc")) == "abc"
  assert min(tok.encode("abc")) > EOS_ID
  word = tokenizers.build_tokenizer("word", "a b b c", vocab_size=6,
                                    specials=True)
  assert word.vocab == ["<unk>", "<pad>", "<bos>", "<eos>", "b", "a"]


def test_encode_pairs_pads_and_skips():
  tok = char_tokenizer()
  skipped = pairs.Skipped()
  src, tgt = pairs.encode_pairs(
      [("abc", "cba"), ("abcdef", "x"), ("ab", "abcdef"), ("a", "")],
      tok, max_source_len=4, max_target_len=4, skipped=skipped)
  a, b, c = tok.encode("abc")
  np.testing.assert_array_equal(src, [[a, b, c, PAD_ID]])
  np.testing.assert_array_equal(tgt, [[BOS_ID, c, b, a, EOS_ID, PAD_ID]])
  assert src.dtype == tgt.dtype == np.int32
  assert sum(skipped.counts.values()) == 3
  assert skipped.counts["empty side"] == 1
  assert skipped.counts["too long (prompt > 4 or reply > 4 tokens)"] == 2
  np.testing.assert_array_equal(pairs.reply_ids(tgt[0, 1:]), [c, b, a])


def test_get_batch_and_masked_loss():
  src = jnp.arange(12, dtype=jnp.int32).reshape(3, 4)
  tgt = jnp.array([[2, 5, 3, 1], [2, 6, 7, 3], [2, 3, 1, 1]], jnp.int32)
  (x_src, x_tgt), y = pairs.get_batch((src, tgt), jax.random.key(0), 5)
  assert x_src.shape == (5, 4) and x_tgt.shape == y.shape == (5, 3)
  for s, ti, to in zip(x_src, x_tgt, y):
    row = int(s[0]) // 4
    np.testing.assert_array_equal(ti, tgt[row, :-1])
    np.testing.assert_array_equal(to, tgt[row, 1:])
  logits = jax.random.normal(jax.random.key(1), (3, 3, 9))
  targets = tgt[:, 1:]
  each = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  keep = np.asarray(targets) != PAD_ID  # 2 + 3 + 1 targets
  loss = losses.cross_entropy(logits, targets, pairs.target_weights(targets))
  assert float(loss) == pytest.approx(
      float(np.asarray(each)[keep].mean()), rel=1e-6)


def data_config(**fields):
  c = ml_collections.ConfigDict(dict(
      path="", val_fraction=0.25, val_plays=(), pairs="copy:1",
      pairs_file=""))
  c.update(fields)
  return c


def test_held_out_pairs_come_from_held_out_text(tmp_path):
  lines = [f"train line {i}" for i in range(30)] + [
      f"held out {i}" for i in range(10)]
  path = tmp_path / "text.txt"
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  split = pairs.load_pairs(data_config(path=str(path),
                                       pairs="copy:1,reverse:1"), seed=0)
  assert {p for p, _ in split.val} <= {f"held out {i}" for i in range(10)}
  assert all(p.startswith("train line") for p, _ in split.train)
  assert len(split.train) + len(split.val) == 40


def test_tsv_without_a_valid_line_is_one_error(tmp_path):
  path = tmp_path / "pairs.tsv"
  path.write_text("no tab\nstill none\n\tempty prompt\nx\t\n",
                  encoding="utf-8")
  with pytest.raises(UserError, match=r"no valid training pair in .*pairs"
                     r"\.tsv \(pairs: skipped 4 line\(s\) \(empty "
                     r"side: 2, no tab: 2\)\)"):
    pairs.load_pairs(data_config(pairs_file=str(path)), seed=0)
