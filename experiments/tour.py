"""The experiments of docs/TOUR.md: one setting changed at a time, 300 steps.

    python -m experiments.tour            # all runs, into runs/tour/<name>
    python -m lm_jax.cli.plot --workdir=runs/tour/base runs/tour/depth_1 ...

Each run starts from the same small Transformer on the built-in corpus and
changes one field; the table printed at the end (Markdown) is the one in
docs/TOUR.md. A finished run is not trained again: its metrics are read back.
"""

import contextlib
import json
import pathlib
import sys

from configs import char_tf
from lm_jax.loop import trainer
from lm_jax.models.base import count
from lm_jax.runs import rundir

ROOT = pathlib.Path("runs/tour")
# name -> {"section.field": value}: one change from the base run each.
VARIANTS = {
    "base": {},
    "context_16": {"train.seq_len": 16},
    "width_64": {"model.d_model": 64},
    "depth_1": {"model.num_layers": 1},
    "dropout_0.2": {"model.dropout": 0.2},
    "lr_3e-4": {"train.learning_rate": 3e-4},
    "lr_6e-3": {"train.learning_rate": 6e-3},
}


def base_config():
  """4 layers, 4 heads, width 128, context 64, batch 16, 300 steps."""
  c = char_tf.get_config()
  c.model.max_len = 64
  c.train.seq_len = 64
  c.train.batch_size = 16
  c.train.num_steps = 300
  c.train.learning_rate = 2e-3
  c.train.warmup_steps = 30
  c.train.log_every = 50
  c.train.eval_every = 100
  c.train.eval_tokens = 16384
  c.train.sample_tokens = 0
  return c


def run(name: str, changes: dict) -> dict:
  """Trains one variant (unless done); returns its last train and val record."""
  config = base_config()
  for key, value in changes.items():
    section, field = key.split(".")
    config[section][field] = value
  workdir = ROOT / name
  with (ROOT / f"{name}.log").open("a") as f, contextlib.redirect_stdout(f):
    trainer.train_and_evaluate(config, workdir)
  records = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in records if "loss" in r][-1]
  val = [r for r in records if "val_loss" in r][-1]
  return dict(name=name, train_loss=train["loss"], val_loss=val["val_loss"],
              params=count(rundir.load_run(workdir).params))


def main(names: list[str]) -> None:
  ROOT.mkdir(parents=True, exist_ok=True)
  print("| run | change | params | train loss | val loss | val - train |")
  print("|---|---|---:|---:|---:|---:|")
  for name in names or VARIANTS:
    r = run(name, VARIANTS[name])
    change = ", ".join(f"{k}={v}" for k, v in VARIANTS[name].items()) or "-"
    print(f"| {name} | {change} | {r['params']:,} | {r['train_loss']:.3f} | "
          f"{r['val_loss']:.3f} | {r['val_loss'] - r['train_loss']:+.3f} |",
          flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
