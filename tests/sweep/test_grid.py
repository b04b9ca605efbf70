"""The grid of a sweep (lm_jax/sweep/grid.py): its members from --set,
zipped or crossed, the groups that share a program, and bad input refused
before any write."""

import pytest

from lm_jax.errors import UserError
from lm_jax.sweep import grid

from sweep.conftest import members




# The grid and its checks (no training).

def test_grid_and_zip(tmp_path):
  ms = members(tmp_path, ["train.learning_rate=1e-3,3e-3", "seed=0,1,2"])
  assert len(ms) == 6
  assert ms[1].values == {"train.learning_rate": 1e-3, "seed": 1}
  assert ms[1].config.train.learning_rate == 1e-3 and ms[1].config.seed == 1
  assert ms[1].workdir == tmp_path / "learning_rate=1e-3_seed=1"
  zipped = members(tmp_path, ["train.learning_rate=1e-3,3e-3", "seed=0,1"],
                   zipped=True)
  assert [m.values["seed"] for m in zipped] == [0, 1]
  assert len(grid.make_groups(ms)) == 1  # numbers only: one program


def test_shape_changes_make_groups(tmp_path):
  ms = members(tmp_path, ["model.d_model=32,64", "train.learning_rate=1e-3,3e-3"])
  groups = grid.make_groups(ms)
  assert [len(g) for g in groups] == [2, 2]
  assert grid.differing(groups[0]) == ["train.learning_rate"]


def test_config_key_starts_from_other_configs(tmp_path):
  ms = members(tmp_path, ["config=char_lstm:smoke,char_tf:smoke"])
  assert [m.config.model.kind for m in ms] == ["lstm", "transformer"]
  assert len(grid.make_groups(ms)) == 2


@pytest.mark.parametrize("sets, message", [
    (["train.learnig_rate=1e-3"], "unknown config key"),
    (["model.nothing.deeper=1"], "unknown config key"),
    (["train.learning_rate=fast"], "not a number"),
    (["train.num_steps=1.5"], "not an integer"),
    (["train.learning_rate="], "empty value"),
    (["train.learning_rate=1e-3,,3e-3"], "empty value"),
    (["seed=0,0"], "twice"),
    (["seed=0,1", "seed=2"], "given twice"),
    ([], "nothing to sweep"),
    (["train.learning_rate=-1"], "member learning_rate=-1"),
    (["train"], "--set=KEY=V1,V2"),
])
def test_bad_input_is_one_line(tmp_path, sets, message):
  with pytest.raises(UserError, match=message) as e:
    members(tmp_path, sets)
  assert "\n" not in str(e.value)
  assert not any(tmp_path.iterdir())


def test_zip_needs_equal_lengths(tmp_path):
  with pytest.raises(UserError, match="same number of values"):
    members(tmp_path, ["seed=0,1", "train.b1=0.9"], zipped=True)
