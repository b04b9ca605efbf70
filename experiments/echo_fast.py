"""The echo bots' `:fast` configs: exact match on held-out pairs in 5 minutes.

    python experiments/echo_fast.py          # about 15 minutes per model
    python experiments/echo_fast.py --models=configs/echo_lstm.py:fast \\
        --tasks=copy

By default it measures both echo bots side by side, the LSTM and the
Transformer with rotary positions (configs/echo_s2s.py:fast), each task
in turn (3 tasks x 2 models, about 30 minutes).

Trains each config on each task (`copy`, `reverse`, `swap_persons` of the
built-in plays' lines, up to 64 characters; lm_jax/data/pairs.py) with
`python -m lm_jax.train`, one run at a time, as a user would, and reads
its evaluations from metrics.jsonl: greedy exact match on the held-out
pairs (config.train.eval_pairs of them, from the held-out plays) against
the run's wall time. The goal (issue: the echo bot learns fast) is at
least 99% on copy and reverse and 95% on swap_persons within 5 minutes
of wall time, start-up, compiling and evaluations included.

Writes experiments/results/echo_fast_cpu.{json,md} (--name to change).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.bench_throughput import machine  # noqa: E402

MODELS = ["configs/echo_lstm.py:fast", "configs/echo_s2s.py:fast"]
GOALS = {"copy": 0.99, "reverse": 0.99, "swap_persons": 0.95}
BUDGET_S = 300.0


def read_evals(workdir: pathlib.Path) -> list[dict]:
  """Each evaluation: step, wall s, train s (wall less earlier
  evaluations), exact match, token accuracy."""
  evals = []
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    if "val_exact_match" in r:
      evals.append(dict(step=r["step"], wall_s=r["elapsed_s"],
                        train_s=r["elapsed_s"] - r["eval_s"],
                        exact=r["val_exact_match"],
                        token_accuracy=r["val_token_accuracy"]))
  return evals


def first_at(evals: list[dict], goal: float) -> dict | None:
  """The first evaluation at or above `goal` exact match; None if none."""
  return next((e for e in evals if e["exact"] >= goal), None)


def render(result: dict) -> str:
  lines = [
      "# Echo bots: exact match in five minutes", "",
      f"Machine: {result['machine']}" + (f"; {result['note']}"
                                         if result["note"] else ""), "",
      f"Command: `{result['command']}`", "",
      "Greedy exact match on held-out pairs (lines of the held-out plays, "
      "up to 64 characters); wall: seconds since the command started "
      "(start-up, compiling and evaluations included) at that evaluation.",
      "", "| config | task | goal | reached at (wall s, step) | final exact "
      "match | final wall s | steps | within 5 min |",
      "|---|---|---|---|---|---|---|---|"]
  for r in result["rows"]:
    hit = first_at(r["evals"], r["goal"])
    last = r["evals"][-1]
    ok = hit is not None and hit["wall_s"] <= BUDGET_S
    lines.append(
        f"| {r['config']} | {r['task']} | {r['goal']:.0%} | "
        + (f"{hit['wall_s']:.0f} s, step {hit['step']}" if hit else
           "not reached")
        + f" | {last['exact']:.2%} | {last['wall_s']:.0f} | {last['step']} "
        f"| {'yes' if ok else 'no'} |")
  lines += ["", "Every evaluation:", ""]
  for r in result["rows"]:
    curve = ", ".join(f"{e['exact']:.1%} at {e['wall_s']:.0f} s"
                      for e in r["evals"])
    lines.append(f"- {r['config']} on {r['task']}: {curve}")
  return "\n".join(lines) + "\n"


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--tasks", default=",".join(GOALS))
  p.add_argument("--name", default="echo_fast_cpu")
  p.add_argument("--out_dir", default=str(REPO / "experiments/results"))
  p.add_argument("--note", default="")
  args = p.parse_args()
  rows = []
  with tempfile.TemporaryDirectory(prefix="echo_fast_") as scratch:
    for config in args.models.split(","):
      for task in args.tasks.split(","):
        workdir = pathlib.Path(scratch) / f"{len(rows)}"
        print(f"[{time.strftime('%H:%M:%S')}] {config} on {task}", flush=True)
        out = subprocess.run(
            [sys.executable, "-m", "lm_jax.train", f"--config={config}",
             f"--config.data.pairs={task}:1", f"--workdir={workdir}"],
            cwd=REPO, capture_output=True, text=True, env=os.environ)
        if out.returncode:
          sys.exit(f"{config} on {task} failed:\n{out.stderr[-3000:]}")
        rows.append(dict(config=config, task=task, goal=GOALS[task],
                         evals=read_evals(workdir)))
        print(f"  {rows[-1]['evals'][-1]}", flush=True)
  result = dict(machine=machine(), note=args.note, rows=rows,
                command="python experiments/echo_fast.py "
                + shlex.join(sys.argv[1:]))
  out_dir = pathlib.Path(args.out_dir)
  (out_dir / f"{args.name}.json").write_text(json.dumps(result, indent=1))
  text = render(result)
  (out_dir / f"{args.name}.md").write_text(text)
  print(text)


if __name__ == "__main__":
  main()
