"""Shared test references and helpers, handed to tests as fixtures.

* ``torch_rnn``: NumPy (float64) transcriptions of PyTorch's ``nn.LSTM`` / ``nn.GRU``
  equations and random weights in their state-dict layout, written once for the LSTM, GRU,
  classifier and encoder-decoder tests.
* ``stream``: runs a mixer (or model) token by token from ``init_state`` with ``step``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import types

# Tests compile hundreds of small programs and run each a few times, so compile time is
# most of the suite's time. Two XLA:CPU flags cut it: they change how the kernels of a
# program are generated, not the program (every test's tolerance holds with both, and
# the benchmarks run XLA's defaults). LLVM's optimisation passes buy nothing
# here (measured: the LM model tests take 39 s instead of 57 s). The older loop emitters
# for fused elementwise kernels compile faster than the MLIR fusion emitters (2026-12-02,
# jaxlib 0.10.2: tests/models 85.5 -> 64.8 s, backend compile 42.6 -> 24.1 s). Set before
# JAX creates its CPU backend; subprocesses inherit them.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_backend_optimization_level=0'
                           ' --xla_cpu_use_fusion_emitters=false').strip()

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp
import numpy as np
import pytest


def _sigmoid(v):
  return 1.0 / (1.0 + np.exp(-v))


def _torch_weights(rng, gates: int, input_size: int, hidden: int, num_layers: int,
                   bidirectional: bool, scale: float = 0.6, prefix: str = '') -> dict:
  """Random float32 weights named and shaped like ``nn.LSTM`` (``gates=4``, blocks
  ``i, f, g, o``) or ``nn.GRU`` (``gates=3``, blocks ``r, z, n``) state dicts, drawn from
  ``U(-scale, scale)``; keys start with ``prefix`` (e.g. ``'lstm.'`` inside a model)."""
  w = {}
  for k in range(num_layers):
    width = input_size if k == 0 else hidden * (2 if bidirectional else 1)
    for sfx in ([f'_l{k}', f'_l{k}_reverse'] if bidirectional else [f'_l{k}']):
      w[f'{prefix}weight_ih{sfx}'] = rng.uniform(-scale, scale, (gates * hidden, width))
      w[f'{prefix}weight_hh{sfx}'] = rng.uniform(-scale, scale, (gates * hidden, hidden))
      w[f'{prefix}bias_ih{sfx}'] = rng.uniform(-scale, scale, (gates * hidden,))
      w[f'{prefix}bias_hh{sfx}'] = rng.uniform(-scale, scale, (gates * hidden,))
  return {k: v.astype(np.float32) for k, v in w.items()}


def _lstm_step(x, carry, w_ih, w_hh, b_ih, b_hh):
  """The article's six LSTM equations, PyTorch gate order ``(i, f, g, o)``."""
  h, c = carry
  i, f, g, o = np.split(w_ih @ x + b_ih + w_hh @ h + b_hh, 4)
  c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
  return _sigmoid(o) * np.tanh(c), c


def _gru_step(x, h, w_ih, w_hh, b_ih, b_hh):
  """PyTorch's GRU equations, gate blocks ``(r, z, n)``; ``b_hn`` sits inside ``r * (.)``."""
  xr, xz, xn = np.split(w_ih @ x + b_ih, 3)
  hr, hz, hn = np.split(w_hh @ h + b_hh, 3)
  r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
  n = np.tanh(xn + r * hn)
  return (1 - z) * n + z * h


def _stack(x, w, cell: str, num_layers: int, bidirectional: bool, prefix: str = ''):
  """A stacked (bi)LSTM/GRU over one unpadded sequence ``x`` ``[T, in]``, float64.

  Returns ``(y [T, D*H], finals)``; ``finals`` lists each direction's final carry in
  PyTorch's ``h_n`` order (layer 0 fwd, layer 0 bwd, layer 1 fwd, ...): ``(h, c)`` for an
  LSTM, ``h`` for a GRU.
  """
  step = _lstm_step if cell == 'lstm' else _gru_step
  w = {k: np.asarray(v, np.float64) for k, v in w.items()}
  inp, finals = np.asarray(x, np.float64), []
  for k in range(num_layers):
    outs = []
    for reverse in ([False, True] if bidirectional else [False]):
      sfx = f'_l{k}' + ('_reverse' if reverse else '')
      args = [w[f'{prefix}{n}{sfx}'] for n in ('weight_ih', 'weight_hh', 'bias_ih',
                                                'bias_hh')]
      hidden = args[1].shape[1]
      carry = (np.zeros(hidden), np.zeros(hidden)) if cell == 'lstm' else np.zeros(hidden)
      out = np.zeros((len(inp), hidden))
      for t in (reversed(range(len(inp))) if reverse else range(len(inp))):
        carry = step(inp[t], carry, *args)
        out[t] = carry[0] if cell == 'lstm' else carry
      outs.append(out)
      finals.append(carry)
    inp = np.concatenate(outs, axis=-1)
  return inp, finals


@pytest.fixture(scope='session')
def torch_rnn():
  """``torch_rnn.weights(rng, gates, input_size, hidden, num_layers, bidirectional,
  scale=0.6, prefix='')``, ``torch_rnn.stack(x, w, 'lstm'|'gru', num_layers,
  bidirectional, prefix='')``, ``torch_rnn.lstm_step``, ``torch_rnn.gru_step``,
  ``torch_rnn.sigmoid``."""
  return types.SimpleNamespace(weights=_torch_weights, stack=_stack, lstm_step=_lstm_step,
                               gru_step=_gru_step, sigmoid=_sigmoid)


def _stream(module, variables, xs):
  """``(final_state, ys)``: ``xs`` ``[batch, time, ...]`` fed token by token through
  ``module.step`` from ``module.init_state(batch)`` (one ``lax.scan``, no Python loop)."""
  state = module.apply(variables, xs.shape[0], method='init_state')
  step = lambda s, x_t: module.apply(variables, s, x_t, method='step')
  state, ys = jax.lax.scan(step, state, jnp.swapaxes(xs, 0, 1))
  return state, jnp.swapaxes(ys, 0, 1)


@pytest.fixture(scope='session')
def stream():
  """``stream(module, variables, xs) -> (final_state, ys [batch, time, ...])``; call it
  inside ``jax.jit``."""
  return _stream


def _assert_streamed_gradients_agree(module, variables, xs, rtol=1e-4, atol=1e-5):
  """Gradients (in the variables and the inputs ``xs`` ``[batch, time, d]``) of a fixed
  random projection of the parallel output equal those of the streamed output."""
  w = jnp.asarray(np.random.default_rng(1).normal(size=xs.shape), jnp.float32)
  parallel = lambda v, x: jnp.sum(w * module.apply(v, x))
  streamed = lambda v, x: jnp.sum(w * _stream(module, v, x)[1])
  got, want = jax.jit(lambda v, x: (jax.grad(parallel, (0, 1))(v, x),
                                    jax.grad(streamed, (0, 1))(v, x)))(variables, xs)
  for g, s in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, s, rtol=rtol, atol=atol)


@pytest.fixture(scope='session')
def streamed_gradients_agree():
  """``streamed_gradients_agree(module, variables, xs)``: asserts that gradients through
  the parallel ``__call__`` and through ``step`` token by token agree (1e-4 / 1e-5)."""
  return _assert_streamed_gradients_agree


def pytest_configure(config):
  """One persistent XLA compilation cache for the whole session, shared with every
  subprocess a test starts (through the environment): a program compiled once (the same
  model in a rerun, a CLI subprocess, a spawned worker) is loaded, not compiled again.
  Results cannot change: a cache hit is the same executable."""
  del config
  cache = tempfile.mkdtemp(prefix='seqjax-test-jit-')
  atexit.register(shutil.rmtree, cache, ignore_errors=True)
  settings = {'jax_compilation_cache_dir': cache,
              'jax_persistent_cache_min_compile_time_secs': 0,
              'jax_persistent_cache_min_entry_size_bytes': 0}
  for name, value in settings.items():
    os.environ.setdefault(name.upper(), str(value))
    jax.config.update(name, type(value)(os.environ[name.upper()]))


def _noise_params(module, *inputs, seed: int = 0):
  """Parameters in ``module.init``'s layout, drawn with NumPy: weights ~ N(0, 1/fan_in)
  (so activations stay O(1), as an initialiser would keep them), vectors ~ N(0, 1/4).
  Only the shapes are traced; compiling an initialiser (its random-number programs) costs
  more than the model it initialises. For properties that hold for any parameters."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), *inputs)['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(
      rng.normal(size=s.shape) / np.sqrt(s.shape[0] if len(s.shape) > 1 else 4), s.dtype),
                      shapes)


@pytest.fixture(scope='session')
def noise_params():
  """``noise_params(module, *inputs, seed=0)``: random parameters in the layout
  ``module.init(key, *inputs)['params']`` gives, without compiling the initialiser."""
  return _noise_params


# The test files that take longest, slowest first (summed seconds on the 2-core CPU,
# 2026-12-02: ~230, 190, 120, 100, 70, then 25-45 each). Under ``--dist loadfile`` a file
# runs on one worker from start to end; starting the long ones first (longest-processing-
# time-first scheduling) keeps one of them from running alone at the end while the other
# worker idles. pyproject's ``--no-loadscope-reorder`` makes xdist keep this order instead
# of its own (files with the most tests first, which put these last).
SLOW_FIRST = ('tests/training/test_train_runs.py', 'tests/layers/test_mixer_contract.py',
              'tests/experiments/test_compare.py', 'tests/training/test_drills.py',
              'tests/experiments/test_compare_longrange.py',
              'tests/models/test_classifier.py',
              'tests/experiments/test_compare_positions.py', 'tests/models/test_lm.py',
              'tests/experiments/test_compare_scale.py',
              'tests/experiments/test_compare_interpret.py')


def pytest_collection_modifyitems(config, items):
  del config
  rank = {path: i for i, path in enumerate(SLOW_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid.split('::')[0], len(SLOW_FIRST)))
