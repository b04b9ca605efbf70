"""A sweep's results (lm_jax/sweep/results.py) read back from the members'
metrics.jsonl: each member's best and final val loss, and the table best
first. (The whole table and picture of a trained sweep:
tests/sweep/test_population.py.)"""

import json

from configs import char_tf
from lm_jax.loop.setup import DIVERGED_FILE
from lm_jax.sweep import grid, results


def member(tmp_path, lr, records, diverged_at=None):
  workdir = tmp_path / f"learning_rate={lr}"
  workdir.mkdir()
  (workdir / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in records))
  if diverged_at is not None:
    (workdir / DIVERGED_FILE).write_text(json.dumps({"step": diverged_at}))
  return grid.Member(values={"train.learning_rate": lr},
                     texts={"train.learning_rate": str(lr)},
                     config=char_tf.get_config("smoke"), workdir=workdir)


def test_a_members_best_and_final_and_the_table_best_first(tmp_path):
  slow = member(tmp_path, 1e-3, [
      {"step": 2, "loss": 3.0, "tokens_per_s": 100.0, "elapsed_s": 1.0},
      {"step": 4, "val_loss": 2.5, "val_bpc": 3.6, "elapsed_s": 2.0},
      {"step": 8, "val_loss": 2.7, "val_bpc": 3.9, "tokens_per_s": 300.0,
       "elapsed_s": 4.0}])
  fast = member(tmp_path, 3e-3, [
      {"step": 4, "val_loss": 2.0, "val_bpc": 2.9, "elapsed_s": 2.0}],
      diverged_at=6)
  got = results.member_result(slow)
  assert (got["best_val_loss"], got["best_val_bpc"], got["best_step"]) == (
      2.5, 3.6, 4)
  assert (got["final_val_loss"], got["final_step"]) == (2.7, 8)
  assert got["wall_s"] == 4.0 and got["tokens_per_s"] == 200.0
  assert got["diverged_at"] is None and got["curve"] == [(4, 2.5), (8, 2.7)]
  assert results.member_result(fast)["diverged_at"] == 6
  rows = results.table([got, results.member_result(fast)],
                       ["train.learning_rate"]).splitlines()
  assert rows[0].startswith("| train.learning_rate | best val loss |")
  assert rows[2].startswith("| 0.003 | 2.0000 |")  # the best first
  assert rows[2].endswith("| diverged at step 6 |")
  assert rows[3].startswith("| 0.001 | 2.5000 | 3.6000 | 4 | 2.7000 | 4 s |")
