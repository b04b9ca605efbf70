"""The plays cloze (experiments/eval_tasks/plays_cloze) for trained runs:
lm-eval's accuracy through the in-process `lm_jax` model, one table row
per run; a run that cannot score a text (a masked model) gets its refusal.

    python experiments/eval_table.py runs/char_tf runs/word_tf runs/bpe_tf \\
      runs/char_mlm --out=experiments/results/eval_plays_cloze.md

(the runs first trained with `lm-jax-train --config=NAME`; docs/EVALUATION.md).
Chance is 0.25 (4 choices).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments.bench_throughput import machine  # noqa: E402
from lm_jax.errors import UserError  # noqa: E402

TASKS = pathlib.Path(__file__).resolve().parent / "eval_tasks"


def trained(workdir: str) -> str:
  """What the run is: its config and the last evaluation in metrics.jsonl
  ("transformer on chars, step 600, val 1.710")."""
  import json

  from lm_jax.runs import metrics
  path = pathlib.Path(workdir)
  config = json.loads((path / "config.json").read_text())
  name = f"{config['model']['kind']} on {config['data']['tokenizer']}s"
  evals = [r for r in metrics.read_records(path / metrics.METRICS_FILE).records
           if "val_loss" in r]
  if not evals:
    return f"{name}, not evaluated"
  return f"{name}, step {evals[-1]['step']}, val {evals[-1]['val_loss']:.3f}"


def row(workdir: str, limit: int | None = None) -> dict:
  """{"run", "trained", "acc", "items"} of one run; "acc" is the refusal's
  text for a run that cannot score."""
  import lm_eval
  from lm_eval.tasks import TaskManager

  from lm_jax.evaluation import lm_eval_model
  try:
    model = lm_eval_model.LMJaxModel(workdir=workdir)
  except UserError as e:
    return {"run": workdir, "trained": trained(workdir),
            "acc": f"refused: {e}", "items": 0}
  out = lm_eval.simple_evaluate(
      model=model, tasks=["plays_cloze"], limit=limit,
      task_manager=TaskManager(include_path=str(TASKS)))
  result = out["results"]["plays_cloze"]
  return {"run": workdir, "trained": trained(workdir),
          "acc": f"{result['acc,none']:.4f}",
          "items": int(out["n-samples"]["plays_cloze"]["effective"])}


def table(rows: list[dict]) -> str:
  lines = ["| run | trained | plays_cloze acc | items |", "|---|---|---|---|"]
  lines += [f"| {r['run']} | {r['trained']} | {r['acc']} | {r['items']} |"
            for r in rows]
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+")
  parser.add_argument("--limit", type=int, default=None)
  parser.add_argument("--out", default="")
  parser.add_argument("--note", default="", help="how the runs were "
                      "trained, for the results file")
  args = parser.parse_args()
  load = os.getloadavg()[0]
  text = table([row(r, args.limit) for r in args.runs])
  print(text, end="")
  if args.out:
    pathlib.Path(args.out).write_text(
        "Measured by `python experiments/eval_table.py "
        + " ".join(args.runs) + (" --note=NOTE" if args.note else "")
        + "` on " + machine()
        + f" (load average {load:.1f} at the start); chance is 0.25."
        + (f" NOTE: {args.note}" if args.note else "") + "\n\n" + text)


if __name__ == "__main__":
  main()
