"""The Mamba-2 block against a float64 NumPy transcription of Dao & Gu 2024 (sec. 7.1,
Fig. 6, the authors' ``Mamba2Simple`` order: z, x, B, C, dt; the norm after the gate) with
the SSD as a plain loop; and its parallel form against the streamed step in gradients; the
authors' PyTorch ``Mamba2`` state dict converts one to one (against a NumPy transcription of
their forward). Streaming, padding, causality and compile size are the mixer contract's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers.mamba2 import Mamba2, mamba2_params_from_torch

BATCH, T, D, HEADS, N = 2, 9, 4, 2, 3
E, P = 2 * D, 2 * D // HEADS


def np_ssd(x, a, b, c, h):
  """``h_t = exp(a_t) h_{t-1} + x_t B_t^T``, ``y_t = h_t C_t`` per head."""
  y = np.zeros_like(x)
  for t in range(x.shape[1]):
    h = np.exp(a[:, t])[..., None, None] * h + np.einsum('bhp,bn->bhpn', x[:, t], b[:, t])
    y[:, t] = np.einsum('bhpn,bn->bhp', h, c[:, t])
  return y, h


def _silu(v):
  return v / (1 + np.exp(-v))


def np_mamba2(p, u):
  proj = u @ p['in_proj']['kernel']
  z, xbc, dt = proj[..., :E], proj[..., E:2 * E + 2 * N], proj[..., 2 * E + 2 * N:]
  w, width = p['conv1d']['w'], p['conv1d']['w'].shape[0]
  conv = np.zeros_like(xbc) + p['conv1d']['b']
  for t in range(T):
    for j in range(width):
      if t - (width - 1 - j) >= 0:
        conv[:, t] += w[j] * xbc[:, t - (width - 1 - j)]
  conv = _silu(conv)
  x, b, c = conv[..., :E], conv[..., E:E + N], conv[..., E + N:]
  dt = np.logaddexp(0, dt + p['dt_bias'])                               # softplus
  a = -np.exp(p['A_log']) * dt
  xh = x.reshape(BATCH, T, HEADS, P)
  y, _ = np_ssd(xh * dt[..., None], a, b, c, np.zeros((BATCH, HEADS, P, N)))
  y = (y + p['D'][:, None] * xh).reshape(BATCH, T, E) * _silu(z)
  y = y / np.sqrt(np.mean(y ** 2, -1, keepdims=True) + 1e-5) * p['norm']['scale']
  return y @ p['out_proj']['kernel']


def _setup():
  layer = Mamba2(D, num_heads=HEADS, mamba2_d_state=N, mamba2_chunk=4)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(BATCH, T, D)), jnp.float32)
  # Shapes only (the values are drawn below): no initialiser to compile and run.
  params = jax.eval_shape(layer.init, jax.random.key(0), x)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.7, p.dtype),
                        params)
  return layer, params, x


def test_matches_the_papers_block():
  layer, params, x = _setup()
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), params['params'])
  # One compiled program (eagerly, every operation compiles on its own).
  got = jax.jit(layer.apply)(params, x)
  np.testing.assert_allclose(got, np_mamba2(p, np.asarray(x, np.float64)),
                             rtol=1e-4, atol=1e-5)


def test_parallel_and_streamed_gradients_agree(streamed_gradients_agree):
  streamed_gradients_agree(*_setup())


def _np_segsum(x):
  """``segsum`` of mamba_ssm/modules/ssd_minimal.py (the stable one)."""
  t = x.shape[-1]
  x = np.where(np.tril(np.ones((t, t), bool), -1), np.repeat(x[..., None], t, -1), 0.0)
  return np.where(np.tril(np.ones((t, t), bool)), np.cumsum(x, axis=-2), -np.inf)


def _np_ssd_minimal_discrete(x, a, b, c, block_len):
  """``ssd_minimal_discrete`` (Listing 1 of the paper) in NumPy: ``x`` ``(b, l, h, p)``,
  ``a`` ``(b, l, h)``, ``b``, ``c`` ``(b, l, h, n)``."""
  chunk = lambda v: v.reshape(v.shape[0], -1, block_len, *v.shape[2:])
  x, a, b, c = chunk(x), chunk(a).transpose(0, 3, 1, 2), chunk(b), chunk(c)
  a_cumsum = np.cumsum(a, -1)
  y_diag = np.einsum('bclhn,bcshn,bhcls,bcshp->bclhp', c, b, np.exp(_np_segsum(a)), x)
  decay_states = np.exp(a_cumsum[..., -1:] - a_cumsum)
  states = np.einsum('bclhn,bhcl,bclhp->bchpn', b, decay_states, x)
  states = np.concatenate([np.zeros_like(states[:, :1]), states], axis=1)
  padded = np.pad(a_cumsum[..., -1], ((0, 0), (0, 0), (1, 0)))
  new_states = np.einsum('bhzc,bchpn->bzhpn', np.exp(_np_segsum(padded)), states)
  y_off = np.einsum('bclhn,bchpn,bhcl->bclhp', c, new_states[:, :-1], np.exp(a_cumsum))
  return (y_diag + y_off).reshape(x.shape[0], -1, *y_diag.shape[3:])


def _np_torch_mamba2(sd, u, headdim, d_state):
  """state-spaces/mamba's ``Mamba2.forward`` (mamba_ssm/modules/mamba2.py, the path
  without fused kernels: ngroups=1, rmsnorm, norm_before_gate=False) in float64 NumPy from
  their state-dict layout; the chunk scan is ``ssd_minimal_discrete`` plus ``D x``, the
  gated norm ``rms_norm_ref`` (ops/triton/layernorm_gated.py)."""
  batch, seqlen, _ = u.shape
  silu = lambda v: v / (1 + np.exp(-v))
  d_ssm, nheads = sd['out_proj.weight'].shape[1], sd['dt_bias'].shape[0]
  zxbcdt = u @ sd['in_proj.weight'].T
  z, xbc, dt = np.split(zxbcdt, [d_ssm, 2 * d_ssm + 2 * d_state], axis=-1)
  w = sd['conv1d.weight']                                         # (d, 1, w), groups = d
  pad = w.shape[-1] - 1
  xp = np.pad(xbc.transpose(0, 2, 1), ((0, 0), (0, 0), (pad, pad)))
  conv = np.stack([(xp[:, :, t:t + pad + 1] * w[:, 0]).sum(-1) for t in range(seqlen + pad)],
                  -1) + sd['conv1d.bias'][:, None]
  xbc = silu(conv.transpose(0, 2, 1)[:, :-pad])
  x, b, c = np.split(xbc, [d_ssm, d_ssm + d_state], axis=-1)
  a = -np.exp(sd['A_log'])
  dt = np.logaddexp(0, dt + sd['dt_bias'])                        # dt_softplus
  xh = x.reshape(batch, seqlen, nheads, headdim)
  heads = lambda v: np.repeat(v[:, :, None], nheads, axis=2)      # the one group
  y = _np_ssd_minimal_discrete(xh * dt[..., None], a * dt, heads(b), heads(c), 3)
  y = (y + sd['D'][:, None] * xh).reshape(batch, seqlen, d_ssm)
  y = y * silu(z)                                                 # norm_before_gate=False
  y = y / np.sqrt((y ** 2).mean(-1, keepdims=True) + 1e-5) * sd['norm.weight']
  return y @ sd['out_proj.weight'].T


def test_state_spaces_torch_state_dict_converts_one_to_one():
  rng = np.random.default_rng(11)
  shapes = {'in_proj.weight': (2 * E + 2 * N + HEADS, D), 'conv1d.weight': (E + 2 * N, 1, 4),
            'conv1d.bias': (E + 2 * N,), 'dt_bias': (HEADS,), 'A_log': (HEADS,),
            'D': (HEADS,), 'norm.weight': (E,), 'out_proj.weight': (D, E)}
  pre = 'backbone.layers.0.mixer.'
  sd = {pre + k: (rng.normal(size=v) * 0.6).astype(np.float32) for k, v in shapes.items()}
  u = rng.normal(size=(BATCH, T, D)).astype(np.float32)
  layer = Mamba2(D, num_heads=HEADS, mamba2_d_state=N, mamba2_chunk=4)
  got = jax.jit(layer.apply)({'params': mamba2_params_from_torch(sd, d_state=N)}, u)
  want = _np_torch_mamba2({k[len(pre):]: v.astype(np.float64) for k, v in sd.items()},
                          u.astype(np.float64), P, N)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"\['backbone.layers.0.mixer.in_proj.bias'\] have no"):
    mamba2_params_from_torch({**sd, pre + 'in_proj.bias': np.zeros(2 * E + 2 * N + HEADS)},
                             d_state=N)
  with pytest.raises(ValueError, match="missing 'backbone.layers.0.mixer.A_log'"):
    mamba2_params_from_torch({k: v for k, v in sd.items() if not k.endswith('A_log')},
                             d_state=N)
  with pytest.raises(ValueError, match="'backbone.layers.0.mixer.D' has shape"):  # D_has_hdim
    mamba2_params_from_torch({**sd, pre + 'D': np.ones(E, np.float32)}, d_state=N)
  with pytest.raises(ValueError, match='conv1d.weight.*ngroups=1'):    # ngroups=3, d_state=1
    mamba2_params_from_torch(sd, d_state=1)
