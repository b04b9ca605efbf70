"""Masked against causal: the same size, the same data, the same steps.

    python experiments/masked_vs_causal.py  # long: not run by tests

Trains, one after another, configs/char_mlm.py (BERT masking), its
`diffusion` variant and the causal model of the same size
(configs/char_tf.py with dense attention, as the encoder has), each for
--steps steps, then fills blanks and generates with each. Writes
experiments/results/masked_vs_causal.md: for each run its wall time, the
masked-token loss and accuracy (masked runs), the val loss (the causal
model's nats per character, the diffusion run's bound on them), and
samples. The runs stay in --root.

On your own text, use the sweep (docs/EXPERIMENTS.md, "The guide's
experiments on your own text"): `lm-jax-sweep --config=char_tf
--config.data.path=my_text.txt
--set=config=char_mlm,char_mlm:diffusion,char_tf`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # lm_jax, run from anywhere
RUNS = {  # name -> (config, extra flags)
    "masked (bert)": ("configs/char_mlm.py", []),
    "masked (diffusion)": ("configs/char_mlm.py:diffusion", []),
    "causal": ("configs/char_tf.py", ["--config.model.attention=dense"]),
}
FILLS = ("To be, or not to __, that is the question",
         "Friends, R_____, countrymen, lend me your ears")


def cpu_name() -> str:
  for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return platform.processor()


def train(runs: dict[str, list[str]], parallel: bool) -> None:
  """`lm_jax.train` with each run's flags: one after another, or at once
  (the same load on each: their wall times compare)."""
  procs = []
  for name, flags in runs.items():
    proc = subprocess.Popen([sys.executable, "-m", "lm_jax.train", *flags],
                            cwd=ROOT, text=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    procs.append((name, proc))
    if not parallel:
      proc.wait()
  for name, proc in procs:
    if proc.wait():
      raise SystemExit(f"{name} failed:\n{proc.stderr.read()[-3000:]}")


def evals(workdir: pathlib.Path) -> list[dict]:
  records = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r for r in records if "val_loss" in r]


def sample(workdir: pathlib.Path, name: str) -> list[str]:
  """Markdown of what `lm-jax-sample` prints: 100 tokens after "ROMEO:"
  (unmasked in 100 steps by a masked run) and, by a masked run, --fill."""
  import contextlib
  import io

  import jax

  from lm_jax import tasks
  from lm_jax.generation import sampling
  from lm_jax.runs import rundir
  run_ = rundir.load_run(workdir)
  task = tasks.task_of(run_.model)
  options = sampling.SamplingOptions(max_new_tokens=100, temperature=0.8)
  calls = [("--prompt=ROMEO: --max_new_tokens=100", lambda: task.sample(
      run_, "ROMEO:", jax.random.key(0), options, 1, ""))]
  if name != "causal":
    calls += [(f'--fill="{fill}"', lambda fill=fill: task.fill(
        run_, fill, jax.random.key(0))) for fill in FILLS]
  out = []
  for flags, call in calls:
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
      call()
    out.append(f"`{name}`: `{flags}`\n\n```\n{text.getvalue().rstrip()}"
               "\n```\n")
  return out


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--runs", default=",".join(RUNS),
                      help="comma-separated names of RUNS")
  parser.add_argument("--parallel", action="store_true",
                      help="train the runs at once")
  parser.add_argument("--report_only", action="store_true",
                      help="train nothing: report the runs' last evaluations")
  parser.add_argument("--root", default="runs/masked_vs_causal")
  parser.add_argument("--out",
                      default="experiments/results/masked_vs_causal.md")
  args = parser.parse_args()
  root = ROOT / args.root
  names = args.runs.split(",")
  workdirs = {name: root / name.split()[-1].strip("()") for name in RUNS}
  load = open("/proc/loadavg").read().split()[0]
  todo = {name: [f"--config={RUNS[name][0]}", f"--workdir={workdirs[name]}",
                 f"--config.train.num_steps={args.steps}", *RUNS[name][1]]
          for name in names if not (workdirs[name] / "metrics.jsonl").exists()
          or evals(workdirs[name])[-1]["step"] < args.steps}
  if not args.report_only:
    train(todo, args.parallel)
  rows, samples = [], []
  for name in names:
    last = evals(workdirs[name])[-1]
    rows.append((name, last, last["elapsed_s"]))
    samples += sample(workdirs[name], name)
  lines = [
      "# Masked against causal, char level, built-in plays",
      "",
      f"`python experiments/masked_vs_causal.py {' '.join(sys.argv[1:])}` "
      "on a "
      f"2-core {cpu_name()}, shared with other jobs (1-minute load average "
      f"{load} at the start), "
      f"{time.strftime('%Y-%m-%d')}. Each run is 4 layers x 128 wide, "
      "32 x 128 characters a step, the recipe options; wall: the run's "
      "elapsed_s at its last evaluation (start-up, compiling and earlier "
      "evaluations included). val loss: nats per character "
      "(causal: the held-out cross-entropy; diffusion: the bound on it; "
      "bert: the loss over the chosen characters, no bound).",
      "",
      "| run | steps | wall | val loss (nats/char) | bpc | masked-token "
      "loss | top-1 | top-5 |",
      "|---|---|---|---|---|---|---|---|"]
  for name, r, wall in rows:
    masked = (f"{r['val_masked_loss']:.4f} | {r['val_acc']:.2%} | "
              f"{r['val_top5']:.2%}" if "val_acc" in r else "- | - | -")
    lines.append(f"| {name} | {r['step']} | {wall / 60:.1f} min | "
                 f"{r['val_loss']:.4f} | {r['val_bpc']:.4f} | {masked} |")
  lines += ["", "## Samples", "", *samples]
  out = ROOT / args.out
  out.write_text("\n".join(lines) + "\n")
  print(out.read_text())


if __name__ == "__main__":
  main()
