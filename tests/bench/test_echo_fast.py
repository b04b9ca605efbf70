"""experiments/echo_fast.py: reading a run's evaluations, the table."""

import json

from experiments import echo_fast


def test_evaluations_and_the_goal(tmp_path):
  records = [{"step": 50, "loss": 1.0, "elapsed_s": 20.0},
             {"step": 100, "val_loss": 0.5, "val_exact_match": 0.9,
              "val_token_accuracy": 0.98, "elapsed_s": 60.0, "eval_s": 0.0},
             {"step": 200, "val_loss": 0.1, "val_exact_match": 0.995,
              "val_token_accuracy": 0.999, "elapsed_s": 130.0, "eval_s": 4.0}]
  (tmp_path / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in records))
  evals = echo_fast.read_evals(tmp_path)
  assert [e["step"] for e in evals] == [100, 200]
  assert evals[1]["train_s"] == 126.0
  assert echo_fast.first_at(evals, 0.99)["step"] == 200
  assert echo_fast.first_at(evals, 0.999) is None
  result = dict(machine="2-core test CPU", note="", command="python x",
                rows=[dict(config="c:fast", task="copy", goal=0.99,
                           evals=evals)])
  table = echo_fast.render(result)
  assert "| c:fast | copy | 99% | 130 s, step 200 | 99.50% | 130 | 200 | yes |" \
      in table
