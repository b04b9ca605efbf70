"""The race harness' pure parts: reading a run, time to target, the table."""

import json

import pytest

from experiments import race


def write_run(workdir, val: list[tuple[int, float, float, float]]) -> None:
  """A run directory as the race reads it: (step, elapsed_s, eval_s, val)."""
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps(
      {"train": {"batch_size": 2, "seq_len": 5}}))
  lines = []
  for step, elapsed, eval_s, loss in val:
    lines.append({"step": step, "loss": loss + 0.1, "elapsed_s": elapsed,
                  "tokens_per_s": 100.0 * step})
    lines.append({"step": step, "val_loss": loss, "elapsed_s": elapsed,
                  "eval_s": eval_s})
  (workdir / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in lines))


def test_read_run_takes_evaluation_time_out(tmp_path):
  write_run(tmp_path / "a", [(10, 5.0, 0.0, 2.5), (20, 9.0, 1.5, 2.0)])
  run = race.read_run(tmp_path / "a")
  assert run["curve"] == [(10, 100, 5.0, 2.5), (20, 200, 7.5, 2.0)]
  assert run["final_val"] == 2.0 and run["eval_s"] == 1.5
  assert run["tokens_per_s"] == 1500.0


def test_time_to_target_and_val_at_budget():
  curve = [(10, 100, 5.0, 2.5), (20, 200, 7.5, 2.0), (30, 300, 9.0, 1.9)]
  assert race.time_to_target(curve, 2.0) == 7.5  # at or below
  assert race.time_to_target(curve, 2.6) == 5.0
  assert race.time_to_target(curve, 1.5) is None
  assert race.val_at_budget(curve, 250) == 2.0
  assert race.val_at_budget(curve, 50) is None


def run(finals: list[float], seconds: float) -> dict:
  curve = [(10, 100, seconds, 2.5), (20, 200, 2 * seconds, finals)]
  return dict(curve=curve, tokens_per_s=1000.0, eval_s=1.0, final_val=finals,
              steps=20)


def test_summary_and_table():
  runs = {race.REFERENCE: [run(2.0, 10.0), run(2.2, 12.0)],
          "fast": [run(1.8, 4.0), run(1.9, 6.0)],
          "slow": [run(2.4, 20.0), run(2.0, 20.0)]}
  summary = race.summarise(runs)
  assert summary["target"] == pytest.approx(2.1)
  assert summary["budget_tokens"] == 200
  rows = {r["name"]: r for r in summary["rows"]}
  # The reference's time is its whole run, the target where it ends.
  assert rows[race.REFERENCE]["time_to_target_s"] == [20.0, 24.0]
  assert rows[race.REFERENCE]["median_time_s"] == 22.0
  assert rows["fast"]["median_time_s"] == pytest.approx(10.0)
  assert rows["fast"]["spread"] == pytest.approx(0.1)
  assert rows["slow"]["time_to_target_s"] == [None, 40.0]
  result = dict(name="race_cpu", mode="quick", machine="2-core test CPU",
                load="0.5-0.7", command="python experiments/race.py",
                seeds=2, eval_every=10, summary=summary)
  table = race.render_markdown(result)
  assert "**2.1000**" in table and "2-core test CPU" in table
  assert "| fast | 10.0 (8.0; 12.0) | 0.45x | 1.8500 (1.8000; 1.9000) |" in table
  assert "| slow | not reached (-; 40.0) |" in table


def test_fixed_targets_without_the_reference():
  runs = {"speedrun": [
      dict(curve=[(10, 100, 5.0, 1.7), (20, 200, 9.0, 1.58),
                  (30, 300, 14.0, 1.52), (40, 400, 18.0, 1.53)],
           tokens_per_s=1000.0, eval_s=2.0, final_val=1.53, steps=40),
      dict(curve=[(10, 100, 6.0, 1.65), (20, 200, 10.0, 1.54),
                  (30, 300, 15.0, 1.49), (40, 400, 19.0, 1.48)],
           tokens_per_s=1000.0, eval_s=2.0, final_val=1.48, steps=40)]}
  summary = race.summarise(runs, [1.60, 1.55, 1.47])
  assert summary["target"] is None and summary["budget_tokens"] is None
  row = summary["rows"][0]
  assert row["to_targets"] == {"1.60": [9.0, 10.0], "1.55": [14.0, 10.0],
                               "1.47": [None, None]}
  assert row["best_val"] == [1.52, 1.48] and row["train_s"] == 18.5
  result = dict(name="race_speedrun_cpu", mode="full", machine="2-core CPU",
                load="1.0-1.1", command="python experiments/race.py "
                "--speedrun", seeds=2, eval_every=10, summary=summary)
  table = race.render_markdown(result)
  assert "vs reference" not in table
  assert ("| speedrun | 10 (9; 10) | 12 (14; 10) | not reached (-; -) | "
          "1.5050 (1.5300; 1.4800) | 1.5200; 1.4800 | 18 | 2 | 1,000 |"
          in table)


def test_collect_summarises_the_runs_of_a_race_stopped_early(tmp_path,
                                                             monkeypatch):
  write_run(tmp_path / "s0", [(10, 5.0, 0.0, 2.5), (20, 9.0, 1.5, 1.9)])
  write_run(tmp_path / "s1", [(10, 5.0, 0.0, 2.4), (20, 9.0, 1.5, 2.1)])
  monkeypatch.setattr("sys.argv", [
      "race.py", "--no_reference", "--contestants", "c", "--targets=2.0",
      "--name=early", f"--out_dir={tmp_path}", "--collect",
      str(tmp_path / "s0"), str(tmp_path / "s1")])
  race.main()
  result = json.loads((tmp_path / "early.json").read_text())
  assert result["seeds"] == 2 and len(result["runs"]["c"]) == 2
  assert result["load"].startswith("not recorded")
  row = result["summary"]["rows"][0]
  assert row["name"] == "c"
  assert "| c |" in (tmp_path / "early.md").read_text()
