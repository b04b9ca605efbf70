"""Winners against noise: a sweep's members grouped by their settings (all
but the seed), the mean and spread of each group's val loss over its
seeds, and the best setting named only where its margin exceeds the
seed-to-seed spread.

The spread is the sample standard deviation over seeds; the margin
between the best setting and the runner-up (in mean best val loss) names
a winner when it is more than `WINNER_SPREADS` times the larger spread of
the two. With one seed per setting no spread is known, and it says so.
"""

from __future__ import annotations

import math
import statistics

SEED = "seed"
WINNER_SPREADS = 2.0  # a margin above this many seed spreads names a winner


def _finite(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x)


def _mean_spread(values: list[float]) -> tuple[float | None, float | None]:
  """The mean and the sample standard deviation (None under 2 values)."""
  if not values:
    return None, None
  return (statistics.fmean(values),
          statistics.stdev(values) if len(values) > 1 else None)


def label(settings: dict, keys: list[str]) -> str:
  """`config=char_lstm, learning_rate=0.003`: a setting's swept values."""
  return ", ".join(f"{k.rpartition('.')[2]}={settings[k]}" for k in keys
                   ) or "(one setting)"


def per_character(results: list[dict]) -> bool:
  """Whether members of different tokenizers are compared: then on bits
  per character (a token is a character, a word or a subword), not on
  nats per token."""
  return len({r.get("tokenizer") for r in results}) > 1


def by_settings(results: list[dict], keys: list[str]) -> list[dict]:
  """One row per setting (the swept values but the seed): its seeds, and
  the mean and spread of its members' best and final val loss (members
  that diverged or have no evaluation left out); of their best bits per
  character where tokenizers differ (`per_character`)."""
  shown = [k for k in keys if k != SEED]
  best_key, unit = (("best_val_bpc", "bits per character")
                    if per_character(results) else ("best_val_loss", "nats"))
  rows: dict[str, dict] = {}
  for r in results:
    name = label(r["settings"], shown)
    row = rows.setdefault(name, dict(setting=name, seeds=0, best=[],
                                     final=[], metric=r.get("metric"),
                                     unit=unit))
    row["seeds"] += 1
    if _finite(r.get(best_key)) and not r.get("diverged_at"):
      row["best"].append(r[best_key])
    if _finite(r["final_val_loss"]) and not r.get("diverged_at"):
      row["final"].append(r["final_val_loss"])
  out = []
  for row in rows.values():
    best_mean, best_spread = _mean_spread(row.pop("best"))
    final_mean, final_spread = _mean_spread(row.pop("final"))
    out.append(dict(row, best_mean=best_mean, best_spread=best_spread,
                    final_mean=final_mean, final_spread=final_spread))
  return sorted(out, key=lambda r: (r["best_mean"] is None,
                                    r["best_mean"] or 0.0))


def verdict(rows: list[dict]) -> str:
  """The winner and its margin against the seed spread, in words."""
  ranked = [r for r in rows if r["best_mean"] is not None]
  if not ranked:
    return "No member has a finite val loss: no winner."
  if len(ranked) == 1:
    only = ranked[0]
    spread = ("no spread is known (one seed)" if only["best_spread"] is None
              else f"spread {only['best_spread']:.4f} over its seeds")
    return (f"One setting to compare: {only['setting']}, mean best val loss "
            f"{only['best_mean']:.4f}, {spread}.")
  first, second = ranked[0], ranked[1]
  if first.get("metric") != second.get("metric"):
    return (f"{first['setting']} and {second['setting']} measure different "
            f"things ({first['metric']}; {second['metric']}): no winner by "
            "val loss.")
  margin = second["best_mean"] - first["best_mean"]
  unit = first.get("unit", "nats")
  spreads = [s for s in (first["best_spread"], second["best_spread"])
             if s is not None]
  if not spreads:
    return (f"{first['setting']} is ahead of {second['setting']} by "
            f"{margin:.3f} {unit}, but with one seed per setting no spread is "
            "known: a difference this size may be noise (sweep "
            "--set=seed=0,1,2 to know)")
  spread = max(spreads)
  if spread > 0 and margin > WINNER_SPREADS * spread:
    return (f"{first['setting']} beats {second['setting']} by {margin:.3f} "
            f"{unit}, {margin / spread:.1f}x the seed spread ({spread:.3f}).")
  return (f"{first['setting']} and {second['setting']} differ by "
          f"{margin:.3f} {unit}, within the seed spread ({spread:.3f}; a "
          f"winner needs over {WINNER_SPREADS:g}x): no winner.")


def _cell(mean, spread) -> str:
  if mean is None:
    return "-"
  return f"{mean:.4f}" + ("" if spread is None else f" ± {spread:.4f}")


def table(rows: list[dict]) -> str:
  """The Markdown table of the settings over their seeds, best first."""
  best = ("best bits per character" if rows and rows[0]["unit"] != "nats"
          else "best val loss")
  lines = [f"| setting | seeds | {best} (mean ± spread) | final val "
           "loss (mean ± spread) |", "|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['setting']} | {r['seeds']} | "
                 f"{_cell(r['best_mean'], r['best_spread'])} | "
                 f"{_cell(r['final_mean'], r['final_spread'])} |")
  return "\n".join(lines)


def summary(results: list[dict], keys: list[str]) -> str:
  """results.md's section: the table over seeds and the verdict."""
  rows = by_settings(results, keys)
  return (table(rows) + "\n\n" + verdict(rows) + "\n\nSpread: the standard "
          "deviation over a setting's seeds; a winner is named when the "
          "margin of the best mean best val loss (bits per character where "
          "tokenizers differ) over the runner-up exceeds "
          f"{WINNER_SPREADS:g} times the larger spread of the two.")
