"""lm_jax/views/plotting.py: the loss curves read from metrics.jsonl, and
drawn."""

import json
import shutil
import warnings

import pytest

from lm_jax.views import plotting


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


def test_an_emoji_run_name_draws_without_glyph_warnings(smoke_run, tmp_path):
  run = tmp_path / "run\U0001F680"
  shutil.copytree(smoke_run, run)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    plotting.plot_runs([run], tmp_path / "loss.png")
