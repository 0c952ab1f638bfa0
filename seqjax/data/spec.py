"""What a task promises the trainer: ``TaskSpec`` and the example format.

Every task (synthetic diagnostic, real TFDS dataset, user file) yields examples as dicts of
NumPy arrays, one of three *kinds*:

``classification`` / ``regression`` — one label per sequence::

    {'inputs': int32 [time] token ids (0 = padding)  or  float32 [time, features],
     'label':  int32 []  (classification)            or  float32 []  (regression)}

``token`` — a target at some or every position (language modelling, copying, selective
copying, associative recall, induction heads)::

    {'inputs':  int32 [time],
     'targets': int32 [time]    the id the model must output at each position,
     'weights': float32 [time]  1 where the position is scored, 0 elsewhere}

  Language modelling is the token kind with ``targets`` = ``inputs`` shifted by one.

``seq2seq`` — a source and a target sequence (toy translation)::

    {'inputs': int32 [src_time], 'targets': int32 [tgt_time]}   (targets end with EOS)

Pipelines pad and batch these to ``[batch, time]``, add ``'mask'`` ``[batch, time]`` bool
(True on real input tokens) and, for seq2seq, ``'decoder_inputs'`` (BOS + targets[:-1]) and
``'weights'`` over target positions.

A :class:`Task` couples a spec with a way to open each split (``seqjax.data.registry``
finds tasks by name).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import grain

from seqjax.models.config import Role, field_names

KINDS = ('classification', 'regression', 'token', 'seq2seq')
# The model head each kind trains (see seqjax.models.config.HEADS).
HEAD_FOR_KIND = {'classification': 'classifier', 'regression': 'classifier',
                 'token': 'lm', 'seq2seq': 'seq2seq'}

# Reserved token ids shared by every tokenizer and synthetic task.
PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Everything the trainer and model builder need to know about a task.

  Attributes:
    name: registry name, e.g. ``'selective_copying'`` or ``'glue/sst2'``.
    kind: one of ``KINDS``.
    vocab_size: input vocabulary including reserved ids; 0 for continuous inputs.
    input_features: width of continuous inputs (0 for token inputs).
    num_classes: classes for ``classification``; 1 for ``regression`` (set whatever is
      given); 0 otherwise.
    tgt_vocab_size: target vocabulary for ``seq2seq`` (0 otherwise).
    max_len: longest input sequence the task produces (after tokenisation/truncation).
    max_target_len: longest target for ``seq2seq``.
    metrics: names of the task's own metrics, e.g. ``('accuracy', 'f1', 'mcc')``,
      ``('mse', 'within_0.04')``, ``('token_accuracy', 'sequence_accuracy')``.
    eval_metric: the metric that picks the best checkpoint, and whether larger is better.
    splits: available split names, e.g. ``('train', 'validation', 'test')``.
    order_sensitive: whether shuffling the input tokens changes the answer.
    num_segments: 2 when each input is a pair of documents ``[2 * L]`` (LRA Retrieval)
      that the model encodes separately (``ModelConfig.num_segments``).
  """

  name: str
  kind: str
  vocab_size: int
  num_classes: int = 0
  input_features: int = 0
  tgt_vocab_size: int = 0
  max_len: int = 0
  max_target_len: int = 0
  metrics: tuple[str, ...] = ()
  eval_metric: str = 'loss'
  eval_metric_larger_is_better: bool = False
  splits: tuple[str, ...] = ('train', 'validation', 'test')
  order_sensitive: bool = True
  num_segments: int = 1

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'task {self.name!r}: kind={self.kind!r} is not one of {KINDS}')
    if self.kind == 'regression':
      object.__setattr__(self, 'num_classes', 1)  # one output, whatever was passed

  @property
  def head(self) -> str:
    return HEAD_FOR_KIND[self.kind]

  def model_fields(self) -> dict[str, Any]:
    """The ``ModelConfig`` fields this task fixes: every field marked ``Role.TASK`` that
    this spec has under the same name (head, vocabularies, classes) and its head reads."""
    return {name: getattr(self, name) for name in field_names(Role.TASK, head=self.head)
            if hasattr(self, name)}


@dataclasses.dataclass(frozen=True)
class Task:
  """A task: its spec, and ``open(split) -> grain.MapDataset`` of examples.

  ``metadata`` carries what must be saved beside a checkpoint to reuse the task later
  (e.g. a tokenizer's vocabulary, as a JSON-serialisable dict).
  """

  spec: TaskSpec
  open: Callable[[str], grain.MapDataset]
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  def dataset(self, split: str) -> grain.MapDataset:
    if split not in self.spec.splits:
      raise ValueError(f'task {self.spec.name!r} has no split {split!r}; available: '
                       f'{list(self.spec.splits)}')
    return self.open(split)
