r"""Accelerator check: every family on this machine's backend against a float32 CPU reference.

    python -m scripts.accelerator_check [--dtype=auto] [--families=lstm,mamba] \
        [--only=forward,train,decode] [--batch=8] [--time=64] [--d_model=64] [--repeats=5]

For every model family (``seqjax.models.families``; its language model, or its classifier
/ encoder-decoder when it has no LM head) the same float32 parameters and batch go
through three programs on the default device (GPU, TPU or CPU) in ``--dtype`` compute
(``auto``: bfloat16 on an accelerator, float32 on CPU) and, as the reference, on the CPU
in float32:

* ``forward``: the parallel forward pass (logits);
* ``train``: one training step (``seqjax.training.steps``: loss, gradient norm, AdamW
  update); its loss and gradient norm are compared;
* ``decode``: the prompt fed token by token through ``init_state``/``step`` (streaming),
  compared with the reference's *parallel* logits, so it checks streaming == parallel
  across devices too (families without a streaming head: ``-``).

Errors are ``max |device - reference| / max |reference|`` per output, against a tolerance
of ``TOLERANCE[dtype]``. Times are medians of ``--repeats`` runs after a warm-up, with
``block_until_ready``. The table names the device; the exit code is 1 when any check
fails, so the first run on a new accelerator is a check rather than an investigation.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Callable

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import cli
from seqjax.models.config import ModelConfig
from seqjax.models.families import FAMILIES
from seqjax.models.registry import build_model, example_inputs
from seqjax.training.steps import forward, make_train_step
from seqjax.training.state import TrainState

_DTYPE = flags.DEFINE_enum('dtype', 'auto', ['auto', 'float32', 'bfloat16'],
                           'Compute dtype on the device (auto: bfloat16 on GPU/TPU, '
                           'float32 on CPU).')
_FAMILIES = flags.DEFINE_list('families', [], 'Families to check (default: all).')
_BATCH = flags.DEFINE_integer('batch', 8, 'Batch size.', lower_bound=1)
_TIME = flags.DEFINE_integer('time', 64, 'Sequence length.', lower_bound=2)
_D_MODEL = flags.DEFINE_integer('d_model', 64, 'Model width.', lower_bound=8)
_ONLY = flags.DEFINE_list('only', ['forward', 'train', 'decode'],
                          'Programs to check (forward, train, decode).')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs per program (median).',
                                lower_bound=1)

# Relative error allowed against the float32 reference: float32 differs by summation
# order only; bfloat16 keeps 8 bits of mantissa (relative step 2**-8 = 0.4 %), and errors
# compound over layers and time steps.
TOLERANCE = {'float32': 1e-4, 'bfloat16': 6e-2}
VOCAB, CLASSES = 32, 4


def family_config(name: str, dtype: str, d_model: int, time_len: int,
                  num_layers: int = 2) -> ModelConfig:
  """A small model of family ``name``: its LM if it streams, else its first head
  (classifier or encoder-decoder)."""
  family = FAMILIES[name]
  heads = family.supported_heads
  head = 'lm' if 'lm' in heads else heads[0]
  fields: dict[str, Any] = dict(model=name, head=head, vocab_size=VOCAB, d_model=d_model,
                                num_layers=num_layers, max_len=2 * time_len, dtype=dtype)
  if head == 'classifier':
    fields.update(num_classes=CLASSES, causal=family.causal[0])
  if head == 'seq2seq':
    fields.update(tgt_vocab_size=VOCAB)
  return ModelConfig.from_mapping(fields)


def make_batch(cfg: ModelConfig, batch: int, time_len: int, seed: int = 0) -> dict:
  """Random tokens with right padding in half of the rows (host NumPy arrays)."""
  rng = np.random.default_rng(seed)
  lengths = np.where(np.arange(batch) % 2, time_len // 2 + 1, time_len)
  mask = np.arange(time_len)[None, :] < lengths[:, None]
  tokens = np.where(mask, rng.integers(4, VOCAB, (batch, time_len)), 0).astype(np.int32)
  out = {'inputs': tokens, 'mask': mask, 'example_weight': np.ones((batch,), np.float32)}
  if cfg.head == 'lm':
    out.update(targets=np.roll(tokens, -1, axis=1), weights=mask.astype(np.float32))
  elif cfg.head == 'classifier':
    out['label'] = rng.integers(0, CLASSES, (batch,)).astype(np.int32)
  else:
    out.update(decoder_inputs=tokens, targets=np.roll(tokens, -1, axis=1),
               weights=mask.astype(np.float32))
  return out


KIND = {'lm': 'token', 'classifier': 'classification', 'seq2seq': 'seq2seq'}


def programs(cfg: ModelConfig) -> dict[str, Callable]:
  """``{name: fn(params, batch)}`` for the checked programs of ``cfg``'s model."""
  model = build_model(cfg)
  optimizer = optax.adamw(1e-3)
  train = make_train_step(model, KIND[cfg.head], cfg.num_classes, optimizer,
                          optax.constant_schedule(1e-3))

  def train_fn(params, batch):
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=optimizer.init(params), rng=jax.random.PRNGKey(0))
    _, metrics = train(state, batch)
    return {'loss': metrics['loss_sum'], 'grad_norm': metrics['grad_norm']}

  out = {'forward': lambda params, batch: forward(model, params, batch, train=False),
         'train': train_fn}
  if cfg.head == 'lm':

    def decode(params, batch):
      variables = {'params': params}
      state = model.apply(variables, batch['inputs'].shape[0], method='init_state')
      step = lambda s, tok: model.apply(variables, s, tok, method='step')
      _, logits = jax.lax.scan(step, state, batch['inputs'].T)
      return jnp.swapaxes(logits, 0, 1)  # [batch, time, vocab]

    out['decode'] = decode
  return out


def relative_error(got, ref, mask=None) -> float:
  """``max |got - ref| / max |ref|`` over every leaf (real positions only for
  ``[batch, time, ...]`` outputs when ``mask`` is given)."""
  worst = 0.0
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
    if mask is not None and r.ndim >= 2 and r.shape[:2] == mask.shape:
      g, r = g[mask], r[mask]
    scale = max(float(np.abs(r).max()), 1e-30)
    worst = max(worst, float(np.abs(g - r).max()) / scale)
  return worst


def timed(fn, *args, repeats: int) -> tuple[Any, float]:
  """``(output, median seconds)`` of ``fn(*args)`` after one warm-up call."""
  out = jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return out, statistics.median(times)


def check_family(name: str, dtype: str, *, batch: int, time_len: int, d_model: int,
                 repeats: int, num_layers: int = 2, device=None,
                 only: tuple[str, ...] = ('forward', 'train', 'decode')) -> dict[str, Any]:
  """One row of the table: errors, tolerance, times (ms) and pass/fail of ``name``
  (the programs in ``only``, those the family has)."""
  device = device or jax.devices()[0]
  cpu = jax.devices('cpu')[0]
  cfg = family_config(name, dtype, d_model, time_len, num_layers)
  ref_cfg = family_config(name, 'float32', d_model, time_len, num_layers)
  host_batch = make_batch(cfg, batch, time_len)
  # Initialised in one compiled program: run eagerly, every operation of the initialiser
  # compiled on its own (about 150 small programs, half of a small check's time).
  with jax.default_device(cpu):
    params = jax.jit(build_model(ref_cfg).init)(jax.random.PRNGKey(0),
                                                *example_inputs(ref_cfg))['params']
  ref_progs, progs = programs(ref_cfg), programs(cfg)
  row = {'family': name, 'head': cfg.head, 'dtype': dtype, 'tolerance': TOLERANCE[dtype]}
  ok = True
  for what, fn in progs.items():
    if what not in only:
      continue
    try:
      ref_args = jax.device_put((params, host_batch), cpu)
      # decode is compared with the reference's parallel logits.
      ref = jax.jit(ref_progs['forward' if what == 'decode' else what])(*ref_args)
      args = jax.device_put((params, host_batch), device)
      got, seconds = timed(jax.jit(fn), *args, repeats=repeats)
    except Exception as err:  # pylint: disable=broad-except
      # A program that does not even run is a failed check, reported in its row.
      text = str(err).strip().splitlines()
      row.setdefault('failure', f'{what}: {type(err).__name__}: '
                                f'{(text[0] if text else "")[:150]}')
      ok = False
      continue
    err = relative_error(jax.device_get(got), jax.device_get(ref), host_batch['mask'])
    row[f'{what}_err'], row[f'{what}_ms'] = err, 1e3 * seconds
    ok &= bool(np.isfinite(err) and err <= TOLERANCE[dtype])
  row['ok'] = ok
  return row


def _fmt(row: dict[str, Any], key: str, kind: str) -> str:
  if key not in row:
    return '-'
  return f'{row[key]:.1e}' if kind == 'err' else f'{row[key]:.2f}'


def table(rows: list[dict[str, Any]], device) -> str:
  cols = ['family', 'head', 'dtype', 'fwd err', 'train err', 'decode err', 'tol',
          'fwd ms', 'train ms', 'decode ms', 'check']
  lines = [[r['family'], r['head'], r['dtype'],
            *(_fmt(r, f'{w}_err', 'err') for w in ('forward', 'train', 'decode')),
            f'{r["tolerance"]:.0e}',
            *(_fmt(r, f'{w}_ms', 'ms') for w in ('forward', 'train', 'decode')),
            'ok' if r['ok'] else 'FAIL'] for r in rows]
  widths = [max(len(c), *(len(l[i]) for l in lines)) for i, c in enumerate(cols)]
  out = [f'device: {device.platform} {device.device_kind} ({jax.device_count()} '
         f'device(s)); reference: cpu float32', '  '.join(c.ljust(w) for c, w in
                                                          zip(cols, widths))]
  out += ['  '.join(v.ljust(w) for v, w in zip(l, widths)) for l in lines]
  out += [f'{r["family"]}: {r["failure"]}' for r in rows if 'failure' in r]
  return '\n'.join(out)


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {argv[1:]}')
  device = jax.devices()[0]
  dtype = _DTYPE.value
  if dtype == 'auto':
    dtype = 'float32' if device.platform == 'cpu' else 'bfloat16'
  names = _FAMILIES.value or list(FAMILIES)
  unknown = [n for n in names if n not in FAMILIES]
  if unknown:
    cli.fail(f'--families: unknown {unknown}; choose from {list(FAMILIES)}')
  bad = [p for p in _ONLY.value if p not in ('forward', 'train', 'decode')]
  if bad or not _ONLY.value:
    cli.fail(f'--only={",".join(_ONLY.value)}: choose from forward, train, decode')
  rows = [check_family(n, dtype, batch=_BATCH.value, time_len=_TIME.value,
                       d_model=_D_MODEL.value, repeats=_REPEATS.value, device=device,
                       only=tuple(_ONLY.value))
          for n in names]
  print(table(rows, device))
  sys.exit(0 if all(r['ok'] for r in rows) else 1)


if __name__ == '__main__':
  cli.run(main)
