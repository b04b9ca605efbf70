"""Where a run's numbers go: metrics.jsonl and TensorBoard event files.

Every record is one JSON line in `metrics.jsonl` (what `lm-jax-plot` and
the tests read) and the same numbers as TensorBoard scalars in event files
in the run directory, so `tensorboard --logdir runs` compares runs. Keys
starting with `val_` become `val/...` tags, the others `train/...`:
`val_loss` -> `val/loss`, `grad_norm` -> `train/grad_norm`. Event files are
written by tensorboardX, which needs neither TensorFlow nor TensorBoard.

A process killed mid-write can leave a torn last line. Each record is one
`write` of a whole line, so only the last line can be torn: `read_records`
skips and reports it, and the next `MetricsLog` cuts it off before
appending (otherwise the next record would be glued onto it and lost).
"""

from __future__ import annotations

import json
import numbers
import os
import pathlib
import sys
import textwrap
import weakref
from typing import NamedTuple

import jax

METRICS_FILE = "metrics.jsonl"
# Train and val loss on one TensorBoard chart (the "Custom Scalars" tab).
_LAYOUT = {"loss": {"train vs val (nats)": ["Multiline",
                                            ["train/loss", "val/loss"]]}}


def tag(key: str) -> str:
  """The TensorBoard tag of a metrics.jsonl key."""
  if key.startswith("val_"):
    return "val/" + key[len("val_"):]
  return "train/" + key


class Records(NamedTuple):
  """The records of a metrics.jsonl, and a note on what could not be read."""
  records: list[dict]
  note: str | None  # e.g. an incomplete last line; None: all read


def read_records(path: str | pathlib.Path) -> Records:
  """Every whole record of `path`; an unreadable line is skipped and named.

  A run that is training may be writing the last line as it is read: that
  line is left for the next read.
  """
  path = pathlib.Path(path)
  lines = path.read_bytes().split(b"\n")
  records, bad = [], []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
      record = None
    if isinstance(record, dict) and "step" in record:
      records.append(record)
    else:
      bad.append(number)
  note = None
  if bad == [len(lines)]:  # no newline after it: written in part
    note = (f"{path}: skipped an incomplete last line (line {bad[0]}, a run "
            "stopped or still writing there)")
  elif bad:
    note = (f"{path}: skipped {len(bad)} unreadable line(s) (line "
            f"{', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''})")
  return Records(records, note)


def cut_torn_line(path: pathlib.Path) -> int:
  """Removes a last line without its newline; returns the bytes removed."""
  if not path.exists():
    return 0
  data = path.read_bytes()
  if not data or data.endswith(b"\n"):
    return 0
  keep = data.rfind(b"\n") + 1
  with path.open("r+b") as f:
    f.truncate(keep)
  return len(data) - keep


class MetricsLog:
  """Appends records to `workdir/metrics.jsonl` and to TensorBoard events.

  `resume_step`: the checkpoint step a resumed run restarts from; TensorBoard
  then drops the events an earlier process logged after it, so the curves
  show each step once. In a job of several processes only process 0 writes
  (the others hold the same numbers).
  """

  def __init__(self, workdir: str | pathlib.Path,
               resume_step: int | None = None):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / METRICS_FILE
    self._resume_step = resume_step
    self._writer = None
    self.enabled = jax.process_index() == 0
    torn = cut_torn_line(self.path) if self.enabled else 0
    if torn:
      print(f"note: {self.path} ended in an incomplete line ({torn} bytes, "
            "from a run stopped mid-write); removed it", file=sys.stderr)

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
    if not self.enabled:
      return
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, line)  # the whole line at once: never interleaved
    finally:
      os.close(fd)
    events = self._events()
    for key, value in record.items():
      if key != "step" and isinstance(value, numbers.Real):
        events.add_scalar(tag(key), float(value), record["step"])
    events.flush()

  def text(self, step: int, name: str, text: str) -> None:
    """Text shown verbatim in TensorBoard's Text tab (e.g. a sample)."""
    if not self.enabled:
      return
    events = self._events()
    # Indented lines are a Markdown code block: newlines and spaces survive.
    events.add_text(name, textwrap.indent(text, "    ", lambda _: True), step)
    events.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
