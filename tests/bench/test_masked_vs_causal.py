"""experiments/masked_vs_causal.py: the plan of a budget, the gap at equal
training seconds, the results file."""

import json

from experiments import masked_vs_causal as mvc


def test_plan_spans_more_steps_than_the_budget_makes():
  planned = mvc.plan(5.0, 900.0, 90.0)
  assert planned["num_steps"] == 5400  # 1.2 x 4500: the budget ends it
  assert planned["eval_every"] == 450
  assert mvc.plan(0.01, 20.0, 5.0)["eval_every"] == 1


def test_curve_gaps_and_render(tmp_path):
  records = [{"step": 50, "loss": 3.0, "elapsed_s": 20.0, "train_s": 9.0},
             {"step": 100, "val_loss": 2.5, "val_bound": 2.5, "val_bpc": 3.6,
              "val_acc": 0.2, "val_masked_loss": 2.7, "elapsed_s": 40.0,
              "train_s": 20.0},
             {"step": 200, "val_loss": 2.0, "val_bound": 2.0, "val_bpc": 2.9,
              "val_acc": 0.3, "val_masked_loss": 2.2, "elapsed_s": 70.0,
              "train_s": 40.0}]
  (tmp_path / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in records))
  masked = mvc.curve(tmp_path)
  assert [e["step"] for e in masked] == [100, 200]
  assert mvc.finished(tmp_path, 40.0, 10_000)
  assert not mvc.finished(tmp_path, 60.0, 10_000)
  causal = [dict(step=120, train_s=10.0, elapsed_s=20.0, val_loss=2.0,
                 val_bpc=2.9),
            dict(step=360, train_s=30.0, elapsed_s=50.0, val_loss=1.6,
                 val_bpc=2.3)]
  gaps = mvc.gaps(masked, causal)
  # 20 s: causal interpolated 1.8; 40 s: past the causal curve, left out.
  assert len(gaps) == 1 and abs(gaps[0]["causal"] - 1.8) < 1e-9
  assert abs(gaps[0]["gap"] - 0.7) < 1e-9
  run = dict(config="configs/char_mlm.py:diffusion", flags=[],
             workdir=str(tmp_path), steps_per_s=5.0, num_steps=240,
             eval_every=100, evals=masked,
             load=dict(load_before=0.1, load_after=1.0, wall_s=80.0))
  result = dict(command="python x", date="2026-12-08", machine="2-core CPU",
                seconds=40.0, eval_seconds=20.0, calibrate=30.0,
                eval_tokens=32768, runs={"masked (diffusion)": run,
                                         "causal": dict(run, evals=causal)},
                gaps={"masked (diffusion)": gaps},
                final_gaps={"masked (diffusion)": dict(
                    bound=2.0, masked_s=40.0, causal=1.6, causal_s=30.0,
                    gap=0.4)})
  text = mvc.render(result, [])
  assert "| 20 | 2.5000 | 1.8000 | +0.7000 |" in text
  assert "**+0.4000** nats/char" in text
  assert "0.10 / 1.00" in text and "2-core CPU" in text
