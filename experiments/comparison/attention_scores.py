"""Scores that check attention (and saliency) maps against a known right answer: the
digit alignment of toy date normalisation (Bahdanau et al. 2015, fig. 3), induction and
previous-token scores of self-attention heads (Olsson et al. 2022), and gradient saliency
for models without attention (Simonyan et al. 2014). Shapes: weights ``[batch, heads,
query, key]`` or ``[batch, query, key]``; tokens ``[batch, time]``."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax.models.backbone import InputEmbedding

# Target layout of the date task: 'YYYY-MM-DD' (then EOS); where each field starts.
YEAR_AT, MONTH_AT, DAY_AT = 0, 5, 8


def date_alignment(source: str) -> list[tuple[int, int]]:
  """``(target position, source position)`` of every target digit copied from the source.

  Every date format ends with the 4-digit year; the first digit run is the day, and a
  third run (``'23.11.2026'``) is the month. Day and month align right-justified: in
  ``'3 nov 2026'`` the day's ``'3'`` is target ``9`` and the padding ``'0'`` (target 8)
  translates nothing, so it is not scored. Month names and separators are not copies.
  """
  runs = [(m.start(), m.end()) for m in re.finditer(r'\d+', source)]
  if len(runs) < 2 or runs[-1][1] - runs[-1][0] != 4:
    raise ValueError(f'{source!r} is not a date of the toy_translation task')
  pairs = [(YEAR_AT + k, runs[-1][0] + k) for k in range(4)]
  fields = [(runs[0], DAY_AT)] + ([(runs[1], MONTH_AT)] if len(runs) == 3 else [])
  for (start, end), target_at in fields:
    pairs += [(target_at + 2 - (end - s), s) for s in range(max(start, end - 2), end)]
  return sorted(pairs)


def alignment_accuracy(weights: np.ndarray, pairs: list[list[tuple[int, int]]],
                       tolerance: int = 0) -> float:
  """Fraction of aligned target tokens whose attention argmax is within ``tolerance`` of
  the source position they translate. ``weights`` ``[batch, tgt, src]``; ``pairs[b]``
  lists example ``b``'s ``(target, source)`` positions."""
  hits = [abs(int(np.argmax(weights[b, t])) - s) <= tolerance
          for b, rows in enumerate(pairs) for t, s in rows]
  return float(np.mean(hits)) if hits else float('nan')


def previous_occurrence(tokens: np.ndarray) -> np.ndarray:
  """``[batch, time]``: the last position ``j < t`` holding ``tokens[t]``, else -1."""
  time_ = tokens.shape[1]
  same = (tokens[:, :, None] == tokens[:, None, :]) & np.tri(time_, k=-1, dtype=bool)
  return np.where(same, np.arange(time_), -1).max(-1)


def induction_scores(weights: np.ndarray, tokens: np.ndarray,
                     query_mask: np.ndarray | None = None) -> np.ndarray:
  """Per-head induction score (Olsson et al. 2022): mean attention from a query ``t`` to
  ``j + 1``, where ``j < t`` is the last earlier occurrence of ``tokens[t]``.

  ``weights`` ``[batch, heads, query, key]``, ``tokens`` ``[batch, time]``; queries are
  the positions of ``query_mask`` (default all) whose token occurred before. -> ``[heads]``
  (NaN if no query qualifies).
  """
  prev = previous_occurrence(tokens)
  valid = prev >= 0 if query_mask is None else (prev >= 0) & (query_mask > 0)
  b, t = np.nonzero(valid)
  if not len(b):
    return np.full(weights.shape[1], np.nan)
  return weights[b, :, t, prev[b, t] + 1].mean(0)


def previous_token_scores(weights: np.ndarray,
                          query_mask: np.ndarray | None = None) -> np.ndarray:
  """Per-head mean attention from query ``t >= 1`` to key ``t - 1`` over the positions of
  ``query_mask`` (default all). ``weights`` ``[batch, heads, query, key]`` -> ``[heads]``."""
  batch, _, time_, _ = weights.shape
  mask = (np.ones((batch, time_)) if query_mask is None else
          np.array(query_mask, float))  # a copy: the next line writes to it
  mask[:, 0] = 0  # the first position has no previous token
  b, t = np.nonzero(mask)
  return weights[b, :, t, t - 1].mean(0)


def uniform_induction_baseline(tokens: np.ndarray, query_mask: np.ndarray) -> float:
  """The induction score of causal attention spread evenly: mean of ``1 / (t + 1)``."""
  valid = (previous_occurrence(tokens) >= 0) & (query_mask > 0)
  return float(np.mean(1.0 / (np.nonzero(valid)[1] + 1)))


def embedding_saliency(model, params, tokens: jax.Array, position: int,
                       target_ids: jax.Array) -> np.ndarray:
  """``|d logit[position, target] / d embedding_t|`` (L2 over features) ``[batch, time]``.

  The gradient is taken with respect to a zero offset added to the token embeddings
  through a Flax method interceptor, so any family's language model works unchanged.
  """
  cfg = model.cfg
  width = cfg.d_model if cfg.backbone == 'residual' else cfg.token_dim

  def target_logit(offset, params, tokens, target_ids):
    def add_offset(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if isinstance(context.module, InputEmbedding) and context.method_name == '__call__':
        return out + offset
      return out
    with nn.intercept_methods(add_offset):
      logits = model.apply({'params': params}, tokens)
    return jnp.take_along_axis(logits[:, position], target_ids[:, None], axis=-1).sum()

  offset = jnp.zeros((*tokens.shape, width), jnp.float32)
  grads = jax.jit(jax.grad(target_logit))(offset, params, tokens, target_ids)
  return np.asarray(jnp.linalg.norm(grads, axis=-1))
