"""Loss and metrics for each task kind, as *sums* that add up exactly across batches,
micro-batches, devices and hosts; ``finalize`` turns the sums into metric values.

Every batch row carries ``example_weight`` (0 on filler rows of a padded last eval batch),
so metrics over a split are exact whatever the batch size. Kinds (``seqjax.data.spec``):

* classification: cross-entropy; a confusion matrix ``[num_classes, num_classes]``
  (rows = true class) gives accuracy, F1 (positive class 1 when binary, macro otherwise)
  and the Matthews correlation (Matthews 1975; multi-class form of Gorodkin 2004).
* regression: squared error (MSE), the fraction with ``|error| < 0.04`` (the adding
  problem's success criterion, Hochreiter & Schmidhuber 1997) and the Pearson correlation
  of prediction and target (from moment sums); with ``per_example=True`` (evaluation) the
  predictions themselves are kept, concatenated rather than summed, for the Spearman rank
  correlation (STS-B's second GLUE metric, Wang et al. 2019).
* token / seq2seq: cross-entropy over positions with ``weights > 0``; token accuracy,
  sequence accuracy (every scored position right), perplexity ``exp(loss)`` and
  ``bits_per_<unit>`` = ``loss / ln 2`` (bits per character / byte for character LMs).

A task lists the metrics that mean something for it (``TaskSpec.metrics``, e.g. no
sequence accuracy for a language model, MCC for CoLA); ``finalize(..., metrics)`` reports
``loss`` and those only.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array
WITHIN = 0.04
# Per-example entries (``[B]``) that ``add_sums`` concatenates instead of adding.
PER_EXAMPLE = ('pred', 'target', 'example_weight')


def loss_sums(kind: str, outputs: Array, batch: Mapping[str, Array],
              num_classes: int = 0, per_example: bool = False) -> dict[str, Array]:
  """Sums for one batch. ``outputs``: logits ``[B, C]`` (classification), ``[B, 1]``
  (regression) or ``[B, T, V]`` (token, seq2seq). ``loss_sum / weight`` is the mean loss.

  Returns a dict with ``loss_sum`` and ``weight`` (scalars) and kind-specific counts;
  ``per_example`` adds the regression predictions, targets and example weights ``[B]``.
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
    pred = outputs[:, 0].astype(jnp.float32)
    target = batch['label'].astype(jnp.float32)
    err = pred - target
    sums = {'loss_sum': jnp.sum(err ** 2 * ew), 'weight': jnp.sum(ew),
            'within': jnp.sum((jnp.abs(err) < WITHIN) * ew),
            # Moments for Pearson's r; centred on the batch's targets would be safer
            # numerically, but sums of float32 products suffice at these magnitudes.
            'sum_p': jnp.sum(pred * ew), 'sum_t': jnp.sum(target * ew),
            'sum_pp': jnp.sum(pred * pred * ew), 'sum_tt': jnp.sum(target * target * ew),
            'sum_pt': jnp.sum(pred * target * ew)}
    if per_example:
      sums.update(pred=pred, target=target, example_weight=ew)
    return sums
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
  """Elementwise sum of two sum-dicts (host NumPy, float64), ``a`` may be None;
  per-example entries (``PER_EXAMPLE``) are concatenated."""
  b = {k: np.asarray(v, np.float64) for k, v in b.items()}
  if a is None:
    return b
  return {k: np.concatenate([a[k], b[k]]) if k in PER_EXAMPLE else a[k] + b[k] for k in b}


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


def _pearson(n: float, sp: float, st: float, spp: float, stt: float, spt: float) -> float:
  cov = n * spt - sp * st
  var = (n * spp - sp * sp) * (n * stt - st * st)
  return float(cov / np.sqrt(var)) if var > 0 else 0.0


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 0..n-1 of ``x``, ties sharing their mean rank (as Spearman's rho needs)."""
  ranks = np.empty(len(x), np.float64)
  ranks[np.argsort(x, kind='stable')] = np.arange(len(x))
  _, tie_group, counts = np.unique(x, return_inverse=True, return_counts=True)
  return (np.bincount(tie_group, weights=ranks) / counts)[tie_group]


def regression_metrics(sums: Mapping[str, np.ndarray]) -> dict[str, float]:
  """Pearson's r from moment sums; Spearman's rho when predictions were kept."""
  out = {'pearson': _pearson(sums['weight'], sums['sum_p'], sums['sum_t'], sums['sum_pp'],
                             sums['sum_tt'], sums['sum_pt'])}
  if 'pred' in sums:
    real = sums['example_weight'] > 0  # drop the filler rows of a padded last batch
    rp, rt = _average_ranks(sums['pred'][real]), _average_ranks(sums['target'][real])
    out['spearman'] = _pearson(len(rp), rp.sum(), rt.sum(), rp @ rp, rt @ rt, rp @ rt)
  return out


def finalize(kind: str, sums: Mapping[str, Any],
             metrics: tuple[str, ...] | None = None) -> dict[str, float]:
  """Metric values from summed counts: ``loss`` plus the kind's metrics, or only those
  in ``metrics`` (the task's ``TaskSpec.metrics``) when not empty. ``bits_per_<unit>`` (any
  unit: char, byte, token) is the loss in bits."""
  sums = {k: np.asarray(v, np.float64) for k, v in sums.items()}
  loss = _safe_div(sums['loss_sum'], sums['weight'])
  out = {'loss': loss}
  if kind == 'classification':
    out.update(classification_metrics(sums['confusion']))
  elif kind == 'regression':
    out.update({'mse': loss, 'within_0.04': _safe_div(sums['within'], sums['weight']),
                **regression_metrics(sums)})
  else:
    out.update({'token_accuracy': _safe_div(sums['correct'], sums['weight']),
                'sequence_accuracy': _safe_div(sums['seq_correct'], sums['seqs']),
                'perplexity': float(np.exp(min(loss, 80.0)))})
  if not metrics:
    return out
  for name in metrics:
    if name.startswith('bits_per_'):
      out[name] = loss / np.log(2.0)
  return {k: v for k, v in out.items() if k == 'loss' or k in metrics}
