"""The mLSTM layer: its parallel and chunkwise forms (site ``mlstm``) and the streamed step
agree in values and in gradients with respect to every parameter, on padded batches. The
cell itself is checked against the paper's equations in tests/ops/test_mlstm.py; streaming,
padding, causality and compile size are the mixer contract's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers.mlstm import MLSTM

B, T, D = 2, 10, 8


def test_forms_and_step_agree_in_values_and_gradients():
  layer = MLSTM(D, num_heads=2, mlstm_chunk=3)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  mask = jnp.asarray(np.arange(T)[None] < np.array([[T], [7]]))
  params = layer.init(jax.random.key(0), x)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.5, p.dtype),
                        params)
  w = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32) * mask[..., None]

  def loss(impl):
    return lambda p: jnp.sum(w * layer.clone(impl=impl).apply(p, x, mask))

  def streamed(p):
    step = lambda s, x_t: layer.apply(p, s, x_t, method='step')
    _, ys = jax.lax.scan(step, layer.apply(p, B, method='init_state'), jnp.swapaxes(x, 0, 1))
    return jnp.sum(w * jnp.swapaxes(ys, 0, 1))

  fns = {'parallel': loss('mlstm:parallel'), 'chunkwise': loss('mlstm:chunkwise'),
         'step': streamed}
  out = jax.jit(lambda p: {k: jax.value_and_grad(f)(p) for k, f in fns.items()})(params)
  for name in ('chunkwise', 'step'):
    np.testing.assert_allclose(out[name][0], out['parallel'][0], rtol=1e-5)
    for g, ref in zip(jax.tree.leaves(out[name][1]), jax.tree.leaves(out['parallel'][1])):
      np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-5, err_msg=name)
