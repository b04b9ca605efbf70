"""lm-jax-sample (lm_jax/cli/sample.py): a trained run continues a prompt;
what it cannot do is one line and exit 2."""

import pytest

from lm_jax.cli import sample


@pytest.mark.slow  # compiles the sampler
def test_the_same_seed_gives_the_same_text_in_one_process(smoke_run, capsys):
  argv = [f"--workdir={smoke_run}", "--prompt=LINE", "--max_new_tokens=12"]
  assert sample.main([*argv, "--seed=3"]) == 0
  first = capsys.readouterr().out
  assert first.startswith("LINE") and len(first) == len("LINE") + 12 + 1
  assert sample.main(argv) == 0  # seed 0: nothing left of the last call
  assert capsys.readouterr().out != first
  assert sample.main([*argv, "--seed=3"]) == 0
  assert capsys.readouterr().out == first


@pytest.mark.parametrize("flags, message", [
    ([], "pass either --workdir=DIR (a training run) or --model=FILE"),
    (["--workdir=RUN", "--model=m.safetensors"], "pass either --workdir=DIR"),
    (["--workdir=RUN", "--num_samples=0"],
     "--num_samples must be at least 1, got 0"),
    (["--workdir=RUN", "--fill=a _ b"], "--fill needs a run that can fill "
     "blanks (trained with configs/char_mlm.py, say); this run can continue "
     "a prompt, answer in a prompt loop (--interactive)"),
    (["--workdir=RUN", "--prompt="], "--prompt is empty"),
    (["--workdir=RUN", "--unmask_order=left"], "flag --unmask_order=left"),
])
def test_a_refusal_is_one_line_and_exit_2(smoke_run, capsys, flags, message):
  argv = [f.replace("RUN", str(smoke_run)) for f in flags]
  assert sample.main(argv) == 2
  captured = capsys.readouterr()
  assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
  assert message in captured.err and captured.out == ""


def test_unescape_reads_newlines_and_tabs():
  assert sample.unescape("a\\nb\\tc") == "a\nb\tc"


@pytest.mark.parametrize("flag, named", [
    ("--temperature=1e-40", "float32"),
    ("--top_p=1e-45", "smallest normal"),
    ("--top_k=3000000000", "at most 2147483647"),
])
def test_sampling_values_past_32_bits_are_one_line(smoke_run, capsys, flag,
                                                   named):
  """Refused before the run loads: the one check the server also runs
  (`lm_jax.generation.sampling.option_problem`)."""
  assert sample.main([f"--workdir={smoke_run}", flag]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"error: {flag.partition('=')[0]} ")
  assert err.count("\n") == 1 and named in err
