"""TensorBoard events, loss plots, the model summary, attention maps, the tour."""

import json
import pathlib
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import char_tf
from lm_jax.loop import trainer
from lm_jax.models import make_model
from lm_jax.runs import rundir
from lm_jax.runs.metrics import MetricsLog, tag
from lm_jax.training import steps
from lm_jax.views import internals, plotting, summary

from conftest import REPO


def read_events(workdir: pathlib.Path) -> list:
  """Every Event record of the run's event files (TFRecord framing)."""
  from tensorboardX.proto.event_pb2 import Event
  events = []
  for path in sorted(workdir.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    i = 0
    while i < len(data):
      (length,) = struct.unpack("<Q", data[i:i + 8])
      events.append(Event.FromString(data[i + 12:i + 12 + length]))
      i += 12 + length + 4  # length, its crc, payload, payload crc
  return events


def metrics(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text()
          .splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A smoke run (20 steps, evals at 10 and 20, samples) on a small text."""
  tmp = tmp_path_factory.mktemp("viz")
  text = tmp / "corpus.txt"
  text.write_text("".join(f"LINE {i}: the quick brown fox jumps over the lazy "
                          "dog.\n" for i in range(400)))
  config = char_tf.get_config("smoke")
  config.data.path = str(text)
  config.train.sample_prompt = "LINE"
  trainer.train_and_evaluate(config, tmp / "run")
  return tmp / "run"


def test_event_file_holds_the_metrics_and_samples(run):
  scalars, texts = {}, {}
  for event in read_events(run):
    for value in event.summary.value:
      if value.HasField("simple_value"):
        scalars[(value.tag, event.step)] = value.simple_value
      elif value.tag.startswith("sample"):
        texts[event.step] = value.tensor.string_val[0].decode()
  expected = {}
  for record in metrics(run):
    for key, value in record.items():
      if key != "step":
        expected[(tag(key), record["step"])] = value
  assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s",
          "val/loss", "val/bpc"} <= {tag for tag, _ in expected}
  assert scalars.keys() == expected.keys()
  for key, value in expected.items():
    assert scalars[key] == pytest.approx(value, rel=1e-6), key
  assert sorted(texts) == [10, 20]
  # The sample, indented as a Markdown code block: prompt + 32 new tokens.
  lines = texts[20].split("\n")
  assert all(line.startswith("    ") for line in lines)
  assert len("\n".join(l[4:] for l in lines)) == len("LINE") + 32


def test_resumed_run_purges_later_events(tmp_path):
  """A resume from step 10 tells TensorBoard to drop steps > 10 logged before."""
  log = MetricsLog(tmp_path, resume_step=10)
  log.write(step=12, loss=1.0)
  log.close()
  events = read_events(tmp_path)
  assert any(e.session_log.status == e.session_log.START and e.step == 11
             for e in events)


def test_read_curves_keeps_last_value_per_step(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(
      {"train": {"batch_size": 4, "seq_len": 8}}))
  lines = [dict(step=5, loss=3.0), dict(step=10, loss=2.0),
           dict(step=10, val_loss=2.5), dict(step=10, loss=1.9)]  # resumed
  (tmp_path / "metrics.jsonl").write_text(
      "".join(json.dumps(l) + "\n" for l in lines))
  curves = plotting.read_curves(tmp_path)
  assert curves.train == [(5, 3.0), (10, 1.9)]
  assert curves.val == [(10, 2.5)]
  assert curves.tokens_per_step == 32
  assert curves.gap == pytest.approx(0.6)


def _png_size(path) -> tuple[int, int]:
  import matplotlib.image
  height, width = matplotlib.image.imread(path).shape[:2]
  return width, height


@pytest.mark.slow
def test_plot_command(run, tmp_path):
  other = tmp_path / "other"
  other.mkdir()
  for name in ("config.json", "metrics.jsonl"):
    (other / name).write_text((run / name).read_text())
  out = tmp_path / "both.png"
  cmd = [sys.executable, "-m", "lm_jax.cli.plot", f"--workdir={run}", str(other),
         f"--out={out}"]
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  assert _png_size(out) == (1200, 450)
  bad = subprocess.run(cmd[:3] + [f"--workdir={tmp_path / 'none'}"], cwd=REPO,
                       capture_output=True, text=True)
  assert bad.returncode == 2
  assert bad.stderr.startswith("error: ") and "metrics.jsonl" in bad.stderr


@pytest.mark.slow
def test_attention_maps(run, tmp_path):
  _, tokenizer, model, params, _ = rundir.load_run(run)
  tokens = tokenizer.encode("LINE 7: the")
  inside = internals.model_internals(model, params, tokens)
  w = inside.values
  L, H, T = model.settings.num_layers, model.settings.num_heads, len(tokens)
  assert inside.panels == ("head 0", "head 1")
  assert w.shape == (L, H, T, T)
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
  assert np.all(np.triu(w, k=1) == 0)  # causal: nothing from the future
  # Sowing changes neither the logits nor the parameters (dense attention
  # sows the weights; the default, blocked, has none to sow).
  dense = model.with_settings(attention="dense")
  logits, state = dense.apply({"params": params}, jnp.asarray(tokens)[None],
                              mutable=["intermediates"])
  np.testing.assert_array_equal(
      logits, dense.apply({"params": params}, jnp.asarray(tokens)[None]))
  assert set(state) == {"intermediates"}
  out = internals.plot_internals(inside, list("LINE 7: the"),
                                 tmp_path / "a.png")
  assert _png_size(out) == (H * 250, L * 250)


@pytest.mark.slow
def test_inspect_command(run, tmp_path):
  out = tmp_path / "attention.png"
  done = subprocess.run(
      [sys.executable, "-m", "lm_jax.cli.inspect_run", f"--workdir={run}",
       "--prompt=LINE 3", f"--out={out}"],
      cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  assert _png_size(out) == (2 * 250, 2 * 250)  # smoke: 2 heads, 2 layers


@pytest.mark.slow
def test_lstm_activity_replays_the_model(tmp_path):
  from configs import char_lstm
  config = char_lstm.get_config("smoke")
  model = make_model(config.model, 13)
  tokens = np.array([1, 5, 2, 12, 7, 7, 3])
  params = model.init(jax.random.key(0), jnp.asarray(tokens)[None])["params"]
  inside = internals.model_internals(model, params, tokens)
  activity = inside.values
  L, T, H = config.model.num_layers, len(tokens), config.model.hidden_size
  assert activity.shape == (L, 4, T, H)
  gates = activity[:, :3]
  assert gates.min() >= 0 and gates.max() <= 1
  # The replayed cell state after the prompt is the model's own state.
  _, state = model.apply({"params": params}, jnp.asarray(tokens)[None],
                         model.initial_state(1), method=model.extend)
  for layer, (c, _) in enumerate(state):
    np.testing.assert_allclose(activity[layer, 3, -1], c[0], atol=1e-5)
  out = internals.plot_internals(inside, list("abcdefg"), tmp_path / "lstm.png")
  assert _png_size(out) == (4 * 250, L * 250)


def _xla_train_costs(config, vocab_size, batch_size):
  """(FLOPs per token, bytes) XLA reports for one compiled train step."""
  model = make_model(config.model, vocab_size)
  state = steps.create_train_state(model, config.train, jax.random.key(0))
  x = jnp.zeros((batch_size, config.train.seq_len), jnp.int32)
  compiled = jax.jit(steps.train_step).lower(
      state, x, x, jax.random.key(0)).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  memory = compiled.memory_analysis()
  return (state.params, cost["flops"] / x.size,
          memory.argument_size_in_bytes + memory.temp_size_in_bytes)


@pytest.mark.slow
@pytest.mark.parametrize("tie", [True, False])
def test_summary_estimates_match_xla(tie):
  config = char_tf.get_config("smoke")
  config.model.update(num_layers=2, d_model=64, num_heads=4, max_len=64,
                      tie_embeddings=tie)
  config.train.seq_len, config.train.batch_size, V = 64, 4, 65
  params, xla_flops, xla_bytes = _xla_train_costs(config, V, 4)
  rows = summary.params_by_module(params)
  assert sum(rows.values()) == summary.count(params)
  assert {"embed", "pos_embed", "block_*/attn", "block_*/mlp"} <= rows.keys()
  assert rows["block_*/attn"] == 2 * (64 * 3 * 64 + 3 * 64 + 64 * 64 + 64)
  model = make_model(config.model, V)
  flops = model.train_flops_per_token(params, 64)
  assert flops == pytest.approx(xla_flops, rel=0.10)
  mem = summary.memory_bytes(model, params, 4, 64)
  assert sum(mem.values()) == pytest.approx(xla_bytes, rel=0.5)
  text = summary.model_summary(model, params, config.train)
  assert len(text.splitlines()) <= 12


@pytest.mark.slow
def test_summary_estimates_match_xla_with_recipe_options():
  """SwiGLU's three matrices, rope (no table, no parameters), QK-norm and
  RMSNorm: the 6N + 12LTD formula still tracks XLA's count."""
  config = char_tf.get_config("smoke")
  config.model.update(num_layers=2, d_model=64, num_heads=4, max_len=64,
                      tie_embeddings=False, position="rope", norm="rmsnorm",
                      qk_norm=True, mlp="swiglu", logit_softcap=15.0)
  config.train.seq_len, config.train.batch_size, V = 64, 4, 65
  params, xla_flops, xla_bytes = _xla_train_costs(config, V, 4)
  assert "pos_embed" not in params
  model = make_model(config.model, V)
  assert model.train_flops_per_token(params, 64) == pytest.approx(
      xla_flops, rel=0.10)
  mem = summary.memory_bytes(model, params, 4, 64)
  assert sum(mem.values()) == pytest.approx(xla_bytes, rel=0.5)


@pytest.mark.slow
def test_notebook_executes(tmp_path, monkeypatch):
  """docs/tour.ipynb runs top to bottom in a kernel of this interpreter
  (on the smoke config; its stored outputs are those of the full run)."""
  import nbclient
  import nbformat
  kernel = tmp_path / "kernels" / "lm_jax_test"
  kernel.mkdir(parents=True)
  (kernel / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
               "{connection_file}"],
      "display_name": "lm_jax test", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
  monkeypatch.setenv("LM_JAX_TOUR_SMOKE", "1")  # the smoke config: seconds
  nb = nbformat.read(REPO / "docs" / "tour.ipynb", as_version=4)
  client = nbclient.NotebookClient(
      nb, kernel_name="lm_jax_test", timeout=300,  # per cell; CPU is shared
      resources={"metadata": {"path": str(REPO / "docs")}})
  client.execute()
  outputs = [o for cell in nb.cells if cell.cell_type == "code"
             for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any("image/png" in o.get("data", {}) for o in outputs)
