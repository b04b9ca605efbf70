"""Data beyond memory: peak memory, tokenizing speed and warm start-up of a
one-step smoke run at several corpus sizes (docs/DATA.md).

    python experiments/data_scale.py --sizes_mb=11,54
    python experiments/data_scale.py --sizes_mb=11,1000,5000   # a quiet run
    python experiments/data_scale.py --sizes_mb=11,54 --tokenizer=bpe

Each size is tinyshakespeare repeated to that many MB in a temporary
folder, trained for one step of `configs/char_tf.py:smoke` twice, each
run a fresh process and run directory (after one run at 1 MB, not
counted, that warms the compilation caches):

  cold   an empty token cache ($LM_JAX_CACHE): the corpus is read, the
         tokenizer built, the ids written (the "token cache: tokenized
         N MB at R MB/s" line gives the rate);
  warm   the same cache: nothing is read but the ids' header.

Peak resident memory is the child's ru_maxrss (os.wait4); start-up is
the trainer's "start-up ... to the first step" line, its data phase beside.
Writes experiments/results/data_scale_cpu.md (--name to change).

Training throughput, streamed windows against the on-device windows of
the commit before them, is not measured here: docs/DATA.md ("Measured")
gives the command to run on each, on the same quiet machine.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.bench_throughput import machine  # noqa: E402

TEXT = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
STARTUP = re.compile(r"^start-up ([\d.]+) s to the first step: .*?data "
                     r"([\d.]+)", re.M)
RATE = re.compile(r"tokenized ([\d,.]+) MB at ([\d,.]+) MB/s")


def parse(stdout: str) -> dict[str, float]:
  """Start-up seconds, its data phase and (a cold run) the tokenizing rate."""
  found: dict[str, float] = {}
  match = STARTUP.search(stdout)
  if match:
    found.update(startup_s=float(match[1]), data_s=float(match[2]))
  match = RATE.search(stdout)
  if match:
    found["tokenize_mb_s"] = float(match[2].replace(",", ""))
  return found


def make_corpus(folder: pathlib.Path, mb: float, source: pathlib.Path
                ) -> pathlib.Path:
  """`source` repeated to `mb` MB (whole copies, then a part)."""
  path = folder / f"corpus_{mb:g}mb.txt"
  data, want = source.read_bytes(), int(mb * 1e6)
  with path.open("wb") as f:
    while want > 0:
      f.write(data[:want])
      want -= len(data)
  return path


def one_step(corpus: pathlib.Path, workdir: pathlib.Path, cache: pathlib.Path,
             tokenizer: str) -> dict[str, float]:
  """A one-step smoke run in a fresh process: what `parse` reads, and the
  peak resident memory in GB."""
  command = [sys.executable, "-m", "lm_jax.train",
             "--config=configs/char_tf.py:smoke", f"--workdir={workdir}",
             f"--config.data.path={corpus}", "--config.train.num_steps=1",
             "--config.train.sample_tokens=0",
             f"--config.data.tokenizer={tokenizer}"]
  if tokenizer != "char":
    command.append("--config.data.vocab_size=2048")
  log = workdir.with_suffix(".log")
  with log.open("w") as out:
    child = subprocess.Popen(command, cwd=REPO, stdout=out,
                             stderr=subprocess.STDOUT,
                             env={**os.environ, "LM_JAX_CACHE": str(cache)})
    _, status, usage = os.wait4(child.pid, 0)
  text = log.read_text()
  if status:
    sys.exit(f"the run failed:\n{text[-2000:]}")
  return {**parse(text), "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9}


def render(rows: list[dict], args) -> str:
  lines = [
      "# Data beyond memory: a one-step smoke run at several corpus sizes", "",
      f"Machine: {machine()}; {args.note}", "",
      "Command: `python experiments/data_scale.py "
      + shlex.join(sys.argv[1:]) + "`", "",
      f"`configs/char_tf.py:smoke`, tokenizer {args.tokenizer}, one step; "
      "cold: empty token cache, warm: the same cache again.", "",
      "| text MB | peak memory cold, GB | peak memory warm, GB | tokenizing "
      "MB/s | start-up cold, s (data) | start-up warm, s (data) |",
      "|---|---|---|---|---|---|"]
  for r in rows:
    cold, warm = r["cold"], r["warm"]
    lines.append(
        f"| {r['mb']:g} | {cold['peak_rss_gb']:.2f} | "
        f"{warm['peak_rss_gb']:.2f} | {cold.get('tokenize_mb_s', 0):.1f} | "
        f"{cold.get('startup_s', 0):.2f} ({cold.get('data_s', 0):.2f}) | "
        f"{warm.get('startup_s', 0):.2f} ({warm.get('data_s', 0):.2f}) |")
  lines += ["", "Peak memory is the whole process's (JAX, the model, the "
            "compiled step); a one-step run before these, not counted, warms "
            "the compilation caches. The goals (issue 40): peak memory at "
            "1 GB and 5 GB within 1.2x of the smallest size's; a warm start "
            "within 0.5 s of the smallest size's, at any size."]
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes_mb", default="11,54",
                      help="corpus sizes in MB, comma-separated")
  parser.add_argument("--tokenizer", default="char", help="char, word, bpe")
  parser.add_argument("--source", default=str(TEXT),
                      help="the text repeated to each size")
  parser.add_argument("--note", default="", help="the load, in the results")
  parser.add_argument("--name", default="data_scale_cpu")
  args = parser.parse_args()
  rows = []
  with tempfile.TemporaryDirectory(prefix="data_scale_") as tmp:
    folder = pathlib.Path(tmp)
    # One run first, not counted: XLA's cache and the program store warm,
    # so every measured run compiles (and holds) as little as the others.
    warm_up = make_corpus(folder, 1, pathlib.Path(args.source))
    one_step(warm_up, folder / "warm_up", folder / "cache_warm_up",
             args.tokenizer)
    for mb in (float(s) for s in args.sizes_mb.split(",")):
      corpus = make_corpus(folder, mb, pathlib.Path(args.source))
      cache = folder / f"cache_{mb:g}"
      row = {"mb": mb}
      for way in ("cold", "warm"):
        row[way] = one_step(corpus, folder / f"run_{mb:g}_{way}", cache,
                            args.tokenizer)
        print(f"{mb:g} MB {way}: {row[way]}", flush=True)
      rows.append(row)
      corpus.unlink()
  out = REPO / "experiments" / "results" / f"{args.name}.md"
  out.write_text(render(rows, args))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
