"""Mamba-2: the SSD block of Dao & Gu 2024 ("Transformers are SSMs", arXiv:2405.21060,
sec. 7 and Fig. 6), with one B/C group. ``E = 2 d_model`` inner channels in ``H`` heads of
``P = E / H``, state size ``N``::

    z, xBC, dt = split(in_proj(u))            [.., E], [.., E + 2N], [.., H]
    x, B, C    = split(SiLU(Conv1D_4(xBC)))   [.., E], [.., N], [.., N]
    dt         = softplus(dt + dt_bias)       [batch, time, H]
    A          = -exp(A_log)                  [H], a scalar per head
    y          = SSD(x * dt, dt * A, B, C) + D * x        seqjax.ops.ssd
    out        = out_proj(RMSNorm(y * SiLU(z)))

(B and C come from the input in parallel with x, not from x: the "parallel projections" of
sec. 7.1; the norm after the gate, ``norm_before_gate=False`` in the authors' module.)
The parallel mode runs the chunked SSD (``mamba2_chunk`` steps per chunk), ``step`` the
recurrence; a padded token gets ``dt = 0`` and leaves the state as it is.

Initialisation as the authors' ``Mamba2Simple``: ``A`` uniform in ``[1, 16]``, ``dt`` bias
``softplus^-1`` of log-uniform ``[1e-3, 0.1]`` (floor 1e-4), ``D = 1``, norm weight 1,
conv ``U(+-1/sqrt(4))`` (PyTorch's Conv1d default); projections LeCun normal, no biases.

Params: ``in_proj/kernel`` ``[d_model, 2E + 2N + H]`` (z, x, B, C, dt), ``conv1d/w``
``[4, E + 2N]``, ``conv1d/b``, ``dt_bias``, ``A_log``, ``D`` ``[H]``, ``norm/scale``
``[E]``, ``out_proj/kernel`` ``[E, d_model]``: the authors' PyTorch ``Mamba2`` (and
``Mamba2Simple``) with ``expand=2``, ``ngroups=1`` and their other defaults, one to one
(:func:`mamba2_params_from_torch`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.layers.base import State
from seqjax.layers.block import over_tokens
from seqjax.layers.causal_conv import CausalConv1D
from seqjax.layers.torch_weights import named_weights
from seqjax.ops.ssd import ssd_chunked, ssd_step
from seqjax.ops.switch import AUTO, Switch

Array = jax.Array


def _dt_bias(dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4):
  def init(key, shape, dtype=jnp.float32):
    dt = jnp.exp(jax.random.uniform(key, shape, jnp.float32, math.log(dt_min),
                                    math.log(dt_max)))
    dt = jnp.maximum(dt, floor)
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)      # softplus^-1(dt)
  return init


def _a_log(key, shape, dtype=jnp.float32):
  return jnp.log(jax.random.uniform(key, shape, jnp.float32, 1.0, 16.0)).astype(dtype)


class Mamba2(nn.Module):
  """Mamba-2 mixer, ``[batch, time, d_model] -> [batch, time, d_model]`` (module doc).

  Attributes:
    d_model: model width; ``E = 2 d_model``.
    num_heads: SSD heads ``H`` (divides ``E``).
    mamba2_d_state: state size ``N`` per head and channel.
    mamba2_chunk: steps per chunk of the chunked SSD (speed only).
    conv_width: temporal width of the Conv1D (4).
    impl: accepted for the interface; no switch.
    dtype: computation dtype of the projections; the SSD runs in float32+.
  """

  d_model: int
  num_heads: int = 4
  mamba2_d_state: int = 64
  mamba2_chunk: int = 64
  conv_width: int = 4
  impl: str = AUTO
  dtype: Any = jnp.float32

  is_causal = True
  switches: ClassVar[tuple[Switch, ...]] = ()

  @property
  def inner(self) -> int:
    return 2 * self.d_model

  def check(self) -> None:
    """Raises ``ValueError`` naming the attribute for an impossible setting."""
    if self.d_model <= 0:
      raise ValueError(f'd_model={self.d_model} must be positive')
    if self.num_heads <= 0 or self.inner % self.num_heads:
      raise ValueError(f'num_heads={self.num_heads} must be positive and divide the '
                       f'Mamba-2 width 2 * d_model = {self.inner}')
    for name in ('mamba2_d_state', 'mamba2_chunk'):
      if getattr(self, name) <= 0:
        raise ValueError(f'{name}={getattr(self, name)} must be positive')

  def setup(self):
    self.check()
    e, n, h = self.inner, self.mamba2_d_state, self.num_heads
    self.in_proj = nn.Dense(2 * e + 2 * n + h, use_bias=False, dtype=self.dtype,
                            name='in_proj')
    self.conv1d = CausalConv1D(
        e + 2 * n, self.conv_width,
        nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'), dtype=self.dtype,
        name='conv1d')
    self.dt_bias = self.param('dt_bias', _dt_bias(), (h,))
    self.A_log = self.param('A_log', _a_log, (h,))
    self.D = self.param('D', nn.initializers.ones, (h,))
    # The gated norm runs in float32+ (as the authors' kernel does): it rescales by a
    # statistic of the whole row, so bfloat16 rounding there would spread to every unit.
    self.norm = nn.RMSNorm(epsilon=1e-5, dtype=jnp.promote_types(self.dtype, jnp.float32),
                           name='norm')
    self.out_proj = nn.Dense(self.d_model, use_bias=False, dtype=self.dtype,
                             name='out_proj')

  def _split(self, u: Array) -> tuple[Array, Array, Array]:
    e, n = self.inner, self.mamba2_d_state
    return jnp.split(self.in_proj(u.astype(self.dtype)), [e, 2 * e + 2 * n], axis=-1)

  def _ssd_inputs(self, xbc: Array, dt: Array) -> tuple:
    """Conv output ``[..., E + 2N]`` and raw ``dt`` ``[..., H]`` -> ``x`` ``[..., H, P]``
    (not yet times dt), ``dt``, ``a = dt A`` ``[..., H]``, ``B``, ``C`` ``[..., N]``."""
    real = jnp.promote_types(self.dtype, jnp.float32)
    e, n = self.inner, self.mamba2_d_state
    x, b, c = jnp.split(nn.silu(xbc).astype(real), [e, e + n], axis=-1)
    dt = jax.nn.softplus(dt.astype(real) + self.dt_bias)
    a = -jnp.exp(self.A_log.astype(real)) * dt
    return x.reshape(*x.shape[:-1], self.num_heads, -1), dt, a, b, c

  def _output(self, y: Array, x: Array, z: Array) -> Array:
    """``y`` ``[..., H, P]`` from the SSD, ``x`` its input -> ``[..., d_model]``."""
    y = y + self.D[:, None] * x
    y = y.reshape(*y.shape[:-2], self.inner) * nn.silu(z.astype(y.dtype))
    return self.out_proj(self.norm(y).astype(self.dtype))

  def __call__(self, u: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array:
    """``u`` ``[batch, time, d_model]``, ``mask`` ``[batch, time]`` -> same as ``u``."""
    del deterministic
    # Position-wise parts on [batch * time, ...] views (over_tokens), the conv and the SSD
    # on [batch, time, ...]: the parameters' gradient sums at batch 1, see per_token.
    z, xbc, dt = over_tokens(self._split, u)
    x, dt, a, b, c = over_tokens(self._ssd_inputs, self.conv1d(xbc), dt)
    if mask is not None:
      dt = jnp.where(mask[..., None], dt, 0.0)
      a = jnp.where(mask[..., None], a, 0.0)
    y, _ = ssd_chunked(x * dt[..., None], a, b, c, chunk=self.mamba2_chunk)
    return over_tokens(self._output, y, x, z)

  def init_state(self, batch_size: int) -> State:
    """``conv`` ``[batch, 3, E + 2N]`` and ``ssm`` ``[batch, H, P, N]`` (float32+)."""
    real = jnp.promote_types(self.dtype, jnp.float32)
    p = self.inner // self.num_heads
    return {'conv': self.conv1d.init_state(batch_size),
            'ssm': jnp.zeros((batch_size, self.num_heads, p, self.mamba2_d_state), real)}

  def step(self, state: State, u_t: Array) -> tuple[State, Array]:
    """One token ``u_t`` ``[batch, d_model]`` -> (new state, ``[batch, d_model]``)."""
    z, xbc, dt = self._split(u_t)
    conv, xbc = self.conv1d.step(state['conv'], xbc)
    x, dt, a, b, c = self._ssd_inputs(xbc, dt)
    h, y = ssd_step(state['ssm'], x * dt[..., None], a, b, c)
    return {'conv': conv, 'ssm': h}, self._output(y, x, z)


def mamba2_params_from_torch(weights: Mapping[str, Any], *, d_state: int) -> dict:
  """state-spaces/mamba's PyTorch ``Mamba2`` / ``Mamba2Simple`` state dict -> :class:`Mamba2`
  params.

  Reference: ``mamba_ssm/modules/mamba2.py`` (``Mamba2``), ``mamba2_simple.py``,
  ``ssd_minimal.py`` (the SSD), ``ops/triton/layernorm_gated.py`` (``RMSNorm``,
  ``rms_norm_ref``). Same names, ``nn.Linear`` ``weight`` ``[out, in]`` transposed:

  * ``in_proj.weight`` ``[2E + 2N + H, d_model]`` -> ``in_proj/kernel``; both pack the
    outputs in the order z ``[E]``, x ``[E]``, B ``[N]``, C ``[N]``, dt ``[H]``.
  * ``conv1d.weight`` ``[E + 2N, 1, W]`` -> ``conv1d/w`` ``[W, E + 2N]`` (tap ``W - 1`` on
    the current token in both), ``conv1d.bias`` -> ``conv1d/b``.
  * ``dt_bias``, ``A_log``, ``D`` ``[H]`` as they are (``A = -exp(A_log)``,
    ``dt = softplus(dt + dt_bias)`` in both).
  * ``norm.weight`` ``[E]`` (their gated ``RMSNorm``, ``norm(y * SiLU(z))``, eps 1e-5,
    one group) -> ``norm/scale``.
  * ``out_proj.weight`` ``[d_model, E]`` -> ``out_proj/kernel``.

  Representable: ``expand=2``, ``ngroups=1``, ``d_ssm=None``, ``rmsnorm=True``,
  ``norm_before_gate=False``, ``D_has_hdim=False``, ``bias=False``, ``conv_bias=True``, no
  ``learnable_init_states`` (``Mamba2Simple``); any ``headdim`` (``H = 2 d_model /
  headdim``), ``d_state`` and ``d_conv``. Other settings give other shapes, extra or
  missing keys, and raise ``ValueError`` naming the key -- except three that a state dict
  does not show: ``ngroups * d_state`` is all the shapes fix (so ``d_state`` is required:
  with it, a multi-group checkpoint is refused instead of misread), ``norm_before_gate``
  and ``dt_limit`` (must be the default ``(0, inf)``: seqjax does not clamp ``dt``).
  Keys may carry a common prefix (e.g. ``backbone.layers.0.mixer.``). Returns float32
  NumPy arrays; build ``Mamba2(d_model, num_heads=H, mamba2_d_state=N, conv_width=W)``.
  """
  names = ('in_proj.weight', 'conv1d.weight', 'conv1d.bias', 'dt_bias', 'A_log', 'D',
           'norm.weight', 'out_proj.weight')
  prefix, w = named_weights(weights, names, module='Mamba2', target='Mamba2')
  for name, ndim in (('in_proj.weight', 2), ('conv1d.weight', 3), ('dt_bias', 1)):
    if w[name].ndim != ndim:
      raise ValueError(f'torch weight {prefix + name!r} has shape {w[name].shape}, '
                       f'expected {ndim} dimensions')
  d = w['in_proj.weight'].shape[1]
  e, h = 2 * d, w['dt_bias'].shape[0]
  channels, width = w['conv1d.weight'].shape[0], w['conv1d.weight'].shape[-1]
  n = (channels - e) // 2
  if channels - e != 2 * d_state:
    raise ValueError(f"torch weight {prefix + 'conv1d.weight'!r} has {channels} channels, "
                     f'expected E + 2 d_state = {e + 2 * d_state}: Mamba2 has one B/C group '
                     '(ngroups=1)')
  if n <= 0 or (channels - e) % 2:
    raise ValueError(f"torch weight {prefix + 'conv1d.weight'!r} has {channels} channels, "
                     f'expected E + 2N with E = 2 d_model = {e} and N > 0 (expand=2)')
  if e % h:
    raise ValueError(f"torch weight {prefix + 'dt_bias'!r} has {h} heads, which do not "
                     f'divide E = {e}')
  shapes = {'in_proj.weight': (2 * e + 2 * n + h, d),
            'conv1d.weight': (e + 2 * n, 1, width), 'conv1d.bias': (e + 2 * n,),
            'A_log': (h,), 'D': (h,), 'norm.weight': (e,), 'out_proj.weight': (d, e)}
  for name, shape in shapes.items():
    if w[name].shape != shape:
      raise ValueError(f'torch weight {prefix + name!r} has shape {w[name].shape}, '
                       f'expected {shape} (expand=2, ngroups=1, d_state={n}, heads={h})')
  return {'in_proj': {'kernel': w['in_proj.weight'].T.copy()},
          'conv1d': {'w': w['conv1d.weight'][:, 0].T.copy(), 'b': w['conv1d.bias']},
          'dt_bias': w['dt_bias'], 'A_log': w['A_log'], 'D': w['D'],
          'norm': {'scale': w['norm.weight']},
          'out_proj': {'kernel': w['out_proj.weight'].T.copy()}}
