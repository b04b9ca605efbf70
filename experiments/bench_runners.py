"""The worker side of the throughput benchmark: one framework per process.

`python -m experiments.bench_runners --framework=jax --malloc=none`
reads JSON commands on stdin and answers one JSON line per command on
stdout. Each framework runs in its own process so that its peak memory is
its own and the allocator environment is chosen per process; the driver
(`bench_throughput.py`) interleaves the timings of several workers.

Both sides train the same model on the same kind of batches: random windows
drawn on the device from a token array held on the device, an AdamW update
after global-norm clipping, and one host sync (the loss) per call of
`steps_per_call` steps.

On a GPU both sides let float32 matrix products use TF32 tensor cores
(`set_tf32`: JAX's `jax_default_matmul_precision="tensorfloat32"`, PyTorch's
`set_float32_matmul_precision("high")`), so "fp32" is the same math on both.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import math
import os
import resource
import sys
import time

VOCAB = 65  # tinyshakespeare's characters
MATMUL_N = {"cpu": 2048, "gpu": 8192}  # the matmul-peak size per device
NUM_TOKENS = 1 << 20
# Allocator settings a worker can start with (`--malloc`): glibc's
# environment variables, or transparent huge pages for malloc's memory
# (glibc >= 2.35; the kernel's THP mode "madvise" or "always").
MALLOC_ENVS = {
    "env": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736",
            "MALLOC_ARENA_MAX": "1"},
    "thp": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
}


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def tune_malloc() -> bool:
  """Keeps freed memory in the process instead of returning it to the OS.

  The same effect as setting MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=<huge>
  and MALLOC_ARENA_MAX=1, done in-process. An earlier jax release lost
  about 30% of a small model's step to page faults from fresh buffers and
  this setting won it back; with jax 0.10.2 it slows the small models (the
  Levers table of experiments/results/cpu.md), and on the 6-layer/384
  model it cuts the page faults fourfold and runs about 7% faster, but
  nearly doubles the peak memory (experiments/results/cpu_gpt6_levers.md),
  so no command calls it: it stays here, one of the throughput benchmark's
  measured levers. Returns False where there is no glibc.
  """
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  # mallopt takes a C int; glibc stores the trim threshold as size_t, so -1
  # becomes SIZE_MAX: never give the top of the heap back.
  return bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, -1)
              and mallopt(_M_ARENA_MAX, 1))


def peak_rss_mb() -> float:
  """This process's peak resident memory (VmHWM), in MiB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def library(framework: str) -> str:
  """"jax" or "torch": the library a worker's framework runs on."""
  return "jax" if framework == "jax" else "torch"


def peak_device_mb(framework: str) -> float | None:
  """Peak GPU memory this process allocated, in MiB (None off the GPU)."""
  if framework == "jax":
    import jax
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20
  import torch
  if not torch.cuda.is_initialized():
    return None
  return torch.cuda.max_memory_allocated() / 2**20


def set_tf32(framework: str) -> None:
  """Float32 matrix products on TF32 tensor cores, in both frameworks."""
  if framework == "jax":
    import jax
    jax.config.update("jax_default_matmul_precision", "tensorfloat32")
  else:
    import torch
    torch.set_float32_matmul_precision("high")


def token_array():
  import numpy as np
  return np.random.default_rng(0).integers(0, VOCAB, NUM_TOKENS, np.int32)


def lm_config(spec: dict, precision: str):
  """An lm_jax config for a benchmark spec: the train defaults, the spec's sizes."""
  from lm_jax.config import base_config
  c = base_config()
  c.model.update(spec["model"])
  c.model.dtype = "bfloat16" if precision == "bf16" else "float32"
  c.train.update(spec["train"])
  return c


def jax_runner(spec: dict, precision: str, device: str):
  """A function running n calls of `lm_jax.training.steps.train_steps`."""
  from lm_jax.cli import process
  c = lm_config(spec, precision)
  t = c.train
  if device == "cpu":  # as `python -m lm_jax.train`: one device per core
    process.use_cpu_cores(t.cpu_devices, t.batch_size)
  import jax
  from lm_jax.models import make_model
  from lm_jax.training import parallel, steps
  model = make_model(c.model, VOCAB)
  mesh = parallel.make_mesh(t.batch_size)
  box = [parallel.place_state(
      steps.create_train_state(model, t, jax.random.key(0)), mesh, False)]
  tokens = jax.device_put(token_array(), parallel.replicated(mesh))
  seed_key = jax.random.key(1)

  def run(calls: int) -> None:
    for _ in range(calls):
      box[0], metrics = steps.train_steps(
          box[0], tokens, seed_key, batch_size=t.batch_size,
          seq_len=t.seq_len, num_steps=t.steps_per_call,
          batch_sharding=parallel.batch_sharding(mesh))
      jax.device_get(metrics["loss"])  # the trainer's one sync per call
  return run


def lr_at(train, step: int) -> float:
  """Warmup + cosine, as `lm_jax.training.optimizers.lr_schedule` (a Python float per step)."""
  if step < train.warmup_steps:
    return train.learning_rate * step / train.warmup_steps
  frac = min(1.0, (step - train.warmup_steps) /
             max(1, train.num_steps - train.warmup_steps))
  low = train.learning_rate * train.min_lr_ratio
  return low + (train.learning_rate - low) * 0.5 * (1 + math.cos(math.pi * frac))


def torch_runner(spec: dict, precision: str, device: str, compiled: bool):
  """The same training loop in PyTorch, eager or with `torch.compile`."""
  import torch
  import torch.nn.functional as F
  from experiments.torch_models import TorchTransformerLM, decay_param_groups
  c = lm_config(spec, precision)
  t = c.train
  dev = "cuda" if device == "gpu" else "cpu"
  torch.manual_seed(0)
  fields = {k: v for k, v in c.model.items() if k != "kind"}
  model = TorchTransformerLM(VOCAB, **fields).to(dev).train()
  opt = torch.optim.AdamW(decay_param_groups(model, t.weight_decay),
                          lr=t.learning_rate, betas=(t.b1, t.b2), eps=1e-8,
                          fused=True)
  forward = torch.compile(model) if compiled else model
  tokens = torch.from_numpy(token_array()).long().to(dev)
  window = torch.arange(t.seq_len + 1, device=dev)
  B, T = t.batch_size, t.seq_len
  step = [0]

  def one_step() -> torch.Tensor:
    starts = torch.randint(0, len(tokens) - T, (B,), device=dev)
    w = tokens[starts[:, None] + window]  # (B, T + 1)
    with torch.autocast(dev, dtype=torch.bfloat16,
                        enabled=precision == "bf16"):
      logits = forward(w[:, :-1])  # (B, T, V)
    loss = F.cross_entropy(logits.float().reshape(-1, VOCAB),
                           w[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    for group in opt.param_groups:
      group["lr"] = lr_at(t, step[0])
    opt.step()
    step[0] += 1
    return loss

  def run(calls: int) -> None:
    for _ in range(calls):
      for _ in range(t.steps_per_call):
        loss = one_step()
      loss.item()  # one sync per call, as the JAX side
  return run


def matmul_gflops(framework: str, n: int = 2048, repeats: int = 7) -> float:
  """Median fp32 GFLOP/s of an n x n matmul in this framework (on the GPU
  for a `*_gpu` framework name)."""
  if framework == "jax":
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    run = lambda: f(a).block_until_ready()
  else:
    import torch
    dev = "cuda" if framework.endswith("gpu") else "cpu"
    a = torch.randn(n, n, device=dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    run = lambda: (a @ a, sync())
    run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return 2 * n**3 / sorted(times)[repeats // 2] / 1e9


def build(framework: str, spec: dict, precision: str, device: str):
  if framework == "jax":
    return jax_runner(spec, precision, device)
  return torch_runner(spec, precision, device,
                      compiled=framework == "torch_compile")


def serve(framework: str, device: str, inp, out) -> None:
  """Answers commands from `inp` on `out`, one JSON object per line."""
  run = None
  for line in inp:
    cmd = json.loads(line)
    if cmd["cmd"] == "build":
      run = build(framework, cmd["spec"], cmd["precision"], device)
      reply = {}
    elif cmd["cmd"] == "time":
      faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      start = time.perf_counter()
      run(cmd["calls"])
      reply = {"seconds": time.perf_counter() - start,
               "minor_faults": resource.getrusage(
                   resource.RUSAGE_SELF).ru_minflt - faults}
    elif cmd["cmd"] == "matmul":
      name = framework if device == "cpu" else f"{framework}_gpu"
      reply = {"gflops": matmul_gflops("jax" if framework == "jax" else name,
                                       n=MATMUL_N[device])}
    else:
      reply = {"peak_rss_mb": peak_rss_mb()}
      if device == "gpu":
        reply["peak_device_mb"] = peak_device_mb(library(framework))
    out.write(json.dumps(reply) + "\n")
    out.flush()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--framework", required=True,
                      choices=["jax", "torch_eager", "torch_compile"])
  parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
  parser.add_argument("--malloc", default="none",
                      choices=["mallopt", "none", *MALLOC_ENVS])
  args = parser.parse_args()
  if args.device == "gpu":
    set_tf32(library(args.framework))
  if args.malloc == "mallopt":
    tune_malloc()
  # Replies go to the real stdout; anything the frameworks print, to stderr.
  out = os.fdopen(os.dup(1), "w")
  os.dup2(2, 1)
  serve(args.framework, args.device, sys.stdin, out)


if __name__ == "__main__":
  main()
