"""Exact match of greedy replies against prompt length, per model.

    python experiments/echo_length.py  # long: about an hour on 2 CPU cores
    python experiments/echo_length.py --steps=4 --eval_pairs=16 \\
        --models=lstm --tasks=copy --out=/tmp/echo_length

Trains each model on each task (`copy`, `reverse` of the built-in plays'
lines, up to 64 characters) for the same number of steps, each with its
own config's batch, optimiser and schedule: configs/echo_lstm.py
(`lstm`: with attention), configs/echo_lstm.py:noattn (`lstm_noattn`:
the Sutskever encoder-decoder) and configs/echo_s2s.py (`transformer`).
Then it answers held-out pairs (lines of the held-out plays) greedily and
counts exact matches per bucket of prompt length. Writes OUT.json, OUT.md
and OUT.png (exact match against length, one panel per task).

Without attention the whole prompt must fit in the encoder's final state,
so exact match should fall with length (Sutskever et al. 2014; Bahdanau
et al. 2015, figure 2); with attention it should not.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import shlex
import shutil
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = {"lstm": ("echo_lstm", ""), "lstm_noattn": ("echo_lstm", "noattn"),
           "transformer": ("echo_s2s", "")}
BUCKET = 8  # characters per length bucket


def config_for(name: str, task: str, steps: int):
  """The model's config on `task`, trained `steps` steps, evaluated once at
  the end on one batch (this script answers the held-out pairs itself)."""
  module, variant = CONFIGS[name]
  c = importlib.import_module(f"configs.{module}").get_config(variant)
  c.data.pairs = f"{task}:1"
  c.train.num_steps = steps
  c.train.warmup_steps = min(c.train.warmup_steps, steps // 10)
  c.train.eval_every = steps
  c.train.log_every = max(1, steps // 5)
  c.train.eval_pairs = c.train.batch_size
  c.train.sample_pairs = 0
  return c


def exact_by_length(workdir: pathlib.Path, eval_pairs: int) -> dict:
  """Greedy exact match on `eval_pairs` held-out pairs (evenly spread over
  them), per bucket of BUCKET prompt characters."""
  import jax
  import numpy as np

  from lm_jax.data import pairs
  from lm_jax.data.tokenizers import PAD_ID
  from lm_jax.generation import replies, sampling
  from lm_jax.runs import rundir

  run = rundir.load_run(workdir)
  m = run.model
  val = pairs.load_pairs(run.config.data, run.config.seed).val
  src, tgt = pairs.encode_pairs(val, run.tokenizer, m.max_source_len,
                                m.max_target_len, pairs.Skipped())
  pick = np.linspace(0, len(src) - 1, min(eval_pairs, len(src))).astype(int)
  src, tgt = src[pick], tgt[pick]
  greedy = sampling.SamplingOptions(max_new_tokens=m.max_target_len,
                                    temperature=0.0)
  B = run.config.train.batch_size
  right = []
  for i in range(0, len(src), B):
    got = np.asarray(replies.generate(run.params, m, src[i:i + B],
                                      jax.random.key(0), greedy))
    right += [np.array_equal(pairs.reply_ids(g), pairs.reply_ids(w[1:]))
              for g, w in zip(got, tgt[i:i + B])]
  right = np.array(right)
  bucket = ((src != PAD_ID).sum(1) - 1) // BUCKET  # 0: 1-8 characters
  counts = np.bincount(bucket, minlength=m.max_source_len // BUCKET)
  hits = np.bincount(bucket, weights=right, minlength=len(counts))
  return dict(exact_match=float(right.mean()), pairs=len(right),
              counts=counts.tolist(),
              bucket_exact=[h / n if n else None
                            for h, n in zip(hits.tolist(), counts.tolist())])


def markdown(result: dict) -> str:
  lines = [f"# Exact match against prompt length ({result['steps']} steps "
           "each)", "", f"Machine: {result['machine']}; {result['note']}", "",
           f"Command: `{result['command']}`", "",
           "Greedy replies to held-out lines (the held-out plays); exact "
           f"match per bucket of {BUCKET} prompt characters.", ""]
  for task, by_model in result["runs"].items():
    names = list(by_model)
    first = by_model[names[0]]
    lines += [f"## {task}", "",
              "| model | train s | all | " + " | ".join(
                  f"{i * BUCKET + 1}-{(i + 1) * BUCKET} (n={n})"
                  for i, n in enumerate(first["counts"])) + " |",
              "|---" * (len(first["counts"]) + 3) + "|"]
    for name, r in by_model.items():
      cells = ["" if e is None else f"{e:.0%}" for e in r["bucket_exact"]]
      lines.append(f"| {name} | {r['train_seconds']:.0f} | "
                   f"{r['exact_match']:.1%} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def plot(result: dict, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  tasks = list(result["runs"])
  fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6),
                           squeeze=False)
  for ax, task in zip(axes[0], tasks):
    for name, r in result["runs"][task].items():
      points = [(i * BUCKET + BUCKET / 2, e)
                for i, e in enumerate(r["bucket_exact"]) if e is not None]
      ax.plot(*zip(*points), marker="o", label=name)
    ax.set(title=task, xlabel="prompt length (characters)",
           ylabel="exact match", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(f"greedy exact match, {result['steps']} training steps each")
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="lstm,lstm_noattn,transformer")
  p.add_argument("--tasks", default="copy,reverse")
  p.add_argument("--steps", type=int, default=1000)
  p.add_argument("--eval_pairs", type=int, default=1024)
  p.add_argument("--workdir", default="/tmp/echo_length")
  p.add_argument("--out", default=str(REPO / "experiments/results/"
                                      "echo_length"))
  p.add_argument("--note", default="", help="e.g. the machine's load")
  args = p.parse_args(argv)
  from experiments.bench_throughput import machine
  from lm_jax.loop import trainer
  result = dict(machine=machine(), note=args.note or f"load average "
                f"{os.getloadavg()[0]:.1f} at the start", steps=args.steps,
                command=shlex.join(["python", "experiments/echo_length.py",
                                    *(sys.argv[1:] if argv is None
                                      else argv)]),
                runs={})
  for task in args.tasks.split(","):
    result["runs"][task] = {}
    for name in args.models.split(","):
      workdir = pathlib.Path(args.workdir) / f"{task}_{name}"
      shutil.rmtree(workdir, ignore_errors=True)  # train afresh, timed
      start = time.perf_counter()
      trainer.train_and_evaluate(config_for(name, task, args.steps), workdir)
      seconds = time.perf_counter() - start
      r = dict(train_seconds=seconds,
               **exact_by_length(workdir, args.eval_pairs))
      result["runs"][task][name] = r
      print(f"{task} {name}: exact match {r['exact_match']:.1%} "
            f"({seconds:.0f} s training)", flush=True)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
  out.with_suffix(".md").write_text(markdown(result))
  plot(result, out.with_suffix(".png"))
  print(f"wrote {out}.json, .md, .png")


if __name__ == "__main__":
  main()
