"""Soak lm-jax-serve: one client, then many streaming clients at once.

    python experiments/soak_serve.py --workdir=runs/char_tf

Starts `lm-jax-serve` on a free port (a process of its own, so its memory
is its own), then
  1. one client: time to first token (TTFT) of a 100-character prompt, and
     the tokens per second of one stream (200 tokens a request);
  2. `--clients` clients streaming for `--seconds`: random prompts (10 to
     100 characters of the text below), random lengths (20 to 300 tokens)
     and temperatures, one request in `--leave_every` closed after a few
     tokens. One request in 8 is a greedy one whose text was recorded
     alone in step 1: a different text means text mixed between requests.
Reports TTFT p50/p95, total tokens/s, requests completed, left, refused
(429/503) and failed, mixed texts, and the server's memory (RSS) over time.
The clients share the machine's cores with the server: on a small CPU they
take some of its time (their own CPU seconds are reported).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import random
import socket
import statistics
import subprocess
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
TEXT = (
    "ROMEO:\nBut, soft! what light through yonder window breaks? It is the "
    "east, and Juliet is the sun. Arise, fair sun, and kill the envious "
    "moon, who is already sick and pale with grief, that thou her maid art "
    "far more fair than she.\n\nJULIET:\nO Romeo, Romeo! wherefore art thou "
    "Romeo? Deny thy father and refuse thy name; or, if thou wilt not, be "
    "but sworn my love, and I'll no longer be a Capulet.\n")
GREEDY_PROMPTS = [TEXT[i:i + 60] for i in (0, 90, 200, 300)]


class Stream:
  """One streamed completion over a raw HTTP connection."""

  def __init__(self, port: int, body: dict):
    self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    self.sent = time.perf_counter()
    self.conn.request("POST", "/v1/completions",
                      json.dumps({**body, "stream": True}),
                      {"Content-Type": "application/json"})
    self.response = self.conn.getresponse()
    self.status = self.response.status

  def pieces(self):
    """(seconds since sent, text) of each chunk."""
    while True:
      line = self.response.readline()
      if not line:
        return
      line = line.decode().strip()
      if not line.startswith("data: "):
        continue
      if line == "data: [DONE]":
        return
      text = json.loads(line[6:])["choices"][0]["text"]
      if text:
        yield time.perf_counter() - self.sent, text

  def close(self):
    self.conn.close()


def completion(port: int, body: dict) -> tuple[float, str, int]:
  """(TTFT, text, tokens) of one streamed request, alone."""
  s = Stream(port, body)
  if s.status != 200:
    raise SystemExit(f"status {s.status}: {s.response.read()[:300]}")
  ttft, parts = None, []
  for t, text in s.pieces():
    ttft = t if ttft is None else ttft
    parts.append(text)
  s.close()
  return ttft, "".join(parts), len(parts)


def rss_mib(pid: int) -> float:
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def start_server(workdir: str, port: int,
                 flags: list[str]) -> subprocess.Popen:
  server = subprocess.Popen(
      [sys.executable, "-m", "lm_jax.cli.serve", f"--workdir={workdir}",
       f"--port={port}", "--max_tokens=400", *flags], cwd=REPO,
      stdout=subprocess.PIPE, text=True)
  for line in server.stdout:
    print(line, end="", flush=True)
    if line.startswith("serving"):
      return server
  raise SystemExit(f"the server did not start (exit {server.wait()})")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def one_client(port: int, seconds: float) -> dict:
  """TTFT of 100-character prompts and the tokens/s of one stream."""
  rng = random.Random(0)
  ttfts = []
  for _ in range(20):
    at = rng.randrange(len(TEXT) - 100)
    ttft, _, _ = completion(port, dict(prompt=TEXT[at:at + 100],
                                       max_tokens=1, temperature=0.8))
    ttfts.append(ttft)
  tokens, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    at = rng.randrange(len(TEXT) - 100)
    tokens += completion(port, dict(prompt=TEXT[at:at + 100],
                                    max_tokens=200, temperature=0.8))[2]
  return dict(ttfts=ttfts, tokens_per_s=tokens / (time.perf_counter() - start))


class Load:
  """Counts over all clients of step 2."""

  def __init__(self):
    self.lock = threading.Lock()
    self.ttfts, self.tokens = [], 0
    self.done = self.left = self.refused = self.failed = self.mixed = 0
    self.greedy = 0
    self.errors: list[str] = []


def client(port: int, seed: int, until: float, leave_every: int,
           expected: dict[str, str], load: Load) -> None:
  rng = random.Random(seed)
  while time.perf_counter() < until:
    greedy = rng.random() < 1 / 8
    if greedy:
      prompt = rng.choice(GREEDY_PROMPTS)
      body = dict(prompt=prompt, max_tokens=60, temperature=0)
    else:
      n = rng.randint(10, 100)
      at = rng.randrange(len(TEXT) - n)
      body = dict(prompt=TEXT[at:at + n], max_tokens=rng.randint(20, 300),
                  temperature=rng.uniform(0.5, 1.2), seed=rng.randrange(1000))
    leave = not greedy and rng.randrange(leave_every) == 0
    try:
      s = Stream(port, body)
      if s.status in (429, 503):
        s.response.read()
        s.close()
        with load.lock:
          load.refused += 1
        time.sleep(0.05)
        continue
      if s.status != 200:
        raise RuntimeError(f"status {s.status}: {s.response.read()[:200]}")
      parts, ttft = [], None
      stop_after = rng.randint(1, 10) if leave else None
      for t, text in s.pieces():
        ttft = t if ttft is None else ttft
        parts.append(text)
        if stop_after is not None and len(parts) >= stop_after:
          break
      s.close()
      with load.lock:
        load.tokens += len(parts)
        if ttft is not None:
          load.ttfts.append(ttft)
        if leave:
          load.left += 1
        else:
          load.done += 1
        if greedy:
          load.greedy += 1
          load.mixed += "".join(parts) != expected[body["prompt"]]
    except Exception as e:  # noqa: BLE001 (counted and reported)
      with load.lock:
        load.failed += 1
        load.errors.append(repr(e)[:200])


def percentile(xs: list[float], q: float) -> float:
  return statistics.quantiles(xs, n=100)[q - 1] if len(xs) > 1 else xs[0]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/char_tf")
  parser.add_argument("--clients", type=int, default=32)
  parser.add_argument("--seconds", type=float, default=60)
  parser.add_argument("--one_client_seconds", type=float, default=20)
  parser.add_argument("--leave_every", type=int, default=8)
  parser.add_argument("--cpu_devices", type=int, default=None,
                      help="the server's --cpu_devices (default: its own, "
                      "1, one device; 0: one per core, the batch split)")
  parser.add_argument("--out", default="",
                      help="also write the report to this Markdown file "
                      "(e.g. experiments/results/serve_soak_cpu.md)")
  parser.add_argument("--note", default="",
                      help="the load, e.g. 'quiet machine'")
  args = parser.parse_args()
  load_before = os.getloadavg()
  port = free_port()
  server = start_server(args.workdir, port, [] if args.cpu_devices is None
                        else [f"--cpu_devices={args.cpu_devices}"])
  try:
    expected = {p: completion(port, dict(prompt=p, max_tokens=60,
                                         temperature=0))[1]
                for p in GREEDY_PROMPTS}
    alone = one_client(port, args.one_client_seconds)
    load = Load()
    memory = [rss_mib(server.pid)]
    cpu0 = os.times()
    start = time.perf_counter()
    until = start + args.seconds
    threads = [threading.Thread(target=client, args=(
        port, i, until, args.leave_every, expected, load))
        for i in range(args.clients)]
    for t in threads:
      t.start()
    while any(t.is_alive() for t in threads):
      time.sleep(1)
      memory.append(rss_mib(server.pid))
    elapsed = time.perf_counter() - start
    cpu = os.times()
    client_cpu = (cpu.user - cpu0.user) + (cpu.system - cpu0.system)
  finally:
    server.terminate()
    server.wait(timeout=30)
  ttft = alone["ttfts"]
  many = load.tokens / elapsed
  quarter = max(1, len(memory) // 4)
  report = [
      f"one client: TTFT p50 {percentile(ttft, 50) * 1e3:.1f} ms, p95 "
      f"{percentile(ttft, 95) * 1e3:.1f} ms (100-character prompts, "
      f"{len(ttft)} requests); {alone['tokens_per_s']:.1f} tokens/s",
      f"{args.clients} clients, {elapsed:.1f} s: {many:.1f} tokens/s "
        f"({many / alone['tokens_per_s']:.1f}x one client); TTFT p50 "
        f"{percentile(load.ttfts, 50) * 1e3:.1f} ms, p95 "
        f"{percentile(load.ttfts, 95) * 1e3:.1f} ms",
      f"requests: {load.done} completed, {load.left} left early, "
      f"{load.refused} refused (429/503), {load.failed} failed; greedy "
      f"checks {load.greedy}, mixed {load.mixed}",
      f"server RSS: {memory[0]:.0f} MiB at the start of the load, "
      f"{statistics.mean(memory[:quarter]):.0f} MiB mean of the first "
      f"quarter, {statistics.mean(memory[-quarter:]):.0f} MiB of the last, "
      f"max {max(memory):.0f} MiB; the clients used {client_cpu:.1f} CPU s"]
  report += [f"error: {e}" for e in sorted(set(load.errors))[:5]]
  print("\n" + "\n".join(report))
  if args.out:
    write_report(pathlib.Path(args.out), args, report, load_before)


def write_report(out: pathlib.Path, args, report: list[str],
                 load_before: tuple[float, ...]) -> None:
  """The report as a Markdown section: the command, the machine and its
  load (1-minute load average before and after), the figures."""
  sys.path.insert(0, str(REPO))
  from experiments.bench_throughput import machine
  command = "python experiments/soak_serve.py " + " ".join(sys.argv[1:])
  after = os.getloadavg()
  lines = [
      "# lm-jax-serve under load (CPU)", "",
      f"`{command.strip()}`, "
      f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
      "",
      f"Machine: {machine()}; load average (1 min) {load_before[0]:.2f} "
      f"before, {after[0]:.2f} after{'; ' + args.note if args.note else ''}."
      " The clients are threads of this script on the same cores.", "",
      "```", *report, "```", ""]
  out.write_text("\n".join(lines))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
