"""A/B of the Transformer recipe options, each alone and all together.

    python experiments/recipe_ab.py --steps=2000 --seeds=0,1   # long

Each variant is `configs/char_tf.py:baby` (nanoGPT's CPU setting: 4 layers,
width 128, context 64, batch 12) with one option of
lm_jax/models/recipe.py, the z-loss, a schedule or an optimiser
(lm_jax/training/optimizers.py) set, or a combination, trained in this process on
tinyshakespeare for `--steps` steps (the cosine schedule spans them), one
evaluation at the end (val loss in nats on the first 32k tokens of the last
10%). Variants take turns within each seed, so machine load hits them
alike. Writes a markdown table to `--out`.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from configs import char_tf  # noqa: E402
from lm_jax.cli import process  # noqa: E402

VARIANTS = {
    "baseline": {},
    "rope": {"model.position": "rope"},
    "rmsnorm": {"model.norm": "rmsnorm"},
    "qk_norm": {"model.qk_norm": True},
    "relu2": {"model.mlp": "relu2"},
    "swiglu": {"model.mlp": "swiglu"},
    "zero_init_proj (untied)": {"model.zero_init_proj": True,
                                "model.tie_embeddings": False},
    "logit_softcap 15": {"model.logit_softcap": 15.0},
    "z_loss 1e-4": {"train.z_loss": 1e-4},
    "wsd schedule": {"train.schedule": "wsd"},
    "muon": {"train.optimizer": "muon"},
    "schedule_free": {"train.optimizer": "schedule_free"},
    "fast (rope, rmsnorm, qk_norm, relu2)": {
        f"model.{k}": v for k, v in char_tf.RECIPE.items()},
    "all": {"model.position": "rope", "model.norm": "rmsnorm",
            "model.qk_norm": True, "model.mlp": "relu2",
            "model.zero_init_proj": True, "model.tie_embeddings": False,
            "model.logit_softcap": 15.0, "train.z_loss": 1e-4},
}


def run(overrides: dict, steps: int, seed: int, data: str) -> dict:
  """Final val loss and wall seconds of one variant."""
  from lm_jax.loop import trainer
  config = char_tf.get_config("baby")
  config.update_from_flattened_dict({
      "data.path": data, "seed": seed, "train.num_steps": steps,
      "train.eval_every": steps, "train.log_every": steps,
      "train.sample_tokens": 0, **overrides})
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    result = trainer.train_and_evaluate(config, workdir)
  return {"val_loss": result["val_loss"], "wall_s": time.perf_counter() - start}


def machine() -> str:
  """'2-core AMD EPYC ..., jax 0.x': what the figures were measured on."""
  import os
  import jax
  cpuinfo = pathlib.Path("/proc/cpuinfo")
  names = [line.split(":", 1)[1].strip() for line in
           (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
           if line.startswith("model name")]
  cpu = names[0] if names else platform.processor() or "CPU"
  return f"{os.cpu_count()}-core {cpu}, jax {jax.__version__}"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--only", default="", help="comma-separated variants")
  parser.add_argument("--data", default=str(
      pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
      / "tinyshakespeare.txt"))
  parser.add_argument("--out", default="experiments/results/recipe_ab_cpu.md")
  args = parser.parse_args()
  process.use_cpu_cores(0, 12)  # one JAX device per core, before JAX starts
  names = args.only.split(",") if args.only else list(VARIANTS)
  seeds = [int(s) for s in args.seeds.split(",")]
  results = {name: [] for name in names}
  header = [f"# Recipe options A/B: configs/char_tf.py:baby, {args.steps} "
            f"steps, seeds {args.seeds}", "",
            f"`python experiments/recipe_ab.py --steps={args.steps} "
            f"--seeds={args.seeds}`; {machine()}, "
            f"{time.strftime('%Y-%m-%d')}. Wall seconds include start-up and "
            "compiling, and are noisy on a shared machine.", ""]
  for seed in seeds:
    for name in names:
      results[name].append(run(VARIANTS[name], args.steps, seed, args.data))
      print(f"{name} seed {seed}: {results[name][-1]}", flush=True)
      # Rewritten after each run: a stopped session keeps what it measured.
      table = "\n".join(header + table_lines(results))
      pathlib.Path(args.out).write_text(table + "\n")
  print(table)


def table_lines(results: dict) -> list[str]:
  """A markdown table of the runs done so far, and each mean's difference
  from the baseline's."""
  base = [r["val_loss"] for r in results.get("baseline", [])]
  lines = ["| variant | val loss per seed | mean | vs baseline | wall s |",
           "|---|---|---|---|---|"]
  for name, rs in results.items():
    if not rs:
      continue
    losses = [r["val_loss"] for r in rs]
    mean = sum(losses) / len(losses)
    delta = f"{mean - sum(base) / len(base):+.4f}" if base else ""
    walls = ", ".join(f"{r['wall_s']:.0f}" for r in rs)
    lines.append(f"| {name} | {', '.join(f'{x:.4f}' for x in losses)} | "
                 f"{mean:.4f} | {delta} | {walls} |")
  return lines


if __name__ == "__main__":
  main()
