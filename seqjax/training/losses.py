"""Loss and metrics for each task kind, as *sums* that add up exactly across batches,
micro-batches, devices and hosts; ``finalize`` turns the sums into metric values.

Every batch row carries ``example_weight`` (0 on filler rows of a padded last eval batch),
so metrics over a split are exact whatever the batch size. Kinds (``seqjax.data.spec``):

* classification: cross-entropy; a confusion matrix ``[num_classes, num_classes]``
  (rows = true class) gives accuracy, F1 (positive class 1 when binary, macro otherwise)
  and the Matthews correlation (Matthews 1975; multi-class form of Gorodkin 2004).
* regression: squared error (MSE) and the fraction with ``|error| < 0.04`` (the adding
  problem's success criterion, Hochreiter & Schmidhuber 1997).
* token / seq2seq: cross-entropy over positions with ``weights > 0``; token accuracy,
  sequence accuracy (every scored position right) and perplexity ``exp(loss)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array
WITHIN = 0.04


def loss_sums(kind: str, outputs: Array, batch: Mapping[str, Array],
              num_classes: int = 0) -> dict[str, Array]:
  """Sums for one batch. ``outputs``: logits ``[B, C]`` (classification), ``[B, 1]``
  (regression) or ``[B, T, V]`` (token, seq2seq). ``loss_sum / weight`` is the mean loss.

  Returns a dict with ``loss_sum`` and ``weight`` (scalars) and kind-specific counts.
  """
  ew = batch['example_weight'].astype(jnp.float32)  # [B]
  if kind == 'classification':
    label = batch['label'].astype(jnp.int32)
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs, label)
    pred = jnp.argmax(outputs, axis=-1)
    onehot_true = jax.nn.one_hot(label, num_classes) * ew[:, None]
    confusion = onehot_true.T @ jax.nn.one_hot(pred, num_classes)  # [C_true, C_pred]
    return {'loss_sum': jnp.sum(ce * ew), 'weight': jnp.sum(ew), 'confusion': confusion}
  if kind == 'regression':
    err = outputs[:, 0].astype(jnp.float32) - batch['label'].astype(jnp.float32)
    return {'loss_sum': jnp.sum(err ** 2 * ew), 'weight': jnp.sum(ew),
            'within': jnp.sum((jnp.abs(err) < WITHIN) * ew)}
  if kind in ('token', 'seq2seq'):
    targets = batch['targets'].astype(jnp.int32)
    w = batch['weights'].astype(jnp.float32) * ew[:, None]  # [B, T]
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs, targets)
    right = jnp.argmax(outputs, axis=-1) == targets
    scored = w > 0
    has_any = jnp.any(scored, axis=-1)
    seq_right = jnp.all(right | ~scored, axis=-1) & has_any
    return {'loss_sum': jnp.sum(ce * w), 'weight': jnp.sum(w),
            'correct': jnp.sum(right * w),
            'seq_correct': jnp.sum(seq_right * ew), 'seqs': jnp.sum(has_any * ew)}
  raise ValueError(f'unknown task kind {kind!r}')


def add_sums(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> dict[str, Any]:
  """Elementwise sum of two sum-dicts (host NumPy, float64), ``a`` may be None."""
  b = {k: np.asarray(v, np.float64) for k, v in b.items()}
  if a is None:
    return b
  return {k: a[k] + b[k] for k in b}


def _safe_div(num: float, den: float) -> float:
  return float(num / den) if den else 0.0


def classification_metrics(confusion: np.ndarray) -> dict[str, float]:
  """Accuracy, F1 and MCC from a confusion matrix ``[C, C]`` (rows = true class)."""
  c = np.asarray(confusion, np.float64)
  total, correct = c.sum(), np.trace(c)
  true_k, pred_k = c.sum(axis=1), c.sum(axis=0)
  tp = np.diag(c)
  f1_k = np.array([_safe_div(2 * tp[k], true_k[k] + pred_k[k]) for k in range(len(c))])
  f1 = f1_k[1] if len(c) == 2 else float(f1_k.mean())
  cov = correct * total - pred_k @ true_k
  den = np.sqrt((total ** 2 - pred_k @ pred_k) * (total ** 2 - true_k @ true_k))
  return {'accuracy': _safe_div(correct, total), 'f1': float(f1),
          'mcc': _safe_div(cov, den)}


def finalize(kind: str, sums: Mapping[str, Any]) -> dict[str, float]:
  """Metric values from summed counts: always ``loss``, plus the kind's metrics."""
  sums = {k: np.asarray(v, np.float64) for k, v in sums.items()}
  loss = _safe_div(sums['loss_sum'], sums['weight'])
  out = {'loss': loss}
  if kind == 'classification':
    out.update(classification_metrics(sums['confusion']))
  elif kind == 'regression':
    out.update({'mse': loss, 'within_0.04': _safe_div(sums['within'], sums['weight'])})
  else:
    out.update({'token_accuracy': _safe_div(sums['correct'], sums['weight']),
                'sequence_accuracy': _safe_div(sums['seq_correct'], sums['seqs']),
                'perplexity': float(np.exp(min(loss, 80.0)))})
  return out
