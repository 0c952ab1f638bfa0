"""Sequence classifiers: the article's LSTMClassifier, padding invariance, pooling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.lstm import lstm_params_from_torch
from seqjax.layers.pooling import pool
from seqjax.models.classifier import SequenceClassifier, article_lstm_classifier
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model

VOCAB = 13


def _numpy_article_classifier(tokens, torch_weights, num_layers, torch_rnn):
  """NumPy re-implementation of the article's LSTMClassifier.forward (eval mode), one
  unpadded sequence: embedding, bidirectional stacked LSTM, cat(h_n[-2], h_n[-1]), linear."""
  x = torch_weights['embedding.weight'][tokens]
  _, finals = torch_rnn.stack(x, torch_weights, 'lstm', num_layers, True, prefix='lstm.')
  hidden = np.concatenate([finals[-2][0], finals[-1][0]])
  return torch_weights['classifier.1.weight'] @ hidden + torch_weights['classifier.1.bias']


def _random_torch_weights(torch_rnn, rng, embed, hidden, classes, layers):
  w = {'embedding.weight': rng.normal(size=(VOCAB, embed)).astype(np.float32),
       'classifier.1.weight': rng.normal(size=(classes, 2 * hidden)).astype(np.float32),
       'classifier.1.bias': rng.normal(size=classes).astype(np.float32)}
  w['embedding.weight'][0] = 0.0  # padding_idx=0
  return {**w, **torch_rnn.weights(rng, 4, embed, hidden, layers, True, scale=0.4,
                                   prefix='lstm.')}


def test_article_lstm_classifier_matches_numpy_reference(torch_rnn):
  embed, hidden, classes, layers = 6, 5, 3, 2
  cfg = article_lstm_classifier(VOCAB, embed, hidden, classes, layers)
  assert (cfg.dropout, cfg.pooling, cfg.backbone) == (0.3, 'final_states', 'stacked')
  torch_w = _random_torch_weights(torch_rnn, np.random.default_rng(0), embed, hidden,
                                  classes, layers)
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
  init = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 4), jnp.int32))['params']
  assert jax.tree.structure(init) == jax.tree.structure(params)
  chex_shapes = jax.tree.map(lambda a, b: a.shape == b.shape, init, params)
  assert all(jax.tree.leaves(chex_shapes))

  rng = np.random.default_rng(1)
  lengths = [7, 4]
  tokens = np.zeros((2, 7), np.int32)
  for row, n in enumerate(lengths):
    tokens[row, :n] = rng.integers(1, VOCAB, n)
  logits = jax.jit(model.apply)({'params': params}, jnp.asarray(tokens))
  for row, n in enumerate(lengths):
    # Row 1 is padded: seqjax equals the article model run on the sequence alone
    # (PyTorch's packed-sequence semantics).
    expected = _numpy_article_classifier(tokens[row, :n], torch_w, layers, torch_rnn)
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


# Every pooling, both backbones and both attention settings; each family's mixer is
# padding-checked on its own by tests/layers/test_mixer_contract.py.
POOLING_CASES = [('lstm', 'last'), ('gru', 'final_states'), ('bilstm', 'first'),
                 ('stacked_bilstm', 'final_states'), ('stacked_bilstm', 'mean'),
                 ('transformer_bidirectional', 'first'), ('transformer_causal', 'mean'),
                 ('s4d', 'mean'), ('mamba', 'last')]


@pytest.mark.parametrize('name,pooling', POOLING_CASES)
def test_appending_padding_never_changes_the_prediction(name, pooling, noise_params):
  overrides = {**CLASSIFIER_CONFIGS[name], 'pooling': pooling}
  cfg = ModelConfig(head='classifier', vocab_size=VOCAB, num_classes=3, d_model=16,
                    num_heads=2, num_layers=2, max_len=32, **overrides)
  model = build_model(cfg)
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, VOCAB, (2, 6)).astype(np.int32)
  tokens[1, 4:] = 0  # second row is already padded
  # Padding must not matter for any parameters; random ones skip compiling the initialiser.
  params = noise_params(model, tokens)
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


def test_continuous_inputs_regression_head(noise_params):
  cfg = ModelConfig(model='lstm', head='classifier', vocab_size=0, input_features=2,
                    num_classes=1, d_model=8, num_layers=1)
  model = SequenceClassifier(cfg)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 2)), jnp.float32)
  params = noise_params(model, x)  # any parameters: no initialiser to compile
  apply = jax.jit(lambda x, m: model.apply({'params': params}, x, m))
  out = apply(x, None)
  assert out.shape == (3, 1)
  # Continuous inputs have no padding id: a mask must be honoured when given.
  mask = jnp.array([[1, 1, 1, 0, 0]] * 3, bool)
  masked = apply(x, mask)
  alone = apply(x[:, :3], None)
  np.testing.assert_allclose(masked, alone, atol=1e-5)


def test_dropout_is_active_only_in_training(noise_params):
  cfg = article_lstm_classifier(VOCAB, 6, 5, 2)
  model = build_model(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, VOCAB, (4, 6)), jnp.int32)
  params = noise_params(model, tokens)  # any parameters: no initialiser to compile

  @jax.jit
  def run(key):
    variables = {'params': params}
    return (model.apply(variables, tokens),
            model.apply(variables, tokens, deterministic=True),
            model.apply(variables, tokens, deterministic=False, rngs={'dropout': key}))

  eval_a, eval_b, train = run(jax.random.key(1, impl='rbg'))  # rbg compiles faster
  np.testing.assert_array_equal(eval_a, eval_b)
  assert np.abs(train - eval_a).max() > 1e-4


def test_dual_encoder_encodes_each_document_alone(noise_params):
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
  # Any parameters; compiled programs (run eagerly, every operation compiles on its own).
  params = noise_params(model_, jnp.asarray(pairs), seed=1)
  logits = np.asarray(jax.jit(lambda x, m: model_.apply({'params': params}, x, m))(
      jnp.asarray(pairs), jnp.asarray(mask)))
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
