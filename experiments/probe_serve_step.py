"""The cost of lm-jax-serve's B-row decode step, before and after issue 39.

    python experiments/probe_serve_step.py [--workdir=runs/char_tf]
        [--steps=100] [--rounds=5] [--note="quiet machine"]

Times `lm_jax/serve/engine.py: step` and `engine.py: sharded_step` (the
call the engine's thread makes, warm: compiling excluded) for B = 1, 2, 4,
8, 16 and 32 slots, three ways side by side in one process, interleaved,
median of `--rounds` rounds of `--steps` steps:
  before    the step of issue 38's engine: one JAX device, the filters'
            sorts (top_k, top_p) in every step, and the Transformer reading
            its cache before writing the new position (XLA then copied
            every layer's whole cache twice a step);
  no sorts  one device, the cache written first
            (`lm_jax/models/attention.py: attention_over_cache`), the sorts
            left out when no row asks for a filter (the engine's step now,
            on one device: `lm-jax-serve --cpu_devices=1`);
  after     the engine with `lm-jax-serve --cpu_devices=0`: the slots split
            over one JAX CPU device per core (`--devices`), each core
            decoding its share; B below the device count on the first
            device alone.
With --devices=1 'after' is 'no sorts' (all on one device): compare its
'no sorts' column with a run of the default to see what making two
devices costs the first (one client, prefill).
Each row's GFLOP/s counts 2 x parameters per row (the matrix products, the
tied head included) plus 4 x layers x width x the cache positions read (the
attention reads every cached position, valid or not), and its share of the
float32 matmul peak (a 2048 x 2048 product, measured in the same run on one
device, which runs it on every core). The cost does not depend on the
cache length or the weights: with no run in `--workdir`, the default
char_tf model (configs/char_tf.py) with random weights and the 65
characters of tinyshakespeare.

Writes experiments/results/serve_step_cpu.md (or --out), naming the CPU and
the load. A few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from lm_jax.cli import process  # noqa: E402 (after the path; before JAX starts)

SIZES = (1, 2, 4, 8, 16, 32)
MATMUL_N = 2048
REPO = pathlib.Path(__file__).resolve().parents[1]


def load_model(workdir: str):
  """(model, params, where from): the run in `workdir`, else random."""
  import jax
  import jax.numpy as jnp

  from configs import char_tf
  from lm_jax.errors import UserError
  from lm_jax.models import make_model
  from lm_jax.runs import rundir
  if workdir and pathlib.Path(workdir).is_dir():
    try:
      run = rundir.load_run(workdir)
      return run.model, run.params, f"the run in {workdir} (step {run.step})"
    except UserError:
      pass
  config = char_tf.get_config()
  model = make_model(config.model, 65)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  return (model, params["params"],
          "the default char_tf model with random weights (no run in "
          f"{workdir or '--workdir'})")


def cache_read_first(model):
  """`model` deciding as before issue 39: its layers never write the cache
  (the caller writes it after the step has read it)."""
  import dataclasses
  if not hasattr(model, "writes_cache"):
    return model
  before = type("ReadFirst" + type(model).__name__, (type(model),),
                {"writes_cache": lambda self, state, T: False})
  return before(**{f.name: getattr(model, f.name)
                   for f in dataclasses.fields(model)
                   if f.init and f.name not in ("parent", "name")})


def matmul_gflops(repeats: int = 5) -> float:
  """float32 MATMUL_N^2 product GFLOP/s, best of `repeats`, on device 0."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (MATMUL_N, MATMUL_N), jnp.float32)
  mm = jax.jit(lambda x: x @ x)
  mm(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    mm(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * MATMUL_N**3 / best / 1e9


def row_flops(model, params) -> float:
  """FLOPs of one row's decode step (see the module docstring)."""
  import jax
  n = sum(x.size for x in jax.tree.leaves(params))
  s = model.settings
  return 2 * n + 4 * s.num_layers * s.d_model * s.max_len


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/char_tf")
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--devices", type=int, default=0,
                      help="JAX CPU devices of 'after' (0: one per core)")
  parser.add_argument("--note", default="",
                      help="the load, e.g. 'quiet machine'")
  parser.add_argument("--out", default=str(
      REPO / "experiments/results/serve_step_cpu.md"))
  args = parser.parse_args()
  process.use_cpu_cores(args.devices, 32)

  import jax
  import jax.numpy as jnp
  import numpy as np

  from experiments.bench_throughput import machine
  from lm_jax.serve import engine

  model, params, origin = load_model(args.workdir)
  devices = jax.local_device_count()
  mesh = engine.slot_mesh()
  split_params = jax.device_put(params, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))
  first = jax.devices()[0]
  old_model = cache_read_first(model)

  def runner(path: str, B: int):
    """A function running `args.steps` steps of B slots, and its slots."""
    split = path == "after" and B >= devices and B % devices == 0
    slots = engine.empty_slots(model, B)
    options = (jnp.full((B,), 0.8), jnp.zeros((B,), jnp.int32),
               jnp.ones((B,)))
    if split:
      slots, options = engine.shard_slots((slots, options), mesh)
    else:
      slots, options = jax.device_put((slots, options), first)
    box = [slots]

    def run():
      slots = box[0]
      for _ in range(args.steps):
        if split:
          slots, tokens, *_ = engine.sharded_step(
              split_params, model, slots, *options, mesh=mesh,
              filtering=False)
        else:
          slots, tokens, *_ = engine.step(
              params, old_model if path == "before" else model, slots, 0,
              *options, size=B, filtering=path == "before")
      np.asarray(tokens)  # the engine reads the tokens every step
      box[0] = slots
    return run

  paths = ("before", "no sorts", "after")
  runs = {(p, B): runner(p, B) for p in paths for B in SIZES}
  for run in runs.values():  # compile
    run()
  peak = matmul_gflops()
  times: dict = {key: [] for key in runs}
  for r in range(args.rounds):
    for key, run in runs.items():
      t = time.perf_counter()
      run()
      times[key].append((time.perf_counter() - t) / args.steps)
    print(f"round {r + 1}/{args.rounds}: " + ", ".join(
        f"{p} B=32 {times[(p, 32)][-1] * 1e3:.2f} ms" for p in paths),
        flush=True)
  peak = max(peak, matmul_gflops())
  flops = row_flops(model, params)
  load = os.getloadavg()
  command = "python experiments/probe_serve_step.py " + " ".join(
      sys.argv[1:])
  lines = [
      "# lm-jax-serve's B-row decode step: before and after issue 39", "",
      f"`{command.strip()}`: {origin}, "
      f"{sum(x.size for x in jax.tree.leaves(params)):,} parameters, "
      f"context {model.context_length}; median of {args.rounds} rounds of "
      f"{args.steps} warm steps, the three ways interleaved "
      "(experiments/probe_serve_step.py says what each is).", "",
      f"Machine: {machine()}; {devices} JAX CPU devices for 'after'; jax "
      f"{jax.__version__}; load average {load[0]:.1f} / {load[1]:.1f} / "
      f"{load[2]:.1f} (1 / 5 / 15 min) at the end"
      f"{'; ' + args.note if args.note else ''}.", "",
      f"float32 matmul peak ({MATMUL_N} squared, one device, all cores), "
      f"measured in this run: {peak:.0f} GFLOP/s. One row's step: "
      f"{flops / 1e6:.2f} MFLOP.", "",
      "| B | " + " | ".join(f"{p}: ms, GFLOP/s, % peak" for p in paths) +
      " | after vs before |",
      "|---|" + "---|" * (len(paths) + 1)]
  for B in SIZES:
    cells = []
    for p in paths:
      t = statistics.median(times[(p, B)])
      g = flops * B / t / 1e9
      cells.append(f"{t * 1e3:.2f} ms, {g:.1f}, {100 * g / peak:.0f}%")
    ratio = (statistics.median(times[("before", B)]) /
             statistics.median(times[("after", B)]))
    lines.append(f"| {B} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
  one = statistics.median(times[("after", 1)])
  lines += ["", "Tokens per second of a full batch against one row (after): "
            + ", ".join(f"B={B} {B * one / statistics.median(times[('after', B)]):.1f}x"
                        for B in SIZES[1:]) +
            " (the 32-client goal, 6x, needs the 32-row step within "
            f"{32 * one / 6 * 1e3:.2f} ms here)."]
  text = "\n".join(lines) + "\n"
  pathlib.Path(args.out).write_text(text)
  print(text)


if __name__ == "__main__":
  main()
