"""Floating-point operations of a model, counted from its jaxpr.

Parameter counts can hide large differences in compute: an attention layer's cost grows
with the context, an LSTM's does not, and an SSM's scan does work per state entry that no
weight matrix shows. ``forward_flops_per_token(cfg, seq_len)`` counts what the forward pass
actually executes, by walking the program JAX traces:

* ``dot_general``: ``2 * prod(output shape) * prod(contracted sizes)`` (a multiply and an
  add per term); ``conv_general_dilated`` likewise per kernel tap;
* ``fft``: ``5 N log2 N`` per complex transform of length ``N`` (the usual radix-2
  estimate; half that for real transforms);
* element-wise arithmetic and transcendental functions: one per output element;
  reductions: one per input element; data movement (reshape, gather, slices...): zero;
* loops: a ``scan`` body counts ``length`` times, so recurrences are charged per step
  (XLA's own cost analysis counts a loop body once); ``cond`` counts its costliest
  branch; other nested programs (jit, custom_vjp/jvp, remat) count once.

A ``while`` loop whose trip count is not static is counted once and reported in
``uncounted_while_loops``: none of seqjax's models uses one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from seqjax.models.registry import build_model

ELEMENTWISE = frozenset({
    'add', 'sub', 'mul', 'div', 'rem', 'pow', 'integer_pow', 'max', 'min', 'neg', 'abs',
    'sign', 'exp', 'exp2', 'log', 'log1p', 'expm1', 'tanh', 'logistic', 'sin', 'cos', 'tan',
    'sqrt', 'rsqrt', 'cbrt', 'erf', 'erf_inv', 'atan2', 'square', 'reciprocal', 'select_n',
    'clamp', 'nextafter', 'floor', 'ceil', 'round', 'is_finite', 'eq', 'ne', 'lt', 'le',
    'gt', 'ge', 'and', 'or', 'not', 'xor', 'real', 'imag', 'complex', 'conj', 'add_any',
    'cumsum', 'cumprod', 'cummax', 'cumlogsumexp'})
REDUCTIONS = frozenset({'reduce_sum', 'reduce_max', 'reduce_min', 'reduce_prod',
                        'argmax', 'argmin', 'reduce_and', 'reduce_or'})


@dataclasses.dataclass
class FlopCount:
  matmul: float = 0.0          # dot_general + convolutions
  fft: float = 0.0
  elementwise: float = 0.0     # element-wise ops and reductions
  uncounted_while_loops: int = 0

  @property
  def total(self) -> float:
    return self.matmul + self.fft + self.elementwise

  def scaled(self, factor: float) -> 'FlopCount':
    return FlopCount(self.matmul * factor, self.fft * factor, self.elementwise * factor,
                     self.uncounted_while_loops)

  def add(self, other: 'FlopCount') -> None:
    self.matmul += other.matmul
    self.fft += other.fft
    self.elementwise += other.elementwise
    self.uncounted_while_loops += other.uncounted_while_loops


def _size(aval) -> int:
  return int(math.prod(getattr(aval, 'shape', ())))


def _sub_jaxprs(value: Any):
  """Jaxprs held directly in an equation parameter (or a tuple/list of them)."""
  if isinstance(value, jax.extend.core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax.extend.core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _sub_jaxprs(item)


def _fft_flops(eqn) -> float:
  lengths = [int(n) for n in eqn.params['fft_lengths']]
  n = math.prod(lengths)
  batch = _size(eqn.invars[0].aval) / max(
      math.prod(eqn.invars[0].aval.shape[-len(lengths):]), 1)
  real = 'R' in str(eqn.params['fft_type'])  # RFFT / IRFFT: half a complex transform
  return (0.5 if real else 1.0) * 5.0 * n * math.log2(max(n, 2)) * batch


def count_jaxpr(jaxpr) -> FlopCount:
  """The ``FlopCount`` of one (open) jaxpr; see the module docstring for the rules."""
  out = FlopCount()
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      out.matmul += 2.0 * _size(eqn.outvars[0].aval) * math.prod(lhs[d] for d in contract)
    elif name == 'conv_general_dilated':
      rhs = eqn.invars[1].aval.shape  # kernel; its 'O' dim is in the output size already
      dn = eqn.params['dimension_numbers']
      out_feature = dn.rhs_spec[0]
      per_output = math.prod(s for i, s in enumerate(rhs) if i != out_feature)
      out.matmul += 2.0 * _size(eqn.outvars[0].aval) * per_output
    elif name == 'fft':
      out.fft += _fft_flops(eqn)
    elif name in ELEMENTWISE:
      out.elementwise += float(sum(_size(v.aval) for v in eqn.outvars))
    elif name in REDUCTIONS:
      out.elementwise += float(_size(eqn.invars[0].aval))
    elif name == 'scan':
      out.add(count_jaxpr(eqn.params['jaxpr'].jaxpr).scaled(eqn.params['length']))
    elif name == 'cond':
      branches = [count_jaxpr(b.jaxpr) for b in eqn.params['branches']]
      out.add(max(branches, key=lambda c: c.total))
    elif name == 'while':
      out.add(count_jaxpr(eqn.params['body_jaxpr'].jaxpr))
      out.uncounted_while_loops += 1
    else:
      # jit (pjit), custom_jvp_call / custom_vjp_call, remat, closed_call...: the nested
      # program runs once. Only the primal program is counted, never a VJP rule.
      for key, value in eqn.params.items():
        if key in ('fwd_jaxpr_thunk', 'bwd', 'jvp_jaxpr_fun', 'jvp_jaxpr_thunk'):
          continue
        for sub in _sub_jaxprs(value):
          out.add(count_jaxpr(sub))
  return out


def count_flops(fn: Callable[..., Any], *args: Any) -> FlopCount:
  """The ``FlopCount`` of ``fn(*args)`` (traced, not run)."""
  return count_jaxpr(jax.make_jaxpr(fn)(*args).jaxpr)


def forward_flops_per_token(cfg, seq_len: int) -> FlopCount:
  """FLOPs of one parallel forward pass over a ``[1, seq_len]`` sequence, divided by
  ``seq_len``, for the model ``cfg`` (a ``ModelConfig``; token inputs, or continuous
  inputs of ``cfg.input_features``). Training costs about three times this (the backward
  pass does roughly twice the forward's work)."""
  model = build_model(cfg)
  if cfg.input_features:
    x = jnp.zeros((1, seq_len, cfg.input_features), jnp.float32)
  else:
    x = jnp.ones((1, seq_len), jnp.int32)
  args = (x,) if cfg.head != 'seq2seq' else (x, jnp.ones((1, seq_len), jnp.int32))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))['params']
  count = count_flops(lambda p: model.apply({'params': p}, *args), params)
  return count.scaled(1.0 / seq_len)
