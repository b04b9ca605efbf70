"""Numbers and text at their limits (issue 37, class 7): seeds the PRNG
cannot hold, the masked model's --unmask_steps, a corpus path longer than
the file system allows, a prompt byte that is not UTF-8. Each through the
command where a user meets it: one line, exit 2, nothing trained. The
sampler's checks come before the run is read, so most cases name a run
directory that need not exist."""

import pytest

from conftest import refused, run_command, train_flags

TOO_BIG = (2**32, 2**64, 2**70)


@pytest.mark.parametrize("seed", (*TOO_BIG, -1))
def test_a_sample_seed_the_prng_cannot_hold_is_one_line(tmp_path, seed):
  out = run_command("lm_jax.sample", f"--workdir={tmp_path}",
                    f"--seed={seed}", "--max_new_tokens=2")
  refused(out, f"--seed={seed} is not a seed", "from 0 to 4294967295")


@pytest.mark.slow  # compiles the sampler
def test_the_largest_seed_samples(smoke_run):
  out = run_command("lm_jax.sample", f"--workdir={smoke_run}",
                    f"--seed={2**32 - 1}", "--max_new_tokens=2")
  assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("seed", TOO_BIG)
def test_a_train_seed_the_prng_cannot_hold_is_one_line(text_file, tmp_path,
                                                       seed):
  out = run_command("lm_jax.train", *train_flags(text_file, tmp_path / "w"),
                    f"--config.seed={seed}")
  refused(out, f"--config.seed={seed} is not a seed")
  assert not (tmp_path / "w").exists()


def test_a_sweep_seed_the_prng_cannot_hold_is_one_line(tmp_path):
  out = run_command("lm_jax.cli.sweep", "--config=char_tf:smoke",
                    f"--workdir={tmp_path / 's'}", f"--set=seed=0,{2**64}")
  refused(out, f"member seed={2**64}", "is not a seed")
  assert not (tmp_path / "s").exists()


def test_a_corpus_path_too_long_is_one_line(tmp_path):
  long = tmp_path / ("y" * 300 + ".txt")
  out = run_command("lm_jax.train", *train_flags(long, tmp_path / "w"))
  refused(out, "cannot read the corpus file", "File name too long",
          "shorter path")


@pytest.mark.parametrize("steps", (10**9, 2**40))
def test_unmask_steps_past_the_tokens_is_one_line(tmp_path, steps):
  out = run_command("lm_jax.sample", f"--workdir={tmp_path}",
                    f"--unmask_steps={steps}", "--max_new_tokens=8")
  refused(out, f"--unmask_steps={steps} is more than the "
          "--max_new_tokens=8", "pass at most 8")


@pytest.mark.slow  # unmasks
def test_unmask_steps_past_the_context_are_cut_with_a_word(masked_run):
  """--max_new_tokens past the context is cut to half of it; the steps
  are cut with it."""
  out = run_command("lm_jax.sample", f"--workdir={masked_run}",
                    "--unmask_steps=400", "--max_new_tokens=500",
                    "--show_steps")
  assert out.returncode == 0, out.stderr
  assert "--unmask_steps=400 cut to" in out.stderr
  n = out.stderr.split("--unmask_steps=400 cut to ")[1].split(":")[0]
  assert f"step {n}/{n} -" in out.stdout and f"step {int(n) + 1}/" not in (
      out.stdout)


@pytest.mark.parametrize("flag", ("prompt", "fill"))
def test_a_prompt_byte_that_is_not_utf8_is_one_line(tmp_path, flag):
  """The shell hands Python a non-UTF-8 byte as a lone surrogate, which a
  BPE tokenizer refuses with a TypeError: caught before any tokenizer."""
  text = "to be \udcff"  # the byte 0xff, as sys.argv holds it
  out = run_command("lm_jax.sample", f"--workdir={tmp_path}",
                    f"--{flag}={text}", "--max_new_tokens=2")
  refused(out, f"--{flag} holds byte 0xff at character 7",
          "not UTF-8 text")
