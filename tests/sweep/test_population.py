"""A sweep's population (lm_jax/sweep/population.py): its parity with
lone runs, exact resuming, a diverged member, a masked member, and the
results table of the trained sweep."""

import json

import numpy as np
import pytest

from configs import char_mlm
from lm_jax.loop import preemption, trainer
from lm_jax.loop.setup import DIVERGED_FILE
from lm_jax.runs import checkpoints, rundir
from lm_jax.sweep import results

from sweep.conftest import StopAfter, losses, sweep, tiny


# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow


# Training (a smoke config, a few seconds each).

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Two learning rates of the tiny config, swept to the end."""
  workdir = tmp_path_factory.mktemp("sweep")
  ms = sweep(workdir, ["train.learning_rate=1e-3,3e-3"])
  return workdir, ms


@pytest.mark.slow
def test_member_equals_a_lone_run(trained, tmp_path):
  workdir, ms = trained
  config = tiny()
  config.train.learning_rate = 3e-3
  trainer.train_and_evaluate(config, tmp_path / "lone")
  got, want = losses(ms[1].workdir), losses(tmp_path / "lone")
  assert [s for s, _ in got] == [s for s, _ in want]
  np.testing.assert_allclose([l for _, l in got], [l for _, l in want],
                             rtol=2e-5)
  run = rundir.load_run(ms[1].workdir)  # an ordinary run directory
  assert run.step == 8 and run.config.train.learning_rate == 3e-3


@pytest.mark.slow
def test_interrupted_sweep_resumes_exactly(trained, tmp_path):
  _, ms = trained
  with pytest.raises(preemption.Interrupted):
    sweep(tmp_path, ["train.learning_rate=1e-3,3e-3"], stop=StopAfter(0))
  assert {m.name for m in ms} <= {p.name for p in tmp_path.iterdir()}
  sweep(tmp_path, ["train.learning_rate=1e-3,3e-3"])
  for m in ms:
    got = dict(losses(tmp_path / m.name))  # a repeated record: its last
    np.testing.assert_allclose(
        [got[s] for s, _ in losses(m.workdir)],
        [l for _, l in losses(m.workdir)], rtol=1e-6)


@pytest.mark.slow
def test_a_diverged_member_stops_alone_and_the_sweep_resumes(
    trained, tmp_path, capsys):
  _, ms = trained
  sets = ["train.learning_rate=1e-3,1e8"]
  ok, bad = sweep(tmp_path, sets)
  at = json.loads((bad.workdir / DIVERGED_FILE).read_text())["step"]
  assert f"member {bad.name} diverged at step {at} (" in (
      capsys.readouterr().out)
  # Neither evaluated nor saved after it; the other member trains on, as
  # it did beside a member that did not diverge.
  saved = checkpoints.manager(bad.workdir, read_only=True).all_steps()
  assert all(s < at for s in saved)
  assert all(r[0][0] < at for r in losses(bad.workdir)
             if r[0][1] == "val_loss")
  np.testing.assert_allclose([l for _, l in losses(ok.workdir)],
                             [l for _, l in losses(ms[0].workdir)],
                             rtol=2e-5)
  # Its checkpoint lags behind: a resumed sweep knows why and is complete.
  sweep(tmp_path, sets)
  assert "group 1: already complete at step 8" in capsys.readouterr().out
  assert results.member_result(bad)["diverged_at"] == at


@pytest.mark.slow
def test_results_table_and_picture(trained):
  workdir, ms = trained
  paths = results.write(ms, workdir, "lm-jax-sweep ...")
  assert [p.name for p in paths] == ["results.md", "results.json",
                                     "sweep.png"]
  table = json.loads((workdir / "results.json").read_text())["members"]
  assert [r["settings"]["train.learning_rate"] for r in table] == [1e-3, 3e-3]
  assert all(r["best_step"] in (4, 8) and r["best_val_bpc"] for r in table)
  assert "| 0.003 |" in (workdir / "results.md").read_text()


@pytest.mark.slow
def test_a_masked_member_trains_on_its_task(tmp_path):
  """Each member trains on its task's objective (a masked model's hidden
  characters, not the next token): a one-member sweep of char_mlm equals
  a lone run of it."""
  def masked():
    c = char_mlm.get_config("smoke")
    c.train.update(num_steps=4, log_every=2, eval_every=4, sample_tokens=0)
    return c
  ms = sweep(tmp_path / "sweep", ["seed=0"], base=masked)
  trainer.train_and_evaluate(masked(), tmp_path / "lone")
  np.testing.assert_allclose([l for _, l in losses(ms[0].workdir)],
                             [l for _, l in losses(tmp_path / "lone")],
                             rtol=2e-5)
