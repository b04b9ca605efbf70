"""Train a language model: `python -m lm_jax.train --config=configs/char_tf.py`.

Flags only; the work is `lm_jax.loop.trainer.train_and_evaluate`. At the end
the loss curves go to <workdir>/loss.png (`lm_jax.views.plotting`).
"""

import pathlib
import shlex
import sys
import time

import jax
from absl import flags
from ml_collections import config_flags

from lm_jax import config as config_lib, tasks
from lm_jax.cli import flag_parsing, process
from lm_jax.errors import UserError
from lm_jax.loop import preemption, trainer
from lm_jax.runs import rundir
from lm_jax.views import plotting

FLAGS = flags.FlagValues()  # this command's own, parsed afresh by main
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (default: runs/<config name>). An existing "
    "one is resumed from its latest checkpoint.", flag_values=FLAGS)
_SHOW_CONFIG = flags.DEFINE_boolean(
    "show_config", False, "Print the resolved config, every key with its "
    "value and comment, and exit.", flag_values=FLAGS)


_DEFINE_CONFIG = flag_parsing.config_flag(
    "A shipped config by name "
    f"({', '.join(config_lib.shipped_configs())}; e.g. char_tf:smoke) "
    "or a config file (configs/char_tf.py:smoke); override fields with "
    "--config.train.num_steps=N (--show_config lists them)")


def default_workdir() -> str:
  """runs/<config file stem>[_<variant>], e.g. runs/char_tf_smoke."""
  path, _, arg = config_flags.get_config_filename(FLAGS["config"]
                                                  ).partition(":")
  name = pathlib.Path(path).stem + (f"_{arg}" if arg else "")
  return str(pathlib.Path("runs") / name)


def sample_command(workdir: str, prompt: str = "ROMEO:", extra: str = ""
                   ) -> str:
  """The sampling command in the form this one was started (console script
  or `python -m`), with `extra` flags."""
  if pathlib.Path(sys.argv[0]).name == "lm-jax-train":
    program = "lm-jax-sample"
  else:
    program = f"{pathlib.Path(sys.executable).name} -m lm_jax.sample"
  return (f"{program} --workdir={shlex.quote(workdir)} "
          f"--prompt={shlex.quote(prompt)}" + (f" {extra}" if extra else ""))


def usage() -> str:
  """What a bare `lm-jax-train` prints instead of training a default."""
  return (
      "no --config: name what to train, e.g.\n"
      "  lm-jax-train --config=char_tf:smoke   (seconds; "
      "python -m lm_jax.train from a clone)\n"
      f"shipped configs: {', '.join(config_lib.shipped_configs())} "
      "(add :smoke for a seconds-long run)\n"
      "--config=FILE.py trains your own config; --show_config prints one's "
      "settings; --help lists the flags")


def train() -> int | None:
  """Trains the --config into --workdir; the exit status after a signal."""
  if not FLAGS["config"].present:
    raise UserError(usage())  # several lines, exit 2
  config = flag_parsing.config_value(FLAGS["config"])
  if _SHOW_CONFIG.value:
    print(config_lib.describe(
        config, config_flags.get_config_filename(FLAGS["config"])))
    return None
  workdir = _WORKDIR.value or default_workdir()
  process.use_cpu_cores(config.train.cpu_devices, config.train.batch_size)
  try:
    # The run's clock (metrics.jsonl's elapsed_s) starts with the process.
    trainer.train_and_evaluate(config, workdir, started=time.perf_counter()
                               - process.process_seconds())
  except preemption.Interrupted as e:
    print(f"{e}; resume with:\n  {preemption.resume_command()}",
          file=sys.stderr)
    return 128 + e.signum
  if jax.process_index() == 0:  # one writer in a job of several processes
    plot = plotting.plot_runs([workdir],
                              pathlib.Path(workdir) / plotting.LOSS_PLOT)
    print(f"loss plot: {plot}")
    task = tasks.task_for(config)
    example = task.example(config, rundir.read_tokenizer(
        pathlib.Path(workdir)))
    print(f"sample with: "
          f"{sample_command(workdir, example, task.sample_flags)}")
  return None


def main(argv: list[str]) -> int:
  """The command on `argv` (the arguments after its name); the exit status."""
  return flag_parsing.run(FLAGS, argv, train, _DEFINE_CONFIG)


def cli() -> None:
  """The `lm-jax-train` console script."""
  process.run_cli(main)


if __name__ == "__main__":
  cli()
