"""Sequence classifiers: the article's LSTMClassifier, padding invariance, pooling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.lstm import lstm_params_from_torch
from seqjax.models.classifier import SequenceClassifier, article_lstm_classifier, pool
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model

VOCAB = 13


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _numpy_lstm_direction(x, w_ih, w_hh, b_ih, b_hh, reverse):
  """The article's equations for one direction, PyTorch gate order (i, f, g, o)."""
  hidden = w_hh.shape[1]
  h, c = np.zeros(hidden), np.zeros(hidden)
  out = np.zeros((len(x), hidden))
  for t in (reversed(range(len(x))) if reverse else range(len(x))):
    gates = w_ih @ x[t] + b_ih + w_hh @ h + b_hh
    i, f, g, o = np.split(gates, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    out[t] = h
  return out, h


def _numpy_article_classifier(tokens, torch_weights, num_layers):
  """NumPy re-implementation of the article's LSTMClassifier.forward (eval mode), one
  unpadded sequence: embedding, bidirectional stacked LSTM, cat(h_n[-2], h_n[-1]), linear."""
  x = torch_weights['embedding.weight'][tokens]
  for k in range(num_layers):
    outs, finals = [], []
    for suffix, reverse in (('', False), ('_reverse', True)):
      w = [torch_weights[f'lstm.{n}_l{k}{suffix}']
           for n in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')]
      out, h_final = _numpy_lstm_direction(x, *w, reverse)
      outs.append(out)
      finals.append(h_final)
    x = np.concatenate(outs, axis=-1)
  hidden = np.concatenate(finals)
  return torch_weights['classifier.1.weight'] @ hidden + torch_weights['classifier.1.bias']


def _random_torch_weights(rng, embed, hidden, classes, layers):
  w = {'embedding.weight': rng.normal(size=(VOCAB, embed))}
  w['embedding.weight'][0] = 0.0  # padding_idx=0
  for k in range(layers):
    in_size = embed if k == 0 else 2 * hidden
    for suffix in ('', '_reverse'):
      w[f'lstm.weight_ih_l{k}{suffix}'] = rng.uniform(-.4, .4, (4 * hidden, in_size))
      w[f'lstm.weight_hh_l{k}{suffix}'] = rng.uniform(-.4, .4, (4 * hidden, hidden))
      w[f'lstm.bias_ih_l{k}{suffix}'] = rng.uniform(-.4, .4, 4 * hidden)
      w[f'lstm.bias_hh_l{k}{suffix}'] = rng.uniform(-.4, .4, 4 * hidden)
  w['classifier.1.weight'] = rng.normal(size=(classes, 2 * hidden))
  w['classifier.1.bias'] = rng.normal(size=classes)
  return {k: v.astype(np.float32) for k, v in w.items()}


def test_article_lstm_classifier_matches_numpy_reference():
  embed, hidden, classes, layers = 6, 5, 3, 2
  cfg = article_lstm_classifier(VOCAB, embed, hidden, classes, layers)
  assert (cfg.dropout, cfg.pooling, cfg.backbone) == (0.3, 'final_states', 'stacked')
  torch_w = _random_torch_weights(np.random.default_rng(0), embed, hidden, classes, layers)
  lstm_w = {k[len('lstm.'):]: v for k, v in torch_w.items() if k.startswith('lstm.')}
  params = {
      'backbone': {
          'embed': {'token_embed': {'embedding': torch_w['embedding.weight']}},
          'rnn': lstm_params_from_torch(lstm_w, num_layers=layers, bidirectional=True),
      },
      'head': {'kernel': torch_w['classifier.1.weight'].T,
               'bias': torch_w['classifier.1.bias']},
  }
  model = build_model(cfg)
  # The converted tree must have exactly the structure the model initialises.
  init = model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))['params']
  assert jax.tree.structure(init) == jax.tree.structure(params)
  chex_shapes = jax.tree.map(lambda a, b: a.shape == b.shape, init, params)
  assert all(jax.tree.leaves(chex_shapes))

  rng = np.random.default_rng(1)
  lengths = [7, 4]
  tokens = np.zeros((2, 7), np.int32)
  for row, n in enumerate(lengths):
    tokens[row, :n] = rng.integers(1, VOCAB, n)
  logits = model.apply({'params': params}, jnp.asarray(tokens))
  for row, n in enumerate(lengths):
    # Row 1 is padded: seqjax equals the article model run on the sequence alone
    # (PyTorch's packed-sequence semantics).
    expected = _numpy_article_classifier(tokens[row, :n], torch_w, layers)
    np.testing.assert_allclose(logits[row], expected, atol=1e-5, rtol=1e-5)


CLASSIFIER_CONFIGS = {
    'lstm': dict(model='lstm'),
    'bilstm': dict(model='bilstm'),
    'gru': dict(model='gru'),
    'stacked_bilstm': dict(model='bilstm', backbone='stacked', pooling='final_states'),
    'transformer_bidirectional': dict(model='transformer', causal=False,
                                      positions='learned'),
    'transformer_causal': dict(model='transformer', positions='rope'),
    's4d': dict(model='s4d', s4d_state_size=8),
    'mamba': dict(model='mamba', mamba_d_state=4),
}


POOLING_CASES = [(name, 'mean') for name in sorted(CLASSIFIER_CONFIGS)] + [
    ('lstm', 'last'), ('gru', 'final_states'), ('bilstm', 'first'),
    ('stacked_bilstm', 'final_states'), ('transformer_bidirectional', 'first'),
    ('mamba', 'last')]


@pytest.mark.parametrize('name,pooling', POOLING_CASES)
def test_appending_padding_never_changes_the_prediction(name, pooling):
  overrides = {**CLASSIFIER_CONFIGS[name], 'pooling': pooling}
  cfg = ModelConfig(head='classifier', vocab_size=VOCAB, num_classes=3, d_model=16,
                    num_heads=2, num_layers=2, max_len=32, **overrides)
  model = build_model(cfg)
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, VOCAB, (2, 6)).astype(np.int32)
  tokens[1, 4:] = 0  # second row is already padded
  params = model.init(jax.random.key(0), tokens)['params']
  apply = jax.jit(lambda t: model.apply({'params': params}, t))
  base = apply(tokens)
  longer = np.concatenate([tokens, np.zeros((2, 5), np.int32)], axis=1)
  np.testing.assert_allclose(apply(longer), base, atol=1e-5, rtol=1e-5)
  # And the padded row equals that sequence on its own.
  np.testing.assert_allclose(apply(tokens[1:, :4])[0], base[1], atol=1e-5, rtol=1e-5)


def test_pooling_against_direct_indexing():
  rng = np.random.default_rng(0)
  hidden = rng.normal(size=(2, 5, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool)
  np.testing.assert_allclose(pool(hidden, mask, 'mean')[1], hidden[1, :2].mean(0), atol=1e-6)
  np.testing.assert_allclose(pool(hidden, mask, 'last')[1], hidden[1, 1])
  np.testing.assert_allclose(pool(hidden, mask, 'first')[0], hidden[0, 0])
  both = pool(hidden, mask, 'final_states', bidirectional=True)
  np.testing.assert_allclose(both[1], np.concatenate([hidden[1, 1, :2], hidden[1, 0, 2:]]))


def test_continuous_inputs_regression_head():
  cfg = ModelConfig(model='lstm', head='classifier', vocab_size=0, input_features=2,
                    num_classes=1, d_model=8, num_layers=1)
  model = SequenceClassifier(cfg)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 2)), jnp.float32)
  params = model.init(jax.random.key(0), x)['params']
  out = model.apply({'params': params}, x)
  assert out.shape == (3, 1)
  # Continuous inputs have no padding id: a mask must be honoured when given.
  mask = jnp.array([[1, 1, 1, 0, 0]] * 3, bool)
  masked = model.apply({'params': params}, x, mask)
  alone = model.apply({'params': params}, x[:, :3])
  np.testing.assert_allclose(masked, alone, atol=1e-5)


def test_dropout_is_active_only_in_training():
  cfg = article_lstm_classifier(VOCAB, 6, 5, 2)
  model = build_model(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, VOCAB, (4, 6)), jnp.int32)
  params = model.init(jax.random.key(0), tokens)['params']
  eval_a = model.apply({'params': params}, tokens)
  eval_b = model.apply({'params': params}, tokens, deterministic=True)
  np.testing.assert_array_equal(eval_a, eval_b)
  train = model.apply({'params': params}, tokens, deterministic=False,
                      rngs={'dropout': jax.random.key(1)})
  assert np.abs(train - eval_a).max() > 1e-4


def test_dual_encoder_encodes_each_document_alone():
  """LRA Retrieval's two-tower model: logits from a padded pair ``[B, 2L]`` equal the head
  applied by hand to each document encoded alone at its own length (NumPy MLP)."""
  # A recurrent family: a state dragged across the pair's inner padding would show.
  cfg = ModelConfig(model='lstm', head='classifier', vocab_size=VOCAB, d_model=8,
                    num_layers=1, num_classes=2, num_segments=2, max_len=16)
  rng = np.random.default_rng(0)
  docs = [(rng.integers(4, VOCAB, 5), rng.integers(4, VOCAB, 3)),
          (rng.integers(4, VOCAB, 3), rng.integers(4, VOCAB, 5))]
  seg = 7
  pairs = np.zeros((2, 2 * seg), np.int32)
  for i, (a, b) in enumerate(docs):
    pairs[i, :len(a)], pairs[i, seg:seg + len(b)] = a, b
  # The pipeline's prefix mask marks doc 1's padding as real; the model must not care.
  mask = np.arange(2 * seg)[None] < np.array([[seg + len(b)] for _, b in docs])
  model_ = build_model(cfg)
  params = model_.init(jax.random.PRNGKey(1), jnp.asarray(pairs))['params']
  logits = np.asarray(model_.apply({'params': params}, jnp.asarray(pairs), jnp.asarray(mask)))
  encode = jax.jit(lambda x: model_.apply({'params': params}, x, jnp.ones(x.shape, bool),
                                          method='encode'))
  p = jax.tree.map(np.asarray, params)
  for i, (a, b) in enumerate(docs):
    u, v = (np.asarray(encode(jnp.asarray(d[None], jnp.int32)))[0] for d in (a, b))
    h = np.concatenate([u, v, u * v, u - v])
    for name in ('pair_mlp1', 'pair_mlp2'):
      h = np.maximum(h @ p[name]['kernel'] + p[name]['bias'], 0)
    ref = h @ p['head']['kernel'] + p['head']['bias']
    np.testing.assert_allclose(logits[i], ref, rtol=1e-4, atol=1e-5)
