"""LSTM training throughput: lm_jax against a PyTorch `nn.LSTM` twin.

    python -m experiments.bench_lstm --hidden=256,512
    python -m experiments.bench_lstm --device=gpu \
        --out=experiments/results/lstm_gpu.md

Both sides train the same model (embedding 128, 2 LSTM layers, linear head,
cross-entropy, Adam, global-norm clipping at 1.0) on random windows of a
random token array, same batch and sequence length, in one process. The
frameworks take turns (interleaved) for `--repeats` rounds, warm-up
excluded; each prints its median tokens/s and, against PyTorch, the median
and range of the rounds' ratios.

`--variants` picks JAX implementations to compare: `lm_jax` (the repo's
model, hoisted input projection and hand-written backward), `autodiff` (the
same forward, backward by JAX autodiff through `lax.scan`), `flax_rnn`
(`nn.RNN(nn.OptimizedLSTMCell)`, input projection inside the loop).
The functions are importable: `jax_runner`, `torch_runner`, `measure`,
`summarize`.
"""

from __future__ import annotations

import pathlib
import shlex
import statistics
import sys
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import app, flags

from experiments.bench_runners import VOCAB
from lm_jax import config as config_lib
from lm_jax.models import lstm
from lm_jax.models.base import LanguageModel
from lm_jax.training import steps

NUM_TOKENS = 1_000_000
TORCH = "torch nn.LSTM"


class FlaxRNNLM(LanguageModel):
  """The stock Flax recipe: `nn.RNN(nn.OptimizedLSTMCell)` per layer (only
  `__call__` of the interface: it trains, it does not decode)."""
  num_layers: int
  embed_dim: int
  hidden_size: int
  dropout: float

  @nn.compact
  def __call__(self, tokens, train: bool = False):
    x = nn.Embed(self.vocab_size, self.embed_dim)(tokens)
    for _ in range(self.num_layers):
      x = nn.RNN(nn.OptimizedLSTMCell(self.hidden_size))(x)
    return nn.Dense(self.vocab_size)(x)


def lstm_model(variant: str, hidden: int) -> LanguageModel:
  """The model of a JAX variant, as char_lstm's sizes (embedding 128, 2
  layers) at hidden size `hidden`."""
  sizes = dict(num_layers=2, embed_dim=128, hidden_size=hidden, dropout=0.0)
  if variant == "flax_rnn":
    return FlaxRNNLM(vocab_size=VOCAB, **sizes)
  return lstm.LSTMLM(vocab_size=VOCAB, settings=lstm.LSTMSettings(
      **sizes, hand_written_backward=variant == "lm_jax"))


VARIANTS = ("lm_jax", "autodiff", "flax_rnn")


def train_config(batch_size: int, seq_len: int, steps_per_call: int):
  """The repo's train settings with plain Adam (no decay), as the twin."""
  c = config_lib.base_config().train
  c.batch_size, c.seq_len, c.steps_per_call = batch_size, seq_len, steps_per_call
  c.weight_decay, c.grad_clip, c.learning_rate = 0.0, 1.0, 2e-3
  return c


def jax_runner(hidden: int, batch_size: int = 64, seq_len: int = 100,
               steps_per_call: int = 16, variant: str = "lm_jax"
               ) -> Callable[[int], None]:
  """A function that trains `n` steps (a multiple of steps_per_call)."""
  model = lstm_model(variant, hidden)
  t = train_config(batch_size, seq_len, steps_per_call)
  key = jax.random.key(0)
  box = [steps.create_train_state(model, t, key)]
  tokens = jax.random.randint(key, (NUM_TOKENS,), 0, VOCAB)

  def run(n: int) -> None:
    for _ in range(n // steps_per_call):
      box[0], metrics = steps.train_steps(
          box[0], tokens, key, batch_size=batch_size, seq_len=seq_len,
          num_steps=steps_per_call)
    jax.block_until_ready(metrics)

  return run


def torch_runner(hidden: int, batch_size: int = 64, seq_len: int = 100,
                 device: str = "cpu") -> Callable[[int], None]:
  """The PyTorch twin: embedding, `nn.LSTM` (oneDNN on CPU, cuDNN on a GPU),
  linear head; `device` is a torch device name."""
  import torch
  torch.manual_seed(0)
  embed = torch.nn.Embedding(VOCAB, 128).to(device)
  rnn = torch.nn.LSTM(128, hidden, num_layers=2, batch_first=True).to(device)
  head = torch.nn.Linear(hidden, VOCAB).to(device)
  params = [*embed.parameters(), *rnn.parameters(), *head.parameters()]
  opt = torch.optim.Adam(params, lr=2e-3)
  tokens = torch.randint(0, VOCAB, (NUM_TOKENS,), device=device)
  window = torch.arange(seq_len + 1, device=device)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def run(n: int) -> None:
    for _ in range(n):
      starts = torch.randint(0, NUM_TOKENS - seq_len - 1, (batch_size, 1),
                             device=device)
      windows = tokens[starts + window]
      x, y = windows[:, :-1], windows[:, 1:]
      logits = head(rnn(embed(x))[0])
      loss = torch.nn.functional.cross_entropy(
          logits.reshape(-1, VOCAB), y.reshape(-1))
      opt.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(params, 1.0)
      opt.step()
    sync()

  return run


def measure(runners: dict[str, Callable[[int], None]], num_steps: int,
            repeats: int, tokens_per_step: int) -> dict[str, list[float]]:
  """Tokens/s of each runner in each of `repeats` rounds; within a round
  the runners take turns. One warm-up call each first."""
  for run in runners.values():
    run(num_steps)
  rates = {name: [] for name in runners}
  for _ in range(repeats):
    for name, run in runners.items():
      start = time.perf_counter()
      run(num_steps)
      rates[name].append(num_steps * tokens_per_step /
                         (time.perf_counter() - start))
  return rates


def summarize(rates: list[float], reference: list[float]) -> tuple[float, str]:
  """The median tokens/s, and the ratio to the reference runner: the median
  of the rounds' ratios with their range. A round's two runs follow each
  other, so its ratio is spared most of the machine's slower drifts."""
  ratios = sorted(a / b for a, b in zip(rates, reference))
  ratio = (f"{statistics.median(ratios):.2f}x "
           f"({ratios[0]:.2f}-{ratios[-1]:.2f})")
  return statistics.median(rates), ratio


_HIDDEN = flags.DEFINE_list("hidden", ["256", "512"], "Hidden sizes.")
_VARIANTS = flags.DEFINE_list("variants", ["lm_jax"],
                              f"JAX variants, of {sorted(VARIANTS)}.")
_STEPS_PER_CALL = flags.DEFINE_list("steps_per_call", ["16"],
                                    "JAX train steps per jitted call.")
_TORCH = flags.DEFINE_bool("torch", True, "Include the PyTorch twin.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 16, "Steps per timing.")
_REPEATS = flags.DEFINE_integer("repeats", 5,
                                "Rounds: one timing per runner each.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_SEQ = flags.DEFINE_integer("seq_len", 100, "Sequence length.")
_DEVICE = flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"],
                            "Where both frameworks run.")
_OUT = flags.DEFINE_string(
    "out", "", "Also write the table to this Markdown file "
    "(e.g. experiments/results/lstm_gpu.md).")


def main(argv):
  del argv
  B, T = _BATCH.value, _SEQ.value
  from experiments.bench_runners import set_tf32
  from experiments.bench_throughput import machine
  if _DEVICE.value == "cpu":
    jax.config.update("jax_platforms", "cpu")
  else:  # float32 products on TF32 tensor cores on both sides
    set_tf32("jax")
    set_tf32("torch")
  where = machine(_DEVICE.value)
  header = (f"batch {B}, sequence {T}, embedding 128, 2 layers; {where}; "
            f"jax {jax.__version__} on {jax.devices()[0].platform}")
  print(header, flush=True)
  lines = [f"# LSTM training throughput, JAX vs PyTorch ({_DEVICE.value})", "",
           header, "", "Command: `python -m experiments.bench_lstm " +
           shlex.join(sys.argv[1:]) + "`", "",
           "| hidden | runner | tokens/s (median) "
           "| / torch (median of rounds, range) |", "|---|---|---|---|"]
  for hidden in map(int, _HIDDEN.value):
    runners = {f"jax {v} spc={k}": jax_runner(hidden, B, T, int(k), v)
               for v in _VARIANTS.value for k in _STEPS_PER_CALL.value}
    if _TORCH.value:
      runners[TORCH] = torch_runner(
          hidden, B, T, "cuda" if _DEVICE.value == "gpu" else "cpu")
    rates = measure(runners, _NUM_STEPS.value, _REPEATS.value, B * T)
    reference = rates.get(TORCH, [float("nan")] * _REPEATS.value)
    for name, rs in rates.items():
      rate, ratio = summarize(rs, reference)
      print(f"hidden {hidden} | {name:24s} | {rate:9,.0f} tokens/s | {ratio}",
            flush=True)
      lines.append(f"| {hidden} | {name} | {rate:,.0f} | {ratio} |")
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text("\n".join(lines) + "\n")
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
