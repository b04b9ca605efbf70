"""experiments/startup.py: reading the trainer's start-up line."""

import pytest

from experiments import startup
from lm_jax.views import progress


def test_the_start_up_line_reads_back_phase_by_phase():
  line = progress.startup_line({"imports": 1.5, "devices": 1.51, "data": 1.7,
                                "state": 2.2, "checkpoints": 2.25,
                                "first step": 2.5})
  assert line == ("start-up 2.50 s to the first step: imports 1.50, devices "
                  "0.01, data 0.19, model and state 0.50, checkpoints and "
                  "logs 0.05, first step's program 0.25")
  phases = startup.parse(f"devices: 2 x cpu\n{line}\nstep 1/1 ...")
  assert phases["total"] == 2.5 and phases["first step's program"] == 0.25
  assert sum(v for k, v in phases.items() if k != "total") == pytest.approx(2.5)
  with pytest.raises(ValueError, match="no start-up line"):
    startup.parse("step 1/1")
