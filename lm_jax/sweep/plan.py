"""The plan of a sweep: its groups, each group's data and model, the devices
its members spread over and the memory it needs, checked before anything
is written or compiled."""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import ml_collections

from lm_jax import tasks
from lm_jax.errors import UserError
from lm_jax.models import make_model
from lm_jax.runs import rundir
from lm_jax.sweep import grid
from lm_jax.views import progress


@dataclasses.dataclass
class Group:
  """Members that share one program, trained as one population."""
  index: int
  members: list[grid.Member]
  task: tasks.Task
  loaded: tasks.Loaded
  model: object  # an lm_jax.models Model
  devices: int  # the members spread over the first `devices` devices
  member_bytes: int  # the estimated memory of one member

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.members[0].config

  @property
  def total_bytes(self) -> int:
    return len(self.members) * self.member_bytes


def member_devices(members: int, devices: int) -> int:
  """The most devices the members split over evenly (one per core on CPU,
  `lm_jax.cli.process.use_cpu_cores`)."""
  return max(d for d in range(1, min(members, devices) + 1)
             if members % d == 0)


def machine_bytes() -> tuple[int, str]:
  """The memory a population may use, and its name: the accelerators'
  memory, or on CPU the machine's RAM (all CPU devices share it)."""
  devices = jax.devices()
  if devices[0].platform != "cpu":
    stats = devices[0].memory_stats() or {}
    if "bytes_limit" in stats:
      return (stats["bytes_limit"] * len(devices),
              f"{len(devices)} x {devices[0].device_kind}")
  return (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
          "this machine's RAM")


def _size(model_config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(layers, width) of any model config: the widest of its widths."""
  widths = [model_config.get(k) for k in ("d_model", "hidden_size",
                                          "embed_dim", "d_ff")]
  width = max([w for w in widths if isinstance(w, int)] or [128])
  return int(model_config.get("num_layers", 1) or 1), width


def estimate_member_bytes(model, config: ml_collections.ConfigDict,
                          vocab_size: int) -> int:
  """A member's parameters, gradients, updates and optimiser moments (five
  copies of the parameters, float32), and its activations for the backward
  pass: about 34 widths per token and layer (Korthikanti et al. 2022, no
  recomputation), the attention weights, and logits with their gradient.

  An estimate, meant to refuse a population that cannot fit before the
  compiler runs; XLA often needs less.
  """
  t = config.train
  params = sum(math.prod(x.shape) for x in
               jax.tree.leaves(model.abstract_params(t.seq_len)))
  layers, width = _size(config.model)
  heads = int(config.model.get("num_heads", 0) or 0)
  per_token = layers * (34 * width + 5 * heads * t.seq_len) + 4 * vocab_size
  tokens = t.batch_size * t.seq_len // t.grad_accum_steps
  return 4 * (5 * params + tokens * per_token)


def check_folders(members: list[grid.Member]) -> None:
  """Refuses members whose run directories collide (a name keeps letters,
  digits and `.+-` of the values, so `a/b` and `a-b` meet) or cannot be
  made (a name longer than the file system allows)."""
  limit = _name_max(members[0].workdir.parent) if members else 255
  seen: dict[str, grid.Member] = {}
  for m in members:
    if len(os.fsencode(m.name)) > limit:
      raise UserError(
          f"member {_settings(m)}: its folder name is "
          f"{len(os.fsencode(m.name))} bytes, more than the {limit} the file "
          "system allows; sweep shorter values (e.g. a shorter file name or "
          "a symlink to it)")
    other = seen.setdefault(str(m.workdir), m)
    if other is not m:
      raise UserError(
          f"members {_settings(other)} and {_settings(m)} would share the "
          f"run directory {m.workdir}; give values that differ in letters or "
          "digits (a folder name keeps only those and .+-), or sweep them "
          "into separate --workdir folders")


def _settings(member: grid.Member) -> str:
  return ",".join(f"{k}={v}" for k, v in member.texts.items())


def _name_max(folder) -> int:
  """The longest file name in `folder`'s file system (255 on most)."""
  while True:
    try:
      return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
      if folder == folder.parent:
        return 255
      folder = folder.parent


def make_plan(members: list[grid.Member]) -> list[Group]:
  """The groups in training order, their data loaded and checked.

  Loading reads the corpus and builds the tokenizer (writing nothing), and
  refuses a member directory holding a run of other settings, or one that
  another member's would collide with.
  """
  check_folders(members)
  out = []
  memory, where = machine_bytes()
  for i, group in enumerate(grid.make_groups(members)):
    config = group[0].config
    progress.phase(f"group {i + 1}: loading the corpus")
    task = tasks.task_for(config)
    loaded = task.load(config, group[0].workdir)
    for m in group[1:]:
      rundir.check_resumable(m.workdir, m.config, loaded.tokenizer)
    model = make_model(config.model, loaded.tokenizer.vocab_size)
    g = Group(i, group, task, loaded, model,
              member_devices(len(group), jax.device_count()),
              estimate_member_bytes(model, config,
                                    loaded.tokenizer.vocab_size))
    if g.total_bytes > memory:
      raise UserError(
          f"group {i + 1} ({len(group)} members) needs about "
          f"{gib(g.total_bytes)} by estimate, more than {where} "
          f"({gib(memory)}); sweep fewer values at once, or smaller models")
    out.append(g)
  return out


def gib(n: float) -> str:
  return f"{n / 2**30:.2f} GiB"


def describe(groups: list[Group]) -> str:
  """The members and the plan, as `--show` prints them."""
  lines = []
  n = sum(len(g.members) for g in groups)
  lines.append(f"{n} members in {len(groups)} group(s), trained one group "
               f"after another; {jax.device_count()} x "
               f"{jax.devices()[0].device_kind} device(s)")
  for g in groups:
    t, m = g.config.train, len(g.members)
    varies = grid.differing(g.members) or ["(one member)"]
    shared = [f"{k}={v}" for k, v in g.members[0].texts.items()
              if k not in varies]
    lines.append(
        f"group {g.index + 1}: {m} member(s) on {g.devices} device(s) "
        f"({m // g.devices} per device), {t.num_steps} steps of "
        f"{t.batch_size} x {t.seq_len} tokens, optimiser "
        f"{t.optimizer}, about "
        f"{gib(g.member_bytes)} per member, {gib(g.total_bytes)} in all")
    lines.append(f"  members differ in: {', '.join(varies)}"
                 + (f"; share {', '.join(shared)}" if shared else ""))
    for member in g.members:
      lines.append(f"  {member.workdir}")
  return "\n".join(lines)
