"""The model families seqjax builds by name (``ModelConfig.model``): one entry each.

A family is a layer file under ``seqjax/layers/`` (a mixer with the interface of
``seqjax.layers.base``) plus one :class:`Family` entry in :data:`FAMILIES`. Everything else
reads this table instead of naming families: ``ModelConfig`` validates ``model``, ``head``,
``backbone`` and ``impl`` against it and runs the layer's own ``check()``, the residual
backbone builds each block's mixer with ``build``, ``match_d_model`` steps the width by
``width_step``, ``experiments.demo --list`` prints the implementation switches, and the
mixer contract test (``tests/layers/test_mixer_contract.py``) runs every family that has a
mixer, in float32 and bfloat16, with and without padding.

Builders pass each ``ModelConfig`` field to the layer attribute of the same name (the
family-specific fields carry their family's prefix on both sides, e.g. ``s4d_state_size``);
``tests/models/test_registry.py`` checks that every field marked with a family reaches that
family's layer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn

from seqjax.layers.attention import MultiHeadAttention
from seqjax.layers.bidirectional import Bidirectional
from seqjax.layers.gru import GRU
from seqjax.layers.lstm import LSTM
from seqjax.layers.mamba import Mamba
from seqjax.layers.mamba2 import Mamba2
from seqjax.layers.min_rnn import MinGRU, MinLSTM
from seqjax.layers.mlstm import MLSTM
from seqjax.layers.slstm import SLSTM
from seqjax.layers.recurrent import RecurrentStack
from seqjax.layers.rglru import Hawk
from seqjax.layers.s4d import S4D
from seqjax.ops.switch import Switch

# A seqjax.models.config.ModelConfig. Not imported: the config imports this table to
# validate against it, and nothing here needs more than the config's attributes.
ModelConfig = Any


@dataclasses.dataclass(frozen=True)
class Family:
  """How to build one family, and what it can be.

  Attributes:
    name: the ``ModelConfig.model`` value.
    layer: the layer class of the family's file; its ``switches`` class attribute lists
      the implementation switches the family uses (with ``also_uses``' layers' for a
      family that mixes block kinds).
    build: ``(cfg, causal, layer) -> d_model -> d_model`` mixer of residual block number
      ``layer`` (an unbound module), or ``None`` for a model that is not a stack of mixers
      (``lstm_attention``, the encoder-decoder). ``layer`` lets a family alternate block
      kinds (a Griffin-style pattern); each distinct kind should also be a family of its
      own, so that the mixer contract test (which builds layer 0) covers it.
    causal: the settings the mixer supports: ``(True,)`` streams, ``(False,)`` only runs
      in parallel (a bidirectional LSTM), ``(True, False)`` either (``ModelConfig.causal``
      picks for a classifier).
    stacked: ``cfg -> module`` building the PyTorch-style stack of ``backbone='stacked'``
      (``[batch, time, token_dim] -> [batch, time, output_size]``), or ``None``.
    heads: the heads it can carry; default: ``classifier``, plus ``lm`` if it streams.
    positions: whether the mixer is order-blind and needs ``ModelConfig.positions``.
    bounded_stream: streaming keeps a cache of ``max_len`` tokens, so a stream (prompt +
      generated tokens) may not outgrow ``max_len``.
    width_step: ``cfg -> int``, the step of ``d_model`` that keeps ``cfg`` valid (used by
      ``match_d_model``).
    check: extra cross-field checks of ``cfg`` for this family (the layer's own
      ``check()`` covers its attributes), raising one-line ``ValueError``.
  """

  name: str
  layer: type[nn.Module]
  build: Callable[[ModelConfig, bool, int], nn.Module] | None
  causal: tuple[bool, ...] = (True,)
  stacked: Callable[[ModelConfig], nn.Module] | None = None
  heads: tuple[str, ...] | None = None
  positions: bool = False
  bounded_stream: bool = False
  width_step: Callable[[ModelConfig], int] = lambda cfg: 8
  check: Callable[[ModelConfig], None] | None = None
  also_uses: tuple[type[nn.Module], ...] = ()

  @property
  def streams(self) -> bool:
    return True in self.causal

  @property
  def supported_heads(self) -> tuple[str, ...]:
    if self.heads is not None:
      return self.heads
    return ('classifier', 'lm') if self.streams else ('classifier',)

  @property
  def switches(self) -> tuple[Switch, ...]:
    return tuple(dict.fromkeys(s for layer in (self.layer, *self.also_uses)
                               for s in layer.switches))

  def runs_causal(self, cfg: ModelConfig) -> bool:
    """Whether ``cfg``'s backbone is causal: always for a language model, else the
    family's only setting, or ``cfg.causal`` when it supports both."""
    if cfg.head == 'lm':
      return True
    return cfg.causal if len(self.causal) > 1 else self.causal[0]


def _recurrent(cls: type[RecurrentStack], bidirectional: bool = False):
  """Builders of a recurrent family: one single-layer mixer per residual block (a
  bidirectional one gets ``d_model / 2`` per direction), and the PyTorch-style stack."""

  def build(cfg: ModelConfig, causal: bool, layer: int = 0) -> nn.Module:
    del causal, layer  # causality is fixed by the direction(s)
    hidden = cfg.d_model // 2 if bidirectional else cfg.d_model
    return cls(cfg.d_model, hidden, bidirectional=bidirectional, impl=cfg.impl,
               dtype=cfg.compute_dtype)

  def stacked(cfg: ModelConfig) -> nn.Module:
    return cls(cfg.token_dim, cfg.d_model, num_layers=cfg.num_layers,
               bidirectional=bidirectional, dropout=cfg.dropout, impl=cfg.impl,
               dtype=cfg.compute_dtype)

  return build, stacked


def _even_halves(cfg: ModelConfig) -> None:
  if cfg.backbone == 'residual' and cfg.d_model % 2:
    raise ValueError(f'd_model={cfg.d_model} must be even for a residual bilstm '
                     '(each direction gets d_model/2)')


def _attention(cfg: ModelConfig, causal: bool, layer: int = 0) -> nn.Module:
  del layer
  return MultiHeadAttention(cfg.d_model, cfg.num_heads, causal=causal,
                            rope=cfg.positions == 'rope', max_len=cfg.max_len,
                            dropout=cfg.dropout, attention_chunk=cfg.attention_chunk,
                            attention_window=cfg.attention_window, impl=cfg.impl,
                            dtype=cfg.compute_dtype)


def _both_ways(make: Callable[[ModelConfig], nn.Module]):
  """The builder of a causal family that a classifier may also read both ways
  (``causal=False``: two copies of the mixer, see ``seqjax.layers.bidirectional``)."""

  def build(cfg: ModelConfig, causal: bool, layer: int = 0) -> nn.Module:
    del layer
    return make(cfg) if causal else Bidirectional(make(cfg), make(cfg))

  return build


_s4d = _both_ways(lambda cfg: S4D(
    cfg.d_model, s4d_state_size=cfg.s4d_state_size, s4d_init=cfg.s4d_init, impl=cfg.impl,
    dtype=cfg.compute_dtype))
_mamba = _both_ways(lambda cfg: Mamba(
    cfg.d_model, mamba_d_state=cfg.mamba_d_state, mamba_d_conv=cfg.mamba_d_conv,
    mamba_expand=cfg.mamba_expand, impl=cfg.impl, dtype=cfg.compute_dtype))


_min_gru = _both_ways(lambda cfg: MinGRU(cfg.d_model, impl=cfg.impl,
                                         dtype=cfg.compute_dtype))
_min_lstm = _both_ways(lambda cfg: MinLSTM(cfg.d_model, impl=cfg.impl,
                                           dtype=cfg.compute_dtype))
_hawk = _both_ways(lambda cfg: Hawk(
    cfg.d_model, num_heads=cfg.num_heads, rglru_width=cfg.rglru_width, impl=cfg.impl,
    dtype=cfg.compute_dtype))
_mlstm = _both_ways(lambda cfg: MLSTM(
    cfg.d_model, num_heads=cfg.num_heads, mlstm_chunk=cfg.mlstm_chunk, impl=cfg.impl,
    dtype=cfg.compute_dtype))
_slstm = _both_ways(lambda cfg: SLSTM(cfg.d_model, num_heads=cfg.num_heads, impl=cfg.impl,
                                      dtype=cfg.compute_dtype))


def _xlstm(cfg: ModelConfig, causal: bool, layer: int = 0) -> nn.Module:
  """xLSTM[a:1] (Beck et al. 2024, sec. 4): in every group of ``a + 1`` blocks
  (``a = xlstm_mlstm_per_slstm``) the second is an sLSTM block, the others mLSTM blocks
  (2 layers: mLSTM, sLSTM; 8 layers at 7:1: one sLSTM, at index 1)."""
  group = cfg.xlstm_mlstm_per_slstm + 1
  slstm = layer % group == min(1, group - 1)
  return (_slstm if slstm else _mlstm)(cfg, causal, layer)


_mamba2 = _both_ways(lambda cfg: Mamba2(
    cfg.d_model, num_heads=cfg.num_heads, mamba2_d_state=cfg.mamba2_d_state,
    mamba2_chunk=cfg.mamba2_chunk, impl=cfg.impl, dtype=cfg.compute_dtype))

GRIFFIN_WINDOW = 1024  # De et al. 2024, sec. 3: local attention over 1024 tokens


def _griffin(cfg: ModelConfig, causal: bool, layer: int = 0) -> nn.Module:
  """Griffin (De et al. 2024, sec. 2): recurrent and local-attention blocks at 2:1. The
  paper orders each group of three as (recurrent, recurrent, attention); here the
  attention block is the middle one, so that a 2-layer model has one. Local attention is
  multi-query (one key/value head) with RoPE and no biases, as in the paper (rotating
  every feature of a head; the authors' release rotates half of them)."""
  if layer % 3 != 1:
    return _hawk(cfg, causal, layer)
  return MultiHeadAttention(cfg.d_model, cfg.num_heads, causal=causal, rope=True,
                            max_len=cfg.max_len, use_bias=False, num_kv_heads=1,
                            attention_window=cfg.attention_window or GRIFFIN_WINDOW,
                            dropout=cfg.dropout, attention_chunk=cfg.attention_chunk,
                            impl=cfg.impl, dtype=cfg.compute_dtype)


def _heads_step(cfg: ModelConfig) -> int:
  """Widths divisible by the heads (and by 8)."""
  return math.lcm(8, cfg.num_heads)


_LSTM, _LSTM_STACK = _recurrent(LSTM)
_BILSTM, _BILSTM_STACK = _recurrent(LSTM, bidirectional=True)
_GRU, _GRU_STACK = _recurrent(GRU)

# In the order the comparison reports them.
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family('lstm', LSTM, _LSTM, stacked=_LSTM_STACK),
    Family('bilstm', LSTM, _BILSTM, causal=(False,), stacked=_BILSTM_STACK,
           check=_even_halves),
    Family('gru', GRU, _GRU, stacked=_GRU_STACK),
    Family('transformer', MultiHeadAttention, _attention, causal=(True, False),
           positions=True, bounded_stream=True,
           width_step=lambda cfg: math.lcm(8, 2 * cfg.num_heads)),
    Family('s4d', S4D, _s4d, causal=(True, False)),
    Family('mamba', Mamba, _mamba, causal=(True, False)),
    # The recurrent revival (2024): gated recurrences whose training form is parallel.
    Family('min_gru', MinGRU, _min_gru, causal=(True, False)),
    Family('min_lstm', MinLSTM, _min_lstm, causal=(True, False)),
    Family('hawk', Hawk, _hawk, causal=(True, False),
           width_step=lambda cfg: 8 if cfg.rglru_width else _heads_step(cfg)),
    # Its local attention is MultiHeadAttention with attention_window, num_kv_heads=1.
    Family('griffin', Hawk, _griffin, causal=(True, False),
           width_step=lambda cfg: math.lcm(8, 2 * cfg.num_heads),
           also_uses=(MultiHeadAttention,)),
    # xLSTM (Beck et al. 2024): the inner width 2 * d_model is split into heads.
    Family('mlstm', MLSTM, _mlstm, causal=(True, False), width_step=_heads_step),
    Family('slstm', SLSTM, _slstm, causal=(True, False), width_step=_heads_step),
    Family('xlstm', MLSTM, _xlstm, causal=(True, False), width_step=_heads_step,
           also_uses=(SLSTM,)),
    # Dao & Gu 2024: state-space duality, heads of 2 * d_model / num_heads channels.
    Family('mamba2', Mamba2, _mamba2, causal=(True, False), width_step=_heads_step),
    # Bahdanau et al. 2015: an LSTM encoder and an attentive LSTM decoder
    # (seqjax.models.seq2seq), not a stack of residual mixers.
    Family('lstm_attention', LSTM, None, heads=('seq2seq',)),
)}

MODEL_NAMES = tuple(FAMILIES)


def all_switches() -> tuple[Switch, ...]:
  """Every implementation switch some family uses, each once, by site name."""
  by_site = {s.site: s for f in FAMILIES.values() for s in f.switches}
  return tuple(by_site[site] for site in sorted(by_site))
