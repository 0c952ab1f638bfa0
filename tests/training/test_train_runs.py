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
  # Keeps the suite's flags (tests/conftest.py), with this many host devices.
  env['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                      f' --xla_force_host_platform_device_count={devices}').strip()
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


FSDP4 = ['--config.fsdp=True', '--config.fsdp_min_size=16']


@pytest.fixture(scope='module')
def fsdp4(tmp_path_factory, data_dir):
  """The baseline run on 1 process x 4 devices with FSDP (the multi-process reference)."""
  workdir = tmp_path_factory.mktemp('fsdp4')
  _run('train.py', _flags(data_dir, workdir) + FSDP4, devices=4)
  return workdir


def _assert_same_losses(got_dir, ref_dir, rtol, what, so_far=False):
  ref, got = _records(ref_dir), _records(got_dir)
  if so_far:  # a run stopped part-way: its lines so far
    ref = ref[:len(got)]
  assert [(r['step'], r['split']) for r in got] == [(r['step'], r['split']) for r in ref]
  for r, g in zip(ref, got):
    np.testing.assert_allclose(g['loss'], r['loss'], rtol=rtol, err_msg=what)
    if 'grad_norm' in r:
      np.testing.assert_allclose(g['grad_norm'], r['grad_norm'], rtol=10 * rtol)


def test_forced_host_devices_give_the_same_losses(baseline, fsdp4, data_dir, tmp_path):
  _run('train.py', _flags(data_dir, tmp_path / 'd8'), devices=8)
  for workdir, what in ((tmp_path / 'd8', '8 devices'), (fsdp4, '4 devices, FSDP')):
    _assert_same_losses(workdir, baseline, 2e-5, what)


def _launch(workdir, data_dir, fsdp=True, grace=30, **env):
  """The baseline run as a job of 2 processes x 2 devices (FSDP unless told otherwise)
  on this machine; the launcher kills a process still running ``grace`` seconds after
  another failed."""
  cache = Path(data_dir).parent / 'jit-cache-2x2'  # the rerun compiles nothing
  env = dict(JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', **env)
  return _run('launch', ['--num_processes=2', '--devices_per_process=2', f'--grace={grace}',
                         '--',
                         *_flags(data_dir, workdir), *(FSDP4 if fsdp else [])],
              check=False, **env)


def _one_device_until_term(data_dir, workdir, monkeypatch, step=10):
  """Resumes ``workdir`` here (1 process x 1 device, no FSDP) until a SIGTERM after
  update ``step``, which saves that step."""
  from seqjax.training import loop
  from seqjax.training.preemption import PREEMPTION
  monkeypatch.setenv('SEQJAX_TEST_TERM_AT_STEP', str(step))
  monkeypatch.setattr(PREEMPTION, 'requested', False)  # reset after the SIGTERM below
  got = loop.train(_config(data_dir), str(workdir))
  assert got['preempted'] == got['saved'] == step
  monkeypatch.delenv('SEQJAX_TEST_TERM_AT_STEP')  # launches after this run to the end


def test_two_processes_prepare_fresh_data_stop_together_and_match_one_process(
    fsdp4, tmp_path, monkeypatch):
  """One run over three topologies. 2 processes x 2 devices (FSDP) start on a fresh
  data_dir (process 0 prepares, the other waits); a SIGTERM to process 1 alone after
  update 5 stops both at one step, with one checkpoint holding both processes'
  data-iterator states. That checkpoint resumes on 1 process x 1 device without FSDP
  (here, in this process) until a SIGTERM after update 10, and that one resumes on
  2 x 2 without FSDP. So a checkpoint crosses topologies both ways, sharded and not.
  Every logged loss equals the 1-process x 4-device run's (the global batch does not
  depend on the topology or on FSDP): to 1e-5 on 2 x 2, to 2e-5 once 1 x 1 took part (as
  for 1 vs 8 devices above). The final checkpoint evaluates on a single device."""
  data_dir, workdir = tmp_path / 'fresh-data', tmp_path / 'run'
  first = _launch(workdir, data_dir, SEQJAX_TEST_TERM_AT_STEP='5',
                  SEQJAX_TEST_FAULT_PROCESS='1')
  assert first.returncode == 0, first.stderr[-3000:]
  said = [l for l in first.stdout.splitlines() if 'pre-empted: saved step' in l]
  assert len(said) == 2 and {l[:4] for l in said} == {'[0] ', '[1] '}, first.stdout[-2000:]
  assert said[0][4:] == said[1][4:]  # the same step in both
  stopped = int(said[0].split('saved step ')[1].split(';')[0])
  assert 6 <= stopped < 10
  data = json.loads((workdir / 'checkpoints' / str(stopped) / 'data' / 'metadata'
                     ).read_text())
  states = data['processes']
  assert [s['shard_index'] for s in states] == [0, 1]
  assert {(s['epoch'], s['batch']) for s in states} == {(0, stopped)}
  assert not list(data_dir.rglob('incomplete.*'))
  _assert_same_losses(workdir, fsdp4, 1e-5, '2 processes x 2 devices', so_far=True)

  _one_device_until_term(data_dir, workdir, monkeypatch)

  second = _launch(workdir, data_dir, fsdp=False)
  assert second.returncode == 0, second.stderr[-3000:]
  assert f'resumed from {workdir / "checkpoints"} step 10' in second.stderr
  _assert_same_losses(workdir, fsdp4, 2e-5, '2 x 2 FSDP, then 1 x 1, then 2 x 2 no FSDP')

  from experiments import evaluate as evaluate_lib
  test = [r for r in _records(workdir) if r['split'] == 'test'][0]
  got = evaluate_lib.evaluate(str(workdir), str(int(test['checkpoint_step'])), 'test')
  for key in ('loss', 'token_accuracy', 'sequence_accuracy'):
    assert got[key] == pytest.approx(test[key], rel=1e-5), key


def test_two_processes_resume_bit_identically_on_the_same_topology(data_dir, tmp_path):
  """2 processes x 2 devices without FSDP (the other test shards): a run pre-empted after
  update 5 (SIGTERM to both processes: one checkpoint, the same step in both) and rerun
  on the same topology ends with exactly the parameters and the logged numbers of the
  uninterrupted run, since every process restores its own data-iterator state; its
  checkpoint restores on one device for evaluate and generate. (A single-device
  checkpoint resuming on 2 x 2 without FSDP is the test above.)"""
  whole, cut = tmp_path / 'whole', tmp_path / 'cut'
  # SIGTERM to every process this time (the test above signals one of them).
  for workdir, env in ((whole, {}), (cut, dict(SEQJAX_TEST_TERM_AT_STEP='5')), (cut, {})):
    proc = _launch(workdir, data_dir, fsdp=False, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [l[4:] for l in proc.stdout.splitlines() if 'pre-empted: saved step' in l]
    assert len(said) == (2 if env else 0) and len(set(said)) <= 1, proc.stdout[-2000:]
  assert 'resumed from' in proc.stderr
  assert _records(cut) == _records(whole)
  step_a, params_a = _params(whole)   # restored here, on this process's one device
  step_b, params_b = _params(cut)
  assert step_a == step_b == 12
  for a, b in zip(params_a, params_b):
    np.testing.assert_array_equal(a, b)
  from experiments import evaluate as evaluate_lib
  test = [r for r in _records(cut) if r['split'] == 'test'][0]
  got = evaluate_lib.evaluate(str(cut), str(int(test['checkpoint_step'])), 'test')
  assert got['loss'] == pytest.approx(test['loss'], rel=1e-5)
  # generate, too, runs on one CPU from the 2-process checkpoint.
  proc = _run('generate.py', [f'--workdir={cut}', '--prompt=d1 d2', '--num_steps=5'])
  words = json.loads(proc.stdout.strip().splitlines()[-1])['samples'][0].split()
  assert words[:2] == ['d1', 'd2'] and len(words) == 7


@pytest.mark.parametrize('dead, survivor, named', [
    (1, 0, 'process 1 of 2 stopped'),
    (0, 1, 'process 0 (the coordinator'),
])
def test_a_dead_process_stops_the_other_with_one_line_naming_it(dead, survivor, named,
                                                                 data_dir, tmp_path):
  """One process is SIGKILLed after update 5 (a crashed host). The other stops by itself
  within the issue's 60 s (the launcher would kill it after that and say so) with one
  error line naming the dead one, and no fatal log or stack dump: for process 1, by
  seqjax's liveness counters before JAX's heartbeat timeout; for process 0, whose death
  takes the coordination service with it and makes JAX abort the other at once, by the
  stderr filter that turns that abort into the one line."""
  proc = _launch(tmp_path / 'run', data_dir, fsdp=False, grace=60,
                 SEQJAX_TEST_KILL_AT_STEP='5', SEQJAX_TEST_FAULT_PROCESS=str(dead))
  assert proc.returncode != 0
  said = [l for l in proc.stderr.splitlines() if l.startswith(f'[{survivor}] error:')]
  assert len(said) == 1 and named in said[0], proc.stderr[-3000:]
  assert f'error: process {dead} of 2 killed by signal 9' in proc.stderr
  for dump in ('did not stop within', 'Check failure', 'Fatal Python error', 'Traceback',
               'Terminating process'):
    assert dump not in proc.stderr, (dump, proc.stderr[-3000:])


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
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-1000:]
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
