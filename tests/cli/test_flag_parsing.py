"""lm_jax/cli/flag_parsing.py: each command's flags parsed afresh, shipped
configs by name, and a bad flag as one plain line."""

import pytest
from absl import flags

from lm_jax import config as config_lib
from lm_jax.cli import export, flag_parsing, inspect_run, plot, sample, serve
from lm_jax.cli import sweep, train
from lm_jax.errors import UserError


def test_commands_with_flags_of_the_same_name_share_a_process(capsys):
  """--workdir, --step and --out mean something else to each command."""
  for command in (export, inspect_run, plot, sample, serve, sweep, train):
    assert "workdir" in command.FLAGS
  assert export.main(["--workdir=/nope", "--out=/tmp/x", "--step=3"]) == 2
  assert sample.main(["--workdir=/nope2"]) == 2
  assert inspect_run.main(["--workdir=/nope3", "--out=x.png"]) == 2
  err = capsys.readouterr().err.splitlines()
  assert [l.partition(" is ")[0] for l in err] == [
      "error: /nope", "error: /nope2", "error: /nope3"]


def _parsed(argv):
  fv = flags.FlagValues()
  flags.DEFINE_string("out", "a.png", "File.", flag_values=fv)
  flags.DEFINE_multi_string("workdir", [], "Runs.", flag_values=fv)
  return fv


def test_a_second_parse_starts_from_the_defaults():
  fv = _parsed([])
  assert flag_parsing.parse(fv, ["--out=b.png", "--workdir=r1", "x"]) == ["x"]
  assert (fv.out, fv.workdir) == ("b.png", ["r1"])
  assert flag_parsing.parse(fv, ["--workdir=r2"]) == []
  assert (fv.out, fv.workdir) == ("a.png", ["r2"])


def test_the_config_flag_is_defined_anew_with_its_overrides():
  fv = flags.FlagValues()
  define = flag_parsing.config_flag("The config.")
  flag_parsing.parse(fv, ["--config=char_tf:smoke",
                          "--config.train.num_steps=3"], define)
  assert fv["config"].value.train.num_steps == 3
  assert "config.train.num_steps" in fv
  flag_parsing.parse(fv, ["--config=char_tf:smoke"], define)
  assert fv["config"].value.train.num_steps == 20
  assert "config.train.num_steps" not in fv


@pytest.mark.parametrize("argv, message", [
    (["--nope=1"], "Unknown command line flag 'nope'; see --helpfull for the "
     "flags"),
    (["--config=char_tf:smoke", "--config.train.batch_size=abc"],
     "--config.train.batch_size=abc: expected an integer, got 'abc'"),
    (["--config=char_tf:smoke", "--config.model.tie_embeddings=maybe"],
     "expected True or False, got 'maybe'"),
    (["--config=char_tf:smoke", "--config.trian.x=1"],
     "unknown config key 'trian'"),
    (["--config=char_tfx"], "unknown config 'char_tfx'"),
])
def test_a_bad_flag_is_one_plain_line(argv, message):
  fv = flags.FlagValues()
  with pytest.raises(UserError) as caught:
    flag_parsing.parse(fv, argv, flag_parsing.config_flag("The config."))
  assert message in str(caught.value)
  assert "\n" not in str(caught.value)


def test_a_missing_config_file_is_one_line_at_first_use():
  fv = flags.FlagValues()
  flag_parsing.parse(fv, ["--config=/nope/c.py"],
                     flag_parsing.config_flag("The config."))
  with pytest.raises(UserError, match=r"^cannot load the config file: "
                     r"\[Errno 2\] No such file or directory: '/nope/c.py'; "
                     "pass an existing file or a shipped name"):
    flag_parsing.config_value(fv["config"])


def test_shipped_configs_resolve_by_name():
  path = str(config_lib.configs_dir() / "char_tf.py")
  assert flag_parsing.resolve_config_args(
      ["--config=char_tf:smoke", "--config", "char_tf", "--x=1"]) == [
          f"--config={path}:smoke", "--config", path, "--x=1"]


def test_run_turns_help_and_stray_arguments_into_statuses(capsys):
  fv = _parsed([])
  assert flag_parsing.run(fv, ["--help"], lambda: None) == 0
  assert "--out: File." in capsys.readouterr().out
  assert flag_parsing.run(fv, ["--out=c.png", "extra"], lambda: None) == 2
  assert capsys.readouterr().err == ("error: unexpected arguments ['extra']: "
                                     "flags are written --name=value\n")
  seen = []
  assert flag_parsing.run(fv, ["x", "--workdir=r"], seen.append,
                          positional=True) == 0
  assert seen == [["x"]] and fv.workdir == ["r"]
