"""A sweep's table and picture: results.json, results.md and sweep.png,
read back from the members' metrics.jsonl (so they can be redrawn from
the run directories alone)."""

from __future__ import annotations

import json
import math
import pathlib
import textwrap

from lm_jax.loop.setup import diverged_step
from lm_jax.runs.metrics import METRICS_FILE, read_records
from lm_jax import tasks
from lm_jax.sweep import grid, seeds

RESULTS_JSON, RESULTS_MD, PICTURE = "results.json", "results.md", "sweep.png"
DPI = 110


def member_result(member: grid.Member) -> dict:
  """A member's settings, best and final val loss, bits per character,
  wall time, training seconds, tokens seen and training tokens per second,
  from its metrics.jsonl."""
  path = member.workdir / METRICS_FILE
  records = read_records(path).records if path.exists() else []
  evals = [r for r in records if "val_loss" in r]
  best = min(evals, key=lambda r: r["val_loss"]) if evals else {}
  rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
  t = member.config.train
  per_step = t.batch_size * t.seq_len
  final_step = records[-1]["step"] if records else None
  train_s = max((r["train_s"] for r in records if "train_s" in r),
                default=None)
  tokens = None if final_step is None else final_step * per_step
  if train_s and tokens:
    rate = tokens / train_s
  else:  # records from before training seconds were counted
    rate = sum(rates) / len(rates) if rates else None
  return dict(
      name=member.name, settings=member.values,
      best_val_loss=best.get("val_loss"), best_val_bpc=best.get("val_bpc"),
      best_step=best.get("step"),
      final_val_loss=evals[-1]["val_loss"] if evals else None,
      final_step=final_step,
      wall_s=max((r.get("elapsed_s") or 0 for r in records), default=None),
      train_s=train_s, tokens_seen=tokens, tokens_per_s=rate,
      max_seconds=float(t.get("max_seconds", 0.0)), num_steps=t.num_steps,
      diverged_at=diverged_step(member.workdir),
      metric=tasks.task_for(member.config).metric(member.config),
      tokenizer=member.config.data.tokenizer,
      unk_rate=best.get("val_unk_rate"),
      curve=[(r["step"], r["val_loss"]) for r in evals],
      # The curve's x as training seconds and tokens seen (sweep.png --x).
      curve_s=[r.get("train_s") for r in evals],
      tokens_per_step=per_step)


def _number(x, spec: str) -> str:
  return "-" if x is None else format(x, spec)


def mixed_metrics(results: list[dict]) -> bool:
  return len({r.get("metric") for r in results}) > 1


def has_unk(results: list[dict]) -> bool:
  return any(r.get("unk_rate") for r in results)


def table(results: list[dict], keys: list[str]) -> str:
  """The Markdown table of results.md, best val loss first; a metric
  column where members measure different things (causal and masked), an
  `<unk>` column where any member's text has unknown tokens."""
  extra = (["metric"] if mixed_metrics(results) else []) + (
      ["<unk>"] if has_unk(results) else [])
  head = keys + ["best val loss", "bpc", "at step", "final val", "wall",
                 "train s", "tokens seen", "tokens/s"] + extra + ["note"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  order = sorted(results, key=lambda r: (r["best_val_loss"] is None,
                                         r["best_val_loss"] or 0))
  for r in order:
    note = (f"diverged at step {r['diverged_at']}" if r["diverged_at"]
            else budget_note(r))
    cells = [str(r["settings"][k]) for k in keys] + [
        _number(r["best_val_loss"], ".4f"), _number(r["best_val_bpc"], ".4f"),
        _number(r["best_step"], "d"), _number(r["final_val_loss"], ".4f"),
        _number(r["wall_s"], ".0f") + " s",
        _number(r.get("train_s"), ".1f"), _number(r.get("tokens_seen"), ",d"),
        _number(r["tokens_per_s"], ",.0f")]
    if "metric" in extra:
      cells.append(r.get("metric") or "-")
    if "<unk>" in extra:
      cells.append(_number(r.get("unk_rate"), ".2%"))
    cells.append(note)
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def comparability(results: list[dict]) -> str:
  """What of the table compares, where members measure different things
  or hide unknown tokens ('' where all compare)."""
  notes = []
  if mixed_metrics(results):
    kinds = sorted({r["metric"] for r in results})
    notes.append(
        "The val losses measure different things (" + "; ".join(kinds)
        + "): compare a number only with members of the same metric. A "
        "masked model's loss is over the hidden tokens, which see both "
        "sides, at its masking rate; it does not compare with a causal "
        "model's next-token loss, nor does its bpc.")
  unk = [r for r in results if r.get("unk_rate")]
  if unk:
    worst = max(r["unk_rate"] for r in unk)
    notes.append(
        f"Up to {worst:.2%} of val tokens are `<unk>` (column <unk>): "
        "predicting `<unk>` is easier than the word it stands for, so the "
        "loss and bits per character of those members are lower than the "
        "text deserves and do not compare with a member without `<unk>` "
        "(char, BPE).")
  return "\n\n".join(notes)


def budget_note(r: dict) -> str:
  """Where a member with a budget of training seconds stopped, and why."""
  budget = r.get("max_seconds") or 0.0
  if not budget or r["final_step"] is None:
    return ""
  if r["final_step"] < r["num_steps"]:
    return f"stopped by its {budget:g} s budget"
  return (f"reached num_steps={r['num_steps']} before its {budget:g} s "
          "budget")


def _log_scale(key: str, values: list) -> bool:
  """Rates (and anything spanning 10x or more) on a log axis."""
  numbers = [v for v in values if isinstance(v, (int, float))
             and not isinstance(v, bool)]
  if len(numbers) < len(values) or min(numbers) <= 0:
    return False
  return "rate" in key or max(numbers) / min(numbers) >= 10


# sweep.png's x axes for the val curves: label, and x of each eval point.
X_AXES = {
    "steps": ("step", lambda r: [s for s, _ in r["curve"]]),
    "seconds": ("training seconds", lambda r: r.get("curve_s") or []),
    "tokens": ("tokens seen", lambda r: [s * r.get("tokens_per_step", 0)
                                         for s, _ in r["curve"]]),
}


def curve(r: dict, x: str) -> tuple[list, list]:
  """A member's val curve against `x` (X_AXES), points without it left out."""
  xs = X_AXES[x][1](r)
  points = [(a, loss) for a, (_, loss) in zip(xs, r["curve"]) if a is not None]
  return [a for a, _ in points], [loss for _, loss in points]


def picture(results: list[dict], keys: list[str], out: pathlib.Path,
            title: str, x: str = "steps") -> pathlib.Path:
  """Val curves of every member (against steps, training seconds or
  tokens seen: `x`), and the final val loss against each swept value
  (members sharing the other values joined by a line)."""
  from matplotlib.figure import Figure

  all_keys = keys
  keys = [k for k in keys if k != "seed"]  # seeds are repeats, not a setting
  fig = Figure(figsize=(4.5 * (1 + len(keys)), 4.5), dpi=DPI)
  axes = fig.subplots(1, 1 + len(keys), squeeze=False)[0]
  for i, r in enumerate(results):
    at, losses = curve(r, x)
    if at:
      axes[0].plot(at, losses, marker="o", ms=3, lw=1.2,
                   color=f"C{i % 10}", label=r["name"])
  axes[0].set(xlabel=X_AXES[x][0], ylabel="val loss (nats per token)",
              title="validation loss")
  axes[0].grid(alpha=0.3)
  axes[0].legend(fontsize=6)
  for ax, key in zip(axes[1:], keys):
    values = sorted({repr(r["settings"][key]): r["settings"][key]
                     for r in results}.values(), key=_sort_key)
    log = _log_scale(key, values)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v in values)
    where = (lambda v: v) if numeric else values.index
    others = [k for k in all_keys if k != key]
    lines: dict[str, list] = {}
    for r in results:
      if r["final_val_loss"] is None or not math.isfinite(
          r["final_val_loss"]):
        continue
      label = ", ".join(f"{k}={r['settings'][k]}" for k in others)
      lines.setdefault(label, []).append((where(r["settings"][key]),
                                          r["final_val_loss"]))
    for j, (label, points) in enumerate(lines.items()):
      xs, ys = zip(*sorted(points))
      ax.plot(xs, ys, marker="o", color=f"C{j % 10}", label=label or None)
    if log:
      ax.set_xscale("log")
    if not numeric:
      ax.set_xticks(range(len(values)), [str(v) for v in values])
    ax.set(xlabel=key, ylabel="final val loss", title=f"against {key}")
    ax.grid(alpha=0.3)
    if any(lines):
      ax.legend(fontsize=6)
  fig.suptitle(textwrap.fill(title, 30 * (1 + len(keys))), fontsize=7)
  fig.tight_layout()
  fig.savefig(out)
  return out


def _sort_key(v):
  return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def write(members: list[grid.Member], workdir: pathlib.Path,
          command: str, corpus: tuple[str, ...] | list[str] = (),
          x: str = "steps"
          ) -> list[pathlib.Path]:
  """results.json, results.md and sweep.png (val curves against `x`) in
  `workdir`; their paths. `corpus`: what each group trained on, one line
  each."""
  results = [member_result(m) for m in members]
  keys = list(members[0].values)
  settings = seeds.by_settings(results, keys)
  (workdir / RESULTS_JSON).write_text(json.dumps(
      dict(command=command, corpus=list(corpus), members=results,
           settings=settings, verdict=seeds.verdict(settings)),
      indent=1) + "\n")
  trained_on = "".join(f"- {line}\n" for line in corpus)
  md = (f"# Sweep: {workdir.name}\n\n```\n{command}\n```\n\n"
        + (f"Trained on:\n{trained_on}\n" if trained_on else "")
        + table(results, keys) + "\n\nBest and final val loss in nats per "
        "token, bpc bits per character at the best step; wall: seconds "
        "from the start of the member's group (the first group's: of the "
        "command) to its last record, shared by the members of a group; "
        "train s: the member's seconds in train steps (start-up, compiling "
        "and evaluations not counted; members sharing a device split its "
        "time), what --equal_time budgets; tokens/s: tokens seen over train "
        "s.\n\n" + (comparability(results) + "\n\n" if comparability(results)
                    else "")
        + "## Settings over seeds\n\n"
        + seeds.summary(results, keys) + "\n")
  (workdir / RESULTS_MD).write_text(md)
  png = picture(results, keys, workdir / PICTURE, command, x)
  return [workdir / RESULTS_MD, workdir / RESULTS_JSON, png]
