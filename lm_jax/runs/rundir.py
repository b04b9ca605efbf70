"""The run directory: what a training run writes, and loading it back.

A run directory holds
  config.json     the resolved config (what `load_run` builds the model from)
  tokenizer.json  the vocabulary (lm_jax/data/tokenizers.py), in the
                  `tokenizers` library's format, with tokenizer_config.json
                  and special_tokens_map.json beside it: what
                  `transformers.AutoTokenizer.from_pretrained(DIR)` reads
                  (lm_jax/data/hf_format.py); for a BPE, tokenizer_meta.json
                  too (what the project knows of it)
  checkpoints/    Orbax checkpoints, the latest and the best (checkpoints.py)
  metrics.jsonl   one JSON record per log or evaluation (metrics.py)
plus TensorBoard event files and loss.png. Running the trainer again on the
same directory resumes it, after `check_resumable` has compared what the
checkpoints depend on.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import pathlib
from typing import Any, Iterator, NamedTuple

import jax
import ml_collections

from lm_jax.data import tokenizers
from lm_jax.errors import UserError
from lm_jax.models import make_model
from lm_jax.runs import checkpoints
from lm_jax.runs.metrics import METRICS_FILE
from lm_jax.training import optimizers, steps

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_META_FILE = "tokenizer_meta.json"
# What `transformers.AutoTokenizer.from_pretrained(DIR)` reads.
TOKENIZER_FILES = (TOKENIZER_FILE, "tokenizer_config.json",
                   "special_tokens_map.json")
CHECKPOINTS = "checkpoints"
LOAD_TRIES = 5  # listings of the checkpoints tried while a run deletes some
FILES = (CONFIG_FILE, TOKENIZER_FILE, CHECKPOINTS, METRICS_FILE)
# Settings a checkpoint cannot be resumed or sampled with if they change
# (train.carry_state: whether it holds the carried recurrent state;
# train.optimizer: the layout of its optimiser state).
FIXED_SETTINGS = ("model", "data.tokenizer", "train.seq_len",
                  "train.carry_state", "train.optimizer")
# Settings added after runs were written, and the value a config.json
# without one was trained with: `upgrade` fills them in where a stored
# config is read, the one place that knows of older runs.
ADDED_SETTINGS = {
    "train.carry_state": False, "train.optimizer": "adamw",
    "train.schedule": "cosine", "train.decay_fraction": 0.2,
    "train.muon_learning_rate": 0.02, "train.muon_momentum": 0.95,
    "train.z_loss": 0.0, "data.text_field": "text", "data.vocab_from": ""}
# The same for each model kind's settings (config.model less `kind`); a
# Transformer's dense attention computes what blocked attention does.
ADDED_MODEL_SETTINGS: dict[str, dict[str, object]] = {
    "transformer": {
        "attention": "dense", "attention_tile": 64, "remat": False,
        "position": "learned", "norm": "layernorm", "qk_norm": False,
        "mlp": "gelu", "zero_init_proj": False, "logit_softcap": 0.0},
    "transformer_s2s": {
        "position": "learned", "cross_position": "none", "norm": "layernorm",
        "qk_norm": False, "mlp": "gelu", "zero_init_proj": False,
        "logit_softcap": 0.0},
    "lstm": {"hand_written_backward": True}}


def upgrade(config: dict) -> dict:
  """A stored config with the settings it predates at the values its run
  was trained with; today's code then reads it as it reads a new one."""
  config = copy.deepcopy(config)
  for key, value in ADDED_SETTINGS.items():
    section, _, name = key.partition(".")
    config.setdefault(section, {}).setdefault(name, value)
  added = ADDED_MODEL_SETTINGS.get(config["model"].get("kind"), {})
  config["model"] = {**added, **config["model"]}
  return config


class Run(NamedTuple):
  """A trained run, loaded for sampling and inspection (no optimiser)."""
  config: ml_collections.ConfigDict
  tokenizer: Any
  model: Any  # an lm_jax.models.base.LanguageModel
  params: Any
  step: int


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json())


def flatten(d: dict, prefix: str = "") -> dict:
  """{"train": {"seq_len": 64}} -> {"train.seq_len": 64}."""
  out: dict = {}
  for k, v in d.items():
    out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict)
               else {f"{prefix}{k}": v})
  return out


# Model settings that say how, not what, the model computes: the same
# parameters and function, so a run may resume or sample with either.
HOW_SETTINGS = ("model.attention", "model.attention_tile", "model.remat")


def config_differences(stored: dict, requested: dict,
                       keys=FIXED_SETTINGS) -> list[str]:
  """'name: stored X, requested Y' for each fixed setting that differs
  (`stored` as `read_config` gives it: upgraded)."""
  stored, requested = flatten(stored), flatten(requested)
  names = sorted(n for n in stored.keys() | requested.keys()
                 if any(n == k or n.startswith(k + ".") for k in keys)
                 and n not in HOW_SETTINGS)
  return [f"{n}: stored {stored.get(n)!r}, requested {requested.get(n)!r}"
          for n in names if stored.get(n) != requested.get(n)]


def vocabulary_differences(stored, requested) -> list[str]:
  """'vocabulary: ...' if the two tokenizers map text to different ids."""
  if stored.to_json() == requested.to_json() or stored.kind != requested.kind:
    return []  # a different kind shows as a data.tokenizer difference
  show = lambda symbols: ", ".join(repr(s) for s in sorted(symbols)[:10]) + (
      ", ..." if len(symbols) > 10 else "")
  added = set(requested.vocab) - set(stored.vocab)
  dropped = set(stored.vocab) - set(requested.vocab)
  change = "; ".join(f"{name} {show(symbols)}" for name, symbols in
                     (("new", added), ("missing", dropped)) if symbols)
  return [f"vocabulary: stored {stored.vocab_size} tokens, requested "
          f"{requested.vocab_size} ({change or 'reordered'})"]


def read_config(workdir: pathlib.Path) -> dict:
  """The stored config.json, upgraded (`upgrade`); a damaged one is a
  UserError naming it."""
  path = workdir / CONFIG_FILE
  try:
    config = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    config = e
  if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
    raise UserError(f"{path} is damaged (not the JSON config a run writes); "
                    "restore it from a copy, or pass a new --workdir")
  return upgrade(config)


def read_tokenizer(workdir: pathlib.Path):
  """The stored tokenizer; a missing or damaged one is a UserError.

  A run written before tokenizer.json took the library's format is
  upgraded in place (`write_tokenizer`), where the directory is writable.
  """
  path = workdir / TOKENIZER_FILE
  if not path.exists():
    raise UserError(f"{path} is missing: the run cannot map text to ids "
                    "without it; restore it from a copy, or pass a new "
                    "--workdir")
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
    tokenizer = tokenizers.tokenizer_from_json(data)
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    raise UserError(f"{path} is damaged (not the JSON vocabulary a run "
                    "writes); restore it from a copy, or pass a new "
                    "--workdir") from None
  if not all((workdir / name).exists() for name in TOKENIZER_FILES):
    with contextlib.suppress(OSError):  # a read-only run still loads
      write_tokenizer(workdir, tokenizer)
  return tokenizer


def write_tokenizer(workdir: pathlib.Path, tokenizer) -> None:
  """tokenizer.json and the files `transformers` reads beside it."""
  for name, data in tokenizers.side_files(tokenizer).items():
    write_atomically(workdir / name, lambda p, data=data: p.write_text(
        json.dumps(data, ensure_ascii=False, indent=1) + "\n"))
  write_atomically(workdir / TOKENIZER_FILE,
                   lambda p: tokenizers.save_tokenizer(tokenizer, p))


def check_resumable(workdir: pathlib.Path, config, tokenizer) -> None:
  """Refuses a workdir whose run differs in what its checkpoints depend on.

  Runs before anything is written, so a refused command changes nothing.
  """
  diffs = []
  if (workdir / CONFIG_FILE).exists():
    stored = read_config(workdir)
    diffs += config_differences(stored, config_to_dict(config))
    seed = stored.get("seed", config.seed)
    if seed != config.seed and (workdir / CHECKPOINTS).exists():
      raise UserError(
          f"{workdir} was trained with config.seed={seed}, not {config.seed}:"
          " a resumed run keeps its seed (it sets the order of the training "
          f"batches); resume with --config.seed={seed}, or use a new "
          "--workdir for another seed")
  if (workdir / TOKENIZER_FILE).exists():
    diffs += vocabulary_differences(read_tokenizer(workdir), tokenizer)
  if diffs:
    raise UserError(
        f"{workdir} holds a run with other settings ({'; '.join(diffs)}); "
        "use a new --workdir or the stored settings and text")


# Settings of the learning-rate schedule: a resume with others reshapes it.
SCHEDULE_SETTINGS = ("num_steps", "learning_rate", "warmup_steps", "schedule",
                     "decay_fraction", "min_lr_ratio", "schedule_clock")


def schedule_change(workdir: pathlib.Path, config, step: int) -> str | None:
  """One line saying how resuming at `step` with `config` changes the
  learning-rate schedule the stored run followed; None if it does not."""
  if not (workdir / CONFIG_FILE).exists():
    return None
  stored = ml_collections.ConfigDict(read_config(workdir)).train
  changed = [f"{n} {stored.get(n)!r} -> {config.train.get(n)!r}"
             for n in SCHEDULE_SETTINGS if stored.get(n) != config.train.get(n)]
  if not changed:
    return None
  try:
    before = float(optimizers.lr_schedule(stored)(step))
  except (KeyError, AttributeError, TypeError, ValueError):
    before = None
  after = float(optimizers.lr_schedule(config.train)(step))
  was = "" if before is None else f" (it was {before:.2e})"
  return (f"resuming with config.train {', '.join(changed)}: the "
          f"learning-rate schedule is redrawn over "
          f"{config.train.num_steps} steps; at step {step} it is "
          f"{after:.2e}{was}; config.json keeps the settings the run "
          "started with")


def prepare(workdir: pathlib.Path) -> None:
  """Creates the run directory, or checks an existing one is writable."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / ".write_test"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise UserError(f"cannot write to workdir {workdir}: {e.strerror}; pass "
                    "a writable --workdir") from None


LOCK_FILE = ".lock"


@contextlib.contextmanager
def lock(workdir: pathlib.Path) -> Iterator[None]:
  """Owns `workdir` for one training: a second one is refused, naming the
  holder's PID.

  An OS lock (flock) on `workdir/.lock`, which the kernel releases when the
  holder dies in any way, `kill -9` included: no stale lock to remove by
  hand. Sampling and plotting take no lock, so they read a run that trains.
  """
  path = workdir / LOCK_FILE
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
      raise UserError(
          f"{workdir} is in use by another training (PID {holder}); wait for "
          "it to end or stop it, or pass another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock


def write_atomically(path: pathlib.Path, write) -> None:
  """write(tmp) then a rename: a run killed mid-write leaves no torn file."""
  tmp = path.with_name(path.name + ".tmp")
  write(tmp)
  os.replace(tmp, path)


def write_run(workdir: pathlib.Path, config, tokenizer) -> None:
  """Writes the config and tokenizer of a new run (an existing run's stay)."""
  if not (workdir / TOKENIZER_FILE).exists():
    if hasattr(tokenizer, "metadata"):
      write_atomically(workdir / TOKENIZER_META_FILE, lambda p: p.write_text(
          json.dumps(tokenizer.metadata(), indent=1) + "\n"))
    write_tokenizer(workdir, tokenizer)
  if not (workdir / CONFIG_FILE).exists():
    write_atomically(workdir / CONFIG_FILE, lambda p: p.write_text(
        config.to_json(indent=1) + "\n"))


def load_run(workdir: str | os.PathLike, step: int | None = None) -> Run:
  """The config, tokenizer, model and parameters of a trained run.

  Loads the best checkpoint, or the one saved at `step`; the model is built
  from the config stored with the run, never from the caller's flags. Only
  the parameters are read: the optimiser state in the checkpoint is left
  alone, so a run stays loadable whatever the optimiser code becomes. The
  exception is an optimiser that evaluates elsewhere than it trains
  (schedule-free AdamW): its state is read to give the parameters it was
  evaluated at (`optimizers.eval_params`).
  """
  workdir = pathlib.Path(workdir)
  if not (workdir / CONFIG_FILE).exists():
    raise UserError(f"{workdir} is not a run directory (no {CONFIG_FILE}); "
                    "pass the --workdir a training run wrote")
  config = ml_collections.ConfigDict(read_config(workdir))
  tokenizer = read_tokenizer(workdir)
  model = make_model(config.model, tokenizer.vocab_size)
  abstract = model.abstract_params(config.train.seq_len)
  # A run still training saves and deletes checkpoints while they are
  # listed and read: a failure after which a listed folder is gone is such
  # a race, and the listing is taken again.
  for attempt in range(1, LOAD_TRIES + 1):
    listed: list[int] = []
    try:
      mngr = checkpoints.manager(workdir, read_only=True)
      listed = list(mngr.all_steps())
      step_read, params = _read_params(mngr, config, model, abstract, step)
      return Run(config, tokenizer, model, params, step_read)
    except Exception as e:
      gone = isinstance(e, FileNotFoundError) or any(
          not (workdir / CHECKPOINTS / str(s)).exists() for s in listed)
      if not gone:
        raise
      checkpoints.quiet_abandoned_reads()
      if attempt == LOAD_TRIES:
        raise UserError(
            f"the checkpoints of {workdir} changed while they were read, "
            f"{LOAD_TRIES} times (a run training into it deletes old ones); "
            "try again, or pass --step with a step it keeps") from None
  raise AssertionError("unreachable")


def _read_params(mngr, config, model, abstract, step: int | None):
  """(step, params) of the best checkpoint, or of `step`, falling back on
  the others when it is damaged."""
  first = checkpoints.pick_step(mngr, step)
  # A damaged best checkpoint falls back to the latest, and so on; a step
  # the user asked for does not.
  order = [first] + ([] if step is not None else sorted(
      (s for s in mngr.all_steps() if s != first), reverse=True))

  def read(s: int):
    if not optimizers.evaluates_elsewhere(config.train):
      return checkpoints.restore_params(mngr, s, abstract)
    target = jax.eval_shape(lambda: steps.create_train_state(
        model, config.train, jax.random.key(0)))
    state = checkpoints.restore(mngr, s, target)
    return optimizers.eval_params(state.params, state.opt_state)

  return checkpoints.restore_first(
      mngr, order, read,
      "pass --step with another saved step, or train the run again"
      if len(mngr.all_steps()) > 1 else "train the run again")
