"""Cached decoding equals full recomputation; the generic loop, text, CLI."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.data import tokenizers
from lm_jax.data.tokenizers import CharTokenizer
from lm_jax.errors import UserError
from lm_jax.generation import sampling
from lm_jax.generation.sampling import SamplingOptions
from lm_jax.models import make_model
from lm_jax.models.base import LanguageModel

from conftest import run_command

V = 11
GREEDY = SamplingOptions(max_new_tokens=70, temperature=0)


def _model_and_params(config, vary: bool = True, **overrides):
  """The smoke Transformer (W = 32); `vary`: weights large enough to vary."""
  config.model.update(overrides)
  model = make_model(config.model, V)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  if not vary:
    return model, params
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(5), len(leaves))
  # Random init gives near-uniform logits and greedy repeats one token.
  params = jax.tree.unflatten(tree, [jax.random.normal(k, x.shape)
                                     for k, x in zip(keys, leaves)])
  return model, params


def _prompt(length, batch=2):
  return jax.random.randint(jax.random.key(length), (batch, length), 0, V)


@pytest.mark.slow
@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_extend_equals_full_pass(smoke_config, scan, dtype):
  model, params = _model_and_params(smoke_config, vary=False, scan_layers=scan,
                                    dtype=dtype)
  tokens = jax.random.randint(jax.random.key(1), (2, 32), 0, V)
  full = model.apply({"params": params}, tokens)
  state = model.initial_state(2)  # unbound: needs no params
  extend = jax.jit(lambda t, s: model.apply({"params": params}, t, s,
                                            method=model.extend))
  logits, state = extend(tokens[:, :10], state)  # prefill
  pieces = [logits]
  for t in range(10, 32):  # then one position per call
    logits, state = extend(tokens[:, t:t + 1], state)
    pieces.append(logits)
  assert int(state["length"]) == 32
  np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full,
                             atol=1e-5 if dtype == "float32" else 1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("prompt_len", [5, 32, 45])  # <, = and > max_len
def test_cached_greedy_equals_full_recomputation(smoke_config, prompt_len):
  model, params = _model_and_params(smoke_config)
  prompt = _prompt(prompt_len)
  key = jax.random.key(0)
  cached = sampling.generate(params, model, prompt, key, GREEDY)
  full = sampling.generate_uncached(params, model, prompt, key, GREEDY)
  assert cached.shape == (2, 70)  # runs well past max_len = 32
  np.testing.assert_array_equal(cached, full)
  assert len(np.unique(cached)) > 1  # not one token repeated


@pytest.mark.slow
def test_sliding_rule(smoke_config):
  """Each token comes from the context the module docstring defines."""
  model, params = _model_and_params(smoke_config)
  W, keep = model.context_length, model.context_length // 2
  prompt = _prompt(40, batch=1)
  got = np.asarray(sampling.generate(params, model, prompt, jax.random.key(0),
                                     GREEDY))[0]
  seq = list(np.asarray(prompt)[0])
  start = len(seq) - W  # rule 1: the prompt's last W tokens
  # Causal: padding after the context changes nothing, and keeps one shape.
  score = jax.jit(lambda x: model.apply({"params": params}, x[None])[0])
  for _ in range(70):
    if len(seq) - start > W:  # rule 2: slide to the last W // 2 tokens
      start = len(seq) - keep
    context = seq[start:]
    logits = score(jnp.asarray(context + [0] * (W - len(context))))
    seq.append(int(jnp.argmax(logits[len(context) - 1])))
  np.testing.assert_array_equal(got, seq[40:])


@pytest.mark.slow
def test_scanned_model_decodes_the_same(smoke_config):
  loop, params = _model_and_params(smoke_config.copy_and_resolve_references())
  from lm_jax.models.transformer import stack_layers
  scan = make_model(dict(smoke_config.model, scan_layers=True), V)
  stacked = stack_layers(params, loop.settings.num_layers)
  prompt, key = _prompt(20), jax.random.key(0)
  np.testing.assert_array_equal(
      sampling.generate(stacked, scan, prompt, key, GREEDY),
      sampling.generate(params, loop, prompt, key, GREEDY))


@pytest.mark.slow
def test_sampling_same_key_same_tokens_streamed_or_not(smoke_config):
  model, params = _model_and_params(smoke_config)
  options = SamplingOptions(max_new_tokens=50, temperature=1.0, top_k=5)
  prompt = _prompt(10, batch=3)
  run = lambda seed: np.asarray(sampling.generate(
      params, model, prompt, jax.random.key(seed), options))
  a = run(1)
  np.testing.assert_array_equal(a, run(1))
  assert not np.array_equal(a, run(2))
  assert not np.array_equal(a[0], a[1])  # rows are independent samples
  # The cache changes no random draw, and chunks change nothing.
  np.testing.assert_array_equal(a, sampling.generate_uncached(
      params, model, prompt, jax.random.key(1), options))
  chunks = list(sampling.stream(params, model, prompt, jax.random.key(1),
                                options, chunk_tokens=16))
  assert [c.shape[1] for c in chunks] == [16, 16, 16, 2]
  np.testing.assert_array_equal(np.concatenate(chunks, axis=1), a)


class CountingBigram(LanguageModel):
  """A fake recurrent model: logits = table[token] + bias[tokens seen % 3].

  No context_length, so the sampler's generic path runs it with no window.
  """
  vocab_size: int = V

  @nn.compact
  def forward(self, tokens, seen):  # (B, T) int, (B,) int
    table = self.param("table", nn.initializers.normal(3.0),
                       (self.vocab_size, self.vocab_size))
    bias = self.param("bias", nn.initializers.normal(3.0), (3, self.vocab_size))
    count = seen[:, None] + jnp.arange(tokens.shape[1])  # (B, T)
    return table[tokens] + bias[count % 3]  # (B, T, V)

  def __call__(self, tokens):
    return self.forward(tokens, jnp.zeros(tokens.shape[0], jnp.int32))

  def initial_state(self, batch_size):
    return jnp.zeros(batch_size, jnp.int32)

  def extend(self, tokens, state):
    return self.forward(tokens, state), state + tokens.shape[1]


def test_generic_interface_with_a_fake_model():
  model = CountingBigram()
  params = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  prompt = _prompt(6)
  got = sampling.generate(params, model, prompt, jax.random.key(0), GREEDY)
  # Greedy: each new token is the argmax of a full pass over what precedes it.
  seq = jnp.concatenate([prompt, got], axis=1)
  full = model.apply({"params": params}, seq[:, :-1])  # (B, 6 + 70 - 1, V)
  np.testing.assert_array_equal(got, jnp.argmax(full[:, 5:], axis=-1))
  assert len(np.unique(got)) > 1


class Cycle(LanguageModel):
  """A fake model whose greedy continuation of token i is i + 1 (mod V)."""

  def setup(self):
    self.unused = self.param("unused", nn.initializers.zeros, ())

  def initial_state(self, batch_size):
    return jnp.zeros(batch_size, jnp.int32)

  def extend(self, tokens, state):
    logits = 10.0 * jax.nn.one_hot((tokens + 1) % self.vocab_size,
                                   self.vocab_size) + self.unused
    return logits, state + tokens.shape[1]


@pytest.mark.parametrize("chunk_tokens", [1, 3, 16])
def test_stop_string_and_streamed_text(chunk_tokens):
  tokenizer = CharTokenizer.build("abcdef")  # ids: <unk> a b c d e f
  model = Cycle(tokenizer.vocab_size)
  params = {"unused": jnp.zeros(())}
  options = SamplingOptions(max_new_tokens=40, temperature=0)
  pieces = []
  a = tokenizer.encode("a")
  texts = sampling.generate_text(
      params, model, tokenizer, a, jax.random.key(0), options,
      num_samples=2, stop="ef", on_text=pieces.append,
      chunk_tokens=chunk_tokens)
  assert texts == ["bcd", "bcd"]
  assert "".join(pieces) == "bcd"  # "e" was held back, never shown
  no_stop = sampling.generate_text(params, model, tokenizer, a,
                                   jax.random.key(0), options)
  assert len(no_stop[0]) == 40 and no_stop[0].startswith("bcdef\ufffdabc")


def test_unknown_characters_and_empty_prompt():
  tokenizer = CharTokenizer.build("abc")
  with pytest.raises(UserError, match=r"'x', 'z'"):
    tokenizers.encode_prompt(tokenizer, "abzx")
  with pytest.raises(UserError, match="no tokens"):
    tokenizers.encode_prompt(tokenizer, "")


def _sample(workdir, *flags, stdin=None):
  return run_command("lm_jax.sample", f"--workdir={workdir}", *flags,
                     stdin=stdin)


@pytest.mark.slow
def test_interactive_loop_through_stdin(smoke_run):
  stdin = "/temp 0\nLINE\n/len 5\nLI~NE\n/bogus\n\nLINE\n/quit\nLINE\n"
  out = _sample(smoke_run, "--interactive", "--max_new_tokens=20", stdin=stdin)
  assert out.returncode == 0, out.stderr
  assert "Traceback" not in out.stderr
  assert "temperature 0.0, length 20" in out.stdout
  assert "error: character(s) not in the model's vocabulary: '~'" in out.stdout
  assert "error: unknown command '/bogus'" in out.stdout
  assert out.stdout.count("> ") == 8  # /quit left: the last line unread
  # Greedy: the 5-token continuation begins the 20-token one.
  # (The continuations may hold newlines: split at the prompts.)
  long, short = [s.removesuffix("\n") for s in out.stdout.split("> ")
                 if s.startswith("LINE")]
  assert len(long) == 4 + 20 and len(short) == 4 + 5 and long.startswith(short)


@pytest.mark.slow
def test_command_line_stop_and_seed(smoke_run):
  args = ("--prompt=LINE", "--max_new_tokens=60", "--seed=3", "--top_p=0.9")
  out = _sample(smoke_run, *args)
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith("LINE") and len(out.stdout) == 4 + 60 + 1
  assert _sample(smoke_run, *args).stdout == out.stdout  # same seed, same text
  stop = out.stdout[6:8]  # two characters that occur in the sample
  cut = _sample(smoke_run, *args, f"--stop={stop}")
  assert cut.stdout == out.stdout[:out.stdout.index(stop, 4)] + "\n"


def test_a_length_limit_inside_a_character_shows_no_replacement_character():
  """The command line's text (generate_text) holds a character's bytes back
  and leaves out the one the limit cuts short: never U+FFFD."""
  class Spelt:  # byte-level: the model cycles a, \xd0, \xbc (\xd0\xbc: м)
    byte_level, vocab_size = True, 3
    token_bytes = staticmethod([b"a", b"\xd0", b"\xbc"].__getitem__)
  tokenizer = Spelt()
  model = Cycle(3)
  params = {"unused": jnp.zeros(())}
  pieces = []
  texts = sampling.generate_text(
      params, model, tokenizer, jnp.asarray([0]), jax.random.key(0),
      SamplingOptions(max_new_tokens=4, temperature=0), on_text=pieces.append)
  assert texts == ["мa"] and "".join(pieces) == "мa"
