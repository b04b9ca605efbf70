"""lm-jax-eval (lm_jax/cli/evaluate.py): lm-eval's command line with the
lm_jax model registered."""

import json

import pytest

from conftest import REPO, refused, run_command

pytest.importorskip("lm_eval")

TASKS = REPO / "experiments" / "eval_tasks"


@pytest.mark.slow
def test_lm_jax_eval_command_runs_the_task(smoke_run, tmp_path):
  done = run_command("lm_jax.cli.evaluate", "--model", "lm_jax",
                     "--model_args", f"workdir={smoke_run}",
                     "--tasks", "plays_cloze", "--include_path", str(TASKS),
                     "--limit", "4", "--output_path", str(tmp_path))
  assert done.returncode == 0, done.stderr[-3000:]
  results = list(tmp_path.rglob("results_*.json"))
  assert len(results) == 1
  assert "acc,none" in json.loads(results[0].read_text())["results"][
      "plays_cloze"]


def test_a_run_that_cannot_score_is_one_line(masked_run):
  refused(run_command("lm_jax.cli.evaluate", "--model", "lm_jax",
                      "--model_args", f"workdir={masked_run}",
                      "--tasks", "plays_cloze", "--include_path", str(TASKS),
                      "--limit", "1"), "score a text")
