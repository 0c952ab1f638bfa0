"""Claim: an LSTM knows order implicitly (it reads tokens in sequence); a Transformer only
knows order through explicit positional encodings. Measured with a permutation test on
freshly initialised classifiers: permute the input tokens and see if the output moves."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments.comparison import plots
from experiments.comparison.measure import initialised
from experiments.comparison.report import Finding, markdown_table
from experiments.comparison.suite import Suite, model_config
from seqjax.models.registry import build_model
from seqjax.utils.xla import compiled_quickly

# (label, family, overrides): every family, and a Transformer with each kind of position
# information, both bidirectional (an encoder) and causal (a decoder).
VARIANTS = [
    ('lstm', 'lstm', {}),
    ('bilstm', 'bilstm', {}),
    ('s4d', 's4d', {}),
    ('mamba', 'mamba', {}),
    ('transformer encoder, no positions', 'transformer', {'causal': False,
                                                          'positions': 'none'}),
    ('transformer encoder, sinusoidal', 'transformer', {'causal': False,
                                                        'positions': 'sinusoidal'}),
    ('transformer encoder, learned', 'transformer', {'causal': False,
                                                     'positions': 'learned'}),
    ('transformer encoder, rope', 'transformer', {'causal': False, 'positions': 'rope'}),
    ('transformer decoder (causal), no positions', 'transformer', {'positions': 'none'}),
]


def variants(families: list[str]) -> list[tuple[str, str, dict]]:
  """The ``VARIANTS`` of the requested families (the BiLSTM comes with the LSTM), then
  every other requested family as it is built by default."""
  listed = {family for _, family, _ in VARIANTS}
  return ([v for v in VARIANTS if v[1] in families or (v[1] == 'bilstm' and
                                                       'lstm' in families)] +
          [(family, family, {}) for family in families if family not in listed])


LENGTH, NUM_SEQUENCES, NUM_PERMUTATIONS = 32, 8, 4


def output_change(apply, tokens: np.ndarray, perms: list[np.ndarray]) -> tuple[float, float]:
  """``(max |Δ output|, that / max |output|)`` over permutations ``perms`` of the columns
  (time steps) of ``tokens`` ``[batch, time]``; ``apply`` maps tokens to outputs."""
  base = np.asarray(apply(jnp.asarray(tokens)))
  change = max(float(np.abs(np.asarray(apply(jnp.asarray(tokens[:, p]))) - base).max())
               for p in perms)
  return change, change / max(float(np.abs(base).max()), 1e-30)


def run(suite: Suite, families: list[str], outdir: str, seed: int) -> Finding:
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, suite.vocab_size, (NUM_SEQUENCES, LENGTH)).astype(np.int32)
  perms = [rng.permutation(LENGTH) for _ in range(NUM_PERMUTATIONS)]
  records = []
  for label, family, overrides in variants(families):
    cfg = model_config(suite, family, max_len=LENGTH, head='classifier', num_classes=8,
                       pooling='mean', **overrides)
    model = build_model(cfg)
    # Both run only a few times: compiled without LLVM's optimisations (measure.py).
    params = initialised(model, jax.random.key(seed), jnp.asarray(tokens))['params']
    apply = compiled_quickly(jax.jit(lambda t, m=model, p=params: m.apply({'params': p}, t)),
                             jnp.asarray(tokens))
    change, relative = output_change(apply, tokens, perms)
    records.append({'model': label, 'max_abs_output_change': change,
                    'relative_change': relative, 'order_blind': change < 1e-5})
  figure = 'order.png'
  plots.bars([r['model'] for r in records],
             [max(r['relative_change'], 1e-9) for r in records],
             path=os.path.join(outdir, figure),
             title='Output change when the input tokens are permuted',
             ylabel='max |Δ logits| / max |logits| (log)', log=True)
  blind = [r['model'] for r in records if r['order_blind']]
  return Finding(
      experiment='order', title='5. Position information: who is order-blind?',
      claim='LSTM: position information is implicit in the order of processing. '
            'Transformer: explicit, through positional encodings.',
      prediction='Permuting the tokens changes every recurrent model\'s output and leaves a '
                 'Transformer encoder without positional encodings exactly unchanged.',
      measured=('Untrained classifiers (mean pooling, ~'
                f'{suite.target_params:,} parameters), {NUM_SEQUENCES} random sequences of '
                f'{LENGTH} tokens, {NUM_PERMUTATIONS} random permutations; a model is '
                'order-blind when no logit moves by more than 1e-5.\n\n' +
                markdown_table(records, ['model', 'max_abs_output_change',
                                         'relative_change', 'order_blind'],
                               {'max_abs_output_change': '.2e',
                                'relative_change': '.2e'})),
      verdict=_verdict(blind),
      figures=[figure], records=records)


def _verdict(blind: list[str]) -> str:
  expected = ['transformer encoder, no positions']
  if blind == expected:
    return ('Supported. Only the Transformer encoder without positional encodings is '
            'order-blind. A causal Transformer without positions is not: the causal mask '
            'itself leaks order (each position sees a different prefix), which is why '
            'decoder-only models can work without explicit positions (Haviv et al. 2022).')
  return f'Mixed. Order-blind models measured: {blind or "none"}.'
