"""Checksums of array pytrees, computed on the device, and the non-finite check.

Orbax 0.12.8 has no checksum over array *data*: its zarr3 layout puts a CRC32C on each
shard's index only (``_build_zarr3_metadata`` in ``orbax/checkpoint/_src/serialization/
tensorstore_utils.py``), and chunks are zstd frames written without a content checksum.
A flipped byte in a chunk can therefore decode into different numbers without any error.
So every checkpoint carries ``fingerprint`` values of its arrays, and a restore recomputes
them on the restored arrays and compares.

The fingerprint of an array is two 32-bit sums over its words ``w_i`` (the raw bits,
widened to uint32; ``i`` the flat index)::

    s1 = sum_i (2i + 1) * w_i                      mod 2**32
    s2 = sum_i fmix32(w_i xor (i * 0x9E3779B9))    mod 2**32

Integer addition mod 2**32 is associative and commutative, so the result does not depend
on the summation order, i.e. on the sharding, the number of devices or of processes: a
checkpoint saved on 8 devices verifies when restored onto 1. ``s1`` catches any change of
a single word with certainty (odd multipliers are invertible mod 2**32); ``s2`` uses the
MurmurHash3 finaliser ``fmix32`` (Appleby 2008), a non-linear mix, so changes that cancel
in ``s1`` do not also cancel in ``s2`` except by chance (about 2**-32).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _words(x: jax.Array) -> jax.Array:
  """The raw bits of ``x`` as flat uint32 words."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).reshape(-1)


def _fmix32(h: jax.Array) -> jax.Array:
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _sums(x: jax.Array) -> jax.Array:
  w = _words(x)
  i = jnp.arange(w.shape[0], dtype=jnp.uint32)
  s1 = jnp.sum((2 * i + 1) * w, dtype=jnp.uint32)
  s2 = jnp.sum(_fmix32(w ^ (i * jnp.uint32(0x9E3779B9))), dtype=jnp.uint32)
  return jnp.stack([s1, s2])


@jax.jit
def _all_sums(tree):
  return jax.tree.map(_sums, tree)


def fingerprint(tree: Any) -> dict[str, str]:
  """``{leaf path: 16 hex digits}`` for every array leaf of ``tree``."""
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(_all_sums(tree)))[0]
  return {jax.tree_util.keystr(path): f'{int(v[0]):08x}{int(v[1]):08x}'
          for path, v in leaves}


def mismatches(saved: dict[str, str], tree: Any) -> list[str]:
  """Leaf paths whose fingerprint differs from ``saved`` (or that appear on one side)."""
  now = fingerprint(tree)
  return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))


@jax.jit
def _finite_flags(tree):
  return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree)


def non_finite(tree: Any) -> list[str]:
  """Leaf paths of floating-point arrays holding a NaN or Inf."""
  floats = jax.tree.map(lambda x: x if jnp.issubdtype(x.dtype, jnp.inexact) else None,
                        tree)
  flags = jax.device_get(_finite_flags(floats))
  return [jax.tree_util.keystr(path)
          for path, ok in jax.tree_util.tree_flatten_with_path(flags)[0]
          if not bool(np.asarray(ok))]
