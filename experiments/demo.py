r"""Builds every seqjax family, runs it in parallel and streaming mode, and prints how well
the two agree and how many parameters each model has.

  python -m experiments.demo                       # all families, matched at ~200k params
  python -m experiments.demo --families=lstm,mamba --seq_len=256 --target_params=1000000
  python -m experiments.demo --list                # implementation switches, and what
                                                   # impl='auto' picks on this machine

Causal families run as language models: the logits from one parallel pass are compared
with those from feeding the tokens one at a time through ``step``. The bidirectional LSTM
cannot stream, so it runs as a classifier and is checked for padding invariance instead.
The encoder–decoder (``lstm_attention``) checks that greedy decoding and teacher forcing on
greedy's own output agree.
"""

from __future__ import annotations

import textwrap
import time

from absl import flags, logging
import jax
import jax.numpy as jnp
import numpy as np

from experiments import cli
from seqjax.models.config import CAUSAL_MODELS, MODEL_NAMES, ModelConfig
from seqjax.models.families import FAMILIES, all_switches
from seqjax.models.registry import build_model
from seqjax.models.sizing import count_params, match_d_model
from seqjax.ops.switch import describe

_FAMILIES = flags.DEFINE_list('families', list(MODEL_NAMES), 'Families to build.')
_SEQ_LEN = flags.DEFINE_integer('seq_len', 64, 'Tokens per sequence.', lower_bound=2)
_BATCH = flags.DEFINE_integer('batch', 4, 'Sequences per batch.', lower_bound=1)
_VOCAB = flags.DEFINE_integer('vocab', 64, 'Vocabulary size.', lower_bound=3)
_LAYERS = flags.DEFINE_integer('num_layers', 2, 'Blocks per model.', lower_bound=1)
_TARGET = flags.DEFINE_integer('target_params', 200_000,
                               'Widths are chosen so every model has about this many '
                               'parameters.', lower_bound=1000)
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_LIST = flags.DEFINE_bool('list', False,
                          'Print every implementation switch (ModelConfig.impl), its '
                          "choices and what 'auto' resolves to on this machine, then exit.")


def _config(family: str) -> ModelConfig:
  common = dict(model=family, vocab_size=_VOCAB.value, num_layers=_LAYERS.value,
                max_len=max(_SEQ_LEN.value, 8))
  if family == 'lstm_attention':
    return ModelConfig(head='seq2seq', tgt_vocab_size=_VOCAB.value, **common)
  if family == 'bilstm':
    return ModelConfig(head='classifier', num_classes=4, **common)
  return ModelConfig(head='lm', **common)


def _check_lm(model, params, tokens) -> float:
  variables = {'params': params}
  parallel = jax.jit(lambda t: model.apply(variables, t))(tokens)

  @jax.jit
  def stream(tokens):
    state = model.apply(variables, tokens.shape[0], method='init_state')
    step = lambda s, tok: model.apply(variables, s, tok, method='step')
    return jax.lax.scan(step, state, tokens.T)[1].transpose(1, 0, 2)

  return float(jnp.max(jnp.abs(stream(tokens) - parallel)))


def _check_classifier(model, params, tokens) -> float:
  apply = jax.jit(lambda t: model.apply({'params': params}, t))
  padded = jnp.concatenate([tokens, jnp.zeros_like(tokens)], axis=1)
  return float(jnp.max(jnp.abs(apply(padded) - apply(tokens))))


def _check_seq2seq(model, params, tokens) -> float:
  steps = tokens.shape[1]
  out, attn = model.apply({'params': params}, tokens, steps, 1, method='greedy_decode')
  tgt_in = jnp.concatenate([jnp.ones_like(out[:, :1]), out[:, :-1]], axis=1)
  _, inter = model.apply({'params': params}, tokens, tgt_in, mutable=['intermediates'])
  return float(jnp.max(jnp.abs(inter['intermediates']['attention_weights'][0] - attn)))


CHECKS = {'lm': ('stream vs parallel', _check_lm),
          'classifier': ('padding invariance', _check_classifier),
          'seq2seq': ('greedy vs teacher', _check_seq2seq)}


def print_switches() -> None:
  """The table behind ``--list``: one row per site of ``impl``."""
  rows = describe(all_switches(), lengths=(128, 4096))
  users = {s.site: [n for n, f in FAMILIES.items() if s in f.switches]
           for s in all_switches()}
  print(f'platform: {jax.default_backend()}  (impl=\'site:choice,...\'; unnamed sites are '
        'auto)')
  print(f'{"site":<16}{"choices":<36}{"auto here":<34}families')
  for row in rows:
    print(f'{row["site"]:<16}{row["choices"]:<36}{row["auto"]:<34}'
          f'{",".join(users[row["site"]])}')
    print(textwrap.fill(row['doc'], 100, initial_indent=' ' * 16,
                        subsequent_indent=' ' * 16))


def main(argv):
  del argv
  if _LIST.value:
    print_switches()
    return
  unknown = sorted(set(_FAMILIES.value) - set(MODEL_NAMES))
  if unknown:
    cli.fail(f'--families: unknown {unknown}; choose from {list(MODEL_NAMES)}')
  logging.info('devices: %s', jax.devices())
  rng = np.random.default_rng(_SEED.value)
  tokens = jnp.asarray(rng.integers(1, _VOCAB.value, (_BATCH.value, _SEQ_LEN.value)),
                       jnp.int32)
  print(f'{"family":<15}{"head":<11}{"d_model":>8}{"params":>10}  {"check":<19}'
        f'{"max |diff|":>11}{"time (s)":>10}')
  worst = 0.0
  for family in _FAMILIES.value:
    start = time.perf_counter()
    cfg = match_d_model(_config(family), _TARGET.value)
    model = build_model(cfg)
    init_args = (tokens, tokens) if cfg.head == 'seq2seq' else (tokens,)
    params = model.init(jax.random.key(_SEED.value), *init_args)['params']
    name, check = CHECKS[cfg.head]
    diff = check(model, params, tokens)
    worst = max(worst, diff)
    streams = 'streams' if family in CAUSAL_MODELS else 'parallel only'
    print(f'{family:<15}{cfg.head:<11}{cfg.d_model:>8}{count_params(params):>10,}  '
          f'{name:<19}{diff:>11.2e}{time.perf_counter() - start:>10.1f}   ({streams})')
  print(f'largest disagreement: {worst:.2e} ({"OK" if worst < 1e-4 else "TOO LARGE"})')
  if worst >= 1e-4:
    raise SystemExit(1)


if __name__ == '__main__':
  cli.run(main)
