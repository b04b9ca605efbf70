"""The plan of a sweep (lm_jax/sweep/plan.py): the devices its members
spread over and the memory it needs, checked before anything is written."""

import pytest

from lm_jax.errors import UserError
from lm_jax.sweep import plan

from sweep.conftest import members




def test_memory_over_the_machine_is_refused(tmp_path, monkeypatch):
  monkeypatch.setattr(plan, "machine_bytes", lambda: (2**20, "a tiny RAM"))
  with pytest.raises(UserError, match="more than a tiny RAM"):
    plan.make_plan(members(tmp_path, ["seed=0,1"]))
  assert not any(tmp_path.iterdir())


def test_member_devices_divide_the_members():
  assert plan.member_devices(8, 2) == 2
  assert plan.member_devices(3, 2) == 1
  assert plan.member_devices(6, 4) == 3
