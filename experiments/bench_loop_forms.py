"""The train steps' two on-device loop forms, side by side in one process.

    python experiments/bench_loop_forms.py --rounds=6   # long

`lm_jax/training/steps.py: train_steps` runs a whole call of
`steps_per_call` steps as a `lax.scan` and a shorter one (at a log or
evaluation boundary) as a `lax.while_loop` whose count is data. This times
both on the same state and batches, interleaved round by round (machine
load hits both alike), for the default config (`configs/char_tf.py`, one
JAX device per core) and for `:baby`, and writes the medians to
experiments/results/loop_forms_cpu.md: one form could serve every call
if the while_loop is no slower.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments.bench_throughput import machine  # noqa: E402
from lm_jax.cli import process  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def time_forms(variant: str, rounds: int) -> dict:
  """Median seconds per step of each form on `configs/char_tf.py:variant`."""
  import jax
  from configs import char_tf
  from lm_jax.models import make_model
  from lm_jax.training import parallel, steps
  t = char_tf.get_config(variant).train
  config = char_tf.get_config(variant)
  model = make_model(config.model, 65)
  mesh = parallel.make_mesh(t.batch_size)
  tokens = jax.random.randint(jax.random.key(1), (200_000,), 0, 65)
  seed = jax.random.key(2)
  run = lambda state, count: steps.train_steps(
      state, tokens, seed, count, batch_size=t.batch_size,
      seq_len=t.seq_len, num_steps=t.steps_per_call,
      batch_sharding=parallel.batch_sharding(mesh))
  fresh = lambda: parallel.place_state(steps.create_train_state(
      model, t, jax.random.key(0)), mesh, False)
  forms = {"scan (count=None)": None, "while_loop (count traced)":
           t.steps_per_call}
  times = {name: [] for name in forms}
  states = {name: fresh() for name in forms}
  for name, count in forms.items():  # compile both first
    states[name], m = run(states[name], count)
    jax.block_until_ready(m)
  for _ in range(rounds):
    for name, count in forms.items():
      start = time.perf_counter()
      states[name], m = run(states[name], count)
      jax.block_until_ready(m)
      times[name].append((time.perf_counter() - start) / t.steps_per_call)
  return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--note", default="quiet machine",
                      help="how busy the machine was, for the results file")
  args = parser.parse_args()
  devices = process.use_cpu_cores(0, 32)
  lines = ["# The train steps' loop forms: scan against while_loop", "",
           f"Machine: {machine()}; {devices} JAX CPU devices; {args.note}. "
           f"Command: `python experiments/bench_loop_forms.py "
           f"--rounds={args.rounds}`; medians of {args.rounds} interleaved "
           "calls of steps_per_call steps each.", "",
           "| config | scan ms/step | while_loop ms/step | while / scan |",
           "|---|---|---|---|"]
  for variant in ("", "baby"):
    got = time_forms(variant, args.rounds)
    scan, loop = got.values()
    lines.append(f"| char_tf{':' + variant if variant else ''} | "
                 f"{scan * 1e3:.1f} | {loop * 1e3:.1f} | {loop / scan:.3f} |")
    print(lines[-1], flush=True)
  RESULTS.mkdir(exist_ok=True)
  (RESULTS / "loop_forms_cpu.md").write_text("\n".join(lines) + "\n")
  print(f"wrote {RESULTS / 'loop_forms_cpu.md'}")


if __name__ == "__main__":
  main()
