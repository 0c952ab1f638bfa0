"""The sLSTM layer of xLSTM (Beck et al. 2024, arXiv:2405.04517, sec. 2.2): scalar memory
with exponential gating, a normaliser and a stabiliser state, and a recurrent connection
whose weights are block-diagonal over heads (memory mixing within a head only).

Per unit, with ``W`` block-diagonal input weights, ``R`` block-diagonal recurrent weights
(``heads`` blocks of ``d x d``) and gates in the order ``i, f, z, o`` (eqs. 8-17)::

    g~_t = W_g x^g_t + R_g h_{t-1} + b_g            g in {i, f, z, o}
    m_t  = max(log sigmoid(f~_t) + m_{t-1}, i~_t)   stabiliser (eq. 15)
    i'_t = exp(i~_t - m_t),  f'_t = exp(log sigmoid(f~_t) + m_{t-1} - m_t)
    c_t  = f'_t c_{t-1} + i'_t tanh(z~_t)           cell
    n_t  = f'_t n_{t-1} + i'_t                      normaliser
    h_t  = sigmoid(o~_t) * c_t / n_t                [batch, d_model]
    y_t  = MultiHeadNorm(h_t)

The input and forget gates read ``x^{i,f} = SiLU(Conv1D_4(x))``, ``z`` and ``o`` read ``x``
(the authors' ``sLSTMLayer``; the sigmoid forget gate is their default). ``m_0 = -inf``,
which makes ``m_1 = i~_1`` as their code special-cases. The block's gated MLP after the
layer is ``ResidualBlock``'s MLP.

Because ``h_{t-1}`` enters the gates, the sequence form is a recurrence: ``__call__``
computes every ``W x`` in one matmul outside the loop and runs ``lax.scan`` with only the
small per-head ``R h`` matmuls inside; a padded token keeps the whole state.

Initialisation: ``W`` ``N(0, 2 / (5 d_model))`` ("small init"), ``R`` zero, biases zero
but the forget gate's, ``linspace(3, 6)`` across each head's units (the authors'
recurrent default and a forget bias in their range).

Params: ``conv1d/w`` ``[4, d_model]``, ``conv1d/b``; ``igate``, ``fgate``, ``zgate``,
``ogate`` ``/w`` ``[heads, d, d]``; ``recurrent_kernel`` ``[heads, d, 4, d]`` (gate order
i, f, z, o); ``bias`` ``[4, d_model]``; ``group_norm/weight`` ``[d_model]``: the authors'
PyTorch ``sLSTMLayer`` one to one, up to the names of two gate projections
(:func:`slstm_params_from_torch`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers.base import State
from seqjax.layers.causal_conv import CausalConv1D
from seqjax.layers.headwise import BlockDiagonalDense, MultiHeadNorm
from seqjax.layers.slstm_vjp import NEG_INF, slstm_scan, slstm_step
from seqjax.layers.torch_weights import named_weights
from seqjax.ops.switch import AUTO, Switch

Array = jax.Array

# ``auto`` is the hand-written backward pass everywhere (seqjax.layers.slstm_vjp); the
# speed-up is in BENCHMARKS.md, section 7 (1.33-1.45x over autodiff of the scan at 256-1024
# tokens on CPU). Not measured on accelerators.
SLSTM_SCAN = Switch('slstm', ('fused', 'autodiff'), lambda platform, time: 'fused',
                    'sLSTM over time: hand-written backward pass (fused) or autodiff of '
                    'lax.scan; layers/slstm_vjp.py')


def _bias_init(heads: int):
  """Zeros, except the forget gate's ``linspace(3, 6)`` across each head's units."""

  def init(key, shape, dtype=jnp.float32):
    del key
    d = shape[1] // heads
    forget = jnp.tile(jnp.linspace(3.0, 6.0, d), heads)
    return jnp.zeros(shape, dtype).at[1].set(forget.astype(dtype))

  return init


def slstm_cell(state: dict[str, Array], pre: Array, recurrent: Array, bias: Array
               ) -> dict[str, Array]:
  """One sLSTM step. ``state``: ``h, c, n, m`` ``[batch, heads, d]``; ``pre``: the input
  part ``W x`` ``[batch, 4, heads, d]``; ``recurrent`` ``[heads, d, 4, d]``; ``bias``
  ``[4, heads, d]``. Returns the new state (module doc, eqs. 8-17)."""
  # The fused scan's step (seqjax.layers.slstm_vjp); its backward factors go unused here.
  new, _ = slstm_step(state['h'], state['c'], state['n'], state['m'], pre, recurrent, bias)
  return dict(zip('hcnm', new))


class SLSTM(nn.Module):
  """sLSTM mixer, ``[batch, time, d_model] -> [batch, time, d_model]`` (module doc).

  Attributes:
    d_model: model width = memory width.
    num_heads: heads (blocks of the input and recurrent weights); divides ``d_model``.
    conv_width: temporal width of the Conv1D in front of the input and forget gates.
    impl: implementation switch, site ``slstm``: ``fused`` (what ``auto`` picks:
      :func:`seqjax.layers.slstm_vjp.slstm_scan`, a hand-written backward pass) or
      ``autodiff`` (autodiff of the ``lax.scan`` below); same function, same params.
    dtype: computation dtype of the input projections; the recurrence runs in float32+.
  """

  d_model: int
  num_heads: int = 4
  conv_width: int = 4
  impl: str = AUTO
  dtype: Any = jnp.float32

  is_causal = True
  switches: ClassVar[tuple[Switch, ...]] = (SLSTM_SCAN,)

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  def check(self) -> None:
    """Raises ``ValueError`` naming the attribute for an impossible setting."""
    if self.d_model <= 0:
      raise ValueError(f'd_model={self.d_model} must be positive')
    if self.num_heads <= 0 or self.d_model % self.num_heads:
      raise ValueError(f'num_heads={self.num_heads} must be positive and divide '
                       f'd_model={self.d_model} (the sLSTM heads)')
    SLSTM_SCAN.choice(self.impl)

  def setup(self):
    self.check()
    h, d = self.num_heads, self.head_dim
    small = nn.initializers.normal(math.sqrt(2 / (5 * self.d_model)))
    self.conv1d = CausalConv1D(
        self.d_model, self.conv_width,
        nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'), dtype=self.dtype,
        name='conv1d')
    self.gates = [BlockDiagonalDense(h, use_bias=False, kernel_init=small,
                                     dtype=self.dtype, name=f'{g}gate') for g in 'ifzo']
    self.recurrent_kernel = self.param('recurrent_kernel', nn.initializers.zeros,
                                       (h, d, 4, d))
    self.bias = self.param('bias', _bias_init(h), (4, self.d_model))
    self.group_norm = MultiHeadNorm(name='group_norm')

  def _pre(self, x: Array, conv_out: Array) -> Array:
    """``W x`` of all four gates: ``[..., 4, heads, d]`` in float32+."""
    real = jnp.promote_types(self.dtype, jnp.float32)
    u = nn.silu(conv_out)
    pre = jnp.stack([g(v) for g, v in zip(self.gates, (u, u, x, x))], axis=-2)
    return pre.astype(real).reshape(*pre.shape[:-1], self.num_heads, self.head_dim)

  def _params(self) -> tuple[Array, Array]:
    real = jnp.promote_types(self.dtype, jnp.float32)
    return (self.recurrent_kernel.astype(real),
            self.bias.astype(real).reshape(4, self.num_heads, self.head_dim))

  def _output(self, h: Array) -> Array:
    """``h`` ``[..., heads, d]`` -> normalised ``[..., d_model]`` in ``dtype``."""
    return self.group_norm(h).reshape(*h.shape[:-2], self.d_model).astype(self.dtype)

  def __call__(self, x: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    """``x`` ``[batch, time, d_model]``, ``mask`` ``[batch, time]`` -> same as ``x``."""
    del deterministic
    x = x.astype(self.dtype)
    pre = jnp.swapaxes(self._pre(x, self.conv1d(x)), 0, 1)     # [time, batch, 4, h, d]
    real = jnp.swapaxes(jnp.ones(x.shape[:2], bool) if mask is None else mask, 0, 1)
    recurrent, bias = self._params()
    if SLSTM_SCAN.resolve(self.impl, x.shape[1]) == 'fused':
      return self._output(jnp.swapaxes(slstm_scan(pre, real, recurrent, bias), 0, 1))

    def body(state, inputs):
      pre_t, real_t = inputs
      new = slstm_cell(state, pre_t, recurrent, bias)
      keep = real_t[:, None, None]
      new = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, state)
      return new, new['h']

    _, h = jax.lax.scan(body, self._cell_state(x.shape[0]), (pre, real))
    return self._output(jnp.swapaxes(h, 0, 1))

  def _cell_state(self, batch_size: int) -> dict[str, Array]:
    real = jnp.promote_types(self.dtype, jnp.float32)
    shape = (batch_size, self.num_heads, self.head_dim)
    return {'h': jnp.zeros(shape, real), 'c': jnp.zeros(shape, real),
            'n': jnp.zeros(shape, real), 'm': jnp.full(shape, NEG_INF, real)}

  def init_state(self, batch_size: int) -> State:
    """``h, c, n, m`` ``[batch, heads, d]`` (float32+; ``m = -inf``: no input yet) and the
    conv window ``[batch, conv_width - 1, d_model]``."""
    return {**self._cell_state(batch_size), 'conv': self.conv1d.init_state(batch_size)}

  def step(self, state: State, x_t: Array) -> tuple[State, Array]:
    """One token ``x_t`` ``[batch, d_model]`` -> (new state, ``y_t`` ``[batch, d_model]``)."""
    x_t = x_t.astype(self.dtype)
    conv, conv_out = self.conv1d.step(state['conv'], x_t)
    cell = {k: state[k] for k in ('h', 'c', 'n', 'm')}
    cell = slstm_cell(cell, self._pre(x_t, conv_out), *self._params())
    return {**cell, 'conv': conv}, self._output(cell['h'])


def slstm_params_from_torch(weights: Mapping[str, Any], *, backend: str = 'vanilla') -> dict:
  """NX-AI xlstm's PyTorch ``sLSTMLayer`` state dict -> :class:`SLSTM` params.

  Reference: ``xlstm/blocks/slstm/layer.py`` (``sLSTMLayer``), ``cell.py``
  (``sLSTMCellBase``, ``sLSTMCell_vanilla``, ``sLSTMCell_cuda``), ``src/vanilla/slstm.py``
  (the pointwise step), ``xlstm/components/{conv,linear_headwise,ln}.py``. Supported: the
  default ``function='slstm'``, ``conv1d_kernel_size > 0``, ``group_norm_weight=True``.

  The mapping (``D = d_model``, ``d = D / heads``, ``W`` the conv width):

  * ``conv1d.conv.weight`` ``[D, 1, W]`` -> ``conv1d/w`` ``[W, D]`` (tap ``W - 1`` on the
    current token in both); ``conv1d.conv.bias`` -> ``conv1d/b``.
  * ``{i,f,z,o}gate.weight`` ``[heads, d_out, d_in]`` -> ``{.}gate/w`` ``[heads, d_in,
    d_out]``, with one renaming: their ``sLSTMLayer.forward`` feeds ``fgate``'s output to
    the cell's *input* gate and ``igate``'s to its *forget* gate (``i, f, z, o =
    fgate(x_conv), igate(x_conv), zgate(x), ogate(x)``), so torch ``fgate.weight`` goes to
    ``igate/w`` and torch ``igate.weight`` to ``fgate/w``. Both projections read
    ``SiLU(conv(x))`` in either code, so the function is unchanged.
  * ``slstm_cell._recurrent_kernel_`` -> ``recurrent_kernel`` ``[heads, d_in, 4, d_out]``,
    which is their backend-independent ("external") layout. The state dict holds the
    backend's internal layout: ``backend='vanilla'`` ``[heads, 4 d, d]`` (gate, out, in),
    ``backend='cuda'`` ``[heads, d, 4 d]`` (in, gate, out).
  * ``slstm_cell._bias_`` ``[4 D]`` -> ``bias`` ``[4, D]``: gate-major (gate, head, unit)
    for ``vanilla``, head-major (head, gate, unit) for ``cuda``. The two have the same
    shape, so the backend the checkpoint was written with must be passed.
  * ``group_norm.weight`` ``w`` -> ``group_norm/weight`` ``1 + w`` (their
    ``MultiHeadLayerNorm`` has a residual weight; both use eps 1e-5 and no bias).

  The gate order inside the kernel and bias (i, f, z, o), the sigmoid forget gate, the
  stabiliser and the start (their zero state with the ``n == 0`` special case; seqjax's
  ``m_0 = -inf``) agree. Their ``min(exp(.), 1)`` on the gates does not change the result
  (``m_t`` is the max; at the first step it can clip ``f``, which multiplies zeros). Not
  visible in a state dict, so not checked: ``function`` (``'lstm'`` has the same
  shapes and different equations) and dropout (inactive in eval). Keys may carry a common
  prefix. Unknown or missing keys (``conv1d_kernel_size=0`` or ``group_norm_weight=False``
  leave some out) and wrong shapes raise ``ValueError`` naming the key. Returns float32
  NumPy arrays; build ``SLSTM(d_model=D, num_heads=heads, conv_width=W)``.
  """
  if backend not in ('vanilla', 'cuda'):
    raise ValueError(f"backend={backend!r} must be 'vanilla' or 'cuda'")
  names = ('conv1d.conv.weight', 'conv1d.conv.bias', 'igate.weight', 'fgate.weight',
           'zgate.weight', 'ogate.weight', 'slstm_cell._recurrent_kernel_',
           'slstm_cell._bias_', 'group_norm.weight')
  anchor = 'slstm_cell._recurrent_kernel_'
  prefix, w = named_weights(weights, names, module='sLSTMLayer', target='SLSTM')
  if w['ogate.weight'].ndim != 3:
    raise ValueError(f"torch weight {prefix + 'ogate.weight'!r} has shape "
                     f"{w['ogate.weight'].shape}, expected [heads, d, d]")
  heads, d = w['ogate.weight'].shape[:2]
  dm, width = heads * d, w['conv1d.conv.weight'].shape[-1]
  shapes = {'conv1d.conv.weight': (dm, 1, width), 'conv1d.conv.bias': (dm,),
            **{f'{g}gate.weight': (heads, d, d) for g in 'ifzo'},
            anchor: (heads, 4 * d, d) if backend == 'vanilla' else (heads, d, 4 * d),
            'slstm_cell._bias_': (4 * dm,), 'group_norm.weight': (dm,)}
  for name, shape in shapes.items():
    if w[name].shape != shape:
      raise ValueError(f'torch weight {prefix + name!r} has shape {w[name].shape}, '
                       f'expected {shape} ({backend} backend)')
  if backend == 'vanilla':
    recurrent = w[anchor].reshape(heads, 4, d, d).transpose(0, 3, 1, 2)
    bias = w['slstm_cell._bias_'].reshape(4, dm)
  else:
    recurrent = w[anchor].reshape(heads, d, 4, d)
    bias = w['slstm_cell._bias_'].reshape(heads, 4, d).transpose(1, 0, 2).reshape(4, dm)
  gate = lambda name: {'w': np.swapaxes(w[f'{name}.weight'], 1, 2).copy()}
  return {'conv1d': {'w': w['conv1d.conv.weight'][:, 0].T.copy(),
                     'b': w['conv1d.conv.bias']},
          'igate': gate('fgate'), 'fgate': gate('igate'),      # their swap, see above
          'zgate': gate('zgate'), 'ogate': gate('ogate'),
          'recurrent_kernel': recurrent.copy(), 'bias': bias.copy(),
          'group_norm': {'weight': 1.0 + w['group_norm.weight']}}
