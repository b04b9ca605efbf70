"""The benchmark's bookkeeping: its learning rates and FLOP counts are ours."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import bench_runners, bench_throughput
from lm_jax.models import make_model
from lm_jax.training import optimizers, steps


def test_torch_side_lr_schedule_equals_optax(smoke_config):
  t = smoke_config.train
  t.update(num_steps=50, warmup_steps=5, learning_rate=2e-3, min_lr_ratio=0.1)
  lr = optimizers.lr_schedule(t)
  for s in (0, 1, 4, 5, 6, 27, 49, 50, 60):
    assert bench_runners.lr_at(t, s) == pytest.approx(float(lr(s)), rel=1e-5,
                                                    abs=1e-9)


def test_flops_count_matches_the_model_matrices(smoke_config):
  s = bench_throughput.CONFIGS["baby"]
  config = bench_runners.lm_config(s, "fp32")
  model = make_model(config.model, bench_runners.VOCAB)
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 8), jnp.int32))["params"]
  matrices = sum(np.prod(p.shape) for path, p in
                 jax.tree_util.tree_leaves_with_path(params)
                 if path[-1].key == "kernel")
  V, D = bench_runners.VOCAB, config.model.d_model
  L, T = config.model.num_layers, config.train.seq_len
  flops = bench_throughput.flops_per_token(s)
  # The model's own count: every parameter but the position table (biases
  # and LayerNorm included), and the tied embedding as the output head.
  assert flops == model.train_flops_per_token(params, T)
  assert flops == pytest.approx(6 * (matrices + V * D) + 12 * L * T * D,
                                rel=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("concurrent,sequential", [(False, False), (True, True)])
def test_measure_times_every_worker_and_writes_a_table(concurrent, sequential):
  """The driver and its worker processes, end to end on a tiny model."""
  s = bench_throughput.spec("tiny", 1, 32, 16, 2, 0.0, 2, 2)
  rows = bench_throughput.measure(
      s, "fp32", [bench_throughput.Variant(fw, fw)
                  for fw in bench_throughput.FRAMEWORKS[:2]], "cpu", concurrent,
      sequential)
  assert [r["variant"] for r in rows] == ["jax", "torch_eager"]
  for r in rows:
    assert len(r["times"]) == 2 and min(r["times"]) > 0
    assert r["tokens_per_call"] == 2 * 2 * 16
    assert r["tokens_per_s"] == pytest.approx(
        r["tokens_per_call"] / np.median(r["times"]))
    assert r["peak_rss_mb"] > 50
    assert r["faults_per_step"] >= 0
  result = dict(device="cpu", machine="m", command="c", note="n",
                matmul_gflops={"jax": 1.0}, rows=[], ablations=rows)
  text = bench_throughput.markdown(result)
  assert "| tiny | fp32 | torch_eager | 2 |" in text
  assert "peak RSS MiB" in text and "page faults/step" in text


def test_lstm_bench_takes_turns_and_pairs_each_round():
  from experiments import bench_lstm
  calls = []
  runners = {name: (lambda n, name=name: calls.append((name, n)))
             for name in ("jax", "torch")}
  rates = bench_lstm.measure(runners, num_steps=4, repeats=3,
                             tokens_per_step=10)
  assert calls == [("jax", 4), ("torch", 4)] * 4  # a warm-up, then 3 rounds
  assert [len(r) for r in rates.values()] == [3, 3]
  assert all(r > 0 for rs in rates.values() for r in rs)
  # Each round's ratio: 1, 3, 1; the median rate is 20.
  assert bench_lstm.summarize([10.0, 30.0, 20.0], [10.0, 10.0, 20.0]) == \
      (20.0, "1.00x (1.00-3.00)")
