"""Exact match of greedy replies and of beam search, on a trained run.

    python experiments/beam_vs_greedy.py --workdir=runs/echo_lstm \\
        --widths=1,4 --pairs=128   # long: seconds to minutes

Answers `--pairs` held-out pairs of the run's data (evenly spread over
them) greedily (`lm_jax/generation/replies.py: generate`) and with beam search of
each width (`lm_jax/generation/beam.py: beam_search`, no length penalty), and prints
one markdown table row per decoder: exact match, agreement with greedy,
seconds (compilation included). Width 1 must agree with greedy on every
pair.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--widths", default="1,4")
  p.add_argument("--pairs", type=int, default=128)
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  import numpy as np

  from lm_jax.data import pairs
  from lm_jax.generation import beam, replies, sampling
  from lm_jax.runs import rundir

  run = rundir.load_run(args.workdir)
  m = run.model
  val = pairs.load_pairs(run.config.data, run.config.seed).val
  src, tgt = pairs.encode_pairs(val, run.tokenizer, m.max_source_len,
                                m.max_target_len, pairs.Skipped())
  pick = np.linspace(0, len(src) - 1, min(args.pairs, len(src))).astype(int)
  src, want = src[pick], [pairs.reply_ids(row[1:]) for row in tgt[pick]]
  same = lambda a, b: float(np.mean([np.array_equal(pairs.reply_ids(x), y)
                                     for x, y in zip(a, b)]))
  start = time.perf_counter()
  greedy = np.asarray(replies.generate(
      run.params, m, jnp.asarray(src), jax.random.key(0),
      sampling.SamplingOptions(max_new_tokens=m.max_target_len,
                               temperature=0.0)))
  rows = [("greedy", same(greedy, want), 1.0,
           time.perf_counter() - start)]
  greedy = [pairs.reply_ids(row) for row in greedy]
  for width in map(int, args.widths.split(",")):
    start = time.perf_counter()
    tokens, _ = beam.beam_search(run.params, m, jnp.asarray(src), width,
                                 m.max_target_len + 1)
    best = np.asarray(tokens[:, 0])
    rows.append((f"beam {width}", same(best, want), same(best, greedy),
                 time.perf_counter() - start))
  print(f"{args.workdir} (step {run.step}, {run.config.data.pairs}, "
        f"{len(src)} held-out pairs)\n")
  print("| decoder | exact match | same as greedy | seconds |\n|---|---|---|---|")
  for name, exact, agree, seconds in rows:
    print(f"| {name} | {exact:.1%} | {agree:.1%} | {seconds:.1f} |")


if __name__ == "__main__":
  main()
