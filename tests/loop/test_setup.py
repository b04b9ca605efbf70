"""A run's setup (lm_jax/loop/setup.py): the members of a group start from
one saved step."""

import pytest

from lm_jax.errors import UserError
from lm_jax.loop.setup import common_start


def test_members_saved_at_different_steps_are_refused():
  assert common_start("group 1", ["a", "b"], [8, 8], [None, None]) == 8
  assert common_start("group 1", ["a", "b"], [8, 4], [None, 3]) == 8
  assert common_start("group 1", ["a"], [None], [None]) is None
  with pytest.raises(UserError, match=r"group 1 were saved at different "
                     r"steps \(a: 8, b: 4\)"):
    common_start("group 1", ["a", "b"], [8, 4], [None, None])
