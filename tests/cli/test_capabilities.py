"""lm-jax-sample and lm-jax-inspect dispatch on what the run can do
(`lm_jax/tasks/base.py: Can`): a masked run's prompt loop, and one line
naming what a run can do when a flag asks for more."""

import pytest

from conftest import one_line_error, run_command

# Commands on trained runs: the full suite only.
pytestmark = pytest.mark.slow


def test_a_masked_run_answers_in_the_prompt_loop(masked_run):
  out = run_command("lm_jax.sample", f"--workdir={masked_run}",
                   "--interactive", "--max_new_tokens=6", "--temperature=0",
                   stdin="LINE _: the\nLINE 3\n/quit\n")
  assert out.returncode == 0, out.stderr
  assert "fills its blanks (_), or continues it by unmasking" in out.stdout
  filled, = [line for line in out.stdout.splitlines()
             if line.startswith("> LINE ") and line.endswith(": the")]
  assert "_" not in filled
  assert "blank 1 (token 5, step 1):" in out.stdout
  continued, = [line for line in out.stdout.splitlines()
                if line.startswith("> LINE 3")]
  assert len(continued) == len("> LINE 3") + 6
  assert "Traceback" not in out.stderr


def test_fill_on_a_run_that_cannot_is_one_line(smoke_run):
  one_line_error(
      run_command("lm_jax.sample", f"--workdir={smoke_run}", "--fill=LINE _"),
      "--fill needs a run that can fill blanks (trained with "
      "configs/char_mlm.py, say); this run can continue a prompt, answer in "
      "a prompt loop (--interactive), score a text (each token's "
      "log-probability)")


def test_the_prompt_loop_of_a_masked_run_refuses_beam(masked_run):
  one_line_error(
      run_command("lm_jax.sample", f"--workdir={masked_run}", "--interactive",
                 "--beam=2", stdin="LINE\n"),
      "--beam searches an encoder-decoder's best reply; a masked model "
      "unmasks (see --unmask_steps): drop --beam")
