"""Device mesh and shardings: data parallel (batch split over ``'data'``, parameters
replicated) or FSDP-style (each large parameter and its optimizer moments split along one
axis over the same ``'data'`` devices; XLA inserts the all-gathers, Rajbhandari et al.
2020 / ZeRO-3).

The same jitted step runs unchanged on 1 CPU, several GPUs or a TPU slice: only the mesh
changes. Multi-host runs join the job first (``seqjax.training.multihost``); each process
then feeds the rows of the global batch that its devices hold (``process_rows``), so the
global batch is the same whatever the number of processes.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = 'data'


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


def process_rows(sharding: NamedSharding, batch_size: int) -> tuple[int, int]:
  """``(index, count)``: this process's devices hold rows ``[index * b, (index + 1) * b)``
  of a global batch of ``batch_size`` rows split by ``sharding``, ``b = batch_size /
  count``. ``ValueError`` if they hold none, or rows that are not one such block."""
  if jax.process_count() == 1:
    return 0, 1
  spans = set()
  for index in sharding.addressable_devices_indices_map((batch_size,)).values():
    rows = index[0]
    spans.add((rows.start or 0, batch_size if rows.stop is None else rows.stop))
  if not spans:
    raise ValueError(f'process {jax.process_index()} holds no device of the mesh; use '
                     'all devices (num_devices=0) in a multi-process run')
  lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
  size = hi - lo
  if sum(b - a for a, b in spans) != size or batch_size % size or lo % size:
    raise ValueError(f'process {jax.process_index()} holds rows {sorted(spans)} of the '
                     f'batch, not one contiguous block; the mesh must list each '
                     "process's devices together")
  return lo // size, batch_size // size


def global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, Any]:
  """This process's rows of the batch (``process_rows``) -> global arrays split over
  ``'data'``."""
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)  # one call for the whole dict: less overhead
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
