"""Characters, words and byte-level BPE side by side at equal training time.

    python experiments/tokenizers_compare.py --seconds=300   # long

One model (configs/bpe_tf.py: 4 layers, width 128, the recipe options,
batch 32 x 128 tokens) trained on the built-in plays with each tokenizer.
Each variant first times 32 steps (after compiling) to set its
num_steps to what fits `--seconds` of training (the cosine schedule then
spans them), then trains from scratch; compiling, loading and evaluating
are not counted. Every variant is scored on the same first `--eval_chars`
characters of the held-out plays (eval_tokens = those characters' tokens),
in bits per character, and samples about 300 characters at temperature 0.8.
Also times training the BPE on the training plays (the median of 3).
Writes `--out` (.md) and the same figures as .json beside it.

On your own text, use the sweep (docs/EXPERIMENTS.md, "The guide's
experiments on your own text"): `lm-jax-sweep --config=bpe_tf
--config.data.path=my_text.txt --zip --set=data.tokenizer=char,word,bpe
--set=data.vocab_size=256,8192,2048 --equal_time=45`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from configs import bpe_tf  # noqa: E402
from lm_jax.cli import process  # noqa: E402

VARIANTS = {
    "char": {"data.tokenizer": "char"},
    "word (8192)": {"data.tokenizer": "word", "data.vocab_size": 8192},
    "bpe (2048)": {"data.tokenizer": "bpe", "data.vocab_size": 2048},
}
CALIBRATION_STEPS = 32
SAMPLE_CHARS = 300


def config_for(overrides: dict, **train):
  config = bpe_tf.get_config()
  config.update_from_flattened_dict(overrides)
  config.train.update(sample_tokens=0, **train)
  return config


def steps_per_second(config) -> float:
  """Train steps per second after compiling, from a short run."""
  from lm_jax.loop import trainer
  from lm_jax.runs import metrics
  steps = config.train.steps_per_call + CALIBRATION_STEPS
  c = config.copy_and_resolve_references()
  c.train.update(num_steps=steps, log_every=steps, eval_every=steps,
                 eval_tokens=2048)
  with tempfile.TemporaryDirectory() as workdir:
    trainer.train_and_evaluate(c, workdir)
    last = [r for r in metrics.read_records(pathlib.Path(workdir)
                                            / metrics.METRICS_FILE).records
            if "tokens_per_s" in r][-1]
  return last["tokens_per_s"] / (c.train.batch_size * c.train.seq_len)


def run(name: str, overrides: dict, seconds: float, eval_chars: int) -> dict:
  """One variant: calibrate, train for `seconds`, score, sample."""
  import jax
  import numpy as np
  from lm_jax.data import corpus, tokenizers
  from lm_jax.generation import sampling
  from lm_jax.loop import trainer
  from lm_jax.runs import rundir
  config = config_for(overrides)
  text = corpus.load_corpus(config.data.path, config.data.val_fraction,
                            tuple(config.data.val_plays))
  tokenizer = tokenizers.build_tokenizer(config.data.tokenizer, text.train,
                                         **config.data)
  per_char = len(tokenizer.encode(text.train)) / len(text.train)
  eval_tokens = len(tokenizer.encode(text.val[:eval_chars]))
  rate = steps_per_second(config)
  steps = max(config.train.steps_per_call, int(rate * seconds))
  config = config_for(overrides, num_steps=steps, eval_every=steps,
                      log_every=max(1, steps // 10), eval_tokens=eval_tokens,
                      warmup_steps=min(100, steps // 10))
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    result = trainer.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    trained = rundir.load_run(workdir)
    prompt = tokenizer.encode("ROMEO:")
    options = sampling.SamplingOptions(
        max_new_tokens=max(1, round(SAMPLE_CHARS * per_char)),
        temperature=0.8)
    [sample] = sampling.generate_text(trained.params, trained.model,
                                      tokenizer, prompt, jax.random.key(0),
                                      options)
  return dict(variant=name, tokenizer=config.data.tokenizer,
              vocab_size=tokenizer.vocab_size,
              tokens_per_char=round(per_char, 4),
              chars_per_step=round(config.train.batch_size
                                   * config.train.seq_len / per_char),
              steps=steps, steps_per_s=round(rate, 2),
              run_wall_s=round(wall, 1), val_loss=result["val_loss"],
              val_bpc=result["val_bpc"], eval_tokens=eval_tokens,
              unk_rate=result["val_unk_rate"],
              sample="ROMEO:" + sample, params=int(sum(
                  np.size(p) for p in jax.tree.leaves(trained.params))))


def bpe_training_seconds(vocab_size: int, repeats: int = 3) -> float:
  """Median seconds to train the BPE on the built-in training plays."""
  from lm_jax.data import corpus
  from lm_jax.data.bpe import BPETokenizer
  c = config_for({})
  train = corpus.load_corpus("", 0.1, tuple(c.data.val_plays)).train
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    BPETokenizer.build(train, vocab_size)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def machine() -> str:
  import jax
  cpuinfo = pathlib.Path("/proc/cpuinfo")
  names = [line.split(":", 1)[1].strip() for line in
           (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
           if line.startswith("model name")]
  return (f"{os.cpu_count()}-core {names[0] if names else 'CPU'}, "
          f"jax {jax.__version__}")


def report(results: list[dict], info: dict) -> str:
  lines = [f"# Characters, words and BPE at equal training time "
           f"({info['seconds']:.0f} s each)", "",
           f"`{info['command']}`; {info['machine']}, {info['date']}; load "
           f"average {info['load_before']} before, {info['load_after']} "
           "after (the machine is shared: step rates, and so the steps each "
           "variant got, move with the load).", "",
           f"Training the BPE on the training plays ({info['bpe_vocab']} "
           f"ids): {info['bpe_train_s']:.2f} s (median of 3).", "",
           f"Scored on the first {info['eval_chars']:,} characters of the "
           "held-out plays; bits per character = total nats over those "
           f"characters / ln 2. steps/s: measured over {CALIBRATION_STEPS} "
           "steps after compiling, which sets the steps; run s: the whole "
           "training call (loading, tokenising, compiling and evaluating "
           "included).", "",
           "| tokenizer | vocab | tokens/char | params | steps/s | steps | "
           "chars/step | run s | val loss (nats/token) | val bpc |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    lines.append(
        f"| {r['variant']} | {r['vocab_size']:,} | {r['tokens_per_char']:.3f}"
        f" | {r['params']:,} | {r['steps_per_s']:.2f} | {r['steps']:,} | "
        f"{r['chars_per_step']:,} | {r['run_wall_s']:.0f} | "
        f"{r['val_loss']:.4f} | {r['val_bpc']:.4f} |")
  lines += ["", "Samples (prompt `ROMEO:`, temperature 0.8, about "
            f"{SAMPLE_CHARS} characters):", ""]
  for r in results:
    lines += [f"**{r['variant']}**", "", "```", r["sample"], "```", ""]
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=300)
  parser.add_argument("--eval_chars", type=int, default=98304)
  parser.add_argument("--only", default="", help="comma-separated variants")
  parser.add_argument("--out",
                      default="experiments/results/tokenizers_cpu.md")
  args = parser.parse_args()
  process.use_cpu_cores(0, 32)  # one JAX device per core, before JAX starts
  info = dict(seconds=args.seconds, eval_chars=args.eval_chars,
              command="python experiments/tokenizers_compare.py "
              + " ".join(sys.argv[1:]),
              date=time.strftime("%Y-%m-%d"), machine=machine(),
              load_before=" ".join(f"{x:.1f}" for x in os.getloadavg()),
              bpe_vocab=VARIANTS["bpe (2048)"]["data.vocab_size"])
  info["bpe_train_s"] = bpe_training_seconds(info["bpe_vocab"])
  print(f"BPE training: {info['bpe_train_s']:.2f} s", flush=True)
  names = args.only.split(",") if args.only else list(VARIANTS)
  results = []
  out = pathlib.Path(args.out)
  for name in names:
    results.append(run(name, VARIANTS[name], args.seconds, args.eval_chars))
    info["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    # Rewritten after each variant: a stopped session keeps what it measured.
    out.write_text(report(results, info) + "\n")
    out.with_suffix(".json").write_text(
        json.dumps({"info": info, "results": results}, indent=1) + "\n")
    print(json.dumps(results[-1]), flush=True)
  print(report(results, info))


if __name__ == "__main__":
  main()
