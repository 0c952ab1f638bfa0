"""The mLSTM layer of xLSTM (Beck et al. 2024, arXiv:2405.04517): matrix memory, exponential
input gate, no hidden-to-hidden connection, so the sequence form is parallel.

The pre-up-projection block (sec. 4 and Fig. 10 / App. B.1 of the paper; the layout of the
authors' ``mLSTMLayer``), ``x`` ``[batch, time, d_model]``, ``E = 2 d_model``::

    x_m, z = split(proj_up(x))                       [batch, time, E] each
    u      = SiLU(Conv1D_4(x_m))                     causal, depthwise
    q, k   = headwise(u), headwise(u);  v = headwise(x_m)     blocks of 4 features
    i~, f~ = igate([q, k, v]), fgate([q, k, v])      [batch, time, heads]
    h~     = mLSTM cell(q, k, v, i~, f~)             seqjax.ops.mlstm (eqs. 19-27)
    h      = (MultiHeadNorm(h~) + skip * u) * SiLU(z)
    y      = proj_down(h)                            [batch, time, d_model]

The outer pre-norm and residual are ``seqjax.layers.block.ResidualBlock``'s (the paper's
mLSTM block has no MLP: ``mlp_ratio=0`` builds exactly that). The cell runs in float32 or
wider by the form the switch site ``mlstm`` picks (``parallel`` | ``chunkwise`` with
``mlstm_chunk`` steps per chunk; ``auto`` is chunkwise); ``step`` runs the recurrence.
Padding: a padded token has ``f = 1, i = 0`` and leaves the memory unchanged.

Initialisation as the authors' code where it is stated there: gate weights zero, forget
bias ``linspace(3, 6)`` over heads, input bias ``N(0, 0.1)``, skip ones, up and q/k/v
projections ``N(0, 2 / (5 d_model))`` ("small init"); ``proj_down`` LeCun normal (the
authors scale it by the depth of the whole model, which a mixer does not know).

Params: ``proj_up/kernel`` ``[d_model, 2E]`` (x_m then z), ``conv1d/w`` ``[4, E]``,
``conv1d/b`` ``[E]``, ``q_proj/w``, ``k_proj/w``, ``v_proj/w`` ``[E/4, 4, 4]``,
``igate``, ``fgate`` (``kernel`` ``[3E, heads]``, ``bias`` ``[heads]``), ``outnorm/weight``
``[E]``, ``learnable_skip`` ``[E]``, ``proj_down/kernel`` ``[E, d_model]``: the authors'
PyTorch ``mLSTMLayer`` one to one (:func:`mlstm_params_from_torch`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers.base import State
from seqjax.layers.block import over_tokens
from seqjax.layers.causal_conv import CausalConv1D
from seqjax.layers.headwise import BlockDiagonalDense, MultiHeadNorm
from seqjax.layers.torch_weights import named_weights
from seqjax.ops import mlstm as cell
from seqjax.ops.switch import AUTO, Switch

Array = jax.Array

QKV_BLOCK = 4


def _linspace(start: float, stop: float):
  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.linspace(start, stop, shape[-1], dtype=dtype)
  return init


class MLSTM(nn.Module):
  """mLSTM mixer, ``[batch, time, d_model] -> [batch, time, d_model]`` (module doc).

  Attributes:
    d_model: model width; the cell works at ``E = 2 d_model``.
    num_heads: memory heads (``E / num_heads`` features each).
    mlstm_chunk: steps per chunk of the chunkwise form.
    conv_width: temporal width of the Conv1D (4 in the paper).
    impl: implementation switch, site ``mlstm`` (``parallel`` | ``chunkwise``).
    dtype: computation dtype of the projections; the cell runs in float32+.
  """

  d_model: int
  num_heads: int = 4
  mlstm_chunk: int = 64
  conv_width: int = 4
  impl: str = AUTO
  dtype: Any = jnp.float32

  is_causal = True
  switches: ClassVar[tuple[Switch, ...]] = (cell.MLSTM,)

  @property
  def inner(self) -> int:
    return 2 * self.d_model

  @property
  def head_dim(self) -> int:
    return self.inner // self.num_heads

  def check(self) -> None:
    """Raises ``ValueError`` naming the attribute for an impossible setting."""
    if self.d_model <= 0 or self.inner % QKV_BLOCK:
      raise ValueError(f'd_model={self.d_model} must be positive and even (the mLSTM '
                       f'projects q, k, v in blocks of {QKV_BLOCK} of 2 * d_model)')
    if self.num_heads <= 0 or self.inner % self.num_heads:
      raise ValueError(f'num_heads={self.num_heads} must be positive and divide the '
                       f'mLSTM width 2 * d_model = {self.inner}')
    if self.mlstm_chunk <= 0:
      raise ValueError(f'mlstm_chunk={self.mlstm_chunk} must be positive')
    cell.MLSTM.choice(self.impl)

  def setup(self):
    self.check()
    e, small = self.inner, nn.initializers.normal(math.sqrt(2 / (5 * self.d_model)))
    self.proj_up = nn.Dense(2 * e, use_bias=False, kernel_init=small, dtype=self.dtype,
                            name='proj_up')
    self.conv1d = CausalConv1D(
        e, self.conv_width, nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
        dtype=self.dtype, name='conv1d')
    headwise = lambda name: BlockDiagonalDense(e // QKV_BLOCK, use_bias=False,
                                               kernel_init=small, dtype=self.dtype,
                                               name=name)
    self.q_proj, self.k_proj, self.v_proj = (headwise(n) for n in ('q_proj', 'k_proj',
                                                                    'v_proj'))
    self.igate = nn.Dense(self.num_heads, kernel_init=nn.initializers.zeros,
                          bias_init=nn.initializers.normal(0.1), name='igate')
    self.fgate = nn.Dense(self.num_heads, kernel_init=nn.initializers.zeros,
                          bias_init=_linspace(3.0, 6.0), name='fgate')
    self.outnorm = MultiHeadNorm(name='outnorm')
    self.learnable_skip = self.param('learnable_skip', nn.initializers.ones, (e,))
    self.proj_down = nn.Dense(self.d_model, use_bias=False, dtype=self.dtype,
                              name='proj_down')

  def _cell_inputs(self, x_m: Array, conv_out: Array) -> tuple:
    """From ``x_m`` and its conv output (``[..., E]``): ``q, k, v`` ``[..., heads, d]``
    and ``i~, f~`` ``[..., heads]`` in float32+, and the activated conv output ``u``."""
    real = jnp.promote_types(self.dtype, jnp.float32)
    u = nn.silu(conv_out)
    q, k, v = self.q_proj(u), self.k_proj(u), self.v_proj(x_m)
    gates_in = jnp.concatenate([q, k, v], axis=-1).astype(real)
    heads = lambda a: a.astype(real).reshape(*a.shape[:-1], self.num_heads, self.head_dim)
    return (heads(q), heads(k), heads(v), self.igate(gates_in), self.fgate(gates_in), u)

  def _output(self, h: Array, u: Array, z: Array) -> Array:
    """``h`` ``[..., heads, d]`` from the cell -> ``[..., d_model]``."""
    h = self.outnorm(h).reshape(u.shape) + self.learnable_skip * u.astype(h.dtype)
    return self.proj_down((h * nn.silu(z.astype(h.dtype))).astype(self.dtype))

  def __call__(self, x: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    """``x`` ``[batch, time, d_model]``, ``mask`` ``[batch, time]`` -> same as ``x``."""
    del deterministic
    x_m, z = jnp.split(self.proj_up(x.astype(self.dtype)), 2, axis=-1)
    q, k, v, i_pre, f_pre, u = self._cell_inputs(x_m, self.conv1d(x_m))
    if mask is not None:
      # No input and no decay: log sigmoid(1e30) = 0 exactly.
      i_pre = jnp.where(mask[..., None], i_pre, cell.NEG_INF)
      f_pre = jnp.where(mask[..., None], f_pre, -cell.NEG_INF)
    to_heads = lambda a: jnp.moveaxis(a, 1, 2)              # [batch, heads, time, ...]
    args = [to_heads(a) for a in (q, k, v, i_pre, f_pre)]
    if cell.MLSTM.resolve(self.impl, x.shape[1]) == 'parallel':
      h = cell.parallel(*args)
    else:
      h = cell.chunkwise(*args, chunk=self.mlstm_chunk)
    # On [batch * time, ...] views: the per-channel parameters' gradient sums at batch 1.
    return over_tokens(self._output, jnp.moveaxis(h, 2, 1), u, z)

  def init_state(self, batch_size: int) -> State:
    """``conv`` ``[batch, conv_width - 1, E]``; the cell's ``C`` ``[batch, heads, d, d]``,
    ``n`` ``[batch, heads, d]``, ``m`` ``[batch, heads]`` (float32+)."""
    real = jnp.promote_types(self.dtype, jnp.float32)
    return {'conv': self.conv1d.init_state(batch_size),
            'cell': cell.init_state(batch_size, self.num_heads, self.head_dim, real)}

  def step(self, state: State, x_t: Array) -> tuple[State, Array]:
    """One token ``x_t`` ``[batch, d_model]`` -> (new state, ``y_t`` ``[batch, d_model]``)."""
    x_m, z = jnp.split(self.proj_up(x_t.astype(self.dtype)), 2, axis=-1)
    conv_state, conv_out = self.conv1d.step(state['conv'], x_m)
    q, k, v, i_pre, f_pre, u = self._cell_inputs(x_m, conv_out)
    cell_state, h = cell.step(state['cell'], q, k, v, i_pre, f_pre)
    return {'conv': conv_state, 'cell': cell_state}, self._output(h, u, z)


def mlstm_params_from_torch(weights: Mapping[str, Any]) -> dict:
  """NX-AI xlstm's PyTorch ``mLSTMLayer`` state dict (``bias=False``, the default) ->
  :class:`MLSTM` params.

  The mapping (same names): ``proj_up.weight`` ``[2E, d]`` and ``proj_down.weight``
  ``[d, E]`` transposed; ``{q,k,v}_proj.weight`` ``[E/4, out 4, in 4]`` to ``w``
  ``[E/4, in, out]``; ``conv1d.conv.weight`` ``[E, 1, 4]`` to ``conv1d/w`` ``[4, E]`` (tap
  3 on the current token in both), ``conv1d.conv.bias``; ``mlstm_cell.{i,f}gate.weight``
  ``[heads, 3E]`` transposed, and biases; ``mlstm_cell.outnorm.weight`` ``w`` to the scale
  ``1 + w`` (their norm's residual weight); ``learnable_skip``. Keys may carry a common
  prefix. Unknown or missing keys and wrong shapes raise ``ValueError`` naming the key.
  Build the module with ``d_model = d`` and ``num_heads`` = the gates' output size.
  """
  names = ('proj_up.weight', 'q_proj.weight', 'k_proj.weight', 'v_proj.weight',
           'conv1d.conv.weight', 'conv1d.conv.bias', 'mlstm_cell.igate.weight',
           'mlstm_cell.igate.bias', 'mlstm_cell.fgate.weight', 'mlstm_cell.fgate.bias',
           'mlstm_cell.outnorm.weight', 'learnable_skip', 'proj_down.weight')
  prefix, w = named_weights(weights, names, module='mLSTMLayer', target='MLSTM',
                            note=' (supported: bias=False)')
  e2, d = w['proj_up.weight'].shape
  e, heads = e2 // 2, w['mlstm_cell.igate.weight'].shape[0]
  width = w['conv1d.conv.weight'].shape[-1]
  shapes = {'proj_down.weight': (d, e), 'conv1d.conv.weight': (e, 1, width),
            'conv1d.conv.bias': (e,), 'mlstm_cell.igate.weight': (heads, 3 * e),
            'mlstm_cell.fgate.weight': (heads, 3 * e), 'mlstm_cell.igate.bias': (heads,),
            'mlstm_cell.fgate.bias': (heads,), 'mlstm_cell.outnorm.weight': (e,),
            'learnable_skip': (e,),
            **{f'{n}_proj.weight': (e // QKV_BLOCK, QKV_BLOCK, QKV_BLOCK) for n in 'qkv'}}
  for name, shape in shapes.items():
    if w[name].shape != shape:
      raise ValueError(f'torch weight {prefix + name!r} has shape {w[name].shape}, '
                       f'expected {shape}')
  gate = lambda g: {'kernel': w[f'mlstm_cell.{g}.weight'].T.copy(),
                    'bias': w[f'mlstm_cell.{g}.bias']}
  return {'proj_up': {'kernel': w['proj_up.weight'].T.copy()},
          'conv1d': {'w': w['conv1d.conv.weight'][:, 0].T.copy(),
                     'b': w['conv1d.conv.bias']},
          **{f'{n}_proj': {'w': np.swapaxes(w[f'{n}_proj.weight'], 1, 2).copy()}
             for n in 'qkv'},
          'igate': gate('igate'), 'fgate': gate('fgate'),
          'outnorm': {'weight': 1.0 + w['mlstm_cell.outnorm.weight']},
          'learnable_skip': w['learnable_skip'],
          'proj_down': {'kernel': w['proj_down.weight'].T.copy()}}
