"""What a training run says about itself while it runs and when it ends.

A line before each phase that is silent for seconds (loading the corpus,
compiling, evaluating), the time elapsed on every step line, an ETA only
once a compiled chunk has been timed (the first chunk's time is mostly
compilation: an ETA from it was ten times too long on a GPU), and a
summary at the end, also when a finished run is started again.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import subprocess
import time

from lm_jax.runs.metrics import METRICS_FILE


def duration(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def phase(text: str) -> None:
  """One line before a phase that prints nothing for a while."""
  print(f"{text} ...", flush=True)


LONG_PHASE_S = 2.0  # a phase this long also says how long it took


@contextlib.contextmanager
def timed(text: str):
  """`phase(text)`, and once done, if it took LONG_PHASE_S or more, a
  line saying how long."""
  phase(text)
  began = time.perf_counter()
  yield
  took(text, time.perf_counter() - began)


def took(text: str, seconds: float) -> None:
  """`text: done in 12.3 s`, for a phase of LONG_PHASE_S or more."""
  if seconds >= LONG_PHASE_S:
    print(f"{text}: done in {seconds:.1f} s", flush=True)


# What each start-up phase (lm_jax/loop/clock.py: Clock.mark) covers.
STARTUP_PHASES = {
    "imports": "imports",
    "devices": "devices",
    "data": "data",
    "state": "model and state",
    "checkpoints": "checkpoints and logs",
    "first step": "first step's program",
}


def startup_line(marks: dict[str, float]) -> str:
  """`start-up 2.3 s to the first step: imports 1.1, devices 0.2, ...`:
  each phase's seconds, from the end times `marks` holds in order."""
  parts, before = [], 0.0
  for phase, end in marks.items():
    parts.append(f"{STARTUP_PHASES.get(phase, phase)} {end - before:.2f}")
    before = end
  return (f"start-up {before:.2f} s to the first step: " + ", ".join(parts))


def step_line(step: int, num_steps: int, record: dict, elapsed: float,
              steps_per_s: float | None, budget: float = 0.0) -> str:
  """`step 40/100 | loss ... | elapsed 0m12s | ETA 0m18s`; no rate nor ETA
  before a chunk of steps has been timed without compiling. `budget`:
  config.train.max_seconds (0: none), which ends the run if sooner (the
  ETA then counts training seconds only)."""
  parts = [f"step {step}/{num_steps}", f"loss {record['loss']:.4f}",
           f"lr {record['lr']:.2e}", f"grad norm {record['grad_norm']:.3f}"]
  if steps_per_s:
    parts.append(f"{record['tokens_per_s']:,.0f} tok/s")
  parts.append(f"elapsed {duration(elapsed)}")
  if steps_per_s:
    left = (num_steps - step) / steps_per_s
    if budget:
      left = min(left, max(budget - record.get("train_s", 0.0), 0.0))
    parts.append(f"ETA {duration(left)}")
  if "skipped_steps" in record:
    parts.append(f"{record['skipped_steps']} skipped")
  return " | ".join(parts)


def best_eval(workdir: str | pathlib.Path) -> dict | None:
  """The evaluation record with the lowest val loss in metrics.jsonl."""
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return None
  records = [json.loads(line) for line in path.read_text().splitlines()
             if line.strip()]
  evals = [r for r in records if "val_loss" in r]
  return min(evals, key=lambda r: r["val_loss"]) if evals else None


def run_summary(workdir: str | pathlib.Path, step: int, num_steps: int,
                tokens_per_step: int, seconds: float | None,
                metric: str = "") -> str:
  """Wall time (of this process; None: trained nothing), the best val loss
  and its step, and the tokens seen. `metric`: what the val loss measures,
  where it is not nats per token of the next token (a masked model's)."""
  best = best_eval(workdir)
  unit, bpc = (metric, "bits per hidden character" if "hidden" in metric
               else "bits per character") if metric else ("nats/token", "bpc")
  found = (f"best val loss {best['val_loss']:.4f} {unit} "
           f"({best['val_bpc']:.4f} {bpc}"
           + (f", exact match {best['val_exact_match']:.2%}"
              if "val_exact_match" in best else "")  # pairs (lm_jax.tasks)
           + f") at step {best['step']}" if best else "no evaluation yet")
  took = "" if seconds is None else f" in {duration(seconds)}"
  return (f"done: step {step}/{num_steps}{took} | {found} | "
          f"{step * tokens_per_step:,} tokens seen")


def gpu_warning(backend: str) -> str | None:
  """A line for when `nvidia-smi` sees a GPU but JAX runs on `backend` "cpu"
  (the CPU-only jaxlib, or a driver too old for the CUDA wheels)."""
  if backend != "cpu" or not shutil.which("nvidia-smi"):
    return None
  try:
    found = subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                           timeout=20).returncode == 0
  except (OSError, subprocess.SubprocessError):
    return None
  return ("warning: nvidia-smi sees a GPU but JAX uses only the CPU; install "
          'the CUDA wheels with pip install ".[gpu]" (docs/GPU.md)'
          if found else None)
