"""Interpretability experiment: attention scores against brute-force NumPy references,
saliency against the embedding-table gradient, and the smoke run's figures and records."""

from __future__ import annotations

import datetime
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.comparison import attention_scores, interpret
from experiments.comparison.suite import SUITES
from seqjax.data.spec import EOS_ID
from seqjax.data.synthetic import translation
from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model, init_params

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _model(cfg):
  # Jitted init: eager initialisation of a scanned LSTM takes seconds.
  return build_model(cfg), jax.jit(lambda key: init_params(cfg, key))(jax.random.key(0))


def _causal_softmax(rng, batch, heads, time_):
  logits = rng.normal(size=(batch, heads, time_, time_)) * 2
  logits = np.where(np.tri(time_, dtype=bool), logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  return weights / weights.sum(-1, keepdims=True)


def _brute_induction(weights, tokens, query_mask):
  batch, heads, time_, _ = weights.shape
  totals, count = np.zeros(heads), 0
  for b in range(batch):
    for t in range(time_):
      if not query_mask[b, t]:
        continue
      earlier = [j for j in range(t) if tokens[b, j] == tokens[b, t]]
      if earlier:
        totals += weights[b, :, t, earlier[-1] + 1]
        count += 1
  return totals / count


def test_induction_score_matches_brute_force_and_its_extremes():
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, 9, (3, 12))  # few symbols: many repeats
  mask = rng.random((3, 12)) < 0.6
  weights = _causal_softmax(rng, 3, 2, 12)
  np.testing.assert_allclose(attention_scores.induction_scores(weights, tokens, mask),
                             _brute_induction(weights, tokens, mask), rtol=1e-12)
  # A perfect induction head scores 1; uniform causal attention scores mean 1/(t + 1).
  perfect = np.zeros_like(weights)
  uniform = np.tri(12)[None, None] / np.arange(1, 13)[None, None, :, None]
  uniform = np.broadcast_to(uniform, weights.shape)
  expected_uniform, n = 0.0, 0
  for b in range(3):
    for t in range(12):
      earlier = [j for j in range(t) if tokens[b, j] == tokens[b, t]]
      if earlier and mask[b, t]:
        perfect[b, :, t, earlier[-1] + 1] = 1.0
        expected_uniform, n = expected_uniform + 1 / (t + 1), n + 1
  np.testing.assert_allclose(attention_scores.induction_scores(perfect, tokens, mask), 1.0)
  np.testing.assert_allclose(attention_scores.induction_scores(uniform, tokens, mask),
                             expected_uniform / n, rtol=1e-12)
  assert attention_scores.uniform_induction_baseline(tokens, mask) == pytest.approx(
      expected_uniform / n, rel=1e-12)


def test_previous_token_score_matches_brute_force():
  rng = np.random.default_rng(1)
  weights = _causal_softmax(rng, 2, 3, 10)
  mask = rng.random((2, 10)) < 0.5
  mask[:, 1] = True
  for query_mask in (None, mask):
    use = np.ones((2, 10), bool) if query_mask is None else query_mask
    picks = [weights[b, :, t, t - 1] for b in range(2) for t in range(1, 10) if use[b, t]]
    np.testing.assert_allclose(attention_scores.previous_token_scores(weights, query_mask),
                               np.mean(picks, axis=0), rtol=1e-12)
  shifted = np.zeros_like(weights)
  shifted[:, :, 0, 0] = 1.0
  for t in range(1, 10):
    shifted[:, :, t, t - 1] = 1.0
  np.testing.assert_allclose(attention_scores.previous_token_scores(shifted), 1.0)


def test_date_alignment_pairs_copy_the_same_digit():
  assert attention_scores.date_alignment('3 nov 2026') == [(0, 6), (1, 7), (2, 8), (3, 9), (9, 0)]
  assert attention_scores.date_alignment('23.11.2026') == [
      (0, 6), (1, 7), (2, 8), (3, 9), (5, 3), (6, 4), (8, 0), (9, 1)]
  for day in (datetime.date(1951, 2, 3), datetime.date(2049, 12, 31)):
    iso = f'{day.year:04d}-{day.month:02d}-{day.day:02d}'
    for number, fmt in enumerate(translation.DATE_FORMATS):
      text = fmt(day)
      pairs = attention_scores.date_alignment(text)
      assert all(text[s] == iso[t] for t, s in pairs), (text, pairs)
      # The year, the day's written digits, and the month only when written as digits.
      expected = 4 + (2 if number == 4 else len(str(day.day))) + (2 if number == 4 else 0)
      assert len(pairs) == expected
  with pytest.raises(ValueError, match='not a date'):
    attention_scores.date_alignment('nov 3')


def test_alignment_accuracy_matches_brute_force():
  rng = np.random.default_rng(2)
  weights = rng.random((4, 6, 9))
  pairs = [[(t, int(rng.integers(9))) for t in rng.choice(6, 3, replace=False)]
           for _ in range(4)]
  for tolerance in (0, 1, 2):
    hits = [abs(int(np.argmax(weights[b, t])) - s) <= tolerance
            for b in range(4) for t, s in pairs[b]]
    assert attention_scores.alignment_accuracy(weights, pairs, tolerance) == pytest.approx(
        sum(hits) / len(hits))
  one_hot = np.zeros_like(weights)
  for b, rows in enumerate(pairs):
    for t, s in rows:
      one_hot[b, t, s] = 1.0
  assert attention_scores.alignment_accuracy(one_hot, pairs) == 1.0
  late = np.roll(one_hot, 1, axis=2)
  late_pairs = [[(t, s) for t, s in rows if s < 8] for rows in pairs]  # no wrap-around
  assert attention_scores.alignment_accuracy(late, late_pairs) == 0.0
  assert attention_scores.alignment_accuracy(late, late_pairs, tolerance=1) == 1.0


def test_lstm_saliency_equals_the_embedding_row_gradient():
  # With distinct tokens, d logit / d (embedding row of token t) is d logit / d x_t.
  cfg = ModelConfig(model='lstm', head='lm', vocab_size=16, d_model=8, num_layers=1)
  model, params = _model(cfg)
  tokens = jnp.asarray([[3, 7, 1, 9, 12, 5], [2, 4, 6, 8, 10, 11]], jnp.int32)
  answers = jnp.asarray([4, 13])
  position = 3
  got = attention_scores.embedding_saliency(model, params, tokens, position, answers)

  def logit(p):
    out = model.apply({'params': p}, tokens)[:, position]
    return jnp.take_along_axis(out, answers[:, None], axis=-1).sum()

  grads = jax.jit(jax.grad(logit))(params)['backbone']['embed']['token_embed']['embedding']
  # All 12 ids differ, so each table row collects the gradient of exactly one position.
  expected = np.linalg.norm(np.asarray(grads)[np.asarray(tokens)], axis=-1)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
  assert np.all(got[:, position + 1:] == 0) and np.all(got[:, :position + 1] > 0)


def test_bahdanau_alignments_on_an_untrained_model(tmp_path):
  opts = dict(translation.SeqjaxToyTranslation.DEFAULTS)
  vocab = translation.SeqjaxToyTranslation.vocab(opts)
  days = [datetime.date(1990, 1, 1) + datetime.timedelta(days=97 * i) for i in range(6)]
  test = []
  for i, day in enumerate(days):
    text = translation.DATE_FORMATS[i](day)
    iso = f'{day.year:04d}-{day.month:02d}-{day.day:02d}'
    target = translation._encode(iso, translation.DATE_TARGET_CHARS)
    test.append({'inputs': translation._encode(text, translation.DATE_SOURCE_CHARS),
                 'targets': np.append(target, np.int32(EOS_ID))})
  cfg = ModelConfig(model='lstm_attention', head='seq2seq',
                    vocab_size=len(vocab['source_vocab']),
                    tgt_vocab_size=len(vocab['target_vocab']), d_model=8, num_layers=1)
  model, params = _model(cfg)
  path = str(tmp_path / 'bahdanau.png')
  row = interpret.bahdanau_alignments(model, params, test, vocab, path)
  expected_pairs = sum(len(attention_scores.date_alignment(translation.DATE_FORMATS[i](d)))
                       for i, d in enumerate(days))
  assert row['examples'] == 6 and row['aligned_tokens'] == expected_pairs
  assert 0.0 <= row['alignment_accuracy'] <= row['alignment_accuracy_pm1'] <= 1.0
  assert open(path, 'rb').read(8) == PNG_MAGIC and os.path.getsize(path) > 1000


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  # Only the Transformer is trained here (one short run) to keep the test fast; the
  # Bahdanau and LSTM paths are covered above on untrained models.
  outdir = str(tmp_path_factory.mktemp('interpret'))
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('SEQJAX_DATA_DIR', str(tmp_path_factory.mktemp('data')))
    return outdir, interpret.run(SUITES['smoke'], ['transformer'], outdir, seed=0)


def test_smoke_run_writes_figures_and_complete_records(smoke):
  outdir, finding = smoke
  assert finding.experiment == 'interpret' and finding.title == '6. Interpretability'
  assert finding.verdict.split(':')[0] in ('Supported', 'Mixed')
  assert 'Jain & Wallace' in finding.verdict
  for figure in finding.figures:
    path = os.path.join(outdir, figure)
    assert open(path, 'rb').read(8) == PNG_MAGIC and os.path.getsize(path) > 1000
  sizes = interpret.SIZES['smoke']
  seeds = SUITES['smoke'].seed_list
  heads = [r for r in finding.records if r['part'] == 'transformer head']
  # Every head of every seed's model is scored.
  assert len(heads) == len(seeds) * sizes.num_layers * sizes.num_heads
  assert sorted({r['seed'] for r in heads}) == seeds
  for row in heads:
    for key in ('induction_score', 'previous_token_score', 'b_to_a_score'):
      assert 0.0 <= row[key] <= 1.0
  saliency = [r for r in finding.records if r['part'] == 'gradient saliency']
  assert [r['seed'] for r in saliency] == seeds
  assert all(r['model'] == 'transformer' and 0 < r['saliency_share_at_b'] < 1
             for r in saliency)
  assert all(r['steps'] == sizes.induction_steps for r in finding.records)
  assert f'{heads[0]["induction_score"]:.3f}' in finding.measured
  # The spread line over seeds is the best head of each seed.
  best = [max(r['induction_score'] for r in heads if r['seed'] == s) for s in seeds]
  assert interpret.stats.format_spread(best) in finding.measured
