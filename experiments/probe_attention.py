"""Dense against blocked attention (lm_jax/models/attention.py), paired.

    python experiments/probe_attention.py --part=call   # one attention, fwd+bwd
    python experiments/probe_attention.py --part=step   # 6L/384 T256 B64 step
    python experiments/probe_attention.py --part=long   # 6L/384 T1024 B16 step

Each variant is compiled once, warmed up, then timed in rounds that visit
the variants in turn (so that a busy machine slows all of them alike);
medians are printed with each variant's XLA temp memory (the
`memory_analysis()` of its compiled program: per device, the buffers
besides arguments and outputs, i.e. what the activations and their
gradients cost). `call` runs on one device with the per-device share of
the 6L/384 batch (B 32, H 6, T 256, K 64) unless --batch and --seq-len
say otherwise. `step` and `long` run `lm_jax.training.steps.train_steps` as the
trainer does (one JAX device per core). The peak resident memory printed
last is the whole process's, all variants together.
"""

from __future__ import annotations

import argparse
import functools
import math
import pathlib
import resource
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TILES = (32, 64, 128)


def timed_rounds(fns: dict, rounds: int) -> dict:
  """Median seconds per call of each function, calls interleaved."""
  if not rounds:
    return {}
  for fn in fns.values():  # warm-up
    fn()
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def report(medians: dict, temp_mb: dict, unit: str, per_call: float) -> None:
  """One line per variant; with no timing rounds, the memory only."""
  if not medians:
    for name, mb in temp_mb.items():
      print(f"{name:14s} temp {mb:8.1f} MB")
    return
  first = next(iter(medians))
  for name, sec in medians.items():
    print(f"{name:14s} {sec * 1e3:9.1f} ms  {per_call / sec:10.0f} {unit}  "
          f"{medians[first] / sec:5.2f}x {first}  "
          f"temp {temp_mb[name]:8.1f} MB")
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"peak resident memory of this process: {peak:.2f} GiB")


def temp_mb(compiled) -> float:
  return compiled.memory_analysis().temp_size_in_bytes / 2**20


def attention_call(rounds: int, tiles: tuple, B: int, T: int) -> None:
  """Forward and backward of one attention, 6 heads of 64 (the 6L/384's)."""
  import jax
  import jax.numpy as jnp
  from lm_jax.models.attention import blocked_causal_attention
  H, K = 6, 64

  def dense(q, k, v):
    s = jnp.einsum("bhqk,bhtk->bhqt", q, k) / math.sqrt(K)
    s = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s, -jnp.inf)
    return jnp.einsum("bhqt,bhtk->bhqk", jax.nn.softmax(s, -1), v)

  variants = {"dense": dense}
  for tile in tiles:
    variants[f"blocked {tile}"] = functools.partial(blocked_causal_attention,
                                                    tile=tile)
  args = [jax.random.normal(jax.random.key(i), (B, H, T, K)) for i in range(4)]
  fns, temps = {}, {}
  for name, attn in variants.items():
    loss = lambda q, k, v, w, attn=attn: (attn(q, k, v) * w).sum()
    compiled = jax.jit(jax.grad(loss, (0, 1, 2))).lower(*args).compile()
    temps[name] = temp_mb(compiled)
    fns[name] = lambda c=compiled: jax.block_until_ready(c(*args))
  flops = 4 * B * H * T * T * K * 3 / 2  # fwd + 2x bwd products, causal half
  report(timed_rounds(fns, rounds), temps, "GFLOP/s", flops / 1e9)


def train_step(seq_len: int, batch: int, rounds: int, tiles: tuple,
               dense: bool) -> None:
  """Train steps of the 6-layer/384 model, dense and blocked attention."""
  from lm_jax.cli import process
  process.use_cpu_cores(0, batch)
  import jax
  import numpy as np
  from lm_jax.config import base_config
  from lm_jax.models import make_model
  from lm_jax.training import parallel, steps
  variants = {"dense": dict(attention="dense")} if dense else {}
  variants.update({f"blocked {t}": dict(attention="blocked", attention_tile=t)
                   for t in tiles})
  mesh = parallel.make_mesh(batch)
  tokens = jax.device_put(
      np.random.default_rng(0).integers(0, 65, 1 << 20, np.int32),
      parallel.replicated(mesh))
  kw = dict(batch_size=batch, seq_len=seq_len, num_steps=1,
            batch_sharding=parallel.batch_sharding(mesh))
  fns, temps = {}, {}
  for name, fields in variants.items():
    c = base_config()
    c.model.update(num_layers=6, num_heads=6, d_model=384, max_len=seq_len,
                   **fields)
    c.train.update(batch_size=batch, seq_len=seq_len, steps_per_call=1)
    box = [parallel.place_state(steps.create_train_state(
        make_model(c.model, 65), c.train, jax.random.key(0)), mesh, False)]
    start = time.perf_counter()
    compiled = steps.train_steps.lower(
        box[0], tokens, jax.random.key(1), **kw).compile()
    temps[name] = temp_mb(compiled)
    print(f"{name}: compiled in {time.perf_counter() - start:.1f} s",
          flush=True)

    def run(box=box):
      box[0], metrics = steps.train_steps(box[0], tokens, jax.random.key(1),
                                          **kw)
      jax.device_get(metrics["loss"])
    fns[name] = run
  report(timed_rounds(fns, rounds), temps, "tokens/s", batch * seq_len)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", choices=("call", "step", "long"),
                      default="call")
  parser.add_argument("--rounds", type=int, default=5,
                      help="timed rounds; 0: compile and report memory only")
  parser.add_argument("--tiles", default=",".join(map(str, TILES)),
                      help="step/long: comma-separated tile sizes")
  parser.add_argument("--batch", type=int, default=32,
                      help="call: the batch (32: the 6L/384's per device)")
  parser.add_argument("--seq-len", type=int, default=256, help="call: T")
  parser.add_argument("--blocked-only", action="store_true",
                      help="step/long: no dense variant (the process's peak "
                      "resident memory is then blocked attention's own)")
  args = parser.parse_args()
  tiles = tuple(int(t) for t in args.tiles.split(","))
  if args.part == "call":
    attention_call(args.rounds, tiles, args.batch, args.seq_len)
  elif args.part == "step":
    train_step(256, 64, args.rounds, tiles, not args.blocked_only)
  else:
    train_step(1024, 16, args.rounds, tiles, not args.blocked_only)


if __name__ == "__main__":
  main()
