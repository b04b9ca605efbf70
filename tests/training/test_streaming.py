"""Streamed windows: read on host from the ids, the very windows the
train steps draw on device, so a streamed run trains as one on device."""

import jax
import numpy as np
import pytest

from configs import char_lstm, char_tf
from lm_jax.data import windows
from lm_jax.models import make_model
from lm_jax.training import parallel, steps, streaming

V = 13


def _stream(tokens, **train):
  config = char_tf.get_config("smoke")
  config.train.update(dict(batch_size=4, seq_len=8, steps_per_call=3,
                           **train))
  mesh = parallel.make_mesh(config.train.batch_size)
  return streaming.Stream(tokens, config.train, jax.random.key(7), mesh), \
      config


def _memmap(tmp_path, n=500):
  ids = np.random.default_rng(0).integers(0, V, n).astype(np.uint16)
  path = tmp_path / "ids.bin"
  ids.tofile(path)
  return np.memmap(path, np.uint16, "r"), ids.astype(np.int32)


def test_random_windows_equal_the_device_s(tmp_path):
  tokens, ids = _memmap(tmp_path)
  stream, _ = _stream(tokens)
  drawn = stream.chunk(5)
  assert drawn.windows.shape == (3, 4, 9) and int(drawn.first) == 5
  for k in range(3):
    data_key, _ = steps.step_keys(stream.seed_key, np.int32(5 + k))
    x, y = windows.get_batch(jax.numpy.asarray(ids), data_key, 4, 8)
    got_x, got_y, reset = windows.drawn_batch(drawn, np.int32(5 + k))
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert not bool(reset)


def test_lanes_equal_the_device_s(tmp_path):
  tokens, ids = _memmap(tmp_path, 101)  # lanes of 25: 3 windows of 8
  stream, _ = _stream(tokens, carry_state=True)
  stream.prefetch(2)
  drawn = stream.chunk(2)  # the prefetched chunk
  for k in range(3):
    x, y, reset = windows.lane_batch(jax.numpy.asarray(ids), 2 + k, 4, 8)
    got = windows.drawn_batch(drawn, 2 + k)
    for a, b in zip(got, (x, y, reset)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("carry", [False, True])
def test_train_steps_streamed_equal_on_device(tmp_path, carry):
  tokens, ids = _memmap(tmp_path, 301)
  stream, config = _stream(tokens, carry_state=carry)
  model_config = (char_lstm if carry else char_tf).get_config("smoke").model
  model = make_model(model_config, V)
  fresh = lambda: steps.create_train_state(model, config.train,
                                           jax.random.key(0))
  run = lambda state, data: steps.train_steps(
      state, data, stream.seed_key, batch_size=4, seq_len=8, num_steps=3)
  device, streamed = fresh(), fresh()
  for first in (0, 3):
    device, m1 = run(device, jax.numpy.asarray(ids))
    streamed, m2 = run(streamed, stream.chunk(first))
    # The same batches (above); two programs, fused differently: equal to
    # float rounding.
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-7),
               device.params, streamed.params)
