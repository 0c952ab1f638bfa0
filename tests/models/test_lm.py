"""Causal language models: streaming == parallel and causality through the whole model
(embeddings, positions, residual or stacked backbone, head), and generation. Each
family's mixer is checked on its own by tests/layers/test_mixer_contract.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.models.config import ModelConfig
from seqjax.models.generate import generate
from seqjax.models.registry import build_model

VOCAB, BATCH, TIME = 11, 2, 9

# Both backbones with a recurrent mixer, every way a Transformer can know positions, and
# the families the generation tests use.
LM_CONFIGS = {
    'lstm': dict(model='lstm'),
    'stacked_lstm': dict(model='lstm', backbone='stacked', num_layers=2),
    'transformer_sinusoidal': dict(model='transformer', positions='sinusoidal'),
    'transformer_learned': dict(model='transformer', positions='learned'),
    'transformer_rope': dict(model='transformer', positions='rope'),
    'transformer_none': dict(model='transformer', positions='none'),
    's4d': dict(model='s4d', s4d_state_size=8),
    'mamba': dict(model='mamba', mamba_d_state=4),
    # Sliding windows of 3 over 9 tokens: the ring-buffer caches wrap. Griffin's two
    # layers are a recurrent block and a local multi-query attention block.
    'transformer_window': dict(model='transformer', positions='rope', attention_window=3),
    'griffin': dict(model='griffin', attention_window=3),
}
STREAMING = ['lstm', 'stacked_lstm', 'transformer_sinusoidal', 'transformer_learned',
             'transformer_rope', 'transformer_none', 'transformer_window', 'griffin']


LM_FIELDS = dict(head='lm', vocab_size=VOCAB, d_model=16, num_layers=2, num_heads=2,
                 max_len=32)


def make_lm(name: str, noise_params, **overrides):
  """The model, random parameters (conftest's ``noise_params``: every property here holds
  for any parameters, and compiling the initialiser would cost more than the checks) and
  tokens ``[BATCH, TIME]``."""
  cfg = ModelConfig(**{**LM_FIELDS, **LM_CONFIGS[name], **overrides})
  model = build_model(cfg)
  tokens = jax.random.randint(jax.random.key(1), (BATCH, TIME), 1, VOCAB)
  return model, noise_params(model, tokens), tokens


@pytest.mark.parametrize('name', STREAMING)
def test_streaming_equals_parallel_and_causal(name, noise_params):
  model, params, tokens = make_lm(name, noise_params)
  variables = {'params': params}
  # Causality: changing tokens after position t leaves logits up to t untouched, and the
  # change is visible afterwards (so the check is not vacuous).
  t = 4
  changed = tokens.at[:, t + 1:].set((tokens[:, t + 1:] + 3) % (VOCAB - 1) + 1)

  # Both parallel runs (one batch) and the streamed run in one program.
  @jax.jit
  def run(tokens, changed):
    both = model.apply(variables, jnp.concatenate([tokens, changed]))
    state = model.apply(variables, BATCH, method='init_state')
    step = lambda s, tok: model.apply(variables, s, tok, method='step')
    stream = jax.lax.scan(step, state, tokens.T)[1].transpose(1, 0, 2)
    return both[:BATCH], both[BATCH:], stream

  logits, perturbed, streamed = run(tokens, changed)
  np.testing.assert_allclose(streamed, logits, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(perturbed[:, :t + 1], logits[:, :t + 1], atol=1e-6)
  assert np.abs(perturbed[:, t + 1:] - logits[:, t + 1:]).max() > 1e-4


def _greedy_by_rerunning(model, params, prompt, num_steps):
  """Reference decoder: rerun the full parallel model on the growing sequence. It is
  causal, so the sequence sits in a fixed-size buffer (one compile) whose unfilled tail
  cannot reach the logits read."""
  parallel = jax.jit(lambda t: model.apply({'params': params}, t))
  n = prompt.shape[1]
  seq = np.zeros((prompt.shape[0], n + num_steps), np.int32)
  seq[:, :n] = prompt
  for t in range(n, n + num_steps):
    seq[:, t] = np.argmax(np.asarray(parallel(seq))[:, t - 1], axis=-1)
  return seq


# A recurrent state, a KV cache with rotary positions, an SSM state.
@pytest.mark.parametrize('name', ['lstm', 'transformer_rope', 's4d'])
def test_greedy_generation_matches_rerunning_the_parallel_model(name, noise_params):
  model, params, tokens = make_lm(name, noise_params)
  prompt = tokens[:, :4]
  out = generate(model, params, prompt, 5, jax.random.key(0), temperature=0.0)
  np.testing.assert_array_equal(out, _greedy_by_rerunning(model, params, prompt, 5))


def test_sampling_respects_top_k_and_seed(noise_params):
  model, params, tokens = make_lm('lstm', noise_params)
  prompt = tokens[:, :3]
  a = generate(model, params, prompt, 6, jax.random.key(3), temperature=1.0, top_k=1)
  greedy = generate(model, params, prompt, 6, jax.random.key(9), temperature=0.0)
  np.testing.assert_array_equal(a, greedy)  # top-1 sampling is greedy
  b = generate(model, params, prompt, 6, jax.random.key(3), temperature=1.5)
  c = generate(model, params, prompt, 6, jax.random.key(3), temperature=1.5)
  np.testing.assert_array_equal(b, c)


def test_generation_past_kv_cache_is_refused(noise_params):
  model, params, tokens = make_lm('transformer_sinusoidal', noise_params)
  with pytest.raises(ValueError, match='max_len'):
    generate(model, params, tokens, 40, jax.random.key(0))


def test_impl_reaches_the_layers_and_keeps_the_function(noise_params):
  """The fused and the materialised Mamba scans, chosen through the config, give the same
  LM from the same parameters (their gradients agree in tests/ops/test_selective_scan.py);
  an unknown choice fails at config time."""
  model, params, tokens = make_lm('mamba', noise_params)
  reference, _, _ = make_lm('mamba', noise_params,
                            impl='selective_scan:materialized,scan:sequential')
  assert reference.cfg.impl != model.cfg.impl
  both = jax.jit(lambda p: [m.apply({'params': p}, tokens) for m in (model, reference)])
  logits, ref_logits = both(params)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
  with pytest.raises(ValueError, match='selective_scan:parallel'):
    ModelConfig(model='mamba', impl='selective_scan:parallel')
