"""Shared machinery for the synthetic diagnostic tasks: one TFDS builder per task.

Each task is a ``tfds.core.GeneratorBasedBuilder`` written as ``array_record`` files and
read back with ``builder.as_data_source`` (random access, no TensorFlow needed). The task's
options (lengths, vocabulary, split sizes, seed) live in a ``SyntheticConfig`` whose name
spells them out, so every distinct setting gets its own directory
``<data_dir>/seqjax_<task>/<config name>/<version>/`` and is generated once, on the first
``Task.open``; later calls reuse the files.

A task module subclasses ``SyntheticBuilder`` and fills in:

* ``TASK`` (registry name) and ``DEFAULTS`` (``{option: default}``);
* ``validate(opts)`` — raise ``ValueError`` on bad values (one line, naming the option);
* ``make_spec(opts)`` — the ``TaskSpec``; ``vocab(opts)`` — id -> symbol names (metadata);
* ``features()`` — the TFDS feature dict; ``generate(rng, n)`` — ``n`` examples as a dict of
  stacked arrays (or lists of arrays for ragged fields), vectorised NumPy where possible;
  optionally ``reader(dtypes)`` — stored example -> spec example (e.g. uint8 -> float).

Token ids 0-3 are the reserved PAD/UNK/BOS/EOS of ``seqjax.data.spec``; every task numbers
its own symbols from 4.
"""

from __future__ import annotations

import abc
import dataclasses
import fcntl
import os
import shutil
import threading
import zipfile
import zlib
from typing import Any, Callable

from absl import logging
import grain
import numpy as np
import tensorflow_datasets as tfds

from seqjax.data import columns
from seqjax.data.real_common import default_data_dir, resolve_options
from seqjax.data.spec import Task
from seqjax.data.spec import TaskSpec

RESERVED = ('<pad>', '<unk>', '<bos>', '<eos>')
FIRST_FREE_ID = len(RESERVED)  # 4: first id a task may use for its own symbols
SPLITS = ('train', 'validation', 'test')
SPLIT_OPTIONS = {'train': 'num_train', 'validation': 'num_validation', 'test': 'num_test'}
SPLIT_DEFAULTS = {'num_train': 10000, 'num_validation': 1000, 'num_test': 1000}
TOKEN_METRICS = ('token_accuracy', 'sequence_accuracy')
GENERATION_CHUNK = 1024  # examples generated per vectorised call


def check_int(task: str, opts: dict[str, Any], name: str, minimum: int,
              maximum: int | None = None) -> int:
  """``opts[name]`` as an int in ``[minimum, maximum]``, else a one-line ValueError."""
  value = opts[name]
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f'task {task!r}: option {name}={value!r} must be an integer')
  if value < minimum or (maximum is not None and value > maximum):
    bound = f'>= {minimum}' if maximum is None else f'in [{minimum}, {maximum}]'
    raise ValueError(f'task {task!r}: option {name}={value!r} must be {bound}')
  opts[name] = int(value)
  return int(value)


def check_float(task: str, opts: dict[str, Any], name: str, low: float,
                high: float) -> float:
  """``opts[name]`` as a float in ``[low, high]``, else a one-line ValueError."""
  value = opts[name]
  if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
    raise ValueError(f'task {task!r}: option {name}={value!r} must be a number')
  if not low <= value <= high:
    raise ValueError(f'task {task!r}: option {name}={value!r} must be in [{low}, {high}]')
  opts[name] = float(value)
  return float(value)


def check_choice(task: str, opts: dict[str, Any], name: str,
                 choices: tuple[str, ...]) -> str:
  value = opts[name]
  if value not in choices:
    raise ValueError(f'task {task!r}: option {name}={value!r} must be one of {list(choices)}')
  return value


def _format_value(value: Any) -> str:
  # Config names become directory names: keep to [A-Za-z0-9_-].
  if isinstance(value, float):
    value = repr(value).replace('.', 'p').replace('-', 'm')
  return ''.join(c if c.isalnum() else '-' for c in str(value))


def config_name(opts: dict[str, Any], seed: int) -> str:
  """E.g. ``delay10_num_symbols8_..._seed0``: every option spelled out, sorted."""
  parts = [f'{key}{_format_value(opts[key])}' for key in sorted(opts)]
  return '_'.join(parts + [f'seed{seed}'])


# ----------------------------------------------------------------------------- builder


@dataclasses.dataclass(eq=False, repr=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  """A builder config carrying the resolved task options and the generation seed."""

  options: dict[str, Any] = dataclasses.field(default_factory=dict)
  seed: int = 0

  def __repr__(self) -> str:
    # TFDS logs the config of every builder made outside BUILDER_CONFIGS: keep it short.
    return f'SyntheticConfig({self.name!r})'


class SyntheticBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
  """Base of every synthetic task builder (abstract: never registered by itself)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  TASK: str = ''
  DEFAULTS: dict[str, Any] = {}
  # TFDS only reads ``code_path`` to find a download-checksums file beside the builder
  # module; resolving it needs the ``importlib_resources`` backport, which is not
  # installed. Nothing is downloaded here, so there are no checksums to find.
  code_path = None

  # --- what a task module provides -------------------------------------------------

  @classmethod
  def validate(cls, opts: dict[str, Any]) -> None:
    """Raise ValueError on a bad option value; may normalise ``opts`` in place."""

  @classmethod
  @abc.abstractmethod
  def make_spec(cls, opts: dict[str, Any]) -> TaskSpec:
    """The task's ``TaskSpec`` for resolved options ``opts``."""

  @classmethod
  def vocab(cls, opts: dict[str, Any]) -> dict[str, Any]:
    """JSON metadata naming the symbols (e.g. ``{'vocab': ['<pad>', ...]}``)."""
    del opts
    return {}

  @classmethod
  def reader(cls, dtypes: dict[str, np.dtype]) -> Callable[[dict[str, Any]], Any]:
    """Stored example -> the spec's example; by default each field as an array of its
    feature dtype. A task storing a compact form (uint8 pixels) converts it here."""
    return _AsArrays(dtypes)

  def features(self) -> tfds.features.FeaturesDict:
    """The TFDS features of one example (matches the spec's example format); the
    token kind's by default, overridden by regression / classification / seq2seq tasks."""
    return token_features()

  @abc.abstractmethod
  def generate(self, rng: np.random.Generator, n: int) -> dict[str, Any]:
    """``n`` examples: ``{field: array [n, ...] or list of n arrays}``."""

  # --- TFDS plumbing -----------------------------------------------------------------

  @property
  def opts(self) -> dict[str, Any]:
    return self.builder_config.options

  def _info(self) -> tfds.core.DatasetInfo:
    # disable_shuffling keeps example i at index i, so the files read back in the order
    # they were generated (and the order does not depend on TFDS's key hashing).
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__,
                                 features=self.features(), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str):
    # One independent stream per (task, seed, split): the salt keeps different tasks with
    # the same seed uncorrelated and the split index keeps the splits apart. Examples are
    # drawn in fixed-size chunks so memory stays bounded for long sequences (changing
    # GENERATION_CHUNK changes the data: bump VERSION with it).
    salt = zlib.crc32(self.TASK.encode())
    seq = np.random.SeedSequence([self.builder_config.seed, SPLITS.index(split), salt])
    rng = np.random.default_rng(seq)
    total = self.opts[SPLIT_OPTIONS[split]]
    for start in range(0, total, GENERATION_CHUNK):
      n = min(GENERATION_CHUNK, total - start)
      columns = self.generate(rng, n)
      for i in range(n):
        yield start + i, {key: column[i] for key, column in columns.items()}


def _prepare(builder: SyntheticBuilder) -> None:
  """Generates the files under an exclusive lock on ``<config dir>.lock``.

  TFDS writes into ``incomplete.*`` and renames it when done; a process killed meanwhile
  leaves that directory behind. Under the lock no other process can be writing one, so
  any ``incomplete.*`` found is such a leftover and is removed. Other processes preparing
  the same data wait for the lock and then find the files ready.
  """
  config_dir = os.path.dirname(os.fspath(builder.data_dir))  # .../<config>/<version>
  os.makedirs(config_dir, exist_ok=True)
  with open(config_dir + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    for name in os.listdir(config_dir):
      if name.startswith('incomplete.'):
        logging.warning('removing %s, left by an interrupted dataset preparation',
                        os.path.join(config_dir, name))
        shutil.rmtree(os.path.join(config_dir, name), ignore_errors=True)
    # No-op when another process finished meanwhile. Statistics would need TensorFlow.
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))


class _AsArrays:
  """Example -> dict of arrays in the feature dtypes.

  TFDS returns scalar features as Python numbers, which would widen to int64/float64.
  """

  def __init__(self, dtypes: dict[str, np.dtype]):
    self.dtypes = dtypes

  def __call__(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
    return {key: np.asarray(value, self.dtypes[key]) for key, value in example.items()}


# Splits up to this size are decoded once and kept in memory (see ``_Opener.__call__``).
IN_MEMORY_BYTES = 256 * 2**20


def _decoded_path(builder: SyntheticBuilder, split: str) -> str:
  return os.path.join(os.fspath(builder.data_dir), f'decoded-{split}.npz')


def _read_decoded(builder: SyntheticBuilder, split: str) -> list[dict[str, Any]] | None:
  """The stored examples of ``split`` from its decoded copy, or None when there is none
  (or it cannot be read: the files are then decoded again)."""
  try:
    with np.load(_decoded_path(builder, split)) as columns:
      columns = {key: columns[key] for key in columns.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile):
    return None
  n = len(next(iter(columns.values()))) if columns else 0
  return [{key: column[i] for key, column in columns.items()} for i in range(n)]


def _write_decoded(builder: SyntheticBuilder, split: str,
                   examples: list[dict[str, Any]]) -> None:
  """Saves ``examples`` (stored form) as one array per field, when every field has one
  shape; written to a temporary file and renamed, so a reader never sees half of it."""
  columns = {}
  for key in examples[0]:
    values = [np.asarray(example[key]) for example in examples]
    if len({value.shape for value in values}) != 1:
      return  # ragged (variable-length) fields are decoded from the files each time
    columns[key] = np.stack(values)
  path = _decoded_path(builder, split)
  # Unique per process and thread: the comparison opens tasks from several threads.
  temporary = f'{path}.{os.getpid()}.{threading.get_ident()}.tmp.npz'
  try:
    np.savez(temporary, **columns)
    os.replace(temporary, path)
  except OSError as err:  # a read-only data_dir: only the next open is slower
    logging.warning('could not save the decoded %s split to %s: %s', split, path, err)
    if os.path.exists(temporary):
      os.remove(temporary)


class _Opener:
  """``Task.open``: prepares the builder on first use, then opens a split (picklable).

  A split whose decoded arrays fit in ``IN_MEMORY_BYTES`` is read from its files once and
  served from memory afterwards, by every later ``open`` of it on this task: decoding a
  stored example costs ~0.2 ms, which at a small model's batch of 32 made reading a batch
  slower than the train step itself (measured on the 2-core CPU: 10.7 ms per batch from
  the files, 1.4 ms from memory, against a 5 ms LSTM step). The decoded examples are also
  saved beside the files (``decoded-<split>.npz``), so that other processes and later runs
  load them at once instead of decoding again (an 8,000-example split: 2.7 s to decode).
  The examples and their order are the same either way.
  """

  def __init__(self, builder_cls: type[SyntheticBuilder], config: SyntheticConfig,
               data_dir: str):
    self.builder_cls, self.config, self.data_dir = builder_cls, config, data_dir
    self._builder = None
    self._in_memory: dict[str, grain.MapDataset] = {}

  def _new_builder(self) -> SyntheticBuilder:
    return self.builder_cls(data_dir=self.data_dir, config=self.config,
                            file_format='array_record')

  def builder(self) -> SyntheticBuilder:
    if self._builder is None:
      builder = self._new_builder()
      if not builder.is_prepared():
        _prepare(builder)
        # A builder made before the files existed keeps an empty split list when another
        # process prepared them while this one waited for the lock (TFDS then only says
        # "reusing"): read the prepared dataset's info afresh.
        builder = self._new_builder()
      self._builder = builder
    return self._builder

  def __call__(self, split: str) -> grain.MapDataset:
    if split not in SPLITS:
      raise ValueError(f'task {self.builder_cls.TASK!r} has no split {split!r}; '
                       f'available: {list(SPLITS)}')
    if split in self._in_memory:
      return self._in_memory[split]
    builder = self.builder()
    dtypes = {key: feature.np_dtype for key, feature in builder.info.features.items()}
    reader = self.builder_cls.reader(dtypes)
    examples = _read_decoded(builder, split)
    if examples is None:
      files = grain.MapDataset.source(builder.as_data_source(split))
      if not len(files):
        return files
      # Sized as served (after the reader: Pathfinder's uint8 pixels become float32).
      example_bytes = sum(np.asarray(v).nbytes for v in reader(files[0]).values())
      if example_bytes * len(files) > IN_MEMORY_BYTES:
        return files.map(reader)
      examples = [files[i] for i in range(len(files))]
      _write_decoded(builder, split, examples)
    # Held as columns when every example has the same shapes (seqjax.data.columns).
    self._in_memory[split] = columns.in_memory([reader(e) for e in examples])
    return self._in_memory[split]

  def __getstate__(self):  # a worker process reopens the files itself
    return {**self.__dict__, '_builder': None, '_in_memory': {}}


def make_factory(builder_cls: type[SyntheticBuilder]) -> Callable[..., Task]:
  """``factory(data_dir=None, seed=0, **options) -> Task`` for ``builder_cls``."""
  task = builder_cls.TASK
  defaults = {**SPLIT_DEFAULTS, **builder_cls.DEFAULTS}

  def factory(data_dir: str | os.PathLike | None = None, seed: int = 0,
              **options: Any) -> Task:
    opts = resolve_options(task, defaults, options)
    for name in SPLIT_DEFAULTS:
      check_int(task, opts, name, 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f'task {task!r}: seed={seed!r} must be an integer >= 0')
    builder_cls.validate(opts)
    spec = builder_cls.make_spec(opts)
    config = SyntheticConfig(name=config_name(opts, int(seed)), options=opts,
                             seed=int(seed), description=f'{task} {opts} seed={seed}')
    # tfds_name: ``tfds.data_source(tfds_name, data_dir=...)`` reopens the prepared files.
    metadata = {'task': task, 'seed': int(seed), 'options': dict(opts),
                'tfds_name': f'{builder_cls.name}/{config.name}', **builder_cls.vocab(opts)}
    return Task(spec=spec, open=_Opener(builder_cls, config, default_data_dir(data_dir)),
                metadata=metadata)

  factory.__name__ = task
  factory.defaults = defaults  # every option the task accepts (registry.task_defaults)
  factory.__doc__ = (f'The {task!r} task. Options (default): '
                     + ', '.join(f'{k}={v!r}' for k, v in sorted(defaults.items())) + '.\n\n'
                     + (builder_cls.__doc__ or ''))
  return factory


def token_spec(task: str, vocab_size: int, max_len: int) -> TaskSpec:
  """The ``TaskSpec`` shared by the token-kind diagnostics (scored positions only)."""
  return TaskSpec(name=task, kind='token', vocab_size=vocab_size, max_len=max_len,
                  metrics=TOKEN_METRICS, eval_metric='token_accuracy',
                  eval_metric_larger_is_better=True, order_sensitive=True)


def token_features() -> tfds.features.FeaturesDict:
  """``inputs``/``targets`` int32 ``[time]`` and ``weights`` float32 ``[time]``."""
  return tfds.features.FeaturesDict({
      'inputs': tfds.features.Tensor(shape=(None,), dtype=np.int32),
      'targets': tfds.features.Tensor(shape=(None,), dtype=np.int32),
      'weights': tfds.features.Tensor(shape=(None,), dtype=np.float32),
  })


def random_subsets(rng: np.random.Generator, n: int, population: int,
                   size: int) -> np.ndarray:
  """``[n, size]`` int: per row, ``size`` distinct draws from ``range(population)``.

  In random order (argsort of uniform noise = a random permutation per row, vectorised).
  """
  return np.argsort(rng.random((n, population)), axis=1)[:, :size]
