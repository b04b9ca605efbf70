"""Start-up: from the command to the first train step, phase by phase.

    python experiments/startup.py            # 5 starts each way, ~1 minute

Runs `python -m lm_jax.train --config=configs/char_tf.py:fast` for one
step, again and again in fresh run directories, with the caches warm (one
start first warms them, not counted), and reads the line the trainer
prints once its first step is running:

    start-up 2.41 s to the first step: imports 1.47, devices 0.01, ...

(lm_jax/loop/clock.py: Clock.mark; lm_jax/views/progress.py: startup_line).
Each way is run --starts times and reported as the median per phase:

  warm caches      XLA's compilation cache, the stored train step and
                   init programs (lm_jax/training/programs.py) and the
                   rendered plays (lm_jax/data/corpus.py: builtin_plays)
  no program store LM_JAX_PROGRAM_CACHE=0: XLA's cache only, so the model,
                   its gradient and the optimiser are traced and lowered
                   at every start

Writes experiments/results/startup_cpu.md (--name to change).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.bench_throughput import machine  # noqa: E402

COMMAND = [sys.executable, "-m", "lm_jax.train",
           "--config=configs/char_tf.py:fast", "--config.train.num_steps=1",
           "--config.train.sample_tokens=0"]
WAYS = {"warm caches": {}, "no program store": {"LM_JAX_PROGRAM_CACHE": "0"}}
LINE = re.compile(r"^start-up ([\d.]+) s to the first step: (.*)$", re.M)


def parse(stdout: str) -> dict[str, float]:
  """{"total": 2.41, "imports": 1.47, ...} from a run's start-up line."""
  match = LINE.search(stdout)
  if match is None:
    raise ValueError("no start-up line in the output")
  phases = {"total": float(match[1])}
  for part in match[2].split(", "):
    name, _, seconds = part.rpartition(" ")
    phases[name] = float(seconds)
  return phases


def start(env: dict, workdir: pathlib.Path) -> dict[str, float]:
  """One start in a fresh `workdir`: its phases."""
  out = subprocess.run([*COMMAND, f"--workdir={workdir}"],
                       cwd=REPO, env={**os.environ, **env},
                       capture_output=True, text=True, timeout=600)
  if out.returncode:
    sys.exit(f"the start failed:\n{out.stderr[-2000:]}")
  return parse(out.stdout)


def render(results: dict[str, list[dict]], args) -> str:
  phases = list(next(iter(results.values()))[0])
  lines = [
      "# Start-up: the command to the first train step", "",
      f"Machine: {machine()}" + (f"; {args.note}" if args.note else ""), "",
      "Command: `python experiments/startup.py "
      + shlex.join(sys.argv[1:]) + "`", "",
      f"`{' '.join(['python', *COMMAND[1:]])}`, medians of {args.starts} "
      "starts after one that warms the caches; seconds.", "",
      "| way | " + " | ".join(phases) + " |",
      "|---|" + "---|" * len(phases)]
  for way, runs in results.items():
    lines.append(f"| {way} | " + " | ".join(
        f"{statistics.median(r[p] for r in runs):.2f}" for p in phases)
        + " |")
  lines += [
      "", "imports: Python and the modules the trainer needs before its "
      "first step (JAX alone about 1 s); devices: the CPU devices and the "
      "mesh; data: the corpus, the tokenizer, the ids; model and state: "
      "the model, the memory check, the run directory, the initial "
      "parameters and optimiser state; checkpoints and logs: the "
      "checkpoint manager, the metrics log; first step's program: the "
      "train step read or traced and compiled, and started.", ""]
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--starts", type=int, default=5)
  parser.add_argument("--name", default="startup_cpu")
  parser.add_argument("--out_dir", default=str(REPO / "experiments/results"))
  parser.add_argument("--note", default="")
  args = parser.parse_args()
  results = {}
  with tempfile.TemporaryDirectory(prefix="startup_") as scratch:
    scratch = pathlib.Path(scratch)
    for i, (way, env) in enumerate(WAYS.items()):
      runs = [start(env, scratch / f"{i}_{n}") for n in range(args.starts + 1)]
      results[way] = runs[1:]  # the first warms the caches this way reads
      print(way, results[way][-1], flush=True)
  text = render(results, args)
  out = pathlib.Path(args.out_dir) / f"{args.name}.md"
  out.write_text(text)
  print(text)


if __name__ == "__main__":
  main()
