"""``ModelConfig``: every model seqjax builds, described by one flat, hashable record.

The fields are flat on purpose: an experiment config overrides any of them from the command
line (``--config.model_cfg.d_model=256``), and a saved config can be compared field by field
with the one a resumed run asks for. Fields a family does not use are ignored by it.

This is the single source of truth for model choices:

* every value is validated at construction (type, choice list, range, and the chosen
  family's own constraints), with one line naming the field;
* the choice lists are imported from the code that implements them (the family table in
  ``seqjax.models.families``, the layers, the implementation switches of
  ``seqjax.ops.switch``);
* each field's :class:`Role` is marked once in its metadata, and every other module derives
  its field sets from the marks (:func:`field_names`);
* a family's own fields carry its name as prefix and are attributes of the same name on
  its layer (``s4d_state_size`` is ``S4D.s4d_state_size``); ``impl`` is the one
  implementation switch of every layer.

Configs saved before the implementation switch still load through :meth:`from_mapping`,
which reads their old fields (``scan_backend``, ``s4d_mode``, ``mamba_scan_impl``,
``attention_impl``, ``hoist_input_projection``) into ``impl`` with a one-line notice.
"""

from __future__ import annotations

import dataclasses
import enum
import warnings
from typing import Any, Mapping

import jax.numpy as jnp

from seqjax.layers.block import NORMS
from seqjax.layers.embeddings import POSITION_KINDS
from seqjax.layers.pooling import POOLINGS
from seqjax.layers.s4d import S4D_INITS
from seqjax.models.families import FAMILIES, MODEL_NAMES, all_switches
from seqjax.ops.switch import AUTO, check_impl, parse_impl

# What sits on top of the backbone (seqjax.models.registry builds each).
HEADS = ('classifier', 'lm', 'seq2seq')
# residual: pre-norm residual blocks around the family's mixer; stacked: a PyTorch-style
# multi-layer recurrent network (seqjax.models.backbone).
BACKBONES = ('residual', 'stacked')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# Families that can run token by token (and so can be language models).
CAUSAL_MODELS = tuple(name for name, f in FAMILIES.items() if f.streams and f.build)


class Role(enum.Enum):
  """What a ``ModelConfig`` field decides (its ``metadata['role']``)."""

  # The architecture: the parameter tree depends on it, so a resumed run must match.
  SHAPE = 'shape'
  # Decides parameters too, but is set by the experiment, never by ``model_cfg``: by the
  # task (``TaskSpec.model_fields``, same field names) or, for ``model``, by
  # ``config.model``.
  TASK = 'task'
  # Leaves the parameters alone: how the model computes (``impl``, ``dtype``) or
  # regularises (``dropout``). A run may resume with another value.
  IMPLEMENTATION = 'implementation'


def _field(default: Any, role: Role = Role.SHAPE, *, choices: tuple | None = None,
           minimum: float | None = None, family: str | None = None,
           heads: tuple[str, ...] | None = None) -> Any:
  """A field with its metadata: ``role``; ``choices`` or ``minimum`` (checked at
  construction); ``family`` owning it (then an attribute of that family's layer); the
  ``heads`` that read it (``None``: every head)."""
  return dataclasses.field(default=default, metadata={
      'role': role, 'choices': choices, 'minimum': minimum, 'family': family,
      'heads': heads})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of one model. Shapes in docstrings use ``d`` for ``d_model``.

  Attributes:
    model: the family, one of ``seqjax.models.families.MODEL_NAMES``.
    head: ``classifier`` (sequence -> ``num_classes`` logits, or 1 output for regression),
      ``lm`` (causal next-token logits) or ``seq2seq`` (``lstm_attention`` only).
    vocab_size: input vocabulary (id 0 is padding). ``0`` means continuous inputs of
      width ``input_features`` (pixels, the adding problem), projected by a Dense layer.
    backbone: ``residual`` = pre-norm residual blocks where only the mixer differs between
      families (the fair-comparison setting); ``stacked`` = a plain multi-layer LSTM/GRU as
      in PyTorch's ``nn.LSTM`` (reproduces the article's ``LSTMClassifier``).
    d_model: residual width (``residual``) or LSTM hidden size per direction (``stacked``).
    embed_dim: token-embedding width for ``stacked`` and ``seq2seq`` (default ``d_model``).
    mlp_ratio: MLP inner width as a multiple of ``d_model``; 0 removes the MLP.
    positions: how an order-blind mixer (attention) learns order; ignored by the others.
    causal: for a family that can be either (attention; S4D and Mamba, which read both
      ways with ``causal=False``), whether a classifier is causal (a language model
      always is).
    attention_chunk: block size of chunked attention (``impl='attention:chunked'``).
    attention_window: ``W > 0`` makes attention local: each position sees the last ``W``
      positions (sliding window), and the streaming KV cache is a ring buffer of ``W``
      slots (constant-memory decoding). 0 is global attention; griffin's local attention
      uses the paper's 1024 when 0.
    impl: the implementation switch, ``site:choice`` pairs such as
      ``'attention:chunked,scan:associative'``; unnamed sites (and ``'auto'``) pick by
      platform. Sites and choices: ``seqjax.ops.switch``, or ``python -m experiments.demo
      --list``. Every choice computes the same function.
    pooling: how a classifier turns ``[batch, time, d]`` into ``[batch, d]``.
    num_segments: 2 makes the classifier a two-tower (dual) encoder for document pairs, as
      in LRA's Retrieval task (Tay et al. 2021, sec. 3.2.3): inputs ``[batch, 2 * L]`` hold
      two right-padded documents of ``L`` tokens, each encoded alone by the shared
      backbone; the head sees ``[u, v, u * v, u - v]``. Fixed by the task.
    rglru_width: the RG-LRU's width in Hawk/Griffin recurrent blocks (0 = ``d_model``;
      the paper uses about ``4/3 d_model``).
    mamba2_d_state, mamba2_chunk: Mamba-2's state size ``N`` and the steps per chunk of its
      chunked SSD (the result does not depend on the chunk); its heads are ``num_heads``.
    mlstm_chunk: steps per chunk of the mLSTM's chunkwise form (``impl='mlstm:chunkwise'``,
      the default); the result does not depend on it.
    xlstm_mlstm_per_slstm: the xLSTM[a:1] ratio ``a`` of mLSTM to sLSTM blocks (7 as in
      the paper's language models; 0 = sLSTM blocks only).
    max_len: longest sequence (position table, KV-cache size, decode length bound).
  """

  model: str = _field('transformer', Role.TASK, choices=MODEL_NAMES)
  head: str = _field('lm', Role.TASK, choices=HEADS)
  vocab_size: int = _field(256, Role.TASK, minimum=0)
  input_features: int = _field(0, Role.TASK, minimum=0)
  num_classes: int = _field(2, Role.TASK, minimum=1, heads=('classifier',))
  tgt_vocab_size: int = _field(0, Role.TASK, minimum=0, heads=('seq2seq',))
  backbone: str = _field('residual', choices=BACKBONES)
  d_model: int = _field(64, minimum=1)
  embed_dim: int = _field(0, minimum=0)
  num_layers: int = _field(2, minimum=1)
  mlp_ratio: float = _field(4.0, minimum=0)
  dropout: float = _field(0.0, Role.IMPLEMENTATION, minimum=0)
  norm: str = _field('layernorm', choices=NORMS)
  max_len: int = _field(512, minimum=1)
  tie_embeddings: bool = _field(False)
  # Attention; also the heads of the RG-LRU gates (hawk, griffin), of xLSTM's cells and
  # of Mamba-2's SSD.
  num_heads: int = _field(4, minimum=1, family='transformer')
  positions: str = _field('sinusoidal', choices=POSITION_KINDS)
  causal: bool = _field(True)
  attention_chunk: int = _field(512, Role.IMPLEMENTATION, minimum=1, family='transformer')
  attention_window: int = _field(0, minimum=0, family='transformer')
  # State-space models.
  s4d_state_size: int = _field(64, minimum=1, family='s4d')
  s4d_init: str = _field('lin', choices=S4D_INITS, family='s4d')
  mamba_d_state: int = _field(16, minimum=1, family='mamba')
  mamba_d_conv: int = _field(4, minimum=1, family='mamba')
  mamba_expand: int = _field(2, minimum=1, family='mamba')
  mamba2_d_state: int = _field(64, minimum=1, family='mamba2')
  mamba2_chunk: int = _field(64, Role.IMPLEMENTATION, minimum=1, family='mamba2')
  # The RG-LRU (hawk, griffin): RNN width, 0 = d_model.
  rglru_width: int = _field(0, minimum=0, family='hawk')
  # xLSTM (mlstm, slstm, xlstm).
  mlstm_chunk: int = _field(64, Role.IMPLEMENTATION, minimum=1, family='mlstm')
  # Not owned by a layer (it picks each block's layer), so marked with no family.
  xlstm_mlstm_per_slstm: int = _field(7, minimum=0)
  # Classifier.
  pooling: str = _field('mean', choices=POOLINGS, heads=('classifier',))
  num_segments: int = _field(1, Role.TASK, minimum=1, heads=('classifier',))
  # Encoder-decoder (Bahdanau et al. 2015).
  bidirectional_encoder: bool = _field(True, heads=('seq2seq',))
  attn_dim: int = _field(0, minimum=0, heads=('seq2seq',))
  # How to compute.
  impl: str = _field(AUTO, Role.IMPLEMENTATION)
  dtype: str = _field('float32', Role.IMPLEMENTATION, choices=tuple(DTYPES))

  def __post_init__(self):
    _validate(self)

  @property
  def family(self):
    """The ``seqjax.models.families.Family`` entry of ``model``."""
    return FAMILIES[self.model]

  @property
  def compute_dtype(self) -> Any:
    return DTYPES[self.dtype]

  @property
  def token_dim(self) -> int:
    return self.embed_dim or self.d_model

  @property
  def mlp_hidden(self) -> int:
    return int(round(self.mlp_ratio * self.d_model))

  def replace(self, **changes: Any) -> 'ModelConfig':
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_mapping(cls, mapping: Mapping[str, Any]) -> 'ModelConfig':
    """Builds a config from a dict / ``ml_collections.ConfigDict`` (a saved config of an
    older version too, see :func:`upgrade`); unknown keys fail."""
    mapping = upgrade(mapping)
    known = set(field_names())
    unknown = sorted(set(mapping) - known)
    if unknown:
      raise ValueError(f'unknown model config field(s) {unknown}; valid fields: '
                       f'{sorted(known)}')
    return cls(**mapping)


def field_names(role: Role | None = None, *, head: str | None = None,
                family: str | None = None) -> tuple[str, ...]:
  """``ModelConfig`` field names, optionally only those with ``role``, read by ``head``
  (fields read by every head included) or owned by ``family``."""
  out = []
  for f in dataclasses.fields(ModelConfig):
    meta = f.metadata
    if role is not None and meta['role'] != role:
      continue
    if head is not None and meta['heads'] is not None and head not in meta['heads']:
      continue
    if family is not None and meta['family'] != family:
      continue
    out.append(f.name)
  return tuple(out)


# Fields of configs saved before ``impl`` (2026-12): the site each set, and its old
# default (which ``auto`` reproduces on every platform).
_OLD_SWITCHES = {'scan_backend': ('scan', AUTO), 's4d_mode': ('s4d', 'convolution'),
                 'mamba_scan_impl': ('selective_scan', 'fused'),
                 'attention_impl': ('attention', 'exact')}
# Had no effect since the fused recurrences became the default (they ignored it).
_OLD_NO_EFFECT = ('hoist_input_projection',)


def upgrade(mapping: Mapping[str, Any]) -> dict[str, Any]:
  """``mapping`` with the fields of older saved configs read into ``impl`` (a one-line
  ``FutureWarning`` says how); other mappings are returned unchanged (as a dict)."""
  fields = dict(mapping)
  old = [k for k in (*_OLD_SWITCHES, *_OLD_NO_EFFECT) if k in fields]
  if not old:
    return fields
  pairs = parse_impl(fields.get('impl', AUTO))
  for key in old:
    value = fields.pop(key)
    if key in _OLD_SWITCHES:
      site, old_default = _OLD_SWITCHES[key]
      if value != old_default:
        pairs.setdefault(site, value)
  fields['impl'] = ','.join(f'{s}:{c}' for s, c in pairs.items()) or AUTO
  warnings.warn(f'model config: {", ".join(old)} are no longer fields; read as '
                f'impl={fields["impl"]!r} (see seqjax.ops.switch)', FutureWarning,
                stacklevel=3)
  return fields


# A field's annotation -> the Python types its value may have (an int is a valid float; a
# bool, although an int subclass, is only a valid bool).
_TYPES = {'int': (int,), 'float': (int, float), 'bool': (bool,), 'str': (str,)}


def _check_field(name: str, value: Any, kind: str, meta: Mapping[str, Any]) -> None:
  if isinstance(value, bool) and kind != 'bool' or not isinstance(value, _TYPES[kind]):
    raise ValueError(f'{name}={value!r} must be of type {kind}')
  if meta['choices'] is not None and value not in meta['choices']:
    raise ValueError(f'{name}={value!r} is not valid; choose one of '
                     f'{list(meta["choices"])}')
  if meta['minimum'] is not None and value < meta['minimum']:
    raise ValueError(f'{name}={value} must be >= {meta["minimum"]}')


def _validate(cfg: ModelConfig) -> None:
  """Fails at construction, with one line naming the field, on any impossible setting."""
  for f in dataclasses.fields(cfg):
    _check_field(f.name, getattr(cfg, f.name), f.type, f.metadata)
  family = cfg.family
  if not cfg.dropout < 1.0:
    raise ValueError(f'dropout={cfg.dropout} must be in [0, 1)')
  if (cfg.vocab_size == 0) == (cfg.input_features == 0):
    raise ValueError('set exactly one of vocab_size (token inputs) and input_features '
                     f'(continuous inputs); got vocab_size={cfg.vocab_size}, '
                     f'input_features={cfg.input_features}')
  if cfg.head not in family.supported_heads:
    if cfg.head == 'lm' and family.build is not None:
      raise ValueError(f'model={cfg.model!r} is not causal and cannot be a language model; '
                       f'choose one of {list(CAUSAL_MODELS)}')
    builders = [n for n, f in FAMILIES.items() if cfg.head in f.supported_heads]
    raise ValueError(f'model={cfg.model!r} builds head={list(family.supported_heads)}, '
                     f'not {cfg.head!r} (built by model={builders})')
  if cfg.head == 'seq2seq' and (cfg.vocab_size == 0 or cfg.tgt_vocab_size == 0):
    raise ValueError('head=seq2seq needs vocab_size (source) and tgt_vocab_size > 0')
  if cfg.head == 'lm' and cfg.vocab_size == 0:
    raise ValueError('head=lm needs token inputs (vocab_size > 0)')
  if cfg.num_segments not in (1, 2):
    raise ValueError(f'num_segments={cfg.num_segments} must be 1 or 2 (a document pair)')
  if cfg.num_segments == 2 and (cfg.head != 'classifier' or not cfg.vocab_size):
    raise ValueError('num_segments=2 (a document pair) needs head=classifier and token '
                     'inputs (vocab_size > 0)')
  if cfg.backbone == 'stacked' and family.stacked is None:
    raise ValueError(f"backbone='stacked' is a plain recurrent stack; model={cfg.model!r} "
                     "needs backbone='residual'")
  check_impl(cfg.impl, all_switches())
  if family.check is not None:
    family.check(cfg)
  if cfg.backbone == 'residual' and family.build is not None:
    # Each layer checks its own attributes, which carry the fields' names; building the
    # unbound modules is cheap (no parameters, nothing traced).
    for layer in range(cfg.num_layers):
      family.build(cfg, family.runs_causal(cfg), layer).check()
