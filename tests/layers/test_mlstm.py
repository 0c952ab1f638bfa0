"""The mLSTM layer: its parallel and chunkwise forms (site ``mlstm``) and the streamed step
agree in values and in gradients with respect to every parameter, on padded batches; the
authors' PyTorch layout converts one to one. The cell itself is checked against the paper's equations in tests/ops/test_mlstm.py; streaming,
padding, causality and compile size are the mixer contract's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.mlstm import MLSTM, mlstm_params_from_torch

B, T, D = 2, 10, 8


def test_forms_and_step_agree_in_values_and_gradients():
  layer = MLSTM(D, num_heads=2, mlstm_chunk=3)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  mask = jnp.asarray(np.arange(T)[None] < np.array([[T], [7]]))
  # Shapes only (the values are drawn below): no initialiser to compile and run.
  params = jax.eval_shape(layer.init, jax.random.key(0), x)
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


def _np_layer_from_torch(sd, x, heads):
  """NX-AI's ``mLSTMLayer.forward`` with ``parallel_stabilized_simple``, transcribed in
  float64 NumPy from their PyTorch layout."""
  silu = lambda v: v / (1 + np.exp(-v))
  b, t, _ = x.shape
  e = sd['learnable_skip'].shape[0]
  inner = x @ sd['proj_up.weight'].T
  x_m, z = inner[..., :e], inner[..., e:]
  w = sd['conv1d.conv.weight'][:, 0]                                   # [E, KS]
  ks = w.shape[1]
  padded = np.concatenate([np.zeros((b, ks - 1, e)), x_m], axis=1)
  conv = sum(w[:, j] * padded[:, j:j + t] for j in range(ks)) + sd['conv1d.conv.bias']
  u = silu(conv)
  headwise = lambda v, wt: np.einsum('...hd,hod->...ho', v.reshape(b, t, wt.shape[0], -1),
                                     wt).reshape(b, t, -1)
  q, k, v = (headwise(u, sd['q_proj.weight']), headwise(u, sd['k_proj.weight']),
             headwise(x_m, sd['v_proj.weight']))
  gate_in = np.concatenate([q, k, v], -1)
  i_pre = gate_in @ sd['mlstm_cell.igate.weight'].T + sd['mlstm_cell.igate.bias']
  f_pre = gate_in @ sd['mlstm_cell.fgate.weight'].T + sd['mlstm_cell.fgate.bias']
  dh = e // heads
  split = lambda a: a.reshape(b, t, heads, dh).transpose(0, 2, 1, 3)
  q, k, v = split(q), split(k), split(v)
  log_f = np.cumsum(-np.logaddexp(0, -f_pre), axis=1).transpose(0, 2, 1)   # [b, h, t]
  log_d = log_f[..., :, None] - log_f[..., None, :] + i_pre.transpose(0, 2, 1)[..., None, :]
  log_d = np.where(np.tril(np.ones((t, t), bool)), log_d, -np.inf)
  m = log_d.max(-1, keepdims=True)
  c = (q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)) * np.exp(log_d - m)
  norm = np.maximum(np.abs(c.sum(-1, keepdims=True)), np.exp(-m))
  h = (c / (norm + 1e-6)) @ v                                              # [b, h, t, dh]
  mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
  h = ((h - mean) / np.sqrt(var + 1e-5)).transpose(0, 2, 1, 3).reshape(b, t, e)
  h = h * (1 + sd['mlstm_cell.outnorm.weight']) + sd['learnable_skip'] * u
  return (h * silu(z)) @ sd['proj_down.weight'].T


def test_nx_ai_torch_state_dict_converts_one_to_one():
  rng = np.random.default_rng(5)
  heads, e = 2, 2 * D
  shapes = {'proj_up.weight': (2 * e, D), 'q_proj.weight': (e // 4, 4, 4),
            'k_proj.weight': (e // 4, 4, 4), 'v_proj.weight': (e // 4, 4, 4),
            'conv1d.conv.weight': (e, 1, 4), 'conv1d.conv.bias': (e,),
            'mlstm_cell.igate.weight': (heads, 3 * e), 'mlstm_cell.igate.bias': (heads,),
            'mlstm_cell.fgate.weight': (heads, 3 * e), 'mlstm_cell.fgate.bias': (heads,),
            'mlstm_cell.outnorm.weight': (e,), 'learnable_skip': (e,),
            'proj_down.weight': (D, e)}
  sd = {k: (rng.normal(size=s) * 0.5).astype(np.float32) for k, s in shapes.items()}
  x = rng.normal(size=(B, T, D)).astype(np.float32)
  # One compiled program (eagerly, every operation compiles on its own).
  apply = jax.jit(MLSTM(D, num_heads=heads).apply)
  got = apply({'params': mlstm_params_from_torch(sd)}, x)
  want = _np_layer_from_torch({k: v.astype(np.float64) for k, v in sd.items()},
                              x.astype(np.float64), heads)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match=r"\['proj_up.bias'\] have no counterpart"):
    mlstm_params_from_torch({**sd, 'proj_up.bias': np.zeros(2 * e)})
  with pytest.raises(ValueError, match="missing 'learnable_skip'"):
    mlstm_params_from_torch({k: v for k, v in sd.items() if k != 'learnable_skip'})
