"""Causal language models: streaming == parallel, causality, generation, no unrolled loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.models.config import ModelConfig
from seqjax.models.generate import generate
from seqjax.models.registry import build_model

VOCAB, BATCH, TIME = 11, 2, 9

# Every causal family, and every way a Transformer can know positions.
LM_CONFIGS = {
    'lstm': dict(model='lstm'),
    'gru': dict(model='gru'),
    'stacked_lstm': dict(model='lstm', backbone='stacked', num_layers=2),
    'transformer_sinusoidal': dict(model='transformer', positions='sinusoidal'),
    'transformer_learned': dict(model='transformer', positions='learned'),
    'transformer_rope': dict(model='transformer', positions='rope'),
    'transformer_none': dict(model='transformer', positions='none'),
    's4d': dict(model='s4d', s4d_state_size=8),
    'mamba': dict(model='mamba', mamba_d_state=4),
}


def make_lm(name: str, **overrides):
  fields = dict(head='lm', vocab_size=VOCAB, d_model=16, num_layers=2, num_heads=2,
                max_len=32)
  cfg = ModelConfig(**{**fields, **LM_CONFIGS[name], **overrides})
  model = build_model(cfg)
  tokens = jax.random.randint(jax.random.key(1), (BATCH, TIME), 1, VOCAB)
  params = model.init(jax.random.key(0), tokens)['params']
  return model, params, tokens


@pytest.mark.parametrize('name', sorted(LM_CONFIGS))
def test_streaming_equals_parallel_and_causal(name):
  model, params, tokens = make_lm(name)
  variables = {'params': params}
  parallel = jax.jit(lambda t: model.apply(variables, t))
  logits = parallel(tokens)

  @jax.jit
  def stream(tokens):
    state = model.apply(variables, BATCH, method='init_state')
    step = lambda s, tok: model.apply(variables, s, tok, method='step')
    return jax.lax.scan(step, state, tokens.T)[1].transpose(1, 0, 2)

  np.testing.assert_allclose(stream(tokens), logits, atol=1e-5, rtol=1e-5)

  # Causality: changing tokens after position t leaves logits up to t untouched, and the
  # change is visible afterwards (so the check is not vacuous).
  t = 4
  changed = tokens.at[:, t + 1:].set((tokens[:, t + 1:] + 3) % (VOCAB - 1) + 1)
  perturbed = parallel(changed)
  np.testing.assert_allclose(perturbed[:, :t + 1], logits[:, :t + 1], atol=1e-6)
  assert np.abs(perturbed[:, t + 1:] - logits[:, t + 1:]).max() > 1e-4


def _greedy_by_rerunning(model, params, prompt, num_steps):
  """Reference decoder: rerun the full parallel model on the growing sequence."""
  seq = np.asarray(prompt)
  for _ in range(num_steps):
    logits = model.apply({'params': params}, jnp.asarray(seq))
    seq = np.concatenate([seq, np.argmax(logits[:, -1], axis=-1)[:, None]], axis=1)
  return seq


@pytest.mark.parametrize('name', ['lstm', 'transformer_rope', 'mamba'])
def test_greedy_generation_matches_rerunning_the_parallel_model(name):
  model, params, tokens = make_lm(name)
  prompt = tokens[:, :4]
  out = generate(model, params, prompt, 5, jax.random.key(0), temperature=0.0)
  np.testing.assert_array_equal(out, _greedy_by_rerunning(model, params, prompt, 5))


def test_sampling_respects_top_k_and_seed():
  model, params, tokens = make_lm('lstm')
  prompt = tokens[:, :3]
  a = generate(model, params, prompt, 6, jax.random.key(3), temperature=1.0, top_k=1)
  greedy = generate(model, params, prompt, 6, jax.random.key(9), temperature=0.0)
  np.testing.assert_array_equal(a, greedy)  # top-1 sampling is greedy
  b = generate(model, params, prompt, 6, jax.random.key(3), temperature=1.5)
  c = generate(model, params, prompt, 6, jax.random.key(3), temperature=1.5)
  np.testing.assert_array_equal(b, c)


def test_generation_past_kv_cache_is_refused():
  model, params, tokens = make_lm('transformer_sinusoidal')
  with pytest.raises(ValueError, match='max_len'):
    generate(model, params, tokens, 40, jax.random.key(0))


@pytest.mark.parametrize('name', ['lstm', 'gru', 'transformer_rope', 's4d', 'mamba'])
def test_compiled_program_does_not_grow_with_length(name):
  """A Python loop over time would unroll: the lowered program would grow ~8x."""
  model, params, _ = make_lm(name, max_len=256)

  def loss(params, tokens):
    return model.apply({'params': params}, tokens).mean()

  sizes = [len(jax.jit(jax.grad(loss)).lower(params, jnp.ones((1, t), jnp.int32)).as_text())
           for t in (16, 128)]
  assert sizes[1] < 1.1 * sizes[0], sizes


def test_mamba_scan_impl_is_a_pure_implementation_choice():
  """The fused and the materialised Mamba scans give the same LM (values and gradients)
  from the same parameters; an unknown choice fails at config time."""
  model, params, tokens = make_lm('mamba')
  reference, _, _ = make_lm('mamba', mamba_scan_impl='materialized')

  def loss(m, p):
    return jnp.mean(m.apply({'params': p}, tokens) ** 2)

  np.testing.assert_allclose(model.apply({'params': params}, tokens),
                             reference.apply({'params': params}, tokens), atol=1e-5)
  grads = jax.grad(lambda p: loss(model, p))(params)
  ref_grads = jax.grad(lambda p: loss(reference, p))(params)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, atol=1e-5)
  with pytest.raises(ValueError, match='mamba_scan_impl'):
    ModelConfig(model='mamba', mamba_scan_impl='parallel')
