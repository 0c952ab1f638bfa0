"""Claim: an LSTM knows order implicitly; a Transformer only through explicit positional
encodings. Measured by *training* a Transformer with each kind of position information
(none, sinusoidal, learned, RoPE) and the recurrent families on ``marker_order``, a task
whose only signal is token order, all with the same budget at matched parameter counts.

``marker_order`` (``seqjax.data.synthetic.marker_order``) puts the same multiset of tokens
in every class, so a bidirectional encoder without positions, which is permutation-
invariant once its outputs are mean-pooled (self-attention is permutation-equivariant,
Vaswani et al. 2017 sec. 3.5), cannot beat chance whatever it learns. A causal decoder
without positions is included too: its mask alone leaks order (Haviv et al. 2022,
"Transformer Language Models without Positional Encodings Still Learn Positional
Information", Findings of EMNLP).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from experiments.comparison import cells, measure, plots, pool, stats
from experiments.comparison.order import output_change
from experiments.comparison.report import Finding, markdown_table
from experiments.comparison.scoring import SOLVED
from experiments.comparison.suite import Suite, whole_input_classifier
from seqjax.data.registry import get_task
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model
from seqjax.utils.xla import compiled_quickly

TASK = 'marker_order'
ENCODER_NO_POSITIONS = 'transformer encoder, no positions'
# (label, overrides) of the Transformer variants; every encoder is bidirectional with mean
# pooling, the decoder reads its last token (the only one that has seen the whole input).
TRANSFORMER_VARIANTS = [
    (ENCODER_NO_POSITIONS, {'causal': False, 'positions': 'none'}),
    ('transformer encoder, sinusoidal', {'causal': False, 'positions': 'sinusoidal'}),
    ('transformer encoder, learned', {'causal': False, 'positions': 'learned'}),
    ('transformer encoder, rope', {'causal': False, 'positions': 'rope'}),
    ('transformer decoder (causal), no positions', {'causal': True, 'positions': 'none',
                                                    'pooling': 'last'}),
]


@dataclasses.dataclass(frozen=True)
class Sizes:
  seq_len: int            # tokens per example
  num_markers: int        # classes; chance = 1 / num_markers
  num_symbols: int        # filler vocabulary
  steps: int              # budget per run (the criterion stops it earlier)
  eval_every: int
  target_params: int      # every variant matched to this many parameters
  num_layers: int
  num_train: int
  num_test: int
  num_permutations: int   # random permutations of the test inputs per variant
  num_validation: int = 256  # the criterion is checked on this split


SIZES = {
    'smoke': Sizes(seq_len=6, num_markers=2, num_symbols=4, steps=4, eval_every=2,
                   target_params=8_000, num_layers=1, num_train=64, num_test=32,
                   num_permutations=2),
    # Learned positions start from a small table (std 0.02) and are the slowest to learn:
    # in trials they reached 0.97 test accuracy after 200 steps at length 12 and needed
    # ~500 at length 16, but 1.0 after 200 at length 8, hence length 8.
    'quick': Sizes(seq_len=8, num_markers=2, num_symbols=8, steps=250, eval_every=50,
                   target_params=100_000, num_layers=2, num_train=4000, num_test=512,
                   num_permutations=4),
    'standard': Sizes(seq_len=12, num_markers=2, num_symbols=8, steps=800, eval_every=50,
                      target_params=50_000, num_layers=2, num_train=4000, num_test=512,
                      num_permutations=4),
    'full': Sizes(seq_len=32, num_markers=4, num_symbols=32, steps=3000, eval_every=100,
                  target_params=1_000_000, num_layers=4, num_train=50_000, num_test=2000,
                  num_permutations=8),
}


def variants(families: list[str]) -> list[tuple[str, str, dict]]:
  """``(label, family, model overrides)`` for the requested families: the Transformer
  variants above, and every other family as the classifier that reads the whole input
  (``suite.whole_input_classifier``), as the Transformer encoders do. The LSTM comes in
  both forms: the article's bidirectional one and the forward one."""
  out = []
  if 'transformer' in families:
    out += [(label, 'transformer', overrides) for label, overrides in TRANSFORMER_VARIANTS]
  for family in families:
    if family == 'transformer':
      continue
    if family == 'lstm':
      out.append(('lstm', 'lstm', {}))
    model, overrides = whole_input_classifier(family)
    out.append((f'{model} (both ways)' if overrides else model, model, overrides))
  return out


def task_options(sizes: Sizes) -> dict[str, int]:
  return {'seq_len': sizes.seq_len, 'num_markers': sizes.num_markers,
          'num_symbols': sizes.num_symbols, 'num_test': sizes.num_test}


BLIND_WEIGHTS = os.path.join('runs', 'positions_encoder_no_positions.msgpack')


def save_trained(path: str, model_cfg: dict, params_by_seed: dict) -> None:
  """Writes ``{'model_cfg', 'params': {seed: params}}`` as msgpack (flax.serialization)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  blob = {'model_cfg': model_cfg,
          'params': {str(seed): p for seed, p in params_by_seed.items()}}
  with open(path, 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(blob))


def load_trained(path: str) -> tuple[ModelConfig, dict]:
  """``(model config, {seed: params})`` from ``save_trained``."""
  with open(path, 'rb') as f:
    blob = flax.serialization.msgpack_restore(f.read())
  return (ModelConfig.from_mapping(blob['model_cfg']),
          {int(seed): p for seed, p in blob['params'].items()})


def permutation_change(model_cfg: dict, params_by_seed: dict[int, Any],
                       inputs: np.ndarray, perms: list[np.ndarray]) -> float:
  """The largest over seeds of max |Δ logits| / max |logits| of a trained model
  (``model_cfg``; one parameter tree per seed) when the columns of ``inputs``
  ``[batch, time]`` are permuted by each of ``perms``; NaN without parameters.

  One program per model, the parameters its argument (compiled once for every seed), and
  compiled without LLVM's optimisations: it runs a handful of times. Compiled per seed
  with the weights as constants, one model after another, the quick suite's positions
  row took 166 s; this way (and side by side, ``measure.concurrently``) 136 s."""
  if not params_by_seed:  # a cell out of memory
    return float('nan')
  model = build_model(ModelConfig.from_mapping(model_cfg))
  tokens = jnp.asarray(inputs)
  program = compiled_quickly(jax.jit(lambda p, t: model.apply({'params': p}, t)),
                             next(iter(params_by_seed.values())), tokens)
  return max(output_change(functools.partial(program, p), inputs, perms)[1]
             for p in params_by_seed.values())


def run(suite: Suite, families: list[str], outdir: str, seed: int) -> Finding:
  sizes = suite.sized(SIZES)
  suite = suite.with_seed(seed)
  options = task_options(sizes)
  test = get_task(TASK, seed=seed, num_train=sizes.num_train,
                  num_validation=sizes.num_validation,
                  **options).open('test')
  inputs = np.stack([test[i]['inputs'] for i in range(len(test))])
  rng = np.random.default_rng(seed)
  perms = [rng.permutation(sizes.seq_len) for _ in range(sizes.num_permutations)]
  start = time.perf_counter()
  planned = variants(families)
  jobs = [dict(task=TASK, family=family, seeds=suite.seed_list,
               learning_rates=suite.learning_rates,
              lr_selection=suite.lr_selection, steps=sizes.steps,
               eval_every=sizes.eval_every, task_options=options,
               model_overrides={'num_layers': sizes.num_layers, **overrides},
               target_params=sizes.target_params, max_d_model=suite.max_d_model,
               num_train=sizes.num_train, num_validation=sizes.num_validation,
               num_test=sizes.num_test, keep_params=True)
          for _, family, overrides in planned]
  trained = pool.run_cells(jobs, suite.workers)
  # The largest change over seeds: a model is order-blind only if every seed is.
  changes = measure.concurrently(lambda cell: permutation_change(
      cell['model_cfg'], cell.get('params_by_seed', {}), inputs, perms), trained)
  records = []
  for (label, family, overrides), cell, change in zip(planned, trained, changes):
    params = cell.pop('params_by_seed', {})  # none for a cell out of memory
    if label == ENCODER_NO_POSITIONS and params:  # kept to re-check its invariance
      save_trained(os.path.join(outdir, BLIND_WEIGHTS), cell['model_cfg'], params)
    records.append({
        'variant': label, **cell,
        'positions': overrides.get('positions', 'implicit (recurrence)'),
        'causal': overrides.get('causal', family != 'bilstm'),
        'permutation_change': change, 'order_blind': change < 1e-5})
  total = time.perf_counter() - start
  figures = []
  if records:
    figures.append('positions.png')
    _accuracy_bars(records, os.path.join(outdir, figures[0]), sizes)
  return Finding(
      experiment='positions', title='5b. Position information: trained with each encoding',
      claim='LSTM: position information is implicit in the order of processing. '
            'Transformer: explicit, through positional encodings.',
      prediction='On a task where order is the only signal, a Transformer encoder without '
                 'positional encodings stays at chance; with sinusoidal, learned or rotary '
                 'positions it solves the task; recurrent models solve it with no encoding.',
      measured=_summary(records, sizes, suite, total),
      verdict=_verdict(records, sizes, suite), figures=figures, records=records)


def _accuracy_bars(records, path: str, sizes: Sizes) -> None:
  plots.bars([r['variant'] for r in records], [r['score_mean'] for r in records],
             path=path, colors=['tab:red' if r['order_blind'] else 'tab:blue'
                                for r in records],
             errors=[(r['score_mean'] - r['score_min'], r['score_max'] - r['score_mean'])
                     for r in records],
             reference=1.0 / sizes.num_markers, reference_label='chance', ylim=(0.0, 1.05),
             title=f'{TASK}: test accuracy, mean and min-max over seeds\n'
                   f'(~{sizes.target_params:,} parameters each; red = order-blind model)',
             ylabel='test accuracy (fraction)')


def _summary(records, sizes: Sizes, suite: Suite, total: float) -> str:
  rows = [{**r, 'test accuracy': (cells.OUT_OF_MEMORY if cells.out_of_memory(r) else
                                  stats.format_spread(r['scores'])),
           'steps to criterion': cells.steps_text(r)} for r in records]
  cols = ['variant', 'positions', 'params', 'learning_rate', 'test accuracy', 'status',
          'steps to criterion', 'permutation_change', 'order_blind']
  return (f'Task `{TASK}`: {sizes.seq_len} tokens, {sizes.num_markers} marker tokens at '
          f'random positions among {sizes.num_symbols} filler symbols; the label is the '
          'marker that comes first, so every class has the same multiset of tokens '
          f'(chance = {1.0 / sizes.num_markers:.2f}). Every variant: ~'
          f'{sizes.target_params:,} parameters, {sizes.num_layers} layers, budget '
          f'{sizes.steps} steps of batch 32, {len(suite.seed_list)} seeds x rates '
          f'{list(suite.learning_rates)} (chosen on validation), stopped at validation '
          f'accuracy {SOLVED}; test accuracy on {sizes.num_test} examples, mean [min-max] '
          'over seeds. `permutation_change` = max |Δ logits| / max |logits| of the '
          '*trained* models (largest over seeds) when the test inputs are permuted '
          f'({sizes.num_permutations} random permutations); order-blind below 1e-5. All '
          f'runs took {total:.0f} s.\n\n' +
          markdown_table(rows, cols, {'permutation_change': '.2e', 'learning_rate': 'g'}))


def _verdict(records, sizes: Sizes, suite: Suite) -> str:
  by = {r['variant']: r for r in records}
  if ENCODER_NO_POSITIONS not in by:
    return 'Not measured (needs the transformer family).'
  blind = by[ENCODER_NO_POSITIONS]
  if cells.out_of_memory(blind):
    return f'Not measured: the encoder without positions ran {cells.OUT_OF_MEMORY}.'
  positioned = [r for r in records if r['family'] == 'transformer' and not r['causal']
                and r['positions'] != 'none']
  recurrent = [r for r in records if r['family'] != 'transformer']
  missed = [r for r in positioned + recurrent if not cells.learned(r)]
  at_chance = cells.at_chance(blind) and blind['order_blind']
  decoder = by.get('transformer decoder (causal), no positions')
  note = ''
  if decoder is not None:
    note = (f' The causal decoder without positions: {stats.format_spread(decoder["scores"])}'
            f' ({decoder["status"]}): ' +
            ('the causal mask alone carries order (each position sees a different '
             'prefix), so "explicit positions" is needed by encoders, not by decoders '
             '(Haviv et al. 2022).' if cells.learned(decoder) else
             'it did not exploit the order its causal mask leaks within the budget.'))
  accs = ', '.join(f'{r["variant"]} {stats.format_spread(r["scores"])}'
                   for r in positioned + recurrent)
  blind_text = f'{stats.format_spread(blind["scores"])} (chance {blind["chance"]:.2f})'
  if not at_chance:
    return (f'Contradicted: the encoder without positions scored {blind_text} or was not '
            'order-blind.' + note)
  if missed and suite.preview:
    return (f'Preview: the position-free encoder is order-blind and at chance '
            f'({blind_text}); {", ".join(r["variant"] for r in missed)}: {cells.PREVIEW} '
            f'({accs}).' + note)
  if missed:
    return (f'Mixed: the position-free encoder is order-blind and at chance '
            f'({blind_text}), but {", ".join(r["variant"] for r in missed)} did not reach '
            f'the criterion within {sizes.steps} steps ({accs}).' + note)
  return (f'Supported: the encoder without positions is order-blind even after training '
          f'and stays at chance ({blind_text}) with every seed; every encoding and every '
          f'recurrent model learned the task with every seed ({accs}).' + note)
