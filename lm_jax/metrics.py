"""Where a run's numbers go: metrics.jsonl and TensorBoard event files.

Every record is one JSON line in `metrics.jsonl` (what `lm_jax.plot` and
the tests read) and the same numbers as TensorBoard scalars in event files
in the run directory, so `tensorboard --logdir runs` compares runs. Keys
starting with `val_` become `val/...` tags, the others `train/...`:
`val_loss` -> `val/loss`, `grad_norm` -> `train/grad_norm`. Event files are
written by tensorboardX, which needs neither TensorFlow nor TensorBoard.
"""

from __future__ import annotations

import json
import numbers
import pathlib
import textwrap
import weakref

METRICS_FILE = "metrics.jsonl"
# Train and val loss on one TensorBoard chart (the "Custom Scalars" tab).
_LAYOUT = {"loss": {"train vs val (nats)": ["Multiline",
                                            ["train/loss", "val/loss"]]}}


def tag(key: str) -> str:
  """The TensorBoard tag of a metrics.jsonl key."""
  if key.startswith("val_"):
    return "val/" + key[len("val_"):]
  return "train/" + key


class MetricsLog:
  """Appends records to `workdir/metrics.jsonl` and to TensorBoard events.

  `resume_step`: the checkpoint step a resumed run restarts from; TensorBoard
  then drops the events an earlier process logged after it, so the curves
  show each step once.
  """

  def __init__(self, workdir: str | pathlib.Path,
               resume_step: int | None = None):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / METRICS_FILE
    self._resume_step = resume_step
    self._writer = None

  def _events(self):
    """The tensorboardX writer, opened on first use.

    Imported here: tensorboardX imports PyTorch when it is installed, which
    costs seconds that a process writing no metrics should not pay.
    """
    if self._writer is None:
      from tensorboardX import SummaryWriter
      purge = None if self._resume_step is None else self._resume_step + 1
      self._writer = SummaryWriter(str(self.workdir), purge_step=purge)
      self._writer.add_custom_scalars(_LAYOUT)
      # Close (join the writer thread, close the file) when this log goes.
      weakref.finalize(self, self._writer.close)
    return self._writer

  def write(self, **record) -> None:
    """One record: `step` and named numbers, e.g. write(step=10, loss=2.1)."""
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    events = self._events()
    for key, value in record.items():
      if key != "step" and isinstance(value, numbers.Real):
        events.add_scalar(tag(key), float(value), record["step"])
    events.flush()

  def text(self, step: int, name: str, text: str) -> None:
    """Text shown verbatim in TensorBoard's Text tab (e.g. a sample)."""
    events = self._events()
    # Indented lines are a Markdown code block: newlines and spaces survive.
    events.add_text(name, textwrap.indent(text, "    ", lambda _: True), step)
    events.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
