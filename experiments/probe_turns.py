"""Why a JAX call runs slower when it takes turns with PyTorch (issue 16).

    python experiments/probe_turns.py               # 6L/384, T 256, B 16
    python experiments/probe_turns.py --rounds=3 --batch=8

The interleaved benchmark (`bench_throughput.py`) times each framework in
its own worker process, the workers taking turns. On this VM a JAX call of
the 6-layer/384 model that follows a PyTorch call ran slower than one that
follows a JAX call. This probe times the same JAX worker's calls after each
of these, in rounds that visit them in turn:

  jax       nothing: JAX calls back to back;
  torch     a PyTorch eager worker's call of the same model;
  memory    a process that allocates and writes as many bytes as the
            PyTorch worker's peak, then frees them (memory, no arithmetic);
  compute   a process that multiplies small matrices on every core for as
            long as the PyTorch call took (arithmetic, no memory).

If `torch` slows JAX and `memory` does too while `compute` does not, the
cause is what the other process does to memory (the kernel's page and huge
page state), not the CPU time it takes. It also reports how much CPU each
worker keeps burning in the second after it replies (spinning threads).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.bench_throughput import Worker  # noqa: E402

MEMORY = """
import sys, numpy as np
a = np.ones(int(sys.argv[1]) // 8)  # allocated and written
a += 1.0
"""
COMPUTE = """
import sys, time, threading, numpy as np
end = time.time() + float(sys.argv[1])
def burn():
  m = np.ones((64, 64))
  while time.time() < end:
    m @ m
threads = [threading.Thread(target=burn) for _ in range(int(sys.argv[2]))]
[t.start() for t in threads]; [t.join() for t in threads]
"""


def cpu_seconds(pid: int) -> float:
  """User + system CPU time of every thread of process `pid`."""
  ticks = 0
  for tid in os.listdir(f"/proc/{pid}/task"):
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    ticks += int(fields[11]) + int(fields[12])
  return ticks / os.sysconf("SC_CLK_TCK")


def after_reply(worker: Worker, seconds: float = 1.0) -> float:
  """CPU seconds `worker` burns in the `seconds` after it replied."""
  start = cpu_seconds(worker.proc.pid)
  time.sleep(seconds)
  return cpu_seconds(worker.proc.pid) - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq-len", type=int, default=256)
  args = parser.parse_args()
  spec = {"model": dict(num_layers=6, num_heads=6, d_model=384,
                        max_len=args.seq_len, dropout=0.0),
          "train": dict(batch_size=args.batch, seq_len=args.seq_len,
                        steps_per_call=1)}
  jax_w, torch_w = Worker("jax", "cpu", "none"), Worker("torch_eager", "cpu",
                                                         "none")
  for w in (jax_w, torch_w):
    w.call("build", spec=spec, precision="fp32")
    w.call("time", calls=1)  # compile / warm up
  torch_peak = torch_w.call("memory")["peak_rss_mb"] * 2**20
  torch_sec = torch_w.call("time", calls=1)["seconds"]
  spins = {"torch": after_reply(torch_w)}
  jax_w.call("time", calls=1)
  spins["jax"] = after_reply(jax_w)

  def run(code: str, *argv) -> None:
    subprocess.run([sys.executable, "-c", code, *map(str, argv)], check=True)

  before = {
      "jax": lambda: None,
      "torch": lambda: torch_w.call("time", calls=1),
      "memory": lambda: run(MEMORY, int(torch_peak)),
      "compute": lambda: run(COMPUTE, torch_sec, os.cpu_count()),
  }
  times = {name: [] for name in before}
  for _ in range(args.rounds):
    for name, interlude in before.items():
      interlude()
      times[name].append(jax_w.call("time", calls=1)["seconds"])
  for w in (jax_w, torch_w):
    w.close()
  base = statistics.median(times["jax"])
  print(f"6L/384 T{args.seq_len} B{args.batch} fp32, one step per call, "
        f"{args.rounds} rounds; PyTorch step {torch_sec:.2f} s, peak "
        f"{torch_peak / 2**30:.2f} GiB")
  for name, t in times.items():
    print(f"JAX after {name:8s} {statistics.median(t):7.2f} s "
          f"({statistics.median(t) / base:.2f}x)  all: "
          + " ".join(f"{x:.2f}" for x in t))
  print("CPU seconds burnt in the second after a reply: " +
        ", ".join(f"{k} {v:.2f}" for k, v in spins.items()))


if __name__ == "__main__":
  main()
