"""Time to quality: lm_jax recipes against nanoGPT's baby run, on this machine.

    python experiments/race.py --quick   # a few minutes
    python experiments/race.py           # long: 2000 steps, 2 seeds each
    python experiments/race.py --speedrun  # configs/char_tf.py:speedrun to
                                           # 1.60, 1.55, 1.50 and 1.47

On tinyshakespeare (../shared/data/tinyshakespeare.txt) split as nanoGPT
does (first 90% train, last 10% val), it runs the reference recipe
(`experiments/race_torch.py`: the PyTorch twin with nanoGPT's baby settings)
and each lm_jax contestant (a config and its overrides, run with
`python -m lm_jax.train` as a user would), every one in its own process,
one after another, for each seed. Every run evaluates the whole val split
every --eval_every steps. From each run's metrics.jsonl it reports:

  target        the reference's final val loss (median over seeds)
  time to target  wall seconds from the process start to the first
                evaluation at or below the target, start-up and compile
                included, evaluation time excluded (reported apart)
  val at budget the val loss at the last evaluation within the reference's
                token budget (its steps x batch x context)
  tokens/s      the median of the run's logged training rates

With --targets (the --speedrun preset: 1.60, 1.55, 1.50, 1.47) it also
reports the time to each of those val losses, and the final and best val;
--no_reference races the contestants alone.

It draws every val curve against training wall time and against tokens.
Writes experiments/results/race_cpu.{json,md,png} (--name to change).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.bench_throughput import machine  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
REFERENCE = "reference (PyTorch, nanoGPT baby)"
CONTESTANTS = ["configs/char_tf.py:baby", "configs/char_tf.py:fast"]
QUICK = dict(steps=300, eval_every=50, contestants=CONTESTANTS)
# The speedrun (configs/char_tf.py:speedrun) to nanoGPT's GPU val loss and
# the marks on the way; its own steps, no reference run.
SPEEDRUN = dict(contestants=["configs/char_tf.py:speedrun"], no_reference=True,
                targets="1.60,1.55,1.50,1.47", eval_every=200,
                name="race_speedrun_cpu")


def read_run(workdir: pathlib.Path) -> dict:
  """A run's val curve and rates from its metrics.jsonl and config.json.

  curve: (step, tokens, train seconds, val loss) per evaluation, where
  train seconds = elapsed_s - eval_s (wall since the process started, less
  the time spent in earlier evaluations).
  """
  t = json.loads((workdir / "config.json").read_text())["train"]
  per_step = t["batch_size"] * t["seq_len"]
  records = [json.loads(l) for l in
             (workdir / "metrics.jsonl").read_text().splitlines() if l]
  val = [r for r in records if "val_loss" in r]
  rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
  return dict(
      curve=[(r["step"], r["step"] * per_step, r["elapsed_s"] - r["eval_s"],
              r["val_loss"]) for r in val],
      tokens_per_s=statistics.median(rates) if rates else None,
      eval_s=val[-1]["eval_s"],  # in the evaluations before the last
      final_val=val[-1]["val_loss"], steps=val[-1]["step"])


def time_to_target(curve: list, target: float) -> float | None:
  """Train seconds at the first evaluation at or below `target`; None if
  none reached it."""
  return next((s for _, _, s, loss in curve if loss <= target), None)


def val_at_budget(curve: list, tokens: int) -> float | None:
  """The val loss of the last evaluation within `tokens` tokens."""
  within = [loss for _, n, _, loss in curve if n <= tokens]
  return within[-1] if within else None


def median(values: list) -> float | None:
  """The median of the values that are not None (None if any is None:
  a run that never got there has no time)."""
  if not values or any(v is None for v in values):
    return None
  return statistics.median(values)


def summarise(runs: dict[str, list[dict]], targets: list[float] = ()
              ) -> dict:
  """Per contestant: target, times to target, val at budget, rates; and
  the train seconds to each of the fixed `targets` (a val loss each).

  Without the reference among the runs there is no reference target nor
  token budget (None), only the fixed targets.
  """
  reference = runs.get(REFERENCE)
  target = budget = None
  if reference:
    target = statistics.median(r["final_val"] for r in reference)
    budget = int(statistics.median(r["curve"][-1][1] for r in reference))
  rows = []
  for name, seeds in runs.items():
    # The reference's time is its whole run: the target is where it ends
    # (a seed ending above the median still ends there).
    times = [None if target is None else r["curve"][-1][2]
             if name == REFERENCE else time_to_target(r["curve"], target)
             for r in seeds]
    at_budget = [None if budget is None else val_at_budget(r["curve"], budget)
                 for r in seeds]
    finals = [r["final_val"] for r in seeds]
    to_targets = {f"{t:.2f}": [time_to_target(r["curve"], t) for r in seeds]
                  for t in targets}
    rows.append(dict(
        name=name, seeds=len(seeds), time_to_target_s=times,
        median_time_s=median(times), val_at_budget=at_budget,
        median_val_at_budget=median(at_budget), final_val=finals,
        median_final_val=statistics.median(finals),
        best_val=[min(c[3] for c in r["curve"]) for r in seeds],
        spread=max(finals) - min(finals), to_targets=to_targets,
        tokens_per_s=median([r["tokens_per_s"] for r in seeds]),
        eval_s=median([r["eval_s"] for r in seeds]),
        train_s=median([r["curve"][-1][2] for r in seeds])))
  return dict(target=target, budget_tokens=budget, targets=list(targets),
              rows=rows)


def fmt(value, spec: str = ".4f", missing: str = "not reached") -> str:
  return missing if value is None else format(value, spec)


def seeds_text(values: list, spec: str) -> str:
  return "; ".join(fmt(x, spec, "-") for x in values)


def render_markdown(result: dict) -> str:
  """The race table(s) and how they were measured."""
  s = result["summary"]
  lines = [
      f"# Race to the {'reference' if s['target'] else 'targets'}' val loss "
      f"({result['mode']})", "",
      f"Machine: {result['machine']}; load average {result['load']}"
      + (f"; {result['note']}" if result.get("note") else ""), "",
      f"Command: `{result['command']}`", ""]
  if s["target"] is not None:
    lines += reference_table(s, result)
  if s.get("targets"):
    lines += targets_table(s, result)
  lines += ["Time to target is wall time from the process start (start-"
            "up and compile included) to the first evaluation at or below "
            "the target, less the evaluation time before it; evaluations "
            "come every --eval_every steps, so it is rounded up to one.",
            "", f"![curves]({result['name']}.png)", ""]
  return "\n".join(lines)


def reference_table(s: dict, result: dict) -> list[str]:
  """Each contestant against the reference's final val and token budget."""
  ref_time = next(r["median_time_s"] for r in s["rows"]
                  if r["name"] == REFERENCE)
  lines = [
      f"Target (reference's final val, median of {result['seeds']} seeds): "
      f"**{s['target']:.4f}** nats; token budget {s['budget_tokens']:,}; "
      f"val over the whole val split every {result['eval_every']} steps.",
      "", "| contestant | time to target s (median; seeds) | vs reference "
      "| val at budget (median; seeds) | final val spread | tokens/s | "
      "eval s |", "|---|---|---|---|---|---|---|"]
  for r in s["rows"]:
    ratio = (None if r["median_time_s"] is None or ref_time is None
             else r["median_time_s"] / ref_time)
    lines.append(
        f"| {r['name']} | {fmt(r['median_time_s'], '.1f')} "
        f"({seeds_text(r['time_to_target_s'], '.1f')}) | "
        f"{fmt(ratio, '.2f', '-')}x | {fmt(r['median_val_at_budget'])} "
        f"({seeds_text(r['val_at_budget'], '.4f')}) | {r['spread']:.4f} | "
        f"{fmt(r['tokens_per_s'], ',.0f', '-')} | "
        f"{fmt(r['eval_s'], '.1f', '-')} |")
  return lines + [""]


def targets_table(s: dict, result: dict) -> list[str]:
  """Train seconds to each fixed target, the final and best val."""
  names = [f"{t:.2f}" for t in s["targets"]]
  lines = [
      f"Train seconds to each val loss (median of {result['seeds']} seeds; "
      f"each seed), val over the whole val split every "
      f"{result['eval_every']} steps; evaluation seconds apart.", "",
      "| contestant | " + " | ".join(f"to {n}" for n in names)
      + " | final val (seeds) | best val (seeds) | train s | eval s | "
      "tokens/s |", "|---|" + "---|" * (len(names) + 5)]
  for r in s["rows"]:
    cells = [f"{fmt(median(r['to_targets'][n]), '.0f')} "
             f"({seeds_text(r['to_targets'][n], '.0f')})" for n in names]
    lines.append(
        f"| {r['name']} | " + " | ".join(cells)
        + f" | {r['median_final_val']:.4f} ({seeds_text(r['final_val'], '.4f')})"
        f" | {seeds_text(r['best_val'], '.4f')} | "
        f"{fmt(r.get('train_s'), '.0f', '-')} | "
        f"{fmt(r['eval_s'], '.0f', '-')} | "
        f"{fmt(r['tokens_per_s'], ',.0f', '-')} |")
  return lines + [""]


def plot(result: dict, runs: dict, path: pathlib.Path) -> None:
  """Val loss against train wall seconds (left) and tokens (right)."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=(12, 4.5), dpi=100)
  axes = fig.subplots(1, 2)
  for i, (name, seeds) in enumerate(runs.items()):
    for j, run in enumerate(seeds):
      _, tokens, seconds, losses = zip(*run["curve"])
      for ax, x in zip(axes, (seconds, tokens)):
        ax.plot(x, losses, color=f"C{i % 10}", ls=("-", "--", ":")[j % 3],
                marker="o", ms=2, label=f"{name} seed {j}")
  summary = result["summary"]
  for ax, label in zip(axes, ("train wall seconds (eval excluded)",
                              "tokens seen")):
    for target in ([summary["target"]] if summary["target"] else []) + list(
        summary.get("targets", [])):
      ax.axhline(target, color="k", lw=0.8, ls=":")
    ax.set_xlabel(label)
    ax.set_ylabel("val loss (nats per char)")
    ax.set_ylim(top=min(3.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7)
  fig.suptitle(f"race: {result['machine']}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path)


def command(contestant: str, workdir: pathlib.Path, seed: int, args
            ) -> list[str]:
  """The process of one run: the reference or `python -m lm_jax.train`."""
  if contestant == REFERENCE:
    return [sys.executable, "-m", "experiments.race_torch",
            f"--data={args.data}", f"--workdir={workdir}", f"--seed={seed}",
            f"--num_steps={args.steps}", f"--eval_every={args.eval_every}",
            f"--threads={args.torch_threads}"]
  config, *overrides = shlex.split(contestant)
  steps = [f"--config.train.num_steps={args.steps}"] if args.quick else []
  return [sys.executable, "-m", "lm_jax.train", f"--config={config}",
          *overrides, *steps, f"--workdir={workdir}",
          f"--config.data.path={args.data}", f"--config.seed={seed}",
          f"--config.train.eval_every={args.eval_every}",
          "--config.train.eval_tokens=1000000000",
          "--config.train.sample_tokens=0"]


def run_all(args, scratch: pathlib.Path) -> tuple[dict, list[float]]:
  """Every contestant for every seed, one process at a time."""
  names = ([] if args.no_reference else [REFERENCE]) + args.contestants
  runs = {name: [] for name in names}
  load = []
  for seed in range(args.first_seed, args.first_seed + args.seeds):
    for i, name in enumerate(runs):
      workdir = scratch / f"c{i}_s{seed}"
      load.append(os.getloadavg()[0])
      print(f"[{time.strftime('%H:%M:%S')}] seed {seed}: {name}", flush=True)
      out = subprocess.run(command(name, workdir, seed, args), cwd=REPO,
                           capture_output=True, text=True)
      if out.returncode:
        sys.exit(f"{name} (seed {seed}) failed:\n{out.stderr[-3000:]}")
      runs[name].append(read_run(workdir))
      print(f"  final val {runs[name][-1]['final_val']:.4f}", flush=True)
  load.append(os.getloadavg()[0])
  return runs, load


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help=f"{QUICK['steps']} steps, fewer contestants")
  parser.add_argument("--contestants", nargs="+", default=None,
                      help="lm_jax configs with overrides, each one string")
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--steps", type=int, default=None,
                      help="reference steps (default 2000, quick 300)")
  parser.add_argument("--eval_every", type=int, default=None)
  parser.add_argument("--torch_threads", type=int, default=0,
                      help="the reference's PyTorch threads (0: default); "
                      "1 on a loaded machine, where two threads wait on each "
                      "other")
  parser.add_argument("--targets", default="",
                      help="val losses to time each run to, e.g. "
                      "1.60,1.55,1.50,1.47 (besides the reference's final val)")
  parser.add_argument("--no_reference", action="store_true",
                      help="race the contestants only (to --targets)")
  parser.add_argument("--speedrun", action="store_true",
                      help=f"the speedrun preset: {SPEEDRUN}")
  parser.add_argument("--data", default=str(DATA))
  parser.add_argument("--name", default="race_cpu")
  parser.add_argument("--out_dir", default=str(REPO / "experiments/results"))
  parser.add_argument("--note", default="", help="said under the machine")
  parser.add_argument("--first_seed", type=int, default=0,
                      help="run seeds first_seed, first_seed + 1, ...")
  parser.add_argument("--append", action="store_true", help="add the runs "
                      "to OUT_DIR/NAME.json's (more seeds of a race written "
                      "before: give --first_seed) and rewrite the table")
  parser.add_argument("--collect", nargs="+", default=None, metavar="DIR",
                      help="a race stopped early: summarise the finished run "
                      "directories of its one contestant (seeds 0, 1, ... "
                      "in order) instead of running")
  parser.add_argument("--rewrite", action="store_true", help="only rewrite "
                      "the table and plot from OUT_DIR/NAME.json's runs")
  args = parser.parse_args()
  out = pathlib.Path(args.out_dir)
  if args.speedrun:
    for key, value in SPEEDRUN.items():
      if getattr(args, key) in (None, "", False, parser.get_default(key)):
        setattr(args, key, value)
  targets = [float(t) for t in args.targets.split(",") if t.strip()]
  if args.rewrite:
    result = json.loads((out / f"{args.name}.json").read_text())
    result["summary"] = summarise(result["runs"], result.get("targets", []))
    result["note"] = args.note or result.get("note", "")
    write(result, out)
    return
  if not args.collect and not pathlib.Path(args.data).is_file():
    print(f"skipped: the race needs tinyshakespeare at {args.data}; pass "
          "--data=PATH to the text", file=sys.stderr)
    return
  quick = QUICK if args.quick else dict(steps=2000, eval_every=250,
                                        contestants=CONTESTANTS)
  for key, value in quick.items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  if args.collect:
    if len(args.contestants) != 1 or not args.no_reference:
      sys.exit("--collect summarises one contestant's runs: give one "
               "--contestants and --no_reference (or --speedrun)")
    runs = {args.contestants[0]: [read_run(pathlib.Path(d))
                                  for d in args.collect]}
    load, args.seeds = [os.getloadavg()[0]], len(args.collect)
  else:
    with tempfile.TemporaryDirectory(prefix="race_") as scratch:
      runs, load = run_all(args, pathlib.Path(scratch))
  command_line = "python experiments/race.py " + shlex.join(sys.argv[1:])
  if args.append:  # the runs and commands written before come first
    before = json.loads((out / f"{args.name}.json").read_text())
    if sorted(before["runs"]) != sorted(runs):
      sys.exit(f"--append: {args.name}.json raced {sorted(before['runs'])}, "
               f"not {sorted(runs)}")
    runs = {name: before["runs"][name] + runs[name] for name in runs}
    command_line = before["command"] + "`, then `" + command_line
    load = [float(x) for x in re.findall(
        r"\d+\.\d+", before["load"].split("(")[0])] + load
    args.seeds += before["seeds"]
  result = dict(
      name=args.name, mode="quick" if args.quick else "full",
      machine=machine(), seeds=args.seeds, eval_every=args.eval_every,
      command=command_line,
      load=("not recorded (runs collected afterwards)" if args.collect else
            f"{min(load):.1f}-{max(load):.1f} (1-minute, between runs)"),
      note=args.note, targets=targets, summary=summarise(runs, targets),
      runs=runs)
  write(result, out)


def write(result: dict, out: pathlib.Path) -> None:
  """NAME.json (every curve), NAME.md (the table) and NAME.png."""
  out.mkdir(parents=True, exist_ok=True)
  name = result["name"]
  (out / f"{name}.json").write_text(json.dumps(result, indent=1))
  (out / f"{name}.md").write_text(render_markdown(result))
  plot(result, result["runs"], out / f"{name}.png")
  print(render_markdown(result))


if __name__ == "__main__":
  main()
