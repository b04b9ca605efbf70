"""Training survives faults and bad input: signals, kills, NaNs, full disks,
mismatched checkpoints, and every kind of bad flag or file.

Signals and kills go to a real `python -m lm_jax.train` process.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.errors import UserError
from lm_jax.loop import actions, preemption, trainer
from lm_jax.runs import checkpoints, rundir
from lm_jax.training import steps

from conftest import REPO

TIMEOUT = 300  # seconds; the CI machine is small and shared
TMP_GLOB = "*.orbax-checkpoint-tmp*"


def _config(smoke_config, text_file, **train):
  smoke_config.data.path = str(text_file)
  smoke_config.train.update(dict(sample_tokens=0, **train))
  return smoke_config


def _train_args(text_file, workdir, **train) -> list[str]:
  """A smoke training command line; `train` overrides config.train fields."""
  train = {"num_steps": 100_000, "sample_tokens": 0, **train}
  return [sys.executable, "-m", "lm_jax.train",
          "--config=configs/char_tf.py:smoke",
          f"--config.data.path={text_file}", f"--workdir={workdir}",
          *(f"--config.train.{k}={v}" for k, v in train.items())]


class Run:
  """A training process whose stdout and stderr go to files we can poll."""

  def __init__(self, args: list[str], logs: pathlib.Path, cwd=REPO, **popen):
    logs.mkdir(exist_ok=True)
    self.out, self.err = logs / "stdout", logs / "stderr"
    with self.out.open("w") as out, self.err.open("w") as err:
      self.proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=err,
                                   **popen)

  def wait_for(self, pattern: str, stream: str = "out") -> re.Match:
    """Blocks until `pattern` appears in the process's output."""
    path = self.out if stream == "out" else self.err
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
      match = re.search(pattern, path.read_text(), re.MULTILINE)
      if match:
        return match
      if self.proc.poll() is not None:
        pytest.fail(f"exited {self.proc.returncode} before {pattern!r}:\n"
                    f"{self.err.read_text()}")
      time.sleep(0.01)
    self.proc.kill()
    pytest.fail(f"no {pattern!r} within {TIMEOUT} s")

  def finish(self) -> tuple[int, str]:
    return self.proc.wait(timeout=TIMEOUT), self.err.read_text()


def _params(workdir, step=None):
  return rundir.load_run(workdir, step).params


def _assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


# Exact resume and signals --------------------------------------------------


def test_sigint_saves_and_the_resumed_run_is_bitwise_exact(
    tmp_path, text_file, smoke_config):
  """SIGINT, then the printed command, then SIGTERM: two real restarts that
  end with the same parameters as one uninterrupted run."""
  workdir = tmp_path / "run"
  # One CPU device, as the in-process run below: a device per core gives the
  # same parameters to float rounding, not bit for bit (test_parallel.py).
  first = Run(_train_args(text_file, workdir, eval_every=100_000,
                          cpu_devices=1), tmp_path / "1")
  first.wait_for(r"^step \d+/")
  first.proc.send_signal(signal.SIGINT)
  rc, err = first.finish()
  assert rc == 128 + signal.SIGINT, err
  assert "Traceback" not in err
  stopped = re.search(r"stopped by SIGINT at step (\d+); checkpoint saved in "
                      r"(.+); resume with:\n  (.+)\n", err)
  assert stopped, err
  step1 = int(stopped[1])
  assert checkpoints.manager(workdir, read_only=True).all_steps() == [step1]

  # Pasted in another directory (the shell's `exec` so the signal reaches
  # Python): the command changes to the directory the run started in.
  assert stopped[3].startswith(f"cd {shlex.quote(str(REPO))} && ")
  second = Run(["bash", "-c", stopped[3].replace(" && ", " && exec ", 1)],
               tmp_path / "2", cwd=tmp_path)
  second.wait_for(rf"^resuming from step {step1}$")
  second.wait_for(r"^step \d+/")
  second.proc.send_signal(signal.SIGTERM)
  rc, err = second.finish()
  assert rc == 128 + signal.SIGTERM, err
  step2 = int(re.search(r"stopped by SIGTERM at step (\d+)", err)[1])
  assert step2 > step1

  config = _config(smoke_config, text_file, num_steps=100_000,
                   eval_every=100_000)
  trainer.train_and_evaluate(config, tmp_path / "straight", stop_at=step2)
  _assert_same(_params(workdir, step2), _params(tmp_path / "straight", step2))


def test_first_signal_asks_to_stop_and_the_second_acts_at_once():
  previous = signal.getsignal(signal.SIGINT)
  with preemption.StopOnSignal() as stop:
    assert not stop.requested
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signum == signal.SIGTERM
    # The next Ctrl-C or SIGTERM takes the default action: the process ends
    # at once, wherever it is.
    assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
  assert signal.getsignal(signal.SIGINT) is previous


def test_second_sigint_leaves_the_last_checkpoint_intact(
    tmp_path, text_file, smoke_config):
  workdir = tmp_path / "run"
  run = Run(_train_args(text_file, workdir, eval_every=4), tmp_path / "logs")
  run.wait_for(r"^eval step \d+ ")
  run.proc.send_signal(signal.SIGINT)
  run.wait_for(r"^SIGINT: saving", stream="err")
  run.proc.send_signal(signal.SIGINT)
  rc, err = run.finish()
  # Killed by the second signal, or (if the save was already done) exited.
  assert rc in (-signal.SIGINT, 128 + signal.SIGINT), err
  assert "Traceback" not in err
  committed = checkpoints.manager(workdir, read_only=True).latest_step()
  assert committed is not None and bool(steps.all_finite(_params(workdir)))
  config = _config(smoke_config, text_file, num_steps=100_000, eval_every=4)
  result = trainer.train_and_evaluate(config, workdir, stop_at=committed + 4)
  assert result["step"] == committed + 4
  assert not list((workdir / "checkpoints").glob(TMP_GLOB))


def test_kill_9_in_the_middle_of_a_save(tmp_path, text_file, smoke_config,
                                        capsys):
  workdir = tmp_path / "run"
  run = Run(_train_args(text_file, workdir, eval_every=4), tmp_path / "logs")
  run.wait_for(r"^eval step \d+ ")  # one committed checkpoint
  deadline = time.monotonic() + TIMEOUT
  while not list((workdir / "checkpoints").glob(TMP_GLOB)):
    assert time.monotonic() < deadline and run.proc.poll() is None
    time.sleep(0.002)
  run.proc.kill()
  assert run.finish()[0] == -signal.SIGKILL
  assert list((workdir / "checkpoints").glob(TMP_GLOB))  # a save cut short
  committed = checkpoints.manager(workdir, read_only=True).latest_step()

  config = _config(smoke_config, text_file, num_steps=100_000, eval_every=4)
  capsys.readouterr()
  result = trainer.train_and_evaluate(config, workdir, stop_at=committed + 4)
  assert f"resuming from step {committed}\n" in capsys.readouterr().out
  assert result["step"] == committed + 4
  assert not list((workdir / "checkpoints").glob(TMP_GLOB))


def test_leftover_temporary_checkpoint_is_ignored_and_removed(
    tmp_path, text_file, smoke_config):
  workdir = tmp_path / "run"
  config = _config(smoke_config, text_file, num_steps=12, eval_every=4)
  trainer.train_and_evaluate(config, workdir, stop_at=4)
  leftover = workdir / "checkpoints" / "8.orbax-checkpoint-tmp-1234"
  (leftover / "default").mkdir(parents=True)
  (leftover / "default" / "junk").write_bytes(b"\x00" * 100)
  assert rundir.load_run(workdir).step == 4  # sampling ignores it
  assert trainer.train_and_evaluate(config, workdir, stop_at=8)["step"] == 8
  assert not leftover.exists()


# Non-finite loss -----------------------------------------------------------


@pytest.fixture
def poisoned_loss(monkeypatch):
  """Makes the loss infinite on about 30% of steps, chosen by the dropout
  key, so a function of (seed, step); returns step -> poisoned?"""
  clean = steps.loss_fn

  def loss_fn(params, model, x, y, dropout_key, carry=None, z_loss=0.0):
    poison = jax.random.bernoulli(jax.random.fold_in(dropout_key, 7), 0.3)
    loss, carry = clean(params, model, x, y, dropout_key, carry, z_loss)
    return loss * jnp.where(poison, jnp.inf, 1.0), carry

  def poisoned(seed: int, step: int) -> bool:
    seed_key = jax.random.split(jax.random.key(seed))[1]
    dropout_key = steps.step_keys(seed_key, step)[1]
    return bool(jax.random.bernoulli(jax.random.fold_in(dropout_key, 7), 0.3))

  jax.clear_caches()  # retrace the train steps with the poisoned loss
  monkeypatch.setattr(steps, "loss_fn", loss_fn)
  yield poisoned
  monkeypatch.undo()
  jax.clear_caches()


def test_nonfinite_loss_stops_at_its_step_keeping_the_last_good_checkpoint(
    tmp_path, text_file, smoke_config, poisoned_loss):
  config = _config(smoke_config, text_file, num_steps=40, eval_every=2,
                   log_every=2, steps_per_call=2)
  # A seed whose first poisoned update comes after a checkpoint.
  first_bad = {seed: next(s for s in range(40) if poisoned_loss(seed, s))
               for seed in range(10)}
  config.seed = next(seed for seed, s in first_bad.items() if s >= 2)
  first_bad = first_bad[config.seed]
  with pytest.raises(actions.NonFiniteLoss) as e:
    trainer.train_and_evaluate(config, tmp_path / "run")
  kept = first_bad // 2 * 2  # the last even step before the bad update
  assert str(e.value).startswith(
      f"training diverged at step {first_bad + 1}: the loss is not finite")
  assert f"the last good checkpoint (step {kept}) is kept" in str(e.value)
  mngr = checkpoints.manager(tmp_path / "run", read_only=True)
  assert mngr.latest_step() == kept
  assert bool(steps.all_finite(_params(tmp_path / "run", kept)))


def test_skip_nonfinite_skips_and_counts(tmp_path, text_file, smoke_config,
                                         poisoned_loss):
  config = _config(smoke_config, text_file, num_steps=24, eval_every=24,
                   skip_nonfinite=True)
  expected = sum(poisoned_loss(config.seed, s) for s in range(24))
  assert expected > 0
  result = trainer.train_and_evaluate(config, tmp_path / "run")
  assert result["step"] == 24 and np.isfinite(result["val_loss"])
  records = [json.loads(l) for l in
             (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
  skipped = [r["skipped_steps"] for r in records if "skipped_steps" in r]
  assert skipped[-1] == expected
  assert skipped == [sum(poisoned_loss(config.seed, s) for s in range(r["step"]))
                     for r in records if "skipped_steps" in r]


def test_huge_learning_rate_stops_the_command_cleanly(tmp_path, text_file,
                                                      smoke_config):
  workdir = tmp_path / "run"
  config = _config(smoke_config, text_file, num_steps=20, eval_every=4)
  trainer.train_and_evaluate(config, workdir, stop_at=4)
  out = subprocess.run(
      _train_args(text_file, workdir, num_steps=20, eval_every=4,
                  learning_rate=1e8),
      cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
  assert out.returncode == 2
  assert re.fullmatch(r"error: training diverged at step \d+: .* not finite .*"
                      r"the last good checkpoint \(step 4\) is kept; .*\n",
                      out.stderr), out.stderr
  assert checkpoints.manager(workdir, read_only=True).all_steps() == [4]


# Mismatched checkpoints ----------------------------------------------------


def test_resume_with_other_settings_lists_every_difference(
    tmp_path, text_file, smoke_config):
  workdir = tmp_path / "run"
  config = _config(smoke_config, text_file, num_steps=4, eval_every=4)
  trainer.train_and_evaluate(config, workdir)
  before = _snapshot(workdir)
  other_text = tmp_path / "other.txt"
  # New characters at the start: the vocabulary comes from the training part.
  other_text.write_text("café ü\n" + text_file.read_text(), encoding="utf-8")
  config.data.path = str(other_text)
  config.model.num_layers = 3
  config.train.seq_len = 16
  with pytest.raises(UserError) as e:
    trainer.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert "model.num_layers: stored 2, requested 3" in message
  assert "train.seq_len: stored 32, requested 16" in message
  stored_vocab = len(json.loads((workdir / "tokenizer.json").read_text())[
      "vocab"])
  assert (f"vocabulary: stored {stored_vocab} tokens, requested "
          f"{stored_vocab + 2} (new 'é', 'ü')") in message
  assert _snapshot(workdir) == before
  # Sampling builds the model from the stored settings.
  stored_config = rundir.load_run(workdir).config
  assert stored_config.model.num_layers == 2


# Write failures ------------------------------------------------------------


# Runs the training command with writes past 20 kB failing (EFBIG), as on a
# full disk: a real failed write that works as root, where chmod does not.
LIMITED_WRITES = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write, not the process
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
sys.argv = sys.argv[:1] + sys.argv[2:]
runpy.run_module("lm_jax.train", run_name="__main__", alter_sys=True)
"""


def test_failed_checkpoint_write_is_one_line_and_keeps_earlier_ones(
    tmp_path, text_file, smoke_config):
  workdir = tmp_path / "run"
  config = _config(smoke_config, text_file, num_steps=8, eval_every=4)
  trainer.train_and_evaluate(config, workdir, stop_at=4)
  expected = _params(workdir, 4)
  args = _train_args(text_file, workdir, num_steps=8, eval_every=4)
  args[1:3] = ["-c", LIMITED_WRITES, "lm_jax.train"]  # instead of -m lm_jax.train
  # Without a compilation cache, whose writes would fail too (empty: none).
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR="")
  out = subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                       timeout=TIMEOUT, env=env)
  assert out.returncode == 2
  # One line: no traceback from Orbax's writer threads.
  assert out.stderr == (
      f"error: could not save the checkpoint of step 8 in "
      f"{(workdir / 'checkpoints').absolute()}: File too large; the "
      "checkpoint of step 4 is intact; free space or fix the folder, then "
      "run the same command to resume\n")
  assert checkpoints.manager(workdir, read_only=True).all_steps() == [4]
  # No val record for the checkpoint that was never saved.
  records = [json.loads(l) for l in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if "val_loss" in r] == [4]
  _assert_same(_params(workdir, 4), expected)


def test_write_error_cause():
  import errno
  assert checkpoints.write_error_cause(
      OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == (
          "No space left on device")
  tensorstore = ValueError("OUT_OF_RANGE: Error writing \"x\": Failed to "
                           "write 9 bytes to file 7 [os_error_code='28']")
  assert checkpoints.write_error_cause(tensorstore) == "No space left on device"
  assert checkpoints.write_error_cause(ValueError("a shape mismatch")) is None


# Bad input -----------------------------------------------------------------


def _snapshot(directory: pathlib.Path) -> dict:
  """Every file under `directory` with its size and modification time."""
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in sorted(directory.rglob("*"))}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """Good and bad corpus files and a trained 4-step run."""
  d = tmp_path_factory.mktemp("inputs")
  (d / "good.txt").write_text("".join(
      f"LINE {i}: the quick brown fox jumps over the lazy dog.\n"
      for i in range(400)), encoding="utf-8")
  (d / "empty.txt").write_text("")
  (d / "binary.bin").write_bytes(bytes(range(256)) * 4)
  (d / "latin1.txt").write_bytes("café olé\n".encode("latin-1") * 100)
  (d / "short.txt").write_text("too short\n" * 10)
  (d / "folder").mkdir()
  from configs import char_tf
  config = _config(char_tf.get_config("smoke"), d / "good.txt", num_steps=4,
                   eval_every=4)
  trainer.train_and_evaluate(config, d / "run")
  (d / "untrained").mkdir()
  for name in ("config.json", "tokenizer.json"):
    shutil.copy(d / "run" / name, d / "untrained" / name)
  return d


TRAIN_CASES = {
    "missing corpus": (["--config.data.path={d}/nope.txt"],
                       "corpus file not found: {d}/nope.txt"),
    "corpus is a folder": (["--config.data.path={d}/folder"],
                           "corpus path is a directory"),
    "empty corpus": (["--config.data.path={d}/empty.txt"],
                     "corpus file is empty"),
    "binary corpus": (["--config.data.path={d}/binary.bin"],
                      "corpus file looks binary"),
    "not utf-8": (["--config.data.path={d}/latin1.txt"],
                  "corpus file is not valid UTF-8 (byte 3)"),
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
    "unknown tokenizer": (["--config.data.tokenizer=bpe"],
                          "unknown tokenizer 'bpe'"),
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


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_bad_training_input(case, inputs, tmp_path):
  flags, message = TRAIN_CASES[case]
  d = str(inputs)
  workdir = tmp_path / "run"
  flags = [f.format(d=d) for f in flags]
  if not any(f.startswith("--config=") for f in flags):
    flags.insert(0, "--config=configs/char_tf.py:smoke")
  args = [sys.executable, "-m", "lm_jax.train", *flags, f"--workdir={workdir}"]
  if "--config.data.path" not in " ".join(flags):
    args.append(f"--config.data.path={d}/good.txt")
  out = subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                       timeout=TIMEOUT)
  assert out.returncode == 2, out.stderr
  assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, (
      out.stderr)
  assert message.format(d=d) in out.stderr
  assert "Traceback" not in out.stderr + out.stdout
  assert not workdir.exists()


def test_unwritable_workdir(inputs):
  # Root may write anywhere, so use a path below a file, not chmod.
  workdir = inputs / "good.txt" / "run"
  out = subprocess.run(
      [sys.executable, "-m", "lm_jax.train", "--config=configs/char_tf.py:smoke",
       f"--config.data.path={inputs}/good.txt", f"--workdir={workdir}"],
      cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
  assert out.returncode == 2
  assert out.stderr == (f"error: cannot write to workdir {workdir}: Not a "
                        "directory; pass a writable --workdir\n")


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


@pytest.mark.parametrize("case", SAMPLE_CASES)
def test_bad_sampling_input(case, inputs):
  flags, message = SAMPLE_CASES[case]
  d = str(inputs)
  before = _snapshot(inputs)
  out = subprocess.run(
      [sys.executable, "-m", "lm_jax.sample", *(f.format(d=d) for f in flags)],
      cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
  assert out.returncode == 2, out.stderr
  assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, (
      out.stderr)
  assert message.format(d=d) in out.stderr
  assert "Traceback" not in out.stderr + out.stdout
  assert _snapshot(inputs) == before


def test_entry_points_keep_compiled_programs(monkeypatch, tmp_path):
  """The commands cache XLA's programs under the user's cache folder,
  unless JAX_COMPILATION_CACHE_DIR chooses (empty: no cache)."""
  import jax
  from lm_jax.cli import process
  before = jax.config.jax_compilation_cache_dir
  try:
    assert process.use_compilation_cache() is None  # the tests' own cache
    assert jax.config.jax_compilation_cache_dir == before
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert process.use_compilation_cache() == str(tmp_path / "lm_jax" / "xla")
    assert jax.config.jax_compilation_cache_dir == str(
        tmp_path / "lm_jax" / "xla")
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
