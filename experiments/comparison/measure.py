"""Building blocks shared by the measurement experiments: jitted train/forward/decode
functions for a config, and their time and compiled memory."""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any, Callable, Iterable, TypeVar

from absl import logging
import jax
import jax.numpy as jnp
import optax

from seqjax.utils.timing import compile_stats, time_fn
from seqjax.utils.xla import compiled_quickly, fast_compile_options
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model

T = TypeVar('T')
R = TypeVar('R')


def concurrently(build: Callable[[T], R], items: Iterable[T]) -> list[R]:
  """``[build(item) for item in items]``, on one thread per core.

  For the build half of a timing row (and for fresh-process probes): XLA's compile runs
  outside the Python lock, so it overlaps; tracing and initialisation do not. The
  programs are then timed one at a time, with nothing else running. Measured gain
  (BENCHMARKS.md): the memory row ~12 %, the speed row none within the day-to-day
  spread."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
    return list(pool.map(build, items))


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
               else initialised(model, *init_args))
  params = variables['params']

  def loss(params, tokens):
    logits = model.apply({'params': params}, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  forward = lambda params, tokens: model.apply({'params': params}, tokens)
  return params, tokens, jax.grad(loss), forward


def initialised(model, *init_args: Any) -> Any:
  """``model.init(*init_args)``, jitted with :func:`fast_compile_options`: a timing row
  runs each initialiser once, and its compile was ~30 % of building a point."""
  return compiled_quickly(jax.jit(model.init), *init_args)(*init_args)


def compiled(fn: Callable[..., Any], *args: Any) -> Callable[..., Any]:
  """``jax.jit(fn)`` compiled for ``args`` (ahead of time, so that timing it compiles
  nothing)."""
  return jax.jit(fn).lower(*args).compile()


def timed(fn: Callable[..., Any], *args: Any, repeats: int) -> float:
  """Median milliseconds of ``fn(*args)`` after warm-up; ``fn`` is jitted here unless it
  is already compiled (:func:`compiled`)."""
  if not isinstance(fn, jax.stages.Compiled):
    fn = jax.jit(fn)
  return time_fn(fn, *args, warmup=1, repeats=repeats)['median_ms']


OUT_OF_MEMORY = 'out of memory'


def ran_out_of_memory(error: BaseException) -> bool:
  """Whether ``error`` is the device refusing an allocation (XLA's RESOURCE_EXHAUSTED),
  an outcome to record (e.g. exact attention at the full suite's lengths on a CPU), not a
  failure of the report. A program whose input failed to allocate (an asynchronously
  dispatched initialiser) reports it as ``INTERNAL: Error dispatching computation: Out of
  memory allocating N bytes``: the same refusal, seen one call later."""
  text = str(error)
  return isinstance(error, jax.errors.JaxRuntimeError) and (
      'RESOURCE_EXHAUSTED' in text or 'Out of memory allocating' in text)


def timed_unless_out_of_memory(fn: Callable[..., Any], *args: Any,
                               repeats: int) -> float | None:
  """:func:`timed`, or None when the program does not fit in the device's memory."""
  try:
    return timed(fn, *args, repeats=repeats)
  except jax.errors.JaxRuntimeError as error:
    if not ran_out_of_memory(error):
      raise
    logging.warning('out of memory, recorded as such: %s', str(error).splitlines()[0])
    return None


def temp_bytes(fn: Callable[..., Any], *args: Any) -> int:
  """XLA's temporary-buffer size of the compiled ``fn`` (activations, attention
  matrices...), excluding arguments and outputs. Compiled without LLVM's optimisations
  (:func:`fast_compile_options`): the program only reports its buffers, never runs."""
  return compile_stats(fn, *args, compiler_options=fast_compile_options()).get(
      'temp_bytes', 0)


def decode_program(cfg: ModelConfig, steps: int) -> tuple[Callable[..., Any], Any]:
  """``(compiled decode, its argument)``: ``steps`` tokens streamed through ``step``
  inside one ``lax.scan``, batch 1, so that timing it (``timed(...) / steps`` = time per
  generated token) measures no Python dispatch."""
  model = build_model(cfg)
  params = initialised(model, jax.random.key(0), jnp.ones((1, 8), jnp.int32))['params']
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

  return compiled(decode, variables), variables
