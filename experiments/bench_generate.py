"""Generation speed: key/value cache against full recomputation.

    python experiments/bench_generate.py   # writes results/generate_cpu.md
    python experiments/bench_generate.py \
        --out=experiments/results/generate_gpu.md   # on a GPU

Random weights (speed does not depend on them), vocabulary 65 (the
characters of tinyshakespeare), float32, a one-token prompt. Per model and
batch size (1 and 32):
  cached    `sampling.generate`, 256 tokens: prefill, then one cached step
            per token, sliding the window past max_len (re-prefills count);
  streamed  `sampling.stream` in chunks of 16 tokens, as the CLI prints;
  full      `sampling.generate_uncached`: the whole max_len window is
            recomputed for every token (static shapes, so its cost per token
            is the same from the first token on);
  floor     `weights_only`: one matrix-vector product per weight matrix
            per token and nothing else, the least a cached step must do.
Compilation is excluded; the methods run interleaved, `--repeats` rounds,
and the table shows the median, since the CPU is shared.
"""

import datetime
import functools
import os
import pathlib
import shlex
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments.bench_runners import VOCAB  # noqa: E402
from experiments.bench_throughput import machine  # noqa: E402
from lm_jax.generation import sampling  # noqa: E402
from lm_jax.config import base_config  # noqa: E402
from lm_jax.models.transformer import (  # noqa: E402
    TransformerLM, TransformerSettings)

_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved rounds (median).")
_OUT = flags.DEFINE_string(
    "out", str(pathlib.Path(__file__).parent / "results" / "generate_cpu.md"),
    "Markdown file for the table ('' to skip).")
_NOTE = flags.DEFINE_string("note", "shared with other jobs",
                            "How busy the machine was, for the results file.")

# name -> (model fields, new tokens cached, new tokens full at batch 1, 32)
MODELS = {
    "4L/128/ctx128 (default)": (dict(num_layers=4, num_heads=4, d_model=128,
                                     max_len=128), 256, (32, 8)),
    "4L/128/ctx64 (baby)": (dict(num_layers=4, num_heads=4, d_model=128,
                                 max_len=64), 256, (32, 8)),
    "6L/384/ctx256": (dict(num_layers=6, num_heads=6, d_model=384,
                           max_len=256), 256, (16, 2)),
}
# nanoGPT generate() (no cache), batch 1, on this machine kind (issue 4).
NANOGPT = {"4L/128/ctx64 (baby)": 882, "6L/384/ctx256": 32}
BATCHES = (1, 32)


def _stream_all(params, model, prompt, key, options):
  return np.concatenate(list(sampling.stream(params, model, prompt, key,
                                             options)), axis=1)


def weight_matrices(params) -> list[jax.Array]:
  """The matrices a decoding step multiplies by: kernels and the (tied)
  embedding; not the position table, of which a step reads one row."""
  return [w for path, w in jax.tree_util.tree_leaves_with_path(params)
          if jax.tree_util.keystr(path).endswith(("kernel']", "embedding']"))]


@functools.partial(jax.jit, static_argnames=("steps",))
def weights_only(params, x: jax.Array, steps: int) -> jax.Array:
  """`steps` passes through every weight matrix of `params`, in a chain.

  Per token, cached decoding must at least read every weight once; this is
  that work alone (one matrix-vector product per matrix and nothing else),
  the floor under a cached step's time. x (B, widest matrix input).
  """
  kernels = weight_matrices(params)

  def step(x, _):
    h = x
    for w in kernels:  # each product depends on the last, as in the model
      y = jnp.tanh(h[:, :w.shape[0]] @ w)
      h = jnp.pad(y, ((0, 0), (0, x.shape[1] - y.shape[1])))[:, :x.shape[1]]
    return h, None

  return jax.lax.scan(step, x, None, length=steps)[0]


def bench_model(fields: dict, cached_tokens: int, full_tokens: tuple,
                repeats: int) -> dict:
  """{(method, batch): [tokens per second of each round]}."""
  # The plain GPT (dense attention, learned positions, LayerNorm, GELU).
  plain = {**base_config().model.to_dict(), "attention": "dense"}
  plain.pop("kind")
  model = TransformerLM(vocab_size=VOCAB,
                        settings=TransformerSettings(**{**plain, **fields}))
  params = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
  key = jax.random.key(1)
  runs = {}
  for batch, full_n in zip(BATCHES, full_tokens):
    prompt = jnp.zeros((batch, 1), jnp.int32)
    cached = sampling.SamplingOptions(max_new_tokens=cached_tokens)
    full = sampling.SamplingOptions(max_new_tokens=full_n)
    runs[("cached", batch)] = (lambda p=prompt, o=cached: sampling.generate(
        params, model, p, key, o), batch * cached_tokens)
    runs[("streamed", batch)] = (lambda p=prompt, o=cached: _stream_all(
        params, model, p, key, o), batch * cached_tokens)
    runs[("full", batch)] = (lambda p=prompt, o=full: sampling.generate_uncached(
        params, model, p, key, o), batch * full_n)
    widest = max(w.shape[0] for w in weight_matrices(params))
    x = jnp.ones((batch, widest), jnp.float32)
    runs[("floor", batch)] = (lambda x=x: weights_only(
        params, x, cached_tokens), batch * cached_tokens)
  for fn, _ in runs.values():  # compile
    jax.block_until_ready(fn())
  rates = {name: [] for name in runs}
  for _ in range(repeats):
    for name, (fn, tokens) in runs.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      rates[name].append(tokens / (time.perf_counter() - t0))
  return rates


def table(results: dict) -> str:
  rows = ["| model | batch | cached tok/s | streamed tok/s | full recompute "
          "tok/s | weights-only floor tok/s | cached / full "
          "| cached / nanoGPT |",
          "|---|---|---|---|---|---|---|---|"]
  for name, rates in results.items():
    for batch in BATCHES:
      med = {m: statistics.median(rates[(m, batch)])
             for m in ("cached", "streamed", "full", "floor")}
      on_cpu = jax.default_backend() == "cpu"  # the reference is CPU-only
      ref = NANOGPT.get(name) if batch == 1 and on_cpu else None
      vs_ref = f"{med['cached'] / ref:.0f}x (ref {ref})" if ref else "-"
      rows.append(
          f"| {name} | {batch} | {med['cached']:,.0f} | {med['streamed']:,.0f}"
          f" | {med['full']:,.0f} | {med['floor']:,.0f}"
          f" | {med['cached'] / med['full']:.1f}x | "
          f"{vs_ref} |")
  return "\n".join(rows)


def main(argv):
  del argv
  device = "cpu" if jax.default_backend() == "cpu" else "gpu"
  results = {}
  for name, (fields, cached_n, full_n) in MODELS.items():
    results[name] = bench_model(fields, cached_n, full_n, _REPEATS.value)
    print(table({name: results[name]}), flush=True)
    write(results, device)  # after each model: a cut-short run keeps its rows


def write(results: dict, device: str) -> None:
  text = table(results)
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  header = (
      f"Machine: {machine(device)}, {_NOTE.value}; jax {jax.__version__}; "
      f"{datetime.date.today()}; load average at the end {load:.1f}.\n"
      f"Command: `python experiments/bench_generate.py "
      + shlex.join(sys.argv[1:]) + "`. Random weights, "
      "float32, one-token prompt, 256 new tokens for cached/streamed; median of "
      f"{_REPEATS.value} interleaved rounds, compilation excluded. "
      "nanoGPT reference: its generate() (no cache), batch 1, same machine "
      "kind, context 64 for the small model. Weights-only floor: one "
      "chained matrix-vector product per weight matrix per token and "
      "nothing else (`weights_only`), the least a cached step must do.\n")
  print(header)
  print(text)
  if _OUT.value:
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Generation speed ({device.upper()})\n\n" + header
                   + "\n" + text + "\n")


if __name__ == "__main__":
  app.run(main)
