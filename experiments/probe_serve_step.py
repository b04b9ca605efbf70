"""Why lm-jax-serve keeps only as many slots as a step needs: the cost of a
one-row decode step (`lm_jax/serve/engine.py: step`) that slices one slot
out of S and writes it back, against S = 1 where the step covers them all.

    python experiments/probe_serve_step.py --workdir=runs/char_tf
"""

import argparse
import time

import jax.numpy as jnp

from lm_jax.runs import rundir
from lm_jax.serve import engine


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/char_tf")
  parser.add_argument("--steps", type=int, default=100)
  args = parser.parse_args()
  run = rundir.load_run(args.workdir)
  options = (jnp.full((1,), 0.8), jnp.zeros((1,), jnp.int32), jnp.ones((1,)))
  for slots_count in (1, 32):
    slots = engine.empty_slots(run.model, slots_count)
    for timed in (False, True):  # the first round compiles
      start = time.perf_counter()
      for _ in range(args.steps):
        slots, tokens, *_ = engine.step(run.params, run.model, slots, 0,
                                        *options, size=1)
      tokens.block_until_ready()
    ms = (time.perf_counter() - start) / args.steps * 1e3
    print(f"{slots_count} slots: {ms:.2f} ms per one-row step")


if __name__ == "__main__":
  main()
