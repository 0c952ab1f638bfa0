"""End-to-end runs of experiments/train.py, evaluate.py and generate.py in subprocesses:
exact resume after SIGKILL, multi-device equality, params-only reload, the NaN guard,
config mismatch and bad flags. (Pre-emption, locking and damage: test_drills.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TIMING = ('step_time', 'tokens_per_sec')


def _flags(data_dir, workdir, **overrides):
  cfg = {'task_options.seq_len': 8, 'task_options.num_tokens': 2,
         'task_options.num_train': 256, 'task_options.num_validation': 48,
         'task_options.num_test': 32, 'model_cfg.d_model': 16, 'model_cfg.num_layers': 1,
         'model_cfg.num_heads': 2, 'model_cfg.max_len': 16, 'batch_size': 16,
         'num_steps': 12, 'warmup_steps': 2, 'log_every': 2, 'eval_every': 6,
         'checkpoint_every': 4, 'data_dir': str(data_dir)}
  cfg.update(overrides)
  return ([f'--config={REPO}/experiments/configs/selective_copying.py',
           f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in cfg.items()])


def _env(devices: int = 1, **extra):
  env = dict(os.environ, JAX_PLATFORMS='cpu', **extra)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def _run(script, args, devices=1, check=True, **env):
  """``python -m experiments.<script>`` from the repository root."""
  module = f'experiments.{script.removesuffix(".py")}'
  proc = subprocess.run([sys.executable, '-m', module, *args], cwd=REPO,
                        env=_env(devices, **env), capture_output=True, text=True,
                        timeout=600)
  if check and proc.returncode != 0:
    raise AssertionError(f'{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}')
  return proc


def _records(workdir, drop_timing=True):
  lines = (Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  recs = [json.loads(l) for l in lines if l.strip()]
  if drop_timing:
    recs = [{k: v for k, v in r.items() if k not in TIMING} for r in recs]
  return recs


def _params(workdir, which='latest'):
  from seqjax.training import loop
  _, _, params, _, step = loop.load_for_inference(str(workdir), which)
  import jax
  return step, [np.asarray(x) for x in jax.tree.leaves(params)]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('data')


@pytest.fixture(scope='module')
def baseline(tmp_path_factory, data_dir):
  """One uninterrupted single-device run, shared by the comparisons below."""
  workdir = tmp_path_factory.mktemp('baseline')
  _run('train.py', _flags(data_dir, workdir))
  return workdir


def test_uninterrupted_run_writes_metrics_checkpoints_and_events(baseline):
  recs = _records(baseline, drop_timing=False)
  train = [r for r in recs if r['split'] == 'train']
  assert [r['step'] for r in train] == [2, 4, 6, 8, 10, 12]
  for key in ('loss', 'token_accuracy', 'sequence_accuracy', 'grad_norm', 'lr',
              'step_time', 'tokens_per_sec'):
    assert all(np.isfinite(r[key]) for r in train), key
  assert 'perplexity' not in train[0]  # only the task's own metrics (not a language model)
  assert [r['step'] for r in recs if r['split'] == 'validation'] == [6, 12]
  test = [r for r in recs if r['split'] == 'test']
  assert len(test) == 1 and test[0]['checkpoint_step'] in (6, 12)
  assert list((baseline / 'tensorboard').glob('events.out.tfevents.*'))
  steps = sorted(int(p.name) for p in (baseline / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps[-1] == 12 and len(steps) <= 3  # last 2 plus the best


def test_sigkill_then_rerun_equals_uninterrupted_run(baseline, data_dir, tmp_path):
  args = _flags(data_dir, tmp_path)
  killed = _run('train.py', args, check=False, SEQJAX_TEST_KILL_AT_STEP='9')
  assert killed.returncode == -signal.SIGKILL
  _run('train.py', args)
  assert _records(tmp_path) == _records(baseline)
  step_a, params_a = _params(baseline)
  step_b, params_b = _params(tmp_path)
  assert step_a == step_b == 12
  for a, b in zip(params_a, params_b):
    np.testing.assert_array_equal(a, b)


def test_forced_host_devices_give_the_same_losses(baseline, data_dir, tmp_path):
  ref = _records(baseline)
  for devices, extra in ((8, []), (4, ['--config.fsdp=True', '--config.fsdp_min_size=16'])):
    workdir = tmp_path / f'd{devices}'
    _run('train.py', _flags(data_dir, workdir) + extra, devices=devices)
    got = _records(workdir)
    assert [(r['step'], r['split']) for r in got] == [(r['step'], r['split']) for r in ref]
    for r, g in zip(ref, got):
      np.testing.assert_allclose(g['loss'], r['loss'], rtol=2e-5, err_msg=str(devices))
      if 'grad_norm' in r:
        np.testing.assert_allclose(g['grad_norm'], r['grad_norm'], rtol=1e-4)


def test_evaluate_restores_params_only(baseline, tmp_path):
  workdir = tmp_path / 'copy'
  shutil.copytree(baseline, workdir)
  for opt_dir in (workdir / 'checkpoints').glob('*/opt'):
    shutil.rmtree(opt_dir)  # no optimizer state anywhere: evaluation must not need it
  proc = _run('evaluate.py', [f'--workdir={workdir}', '--checkpoint=best', '--split=test'])
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  test = [r for r in _records(baseline) if r['split'] == 'test'][0]
  assert got['step'] == test['checkpoint_step']
  for key in ('loss', 'token_accuracy', 'sequence_accuracy'):
    assert got[key] == pytest.approx(test[key], rel=1e-6), key
  bad = _run('evaluate.py', [f'--workdir={workdir}', '--checkpoint=5'], check=False)
  assert bad.returncode == 1 and 'Traceback' not in bad.stderr
  assert 'checkpoint=5 is not saved' in bad.stderr.strip().splitlines()[-1]


def test_generate_lm_streams_from_the_prompt(baseline):
  proc = _run('generate.py', [f'--workdir={baseline}', '--prompt=d1 d2', '--num_steps=5',
                              '--temperature=0.7', '--top_k=3', '--num_samples=2'])
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  assert len(got['samples']) == 2
  for sample in got['samples']:
    words = sample.split()
    assert words[:2] == ['d1', 'd2'] and len(words) == 7


def test_generate_translates_and_saves_the_attention_map(data_dir, tmp_path):
  workdir = tmp_path / 'mt'
  args = [f'--config={REPO}/experiments/configs/toy_translation.py', f'--workdir={workdir}',
          f'--config.data_dir={data_dir}', '--config.task_options.num_train=64',
          '--config.task_options.num_validation=16', '--config.task_options.num_test=16',
          '--config.model_cfg.d_model=16', '--config.model_cfg.num_layers=1',
          '--config.batch_size=16', '--config.num_steps=3', '--config.warmup_steps=1',
          '--config.eval_every=0', '--config.checkpoint_every=3']
  _run('train.py', args)
  png = tmp_path / 'attention.png'
  proc = _run('generate.py', [f'--workdir={workdir}', '--prompt=march 3, 1999',
                              f'--attention_png={png}'])
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  assert got['source'] == 'march 3, 1999'  # encoded and decoded with the saved vocabulary
  assert isinstance(got['translation'], str)
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 1000


def test_config_mismatch_lists_differences(baseline, data_dir):
  proc = _run('train.py', _flags(data_dir, baseline, **{'model_cfg.d_model': 32,
                                                        'model_cfg.num_layers': 2}),
              check=False)
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr
  line = proc.stderr.strip().splitlines()[-1]
  assert line.startswith('error:')
  assert 'd_model: saved 16, requested 32' in line and 'num_layers: saved 1, requested 2' in line


def _config(data_dir, **overrides):
  """The ``_flags`` run as a ConfigDict, for in-process ``loop.train`` calls."""
  from experiments.configs import selective_copying
  config = selective_copying.get_config()
  for flag in _flags(data_dir, 'unused', **overrides)[2:]:
    key, value = flag[len('--config.'):].split('=', 1)
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else value == 'True'
  return config


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(data_dir, tmp_path,
                                                                        monkeypatch):
  from seqjax.training import loop
  from seqjax.training.errors import NonFiniteLossError
  monkeypatch.setenv('SEQJAX_TEST_NAN_AT_STEP', '7')
  with pytest.raises(NonFiniteLossError) as err:
    loop.train(_config(data_dir), str(tmp_path))
  assert 'loss became nan at step 7' in str(err.value) and 'newest checkpoint, step 6' in str(err.value)
  step, params = _params(tmp_path, 'latest')
  assert step == 6 and all(np.isfinite(p).all() for p in params)
  assert max(r['step'] for r in _records(tmp_path)) == 6  # nothing logged past the NaN


@pytest.mark.parametrize('flag,needle', [
    ('--config.learning_rate=-1', 'config.learning_rate=-1.0 must be positive'),
    ('--config.model=rnn', "choose one of ['lstm', 'bilstm'"),
    ('--config.task=nope', "unknown task 'nope'; choose one of"),
    ('--config.model_cfg.hidden=3', "unknown config field 'hidden'"),
])
def test_bad_flags_give_one_line_and_nonzero_exit(flag, needle, tmp_path):
  proc = _run('train.py', [f'--workdir={tmp_path}', flag], check=False)
  assert proc.returncode != 0 and 'Traceback' not in proc.stderr
  line = proc.stderr.strip().splitlines()[-1]
  assert line.startswith('error:') and needle in line, proc.stderr[-1000:]


def test_bfloat16_compute_trains_with_float32_parameters(data_dir, tmp_path):
  """``model_cfg.dtype=bfloat16`` computes in bf16 while parameters and optimizer state
  stay float32, and the loss still goes down."""
  from seqjax.training import loop
  config = _config(data_dir, **{'model_cfg.dtype': 'bfloat16', 'num_steps': 24,
                                'learning_rate': 0.01, 'eval_every': 0,
                                'checkpoint_every': 24})
  result = loop.train(config, str(tmp_path))
  assert np.isfinite(result['test']['loss'])
  losses = [r['loss'] for r in _records(tmp_path) if r.get('split') == 'train']
  assert losses[-1] < losses[0]
  _, params = _params(tmp_path)
  assert all(p.dtype == np.float32 for p in params)
