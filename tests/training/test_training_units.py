"""Optimizer, losses/metrics and checkpoint retention, checked against NumPy references."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats  # a jax dependency; the independent reference for rank metrics

from experiments.configs import base
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model, init_params
from seqjax.training import losses, optimizer as opt_lib
from seqjax.training.checkpointing import Checkpointer
from seqjax.training.configuration import check_config, model_config, shape_differences
from seqjax.training.errors import UserError
from seqjax.training.state import TrainState, init_state
from seqjax.training.steps import make_train_step
from seqjax.data.spec import TaskSpec


def _paths(tree):
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _abstract_params(cfg: ModelConfig):
  # Shapes only: the mask depends on paths and ranks, so nothing needs to run.
  return jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))


def test_weight_decay_mask_excludes_biases_norms_embeddings():
  for model, head in [('transformer', 'lm'), ('lstm', 'classifier'), ('s4d', 'lm'),
                      ('mamba', 'lm'), ('lstm_attention', 'seq2seq')]:
    cfg = ModelConfig(model=model, head=head, d_model=8, num_layers=1, vocab_size=10,
                      num_heads=2, positions='learned', s4d_state_size=4,
                      tgt_vocab_size=10 if head == 'seq2seq' else 0)
    mask = _paths(opt_lib.weight_decay_mask(_abstract_params(cfg)))
    for path, decayed in mask.items():
      leaf = path.split("'")[-2]
      excluded = (leaf in ('bias', 'b', 'b_ih', 'b_hh', 'scale', 'embedding', 'conv_bias')
                  or "['embed']" in path or '_embed' in path or 'positions' in path)
      if excluded:
        assert not decayed, path
      if leaf in ('kernel', 'w_ih', 'w_hh', 'w_q', 'conv_kernel', 'w_key', 'w_query'):
        assert decayed, path
    assert any(mask.values()) and not all(mask.values())


def test_adamw_applies_the_mask():
  """With zero gradients (Adam moments 0) one AdamW step moves decayed leaves by
  ``-lr * wd * p`` and leaves every excluded leaf untouched."""
  cfg = ModelConfig(model='transformer', head='lm', d_model=8, num_layers=1, vocab_size=10,
                    num_heads=2, positions='learned')
  params = jax.jit(lambda r: init_params(cfg, r))(jax.random.PRNGKey(0))
  mask = _paths(opt_lib.weight_decay_mask(params))
  config = base.get_config()
  config.update(dict(learning_rate=0.1, warmup_steps=0, lr_schedule='constant',
                     weight_decay=0.5, grad_clip=0.0))
  tx, _ = opt_lib.make_optimizer(config)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
  for path, upd in _paths(updates).items():
    p = _paths(params)[path]
    expect = -0.1 * 0.5 * np.asarray(p) if mask[path] else np.zeros_like(p)
    np.testing.assert_allclose(upd, expect, rtol=1e-6, atol=1e-7)


def test_schedule_warmup_then_cosine():
  config = base.get_config()
  config.update(dict(learning_rate=2e-3, warmup_steps=10, num_steps=110, min_lr_ratio=0.1))
  sched = opt_lib.make_schedule(config)
  for t in (0, 5, 10, 30, 60, 110):
    if t < 10:
      ref = 2e-3 * t / 10
    else:
      frac = (t - 10) / 100
      ref = 2e-4 + (2e-3 - 2e-4) * 0.5 * (1 + np.cos(np.pi * frac))
    np.testing.assert_allclose(float(sched(t)), ref, rtol=1e-5, atol=1e-9)
  config.lr_schedule = 'constant'
  assert float(opt_lib.make_schedule(config)(50)) == pytest.approx(2e-3)


def test_grad_accumulation_equals_one_big_batch():
  """k micro-batches with *different* numbers of scored tokens == one batch of size B."""
  cfg = ModelConfig(model='transformer', head='lm', d_model=8, num_layers=1, num_heads=2,
                    vocab_size=12)
  model = build_model(cfg)
  # Plain SGD (lr 1): the update *is* the gradient, so the comparison is not blurred by
  # Adam's first step, which is about lr * sign(g) for every coordinate.
  tx, sched = optax.sgd(1.0), optax.constant_schedule(1.0)
  rng = np.random.default_rng(0)
  b, t = 8, 6
  weights = (rng.random((b, t)) < np.linspace(0.1, 0.9, b)[:, None]).astype(np.float32)
  weights[:, 0] = 1.0
  batch = {'inputs': jnp.asarray(rng.integers(1, 12, (b, t)), jnp.int32),
           'mask': jnp.ones((b, t), bool),
           'targets': jnp.asarray(rng.integers(1, 12, (b, t)), jnp.int32),
           'weights': jnp.asarray(weights),
           'example_weight': jnp.ones((b,), jnp.float32)}
  state0 = jax.jit(lambda: init_state(cfg, tx, seed=0))()
  out = {}
  for k in (1, 4):
    step = jax.jit(make_train_step(model, 'token', 0, tx, sched, grad_accum_steps=k))
    out[k] = step(state0, batch)
  for k in (4,):
    for a, c in zip(jax.tree.leaves(out[1][0].params), jax.tree.leaves(out[k][0].params)):
      np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1][1]['loss_sum'], out[k][1]['loss_sum'], rtol=1e-5)
    np.testing.assert_allclose(out[1][1]['grad_norm'], out[k][1]['grad_norm'], rtol=1e-5)


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_classification_metrics_match_numpy_and_add_across_batches():
  rng = np.random.default_rng(1)
  n, c = 40, 3
  logits = rng.normal(size=(n, c)).astype(np.float32)
  label = rng.integers(0, c, n)
  ew = np.ones(n, np.float32)
  ew[-5:] = 0.0  # filler rows
  sums = None
  for lo in range(0, n, 16):  # uneven batches must add up exactly
    sl = slice(lo, lo + 16)
    sums = losses.add_sums(sums, jax.device_get(losses.loss_sums(
        'classification', jnp.asarray(logits[sl]),
        {'label': jnp.asarray(label[sl]), 'example_weight': jnp.asarray(ew[sl])}, c)))
  got = losses.finalize('classification', sums)
  real = ew > 0
  y, p = label[real], logits[real].argmax(-1)
  ce = -_np_log_softmax(logits[real].astype(np.float64))[np.arange(real.sum()), y]
  assert got['loss'] == pytest.approx(ce.mean(), rel=1e-5)
  assert got['accuracy'] == pytest.approx((y == p).mean())
  f1s = []
  for k in range(c):
    tp, fp, fn = ((p == k) & (y == k)).sum(), ((p == k) & (y != k)).sum(), ((p != k) & (y == k)).sum()
    f1s.append(2 * tp / (2 * tp + fp + fn))
  assert got['f1'] == pytest.approx(np.mean(f1s))
  # Multi-class MCC = Pearson correlation of the one-hot true and predicted matrices.
  yt, yp = np.eye(c)[y], np.eye(c)[p]
  cov = lambda a, b: ((a - a.mean(0)) * (b - b.mean(0))).sum()
  assert got['mcc'] == pytest.approx(cov(yt, yp) / np.sqrt(cov(yt, yt) * cov(yp, yp)))


def test_binary_f1_mcc_and_regression_metrics():
  conf = np.array([[50, 10], [5, 35]])  # rows true, cols predicted
  got = losses.classification_metrics(conf)
  tn, fp, fn, tp = 50, 10, 5, 35
  assert got['f1'] == pytest.approx(2 * tp / (2 * tp + fp + fn))
  assert got['mcc'] == pytest.approx((tp * tn - fp * fn) / np.sqrt(
      (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
  pred = np.array([[0.5], [0.2], [1.0], [0.0]], np.float32)
  label = np.array([0.51, 0.3, 0.97, 0.0], np.float32)
  got = losses.finalize('regression', jax.device_get(losses.loss_sums(
      'regression', jnp.asarray(pred), {'label': jnp.asarray(label),
                                        'example_weight': jnp.ones(4)})))
  assert got['mse'] == pytest.approx(np.mean((pred[:, 0] - label) ** 2), rel=1e-5)
  assert got['within_0.04'] == pytest.approx(0.75)


def test_token_metrics_match_numpy():
  rng = np.random.default_rng(2)
  b, t, v = 6, 5, 7
  logits = rng.normal(size=(b, t, v)).astype(np.float32)
  targets = rng.integers(0, v, (b, t))
  targets[0] = logits[0].argmax(-1)  # one fully right sequence
  w = (rng.random((b, t)) < 0.7).astype(np.float32)
  w[0] = 1.0
  w[5] = 0.0  # a row with nothing scored counts in no sequence
  got = losses.finalize('token', jax.device_get(losses.loss_sums(
      'token', jnp.asarray(logits), {'targets': jnp.asarray(targets),
                                     'weights': jnp.asarray(w),
                                     'example_weight': jnp.ones(b)})))
  lp = _np_log_softmax(logits.astype(np.float64))
  ce = -np.take_along_axis(lp, targets[..., None], -1)[..., 0]
  right = logits.argmax(-1) == targets
  assert got['loss'] == pytest.approx((ce * w).sum() / w.sum(), rel=1e-5)
  assert got['token_accuracy'] == pytest.approx((right * w).sum() / w.sum())
  seq = [all(right[i][w[i] > 0]) for i in range(b) if w[i].any()]
  assert got['sequence_accuracy'] == pytest.approx(np.mean(seq))
  assert got['perplexity'] == pytest.approx(np.exp(got['loss']))
  # A character LM reports what fits it: bits per char = nats / ln 2, no sequence accuracy.
  lm = losses.finalize('token', jax.device_get(losses.loss_sums(
      'token', jnp.asarray(logits), {'targets': jnp.asarray(targets),
                                     'weights': jnp.asarray(w),
                                     'example_weight': jnp.ones(b)})),
      ('token_accuracy', 'perplexity', 'bits_per_char'))
  assert set(lm) == {'loss', 'token_accuracy', 'perplexity', 'bits_per_char'}
  bits = -np.take_along_axis(np.log2(np.exp(lp)), targets[..., None], -1)[..., 0]
  assert lm['bits_per_char'] == pytest.approx((bits * w).sum() / w.sum(), rel=1e-5)


def test_pearson_spearman_over_batches_match_scipy():
  """STS-B's metrics: exact over uneven batches (filler rows ignored), ties ranked as
  scipy does (average ranks)."""
  rng = np.random.default_rng(3)
  n = 37
  target = np.round(rng.uniform(0, 5, n), 1).astype(np.float32)  # ties, like STS-B
  pred = (target + rng.normal(0, 1.5, n)).astype(np.float32)
  pred[:6] = 2.0  # tied predictions
  ew = np.ones(n, np.float32)
  ew[-4:] = 0.0
  sums = None
  for lo in range(0, n, 10):
    sl = slice(lo, lo + 10)
    sums = losses.add_sums(sums, jax.device_get(losses.loss_sums(
        'regression', jnp.asarray(pred[sl, None]),
        {'label': jnp.asarray(target[sl]), 'example_weight': jnp.asarray(ew[sl])},
        per_example=True)))
  got = losses.finalize('regression', sums, ('pearson', 'spearman', 'mse'))
  real = ew > 0
  assert set(got) == {'loss', 'pearson', 'spearman', 'mse'}
  assert got['pearson'] == pytest.approx(stats.pearsonr(pred[real], target[real])[0],
                                         rel=1e-4)
  assert got['spearman'] == pytest.approx(stats.spearmanr(pred[real], target[real])[0],
                                          rel=1e-6)


def _state(value: float) -> TrainState:
  return TrainState(step=jnp.asarray(1, jnp.int32), params={'w': jnp.full((3,), value)},
                    opt_state={'m': jnp.zeros(3)}, rng=jax.random.PRNGKey(0))


def test_retention_keeps_latest_and_best(tmp_path):
  ck = Checkpointer(str(tmp_path), keep=1, best_metric='accuracy', larger_is_better=True)
  accs = {2: 0.4, 4: 0.9, 6: None, 8: 0.5, 10: None, 12: 0.6}
  for step, acc in accs.items():
    ck.save(step, _state(step), {'batch': step}, {'m': 1},
            None if acc is None else {'accuracy': acc, 'loss': 1.0})
  ck.wait()
  assert ck.all_steps() == [4, 12]  # the best (0.9 at 4) and the latest, nothing else
  assert ck.best_step() == 4
  ck.close()
  # Smaller-is-better metric: the minimum is kept.
  ck = Checkpointer(str(tmp_path / 'loss'), keep=2, best_metric='loss')
  for step, loss in {1: 3.0, 2: 1.0, 3: 2.0, 4: 2.5, 5: 2.7}.items():
    ck.save(step, _state(step), {}, {}, {'loss': loss})
  ck.wait()
  assert ck.all_steps() == [2, 4, 5]
  ck.close()


def test_config_errors_name_the_field():
  spec = TaskSpec(name='t', kind='token', vocab_size=10, max_len=100)
  cases = [('learning_rate', -1.0, 'learning_rate'), ('batch_size', 0, 'batch_size'),
           ('model', 'rnn', "choose one of ['lstm'"), ('lr_schedule', 'step', 'cosine'),
           ('grad_accum_steps', 3, 'grad_accum_steps')]
  for field, value, needle in cases:
    config = base.get_config()
    config[field] = value
    with pytest.raises(UserError, match='config') as err:
      check_config(config)
    assert needle in str(err.value) and '\n' not in str(err.value)
  config = base.get_config()
  config.model_cfg.max_len = 50
  with pytest.raises(UserError, match=r'model_cfg\.max_len=50'):
    model_config(config, spec)
  assert shape_differences({'d_model': 8, 'dropout': 0.1}, {'d_model': 16, 'dropout': 0.0}) == [
      'd_model: saved 8, requested 16']
  # A run saved before a field existed had its default: not a difference, unless changed.
  assert shape_differences({'d_model': 8}, {'d_model': 8, 'num_segments': 1}) == []
  assert shape_differences({'d_model': 8}, {'d_model': 8, 'num_segments': 2}) == [
      'num_segments: saved 1, requested 2']
