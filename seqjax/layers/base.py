"""The sequence-mixer interface every seqjax family implements.

A *mixer* is a ``flax.linen.Module`` that maps a sequence of feature vectors to another
sequence of the same length. Every family (LSTM, GRU, multi-head attention, S4D, Mamba)
exposes the same three methods so that heads, trainers and benchmarks never special-case
an architecture:

``__call__(x, mask=None, *, deterministic=True) -> y``
    Parallel mode over a whole sequence. ``x``: ``[batch, time, d_in]``; ``mask``:
    ``[batch, time]`` bool, ``True`` on real tokens (``None`` means every token is real);
    ``y``: ``[batch, time, d_out]``. At real positions ``y`` equals what the mixer gives for
    that sequence run alone without padding. Values at padded positions are finite but
    carry no meaning; heads must mask them out.

``init_state(batch_size) -> state``
    The streaming state before the first token: a pytree of arrays (recurrent ``(h, c)``
    per layer, an SSM state, or a fixed-size KV cache with a position counter).

``step(state, x_t) -> (new_state, y_t)``
    Streaming mode, one token: ``x_t`` ``[batch, d_in]`` to ``y_t`` ``[batch, d_out]``.
    Feeding a sequence through ``step`` token by token gives the same outputs as
    ``__call__`` on the whole sequence (tested for every causal family to 1e-5).

Non-causal mixers (a bidirectional LSTM, attention without a causal mask) cannot stream;
their ``is_causal`` is ``False`` and ``init_state``/``step`` raise ``NotImplementedError``.

Widths are explicit constructor arguments (``d_model``, ``input_size`` ...) so parameters
are created in ``setup()`` and shared by all three methods. Two more members serve the
config: ``check()`` raises a one-line ``ValueError`` naming the attribute for an impossible
setting (``setup()`` calls it, and ``ModelConfig`` calls it on an unbound module so that
mistakes fail before anything compiles), and the class attribute ``switches`` lists the
implementation switches (``seqjax.ops.switch``) the mixer reads from its ``impl``
attribute. ``tests/layers/test_mixer_contract.py`` checks every registered family against
this contract.

Padding convention: sequences are right-padded (``mask`` is a prefix of ``True``).
Recurrent layers additionally never advance their state on a padded token, so they are
correct for any mask.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

Array = jax.Array
State = Any


class Mixer(Protocol):
  """Structural type of a seqjax mixer (see the module docstring)."""

  is_causal: bool
  impl: str
  switches: tuple[Any, ...]

  def check(self) -> None: ...

  def __call__(self, x: Array, mask: Array | None = None, *,
               deterministic: bool = True) -> Array: ...

  def init_state(self, batch_size: int) -> State: ...

  def step(self, state: State, x_t: Array) -> tuple[State, Array]: ...


def not_streamable(module_name: str) -> NotImplementedError:
  """The error a non-causal mixer raises from ``init_state``/``step``."""
  return NotImplementedError(
      f'{module_name} is not causal (it looks at future tokens), so it has no '
      'streaming mode; use the parallel __call__ instead.')


def lengths_from_mask(mask: Array | None, batch: int, time: int) -> Array:
  """Number of real tokens per sequence, ``[batch]`` int32, from a prefix mask."""
  if mask is None:
    return jnp.full((batch,), time, jnp.int32)
  return jnp.sum(mask.astype(jnp.int32), axis=-1)
