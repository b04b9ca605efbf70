"""Loss curves of one or more runs, read from their metrics.jsonl.

`plot_runs([DIR, ...], out)` draws train and val loss against the step
(left; with x="elapsed_s", against the wall seconds since the command
started, which metrics.jsonl records carry) and against the tokens seen
(right; tokens per step = batch_size * seq_len from each run's
config.json). Each run has one colour: train is the
solid line, val the dashed line with dots, so the train/val gap is the space
between two lines of the same colour; the legend gives the final gap.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

from lm_jax import outputs
from lm_jax.errors import UserError
from lm_jax.runs.metrics import METRICS_FILE, read_records
from lm_jax.views.labels import tick_labels

LOSS_PLOT = "loss.png"
FIGSIZE, DPI = (12, 4.5), 100  # a 1200 x 450 pixel PNG


@dataclasses.dataclass
class Curves:
  """The loss curves of one run."""
  name: str
  tokens_per_step: int
  train: list[tuple[int, float]]  # (step, loss)
  val: list[tuple[int, float]]  # (step, val loss)
  note: str | None = None  # lines of metrics.jsonl that were skipped
  seconds: dict[int, float] = dataclasses.field(default_factory=dict)
  # ^ step -> elapsed_s, wall seconds when it was logged

  @property
  def gap(self) -> float | None:
    """Last val loss minus the train loss logged last at or before it."""
    if not self.val:
      return None
    step, val = self.val[-1]
    before = [loss for s, loss in self.train if s <= step]
    return val - before[-1] if before else None


def read_curves(workdir: str | pathlib.Path) -> Curves:
  """A run's curves; a resumed run's repeated steps keep their last value."""
  workdir = pathlib.Path(workdir)
  metrics, config = workdir / METRICS_FILE, workdir / "config.json"
  if not metrics.is_file() or not config.is_file():
    raise UserError(f"{workdir} has no {METRICS_FILE} and config.json; pass "
                    "the --workdir of a training run")
  try:
    t = json.loads(config.read_text())["train"]
    tokens_per_step = t["batch_size"] * t["seq_len"]
  except (ValueError, KeyError, TypeError):
    raise UserError(f"{config} is not a valid run config (JSON with "
                    "train.batch_size and train.seq_len); restore it from a "
                    "copy or plot another run") from None
  records, note = read_records(metrics)
  train, val, seconds = {}, {}, {}
  for record in records:
    if "elapsed_s" in record:
      seconds[record["step"]] = record["elapsed_s"]
    if "loss" in record:
      train[record["step"]] = record["loss"]
    if "val_loss" in record:
      val[record["step"]] = record["val_loss"]
  if not train and not val:
    raise UserError(f"{workdir / METRICS_FILE} holds no losses yet; train "
                    "for at least config.train.log_every steps")
  return Curves(name=workdir.name, tokens_per_step=tokens_per_step,
                train=sorted(train.items()), val=sorted(val.items()),
                note=note, seconds=seconds)


X_AXES = {"step": "step", "elapsed_s": "wall seconds since the start"}


def x_values(run: Curves, x: str, steps: tuple[int, ...]) -> list[float]:
  """The left panel's x of each step: the step, or its elapsed_s."""
  if x == "step":
    return list(steps)
  missing = [s for s in steps if s not in run.seconds]
  if missing:
    raise UserError(f"{run.name}: metrics.jsonl has no elapsed_s at step "
                    f"{missing[0]} (written by older code); plot it with "
                    "--x=step")
  return [run.seconds[s] for s in steps]


def figure_path(out: str | pathlib.Path, flag: str = "--out") -> pathlib.Path:
  """`out` if a figure can be written there (`lm_jax.outputs.check_target`,
  a file type matplotlib writes: .png, .pdf, .svg, ...), else UserError."""
  from matplotlib.figure import Figure
  kinds = Figure().canvas.get_supported_filetypes()
  first = (".png", ".pdf", ".svg")
  suffixes = first + tuple(sorted(f".{k}" for k in kinds
                                  if f".{k}" not in first))
  return outputs.check_target(out, flag, suffixes=suffixes, make_folder=True)


def save_figure(fig, out: pathlib.Path, flag: str = "--out") -> pathlib.Path:
  """fig written to `out` whole (a temporary file renamed over it); a
  failed write is a UserError."""
  kind = out.suffix.lower().lstrip(".")
  return outputs.write_replacing(
      out, lambda tmp: fig.savefig(tmp, format=kind), flag)


def plot_runs(workdirs: list, out: str | pathlib.Path, x: str = "step"
              ) -> pathlib.Path:
  """Writes the loss plot of `workdirs` (one legend entry each) to `out`;
  `x` ("step" or "elapsed_s") is the left panel's axis."""
  if x not in X_AXES:
    raise UserError(f"unknown --x={x}; use one of {', '.join(X_AXES)}")
  out = figure_path(out)
  # A bare Figure draws to files without pyplot's global state or a display.
  from matplotlib.figure import Figure

  runs = [read_curves(w) for w in workdirs]
  # A name no installed font draws (an emoji) shows its code points, not
  # a box and a "Glyph missing" warning.
  names, families = tick_labels([run.name for run in runs],
                                symbols=False)
  for run, name in zip(runs, names):
    run.name = name
  for run in runs:
    if run.note:
      print(f"note: {run.note}", file=sys.stderr)
  fig = Figure(figsize=FIGSIZE, dpi=DPI)
  axes = fig.subplots(1, 2)
  for i, run in enumerate(runs):
    color = f"C{i % 10}"
    gap = "" if run.gap is None else f" (val - train {run.gap:+.3f})"
    to_x = (lambda steps: x_values(run, x, steps),
            lambda steps: [s * run.tokens_per_step for s in steps])
    for ax, xs in zip(axes, to_x):
      if run.train:
        steps, losses = zip(*run.train)
        ax.plot(xs(steps), losses, color=color, lw=1.2,
                label=f"{run.name} train")
      if run.val:
        steps, losses = zip(*run.val)
        ax.plot(xs(steps), losses, color=color, ls="--", marker="o", ms=3,
                label=f"{run.name} val{gap}")
  for ax, xlabel in zip(axes, (X_AXES[x], "tokens seen")):
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
  axes[0].set_title(f"loss against {X_AXES[x]}")
  axes[1].set_title("loss against tokens seen")
  axes[1].legend(prop=dict(size=8, family=families))
  fig.tight_layout()
  return save_figure(fig, out)
