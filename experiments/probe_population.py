"""How a device should step its members: one after another or vmapped.

    python experiments/probe_population.py   # a few minutes on 2 cores

In one process with one JAX device per core (2 here), times chunks of 16
steps of `char_tf:baby` populations (`lm_jax.sweep.population:
population_steps`): 8 members on 2 devices stepped one at a time
(`batch=1`, jax.lax.map) or 4 at a time (`batch=4`, a vmap), 2 members on
2 devices, and 1 member on 1 device (a lone model). Rounds alternate
between the cases so that a changing load hits them alike; prints the
best round's milliseconds per member-step.
"""

from __future__ import annotations

import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lm_jax.cli import process  # noqa: E402

process.use_cpu_cores(2, 2)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import char_tf  # noqa: E402
from experiments.bench_throughput import machine  # noqa: E402
from lm_jax.sweep import grid, hyper, plan, population  # noqa: E402
from lm_jax.training import steps  # noqa: E402

STEPS = 16
CASES = ((8, 2, 1), (8, 2, 4), (2, 2, 1), (1, 1, 1))  # members, devices, batch


def setup(members: int, devices: int, batch: int):
  """A function running one chunk of the population's steps."""
  rates = ",".join(f"{1e-3 * (1 + i):g}" for i in range(members))
  ms = grid.make_members(lambda: char_tf.get_config("baby"), grid.parse_sets(
      [f"train.learning_rate={rates}"]), False, pathlib.Path("unused"))
  g = plan.make_plan(ms)[0]
  t = g.config.train
  states = [steps.create_train_state(g.model, m.config.train,
                                     jax.random.key(i))
            for i, m in enumerate(ms)]
  sharding = population.member_sharding(devices)
  box = [jax.device_put(population.stack(
      [s.replace(tx=states[0].tx) for s in states]), sharding)]
  hp = jax.device_put({k: jnp.asarray([hyper.numbers(m.config.train)[k]
                                       for m in ms], jnp.float32)
                       for k in hyper.NUMBERS}, sharding)
  keys = jax.device_put(jnp.stack([jax.random.key(i)
                                   for i in range(members)]), sharding)
  tokens = jax.device_put(g.loaded.train, jax.sharding.NamedSharding(
      sharding.mesh, jax.sharding.PartitionSpec()))

  def run():
    box[0], metrics = population.population_steps(
        box[0], hp, keys, tokens, train=population.static_train(t),
        batch_size=t.batch_size, seq_len=t.seq_len, num_steps=STEPS,
        grad_accum_steps=1, sharding=sharding, batch=batch)
    jax.block_until_ready(metrics)
  run()  # compiles
  return run


def main() -> None:
  runs = {case: setup(*case) for case in CASES}
  times = {case: [] for case in CASES}
  for _ in range(3):
    for case, run in runs.items():
      start = time.perf_counter()
      run()
      times[case].append((time.perf_counter() - start) / STEPS / case[0])
  print(f"machine: {machine()}")
  for (members, devices, batch), seconds in times.items():
    how = "one at a time" if batch == 1 else f"{batch} at a time (vmap)"
    print(f"{members} member(s) on {devices} device(s), {how}: "
          f"{min(seconds) * 1000:.0f} ms per member-step")


if __name__ == "__main__":
  main()
