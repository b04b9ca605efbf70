"""lm-jax-sweep: the grid, hyperparameters as data, a population's parity
with lone runs, exact resuming, and bad input refused before any write."""

import json
import pathlib

import jax
import numpy as np
import pytest

from configs import char_mlm, char_tf
from lm_jax.errors import UserError
from lm_jax.loop import preemption, trainer
from lm_jax.loop.setup import DIVERGED_FILE
from lm_jax.runs import checkpoints, rundir
from lm_jax.sweep import grid, hyper, plan, population, results
from lm_jax.training import optimizers

from conftest import REPO, run_command


# Commands, trained runs or a live server in every test: the full suite
# only (`pytest -m "not slow"` is the quick subset).
pytestmark = pytest.mark.slow



def tiny():
  """char_tf:smoke cut to 8 steps without samples: a few seconds."""
  c = char_tf.get_config("smoke")
  c.train.update(num_steps=8, log_every=4, eval_every=4, sample_tokens=0)
  return c


def members(workdir, sets, zipped=False, base=tiny):
  return grid.make_members(base, grid.parse_sets(sets), zipped,
                           pathlib.Path(workdir))


class StopAfter:
  """A StopOnSignal whose signal arrives after `chunks` chunks of steps."""

  def __init__(self, chunks: int):
    self.chunks, self.signum = chunks, None

  @property
  def requested(self) -> bool:
    self.chunks -= 1
    if self.chunks < 0:
      self.signum = 15
    return self.signum is not None


def sweep(workdir, sets, stop=None, base=tiny):
  ms = members(workdir, sets, base=base)
  population.train_groups(plan.make_plan(ms), stop or StopAfter(10**9), 0.0,
                          lambda *a: None)
  return ms


def losses(workdir) -> list:
  """((step, "loss" or "val_loss"), value) of each record of a run."""
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(l) for l in lines if l]
  return [((r["step"], k), r[k]) for r in records
          for k in ("loss", "val_loss") if k in r]


# The grid and its checks (no training).

def test_grid_and_zip(tmp_path):
  ms = members(tmp_path, ["train.learning_rate=1e-3,3e-3", "seed=0,1,2"])
  assert len(ms) == 6
  assert ms[1].values == {"train.learning_rate": 1e-3, "seed": 1}
  assert ms[1].config.train.learning_rate == 1e-3 and ms[1].config.seed == 1
  assert ms[1].workdir == tmp_path / "learning_rate=1e-3_seed=1"
  zipped = members(tmp_path, ["train.learning_rate=1e-3,3e-3", "seed=0,1"],
                   zipped=True)
  assert [m.values["seed"] for m in zipped] == [0, 1]
  assert len(grid.make_groups(ms)) == 1  # numbers only: one program


def test_shape_changes_make_groups(tmp_path):
  ms = members(tmp_path, ["model.d_model=32,64", "train.learning_rate=1e-3,3e-3"])
  groups = grid.make_groups(ms)
  assert [len(g) for g in groups] == [2, 2]
  assert grid.differing(groups[0]) == ["train.learning_rate"]


def test_config_key_starts_from_other_configs(tmp_path):
  ms = members(tmp_path, ["config=char_lstm:smoke,char_tf:smoke"])
  assert [m.config.model.kind for m in ms] == ["lstm", "transformer"]
  assert len(grid.make_groups(ms)) == 2


@pytest.mark.parametrize("sets, message", [
    (["train.learnig_rate=1e-3"], "unknown config key"),
    (["model.nothing.deeper=1"], "unknown config key"),
    (["train.learning_rate=fast"], "not a number"),
    (["train.num_steps=1.5"], "not an integer"),
    (["train.learning_rate="], "empty value"),
    (["train.learning_rate=1e-3,,3e-3"], "empty value"),
    (["seed=0,0"], "twice"),
    (["seed=0,1", "seed=2"], "given twice"),
    ([], "nothing to sweep"),
    (["train.learning_rate=-1"], "member learning_rate=-1"),
    (["train"], "--set=KEY=V1,V2"),
])
def test_bad_input_is_one_line(tmp_path, sets, message):
  with pytest.raises(UserError, match=message) as e:
    members(tmp_path, sets)
  assert "\n" not in str(e.value)
  assert not any(tmp_path.iterdir())


def test_zip_needs_equal_lengths(tmp_path):
  with pytest.raises(UserError, match="same number of values"):
    members(tmp_path, ["seed=0,1", "train.b1=0.9"], zipped=True)


def test_memory_over_the_machine_is_refused(tmp_path, monkeypatch):
  monkeypatch.setattr(plan, "machine_bytes", lambda: (2**20, "a tiny RAM"))
  with pytest.raises(UserError, match="more than a tiny RAM"):
    plan.make_plan(members(tmp_path, ["seed=0,1"]))
  assert not any(tmp_path.iterdir())


def test_member_devices_divide_the_members():
  assert plan.member_devices(8, 2) == 2
  assert plan.member_devices(3, 2) == 1
  assert plan.member_devices(6, 4) == 3


@pytest.mark.parametrize("schedule", optimizers.SCHEDULES)
@pytest.mark.parametrize("warmup", [0, 3])
def test_traced_schedule_equals_the_lone_one(schedule, warmup):
  train = tiny().train
  train.update(schedule=schedule, warmup_steps=warmup, num_steps=20,
               decay_fraction=0.3)
  hp = {k: np.float32(v) for k, v in hyper.numbers(train).items()}
  traced = jax.jit(lambda s: hyper.lr_schedule(train, hp)(s))
  lone = optimizers.lr_schedule(train)
  for s in range(25):
    np.testing.assert_allclose(traced(s), lone(s), rtol=1e-6, atol=1e-12)


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


def run_cli(*args, cwd=REPO):
  return run_command("lm_jax.cli.sweep", *args, cwd=cwd)


@pytest.mark.slow
def test_cli_show_and_bad_input_write_nothing(tmp_path):
  out = run_cli("--config=char_tf:smoke", f"--workdir={tmp_path / 's'}",
                "--set=train.learning_rate=1e-3,3e-3", "--set=seed=0,1",
                "--show")
  assert out.returncode == 0, out.stderr
  assert "4 members in 1 group(s)" in out.stdout
  assert "2 per device" in out.stdout or "4 per device" in out.stdout
  huge = run_cli("--config=char_tf:smoke", f"--workdir={tmp_path / 's'}",
                 "--set=model.d_model=32768,65536")
  assert huge.returncode == 2
  assert huge.stderr.strip().count("\n") == 0
  assert "needs about" in huge.stderr
  assert not (tmp_path / "s").exists()


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
