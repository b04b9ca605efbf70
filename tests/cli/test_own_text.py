"""The learner's own text everywhere, where the learner meets it: the
sample hint after training comes from the run's own text (not the plays'
`ROMEO:`, even where its characters could spell it), and an echo bot on a
text that is not English says that swap_persons only copies there."""

import pytest

from conftest import run_command

pytestmark = pytest.mark.slow
SHORT = ("--config.train.num_steps=2", "--config.train.eval_every=2",
         "--config.train.log_every=2")


def russian(tmp_path):
  path = tmp_path / "ru.txt"
  # Latin capitals in it: a char vocabulary that spells ROMEO: all the same.
  path.write_text("".join(f"Однажды в студёную зимнюю пору {i}, ROMEO: "
                          "MEMO\n" for i in range(400)),
                  encoding="utf-8")
  return path


def test_the_sample_hint_comes_from_the_runs_own_text(tmp_path):
  text = russian(tmp_path)
  out = run_command("lm_jax.train", "--config=char_tf:smoke",
                    f"--config.data.path={text}", *SHORT,
                    f"--workdir={tmp_path / 'run'}")
  assert out.returncode == 0, out.stderr
  hint = next(l for l in out.stdout.splitlines()
              if l.startswith("sample with:"))
  assert "Однажды в студёную зимнюю" in hint and "ROMEO" not in hint


def test_swap_persons_on_a_text_not_english_says_it_copies(tmp_path):
  text = tmp_path / "ru_short.txt"
  text.write_text("".join(f"я иду домой {i}\n" for i in range(300)),
                  encoding="utf-8")
  out = run_command("lm_jax.train", "--config=echo_s2s:smoke",
                    f"--config.data.path={text}",
                    "--config.data.pairs=swap_persons:1", *SHORT,
                    f"--workdir={tmp_path / 'echo'}")
  assert out.returncode == 0, out.stderr
  assert "note: swap_persons swaps English pronouns only" in out.stdout
  assert "% non-Latin" in out.stdout
