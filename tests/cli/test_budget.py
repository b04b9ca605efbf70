"""Budgets of training seconds where the learner meets them:
`lm-jax-train --config.train.max_seconds=S` stops at S with a final
evaluation and checkpoint; `lm-jax-sweep --equal_time=S` gives every
member the same training seconds, and results carry them."""

import json

import pytest

from conftest import refused, run_command

pytestmark = pytest.mark.slow
# Far more steps than the budget reaches; evaluations only at the end.
LONG = ("--config.train.num_steps=1000000", "--config.train.eval_every=1000000",
        "--config.train.log_every=1000000", "--config.train.sample_tokens=0")


def records(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text()
          .splitlines() if l]


def test_max_seconds_stops_a_run_evaluated_and_saved(tmp_path):
  workdir = tmp_path / "run"
  args = ("--config=char_tf:smoke", *LONG, "--config.train.max_seconds=1",
          f"--workdir={workdir}")
  out = run_command("lm_jax.train", *args)
  assert out.returncode == 0, out.stderr
  assert "budget reached:" in out.stdout
  last = records(workdir)[-1]
  assert "val_loss" in last and 1.0 <= last["train_s"] < 30
  assert 0 < last["step"] < 1000000
  assert any(p.is_dir() for p in workdir.rglob(str(last["step"])))  # saved
  again = run_command("lm_jax.train", *args)  # resumed: nothing more to do
  assert again.returncode == 0, again.stderr
  assert "budget of 1 training seconds was spent" in again.stdout
  assert records(workdir)[-1]["step"] == last["step"]


def test_equal_time_gives_every_member_the_same_training_seconds(tmp_path):
  workdir = tmp_path / "s"
  out = run_command("lm_jax.cli.sweep", "--config=char_tf:smoke", *LONG,
                    f"--workdir={workdir}", "--equal_time=1",
                    "--set=config=char_lstm:smoke,char_tf:smoke", "--x=seconds")
  assert out.returncode == 0, out.stderr
  assert out.stdout.count("budget reached:") == 2
  done = json.loads((workdir / "results.json").read_text())["members"]
  for member in done:
    assert 1.0 <= member["train_s"] < 30, member
    assert member["tokens_seen"] > 0 and member["tokens_per_s"] > 0
  md = (workdir / "results.md").read_text()
  assert md.count("stopped by its 1 s budget") == 2
  assert "| train s | tokens seen | tokens/s |" in md


def test_equal_time_beside_another_budget_is_one_line(tmp_path):
  out = run_command("lm_jax.cli.sweep", "--config=char_tf:smoke",
                    "--config.train.max_seconds=5", "--equal_time=3",
                    f"--workdir={tmp_path / 's'}", "--set=seed=0,1", "--show")
  refused(out, "--equal_time sets config.train.max_seconds")


def test_a_budget_clock_decays_every_member_to_the_budgets_end(tmp_path):
  """schedule_clock=budget: a population's members (one program) each
  decay to learning_rate * min_lr_ratio where the budget ends, however
  many steps this machine fits in it."""
  workdir = tmp_path / "s"
  out = run_command(
      "lm_jax.cli.sweep", "--config=char_tf:smoke", *LONG,
      "--config.train.log_every=25", "--config.train.schedule=wsd",
      "--config.train.decay_fraction=0.5", "--config.train.min_lr_ratio=0.1",
      "--config.train.schedule_clock=budget", "--equal_time=2",
      f"--workdir={workdir}", "--set=train.learning_rate=1e-3,2e-3")
  assert out.returncode == 0, out.stderr
  members = sorted(p.parent for p in workdir.glob("*/metrics.jsonl"))
  assert len(members) == 2
  for member in members:
    peak = json.loads((member / "config.json").read_text())["train"][
        "learning_rate"]
    lrs = [r["lr"] for r in records(member) if "lr" in r]
    assert len(lrs) >= 4, lrs
    assert max(lrs) == pytest.approx(peak)  # the stable half
    assert lrs[-1] <= 0.2 * peak  # decayed at the budget's end
    assert all(b <= a * 1.0001 for a, b in zip(lrs[1:], lrs[2:]))
