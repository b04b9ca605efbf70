"""Training throughput, JAX against PyTorch, on the same models.

    python experiments/bench_throughput.py            # the full table
    python experiments/bench_throughput.py --quick    # baby model, < 2 min
    python experiments/bench_throughput.py --device=gpu

For each configuration and precision it starts one worker process per
framework (JAX running `lm_jax.training.steps.train_steps`, PyTorch eager, PyTorch
`torch.compile`; see `bench_runners.py`), measures the first call (compile
time), discards a warm-up call, then times calls in rotating order so that
every framework sees the same machine load, and reports medians. It also
measures the fp32 matmul peak of both frameworks in the same run. Results:
experiments/results/<device>.json, .md and .png.

With `--device=gpu`: float32 products use TF32 on both sides (see
`bench_runners`), every configuration runs 16 steps per call and 5 timed
calls (a step takes milliseconds there), the memory column is the GPU's
peak, and `--concurrent-compile` (the frameworks compile at the same time,
on the host's cores) keeps the run short; compile times are then upper
bounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shlex
import platform
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.bench_runners import MALLOC_ENVS, MATMUL_N, VOCAB  # noqa: E402

FRAMEWORKS = ("jax", "torch_eager", "torch_compile")


def spec(name: str, layers: int, width: int, seq_len: int, batch: int,
         dropout: float, steps_per_call: int, repeats: int) -> dict:
  """A benchmark configuration: model and train fields of an lm_jax config."""
  return dict(
      name=name, repeats=repeats,
      model=dict(num_layers=layers, num_heads=layers if width > 128 else 4,
                 d_model=width, max_len=seq_len, dropout=dropout),
      train=dict(batch_size=batch, seq_len=seq_len,
                 steps_per_call=steps_per_call))


# The big model takes seconds per step on a 2-core CPU: few, short repeats.
CONFIGS = {
    "baby": spec("baby 4L/128 T64 B12", 4, 128, 64, 12, 0.0, 16, 5),
    # What `python -m lm_jax.train` trains (configs/char_tf.py).
    "default": spec("default 4L/128 T128 B32", 4, 128, 128, 32, 0.0, 16, 3),
    "gpt6": spec("6L/384 T256 B64", 6, 384, 256, 64, 0.0, 1, 2),
    "gpt6_drop": spec("6L/384 T256 B64 drop 0.2", 6, 384, 256, 64, 0.2, 1, 2),
    # Long context: the same model and tokens per step, at T 1024.
    "gpt6_long": spec("6L/384 T1024 B16", 6, 384, 1024, 16, 0.0, 1, 2),
}


def flops_per_token(s: dict) -> float:
  """Training FLOPs per token, the model's own count
  (`LanguageModel.train_flops_per_token`, from abstract parameters: no
  device is touched in this process)."""
  from lm_jax.models import make_model
  from experiments.bench_runners import lm_config
  c = lm_config(s, "fp32")
  model = make_model(c.model, VOCAB)
  return model.train_flops_per_token(model.abstract_params(c.train.seq_len),
                                     c.train.seq_len)


class Worker:
  """One framework in its own process, driven over a pipe."""

  def __init__(self, framework: str, device: str, malloc: str,
               extra_env: dict | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(MALLOC_ENVS.get(malloc, {}))
    env.update(extra_env or {})
    env["JAX_PLATFORMS"] = "cuda" if device == "gpu" else "cpu"
    # Several workers share the GPU: no worker may claim most of its memory.
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.bench_runners",
         f"--framework={framework}", f"--device={device}", f"--malloc={malloc}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        cwd=REPO)

  def send(self, cmd: str, **kw) -> None:
    self.proc.stdin.write(json.dumps(dict(cmd=cmd, **kw)) + "\n")
    self.proc.stdin.flush()

  def receive(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError("benchmark worker died (see its stderr above)")
    return json.loads(line)

  def call(self, cmd: str, **kw) -> dict:
    self.send(cmd, **kw)
    return self.receive()

  def close(self) -> None:
    self.proc.stdin.close()
    self.proc.wait()


@dataclasses.dataclass
class Variant:
  """One column of a measurement: a framework in a process environment."""
  label: str
  framework: str
  malloc: str = "none"
  model: dict = dataclasses.field(default_factory=dict)  # spec overrides
  train: dict = dataclasses.field(default_factory=dict)
  env: dict = dataclasses.field(default_factory=dict)  # the worker's extra


def measure(s: dict, precision: str, variants: list[Variant], device: str,
            concurrent: bool = False, sequential: bool = False) -> list[dict]:
  """Median timings of each variant on spec `s`, the variants taking turns.

  The variants build and compile one at a time, or all at once with
  `concurrent` (shorter, but each compile time then includes the others'
  load on the host). With `sequential` each variant's timed calls run back
  to back, one variant after another, instead of taking turns.
  """
  workers = {v.label: Worker(v.framework, device, v.malloc, v.env)
             for v in variants}
  specs = {v.label: dict(s, model={**s["model"], **v.model},
                         train={**s["train"], **v.train}) for v in variants}
  # build; first call (compile); a warm-up call, discarded.
  stages = [("build", lambda v: dict(spec=specs[v.label], precision=precision)),
            ("time", lambda v: dict(calls=1)), ("time", lambda v: dict(calls=1))]
  rows = {}
  try:
    replies = {v.label: [] for v in variants}
    for group in ([variants] if concurrent else [[v] for v in variants]):
      for cmd, args in stages:
        for v in group:
          workers[v.label].send(cmd, **args(v))
        for v in group:
          replies[v.label].append(workers[v.label].receive())
    for v in variants:
      vs, first = specs[v.label], replies[v.label][1]["seconds"]
      rows[v.label] = dict(config=s["name"], variant=v.label,
                           framework=v.framework, malloc=v.malloc,
                           precision=precision, first_call_s=first, times=[],
                           tokens_per_call=vs["train"]["steps_per_call"] *
                           vs["train"]["batch_size"] * vs["train"]["seq_len"],
                           steps_per_call=vs["train"]["steps_per_call"],
                           flops_per_token=flops_per_token(vs))
    load = [os.getloadavg()[0]]
    if sequential:
      rounds = [[v] * s["repeats"] for v in variants]
    else:  # rotate who goes first
      rounds = [variants[r % len(variants):] + variants[:r % len(variants)]
                for r in range(s["repeats"])]
    for order in rounds:
      for v in order:
        reply = workers[v.label].call("time", calls=1)
        rows[v.label]["times"].append(reply["seconds"])
        rows[v.label].setdefault("faults", []).append(reply["minor_faults"])
      load.append(os.getloadavg()[0])
    for v in variants:
      rows[v.label].update(workers[v.label].call("mem"))
  finally:
    for w in workers.values():
      w.close()
  for row in rows.values():
    row["load_avg"] = [min(load), max(load)]
    call_s = statistics.median(row["times"])
    row.update(step_ms=1e3 * call_s / row["steps_per_call"],
               faults_per_step=statistics.median(row.pop("faults", [0])) /
               row["steps_per_call"],
               tokens_per_s=row["tokens_per_call"] / call_s,
               compile_s=max(0.0, row["first_call_s"] - call_s),
               gflops=row["tokens_per_call"] / call_s *
               row["flops_per_token"] / 1e9)
    print(f"   {row['variant']:28s} {row['step_ms']:8.1f} ms/step "
          f"{row['tokens_per_s']:9,.0f} tok/s  compile {row['compile_s']:.1f} s"
          f"  load {min(load):.1f}-{max(load):.1f}", flush=True)
  return list(rows.values())


def matmul_peaks(device: str) -> dict:
  """fp32 2048 x 2048 matmul GFLOP/s of XLA and of PyTorch, interleaved."""
  workers = {fw: Worker(fw, device, "none") for fw in ("jax", "torch_eager")}
  try:
    runs = [(fw, w.call("matmul")["gflops"]) for _ in range(3)
            for fw, w in workers.items()]
  finally:
    for w in workers.values():
      w.close()
  return {fw: max(g for f, g in runs if f == fw) for fw in workers}


def ablations(device: str, rows: list[dict], save) -> None:
  """What each lever buys, on the baby model in fp32; appends to `rows`."""
  baby = CONFIGS["baby"]
  print("-- allocator: none / env vars / in-process mallopt", flush=True)
  rows += measure(baby, "fp32", [
      Variant(f"{fw} malloc={m}", fw, malloc=m)
      for fw in ("jax", "torch_eager") for m in ("none", "env", "mallopt")],
      device)
  save()
  print("-- CPU devices: one for all cores / one per core", flush=True)
  rows += measure(baby, "fp32", [
      Variant(f"jax cpu_devices={n}", "jax", train=dict(cpu_devices=n))
      for n in (1, 0)], device)
  save()
  print("-- steps per call", flush=True)
  rows += measure(baby, "fp32", [
      Variant(f"jax steps_per_call={k}", "jax", train=dict(steps_per_call=k))
      for k in (1, 4, 16)], device)
  save()
  print("-- erf vs tanh GELU", flush=True)
  rows += measure(baby, "fp32", [
      Variant(f"{fw} gelu={'tanh' if a else 'erf'}", fw,
              model=dict(gelu_approximate=a))
      for fw in ("jax", "torch_eager") for a in (False, True)], device)
  save()


def gpt6_levers(device: str, rows: list[dict], save) -> None:
  """What each lever buys on the 6-layer/384 model in fp32, against
  PyTorch eager in the same run; appends to `rows`."""
  dense, blocked = dict(attention="dense"), dict(attention="blocked")
  # Two groups, each against PyTorch eager: every worker keeps its model,
  # and all of them at once (the allocator ones keep what they free) would
  # not fit in 24 GiB.
  print("-- 6L/384: attention, memory, threads, CPU devices", flush=True)
  rows += measure(CONFIGS["gpt6"], "fp32", [
      Variant("torch_eager", "torch_eager"),
      Variant("jax attention=dense", "jax", model=dense),
      Variant("jax attention=blocked", "jax", model=blocked),
      Variant("jax blocked remat", "jax", model=dict(blocked, remat=True)),
      # Each device's products on its own core's thread, not split over
      # both cores' threads while the other device runs too.
      Variant("jax blocked eigen 1 thread", "jax", model=blocked,
              env=dict(XLA_FLAGS="--xla_cpu_multi_thread_eigen=false")),
      Variant("jax blocked cpu_devices=1", "jax", model=blocked,
              train=dict(cpu_devices=1)),
  ], device)
  save()
  print("-- 6L/384: allocator", flush=True)
  rows += measure(CONFIGS["gpt6"], "fp32", [
      Variant("torch_eager", "torch_eager"),
      Variant("torch_eager malloc=thp", "torch_eager", malloc="thp"),
      Variant("jax attention=blocked", "jax", model=blocked),
      Variant("jax blocked malloc=mallopt", "jax", malloc="mallopt",
              model=blocked),
      Variant("jax blocked malloc=thp", "jax", malloc="thp", model=blocked),
  ], device)
  save()
  print("-- 6L/384 at T 1024: blocked attention (dense needs 8 GiB of "
        "temporaries alone)", flush=True)
  rows += measure(CONFIGS["gpt6_long"], "fp32", [
      Variant("torch_eager", "torch_eager"),
      Variant("jax attention=blocked", "jax", model=blocked)], device)
  save()
  for name in ("default", "baby"):  # T 128 and T 64: is blocked still ahead?
    print(f"-- {name}: attention, allocator", flush=True)
    rows += measure(CONFIGS[name], "fp32", [
        Variant("torch_eager", "torch_eager"),
        Variant("jax attention=dense", "jax", model=dense),
        Variant("jax attention=blocked", "jax", model=blocked),
        Variant("jax malloc=thp", "jax", malloc="thp"),
    ], device)
    save()


def machine(device: str = "cpu") -> str:
  """The CPU, and with `device="gpu"` the GPU as nvidia-smi names it."""
  try:
    with open("/proc/cpuinfo") as f:
      model = next(l.split(":", 1)[1].strip() for l in f
                   if l.startswith("model name"))
  except (OSError, StopIteration):
    model = platform.processor()
  host = f"{os.cpu_count()}-core {model} ({platform.system()})"
  if device != "gpu":
    return host
  try:
    gpu = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
         "--format=csv,noheader"], capture_output=True, text=True,
        check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    gpu = "unknown GPU"
  return f"GPU {gpu} (name, memory, driver); host {host}"


def markdown(result: dict) -> str:
  """The summary table, the per-variant details and the ablations."""
  peak = max(result["matmul_gflops"].values())
  lines = [f"# Training throughput: JAX vs PyTorch ({result['device']})", "",
           f"Machine: {result['machine']}; {result['note']}", "",
           f"Command: `{result['command']}`", "",
           f"fp32 matmul peak ({MATMUL_N[result['device']]} squared"
           f"{', TF32' if result['device'] == 'gpu' else ''}), measured in "
           "this run: " +
           ", ".join(f"{k} {v:.0f} GFLOP/s"
                     for k, v in result["matmul_gflops"].items()), "",
           "| config | precision | JAX tok/s | PyTorch eager | torch.compile "
           "| JAX / eager | JAX / compile |", "|---|---|---|---|---|---|---|"]
  by = {(r["config"], r["precision"], r["variant"]): r for r in result["rows"]}
  for config, precision in dict.fromkeys(
      (r["config"], r["precision"]) for r in result["rows"]):
    j, e, c = (by[(config, precision, fw)]["tokens_per_s"] for fw in FRAMEWORKS)
    lines.append(f"| {config} | {precision} | {j:,.0f} | {e:,.0f} | {c:,.0f} "
                 f"| **{j / e:.2f}x** | **{j / c:.2f}x** |")
  lines += ["", "## Details", "",
            *_detail_table(result["rows"], peak)]
  if result["ablations"]:
    lines += ["", "## Levers (fp32)", "",
              *_detail_table(result["ablations"], peak)]
  return "\n".join(lines) + "\n"


MEMORY = {"peak_rss_mb": "peak RSS MiB", "peak_device_mb": "peak GPU MiB"}


def _detail_table(rows: list[dict], peak: float) -> list[str]:
  memory = "peak_device_mb" if any(r.get("peak_device_mb") for r in rows) \
      else "peak_rss_mb"
  out = ["| config | precision | variant | steps/call | ms/step (min-max) "
         f"| tok/s | compile s | {MEMORY[memory]} | page faults/step | GFLOP/s "
         "| % of fp32 peak | load avg |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lo, hi = (1e3 * t / r["steps_per_call"] for t in (min(r["times"]),
                                                      max(r["times"])))
    out.append(
        f"| {r['config']} | {r['precision']} | {r['variant']} "
        f"| {r['steps_per_call']} | {r['step_ms']:.1f} ({lo:.1f}-{hi:.1f}) "
        f"| {r['tokens_per_s']:,.0f} | {r['compile_s']:.1f} "
        f"| {r[memory] or float('nan'):,.0f} "
        f"| {r.get('faults_per_step', float('nan')):,.0f} | {r['gflops']:.1f} "
        f"| {100 * r['gflops'] / peak:.0f}% "
        f"| {r['load_avg'][0]:.1f}-{r['load_avg'][1]:.1f} |")
  return out


def bar_chart(result: dict, path: pathlib.Path) -> None:
  """Tokens/s relative to PyTorch eager, per config and precision."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  by = {(r["config"], r["precision"], r["variant"]): r["tokens_per_s"]
        for r in result["rows"]}
  groups = list(dict.fromkeys((r["config"], r["precision"])
                              for r in result["rows"]))
  fig, ax = plt.subplots(figsize=(1.8 * len(groups) + 2, 4))
  width = 0.27
  for i, fw in enumerate(FRAMEWORKS):
    xs = [g + (i - 1) * width for g in range(len(groups))]
    ys = [by[(c, p, fw)] / by[(c, p, "torch_eager")] for c, p in groups]
    bars = ax.bar(xs, ys, width, label=fw.replace("_", " "))
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
  ax.axhline(1.0, color="gray", lw=0.8)
  ax.set_xticks(range(len(groups)), [f"{c}\n{p}" for c, p in groups],
                fontsize=7)
  ax.set_ylabel("training tokens/s relative to PyTorch eager")
  ax.set_title(f"JAX vs PyTorch, {result['machine']}", fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def for_gpu(s: dict) -> dict:
  """A spec with GPU-sized timings: 16 steps per call, 5 timed calls."""
  return dict(s, repeats=5, train=dict(s["train"], steps_per_call=16))


def run(configs: list[str], precisions: list[str], device: str,
        levers, command: str, note: str,
        save=lambda result: None, concurrent: bool = False,
        sequential: bool = False) -> dict:
  """Measures everything; `save(result)` after each step keeps partial results."""
  start = time.perf_counter()
  print("-- fp32 matmul peaks", flush=True)
  if device == "gpu":
    note += ("; fp32 rows use TF32 tensor-core products on both sides"
             + ("; compiles ran concurrently" if concurrent else ""))
  if sequential:
    note += "; each framework's timings ran back to back (--sequential)"
  result = dict(device=device, machine=machine(device), command=command,
                note=note, matmul_gflops=matmul_peaks(device), rows=[],
                ablations=[])
  for name in configs:
    s = for_gpu(CONFIGS[name]) if device == "gpu" else CONFIGS[name]
    for precision in precisions:
      print(f"-- {s['name']} {precision}", flush=True)
      result["rows"] += measure(s, precision,
                                [Variant(fw, fw) for fw in FRAMEWORKS], device,
                                concurrent, sequential)
      save(result)
  if levers:  # ablations or gpt6_levers
    levers(device, result["ablations"], lambda: save(result))
  result["wall_s"] = time.perf_counter() - start
  save(result)
  return result


def write(result: dict, out_dir: pathlib.Path, name: str) -> None:
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
  (out_dir / f"{name}.md").write_text(markdown(result))
  if result["rows"]:
    bar_chart(result, out_dir / f"{name}.png")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
  parser.add_argument("--quick", action="store_true",
                      help="the baby model only, few repeats (< 2 minutes)")
  parser.add_argument("--configs", default="baby,default,gpt6,gpt6_drop",
                      help=f"comma-separated, from {','.join(CONFIGS)}")
  parser.add_argument("--no-ablations", action="store_true")
  parser.add_argument("--concurrent-compile", action="store_true",
                      help="the frameworks compile at the same time (a "
                      "shorter run; compile times become upper bounds)")
  parser.add_argument("--sequential", action="store_true",
                      help="time each framework's calls back to back instead "
                      "of taking turns (writes <device>_sequential.*)")
  parser.add_argument("--ablations-only", action="store_true",
                      help="only the lever measurements (baby model, fp32)")
  parser.add_argument("--gpt6-levers", action="store_true",
                      help="only the 6-layer/384 levers (attention, "
                      "allocator, CPU devices; writes <device>_gpt6_levers.*)")
  parser.add_argument("--out", default=str(REPO / "experiments" / "results"))
  parser.add_argument("--note", default="shared with other users' jobs: "
                      "timings are medians of interleaved runs")
  args = parser.parse_args()
  configs = args.configs.split(",")
  if unknown := set(configs) - set(CONFIGS):
    parser.error(f"unknown configs {sorted(unknown)}; choose from {list(CONFIGS)}")
  command = ("python experiments/bench_throughput.py "
             + shlex.join(sys.argv[1:]))
  if args.quick:
    CONFIGS["baby"]["repeats"] = 3
  name = args.device + ("_quick" if args.quick else "") + (
      "_sequential" if args.sequential else "")
  if args.ablations_only:
    configs, name = [], args.device + "_levers"
  if args.gpt6_levers:
    configs, name = [], args.device + "_gpt6_levers"
  result = run(["baby"] if args.quick else configs, ["fp32", "bf16"],
               args.device, gpt6_levers if args.gpt6_levers else
               None if args.quick or args.no_ablations else ablations,
               command.strip(), args.note,
               save=lambda r: write(r, pathlib.Path(args.out), name),
               concurrent=args.concurrent_compile, sequential=args.sequential)
  print(markdown(result))
  print(f"wrote {args.out}/{name}.json, .md, .png in {result['wall_s']:.0f} s")


if __name__ == "__main__":
  main()
