"""The task contract (lm_jax/tasks/base.py): one registration per task,
carrying its objective and declaring what its runs can do."""

import jax
import ml_collections
import numpy as np
import pytest

from lm_jax import tasks
from lm_jax.data import windows
from lm_jax.errors import UserError
from lm_jax.models import make_model
from lm_jax.tasks import base
from lm_jax.tasks.base import Can, Task, bits_per_char
from lm_jax.training import steps

# The methods each capability needs a task to define (CONTINUE and REPLY
# share `sample`: the prompt's continuation, or the reply to it).
METHODS = {Can.INTERACTIVE: ("responder",), Can.SCORE: ("score",),
           Can.FILL: ("with_options", "fill", "blank_distributions",
                      "encode_blanks", "filled", "continuation")}


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_a_task_defines_the_methods_of_what_it_can_do(name):
  task = tasks.TASKS[name]
  defined = lambda method: getattr(type(task), method) is not getattr(
      Task, method)
  assert defined("sample") == bool({Can.CONTINUE, Can.REPLY} & task.can)
  for can, methods in METHODS.items():
    for method in methods:
      assert defined(method) == (can in task.can), (name, method)


def test_what_each_task_can_do():
  assert {name: {c.name for c in task.can}
          for name, task in tasks.TASKS.items()} == {
      "text": {"CONTINUE", "INTERACTIVE", "SCORE"},
      "pairs": {"REPLY", "INTERACTIVE"},
      "masked": {"CONTINUE", "FILL", "INTERACTIVE"}}


def test_a_capability_a_task_lacks_is_one_line_naming_what_it_can():
  text, pairs = tasks.TASKS["text"], tasks.TASKS["pairs"]
  with pytest.raises(UserError) as e:
    text.fill(None, "to be or _", jax.random.key(0))
  assert str(e.value) == (
      "--fill needs a run that can fill blanks (trained with "
      "configs/char_mlm.py, say); this run can continue a prompt, answer in "
      "a prompt loop (--interactive), score a text (each token's "
      "log-probability)")
  with pytest.raises(UserError, match="this run can reply to a prompt, "
                     "answer in a prompt loop"):
    pairs.with_options(tasks.UnmaskOptions())


def test_the_train_state_carries_the_task_objective(smoke_config):
  assert tasks.TASKS["text"].objective is steps.NEXT_TOKEN
  objectives = [task.objective for task in tasks.TASKS.values()]
  assert len(set(objectives)) == len(objectives)  # one each
  model = make_model(smoke_config.model, 10)
  masked = tasks.TASKS["masked"].objective
  state = jax.eval_shape(lambda: steps.create_train_state(
      model, smoke_config.train, jax.random.key(0), objective=masked))
  assert state.objective is masked
  default = jax.eval_shape(lambda: steps.create_train_state(
      model, smoke_config.train, jax.random.key(0)))
  assert default.objective is steps.NEXT_TOKEN


@pytest.mark.parametrize("kind, task", [
    ("transformer", tasks.TextTask), ("lstm", tasks.TextTask),
    ("gru", tasks.TextTask), ("transformer_s2s", tasks.PairsTask),
    ("lstm_s2s", tasks.PairsTask)])
def test_each_model_kind_has_its_task(smoke_config, kind, task):
  smoke_config.model.kind = kind
  assert isinstance(tasks.task_for(smoke_config), task)


def test_bits_per_char_spreads_the_total_over_the_characters():
  assert bits_per_char(np.log(2), 10, 5) == pytest.approx(2.0)


def test_a_split_past_what_a_window_start_indexes_is_one_line():
  """A corpus of more than 2^31 tokens: refused before the first step (its
  window starts would overflow JAX's int32), not a traceback there."""
  train = ml_collections.ConfigDict(dict(batch_size=2, seq_len=4))
  huge = _Sized(windows.MAX_TOKENS + 1)
  with pytest.raises(UserError, match="more than the 2,147,483,647"):
    base.check_splits(huge, _Sized(100), train)
  base.check_splits(_Sized(windows.MAX_TOKENS), _Sized(100), train)


class _Sized:
  """A split of n tokens, without the memory."""

  def __init__(self, n: int):
    self.n = n

  def __len__(self) -> int:
    return self.n
