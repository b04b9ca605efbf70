"""lm_jax/runs/metrics.py: metrics.jsonl and the TensorBoard events of a
run."""

import json
import pathlib
import struct

import pytest

from configs import char_tf
from lm_jax.loop import trainer
from lm_jax.runs.metrics import MetricsLog, tag


def read_events(workdir: pathlib.Path) -> list:
  """Every Event record of the run's event files (TFRecord framing)."""
  from tensorboardX.proto.event_pb2 import Event
  events = []
  for path in sorted(workdir.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    i = 0
    while i < len(data):
      (length,) = struct.unpack("<Q", data[i:i + 8])
      events.append(Event.FromString(data[i + 12:i + 12 + length]))
      i += 12 + length + 4  # length, its crc, payload, payload crc
  return events


def metrics(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text()
          .splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A smoke run (20 steps, evals at 10 and 20, samples) on a small text."""
  tmp = tmp_path_factory.mktemp("viz")
  text = tmp / "corpus.txt"
  text.write_text("".join(f"LINE {i}: the quick brown fox jumps over the lazy "
                          "dog.\n" for i in range(400)))
  config = char_tf.get_config("smoke")
  config.data.path = str(text)
  config.train.sample_prompt = "LINE"
  trainer.train_and_evaluate(config, tmp / "run")
  return tmp / "run"


def test_event_file_holds_the_metrics_and_samples(run):
  scalars, texts = {}, {}
  for event in read_events(run):
    for value in event.summary.value:
      if value.HasField("simple_value"):
        scalars[(value.tag, event.step)] = value.simple_value
      elif value.tag.startswith("sample"):
        texts[event.step] = value.tensor.string_val[0].decode()
  expected = {}
  for record in metrics(run):
    for key, value in record.items():
      if key != "step":
        expected[(tag(key), record["step"])] = value
  assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s",
          "val/loss", "val/bpc"} <= {tag for tag, _ in expected}
  assert scalars.keys() == expected.keys()
  for key, value in expected.items():
    assert scalars[key] == pytest.approx(value, rel=1e-6), key
  assert sorted(texts) == [10, 20]
  # The sample, indented as a Markdown code block: prompt + 32 new tokens.
  lines = texts[20].split("\n")
  assert all(line.startswith("    ") for line in lines)
  assert len("\n".join(l[4:] for l in lines)) == len("LINE") + 32


def test_resumed_run_purges_later_events(tmp_path):
  """A resume from step 10 tells TensorBoard to drop steps > 10 logged before."""
  log = MetricsLog(tmp_path, resume_step=10)
  log.write(step=12, loss=1.0)
  log.close()
  events = read_events(tmp_path)
  assert any(e.session_log.status == e.session_log.START and e.step == 11
             for e in events)
