"""A 4-choice item scored through lm-jax-serve vs in-process.

    python experiments/bench_score_serve.py [--repeats=20] [--config=char_tf]

lm-eval's `local-completions` scores a multiple-choice item by one request
of its 4 prompts (context + each choice, as token ids) with `echo: true`,
`logprobs: 1` and `max_tokens: 1` (vLLM-style clients send 0). In-process
the same item is one call of `lm_jax/generation/scoring.py: score`. This
times both, warm (compiling excluded), median of `--repeats`, on the
default config's model with random weights (the time does not depend on
the weights): the server runs in this process, on a thread, as the serve
tests run it, and is reached through the official `openai` client over
localhost. Goal (issue 35): the server at most 2x in-process. Writes
experiments/results/score_serve_cpu.md (or --out), naming the machine and
its load.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pathlib
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402 (after the repository is on the path)
import jax.numpy as jnp  # noqa: E402
import openai  # noqa: E402
import uvicorn  # noqa: E402

from experiments.bench_throughput import machine  # noqa: E402
from lm_jax.data import tokenizers  # noqa: E402
from lm_jax.generation import scoring  # noqa: E402
from lm_jax.models import make_model  # noqa: E402
from lm_jax.runs import rundir  # noqa: E402
from lm_jax.serve import app as serve_app  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
CONTEXT = ("JULIET:\nO Romeo, Romeo! wherefore art thou Romeo? Deny thy "
           "father and refuse thy name; or, if thou wilt not, be but sworn "
           "my love, and I'll no")
# The items: a cloze line within the model's context (the usual case), and
# the same item with a longer context, past it (scored in windows).
SHORT = 80  # characters of CONTEXT kept in the first item
CHOICES = (" longer be a Capulet.", " more be a Montague.",
           " sooner wed the County.", " longer love the moon.")


def build_run(config_name: str) -> rundir.Run:
  """The config's model with random weights and a character vocabulary."""
  config = importlib.import_module(f"configs.{config_name}").get_config()
  text = CONTEXT + "".join(CHOICES) + "abcdefghijklmnopqrstuvwxyz"
  tokenizer = tokenizers.build_tokenizer("char", text)
  model = make_model(config.model, tokenizer.vocab_size)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  return rundir.Run(config, tokenizer, model, params["params"], 0)


@contextlib.contextmanager
def serving(run, max_batch: int):
  """The app on a free localhost port, in a thread (as tests/serve do)."""
  sock = socket.socket()
  sock.bind(("127.0.0.1", 0))
  sock.listen()
  app = serve_app.create_app(run, "bench", serve_app.Settings(
      max_batch=max_batch, warm_up=True))
  server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
  thread = threading.Thread(target=server.run, kwargs=dict(sockets=[sock]),
                            daemon=True)
  thread.start()
  while not server.started:
    time.sleep(0.05)
  try:
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
  finally:
    server.should_exit = True
    thread.join(timeout=30)


def median_s(fn, repeats: int) -> float:
  fn()  # compiles
  fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--config", default="char_tf")
  parser.add_argument("--out", default=str(
      REPO / "experiments/results/score_serve_cpu.md"))
  args = parser.parse_args()
  run = build_run(args.config)
  encode = lambda s: [int(i) for i in run.tokenizer.encode(s)]
  items = {name: [encode(context + c) for c in CHOICES] for name, context in
           (("within the context", CONTEXT[-SHORT:]),
            ("past the context", CONTEXT))}
  rows = []
  with serving(run, max_batch=4) as url:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused",
                           max_retries=0, timeout=600)
    for name, prompts in items.items():
      inside = median_s(lambda: scoring.score(run.params, run.model, prompts,
                                              top=1), args.repeats)
      lengths = f"{min(map(len, prompts))}-{max(map(len, prompts))}"
      rows.append((f"{name} ({lengths} tokens): in-process "
                   "`scoring.score`", inside, inside))
      for max_tokens in (0, 1):
        ask = lambda: client.completions.create(
            model="bench", prompt=prompts, echo=True, logprobs=1,
            max_tokens=max_tokens, temperature=0)
        rows.append((f"{name}: server, echo, logprobs 1, max_tokens "
                     f"{max_tokens}", median_s(ask, args.repeats), inside))
  load = os.getloadavg()
  lines = [
      "# A 4-choice item scored through lm-jax-serve vs in-process",
      "",
      f"`python experiments/bench_score_serve.py --config={args.config} "
      f"--repeats={args.repeats}`: the default `{args.config}` model "
      f"(context {run.model.context_length}, random weights), one item of 4 "
      f"prompts, median of {args.repeats} warm calls; the server in the "
      "same process, on a thread, through the `openai` client.",
      "",
      f"Machine: {machine(jax.default_backend())}; load average "
      f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) at "
      "the end, other sessions sharing the cores.",
      "",
      "| item, how | median | vs in-process |",
      "|---|---|---|"]
  for how, t, inside in rows:
    lines.append(f"| {how} | {t * 1e3:.1f} ms | {t / inside:.2f}x |")
  text = "\n".join(lines) + "\n"
  pathlib.Path(args.out).write_text(text)
  print(text)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
