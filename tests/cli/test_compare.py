"""Comparisons on the learner's own text, where the learner meets them:
a masked run names its metric; a sweep of causal against masked says
which numbers compare; a sweep of tokenizers carries the `<unk>` rate
and ranks on bits per character."""

import json

import pytest

from conftest import run_command

pytestmark = pytest.mark.slow
QUICK = ("--config.train.num_steps=4", "--config.train.eval_every=4",
         "--config.train.log_every=4", "--config.train.sample_tokens=0")


def own_text(tmp_path):
  path = tmp_path / "own.txt"
  words = "кот пёс дом лес река гора снег поле".split()
  lines = [" ".join(words[(i * k) % len(words)] for k in range(1, 6))
           + f" слово{i}" for i in range(700)]  # a new word in every line
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def test_a_masked_run_names_its_metric(tmp_path):
  out = run_command("lm_jax.train", "--config=char_mlm:smoke",
                    f"--config.data.path={own_text(tmp_path)}", *QUICK,
                    f"--workdir={tmp_path / 'mlm'}")
  assert out.returncode == 0, out.stderr
  metric = "nats per hidden character, at masking rate 0.15"
  eval_line = next(l for l in out.stdout.splitlines()
                   if l.startswith("eval step"))
  assert metric in eval_line
  summary = next(l for l in out.stdout.splitlines() if l.startswith("done:"))
  assert metric in summary and "bits per hidden character" in summary


def test_causal_against_masked_says_which_numbers_compare(tmp_path):
  text, workdir = own_text(tmp_path), tmp_path / "s"
  out = run_command("lm_jax.cli.sweep", "--config=char_tf:smoke",
                    f"--config.data.path={text}", *QUICK,
                    f"--workdir={workdir}",
                    "--set=config=char_tf:smoke,char_mlm:smoke")
  assert out.returncode == 0, out.stderr
  md = (workdir / "results.md").read_text()
  assert "| metric |" in md
  assert "The val losses measure different things" in md
  assert "no winner by val loss" in md
  for config in workdir.glob("*/config.json"):
    assert json.loads(config.read_text())["data"]["path"] == str(text)


def test_tokenizers_on_own_text_carry_the_unk_rate(tmp_path):
  workdir = tmp_path / "t"
  out = run_command("lm_jax.cli.sweep", "--config=char_tf:smoke",
                    f"--config.data.path={own_text(tmp_path)}", *QUICK,
                    f"--workdir={workdir}", "--set=data.tokenizer=char,word")
  assert out.returncode == 0, out.stderr
  md = (workdir / "results.md").read_text()
  assert "| <unk> |" in md and "of val tokens are `<unk>`" in md
  assert "best bits per character" in md  # ranked per character
