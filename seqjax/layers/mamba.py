"""Mamba: the selective state-space block of Gu & Dao 2023.

"Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (arXiv:2312.00752),
Algorithm 2 and Fig. 3. With ``E = expand * d_model`` inner channels and ``N = d_state``::

    x, z  = split(in_proj(u))                      # [batch, time, E] each
    x     = SiLU(causal_depthwise_conv(x) + bias)  # width d_conv, per channel
    dt, B, C = split(x_proj(x))                    # [.., dt_rank], [.., N], [.., N]
    Delta = softplus(dt_proj(dt))                  # [batch, time, E] (low rank + bias)
    A     = -exp(A_log)                            # [E, N], real, always negative
    h_t   = exp(Delta_t A) * h_{t-1} + Delta_t B_t x_t    # [batch, E, N]
    y_t   = C_t . h_t + D * x_t
    out   = out_proj(y * SiLU(z))

``A_bar = exp(Delta A)`` is the zero-order hold of A; for B the reference implementation
uses the simpler Euler form ``B_bar = Delta B`` (paper sec. 3.5.2 notes the difference is
immaterial), and so does this module. Because B, C and Delta depend on the input
(*selection*, sec. 3.2), the SSM is time-varying: no convolution form exists and the
parallel mode runs a scan, chosen by the implementation switch ``impl`` (site
``selective_scan``, see ``seqjax.ops.switch``). ``fused`` (what ``auto`` picks) is
``seqjax.ops.selective_scan.selective_scan``, which discretises inside the loop and only
lets ``y [batch, time, E]`` out (sec. 3.3); ``materialized`` keeps the direct form as the
reference: ``[batch, time, E, N]`` decays and inputs through
``seqjax.ops.scan.linear_scan`` with the backend of the ``scan`` site.

Initialisation follows the reference ``mamba_simple.py``: ``A_log = log(1..N)`` per
channel (S4D-Real); ``D = 1``; ``dt_proj`` weight ``U(+-dt_rank^-1/2)`` and its bias set to
``softplus^-1(dt)`` with ``dt`` log-uniform in ``[dt_min, dt_max]`` (floored at 1e-4);
conv weight and bias ``U(+-1/sqrt(d_conv))`` (PyTorch's Conv1d default); the other
projections use Flax's default LeCun-normal, without bias. The scan runs in at least
float32 whatever ``dtype`` is, as in the reference.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.layers.base import State
from seqjax.ops.scan import SCAN
from seqjax.ops.selective_scan import (SELECTIVE_SCAN, selective_scan,
                                       selective_scan_reference)
from seqjax.ops.switch import AUTO, Switch

Array = jax.Array

_DT_INIT_FLOOR = 1e-4


def _dt_bias_init(dt_min: float, dt_max: float):
  """Bias ``b`` with ``softplus(b)`` log-uniform in ``[dt_min, dt_max]``."""

  def init(key, shape, dtype=jnp.float32):
    lo, hi = math.log(dt_min), math.log(dt_max)
    dt = jnp.exp(jax.random.uniform(key, shape, jnp.float32, lo, hi))
    dt = jnp.maximum(dt, _DT_INIT_FLOOR)
    # softplus^-1(dt) = log(exp(dt) - 1) = dt + log(1 - exp(-dt)), stable for small dt.
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)

  return init


def _uniform(scale: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


class Mamba(nn.Module):
  """Mamba mixer, ``[batch, time, d_model] -> [batch, time, d_model]`` (causal).

  Attributes:
    d_model: model width.
    mamba_d_state: ``N``, SSM state size per inner channel (``d_state`` in the paper's
      code).
    mamba_d_conv: width ``d_conv`` of the causal depthwise convolution.
    mamba_expand: inner width ``E = expand * d_model``.
    dt_rank: rank of the ``Delta`` projection; ``'auto'`` is ``ceil(d_model / 16)``.
    dt_min, dt_max: range of the initial ``Delta`` (log-uniform).
    impl: implementation switch; sites ``selective_scan`` (``fused`` | ``materialized``,
      same function, same params) and ``scan`` (the linear-scan backend of the
      materialised form).
    dtype: computation dtype of the projections (params stay float32).

  Params: ``in_proj/kernel`` ``[d_model, 2E]`` (x half first, then z),
  ``conv_kernel`` ``[d_conv, E]`` (row ``d_conv-1`` multiplies the current token),
  ``conv_bias`` ``[E]``, ``x_proj/kernel`` ``[E, dt_rank + 2N]`` (dt, B, C),
  ``dt_proj/kernel`` ``[dt_rank, E]``, ``dt_proj/bias`` ``[E]``, ``A_log`` ``[E, N]``,
  ``D`` ``[E]``, ``out_proj/kernel`` ``[E, d_model]``.
  """

  d_model: int
  mamba_d_state: int = 16
  mamba_d_conv: int = 4
  mamba_expand: int = 2
  dt_rank: int | str = 'auto'
  dt_min: float = 1e-3
  dt_max: float = 1e-1
  impl: str = AUTO
  dtype: Any = jnp.float32

  is_causal = True
  switches: ClassVar[tuple[Switch, ...]] = (SELECTIVE_SCAN, SCAN)

  @property
  def d_inner(self) -> int:
    return self.mamba_expand * self.d_model

  @property
  def rank(self) -> int:
    return math.ceil(self.d_model / 16) if self.dt_rank == 'auto' else self.dt_rank

  def check(self) -> None:
    """Raises ``ValueError`` naming the attribute for an impossible setting."""
    for name in ('d_model', 'mamba_d_state', 'mamba_d_conv', 'mamba_expand'):
      if getattr(self, name) <= 0:
        raise ValueError(f'{name}={getattr(self, name)} must be positive')
    if not 0 < self.dt_min <= self.dt_max:
      raise ValueError(
          f'Mamba needs 0 < dt_min <= dt_max, got dt_min={self.dt_min}, '
          f'dt_max={self.dt_max}')
    if self.dt_rank != 'auto' and not (isinstance(self.dt_rank, int) and self.dt_rank > 0):
      raise ValueError(f"Mamba dt_rank must be 'auto' or a positive int, got "
                       f'{self.dt_rank!r}')
    for switch in self.switches:
      switch.choice(self.impl)

  def setup(self):
    self.check()
    e, n, r = self.d_inner, self.mamba_d_state, self.rank

    self.in_proj = nn.Dense(2 * e, use_bias=False, dtype=self.dtype, name='in_proj')
    conv_scale = 1.0 / math.sqrt(self.mamba_d_conv)
    self.conv_kernel = self.param('conv_kernel', _uniform(conv_scale),
                                  (self.mamba_d_conv, e))
    self.conv_bias = self.param('conv_bias', _uniform(conv_scale), (e,))
    self.x_proj = nn.Dense(r + 2 * n, use_bias=False, dtype=self.dtype, name='x_proj')
    self.dt_proj = nn.Dense(
        e, dtype=self.dtype, kernel_init=_uniform(r ** -0.5),
        bias_init=_dt_bias_init(self.dt_min, self.dt_max), name='dt_proj')
    # S4D-Real: A = -(1, 2, ..., N) for every channel.
    s4d_real = jnp.arange(1, n + 1, dtype=jnp.float32)
    self.A_log = self.param(
        'A_log', lambda k, s: jnp.log(jnp.broadcast_to(s4d_real, s)), (e, n))
    self.D = self.param('D', nn.initializers.ones, (e,))
    self.out_proj = nn.Dense(self.d_model, use_bias=False, dtype=self.dtype,
                             name='out_proj')

  def _selection(self, xc: Array) -> tuple[Array, Array, Array]:
    """Input-dependent ``(Delta [..., E], B [..., N], C [..., N])`` in float32+."""
    real = jnp.promote_types(self.dtype, jnp.float32)
    r, n = self.rank, self.mamba_d_state
    x_dbl = self.x_proj(xc)
    dt, b, c = jnp.split(x_dbl, [r, r + n], axis=-1)
    delta = jax.nn.softplus(self.dt_proj(dt).astype(real))
    return delta, b.astype(real), c.astype(real)

  def _output(self, y: Array, z: Array) -> Array:
    return self.out_proj((y * nn.silu(z.astype(y.dtype))).astype(self.dtype))

  def __call__(self, x: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    """Parallel mode. ``x``: ``[batch, time, d_model]`` -> ``[batch, time, d_model]``.

    ``mask`` (``[batch, time]``) is accepted for interface uniformity and not needed: the
    conv and the scan are causal, so right padding never affects real positions.
    """
    del mask, deterministic
    real = jnp.promote_types(self.dtype, jnp.float32)
    bsz, t, _ = x.shape
    e = self.d_inner
    # Position-wise parts run on [batch * time, features] views, the conv and the scan on
    # [batch, time, E]: see seqjax.layers.block.per_token for why (the per-channel
    # parameters' gradient sums at batch 1).
    xs, z = jnp.split(self.in_proj(x.reshape(bsz * t, -1).astype(self.dtype)), 2, axis=-1)
    # Causal depthwise conv: left-pad d_conv-1 zeros, then a weighted sum of d_conv
    # shifted views (a loop over the kernel width, not over time).
    w = self.conv_kernel.astype(self.dtype)
    xp = jnp.pad(xs.reshape(bsz, t, e), ((0, 0), (self.mamba_d_conv - 1, 0), (0, 0)))
    xc = sum(w[k] * xp[:, k:k + t].reshape(bsz * t, e) for k in range(self.mamba_d_conv))
    xc = nn.silu(xc + self.conv_bias.astype(self.dtype))
    delta, b, c = (v.reshape(bsz, t, -1) for v in self._selection(xc))
    u = xc.astype(real)
    a = -jnp.exp(self.A_log.astype(real))
    scan_args = (u.reshape(bsz, t, e), delta, a, b, c)
    if SELECTIVE_SCAN.resolve(self.impl, t) == 'fused':
      y = selective_scan(*scan_args)
    else:
      y = selective_scan_reference(*scan_args, scan_backend=SCAN.choice(self.impl))
    y = y.reshape(bsz * t, e) + self.D.astype(real) * u
    return self._output(y, z).reshape(bsz, t, -1)

  def init_state(self, batch_size: int) -> State:
    """``{'conv': [batch, d_conv-1, E] last conv inputs, 'ssm': [batch, E, N]}`` zeros."""
    real = jnp.promote_types(self.dtype, jnp.float32)
    e = self.d_inner
    return {
        'conv': jnp.zeros((batch_size, self.mamba_d_conv - 1, e), self.dtype),
        'ssm': jnp.zeros((batch_size, e, self.mamba_d_state), real),
    }

  def step(self, state: State, x_t: Array) -> tuple[State, Array]:
    """One token: ``x_t`` ``[batch, d_model]`` -> (new state, ``y_t`` ``[batch, d_model]``).

    The conv window shifts by one token; the SSM state takes one recurrence step.
    """
    real = jnp.promote_types(self.dtype, jnp.float32)
    xs, z = jnp.split(self.in_proj(x_t.astype(self.dtype)), 2, axis=-1)
    window = jnp.concatenate([state['conv'], xs[:, None].astype(state['conv'].dtype)],
                             axis=1)  # [batch, d_conv, E], oldest first
    w = self.conv_kernel.astype(self.dtype)
    xc = nn.silu(jnp.einsum('bke,ke->be', window, w) + self.conv_bias.astype(self.dtype))
    delta, b, c = self._selection(xc)
    u = xc.astype(real)
    a = -jnp.exp(self.A_log.astype(real))
    h = jnp.exp(delta[..., None] * a) * state['ssm'] + (delta * u)[..., None] * b[:, None]
    y = jnp.einsum('ben,bn->be', h, c) + self.D.astype(real) * u
    return {'conv': window[:, 1:], 'ssm': h}, self._output(y, z)
