"""The comparison report: end to end on the smoke suite, and its numerical helpers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.comparison import measure, memory, order, speed, streaming
from experiments.comparison.report import environment, growth_exponent, write_report
from experiments.comparison.suite import REVIVAL, SUITES

SMOKE = SUITES['smoke']


def test_growth_exponent_recovers_power_laws():
  lengths = [128, 256, 512, 1024]
  for power in (1.0, 2.0):
    values = [3.0 * n ** power for n in lengths]
    assert growth_exponent(lengths, values) == pytest.approx(power, abs=1e-9)
  # A constant plus a quadratic term: the slope lies between the two regimes.
  mixed = [1e5 + n ** 2 for n in lengths]
  assert 0.5 < growth_exponent(lengths, mixed) < 2.0


@pytest.fixture(scope='module')
def report_dir(tmp_path_factory):
  outdir = str(tmp_path_factory.mktemp('compare'))
  families = ['lstm', 'transformer']
  # The order test needs every variant; the timing experiments are exercised on the
  # Transformer (exact and chunked attention) to keep the suite fast.
  findings = [order.run(SMOKE, families, outdir, seed=0)]
  findings += [module.run(SMOKE, ['transformer'], outdir, seed=0)
               for module in (memory, streaming, speed)]
  write_report(outdir, environment(SMOKE, 0, families), findings)
  return outdir, findings


def test_same_seed_gives_the_same_numbers(report_dir, tmp_path):
  _, findings = report_dir
  again = order.run(SMOKE, ['lstm', 'transformer'], str(tmp_path), seed=0)
  assert again.records == findings[0].records
  other = order.run(SMOKE, ['lstm'], str(tmp_path), seed=1)
  assert other.records[0] != findings[0].records[0]


def test_order_blindness_is_exactly_the_unpositioned_encoder(report_dir):
  _, findings = report_dir
  rows = {r['model']: r for r in findings[0].records}
  assert rows['transformer encoder, no positions']['order_blind']
  blind = [name for name, r in rows.items() if r['order_blind']]
  assert blind == ['transformer encoder, no positions']
  assert rows['transformer decoder (causal), no positions']['relative_change'] > 1e-3
  assert findings[0].verdict.startswith('Supported')


def test_report_has_every_section_figure_and_raw_number(report_dir):
  outdir, findings = report_dir
  text = open(os.path.join(outdir, 'report.md')).read()
  for finding in findings:
    assert f'## {finding.title}' in text and finding.verdict in text
    for figure in finding.figures:
      assert os.path.getsize(os.path.join(outdir, figure)) > 1000  # a real PNG
    with open(os.path.join(outdir, f'{finding.experiment}.csv')) as f:
      assert len(list(csv.DictReader(f))) == len(finding.records)
  results = json.load(open(os.path.join(outdir, 'results.json')))
  assert results['environment']['seed'] == 0 and results['environment']['jax']
  # One row per (variant, length): exact and chunked Transformer.
  assert len(findings[1].records) == 2 * len(SMOKE.memory_lengths)


def test_memory_records_are_positive_and_exact_attention_grows_faster(report_dir):
  _, findings = report_dir
  rows = findings[1].records
  assert all(r['train_temp_mib'] > 0 and r['peak_rss_mib_at_longest'] > 0 for r in rows)
  # The probe's high-water mark can only rise from the short step to the long one.
  assert all(r['peak_rss_mib_at_longest'] >= r['peak_rss_mib_at_shortest'] for r in rows)

  def growth(model):
    by_len = {r['seq_len']: r['train_temp_mib'] for r in rows if r['model'] == model}
    return by_len[max(by_len)] / by_len[min(by_len)]

  # Exact attention materialises [T, T] weights; the chunked kernel does not, so its
  # buffers grow more slowly with length.
  assert growth('transformer') > growth('transformer (chunked attention)')


def test_rss_probe_counts_its_own_process_not_its_parent():
  """A probe started by a process holding 1 GiB reports its own peak: Linux carries
  ``ru_maxrss`` across fork + exec, which made every model's probe report the driver's
  peak."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  ballast = np.ones(2**27)  # 1 GiB, touched
  probe = subprocess.run(
      [sys.executable, '-c', 'from experiments.comparison.rss_probe import peak_rss_mib; '
       'import numpy as np; before = peak_rss_mib(); x = np.ones(2**25); '
       'print(before, peak_rss_mib())'], cwd=repo, capture_output=True, text=True,
      check=True)
  before, after = map(float, probe.stdout.split())
  assert ballast[-1] == 1.0 and before < 768, before   # jax + numpy, not the parent's GiB
  assert 200 < after - before < 300                     # the child's own 256 MiB


def test_streaming_and_speed_rows_cover_the_grid(report_dir):
  _, findings = report_dir
  stream, speed_finding = findings[2], findings[3]
  assert {(r['family'], r['context']) for r in stream.records} == {
      ('transformer', c) for c in SMOKE.stream_contexts}
  assert all(np.isfinite(r['ms_per_token']) and r['ms_per_token'] > 0
             for r in stream.records)
  assert {r['seq_len'] for r in speed_finding.records} == set(SMOKE.speed_lengths)
  assert {r['model'] for r in speed_finding.records} == {
      'transformer (exact attention)', 'transformer (chunked attention)'}


def test_speed_verdict_needs_both_attentions():
  """The LSTM slower than exact attention everywhere but faster than chunked attention
  at the longest length: the verdict is mixed and names both ratios."""
  times = {'lstm': (10.0, 40.0), 'transformer (exact attention)': (5.0, 20.0),
           'transformer (chunked attention)': (8.0, 50.0)}
  records = [{'model': m, 'seq_len': t, 'ms_per_step': ms[i]}
             for m, ms in times.items() for i, t in enumerate(SMOKE.speed_lengths)]
  verdict = speed._verdict(records, SMOKE)
  assert verdict.startswith('Mixed.')
  assert 'Transformer (exact attention) time: T=16: 2.00x, T=64: 2.00x' in verdict
  assert 'Transformer (chunked attention) time: T=16: 1.25x, T=64: 0.80x' in verdict
  assert 'Chunked / exact attention time at T=64: 2.50' in verdict
  exact_only = [r for r in records if 'chunked' not in r['model']]
  assert speed._verdict(exact_only, SMOKE).startswith('Supported.')


def test_a_step_that_does_not_fit_in_memory_is_recorded_not_raised():
  """Exact attention at the full suite's lengths does not fit a CPU's memory (31.7 GB
  asked at T=4096, batch 8): the row records it and judges the lengths that ran."""
  too_big = lambda x: jnp.broadcast_to(x, (2**38,)) * 2  # asks XLA for 1 TiB
  assert measure.timed_unless_out_of_memory(too_big, jnp.float32(1), repeats=1) is None
  with pytest.raises(TypeError):  # any other failure still raises
    measure.timed_unless_out_of_memory(lambda x: x + 'a', jnp.float32(1), repeats=1)
  times = {'lstm': (10.0, 40.0), 'transformer (exact attention)': (5.0, None),
           'transformer (chunked attention)': (8.0, 30.0)}
  records = [{'model': m, 'seq_len': t, 'ms_per_step': ms[i]}
             for m, ms in times.items() for i, t in enumerate(SMOKE.speed_lengths)]
  verdict = speed._verdict(records, SMOKE)
  assert 'Transformer (exact attention) time: T=16: 2.00x.' in verdict
  assert 'Out of memory on this device (no time): transformer (exact attention) at T=64.' in verdict
  assert 'Chunked / exact' not in verdict
  assert '| transformer (exact attention) | 5.0 | out of memory |' in speed._summary(records, SMOKE)


def test_revival_families_join_the_order_test(tmp_path):
  """A family without variants of its own joins the permutation test as built: Griffin,
  whose local attention has RoPE, and minGRU are not order-blind. (Two of the eight, to
  keep the suite short; every family's causality is the mixer contract's.)"""
  assert set(REVIVAL) >= {'griffin', 'min_gru'}
  finding = order.run(SMOKE, ['griffin', 'min_gru'], str(tmp_path), seed=0)
  assert [r['model'] for r in finding.records] == ['griffin', 'min_gru']
  assert all(r['relative_change'] > 1e-3 for r in finding.records), finding.records


def test_speed_verdict_puts_the_revival_against_the_lstm():
  times = {'lstm': (10.0, 40.0), 'transformer (exact attention)': (5.0, 20.0),
           'min_gru': (2.0, 4.0), 'slstm': (12.0, 60.0)}
  records = [{'model': m, 'seq_len': t, 'ms_per_step': ms[i]}
             for m, ms in times.items() for i, t in enumerate(SMOKE.speed_lengths)]
  assert ('step time / LSTM step time at T=64: min_gru 0.10, slstm 1.50.'
          in speed._verdict(records, SMOKE))
  assert [label for label, _ in speed.variants(['hawk', 'mlstm'])] == [
      'hawk (sequential scan)', 'hawk (associative scan)', 'mlstm']


@pytest.mark.parametrize('flags,needle', [
    (['--only=speed,nope'], "--only: unknown ['nope']"),
    (['--families=lstm,rnn'], "--families: unknown ['rnn']"),
    (['--text_csv=/no/such.csv', '--only=realtext'], '--text_csv=/no/such.csv: no such file'),
    (['--suite=huge'], 'suite'),
])
def test_bad_flags_give_one_line_and_nonzero_exit(flags, needle, tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run([sys.executable, '-m', 'experiments.compare',
                         f'--outdir={tmp_path}', *flags], cwd=repo, capture_output=True,
                        text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=repo))
  assert proc.returncode != 0 and 'Traceback' not in proc.stderr
  line = proc.stderr.strip().splitlines()[-1]
  assert needle in line, proc.stderr[-1000:]
  assert not os.listdir(tmp_path)  # nothing measured, nothing written
