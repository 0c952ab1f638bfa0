"""LSTM encoder–decoder with Bahdanau attention."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model

SRC_VOCAB, TGT_VOCAB, BOS = 9, 7, 1


@pytest.fixture(scope='module', params=[True, False], ids=['bi_encoder', 'uni_encoder'])
def setup(request, noise_params):
  cfg = ModelConfig(model='lstm_attention', head='seq2seq', vocab_size=SRC_VOCAB,
                    tgt_vocab_size=TGT_VOCAB, d_model=8, embed_dim=6, num_layers=2,
                    attn_dim=5, bidirectional_encoder=request.param)
  model = build_model(cfg)
  rng = np.random.default_rng(0)
  src = rng.integers(1, SRC_VOCAB, (2, 6)).astype(np.int32)
  src[1, 3:] = 0
  tgt_in = rng.integers(1, TGT_VOCAB, (2, 5)).astype(np.int32)
  # Every property below holds for any parameters: random ones, without compiling the
  # initialiser.
  params = noise_params(model, src, tgt_in)
  return model, params, jnp.asarray(src), jnp.asarray(tgt_in)


# Each test below computes what it reads in one jitted program: run eagerly, every
# operation of the model would be compiled on its own.
def test_attention_is_a_distribution_over_real_source_tokens(setup):
  model, params, src, tgt_in = setup
  run = jax.jit(lambda p, s, t: model.apply({'params': p}, s, t, mutable=['intermediates']))
  _, state = run(params, src, tgt_in)
  (weights,) = state['intermediates']['attention_weights']
  assert weights.shape == (2, 5, 6)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(weights[1, :, 3:], 0.0)  # padded source positions
  assert (weights[1, :, :3] > 0).all()


def test_source_padding_does_not_change_translation(setup):
  model, params, src, tgt_in = setup
  padded = jnp.concatenate([src, jnp.zeros((2, 4), jnp.int32)], axis=1)
  logits, alone, longer = jax.jit(lambda p: [
      model.apply({'params': p}, s, t)
      for s, t in ((src, tgt_in), (src[1:, :3], tgt_in[1:]), (padded, tgt_in))])(params)
  np.testing.assert_allclose(logits[1], alone[0], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(longer, logits, atol=1e-5, rtol=1e-5)


def test_greedy_decode_agrees_with_teacher_forcing_on_its_own_output(setup):
  """Feeding greedy's own tokens back as teacher input must reproduce greedy's choices
  and attention: the two decoder paths share one step function."""
  model, params, src, _ = setup

  @jax.jit
  def run(params, src):
    variables = {'params': params}
    tokens, attention = model.apply(variables, src, 6, BOS, method='greedy_decode')
    tgt_in = jnp.concatenate([jnp.full((2, 1), BOS, jnp.int32), tokens[:, :-1]], axis=1)
    return tokens, attention, model.apply(variables, src, tgt_in,
                                          mutable=['intermediates'])

  tokens, attention, (logits, state) = run(params, src)
  assert tokens.shape == (2, 6) and attention.shape == (2, 6, 6)
  np.testing.assert_array_equal(jnp.argmax(logits, -1), tokens)
  np.testing.assert_allclose(state['intermediates']['attention_weights'][0], attention,
                             atol=1e-6)


def test_decoder_is_causal_in_the_target(setup):
  model, params, src, tgt_in = setup
  changed = tgt_in.at[:, 3:].set((tgt_in[:, 3:] % (TGT_VOCAB - 1)) + 1)
  logits, other = jax.jit(lambda p: [model.apply({'params': p}, src, t)
                                     for t in (tgt_in, changed)])(params)
  np.testing.assert_allclose(other[:, :3], logits[:, :3], atol=1e-6)
  assert np.abs(other[:, 3:] - logits[:, 3:]).max() > 1e-4
