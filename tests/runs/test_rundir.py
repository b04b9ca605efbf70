"""lm_jax/runs/rundir.py: the run directory's files, what a resume may
change, the lock."""

import json

import jax

import pytest

from lm_jax import config as config_lib
from lm_jax.data import tokenizers
from lm_jax.errors import UserError
from lm_jax.runs import rundir


def _config():
  return config_lib.base_config()


def test_write_run_writes_config_and_tokenizer_once(tmp_path):
  config, tok = _config(), tokenizers.CharTokenizer.build("abc")
  rundir.write_run(tmp_path, config, tok)
  assert rundir.read_config(tmp_path) == rundir.config_to_dict(config)
  assert rundir.read_tokenizer(tmp_path).to_json() == tok.to_json()
  config.train.num_steps = 7  # an existing run's files stay as they were
  rundir.write_run(tmp_path, config, tokenizers.CharTokenizer.build("xyz"))
  assert rundir.read_config(tmp_path)["train"]["num_steps"] == 1500
  assert not list(tmp_path.glob("*.tmp"))


def test_fixed_settings_are_differences_and_others_are_not():
  stored = rundir.config_to_dict(_config())
  requested = _config()
  requested.train.num_steps = 10  # may change on resume
  requested.model.attention = "dense"  # how, not what, the model computes
  assert rundir.config_differences(stored, rundir.config_to_dict(
      requested)) == []
  requested.model.d_model = 64
  requested.train.seq_len = 64
  assert rundir.config_differences(stored, rundir.config_to_dict(
      requested)) == ["model.d_model: stored 128, requested 64",
                      "train.seq_len: stored 128, requested 64"]


def test_a_config_written_before_a_setting_is_read_with_its_old_value(
    tmp_path):
  stored = rundir.config_to_dict(_config())
  stored["model"]["position"] = "rope"
  del stored["model"]["position"], stored["train"]["carry_state"]
  del stored["train"]["z_loss"]
  (tmp_path / rundir.CONFIG_FILE).write_text(json.dumps(stored))
  read = rundir.read_config(tmp_path)
  assert read["model"]["position"] == "learned"
  assert read["train"]["carry_state"] is False
  assert read["train"]["z_loss"] == 0.0
  assert read == rundir.upgrade(read)  # a new config is left as it is
  assert rundir.upgrade(rundir.config_to_dict(_config())) == \
      rundir.config_to_dict(_config())


@pytest.mark.parametrize("name", ["char_tf", "char_lstm", "char_gru",
                                  "echo_lstm", "echo_s2s", "char_mlm"])
def test_the_upgrade_table_names_only_settings_the_models_take(name):
  """An entry for a setting a model dropped would make every old run of
  that kind unloadable: each kind's added settings are its settings."""
  import importlib
  from lm_jax.models import MODELS
  config = importlib.import_module(f"configs.{name}").get_config("smoke")
  kind = config.model.kind
  added = rundir.ADDED_MODEL_SETTINGS.get(kind, {})
  assert set(added) <= set(MODELS[kind].setting_names())
  assert all(key.partition(".")[2] in config[key.partition(".")[0]]
             for key in rundir.ADDED_SETTINGS)


def test_check_resumable_refuses_other_settings_before_writing(tmp_path):
  config, tok = _config(), tokenizers.CharTokenizer.build("abc")
  rundir.write_run(tmp_path, config, tok)
  rundir.check_resumable(tmp_path, config, tok)  # the same: fine
  config.model.num_layers = 9
  with pytest.raises(UserError, match="model.num_layers: stored 4, "
                     "requested 9"):
    rundir.check_resumable(tmp_path, config, tok)
  with pytest.raises(UserError, match="vocabulary: stored 4 tokens"):
    rundir.check_resumable(tmp_path, _config(),
                           tokenizers.CharTokenizer.build("abcd"))


def test_damaged_config_is_one_error_naming_the_file(tmp_path):
  (tmp_path / rundir.CONFIG_FILE).write_text("{not json")
  with pytest.raises(UserError, match="config.json is damaged"):
    rundir.read_config(tmp_path)
  (tmp_path / rundir.CONFIG_FILE).write_text(json.dumps([1, 2]))
  with pytest.raises(UserError, match="is damaged"):
    rundir.read_config(tmp_path)


def test_lock_refuses_a_second_holder_naming_the_first(tmp_path):
  with rundir.lock(tmp_path):
    with pytest.raises(UserError, match="in use by another training"):
      with rundir.lock(tmp_path):
        pass
  with rundir.lock(tmp_path):  # released
    pass


def test_a_checkpoint_deleted_while_listed_is_read_again(smoke_run, tmp_path,
                                                         monkeypatch, capsys):
  """A run still training deletes old checkpoints while lm-jax-serve lists
  and reads them: the listing is taken again, silently."""
  import shutil

  from lm_jax.runs import checkpoints
  workdir = tmp_path / "run"
  shutil.copytree(smoke_run, workdir)
  folder = workdir / rundir.CHECKPOINTS
  (step,) = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
  want = rundir.load_run(workdir).params
  pick = checkpoints.pick_step
  races = []

  def deleted_after_listing(mngr, asked=None):
    picked = pick(mngr, asked)
    if len(races) < 2:  # the trainer saves a newer one, deletes this one
      races.append(picked)
      (folder / str(picked)).rename(folder / str(picked + 10))
    return picked

  monkeypatch.setattr(checkpoints, "pick_step", deleted_after_listing)
  run = rundir.load_run(workdir)
  assert races == [step, step + 10] and run.step == step + 20
  assert all((a == b).all() for a, b in zip(
      jax.tree.leaves(run.params), jax.tree.leaves(want)))
  assert capsys.readouterr().err == ""
  races.clear()
  monkeypatch.setattr(rundir, "LOAD_TRIES", 2)
  with pytest.raises(UserError, match="changed while they were read, 2 "
                     "times"):
    rundir.load_run(workdir)
