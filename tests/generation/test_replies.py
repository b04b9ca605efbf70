"""An encoder-decoder's replies (lm_jax/generation/replies.py): prompts
encoded into padded sources, refused when empty, unknown or too long, and
each row's ids before EOS decoded. (A trained model's replies:
tests/models/test_seq2seq.py.)"""

import numpy as np
import pytest

from lm_jax.data.tokenizers import EOS_ID, PAD_ID, CharTokenizer
from lm_jax.errors import UserError
from lm_jax.generation import replies


def test_prompts_become_padded_sources_and_replies_end_at_eos():
  tok = CharTokenizer.build("abc", specials=True)
  src = replies.encode_prompts(tok, ["ab", "cab"], 4)
  assert src.dtype == np.int32 and src.shape == (2, 4)
  np.testing.assert_array_equal(src[0, :2], tok.encode("ab"))
  assert list(src[0, 2:]) == [PAD_ID, PAD_ID]
  for prompts, says in ((["  "], "the prompt is empty"),
                        (["abz"], "not in the model.s vocabulary"),
                        (["abcab"], "has 5 tokens, more than the encoder")):
    with pytest.raises(UserError, match=says):
      replies.encode_prompts(tok, prompts, 4)
  ids = np.array([[*tok.encode("ba"), EOS_ID, PAD_ID],
                  [*tok.encode("ccc"), EOS_ID]])
  assert replies.reply_texts(tok, ids) == ["ba", "ccc"]
