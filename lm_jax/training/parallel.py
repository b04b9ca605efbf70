"""Data parallelism with JAX's own sharding: one mesh axis, "data".

The batch is split across devices along the mesh's data axis; parameters
and optimiser state are either replicated on every device or, with
`config.train.fsdp`, split along the same axis (each array along its first
dimension that divides by the device count). `jax.jit` then inserts the
collectives (gradient all-reduce, parameter all-gather) itself: the train
step is the same code on one CPU, eight simulated CPUs or several GPUs.
"""

from __future__ import annotations

import os

import jax
import ml_collections
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lm_jax.errors import UserError

DATA = "data"


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """Joins a multi-host job when the config or the environment asks.

  `jax.distributed.initialize()` finds the coordinator address, process
  count and id in the cluster environment (SLURM, Open MPI, Kubernetes) or in
  JAX_COORDINATOR_ADDRESS; elsewhere the count and id come from the
  JAX_NUM_PROCESSES and JAX_PROCESS_ID variables, read here.
  """
  if not (config.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS")):
    return
  # CPU devices of several processes meet through gloo (GPUs use NCCL).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  env_int = lambda name: (int(os.environ[name]) if name in os.environ
                          else None)
  jax.distributed.initialize(num_processes=env_int("JAX_NUM_PROCESSES"),
                             process_id=env_int("JAX_PROCESS_ID"))


def make_mesh(batch_size: int) -> Mesh:
  """A 1-D mesh over every device; the global batch must split evenly."""
  n = jax.device_count()
  if batch_size % n:
    raise UserError(
        f"config.train.batch_size ({batch_size}) must be divisible by the "
        f"number of devices ({n}); use a multiple of {n}")
  # Auto axes: jit's sharding propagation places the collectives.
  return jax.make_mesh((n,), (DATA,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays whose first axis is the batch: split across the data axis."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], n: int) -> P:
  """Split the first dimension divisible by n (largest arrays benefit)."""
  for axis, size in enumerate(shape):
    if size % n == 0 and size >= n:
      return P(*([None] * axis + [DATA]))
  return P()


def state_shardings(state, mesh: Mesh, fsdp: bool):
  """A sharding for every array of `state`: replicated, or FSDP-split.

  The carried recurrent state (`state.carry`, config.train.carry_state;
  None otherwise) has one row per lane: it is split like the batch, each
  device holding its lanes.
  """
  n = mesh.shape[DATA]
  shardings = jax.tree.map(
      lambda x: NamedSharding(mesh, _fsdp_spec(x.shape, n) if fsdp else P()),
      state)
  return shardings.replace(carry=jax.tree.map(lambda _: batch_sharding(mesh),
                                              state.carry))


def place_state(state, mesh: Mesh, fsdp: bool):
  """Moves a train state onto the mesh."""
  return jax.device_put(state, state_shardings(state, mesh, fsdp))
