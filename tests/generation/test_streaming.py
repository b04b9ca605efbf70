"""lm_jax/generation/sampling.py: stream: text as it is produced, whole
characters only."""

import statistics
import time

import numpy as np
import pytest

from lm_jax.data.tokenizers import WordTokenizer
from lm_jax.generation import sampling
from lm_jax.generation.sampling import SamplingOptions


def _fake_stream(chunks, times):
  """Stands in for `sampling.stream`: yields `chunks`, noting when each is
  asked for (the gap between two is what generate_text spent on one)."""
  def stream(params, model, prompt, key, options, chunk_tokens):
    for chunk in chunks:
      times.append(time.perf_counter())
      yield chunk
    times.append(time.perf_counter())
  return stream


class Bytes:
  """A byte-level tokenizer: a character may take several tokens."""
  byte_level = True

  def token_bytes(self, i: int) -> bytes:
    return bytes([i])

  def decode(self, ids) -> str:
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def test_streaming_is_linear_and_matches_a_whole_decode(monkeypatch):
  """100,000 tokens in chunks of 16: the last chunks cost what the first
  did (the old code decoded the whole text again for each: ~50 s)."""
  words = ("the quick brown fox , jumps - over ( the ) lazy dog .\n"
           "\u4e2d \u6587 o'er 'tis").split(" ")
  tokenizer = WordTokenizer.build(" ".join(words + ["\n"]))
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, tokenizer.vocab_size, size=(1, 100_000))
  chunks = np.split(tokens, 100_000 // 16, axis=1)
  times, pieces = [], []
  monkeypatch.setattr(sampling, "stream", _fake_stream(chunks, times))
  prompt = tokenizer.encode("the fox")
  options = SamplingOptions(max_new_tokens=100_000)
  text, = sampling.generate_text(None, None, tokenizer, prompt, None, options,
                                 stop="@@", on_text=pieces.append)
  skip = len(tokenizer.decode(prompt))
  assert text == tokenizer.decode(np.concatenate([prompt, tokens[0]]))[skip:]
  assert "".join(pieces) == text
  gaps = np.diff(times)
  first, last = statistics.median(gaps[:300]), statistics.median(gaps[-300:])
  assert last < 2 * first, (first, last)


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_streaming_waits_for_the_rest_of_a_character(monkeypatch, chunk):
  text = "a\u4e2d\u6587b\U0001f600c"
  ids = np.frombuffer(text.encode(), np.uint8).astype(np.int32)[None]
  chunks = [ids[:, i:i + chunk] for i in range(0, ids.shape[1], chunk)]
  monkeypatch.setattr(sampling, "stream", _fake_stream(chunks, []))
  pieces = []
  out, = sampling.generate_text(None, None, Bytes(), np.array([62]), None,
                                SamplingOptions(max_new_tokens=ids.shape[1]),
                                stop="c", on_text=pieces.append)
  assert out == "a\u4e2d\u6587b\U0001f600"
  assert "".join(pieces) == out and "\ufffd" not in "".join(pieces)
