"""Where the 6-layer/384 step's time goes: its matrix products alone.

    python experiments/probe_products.py            # 6L/384, T 256, B 64
    python experiments/probe_products.py --rows=4096 --repeats=3

A training step of the 6-layer/384 Transformer (T 256, B 64: 16,384 token
rows) is mostly dense products: per layer q/k/v (384 -> 1152), the
attention's output projection (384 -> 384), the MLP (384 -> 1536 -> 384),
and the head (384 -> 65) once; each runs forward (x w), and backward for
the inputs (dy w^T) and the weights (x^T dy). This probe times exactly
those products, at the step's shapes, in three workers:

  torch     PyTorch (MKL/oneDNN), all cores, as its eager step runs them;
  jax       XLA, one device for all cores;
  jax_2dev  XLA, one device per core, rows split between them and the
            weight products added across them, as `lm_jax.train` runs.

It prints GFLOP/s per product and what the products of one step add up to
in each, next to the whole step's time in experiments/results/cpu.md: the
gap that the products explain, and the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
D, LAYERS, VOCAB = 384, 6, 65
# (name, fan-in, fan-out, uses per step)
MATRICES = [("qkv", D, 3 * D, LAYERS), ("attn proj", D, D, LAYERS),
            ("mlp fc", D, 4 * D, LAYERS), ("mlp proj", 4 * D, D, LAYERS),
            ("head", D, VOCAB, 1)]
FORMS = ("x w", "dy w^T", "x^T dy")


def worker(framework: str, rows: int, repeats: int) -> dict:
  """{"name form": seconds} for every product, median of `repeats`."""
  if framework == "torch":
    import torch
    torch.manual_seed(0)
    make = lambda *shape: torch.randn(*shape)
    forms = {"x w": lambda x, w, dy: x @ w, "dy w^T": lambda x, w, dy: dy @ w.T,
             "x^T dy": lambda x, w, dy: x.T @ dy}
    sync = lambda y: y
  else:
    if framework == "jax_2dev":
      from lm_jax.cli import process
      process.use_cpu_cores(0, rows)
    import jax
    import numpy as np
    from lm_jax.training import parallel
    mesh = parallel.make_mesh(rows)  # as the trainer's
    by_rows, whole = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    rng = np.random.default_rng(0)

    def make(*shape):  # rows split across devices, weights replicated
      a = rng.standard_normal(shape, np.float32)
      return jax.device_put(a, by_rows if shape[0] == rows else whole)

    forms = {name: jax.jit(f) for name, f in (
        ("x w", lambda x, w, dy: x @ w), ("dy w^T", lambda x, w, dy: dy @ w.T),
        ("x^T dy", lambda x, w, dy: x.T @ dy))}
    sync = lambda y: y.block_until_ready()
  times = {}
  for name, fan_in, fan_out, _ in MATRICES:
    x, w, dy = make(rows, fan_in), make(fan_in, fan_out), make(rows, fan_out)
    for form in FORMS:
      f = forms[form]
      sync(f(x, w, dy))  # compile, warm up
      runs = []
      for _ in range(repeats):
        start = time.perf_counter()
        sync(f(x, w, dy))
        runs.append(time.perf_counter() - start)
      times[f"{name} {form}"] = statistics.median(runs)
  return times


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=64 * 256)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--framework", help=argparse.SUPPRESS)  # a worker
  args = parser.parse_args()
  if args.framework:
    print(json.dumps(worker(args.framework, args.rows, args.repeats)))
    return
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  results = {}
  for fw in ("torch", "jax", "jax_2dev"):  # one process each, one at a time
    out = subprocess.run(
        [sys.executable, __file__, f"--framework={fw}", f"--rows={args.rows}",
         f"--repeats={args.repeats}"], env=env, check=True,
        capture_output=True, text=True).stdout
    results[fw] = json.loads(out.strip().splitlines()[-1])
  print(f"6L/384 products at {args.rows:,} token rows, median of "
        f"{args.repeats}: GFLOP/s")
  print(f"{'product':22s}" + "".join(f"{fw:>10s}" for fw in results))
  step = {fw: 0.0 for fw in results}
  for name, fan_in, fan_out, uses in MATRICES:
    flops = 2 * args.rows * fan_in * fan_out
    for form in FORMS:
      key = f"{name} {form}"
      print(f"{key:22s}" + "".join(
          f"{flops / results[fw][key] / 1e9:10.0f}" for fw in results))
      for fw in results:
        step[fw] += uses * results[fw][key]
  print(f"{'one step, s':22s}" + "".join(f"{step[fw]:10.2f}" for fw in step))


if __name__ == "__main__":
  main()
