"""Masked against causal at equal wall time: the same data, the same
training seconds.

    python experiments/masked_vs_causal.py  # about 36 min: 2 x 15 training
    python experiments/masked_vs_causal.py --seconds=20 --eval_seconds=5 \\
        --calibrate=5 --root=/tmp/mvc --out=/tmp/mvc/result  # a check, ~3 min

Trains, one after another (never at once: each has the machine to
itself), `configs/char_mlm.py:diffusion` (masked diffusion) and the
causal model of the same size (`configs/char_tf.py` with dense attention,
as the encoder has), each with `python -m lm_jax.train` and a budget of
--seconds training seconds (config.train.max_seconds: compiling,
start-up and evaluations not counted; the trainer stops there, evaluates
and saves). Each run's schedule spans the steps it is expected to make in
the budget (x 1.2, so the budget ends it: its steps per second measured
by a first run of --calibrate training seconds, or with --calibrate=0
RUNS' figure for the quiet 2-core Xeon), and it evaluates about every --eval_seconds
training seconds on the same fixed slice of the held-out plays
(config.train.eval_tokens).

Writes experiments/results/masked_vs_causal.{md,json} (--out): the
machine and its load, each run's val loss (the diffusion run's bound on
nats per character, the causal model's nats per character) at each
evaluation against its training seconds, the gap at equal training
seconds (the causal curve interpolated at the masked run's evaluations,
and the two last evaluations), and samples. --runs adds `masked (bert)`
(no bound: its loss is over the chosen characters), `masked (diffusion,
6x192)` (a larger masked model, the same seconds) or `masked (diffusion,
independent rates)` (the rates drawn apart, not stratified: the A/B). The runs stay in
--root; a run already at its budget there is reported, not retrained.

On your own text, use the sweep (docs/EXPERIMENTS.md, "The guide's
experiments on your own text"): `lm-jax-sweep --config=char_tf
--config.data.path=my_text.txt --equal_time=900
--set=config=char_mlm:diffusion,char_tf`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # lm_jax, run from anywhere

from experiments.bench_throughput import machine  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Run:
  slug: str  # its workdir under --root
  config: str
  flags: tuple[str, ...]
  # Steps per training second on the quiet 2-core Xeon (char_tf's default
  # made ~25k tokens/s, char_mlm 1000 steps in 227 s with evaluations:
  # experiments/results/configs/), for its schedule and evaluations when
  # --calibrate=0 (otherwise measured first on the machine).
  steps_per_s: float


CAUSAL = "causal"
RUNS = {
    "masked (diffusion)": Run("diffusion", "configs/char_mlm.py:diffusion",
                              (), 5.0),
    CAUSAL: Run("causal", "configs/char_tf.py",
                ("--config.model.attention=dense",
                 "--config.train.sample_tokens=0"), 6.0),
    "masked (bert)": Run("bert", "configs/char_mlm.py", (), 5.0),
    "masked (diffusion, independent rates)": Run(
        "diffusion_independent", "configs/char_mlm.py:diffusion",
        ("--config.train.stratified_rates=False",), 5.0),
    "masked (diffusion, 6x192)": Run(
        "diffusion_6x192", "configs/char_mlm.py:diffusion",
        ("--config.model.num_layers=6", "--config.model.d_model=192",
         "--config.model.num_heads=6"), 2.0),
}
DEFAULT_RUNS = ("masked (diffusion)", CAUSAL)
SCHEDULE_MARGIN = 1.2  # num_steps over the expected steps: the budget ends it
FILLS = ("To be, or not to __, that is the question",
         "Friends, R_____, countrymen, lend me your ears")


def plan(steps_per_s: float, seconds: float, eval_seconds: float) -> dict:
  """num_steps and eval_every for a budget of `seconds` at `steps_per_s`.
  """
  return dict(steps_per_s=steps_per_s,
              num_steps=max(1, math.ceil(steps_per_s * seconds
                                         * SCHEDULE_MARGIN)),
              eval_every=max(1, round(steps_per_s * eval_seconds)))


def calibrate(name: str, run: Run, workdir: pathlib.Path, seconds: float
              ) -> float:
  """`run`'s steps per training second, measured by training it for
  `seconds` (its last evaluation's step / train_s); kept in `workdir`."""
  if not evals(workdir):
    print(f"{name}: measuring its steps per second ({seconds:g} s)",
          flush=True)
    train(name, [f"--config={run.config}", f"--workdir={workdir}",
                 f"--config.train.max_seconds={seconds}",
                 "--config.train.num_steps=100000",
                 "--config.train.eval_every=100000", *run.flags])
  last = evals(workdir)[-1]
  return last["step"] / last["train_s"]


def flags_of(run: Run, workdir: pathlib.Path, seconds: float,
             planned: dict) -> list[str]:
  return [f"--config={run.config}", f"--workdir={workdir}",
          f"--config.train.max_seconds={seconds}",
          f"--config.train.num_steps={planned['num_steps']}",
          f"--config.train.eval_every={planned['eval_every']}", *run.flags]


def evals(workdir: pathlib.Path) -> list[dict]:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  records = [json.loads(line) for line in path.read_text().splitlines()]
  return [r for r in records if "val_loss" in r]


def finished(workdir: pathlib.Path, seconds: float, num_steps: int) -> bool:
  done = evals(workdir)
  return bool(done) and (done[-1].get("train_s", 0.0) >= seconds
                         or done[-1]["step"] >= num_steps)


def train(name: str, flags: list[str]) -> dict:
  """One `lm_jax.train` run, alone; the load average before and after."""
  before = os.getloadavg()[0]
  began = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "lm_jax.train", *flags],
                        cwd=ROOT, text=True, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
  if proc.returncode:
    raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
  return dict(load_before=before, load_after=os.getloadavg()[0],
              wall_s=time.perf_counter() - began)


def curve(workdir: pathlib.Path) -> list[dict]:
  """Each evaluation: step, training and wall seconds, val loss (the
  bound for diffusion), and the masked runs' loss and accuracy."""
  keys = ("step", "train_s", "elapsed_s", "val_loss", "val_bpc",
          "val_bound", "val_masked_loss", "val_acc", "val_top5")
  return [{k: r[k] for k in keys if k in r} for r in evals(workdir)]


def gaps(masked: list[dict], causal: list[dict]) -> list[dict]:
  """At each of the masked run's evaluations within the causal curve's
  training seconds: its bound, the causal loss interpolated there (linear
  in training seconds), and the gap."""
  xs = np.array([r["train_s"] for r in causal])
  ys = np.array([r["val_loss"] for r in causal])
  out = []
  for r in masked:
    if xs.size and xs[0] <= r["train_s"] <= xs[-1] * 1.02:
      c = float(np.interp(r["train_s"], xs, ys))
      out.append(dict(train_s=r["train_s"], bound=r["val_bound"],
                      causal=c, gap=r["val_bound"] - c))
  return out


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
  if name != CAUSAL:
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


def number(value, fmt: str) -> str:
  return "-" if value is None else format(value, fmt)


def render(result: dict, samples: list[str]) -> str:
  lines = [
      "# Masked diffusion against causal at equal training seconds, "
      "char level, built-in plays", "",
      f"`{result['command']}`, {result['date']}. Machine: "
      f"{result['machine']}; the runs one after another, each alone. "
      f"Budget: {result['seconds']:g} training seconds per run "
      "(config.train.max_seconds: compiling, start-up and evaluations not "
      "counted); val on the same "
      f"{result['eval_tokens']:,} held-out characters at each evaluation. "
      "val loss: nats per character (causal: the held-out cross-entropy; "
      "diffusion: the bound on it; bert: the loss over the chosen "
      "characters, no bound). steps/s: measured by a first run of "
      f"{result['calibrate']:g} training seconds (0: RUNS' figures), the "
      "run's schedule planned for 1.2 x the steps its budget makes at "
      "that rate.", "",
      "| run | config | steps/s | steps (planned) | training s | wall s "
      "| load before / after | last val loss | bpc |",
      "|---|---|---|---|---|---|---|---|---|"]
  for name, r in result["runs"].items():
    last = r["evals"][-1] if r["evals"] else {}
    load = r.get("load") or {}
    config = " ".join([f"`{r['config']}`", *r["flags"]])
    lines.append(
        f"| {name} | {config} | "
        f"{r['steps_per_s']:.2f} | {last.get('step', '-')} "
        f"({r['num_steps']}) | "
        f"{number(last.get('train_s'), '.0f')} | "
        f"{number(load.get('wall_s'), '.0f')} | "
        f"{number(load.get('load_before'), '.2f')} / "
        f"{number(load.get('load_after'), '.2f')} | "
        f"{number(last.get('val_loss'), '.4f')} | "
        f"{number(last.get('val_bpc'), '.4f')} |")
  for name, rows in result["gaps"].items():
    lines += ["", f"## The gap at equal training seconds: {name} against "
              "causal", "",
              "The causal val loss interpolated (linearly in training "
              "seconds) at the masked run's evaluations.", "",
              "| training s | bound | causal | gap (nats/char) |",
              "|---|---|---|---|"]
    lines += [f"| {g['train_s']:.0f} | {g['bound']:.4f} | "
              f"{g['causal']:.4f} | {g['gap']:+.4f} |" for g in rows]
    final = result["final_gaps"].get(name)
    if final:
      lines += ["", f"Last evaluations: bound {final['bound']:.4f} at "
                f"{final['masked_s']:.0f} s against causal "
                f"{final['causal']:.4f} at {final['causal_s']:.0f} s: "
                f"**{final['gap']:+.4f}** nats/char (the goal: within "
                "0.25)."]
  lines += ["", "## Each run's evaluations", ""]
  for name, r in result["runs"].items():
    lines += [f"`{name}`:", "",
              "| step | training s | wall s | val loss | masked loss | "
              "top-1 |", "|---|---|---|---|---|---|"]
    lines += [f"| {e['step']} | {e.get('train_s', 0):.0f} | "
              f"{e['elapsed_s']:.0f} | {e['val_loss']:.4f} | "
              f"{number(e.get('val_masked_loss'), '.4f')} | "
              f"{number(e.get('val_acc'), '.2%')} |" for e in r["evals"]]
    lines.append("")
  lines += ["## Samples", "", *samples]
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--seconds", type=float, default=900.0,
                      help="training seconds per run (max_seconds)")
  parser.add_argument("--eval_seconds", type=float, default=90.0,
                      help="about how many training seconds between "
                      "evaluations")
  parser.add_argument("--calibrate", type=float, default=30.0,
                      help="training seconds of a first run measuring each "
                      "config's steps per second (0: RUNS' figures)")
  parser.add_argument("--runs", default=",".join(DEFAULT_RUNS),
                      help=f"comma-separated names of {list(RUNS)}")
  parser.add_argument("--report_only", action="store_true",
                      help="train nothing: report the runs in --root")
  parser.add_argument("--root", default="runs/masked_vs_causal")
  parser.add_argument("--out", default="experiments/results/masked_vs_causal",
                      help="writes OUT.md and OUT.json")
  args = parser.parse_args()
  names = args.runs.split(",")
  unknown = [n for n in names if n not in RUNS]
  if unknown:
    raise SystemExit(f"--runs: unknown {unknown}; choose from {list(RUNS)}")
  root = ROOT / args.root
  result: dict = dict(
      command="python experiments/masked_vs_causal.py "
      + " ".join(sys.argv[1:]), machine=machine(),
      date=time.strftime("%Y-%m-%d"), seconds=args.seconds,
      eval_seconds=args.eval_seconds, calibrate=args.calibrate, runs={}, gaps={}, final_gaps={})
  from lm_jax.config import base_config  # char_mlm and char_tf keep it
  result["eval_tokens"] = base_config().train.eval_tokens
  for name in names:
    run = RUNS[name]
    workdir = root / f"{run.slug}_{args.seconds:g}s"
    rate = run.steps_per_s
    if args.calibrate and not args.report_only:
      rate = calibrate(name, run, root / f"{run.slug}_calibrate",
                       args.calibrate)
    planned = plan(rate, args.seconds, args.eval_seconds)
    flags = flags_of(run, workdir, args.seconds, planned)
    load = None
    if not args.report_only and not finished(
        workdir, args.seconds, planned["num_steps"]):
      print(f"{name}: {' '.join(flags)}", flush=True)
      load = train(name, flags)
    result["runs"][name] = dict(config=run.config, flags=list(run.flags),
                                workdir=str(workdir), load=load, **planned,
                                evals=curve(workdir))
  causal = result["runs"].get(CAUSAL, {}).get("evals")
  for name, r in result["runs"].items():
    if causal and r["evals"] and "val_bound" in r["evals"][-1]:
      result["gaps"][name] = gaps(r["evals"], causal)
      m, c = r["evals"][-1], causal[-1]
      result["final_gaps"][name] = dict(
          bound=m["val_bound"], masked_s=m["train_s"], causal=c["val_loss"],
          causal_s=c["train_s"], gap=m["val_bound"] - c["val_loss"])
  samples = []
  for name, r in result["runs"].items():
    if r["evals"]:
      samples += sample(pathlib.Path(r["workdir"]), name)
  out = ROOT / args.out
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
  out.with_suffix(".md").write_text(render(result, samples))
  print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
  main()
