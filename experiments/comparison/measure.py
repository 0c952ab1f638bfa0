"""Building blocks shared by the measurement experiments: jitted train/forward/decode
functions for a config, and their time and compiled memory."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from seqjax.utils.timing import compile_stats, time_fn
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model


def lm_functions(cfg: ModelConfig, batch: int, time: int, seed: int = 0,
                 abstract: bool = False):
  """``(params, tokens, grad_fn, forward_fn)`` for a causal LM: ``grad_fn`` is one
  forward+backward pass of the next-token loss (the work of a training step minus the
  optimizer update, which is the same for every family).

  ``abstract=True`` gives ``params`` as ``jax.ShapeDtypeStruct`` leaves, enough to compile
  (e.g. for ``temp_bytes``) without compiling and running the initialiser."""
  model = build_model(cfg)
  tokens = jax.random.randint(jax.random.key(seed), (batch, time), 1, cfg.vocab_size)
  init_args = (jax.random.key(seed), tokens[:, :8])
  variables = (jax.eval_shape(model.init, *init_args) if abstract
               else jax.jit(model.init)(*init_args))
  params = variables['params']

  def loss(params, tokens):
    logits = model.apply({'params': params}, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  forward = lambda params, tokens: model.apply({'params': params}, tokens)
  return params, tokens, jax.grad(loss), forward


def timed(fn: Callable[..., Any], *args: Any, repeats: int) -> float:
  """Median milliseconds of ``jax.jit(fn)(*args)`` after warm-up."""
  return time_fn(jax.jit(fn), *args, warmup=1, repeats=repeats)['median_ms']


def temp_bytes(fn: Callable[..., Any], *args: Any) -> int:
  """XLA's temporary-buffer size of the compiled ``fn`` (activations, attention
  matrices...), excluding arguments and outputs."""
  return compile_stats(fn, *args).get('temp_bytes', 0)


def decode_latency_ms(cfg: ModelConfig, steps: int, repeats: int) -> float:
  """Milliseconds per generated token for batch 1, streaming through ``step`` inside one
  ``lax.scan`` of ``steps`` tokens (so Python dispatch is not measured)."""
  model = build_model(cfg)
  params = jax.jit(model.init)(jax.random.key(0), jnp.ones((1, 8), jnp.int32))['params']
  variables = {'params': params}

  def decode(variables):
    state = model.apply(variables, 1, method='init_state')

    def body(carry, _):
      state, token = carry
      state, logits = model.apply(variables, state, token, method='step')
      return (state, jnp.argmax(logits, -1).astype(jnp.int32)), None

    (state, token), _ = jax.lax.scan(body, (state, jnp.ones((1,), jnp.int32)), None,
                                     length=steps)
    return token

  return timed(decode, variables, repeats=repeats) / steps
