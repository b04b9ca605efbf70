"""What the trainer and the commands do around a model, for each kind of
data: one registration per task, in `TASKS`.

A model class names the task it serves (`Model.task`): "text" (the next
token of running text: language models, lm_jax/tasks/text.py) or "pairs"
(a reply to a prompt: encoder-decoders, lm_jax/tasks/pairs.py) or "masked"
(the tokens a text hides: masked LMs, lm_jax/tasks/masked.py). The task
loads the data and the tokenizer, carries the train steps' objective
(`Task.objective`: how they draw the batches and score them; the train
state holds it), evaluates, and declares what its runs can do (`Task.can`:
continue, fill, reply, the prompt loop), which the commands and the server
dispatch on. A new task is one file here and an entry in `TASKS`.
"""

from __future__ import annotations

from lm_jax.models import model_class
from lm_jax.tasks.base import Can, Loaded, Task, UnmaskOptions  # noqa: F401
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
