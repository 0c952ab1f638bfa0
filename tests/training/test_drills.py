"""Reliability drills on a tiny model, with real signals and real file damage.

* Pre-emption: SIGTERM right after a checkpoint commit, during an asynchronous save,
  before the loop, and as soon as ``experiments/train.py`` starts; a SIGKILL; the
  interrupted-and-resumed run must equal an uninterrupted one bit for bit (parameters)
  and line for line (``metrics.jsonl``, TensorBoard's view).
* One writer per workdir: a second trainer exits at once naming the first (in-process,
  and from the command line before JAX is imported, writing nothing); a killed trainer's
  lock is taken over.
* Damaged checkpoints: params rewritten through Orbax (well-formed, other values: only
  the checksum can tell), truncated files, NaN parameters under matching checksums;
  ``train`` and ``evaluate`` fall back with one warning line, or stop with one line and
  leave the workdir alone.
* Failures outside the program: a write limit (``RLIMIT_FSIZE``, the kernel's "File too
  large") during an asynchronous save, an unwritable workdir.
* Mistakes: a misspelled field and a missing config file from the command line.

The drills that need no trainer (a full disk under ``metrics.jsonl``, a flipped bit that
Orbax alone restores without a word, config-file, CSV and exit-code messages, dataset
leftovers) are in ``test_drill_messages.py``.

Processes are synchronised on files they write (the lock file, checkpoint directories);
SIGSTOP freezes a trainer at the moment of interest so that the signal under test lands
there, whatever the machine's load.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import cli, config_files
from seqjax.training import integrity, loop
from seqjax.training.errors import DamagedCheckpointError, EnvironmentFailure, UserError

pytestmark = pytest.mark.drill

REPO = Path(__file__).resolve().parents[2]
TIMING = ('step_time', 'tokens_per_sec')
# 40 steps; train lines every 6 (and at evaluations, 20 and 40): a pre-emption at any
# other step leaves a half-full metrics window that the checkpoint has to carry.
RUN = {'task_options.seq_len': 8, 'task_options.num_tokens': 2,
       'task_options.num_train': 256, 'task_options.num_validation': 32,
       'task_options.num_test': 32, 'model_cfg.d_model': 16, 'model_cfg.num_layers': 1,
       'model_cfg.num_heads': 2, 'model_cfg.max_len': 16, 'batch_size': 16,
       'num_steps': 40, 'warmup_steps': 2, 'log_every': 6, 'eval_every': 20,
       'checkpoint_every': 4}


def _args(workdir, data_dir, **overrides) -> list[str]:
  cfg = {**RUN, 'data_dir': str(data_dir), **overrides}
  return ([f'--config={REPO}/experiments/configs/selective_copying.py',
           f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in cfg.items()])


def _config(data_dir, **overrides):
  """``_args`` as a ConfigDict, for in-process ``loop.train`` calls."""
  from experiments.configs import selective_copying
  config = selective_copying.get_config()
  for key, value in {**RUN, 'data_dir': str(data_dir), **overrides}.items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


_JIT_CACHE: list[str] = []  # a persistent compilation cache shared by the subprocesses


def _start(args, script='train', command=None, cache_writes=True) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO),
             XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                        ' --xla_force_host_platform_device_count=1').strip(),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0' if cache_writes else str(2**40))
  if _JIT_CACHE:  # compile once for all the drills' processes (the same programs each time)
    env['JAX_COMPILATION_CACHE_DIR'] = _JIT_CACHE[0]
  command = command or ['-m', f'experiments.{script}']
  return subprocess.Popen([sys.executable, *command, *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=300) -> tuple[int, str, str]:
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def _user_lines(stderr: str) -> list[str]:
  """What a user reads: stderr without absl's INFO lines."""
  return [l for l in stderr.splitlines() if l.strip() and not l.startswith('I')]


def _one_line(stderr: str) -> str:
  lines = _user_lines(stderr)
  assert len(lines) == 1, '\n'.join(lines)[-3000:]
  return lines[0]


def _wait_for(proc, predicate, what: str, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if proc.poll() is not None:
      raise AssertionError(f'process ended ({proc.returncode}) before {what}:\n'
                           f'{proc.stderr.read()[-3000:]}')
    time.sleep(0.005)
  raise AssertionError(f'timed out waiting for {what}')


def _signal_frozen(proc, sig) -> None:
  """Delivers ``sig`` while the process is stopped, so it lands at this very moment."""
  os.kill(proc.pid, signal.SIGSTOP)
  os.kill(proc.pid, sig)
  os.kill(proc.pid, signal.SIGCONT)


def _holder(pid: int) -> str:
  return f'pid {pid} on host {socket.gethostname()}'


def _lock_pid(workdir) -> int | None:
  try:
    return json.loads((Path(workdir) / '.lock').read_text() or '{}').get('pid')
  except (OSError, ValueError):
    return None


def _steps(workdir) -> list[int]:
  return sorted(int(p.name) for p in (Path(workdir) / 'checkpoints').glob('*')
                if p.name.isdigit())


def _tmp_dirs(workdir) -> list[str]:
  return [p.name for p in (Path(workdir) / 'checkpoints').glob('*orbax-checkpoint-tmp*')]


def _records(workdir) -> list[dict]:
  lines = (Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  return [{k: v for k, v in json.loads(l).items() if k not in TIMING} for l in lines]


def _params(workdir, which='latest'):
  _, _, params, _, step = loop.load_for_inference(str(workdir), which)
  return step, [np.asarray(x) for x in jax.tree.leaves(params)]


def _tensorboard_view(workdir) -> dict[tuple[str, int], float]:
  """The scalars TensorBoard shows: event files in name order, and a ``SessionLog.START``
  at step s (``purge_step``) hides the earlier files' events from step s on."""
  from tensorboardX.proto import event_pb2
  view: dict[tuple[str, int], float] = {}
  for path in sorted(glob.glob(str(Path(workdir) / 'tensorboard' / 'events.*'))):
    data, i = Path(path).read_bytes(), 0
    while i < len(data):  # TFRecord: length, crc, payload, crc
      (length,) = struct.unpack('<Q', data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
      i += 16 + length
      if event.HasField('session_log') and event.session_log.status == event.session_log.START:
        view = {k: v for k, v in view.items() if k[1] < event.step}
      for value in event.summary.value:
        assert (value.tag, event.step) not in view, f'{value.tag} twice at {event.step}'
        if value.tag.split('/')[-1] not in TIMING:
          view[(value.tag, event.step)] = value.simple_value
  return view


def _digest_tree(path) -> dict[str, str]:
  return {str(p.relative_to(path)): hashlib.md5(p.read_bytes()).hexdigest()
          for p in sorted(Path(path).rglob('*')) if p.is_file()}


def _damage(step_dir) -> None:
  """Real damage to every parameter data file of a checkpoint step: cut in half."""
  for path in Path(step_dir, 'params').rglob('*'):
    if path.is_file() and path.parent.name == 'd':
      path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _rewrite_params(step_dir, change, checksums='old') -> None:
  """The params of a checkpoint step replaced by ``change(params)``, written by Orbax
  itself (so TensorStore reads them without complaint) under the step's old checksums,
  or (``checksums='new'``) under checksums recomputed to match."""
  import orbax.checkpoint as ocp
  step_dir = Path(step_dir)
  ckptr = ocp.StandardCheckpointer()
  saved = ckptr.restore(step_dir / 'params')
  params = jax.tree.map(lambda x: change(np.asarray(x)), saved)
  tmp = step_dir.parent.parent / 'rewritten-params'
  ckptr.save(tmp, params)
  ckptr.wait_until_finished()
  ckptr.close()
  shutil.rmtree(step_dir / 'params')
  shutil.move(tmp, step_dir / 'params')
  if checksums == 'new':
    path = step_dir / 'integrity' / 'metadata'
    sums = json.loads(path.read_text())
    sums['params'] = integrity.fingerprint(params)
    path.write_text(json.dumps(sums))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  _JIT_CACHE[:] = [str(tmp_path_factory.mktemp('jit_cache'))]
  return tmp_path_factory.mktemp('data')


@pytest.fixture(scope='module')
def baseline(tmp_path_factory, data_dir):
  """One uninterrupted run, the reference of every drill (it also fills the compilation
  cache for the others)."""
  workdir = tmp_path_factory.mktemp('baseline')
  code, _, err = _finish(_start(_args(workdir, data_dir)))
  assert code == 0, err[-3000:]
  return workdir


def test_preemption_kills_and_a_second_trainer_leave_the_run_exact(baseline, data_dir,
                                                                     tmp_path):
  work, other = tmp_path / 'run', tmp_path / 'other'

  # A is frozen while it holds the lock (before any data or step): a second trainer on
  # the same workdir stops at once naming it; SIGTERM to a third run before its loop.
  a = _start(_args(work, data_dir, checkpoint_every=1, async_checkpoint=False))
  _wait_for(a, lambda: _lock_pid(work) == a.pid, 'A locks the workdir')
  os.kill(a.pid, signal.SIGSTOP)
  t0 = time.time()
  with pytest.raises(EnvironmentFailure, match=f'in use by another trainer, pid {a.pid} '):
    loop.train(_config(data_dir), str(work))
  assert time.time() - t0 < 10
  # The same from the command line: turned away before JAX is imported, with one line
  # naming A and nothing written into A's workdir (no errors.log).
  t0 = time.time()
  code, _, err = _finish(_start(_args(work, data_dir)))
  assert code == 3 and time.time() - t0 < 10, err[-2000:]
  (line,) = err.strip().splitlines()
  assert line.startswith(f'error: workdir {work} is in use by another trainer, '
                         f'{_holder(a.pid)} (since '), line
  assert not (work / cli.ERROR_LOG).exists()
  # The early run is watched from its start and signalled the moment its lock appears:
  # started any sooner, it could reach its first step while this process is busy above.
  early = _start(_args(other, data_dir))
  _wait_for(early, lambda: _lock_pid(other) == early.pid, 'the early run locks')
  _signal_frozen(early, signal.SIGTERM)
  code, out, err = _finish(early)
  assert code == 0 and 'nothing new was saved' in out and not _steps(other), err[-2000:]

  # A goes on; SIGTERM right after a (synchronous) checkpoint commit.
  os.kill(a.pid, signal.SIGCONT)
  _wait_for(a, lambda: _steps(work), 'a checkpoint of A')
  _signal_frozen(a, signal.SIGTERM)
  code, out, err = _finish(a)
  assert code == 0, err[-3000:]
  saved = int(out.split('saved step ')[1].split(';')[0])
  assert 0 < saved < RUN['num_steps'] and _steps(work)[-1] == saved
  assert 'already exists' not in err and not _tmp_dirs(work)

  # C resumes with asynchronous saves; SIGTERM while one is in flight.
  c = _start(_args(work, data_dir, checkpoint_every=1))
  _wait_for(c, lambda: _tmp_dirs(work), 'an asynchronous save of C')
  _signal_frozen(c, signal.SIGTERM)
  code, out, err = _finish(c)
  assert code == 0 and 'already exists' not in err, err[-3000:]
  resumed = int(out.split('saved step ')[1].split(';')[0])
  assert saved < resumed < RUN['num_steps'] and _steps(work)[-1] == resumed
  assert not _tmp_dirs(work)

  # K is killed (SIGKILL) after its next checkpoint, which is then damaged (truncated
  # files; an older quarantine lies beside it). D takes over the dead lock, falls back to
  # the step before with one warning, and ends.
  k = _start(_args(work, data_dir))
  _wait_for(k, lambda: _steps(work)[-1] > resumed, 'a checkpoint of K')
  os.kill(k.pid, signal.SIGKILL)
  assert k.wait() == -signal.SIGKILL and _lock_pid(work) == k.pid
  previous, killed = _steps(work)[-2:]
  _damage(work / 'checkpoints' / str(killed))
  (work / 'checkpoints' / '3.corrupt').mkdir()
  os.utime(work / 'checkpoints' / '3.corrupt', (0, 0))
  code, _, err = _finish(_start(_args(work, data_dir)))
  assert code == 0, err[-3000:]
  lines = _user_lines(err)  # one line per event (and a note if old steps were trimmed)
  (takeover,) = [l for l in lines if 'taking over the lock' in l]
  (damaged,) = [l for l in lines if 'damaged checkpoint' in l]
  trimmed = sum('left beyond keep_checkpoints' in l for l in lines)
  assert len(lines) == 2 + trimmed, '\n'.join(lines)
  assert f'taking over the lock of {_holder(k.pid)} (since' in takeover
  assert takeover.endswith(f'{work}/.lock: that trainer is no longer running')
  assert f'step {killed} (' in damaged and f'resuming from step {previous} instead' in damaged
  assert (f'({killed}.corrupt is kept for inspection; 1 older .corrupt dir(s) removed)'
          in damaged)
  assert [p.name for p in (work / 'checkpoints').glob('*.corrupt')] == [f'{killed}.corrupt']

  # The interrupted run equals the uninterrupted one.
  assert _records(work) == _records(baseline)
  assert _tensorboard_view(work) == _tensorboard_view(baseline)
  (step_a, params_a), (step_b, params_b) = _params(baseline), _params(work)
  assert step_a == step_b == RUN['num_steps']
  for x, y in zip(params_a, params_b):
    np.testing.assert_array_equal(x, y)

  # Rerunning the finished run adds nothing, and deletes checkpoints left beyond the
  # retention (here: keep_checkpoints lowered from 2 to 1).
  before, view = (work / 'metrics.jsonl').read_bytes(), _tensorboard_view(work)
  events = sorted(os.listdir(work / 'tensorboard'))
  loop.train(_config(data_dir, keep_checkpoints=1), str(work))
  assert (work / 'metrics.jsonl').read_bytes() == before and _tensorboard_view(work) == view
  assert sorted(os.listdir(work / 'tensorboard')) == events  # not even an empty file
  assert _steps(work) == sorted({_params(work, 'best')[0], RUN['num_steps']})


def _catches_sigterm(pid: int) -> bool:
  """Whether the process has a SIGTERM handler (``SigCgt`` in ``/proc/<pid>/status``)."""
  try:
    status = Path(f'/proc/{pid}/status').read_text()
  except OSError:
    return False
  mask = next(l.split()[1] for l in status.splitlines() if l.startswith('SigCgt'))
  return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


def test_sigterm_as_soon_as_train_py_runs_exits_clean(tmp_path):
  """SIGTERM the moment ``experiments/train.py``'s first statement has set its minimal
  handler, long before ``preemption.install`` and JAX: exit 0 and the "nothing was saved"
  line, not death by signal (143)."""
  proc = _start(_args(tmp_path / 'run', tmp_path / 'data'))
  _wait_for(proc, lambda: _catches_sigterm(proc.pid), 'the first SIGTERM handler', 60)
  _signal_frozen(proc, signal.SIGTERM)
  code, out, err = _finish(proc)
  assert code == 0, err[-2000:]
  assert out.strip() == ('pre-empted before the first step: nothing was saved; rerun the '
                         'same command to continue')
  assert not (tmp_path / 'run').exists() and not (tmp_path / 'data').exists()


def test_a_failed_async_save_stops_the_run_at_once_and_cleans_up(baseline, data_dir,
                                                                  tmp_path):
  """A full disk needs root to make; the kernel's file-size limit (``RLIMIT_FSIZE``) fails
  writes the same way, with EFBIG ("File too large"): the first checkpoint's optimizer
  files are larger than 16 kB, everything before them smaller (the data is prepared)."""
  del baseline  # prepares the data under no limit

  work = tmp_path / 'run'
  limited = ('import resource, runpy, signal; '
             'signal.signal(signal.SIGXFSZ, signal.SIG_IGN); '  # an error instead of death
             'resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000)); '
             'runpy.run_module("experiments.train", run_name="__main__", alter_sys=True)')
  proc = _start(_args(work, data_dir, num_steps=1000, log_every=5, checkpoint_every=50,
                      eval_every=0, tensorboard=False), command=['-c', limited],
                cache_writes=False)  # the cache's own writes would hit the limit
  code, _, err = _finish(proc)
  assert code == 3, err[-3000:]
  line = _one_line(err)
  assert 'saving checkpoint step 50' in line and 'File too large' in line, line
  assert f'[traceback: {work / "errors.log"}' in line
  assert 'CheckpointSaveError' in (work / 'errors.log').read_text()
  assert not _tmp_dirs(work) and not _steps(work)
  last = max(r['step'] for r in _records(work))
  assert 50 <= last < 100  # reported long before the next save would have noticed


# TensorStore reads still in flight when Orbax gives up on a damaged step call back into an
# event loop Orbax has closed; Python reports that as an ignored RuntimeError.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_damaged_checkpoints_cost_evaluate_one_warning_or_stop_with_nothing_changed(
    baseline, data_dir, tmp_path):
  work = tmp_path / 'run'
  shutil.copytree(baseline, work)
  # evaluate: the best step's params replaced, through Orbax itself, by well-formed files
  # of other values (damage no TensorStore check can see; only the checksum can), and
  # config.json gone -> the next good step, one warning line; asked for that step by
  # number -> an error.
  best = _params(work, 'best')[0]
  _rewrite_params(work / 'checkpoints' / str(best), lambda x: x + 1)
  (work / 'config.json').unlink()  # the checkpoints alone must be enough
  code, out, err = _finish(_start([f'--workdir={work}', '--checkpoint=best'], 'evaluate'))
  assert code == 0, err[-3000:]
  line = _one_line(err)
  assert 'damaged checkpoint' in line, line
  assert f'step {best} (params: checksum mismatch in ' in line, line
  assert json.loads(out.splitlines()[-1])['step'] != best
  with pytest.raises(DamagedCheckpointError, match=f'step {best} is damaged'):
    loop.load_for_inference(str(work), str(best))
  # NaN params under checksums that match them: refused all the same.
  (other,) = [s for s in _steps(work) if s != best]
  _rewrite_params(work / 'checkpoints' / str(other), lambda x: np.full_like(x, np.nan),
                  checksums='new')
  with pytest.raises(DamagedCheckpointError,
                     match=re.escape(f'step {other} is damaged (params: NaN/Inf in ')):
    loop.load_for_inference(str(work), 'latest')

  # Every step damaged: one error, nothing changed, no silent restart ...
  for step in _steps(work):
    _damage(work / 'checkpoints' / str(step))
  before = _digest_tree(work)
  with pytest.raises(DamagedCheckpointError, match='restart=True to start over') as err:
    loop.train(_config(data_dir), str(work))
  assert '\n' not in str(err.value) and _digest_tree(work) == before
  # ... unless asked: restart=True starts over and drops the old run's metrics.
  code, _, err = _finish(_start(_args(work, data_dir, restart=True, num_steps=4,
                                      eval_every=0)))
  assert code == 0 and 'restart=True: deleting checkpoints' in err, err[-3000:]
  assert _steps(work) == [4] and max(r['step'] for r in _records(work)) == 4


def test_the_workdir_is_checked_before_any_data_is_prepared(data_dir, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  fresh = tmp_path / 'fresh_data'  # an unprepared dataset: nothing may be generated
  for workdir in (blocker / 'run', Path('/proc/seqjax-drill')):
    with pytest.raises(EnvironmentFailure, match=f'workdir {workdir} is not writable'):
      loop.train(_config(fresh), str(workdir))
  assert not fresh.exists()


def test_misspelled_fields_and_bad_values_are_one_line(tmp_path):
  config = config_files.load_config_file(f'{REPO}/experiments/configs/copying.py')
  with pytest.raises(UserError, match="'learning_rat' in --config.learning_rat=1; did you "
                                      "mean 'learning_rate'"):
    config_files.check_overrides(config, ['--config.learning_rat=1'])
  with pytest.raises(UserError, match="'d_modle' .*did you mean 'd_model'"):
    config_files.check_overrides(config, ['--config.model_cfg.d_modle=3'])
  proc = _start([f'--config={tmp_path}/missing.py', f'--workdir={tmp_path}'])
  code, _, err = _finish(proc)
  assert code == 1 and err.strip().splitlines() == [
      f'error: --config={tmp_path}/missing.py: no such file; give a config file such as '
      'experiments/configs/copying.py']
  from seqjax.training.configuration import check_device_count
  with pytest.raises(UserError, match=r'config.num_devices=4 but this job sees 1 device'):
    check_device_count(_config(tmp_path, num_devices=4), 1)


