"""S4D: the diagonal structured state-space layer (Gu, Gupta, Goel & Re 2022).

"On the Parameterization and Initialization of Diagonal State Space Models"
(NeurIPS 2022).
Each of the ``d_model`` channels is an independent single-input single-output SSM

    h'(t) = A h(t) + B x(t),   y(t) = C h(t) + D x(t)

with a diagonal complex ``A``. Real signals need the modes in conjugate pairs, so a state
size ``N`` is stored as ``N/2`` complex modes and the output takes twice the real part
(paper sec. 3.1). Discretisation is zero-order hold with a learned step ``Delta`` per
channel (paper eq. 5 / sec. 3.2)::

    A_bar = exp(Delta A),   B_bar = (A_bar - 1) / A * B
    h_t   = A_bar h_{t-1} + B_bar x_t                          # [batch, d_model, N/2]
    y_t   = 2 Re(sum_n C_n h_{t,n}) + D x_t

Unrolling the recurrence gives the causal convolution ``y = K * x + D x`` with kernel
``K_k = 2 Re(sum_n C_n A_bar_n^k B_bar_n)`` (the S4D Vandermonde kernel); the tests check
the layer against that independent path. The parallel mode has two forms,
chosen by the implementation switch ``impl`` (site ``s4d``, :data:`S4D_FORM`; see
``seqjax.ops.switch``):

* ``'convolution'`` (``auto`` on every platform): build ``K`` ``[d_model, T]`` from the
  Vandermonde powers ``A_bar^k = exp(k Delta A)`` (``[d_model, N/2, T]``, independent of
  the batch) and apply it as a causal convolution with real FFTs of length ``2T`` (S4's
  training mode, Gu et al. 2022a sec. 3; S4D sec. 3.3). Work O(B d T log T + d N T); the
  batch never meets the state.
* ``'scan'``: the complex recurrence through ``seqjax.ops.scan.linear_scan`` (its backend is
  the ``scan`` site of the same ``impl`` string), which materialises the states
  ``[batch, time, d_model, N/2]`` (and stores them again under autodiff). A training step
  took 4-6x the convolution's time on CPU at T=128-2048 (BENCHMARKS.md, "Design
  measurements: S4D"); the scan is kept as the second, independent parallel path.

Initialisation (paper sec. 4):
  * ``A = -exp(log_A_real) + i A_imag`` with ``log_A_real = log(1/2)``, so ``Re(A) < 0``
    (a stable, decaying SSM) holds for any learned value.
  * S4D-Lin: ``A_n = -1/2 + i pi n``; S4D-Inv: ``A_n = -1/2 + i N/pi (N/(2n+1) - 1)``,
    ``n = 0 .. N/2-1``.
  * ``B = 1``; ``C ~ CN(0, 1)`` (real and imaginary parts ``N(0, 1/2)``); ``D ~ N(0, 1)``
    as in the authors' minimal S4D; ``log Delta ~ U[log dt_min, log dt_max]``.

The layer mixes time within each channel only (no channel mixing, no nonlinearity): in
seqjax it is the mixer of a ``ResidualBlock`` whose MLP mixes channels.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.layers.base import State
from seqjax.ops.scan import SCAN, linear_scan
from seqjax.ops.switch import AUTO, Switch

Array = jax.Array

# Initialisations of Im(A) (paper sec. 4.1).
S4D_INITS = ('lin', 'inv')

S4D_FORM = Switch('s4d', ('convolution', 'scan'), lambda platform, time: 'convolution',
                  "S4D's parallel form: FFT convolution with the SSM kernel, or the "
                  'recurrence as a linear scan; layers/s4d.py')


def s4d_imag_init(init: str, state_size: int) -> Array:
  """Imaginary parts of the ``N/2`` S4D modes, ``[state_size // 2]`` (paper sec. 4.1)."""
  n = jnp.arange(state_size // 2, dtype=jnp.float32)
  if init == 'lin':
    return math.pi * n
  if init == 'inv':
    return state_size / math.pi * (state_size / (2 * n + 1) - 1)
  raise ValueError(f'unknown S4D init {init!r}; choose one of {S4D_INITS}')


def ssm_kernel(log_a_bar: Array, weights: Array, length: int) -> Array:
  """The S4D convolution kernel ``K_k = 2 Re(sum_n w_n exp(k log A_bar_n))``, ``k < length``.

  Args:
    log_a_bar: ``Delta A`` (the log of ``A_bar``), complex ``[d_model, N/2]``.
    weights: ``C_n B_bar_n``, complex ``[d_model, N/2]``.
    length: kernel length ``T``.

  Returns:
    real ``[d_model, T]``.
  """
  steps = jnp.arange(length, dtype=log_a_bar.real.dtype)
  vandermonde = jnp.exp(log_a_bar[..., None] * steps)              # [d, N/2, T]
  return 2.0 * jnp.einsum('dn,dnt->dt', weights, vandermonde).real


def causal_convolution(u: Array, kernel: Array) -> Array:
  """``y_t = sum_{j<=t} K_{t-j} u_j`` per channel, by real FFTs of length ``2T`` (zero
  padding turns the FFT's circular convolution into a linear one).

  Args:
    u: ``[batch, time, d_model]``.
    kernel: ``[d_model, time]``.

  Returns:
    ``[batch, time, d_model]``.
  """
  time = u.shape[1]
  n = 2 * time
  spectrum = jnp.fft.rfft(u, n=n, axis=1) * jnp.fft.rfft(kernel.T, n=n, axis=0)
  return jnp.fft.irfft(spectrum, n=n, axis=1)[:, :time]


class S4D(nn.Module):
  """Diagonal S4 mixer, ``[batch, time, d_model] -> [batch, time, d_model]`` (causal).

  Attributes:
    d_model: number of channels, each its own SSM.
    s4d_state_size: ``N``, the real state size per channel; ``N/2`` complex modes (even).
    s4d_init: ``'lin'`` (S4D-Lin) or ``'inv'`` (S4D-Inv) for ``Im(A)``.
    dt_min, dt_max: range of the initial step ``Delta`` (log-uniform).
    impl: implementation switch; sites ``s4d`` (``convolution`` | ``scan``, the same
      function, see the module docstring) and ``scan`` (the linear-scan backend of the
      ``scan`` form).
    dtype: dtype of inputs/outputs; the recurrence runs in at least float32/complex64.

  Params (float32): ``log_dt`` ``[d_model]``, ``log_A_real`` and ``A_imag``
  ``[d_model, N/2]``, ``B`` and ``C`` ``[d_model, N/2, 2]`` (real, imaginary parts),
  ``D`` ``[d_model]``.
  """

  d_model: int
  s4d_state_size: int = 64
  s4d_init: str = 'lin'
  dt_min: float = 1e-3
  dt_max: float = 1e-1
  impl: str = AUTO
  dtype: Any = jnp.float32

  is_causal = True
  switches: ClassVar[tuple[Switch, ...]] = (S4D_FORM, SCAN)

  def check(self) -> None:
    """Raises ``ValueError`` naming the attribute for an impossible setting."""
    if self.s4d_state_size <= 0 or self.s4d_state_size % 2:
      raise ValueError(
          f's4d_state_size={self.s4d_state_size} must be a positive even number (N/2 '
          'complex conjugate pairs)')
    if self.s4d_init not in S4D_INITS:
      raise ValueError(f's4d_init={self.s4d_init!r} is not valid; choose one of '
                       f'{list(S4D_INITS)}')
    if not 0 < self.dt_min <= self.dt_max:
      raise ValueError(
          f'S4D needs 0 < dt_min <= dt_max, got dt_min={self.dt_min}, '
          f'dt_max={self.dt_max}')
    for switch in self.switches:
      switch.choice(self.impl)

  def setup(self):
    self.check()
    h, m = self.d_model, self.s4d_state_size // 2
    lo, hi = math.log(self.dt_min), math.log(self.dt_max)

    self.log_dt = self.param(
        'log_dt', lambda k, s: jax.random.uniform(k, s, jnp.float32, lo, hi), (h,))
    self.log_A_real = self.param(
        'log_A_real', lambda k, s: jnp.full(s, math.log(0.5), jnp.float32), (h, m))
    self.A_imag = self.param(
        'A_imag',
        lambda k, s: jnp.broadcast_to(s4d_imag_init(self.s4d_init, self.s4d_state_size),
                                      s),
        (h, m))
    self.B = self.param(
        'B', lambda k, s: jnp.zeros(s, jnp.float32).at[..., 0].set(1.0), (h, m, 2))
    self.C = self.param(
        'C', lambda k, s: jax.random.normal(k, s, jnp.float32) * math.sqrt(0.5),
        (h, m, 2))
    self.D = self.param('D', nn.initializers.normal(1.0), (h,))

  def _compute_dtypes(self) -> tuple[Any, Any]:
    real = jnp.promote_types(self.dtype, jnp.float32)
    return real, jnp.result_type(real, jnp.complex64)

  def discretize(self) -> tuple[Array, Array, Array, Array]:
    """ZOH-discretised ``(A_bar, B_bar, C, D)``.

    ``A_bar``, ``B_bar``, ``C``: complex ``[d_model, N/2]``; ``D``: real ``[d_model]``.
    """
    dta, b_bar, c, d = self._discretize_log()
    return jnp.exp(dta), b_bar, c, d

  def _discretize_log(self) -> tuple[Array, Array, Array, Array]:
    """``(Delta A, B_bar, C, D)``: like ``discretize`` with ``log A_bar = Delta A`` (the
    kernel raises ``A_bar`` to powers through it, with no ``log(exp(.))`` round trip)."""
    real, cplx = self._compute_dtypes()
    a = (-jnp.exp(self.log_A_real) + 1j * self.A_imag).astype(cplx)
    b = jax.lax.complex(self.B[..., 0], self.B[..., 1]).astype(cplx)
    c = jax.lax.complex(self.C[..., 0], self.C[..., 1]).astype(cplx)
    dta = jnp.exp(self.log_dt).astype(real)[:, None] * a
    # (exp(dt A) - 1) / A: exact ZOH. expm1 keeps precision for small |dt A|.
    b_bar = jnp.expm1(dta) / a * b
    return dta, b_bar, c, self.D.astype(real)

  def __call__(self, x: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    """Parallel mode. ``x``: ``[batch, time, d_model]`` -> ``[batch, time, d_model]``.

    ``mask`` (``[batch, time]``) is not needed for correctness: the layer is causal, so
    right padding never affects real positions (the convolution zeroes padded inputs so
    that their size does not enter the FFT's rounding either).
    """
    del deterministic
    real, _ = self._compute_dtypes()
    u = x.astype(real)
    if S4D_FORM.resolve(self.impl, u.shape[1]) == 'convolution':
      if mask is not None:
        # Zeroed padding keeps its values out of the FFT's rounding of real positions.
        u = jnp.where(mask[..., None], u, 0.0)
      dta, b_bar, c, d = self._discretize_log()
      kernel = ssm_kernel(dta, b_bar * c, u.shape[1])
      return (causal_convolution(u, kernel) + d * u).astype(self.dtype)
    a_bar, b_bar, c, d = self.discretize()
    # Inputs B_bar x_t: [batch, time, d_model, N/2]; A_bar is time-invariant and
    # broadcasts inside linear_scan.
    h = linear_scan(a_bar, b_bar * u[..., None], backend=SCAN.choice(self.impl), axis=1)
    y = 2.0 * jnp.einsum('btdn,dn->btd', h, c).real + d * u
    return y.astype(self.dtype)

  def init_state(self, batch_size: int) -> State:
    """Complex SSM state ``h``, ``[batch, d_model, N/2]`` zeros."""
    _, cplx = self._compute_dtypes()
    return jnp.zeros((batch_size, self.d_model, self.s4d_state_size // 2), cplx)

  def step(self, state: State, x_t: Array) -> tuple[State, Array]:
    """One token: ``x_t`` ``[batch, d_model]`` -> (new ``h``, ``y_t`` ``[batch, d_model]``).

    ``h`` is the complex state ``[batch, d_model, N/2]`` of ``init_state``.
    """
    real, _ = self._compute_dtypes()
    a_bar, b_bar, c, d = self.discretize()
    u = x_t.astype(real)
    h = a_bar * state + b_bar * u[..., None]
    y = 2.0 * jnp.einsum('bdn,dn->bd', h, c).real + d * u
    return h, y.astype(self.dtype)
