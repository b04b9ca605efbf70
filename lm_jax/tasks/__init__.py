"""What the trainer does around the train steps, for each kind of data.

A model class names the task it serves (`Model.task`): "text" (the next
token of running text: language models, lm_jax/tasks/text.py) or "pairs"
(a reply to a prompt: encoder-decoders, lm_jax/tasks/pairs.py) or "masked"
(the tokens a text hides: masked LMs, lm_jax/tasks/masked.py). The task
loads the data and the tokenizer, hands the train steps their data
(`steps.OBJECTIVES` draws the batches and scores them), and evaluates: the
trainer holds one code path for both. A new task is one file here and an
entry in `TASKS`.
"""

from __future__ import annotations

from lm_jax.models import model_class
from lm_jax.tasks.base import Loaded, Task  # noqa: F401 (the tasks' API)
from lm_jax.tasks.masked import MaskedTask
from lm_jax.tasks.pairs import PairsTask
from lm_jax.tasks.text import TextTask

TASKS: dict[str, Task] = {"text": TextTask(), "pairs": PairsTask(),
                          "masked": MaskedTask()}


def task_for(config) -> Task:
  """The task of the model config.model.kind names."""
  return TASKS[model_class(config.model.kind).task]


def task_of(model) -> Task:
  """The task `model` serves."""
  return TASKS[model.task]
