"""The seeds x learning-rates trainer: a member reproduces the single run with its seed
and rate, the criterion stops a member at the first evaluation where it holds, a diverged
member is recorded rather than raised, and the learning rate is chosen on validation."""

from __future__ import annotations

import json
import math

import pytest

from experiments.configs import selective_copying
from seqjax.training import loop
from seqjax.training.errors import UserError
from seqjax.training.sweep import Criterion, Member, select_learning_rate, train_sweep


def _config(data_dir, **overrides):
  c = selective_copying.get_config()
  c.task_options.update(seq_len=8, num_tokens=2, num_train=128, num_validation=32,
                        num_test=32)
  c.model_cfg.update(d_model=16, num_layers=1, num_heads=2, max_len=16)
  c.update(batch_size=16, num_steps=12, warmup_steps=2, eval_every=4, log_every=4,
           checkpoint_every=12, data_dir=str(data_dir), tensorboard=False,
           async_checkpoint=False)
  c.update(overrides)
  return c


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('sweep_data')


@pytest.fixture(scope='module')
def sweep(data_dir):
  # An unreachable criterion: every member trains its whole budget, except that the
  # absurd rate 1e30 (without clipping or decay to tame it) diverges.
  return train_sweep(_config(data_dir, grad_clip=0.0), seeds=[0, 1],
                     learning_rates=[1e-2, 1e30],
                     criterion=Criterion('token_accuracy', 2.0),
                     extra_tests={'longer': {'seq_len': 12}})


def test_member_reproduces_the_single_run_with_its_seed_and_rate(sweep, data_dir, tmp_path):
  config = _config(data_dir, seed=1, learning_rate=1e-2, grad_clip=0.0)
  result = loop.train(config, str(tmp_path / 'single'))
  single_val = [json.loads(l) for l in (tmp_path / 'single' / 'metrics.jsonl').open()
                if '"validation"' in l]
  member = next(m for m in sweep.members if m.seed == 1 and m.learning_rate == 1e-2)
  assert [s for s, _ in member.curve] == [r['step'] for r in single_val] == [4, 8, 12]
  for (_, got), want in zip(member.curve, single_val):
    assert got['loss'] == pytest.approx(want['loss'], rel=1e-5)
    assert got['token_accuracy'] == pytest.approx(want['token_accuracy'], abs=1e-6)
  # loop.train reports the test split at its best validation checkpoint, as the sweep does.
  assert member.best_step == result['test']['checkpoint_step']
  assert member.test['loss'] == pytest.approx(result['test']['loss'], rel=1e-5)


def test_members_differ_by_seed_a_diverging_rate_is_recorded_not_raised(sweep):
  assert [(m.seed, m.learning_rate) for m in sweep.members] == [
      (0, 1e-2), (0, 1e30), (1, 1e-2), (1, 1e30)]
  sane = [m for m in sweep.members if m.learning_rate == 1e-2]
  assert all(m.steps == 12 and m.steps_to_criterion is None for m in sane)
  assert sane[0].curve[-1][1]['loss'] != sane[1].curve[-1][1]['loss']
  for m in sweep.members:
    if m.learning_rate == 1e30:
      assert m.diverged_at is not None and 1 <= m.diverged_at <= m.steps <= 4
      assert m.test == {} and m.steps_to_criterion is None
  assert sweep.budget == 12 and sweep.params > 0


def test_extra_tests_score_the_best_parameters_on_another_setting(sweep):
  # Same parameters on longer sequences (length generalisation): a different number than
  # the test split at the training length, from the same best step.
  for m in sweep.members:
    if m.learning_rate == 1e-2:
      assert set(m.extra_tests) == {'longer'}
      assert 0.0 <= m.extra_tests['longer']['token_accuracy'] <= 1.0
      assert m.extra_tests['longer']['loss'] != m.test['loss']


def test_criterion_stops_each_member_at_once_and_a_two_phase_sweep_tunes_on_seed_one(
    data_dir):
  # The loss after 4 steps is below 100 for any sane run: the criterion holds at once.
  seen = []

  def select(members):  # two phases: the rate is chosen on the first seed alone
    seen.append([(m.seed, m.learning_rate) for m in members])
    return max(members, key=lambda m: -m.validation['loss']).learning_rate

  got = train_sweep(_config(data_dir), seeds=[0, 1], learning_rates=[3e-3, 1e-2],
                    criterion=Criterion('loss', 100.0, larger_is_better=False),
                    select=select)
  assert seen == [[(0, 3e-3), (0, 1e-2)]]
  first = {m.learning_rate: m.validation['loss'] for m in got.members if m.seed == 0}
  assert got.chosen_learning_rate == min(first, key=first.get)
  assert [(m.seed, m.learning_rate) for m in got.members][2:] == [
      (1, got.chosen_learning_rate)]
  for member in got.members:
    assert member.steps == member.steps_to_criterion == 4
    assert member.examples_to_criterion == 4 * 16
    assert len(member.curve) == 1 and member.best_step == 4


def test_bad_sweeps_fail_in_one_line(data_dir):
  with pytest.raises(UserError, match='eval_every'):
    train_sweep(_config(data_dir, eval_every=0), seeds=[0], learning_rates=[1e-3])
  with pytest.raises(UserError, match='learning rates must be positive'):
    train_sweep(_config(data_dir), seeds=[0], learning_rates=[0.0])


def _member(seed, lr, score, steps=None, diverged=None):
  return Member(seed=seed, learning_rate=lr, steps_to_criterion=steps,
                diverged_at=diverged, validation={} if diverged else {'acc': score})


def test_learning_rate_selection_matches_a_brute_force_reading():
  criterion = Criterion('acc', 0.9)
  score = lambda metrics: metrics['acc']
  members = [
      # 1e-3: both seeds solve it, slowly; 3e-3: both solve it faster (capped scores tie,
      # fewer steps win); 1e-2: higher raw scores but one seed diverged.
      _member(0, 1e-3, 0.95, steps=80), _member(1, 1e-3, 0.99, steps=90),
      _member(0, 3e-3, 0.91, steps=30), _member(1, 3e-3, 0.92, steps=40),
      _member(0, 1e-2, 1.00, steps=10), _member(1, 1e-2, 0.0, diverged=5)]
  assert select_learning_rate(members, score, criterion, budget=100) == 3e-3

  def brute(lr):
    group = [m for m in members if m.learning_rate == lr]
    capped = [-math.inf if m.diverged_at else min(m.validation['acc'], 0.9) for m in group]
    return (sum(capped) / len(capped), -sum(m.steps_to_criterion or 100 for m in group))

  assert select_learning_rate(members, score, criterion, 100) == max(
      {1e-3, 3e-3, 1e-2}, key=brute)
  # Without a criterion the raw validation score decides.
  no_div = [m for m in members if not m.diverged_at]
  assert select_learning_rate(no_div, score, None, 100) == 1e-2
