"""Device mesh and shardings: data parallel (batch split over ``'data'``, parameters
replicated) or FSDP-style (each large parameter and its optimizer moments split along one
axis over the same ``'data'`` devices; XLA inserts the all-gathers, Rajbhandari et al.
2020 / ZeRO-3).

The same jitted step runs unchanged on 1 CPU, several GPUs or a TPU slice: only the mesh
changes. Multi-host runs call ``jax.distributed.initialize()`` first
(``--config.multihost``); each process then feeds its own slice of the global batch.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = 'data'


_DISTRIBUTED = []


def maybe_initialize_distributed(multihost: bool) -> None:
  """``jax.distributed.initialize()`` once, for multi-host (multi-process) runs. It must
  run before anything touches a JAX backend (even ``jax.process_count()``), so it comes
  first in ``train``; cluster settings come from the environment (TPU, SLURM, ...)."""
  if multihost and not _DISTRIBUTED:
    jax.distributed.initialize()
    _DISTRIBUTED.append(True)


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh over ``num_devices`` (0 = all) devices with axis ``'data'``."""
  n = num_devices or jax.device_count()
  # Auto axes: XLA propagates the batch sharding through the model (no explicit
  # out_sharding annotations needed inside the layers).
  return jax.make_mesh((n,), (DATA,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:n])


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``'data'``, other axes whole."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], n: int, min_size: int) -> P:
  """Shard the largest axis divisible by ``n`` if the array has ``>= min_size`` entries."""
  if n == 1 or not shape or int(np.prod(shape)) < min_size:
    return P()
  axes = sorted(range(len(shape)), key=lambda a: -shape[a])
  for a in axes:
    if shape[a] % n == 0:
      spec = [None] * len(shape)
      spec[a] = DATA
      return P(*spec)
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh, fsdp: bool,
                    fsdp_min_size: int = 1024) -> Any:
  """Shardings for a pytree of ``ShapeDtypeStruct`` (params, optimizer state, ...).

  The rule depends on the shape only, so Adam's moments land where their parameter does.
  """
  n = mesh.shape[DATA]

  def one(leaf):
    spec = _fsdp_spec(tuple(leaf.shape), n, fsdp_min_size) if fsdp else P()
    return NamedSharding(mesh, spec)

  return jax.tree.map(one, abstract_state)


def global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, Any]:
  """This process's slice of the batch -> global arrays split over ``'data'``."""
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)  # one call for the whole dict: less overhead
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
