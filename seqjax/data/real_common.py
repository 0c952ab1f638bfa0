"""Helpers shared by the real-dataset and user-file tasks.

* ``resolve_options`` — defaults overridden by a factory's options (unknown -> ValueError);
* ``carve`` — a seeded split of ``n`` indices into disjoint parts (e.g. a validation split
  carved from a training split whose test labels are hidden);
* ``Subset`` / ``TokenWindows`` — random-access sources for ``grain.MapDataset.source``;
* ``as_text`` — TFDS text features arrive as ``str`` or UTF-8 ``bytes``.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from seqjax.data.errors import DataError


def default_data_dir(data_dir: str | os.PathLike | None = None) -> str:
  """``data_dir`` if given, else ``$SEQJAX_DATA_DIR``, else ``~/.cache/seqjax/...``.

  Shared by every task family (real, synthetic), so one ``--data_dir`` serves all.
  """
  if data_dir:
    return os.fspath(data_dir)
  env = os.environ.get('SEQJAX_DATA_DIR')
  if env:
    return env
  return os.path.expanduser('~/.cache/seqjax/tensorflow_datasets')


def resolve_options(task: str, defaults: dict[str, Any],
                    options: dict[str, Any]) -> dict[str, Any]:
  """Defaults overridden by ``options``; an unknown option is a one-line ValueError."""
  unknown = sorted(set(options) - set(defaults))
  if unknown:
    raise ValueError(f'task {task!r}: unknown option {unknown[0]!r}; valid options: '
                     f'{sorted(defaults)}')
  return {**defaults, **options}


def check_seed(task: str, seed: Any) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f'task {task!r}: seed={seed!r} must be an integer >= 0')
  return int(seed)


def check_int(task: str, opts: dict[str, Any], name: str, minimum: int) -> int:
  value = opts[name]
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f'task {task!r}: option {name}={value!r} must be an integer '
                     f'>= {minimum}')
  return int(value)


def check_fraction(task: str, opts: dict[str, Any], name: str) -> float:
  value = opts[name]
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
    raise ValueError(f'task {task!r}: option {name}={value!r} must be in [0, 1)')
  return float(value)


def carve(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
  """Seeded disjoint parts of ``range(n)``: one per fraction, then the rest (sorted).

  Each non-zero fraction gets at least one index when ``n`` allows it, so tiny datasets
  (and mocked ones) still have every split.
  """
  perm = np.random.default_rng(np.random.SeedSequence([seed, n])).permutation(n)
  parts, start = [], 0
  for frac in fractions:
    size = int(round(frac * n))
    if frac > 0 and size == 0 and n - start > 1:
      size = 1
    size = min(size, max(n - start - 1, 0))  # leave the last part non-empty
    parts.append(np.sort(perm[start:start + size]))
    start += size
  parts.append(np.sort(perm[start:]))
  return parts


class Subset:
  """``source[indices[i]]`` for ``i < len(indices)`` (random access, picklable)."""

  def __init__(self, source: Sequence[Any], indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> Any:
    return self.source[int(self.indices[i])]

  def __getitems__(self, positions) -> list[Any]:
    """Several examples in one read when the source can (array_record can, much faster
    than one at a time)."""
    keys = [int(self.indices[i]) for i in positions]
    if hasattr(self.source, '__getitems__'):
      return list(self.source.__getitems__(keys))
    return [self.source[k] for k in keys]


class TokenWindows:
  """Language-modelling windows of a token stream (kind ``'token'``).

  Window ``i`` covers ``ids[starts[i] : starts[i] + seq_len + 1]``: ``inputs`` are its first
  ``seq_len`` ids, ``targets`` the next id at each position, every position scored.
  """

  def __init__(self, ids: np.ndarray, seq_len: int, starts: np.ndarray | None = None):
    self.ids, self.seq_len = np.asarray(ids, np.int32), int(seq_len)
    if starts is None:
      starts = np.arange(0, max(len(self.ids) - 1, 0) // self.seq_len) * self.seq_len
    self.starts = np.asarray(starts, np.int64)

  def __len__(self) -> int:
    return len(self.starts)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    s = int(self.starts[i])
    chunk = self.ids[s:s + self.seq_len + 1]
    return {'inputs': chunk[:-1], 'targets': chunk[1:],
            'weights': np.ones((self.seq_len,), np.float32)}


def as_text(value: Any, where: str) -> str:
  """A TFDS text feature (``str`` / UTF-8 ``bytes`` / 0-d array of either) as ``str``."""
  if isinstance(value, np.ndarray):
    value = value.item()
  if isinstance(value, bytes):
    try:
      return value.decode('utf-8')
    except UnicodeDecodeError as e:
      raise DataError(f'{where}: text is not UTF-8 (bad byte at offset {e.start}); '
                      f're-prepare the dataset') from None
  return str(value)
