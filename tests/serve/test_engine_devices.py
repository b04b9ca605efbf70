"""The engine with its slots split over two CPU devices (lm-jax-serve makes
one per core): the same tokens as on one device, whatever the batch size
(one request alone runs on the first device), filters and window slides
included. In a fresh process that sees 2 CPU devices."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

CHILD = """
import functools, json, threading
import jax, jax.numpy as jnp, numpy as np
from configs import char_tf
from lm_jax.generation import sampling
from lm_jax.models import make_model
from lm_jax.serve import engine

config = char_tf.get_config("smoke")
model = make_model(config.model, 40)
params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
W = model.context_length
# Requests of several lengths (past the window: slides), options and seeds.
asks = [(n, dict(max_new_tokens=W + 5 + n, temperature=0.9 if n % 3 else 0,
                 top_k=5 if n % 4 == 1 else 0, top_p=0.8 if n % 5 == 2
                 else 1.0)) for n in range(6)]

def decode(devices, together):
  e = engine.Engine(params, model, max_batch=4, max_queue=8,
                    devices=devices)
  out = [[] for _ in asks]
  done = [threading.Event() for _ in asks]
  def emit(i, token):
    if token is None:
      done[i].set()
    else:
      out[i].append(token.id)
  for i, (n, options) in enumerate(asks):
    e.submit(engine.Request(np.arange(1, 2 + n, dtype=np.int32) % 40,
                            sampling.SamplingOptions(**options), 7 + i,
                            functools.partial(emit, i)))
    if not together:
      done[i].wait(120)
  for d in done:
    d.wait(120)
  load = e.load()
  e.stop()
  return out, load

one, _ = decode(1, True)
split, load = decode(2, True)
alone, _ = decode(2, False)
print(json.dumps(dict(devices=jax.device_count(), same=one == split,
                      alone=one == alone, split_devices=load["devices"])))
"""


@pytest.mark.slow  # three engines compile in a fresh process (about a minute)
def test_slots_split_over_two_devices_give_the_tokens_of_one():
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  out = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result == dict(devices=2, same=True, alone=True, split_devices=2)
