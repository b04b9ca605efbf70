"""lm_jax/errors.py: the one error a user sees, as a line and exit 2."""

from lm_jax.cli import process
from lm_jax.errors import UserError


def test_a_user_error_is_one_line_and_exit_2(capsys):
  def main():
    raise UserError("--steps must be positive, got 0; pass --steps=1")
  assert process.run_main(main) == 2
  captured = capsys.readouterr()
  assert captured.err == ("error: --steps must be positive, got 0; pass "
                          "--steps=1\n") and captured.out == ""


def test_only_a_failed_write_skips_the_teardown():
  assert UserError.skip_teardown is False
  assert issubclass(UserError, Exception)
