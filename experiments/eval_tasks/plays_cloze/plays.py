"""The plays cloze: an lm-eval multiple-choice task made from the built-in
plays' held-out lines (config.VAL_PLAYS), shipped as plays_cloze.jsonl.

Each item is a line of verse cut after its first words, with the line
before it as context; the choices are its true ending and the endings of
three other held-out lines, in a seeded random order. Nothing is
downloaded: `load` reads the JSONL beside this file (lm-eval's
`custom_dataset`), and

    python experiments/eval_tasks/plays_cloze/plays.py

writes it again from the plays (the same file: tests/evaluation/
test_lm_eval_model.py checks it).
"""

import json
import pathlib
import random
import re

ITEMS = pathlib.Path(__file__).with_name("plays_cloze.jsonl")
NUM_ITEMS = 80
SEED = 35


def load(**kwargs):
  """The items as a `datasets.DatasetDict` with a "test" split."""
  import datasets
  rows = [json.loads(line) for line in ITEMS.read_text().splitlines()]
  return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _verse(line: str) -> bool:
  """A line of speech of 6 to 12 words (not a speaker's name or a stage
  direction)."""
  words = line.split()
  return (6 <= len(words) <= 12 and not line.endswith(":")
          and not line.startswith(("[", "_", "(")) and line != line.upper())


def make_items(val_text: str, n: int = NUM_ITEMS, seed: int = SEED
               ) -> list[dict]:
  lines = val_text.splitlines()
  candidates = [(lines[i - 1], lines[i]) for i in range(1, len(lines))
                if _verse(lines[i]) and _verse(lines[i - 1])]
  rng = random.Random(seed)
  chosen = rng.sample(candidates, n + 3 * n)
  items, distractors = chosen[:n], chosen[n:]
  out = []
  for k, (before, line) in enumerate(items):
    words = line.split()
    cut = len(words) // 2
    ending = " ".join(words[cut:])
    others = [" ".join(d.split()[len(d.split()) // 2:])
              for _, d in distractors[3 * k:3 * k + 3]]
    choices = others + [ending]
    rng.shuffle(choices)
    out.append({"context": before + "\n" + " ".join(words[:cut]),
                "choices": choices, "label": choices.index(ending)})
  return out


def main() -> None:
  from lm_jax import config
  from lm_jax.data import corpus
  val = corpus.load_corpus("", 0.1, config.VAL_PLAYS).val
  ITEMS.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n"
                           for item in make_items(val)))
  print(f"wrote {ITEMS} ({NUM_ITEMS} items)")


if __name__ == "__main__":
  main()
