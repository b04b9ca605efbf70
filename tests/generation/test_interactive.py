"""The prompt loop's commands (lm_jax/generation/interactive.py): /temp,
/len, /topk and /topp change the sampling options; a bad one is refused.
(The loop through stdin: tests/generation/test_generate.py.)"""

import pytest

from lm_jax.errors import UserError
from lm_jax.generation import interactive
from lm_jax.generation.sampling import SamplingOptions


def test_interactive_commands():
  options = SamplingOptions()
  options = interactive.apply_command("/temp 0.5", options)
  options = interactive.apply_command("/len 7", options)
  options = interactive.apply_command("/topk 3", options)
  options = interactive.apply_command("/topp 0.9", options)
  assert options == SamplingOptions(max_new_tokens=7, temperature=0.5,
                                    top_k=3, top_p=0.9)
  for bad, message in [("/temp hot", "needs a number"),
                       ("/len 2.5", "needs an integer"),
                       ("/len 0", "must be positive"),
                       ("/topp 2", r"\(0, 1\]"), ("/go", "unknown command")]:
    with pytest.raises(UserError, match=message):
      interactive.apply_command(bad, options)


def test_a_line_that_is_not_utf8_is_one_line_and_the_loop_goes_on(
    monkeypatch, capsys):
  """A terminal in another encoding sends a byte UTF-8 cannot read; stdin
  then raises while reading the line."""
  lines = iter([UnicodeDecodeError("utf-8", b"ab\xff", 2, 3, "invalid"),
                "hello", EOFError()])

  def read(prompt=""):
    line = next(lines)
    if isinstance(line, BaseException):
      raise line
    return line

  heard = []
  monkeypatch.setattr("builtins.input", read)
  interactive.prompt_loop(lambda line, options, key: heard.append(line),
                          SamplingOptions(), seed=0)
  assert heard == ["hello"]
  assert ("error: that line holds byte 0xff, which is not UTF-8 text"
          in capsys.readouterr().out)
