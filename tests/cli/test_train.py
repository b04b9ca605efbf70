"""lm-jax-train (lm_jax/cli/train.py): flags into a config, the config
into a run; main(argv) as a test calls it."""

import re

from conftest import run_command
from lm_jax import config as config_lib
from lm_jax.cli import train


def test_show_config_prints_every_key_with_its_comment_and_exits(
    smoke_config):
  done = run_command("lm_jax.train", "--config=char_tf:smoke", "--show_config",
                    "--config.train.num_steps=7", "--workdir=/nonexistent/x")
  assert done.returncode == 0, done.stderr
  lines = done.stdout.splitlines()
  assert lines[0] == f"# --config={config_lib.configs_dir()}/char_tf.py:smoke"
  assert "train.num_steps = 7" in lines
  assert any(re.fullmatch(r"train\.grad_clip = 1\.0 +# global norm", l)
             for l in lines)
  leaves = [k for k, v in smoke_config.model.items()] + [
      k for k, v in smoke_config.data.items()] + [
      k for k, v in smoke_config.train.items()] + [
      k for k, v in smoke_config.items() if not hasattr(v, "items")]
  assert {"seed", "distributed", "init_from"} <= set(leaves)
  assert len([l for l in lines if " = " in l]) == len(leaves)


def test_an_unknown_config_name_is_one_line():
  done = run_command("lm_jax.train", "--config=char_tfx")
  assert done.returncode == 2
  assert done.stderr.strip() == (
      "error: unknown config 'char_tfx': pass a config file or one of "
      "bpe_tf, char_gru, char_lstm, char_mlm, char_tf, echo_lstm, echo_s2s, "
      "word_lstm, word_mlm, word_tf")


def test_a_bad_field_of_the_default_config_is_one_line():
  done = run_command("lm_jax.train", "--config.train.nope=3")
  assert done.returncode == 2
  assert done.stderr.strip() == ("error: unknown config key 'nope' in "
                                 "--config.train.nope; --show_config lists "
                                 "the keys")


def _num_steps(out: str) -> str:
  """train.num_steps's value in --show_config's printout."""
  line = next(l for l in out.splitlines() if l.startswith("train.num_steps"))
  return line.partition("#")[0].partition("=")[2].strip()


def test_main_parses_afresh_on_each_call(capsys):
  """Two calls in one process: nothing of the first remains in the second."""
  smoke = "--config=char_tf:smoke"
  assert train.main([smoke, "--config.train.num_steps=7", "--show_config"]) == 0
  assert _num_steps(capsys.readouterr().out) == "7"
  assert train.main([smoke, "--show_config"]) == 0
  assert _num_steps(capsys.readouterr().out) == "20"
  assert train.default_workdir() == "runs/char_tf_smoke"
  assert train.main(["--config=char_lstm:smoke", "--show_config"]) == 0
  assert train.default_workdir() == "runs/char_lstm_smoke"


def test_a_bare_train_is_a_usage_line_and_exit_2(capsys, tmp_path):
  assert train.main([f"--workdir={tmp_path / 'run'}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: no --config: name what to train, e.g.\n")
  assert not (tmp_path / "run").exists()


def test_help_lists_the_command_s_flags(capsys):
  assert train.main(["--help"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("Train a language model")
  for flag in ("--config:", "--[no]show_config:", "--workdir:"):
    assert flag in out
  assert "An override of" not in out  # of an earlier call's config
