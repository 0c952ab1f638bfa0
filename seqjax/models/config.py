"""``ModelConfig``: every model seqjax builds, described by one flat, hashable record.

The fields are flat on purpose: an experiment config overrides any of them from the command
line (``--config.model_cfg.d_model=256``), and a saved config can be compared field by field
with the one a resumed run asks for. Fields a family does not use are ignored by it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

# Sequence-mixer families, in the order the comparison reports them.
MODEL_NAMES = ('lstm', 'bilstm', 'gru', 'transformer', 's4d', 'mamba', 'lstm_attention')
# What sits on top of the backbone.
HEADS = ('classifier', 'lm', 'seq2seq')
# Families that can run token by token (and so can be language models).
CAUSAL_MODELS = ('lstm', 'gru', 'transformer', 's4d', 'mamba')
POSITIONS = ('none', 'sinusoidal', 'learned', 'rope')
POOLINGS = ('mean', 'last', 'first', 'final_states')
BACKBONES = ('residual', 'stacked')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of one model. Shapes in docstrings use ``d`` for ``d_model``.

  Attributes:
    model: mixer family, one of ``MODEL_NAMES``.
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
    positions: how a Transformer learns order; ignored by order-aware families.
    causal: attention mask for a Transformer classifier (an LM is always causal).
    attention_impl: ``exact`` (O(T²) weights) or ``chunked`` (online softmax over
      ``attention_chunk``-sized blocks, O(T) memory, same numbers; no attention-weight
      dropout and no returned weights).
    scan_backend: ``linear_scan`` backend of S4D's ``scan`` mode and of Mamba's
      ``materialized`` scan.
    s4d_mode: how S4D runs a whole sequence: ``convolution`` (FFT with the SSM kernel,
      default) or ``scan`` (the recurrence); same function.
    mamba_scan_impl: ``fused`` (default; discretises inside a chunked scan with a custom
      VJP, never materialising ``[batch, time, 2d, d_state]``) or ``materialized`` (the
      direct form through ``scan_backend``, kept as the reference).
    pooling: how a classifier turns ``[batch, time, d]`` into ``[batch, d]``.
    num_segments: 2 makes the classifier a two-tower (dual) encoder for document pairs, as
      in LRA's Retrieval task (Tay et al. 2021, sec. 3.2.3): inputs ``[batch, 2 * L]`` hold
      two right-padded documents of ``L`` tokens, each encoded alone by the shared
      backbone; the head sees ``[u, v, u * v, u - v]``. Fixed by the task.
    max_len: longest sequence (position table, KV-cache size, decode length bound).
  """

  model: str = 'transformer'
  head: str = 'lm'
  vocab_size: int = 256
  input_features: int = 0
  num_classes: int = 2
  tgt_vocab_size: int = 0
  backbone: str = 'residual'
  d_model: int = 64
  embed_dim: int = 0
  num_layers: int = 2
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  norm: str = 'layernorm'
  max_len: int = 512
  tie_embeddings: bool = False
  # Transformer.
  num_heads: int = 4
  positions: str = 'sinusoidal'
  causal: bool = True
  attention_impl: str = 'exact'
  attention_chunk: int = 512
  # Recurrent.
  hoist_input_projection: bool = False
  # State-space models.
  scan_backend: str = 'auto'
  s4d_state_size: int = 64
  s4d_init: str = 'lin'
  s4d_mode: str = 'convolution'
  mamba_d_state: int = 16
  mamba_d_conv: int = 4
  mamba_expand: int = 2
  mamba_scan_impl: str = 'fused'
  # Classifier.
  pooling: str = 'mean'
  num_segments: int = 1
  # Encoder-decoder (Bahdanau et al. 2015).
  bidirectional_encoder: bool = True
  attn_dim: int = 0
  dtype: str = 'float32'

  def __post_init__(self):
    _validate(self)

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
    """Builds a config from a dict / ``ml_collections.ConfigDict``; unknown keys fail."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
      raise ValueError(f'unknown model config field(s) {unknown}; valid fields: '
                       f'{sorted(known)}')
    return cls(**dict(mapping))


def _choice(name: str, value: Any, choices: tuple[str, ...] | dict) -> None:
  if value not in choices:
    raise ValueError(f'{name}={value!r} is not valid; choose one of {list(choices)}')


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
  if value < 0 or (value == 0 and not allow_zero):
    raise ValueError(f'{name}={value} must be {"non-negative" if allow_zero else "positive"}')


def _validate(cfg: ModelConfig) -> None:
  """Fails at construction, with one line naming the field, on any impossible setting."""
  _choice('model', cfg.model, MODEL_NAMES)
  _choice('head', cfg.head, HEADS)
  _choice('backbone', cfg.backbone, BACKBONES)
  _choice('positions', cfg.positions, POSITIONS)
  _choice('pooling', cfg.pooling, POOLINGS)
  _choice('dtype', cfg.dtype, DTYPES)
  _choice('norm', cfg.norm, ('layernorm', 'rmsnorm'))
  _choice('s4d_init', cfg.s4d_init, ('lin', 'inv'))
  _choice('attention_impl', cfg.attention_impl, ('exact', 'chunked'))
  _choice('s4d_mode', cfg.s4d_mode, ('convolution', 'scan'))
  _choice('mamba_scan_impl', cfg.mamba_scan_impl, ('fused', 'materialized'))
  for name in ('d_model', 'num_layers', 'max_len', 'num_heads', 's4d_state_size',
               'mamba_d_state', 'mamba_d_conv', 'mamba_expand', 'attention_chunk'):
    _positive(name, getattr(cfg, name))
  for name in ('vocab_size', 'input_features', 'embed_dim', 'mlp_ratio', 'attn_dim',
               'tgt_vocab_size'):
    _positive(name, getattr(cfg, name), allow_zero=True)
  if not 0.0 <= cfg.dropout < 1.0:
    raise ValueError(f'dropout={cfg.dropout} must be in [0, 1)')
  if (cfg.vocab_size == 0) == (cfg.input_features == 0):
    raise ValueError('set exactly one of vocab_size (token inputs) and input_features '
                     f'(continuous inputs); got vocab_size={cfg.vocab_size}, '
                     f'input_features={cfg.input_features}')
  if cfg.model == 'lstm_attention' and cfg.head != 'seq2seq':
    raise ValueError("model='lstm_attention' is the encoder-decoder; use head='seq2seq'")
  if cfg.head == 'seq2seq':
    if cfg.model != 'lstm_attention':
      raise ValueError(f"head='seq2seq' is built by model='lstm_attention', not "
                       f'{cfg.model!r}')
    if cfg.vocab_size == 0 or cfg.tgt_vocab_size == 0:
      raise ValueError('head=seq2seq needs vocab_size (source) and tgt_vocab_size > 0')
  if cfg.head == 'lm':
    if cfg.model not in CAUSAL_MODELS:
      raise ValueError(f"model={cfg.model!r} is not causal and cannot be a language model; "
                       f'choose one of {list(CAUSAL_MODELS)}')
    if cfg.vocab_size == 0:
      raise ValueError('head=lm needs token inputs (vocab_size > 0)')
  if cfg.head == 'classifier' and cfg.num_classes < 1:
    raise ValueError(f'num_classes={cfg.num_classes} must be >= 1 (1 = regression)')
  if cfg.num_segments not in (1, 2):
    raise ValueError(f'num_segments={cfg.num_segments} must be 1 or 2 (a document pair)')
  if cfg.num_segments == 2 and (cfg.head != 'classifier' or not cfg.vocab_size):
    raise ValueError('num_segments=2 (a document pair) needs head=classifier and token '
                     'inputs (vocab_size > 0)')
  if cfg.backbone == 'stacked' and cfg.model not in ('lstm', 'bilstm', 'gru'):
    raise ValueError(f"backbone='stacked' is a plain recurrent stack; model={cfg.model!r} "
                     "needs backbone='residual'")
  if cfg.model == 'transformer' and cfg.d_model % cfg.num_heads:
    raise ValueError(f'd_model={cfg.d_model} must be divisible by num_heads={cfg.num_heads}')
  if cfg.model == 'bilstm' and cfg.backbone == 'residual' and cfg.d_model % 2:
    raise ValueError(f'd_model={cfg.d_model} must be even for a residual bilstm '
                     '(each direction gets d_model/2)')
  if cfg.model == 'transformer' and cfg.positions == 'rope' and (cfg.d_model //
                                                                  cfg.num_heads) % 2:
    raise ValueError('positions=rope needs an even head width d_model/num_heads')
  if cfg.model == 's4d' and cfg.s4d_state_size % 2:
    raise ValueError(f's4d_state_size={cfg.s4d_state_size} must be even (conjugate pairs)')
