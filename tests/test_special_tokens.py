"""lm_jax/special_tokens.py: the special ids, fixed, and the tokenizers
that reserve them."""

from lm_jax import special_tokens as st
from lm_jax.data import tokenizers


def test_the_ids_are_the_positions_in_the_vocabulary():
  assert st.SPECIALS == (st.UNK, st.PAD, st.BOS, st.EOS)
  assert [st.UNK_ID, st.PAD_ID, st.BOS_ID, st.EOS_ID, st.MASK_ID] == list(
      range(5))
  assert st.MASKED_SPECIALS == st.SPECIALS + (st.MASK,)


def test_tokenizers_reserve_them_in_that_order():
  for kind in ("char", "word"):
    plain = tokenizers.build_tokenizer(kind, "ab ba")
    assert plain.vocab[st.UNK_ID] == st.UNK and st.PAD not in plain.vocab
    pairs = tokenizers.build_tokenizer(kind, "ab ba", specials=True)
    assert pairs.vocab[:4] == list(st.SPECIALS)
    masked = tokenizers.build_tokenizer(kind, "ab ba", mask=True)
    assert masked.vocab[:5] == list(st.MASKED_SPECIALS)
