"""Bad input to lm-jax-train and lm-jax-sample: one line, exit 2, nothing
written."""

import pathlib
import shutil

import pytest

from conftest import corpus_text, run_command
from lm_jax.runs import rundir


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, smoke_run):
  """Good and bad corpus files and a trained 4-step run (conftest's)."""
  d = tmp_path_factory.mktemp("inputs")
  (d / "good.txt").write_text(corpus_text(), encoding="utf-8")
  (d / "empty.txt").write_text("")
  (d / "binary.bin").write_bytes(bytes(range(256)) * 4)
  (d / "latin1.txt").write_bytes("café olé\n".encode("latin-1") * 100)
  (d / "short.txt").write_text("too short\n" * 10)
  (d / "folder").mkdir()
  shutil.copytree(smoke_run, d / "run")
  (d / "untrained").mkdir()
  for name in ("config.json", *rundir.TOKENIZER_FILES):
    shutil.copy(d / "run" / name, d / "untrained" / name)
  return d


TRAIN_CASES = {
    "missing corpus": (["--config.data.path={d}/nope.txt"],
                       "corpus file not found: {d}/nope.txt"),
    "corpus is a folder": (["--config.data.path={d}/folder"],
                           "corpus folder has no text"),
    "empty corpus": (["--config.data.path={d}/empty.txt"],
                     "corpus file is empty"),
    "binary corpus": (["--config.data.path={d}/binary.bin"],
                      "corpus file looks binary"),
    "not utf-8": (["--config.data.path={d}/latin1.txt"],
                  "corpus file is not valid UTF-8 at byte 3 of"),
    "corpus too short": (["--config.data.path={d}/short.txt"],
                         "the training text has 90 tokens, fewer than one "
                         "batch needs (8 x 32 + 1 = 257)"),
    "unknown key": (["--config.train.bach_size=4"],
                    "unknown config key 'bach_size' in "
                    "--config.train.bach_size"),
    "unknown section": (["--config.trian.batch_size=4"],
                        "unknown config key 'trian'"),
    "not a number": (["--config.train.batch_size=abc"],
                     "--config.train.batch_size=abc: expected an integer, "
                     "got 'abc'"),
    "float for int": (["--config.train.num_steps=1e3"],
                      "expected an integer, got '1e3'"),
    "text for float": (["--config.train.learning_rate=fast"],
                       "expected a number, got 'fast'"),
    "zero batch": (["--config.train.batch_size=0"],
                   "config.train.batch_size must be a positive integer, got 0"),
    "negative steps": (["--config.train.num_steps=-5"],
                       "config.train.num_steps must be a positive integer"),
    "zero learning rate": (["--config.train.learning_rate=0"],
                           "config.train.learning_rate must be a positive "
                           "number, got 0.0"),
    "negative learning rate": (["--config.train.learning_rate=-1e-3"],
                               "must be a positive number, got -0.001"),
    "negative cpu devices": (["--config.train.cpu_devices=-1"],
                             "config.train.cpu_devices must be 0 (one per "
                             "core) or a positive integer, got -1"),
    "zero layers": (["--config.model.num_layers=0"],
                    "config.model.num_layers must be a positive integer"),
    "negative heads": (["--config.model.num_heads=-2"],
                       "config.model.num_heads must be a positive integer"),
    "width not divisible": (["--config.model.num_heads=3"],
                            "config.model.d_model (32) must be divisible by "
                            "config.model.num_heads (3)"),
    "seq_len past positions": (["--config.train.seq_len=64"],
                               "config.train.seq_len (64) is longer than the "
                               "model's positions"),
    "unknown model": (["--config.model.kind=rnn"],
                      "unknown model kind 'rnn'"),
    "unknown tokenizer": (["--config.data.tokenizer=sentencepiece"],
                          "unknown tokenizer 'sentencepiece'"),
    "missing config file": (["--config=configs/nope.py"],
                            "cannot load the config file: [Errno 2] No such "
                            "file or directory: 'configs/nope.py'"),
    "unknown config variant": (["--config=configs/char_tf.py:nonsense"],
                               "bad --config: ValueError: unknown variant "
                               "'nonsense'"),
    "config is not python": (["--config={d}/good.txt"],
                             "is not valid Python (line 1"),
    "stray argument": (["extra"], "unexpected arguments ['extra']"),
}


def _snapshot(directory: pathlib.Path) -> dict:
  """Every file under `directory` with its size and modification time."""
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in sorted(directory.rglob("*"))}


SAMPLE_CASES = {
    "not a run": (["--workdir={d}/folder"], "is not a run directory"),
    "no checkpoint": (["--workdir={d}/untrained"],
                      "no checkpoint in {d}/untrained/checkpoints"),
    "missing step": (["--workdir={d}/run", "--step=3"],
                     "no checkpoint at step 3; saved steps: [4]"),
    "zero tokens": (["--workdir={d}/run", "--max_new_tokens=0"],
                    "--max_new_tokens must be positive, got 0"),
    "negative temperature": (["--workdir={d}/run", "--temperature=-0.5"],
                             "--temperature must be >= 0"),
    "top_p zero": (["--workdir={d}/run", "--top_p=0"],
                   "--top_p must be in (0, 1], got 0.0"),
    "top_p above one": (["--workdir={d}/run", "--top_p=1.01"],
                        "--top_p must be in (0, 1], got 1.01"),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_bad_training_input(case, inputs, tmp_path):
  flags, message = TRAIN_CASES[case]
  d = str(inputs)
  workdir = tmp_path / "run"
  flags = [f.format(d=d) for f in flags]
  if not any(f.startswith("--config=") for f in flags):
    flags.insert(0, "--config=configs/char_tf.py:smoke")
  args = [*flags, f"--workdir={workdir}"]
  if "--config.data.path" not in " ".join(flags):
    args.append(f"--config.data.path={d}/good.txt")
  out = run_command("lm_jax.train", *args)
  assert out.returncode == 2, out.stderr
  assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, (
      out.stderr)
  assert message.format(d=d) in out.stderr
  assert "Traceback" not in out.stderr + out.stdout
  assert not workdir.exists()


def test_unwritable_workdir(inputs):
  # Root may write anywhere, so use a path below a file, not chmod.
  workdir = inputs / "good.txt" / "run"
  out = run_command("lm_jax.train", "--config=configs/char_tf.py:smoke",
                    f"--config.data.path={inputs}/good.txt",
                    f"--workdir={workdir}")
  assert out.returncode == 2
  assert out.stderr == (f"error: cannot write to workdir {workdir}: Not a "
                        "directory; pass a writable --workdir\n")


@pytest.mark.parametrize("case", SAMPLE_CASES)
def test_bad_sampling_input(case, inputs):
  flags, message = SAMPLE_CASES[case]
  d = str(inputs)
  before = _snapshot(inputs)
  out = run_command("lm_jax.sample", *(f.format(d=d) for f in flags))
  assert out.returncode == 2, out.stderr
  assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, (
      out.stderr)
  assert message.format(d=d) in out.stderr
  assert "Traceback" not in out.stderr + out.stdout
  assert _snapshot(inputs) == before
