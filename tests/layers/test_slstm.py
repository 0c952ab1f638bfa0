"""The sLSTM layer against a float64 NumPy loop of the xLSTM paper's equations (Beck et al.
2024, eqs. 8-17, stabilised as in eq. 15), with block-diagonal recurrent weights; the
xLSTM[a:1] block pattern; the authors' PyTorch ``sLSTMLayer`` state dict converts one to
one (against a NumPy transcription of their forward). Streaming, padding, causality and
compile size are the mixer contract's (tests/layers/test_mixer_contract.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.mlstm import MLSTM
from seqjax.layers.slstm import SLSTM, slstm_params_from_torch
from seqjax.models.config import ModelConfig
from seqjax.models.families import FAMILIES

B, T, D, HEADS = 2, 9, 8, 2
DH = D // HEADS


def _sigmoid(v):
  return 1 / (1 + np.exp(-v))


def np_slstm(p, x):
  w, width = p['conv1d']['w'], p['conv1d']['w'].shape[0]
  conv = np.zeros_like(x) + p['conv1d']['b']
  for t in range(x.shape[1]):
    for j in range(width):
      if t - (width - 1 - j) >= 0:
        conv[:, t] += w[j] * x[:, t - (width - 1 - j)]
  u = conv / (1 + np.exp(-conv))                                   # SiLU

  def headwise(v, q):
    return np.einsum('bthi,hij->bthj', v.reshape(B, T, HEADS, DH), q['w'])

  wx = [headwise(v, p[f'{g}gate']) for g, v in zip('ifzo', (u, u, x, x))]
  r = p['recurrent_kernel']                                        # [heads, d, 4, d]
  bias = p['bias'].reshape(4, HEADS, DH)
  h = c = n = np.zeros((B, HEADS, DH))
  m = np.full((B, HEADS, DH), -np.inf)
  out = np.zeros((B, T, HEADS, DH))
  for t in range(T):
    raw = [wx[g][:, t] + np.einsum('bhi,hij->bhj', h, r[:, :, g]) + bias[g]
           for g in range(4)]
    log_f = np.log(_sigmoid(raw[1]))
    m_new = np.maximum(log_f + m, raw[0])
    i_, f_ = np.exp(raw[0] - m_new), np.exp(log_f + m - m_new)
    c = f_ * c + i_ * np.tanh(raw[2])
    n = f_ * n + i_
    h = _sigmoid(raw[3]) * c / n
    m = m_new
    out[:, t] = h
  mean = out.mean(-1, keepdims=True)
  var = ((out - mean) ** 2).mean(-1, keepdims=True)
  normed = (out - mean) / np.sqrt(var + 1e-5) * p['group_norm']['weight'].reshape(HEADS, DH)
  return normed.reshape(B, T, D)


@pytest.mark.parametrize('impl', ['slstm:fused', 'slstm:autodiff'])
def test_matches_the_papers_equations(impl):
  layer = SLSTM(D, num_heads=HEADS, impl=impl)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  # Shapes only (the values are drawn below): no initialiser to compile and run.
  params = jax.eval_shape(layer.init, jax.random.key(0), x)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.7, p.dtype),
                        params)
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params['params'])
  # One compiled program (eagerly, every operation compiles on its own).
  got = jax.jit(layer.apply)(params, x)
  np.testing.assert_allclose(got, np_slstm(p, np.asarray(x, np.float64)),
                             rtol=1e-4, atol=1e-4)


def test_hand_written_backward_pass_equals_autodiff_of_the_scan():
  """Values and every gradient (parameters and input), with a padded row and a recurrent
  kernel large enough that the recurrence and the stabiliser matter."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  mask = jnp.asarray(np.arange(T)[None, :] < np.array([T, T - 4])[:, None])
  weights = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  layers = {impl: SLSTM(D, num_heads=HEADS, impl=f'slstm:{impl}')
            for impl in ('fused', 'autodiff')}
  params = layers['fused'].init(jax.random.key(0), x)['params']
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)

  def loss(p, x, impl):
    return jnp.sum(layers[impl].apply({'params': p}, x, mask) * weights)

  got = {impl: jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(
      params, x, impl) for impl in layers}
  np.testing.assert_allclose(got['fused'][0], got['autodiff'][0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(got['fused'][1]), jax.tree.leaves(got['autodiff'][1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_xlstm_places_one_slstm_block_per_group():
  def kinds(num_layers, ratio):
    cfg = ModelConfig(model='xlstm', num_layers=num_layers, xlstm_mlstm_per_slstm=ratio,
                      d_model=16)
    mixers = [FAMILIES['xlstm'].build(cfg, True, i) for i in range(num_layers)]
    return ''.join({MLSTM: 'm', SLSTM: 's'}[type(m)] for m in mixers)

  assert kinds(8, 7) == 'msmmmmmm'
  assert kinds(2, 7) == 'ms'
  assert kinds(6, 2) == 'msmmsm'
  assert kinds(3, 0) == 'sss'
  assert isinstance(FAMILIES['xlstm'].build(ModelConfig(model='xlstm'), False, 1), nn.Module)


def _np_torch_slstm_layer(sd, x):
  """NX-AI's ``sLSTMLayer.forward`` (eval, vanilla backend, ``function='slstm'``)
  transcribed in float64 NumPy from their state-dict layout (xlstm/blocks/slstm/layer.py,
  cell.py, src/vanilla/{__init__,slstm}.py, components/{conv,linear_headwise,ln}.py)."""
  b, s, dm = x.shape
  w = sd['conv1d.conv.weight']                                 # [D, 1, KS], nn.Conv1d
  pad = w.shape[-1] - 1
  xp = np.pad(x.transpose(0, 2, 1), ((0, 0), (0, 0), (pad, pad)))   # (B, F, T) both sides
  y = np.stack([(xp[:, :, t:t + pad + 1] * w[:, 0]).sum(-1) for t in range(s + pad)], -1)
  x_conv = (y + sd['conv1d.conv.bias'][:, None])[:, :, :-pad].transpose(0, 2, 1)
  x_conv = x_conv / (1 + np.exp(-x_conv))                      # SiLU

  def headwise(v, wt):                                         # LinearHeadwiseExpand
    v = v.reshape(b, s, wt.shape[0], -1)
    return np.einsum('...hd,hod->...ho', v, wt).reshape(b, s, -1)

  i, f, z, o = (headwise(x_conv, sd['fgate.weight']), headwise(x_conv, sd['igate.weight']),
                headwise(x, sd['zgate.weight']), headwise(x, sd['ogate.weight']))
  gates_in = np.concatenate([i, f, z, o], -1)                  # [B, S, 4 D]
  r, bias = sd['slstm_cell._recurrent_kernel_'], sd['slstm_cell._bias_']
  nh, hd = r.shape[0], r.shape[2]
  wx = gates_in.reshape(b, s, 4, nh, hd).transpose(1, 0, 2, 3, 4).reshape(s, b, -1)  # SBGNH
  states = np.zeros((4, b, dm))
  outs = []
  for wx_t in wx:
    ry = (states[0].reshape(b, nh, 1, hd) @ r.transpose(0, 2, 1).reshape(1, nh, hd, 4 * hd)
          ).reshape(b, nh, 4, hd).transpose(0, 2, 1, 3).reshape(b, -1)
    raw = wx_t + ry + bias
    y_, c, n, m = states
    iraw, fraw, zraw, oraw = (raw.reshape(b, 4, -1)[:, g] for g in range(4))
    logfplusm = m - np.logaddexp(0, -fraw)
    mnew = iraw if np.all(n == 0.0) else np.maximum(iraw, logfplusm)
    igate = np.minimum(np.exp(iraw - mnew), 1.0)
    fgate = np.minimum(np.exp(logfplusm - mnew), 1.0)
    cnew = fgate * c + igate * np.tanh(zraw)
    nnew = fgate * n + igate
    states = np.stack([1 / (1 + np.exp(-oraw)) * cnew / nnew, cnew, nnew, mnew])
    outs.append(states[0])
  h = np.stack(outs).reshape(s, b, nh, hd).transpose(1, 2, 0, 3)     # BNSH
  g = h.transpose(0, 2, 1, 3).reshape(b * s, nh, hd)                 # group_norm, NH groups
  g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5)
  g = g.reshape(b * s, dm) * (1.0 + sd['group_norm.weight'])
  return g.reshape(b, s, dm)


def test_nx_ai_torch_state_dict_converts_one_to_one():
  rng = np.random.default_rng(7)
  shapes = {'conv1d.conv.weight': (D, 1, 4), 'conv1d.conv.bias': (D,),
            **{f'{g}gate.weight': (HEADS, DH, DH) for g in 'ifzo'},
            'slstm_cell._recurrent_kernel_': (HEADS, 4 * DH, DH),
            'slstm_cell._bias_': (4 * D,), 'group_norm.weight': (D,)}
  pre = 'xlstm.'                                           # as inside their xLSTMBlock
  sd = {pre + k: (rng.normal(size=v) * 0.6).astype(np.float32) for k, v in shapes.items()}
  x = rng.normal(size=(B, T, D)).astype(np.float32)
  params = slstm_params_from_torch(sd)
  # One compiled program (eagerly, every operation compiles on its own).
  got = jax.jit(SLSTM(D, num_heads=HEADS).apply)({'params': params}, x)
  want = _np_torch_slstm_layer({k[len(pre):]: v.astype(np.float64) for k, v in sd.items()},
                               x.astype(np.float64))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The CUDA backend stores the same weights in its own internal layout (their
  # _recurrent_kernel_int2ext / _ext2int and _bias_* transcribed): same params.
  r_ext = sd[pre + 'slstm_cell._recurrent_kernel_'].reshape(HEADS, 4, DH, DH).transpose(
      0, 3, 1, 2)
  b_ext = sd[pre + 'slstm_cell._bias_'].reshape(4, HEADS, DH).transpose(1, 0, 2)
  cuda = {**sd, pre + 'slstm_cell._recurrent_kernel_': r_ext.reshape(HEADS, DH, 4 * DH),
          pre + 'slstm_cell._bias_': b_ext.reshape(-1)}
  jax.tree.map(np.testing.assert_array_equal, slstm_params_from_torch(cuda, backend='cuda'),
               params)
  with pytest.raises(ValueError, match=r"\['xlstm.igate.bias'\] have no counterpart"):
    slstm_params_from_torch({**sd, 'xlstm.igate.bias': np.zeros(D)})
  with pytest.raises(ValueError, match="missing 'xlstm.group_norm.weight'"):
    slstm_params_from_torch({k: v for k, v in sd.items() if 'group_norm' not in k})
  with pytest.raises(ValueError, match='_recurrent_kernel_.*cuda backend'):
    slstm_params_from_torch(sd, backend='cuda')
