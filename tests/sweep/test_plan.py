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


def test_describe_says_idle_devices_the_corpus_and_what_a_sweep_saves(
    tmp_path, monkeypatch):
  ms = members(tmp_path, ["train.learning_rate=1e-3"])
  loaded = type("Loaded", (), {"lines": ("corpus: own.txt: 10 tokens",)})()
  group = plan.Group(0, ms, None, loaded, None, devices=1, member_bytes=2**20)
  monkeypatch.setattr(plan.jax, "device_count", lambda: 2)
  monkeypatch.setattr(plan.jax, "default_backend", lambda: "cpu")
  text = plan.describe([group])
  assert "  corpus: own.txt: 10 tokens" in text
  assert "1 of 2 device(s) sit idle while this group trains" in text
  assert "saves start-up and compiling" in text and "does not save" in text
