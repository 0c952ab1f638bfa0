"""Streaming generation from a ``CausalLM``: prefill the prompt token by token, then sample.

Everything runs inside ``lax.scan`` over the model's ``step``, so the cost per new token is
the family's streaming cost: constant for LSTM/GRU/S4D/Mamba, a KV-cache read growing
linearly with the context for a Transformer.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from seqjax.models.lm import CausalLM

Array = jax.Array


def sample_logits(logits: Array, rng: Array, temperature: float = 1.0,
                  top_k: int = 0) -> Array:
  """Samples ids ``[batch]`` from logits ``[batch, vocab]``; ``temperature == 0`` is greedy,
  ``top_k > 0`` keeps only the k most likely ids (Fan et al. 2018)."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=('model', 'num_steps', 'temperature', 'top_k'))
def generate(model: CausalLM, params, prompt: Array, num_steps: int, rng: Array,
             temperature: float = 1.0, top_k: int = 0) -> Array:
  """Continues ``prompt`` ``[batch, prompt_len]`` by ``num_steps`` sampled tokens.

  Returns ``[batch, prompt_len + num_steps]``. A Transformer needs
  ``prompt_len + num_steps <= max_len`` (its KV-cache size).
  """
  total = prompt.shape[1] + num_steps
  if model.cfg.family.bounded_stream and total > model.cfg.max_len:
    raise ValueError(f'prompt ({prompt.shape[1]}) + num_steps ({num_steps}) = {total} '
                     f'exceeds the KV cache (max_len={model.cfg.max_len})')
  variables = {'params': params}
  step = lambda state, token: model.apply(variables, state, token, method='step')

  state = model.apply(variables, prompt.shape[0], method='init_state')
  state, logits = jax.lax.scan(step, state, prompt.T)
  last_logits = logits[-1]

  def sample_step(carry, key):
    state, logits = carry
    token = sample_logits(logits, key, temperature, top_k)
    state, logits = step(state, token)
    return (state, logits), token

  keys = jax.random.split(rng, num_steps)
  _, new_tokens = jax.lax.scan(sample_step, (state, last_logits), keys)
  return jnp.concatenate([prompt, new_tokens.T.astype(prompt.dtype)], axis=1)
