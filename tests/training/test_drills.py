"""Reliability drills on a tiny model, with real signals and real file damage.

* Pre-emption: SIGTERM right after a checkpoint commit, during an asynchronous save, and
  before the loop; a SIGKILL; the interrupted-and-resumed run must equal an uninterrupted
  one bit for bit (parameters) and line for line (``metrics.jsonl``, TensorBoard's view).
* One writer per workdir: a second trainer exits at once naming the first (in-process,
  and from the command line before JAX is imported, writing nothing); a killed trainer's
  lock is taken over.
* Damaged checkpoints: flipped bytes that Orbax alone restores without a word, truncated
  files, NaN parameters; ``train`` and ``evaluate`` fall back with one warning line, or
  stop with one line and leave the workdir alone.
* Failures outside the program: a write limit (``RLIMIT_FSIZE``, the kernel's "File too
  large") during an asynchronous save, a full device (``/dev/full``) under
  ``metrics.jsonl``, an unwritable workdir, leftovers of killed runs.
* Mistakes: config files, CSV rows, device counts — one line each.

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

from experiments import cli
from seqjax.training import integrity, loop
from seqjax.training.checkpointing import Checkpointer
from seqjax.training.errors import (DamagedCheckpointError, EnvironmentFailure,
                                    NonFiniteLossError, UserError)

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


def _damage(step_dir, how: str) -> None:
  """Real damage to every parameter data file of a checkpoint step."""
  for path in Path(step_dir, 'params').rglob('*'):
    if path.is_file() and path.parent.name == 'd':
      data = bytearray(path.read_bytes())
      if how == 'truncate':
        data = data[:len(data) // 2]
      else:
        for i in (len(data) // 3, len(data) // 3 + 1):
          data[i] ^= 0xFF
      path.write_bytes(bytes(data))


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
  _damage(work / 'checkpoints' / str(killed), 'truncate')
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


def test_a_full_disk_under_metrics_jsonl_is_one_line_naming_it(tmp_path):
  """``/dev/full`` fails every write with ENOSPC, as a full disk does; Python's error from
  ``flush`` names no file, the writer's does."""
  from seqjax.training.metrics_writer import JSONL, MetricsWriter
  writer = MetricsWriter(str(tmp_path), tensorboard=False)
  writer.write(1, 'train', {'loss': 1.0})
  path = tmp_path / JSONL
  path.unlink()
  path.symlink_to('/dev/full')
  writer._file.close()  # pylint: disable=protected-access
  writer._file = open(path, 'a')  # pylint: disable=protected-access
  with pytest.raises(OSError) as err:
    writer.write(2, 'train', {'loss': 1.0})
  assert cli.classify(err.value) == (3, f'No space left on device ({path})')
  with pytest.raises(OSError, match=re.escape(str(path))):
    writer.close()  # the line still buffered fails again, named again


def test_checksums_catch_what_orbax_restores_silently(tmp_path):
  from seqjax.training.state import TrainState
  import orbax.checkpoint as ocp
  rng = np.random.default_rng(0)
  w = rng.normal(size=64).astype(np.float32)
  bits = rng.integers(0, 2**32, size=4096, dtype=np.uint32)  # incompressible: stored as is

  def state(w):
    return TrainState(step=jax.numpy.asarray(1), params={'w': w, 'bits': bits},
                      opt_state={}, rng=jax.random.PRNGKey(0))

  ck = Checkpointer(str(tmp_path), keep=5, async_save=False)
  ck.save(1, state(w), {'batch': 1}, {'m': 1})
  ck.save(2, state(w + 1), {'batch': 2}, {'m': 2})
  nan = w.copy()
  nan[7] = np.nan
  ck.save(3, state(nan), {'batch': 3}, {'m': 3})  # checksums match: saved that way
  ck.wait()
  # Flip one bit inside the stored integers of step 2.
  needle = bits.tobytes()[400:416]
  files = [p for p in (tmp_path / '2' / 'params').rglob('*') if p.is_file()
           and needle in p.read_bytes()]
  assert len(files) == 1
  data = bytearray(files[0].read_bytes())
  data[data.index(needle) + 2] ^= 0x40
  files[0].write_bytes(bytes(data))
  abstract = {'w': jax.ShapeDtypeStruct(w.shape, w.dtype),
              'bits': jax.ShapeDtypeStruct(bits.shape, bits.dtype)}
  raw = ck.manager.restore(2, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract)))['params']
  assert np.sum(np.asarray(raw['bits']) != bits) == 1  # Orbax alone: no error, one wrong value
  with pytest.raises(DamagedCheckpointError,
                     match=re.escape("params: checksum mismatch in ['bits']")):
    ck.restore(2, abstract)
  with pytest.raises(DamagedCheckpointError, match=re.escape("params: NaN/Inf in ['w']")):
    ck.restore(3, abstract)
  step, got, refused = ck.restore_first_good([3, 2, 1], abstract)
  assert step == 1 and [s for s, _ in refused] == [3, 2]
  np.testing.assert_array_equal(got['params']['w'], w)
  (tmp_path / '1.corrupt').mkdir()  # an older quarantine
  os.utime(tmp_path / '1.corrupt', (0, 0))
  kept = ck.quarantine([3, 2])
  assert ck.all_steps() == [1] and kept.startswith('2.corrupt is kept')
  assert sorted(p.name for p in tmp_path.glob('*.corrupt')) == ['2.corrupt']
  ck.close()


def test_fingerprint_matches_a_numpy_reference():
  x = np.random.default_rng(1).normal(size=(5, 7)).astype(np.float32)
  words = x.view(np.uint32).reshape(-1).astype(np.uint64)
  i = np.arange(words.size, dtype=np.uint64)
  m = np.uint64(0xFFFFFFFF)
  s1 = int(((2 * i + 1) * words & m).sum() & m)
  h = (words ^ (i * np.uint64(0x9E3779B9) & m)) & m
  h ^= h >> np.uint64(16)
  h = h * np.uint64(0x85EBCA6B) & m
  h ^= h >> np.uint64(13)
  h = h * np.uint64(0xC2B2AE35) & m
  h ^= h >> np.uint64(16)
  s2 = int(h.sum() & m)
  assert integrity.fingerprint({'x': x}) == {"['x']": f'{s1:08x}{s2:08x}'}


# TensorStore reads still in flight when Orbax gives up on a damaged step call back into an
# event loop Orbax has closed; Python reports that as an ignored RuntimeError.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_damaged_checkpoints_cost_evaluate_one_warning_or_stop_with_nothing_changed(
    baseline, data_dir, tmp_path):
  work = tmp_path / 'run'
  shutil.copytree(baseline, work)
  # evaluate: bytes flipped in the best step, config.json gone -> the next good step, one
  # warning line; asked for that step by number -> an error.
  best = _params(work, 'best')[0]
  _damage(work / 'checkpoints' / str(best), 'flip')
  (work / 'config.json').unlink()  # the checkpoints alone must be enough
  code, out, err = _finish(_start([f'--workdir={work}', '--checkpoint=best'], 'evaluate'))
  assert code == 0, err[-3000:]
  line = _one_line(err)
  assert 'damaged checkpoint' in line and f'step {best} (' in line, line
  assert json.loads(out.splitlines()[-1])['step'] != best
  with pytest.raises(DamagedCheckpointError, match=f'step {best} is damaged'):
    loop.load_for_inference(str(work), str(best))

  # Every step damaged: one error, nothing changed, no silent restart ...
  for step in _steps(work):
    _damage(work / 'checkpoints' / str(step), 'truncate')
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


def test_leftovers_of_an_interrupted_dataset_preparation_are_removed(tmp_path):
  from seqjax.data.registry import get_task
  task = get_task('copying', data_dir=str(tmp_path), num_train=32, num_validation=8,
                  num_test=8)
  config_dir = Path(tmp_path, task.metadata['tfds_name'].replace('/', os.sep))
  leftover = config_dir / 'incomplete.ABCDEF_1.0.0'
  leftover.mkdir(parents=True)
  (leftover / 'copying-train.array_record-00000-of-00001').write_bytes(b'\0' * 100)
  assert len(task.dataset('train')) == 32
  assert not list(config_dir.glob('incomplete.*'))


@pytest.mark.parametrize('source,needle', [
    (None, 'no such file'),
    ('def get_config(:\n', 'line 1: invalid syntax'),
    ('x = 1\n', 'defines no get_config()'),
    ('def get_config():\n  raise RuntimeError("boom")\n',
     'raised RuntimeError: boom (line 2)'),
    ('def get_config():\n  return 3\n', 'returned int, not an ml_collections.ConfigDict'),
])
def test_config_file_mistakes_are_one_line(source, needle, tmp_path):
  path = tmp_path / 'cfg.py'
  if source is not None:
    path.write_text(source)
  with pytest.raises(UserError, match=re.escape(needle)) as err:
    cli.load_config_file(str(path))
  assert '\n' not in str(err.value)
  with pytest.raises(UserError, match='is a directory'):
    cli.load_config_file(str(tmp_path))


def test_misspelled_fields_and_bad_values_are_one_line(tmp_path):
  config = cli.load_config_file(f'{REPO}/experiments/configs/copying.py')
  with pytest.raises(UserError, match="'learning_rat' in --config.learning_rat=1; did you "
                                      "mean 'learning_rate'"):
    cli.check_overrides(config, ['--config.learning_rat=1'])
  with pytest.raises(UserError, match="'d_modle' .*did you mean 'd_model'"):
    cli.check_overrides(config, ['--config.model_cfg.d_modle=3'])
  proc = _start([f'--config={tmp_path}/missing.py', f'--workdir={tmp_path}'])
  code, _, err = _finish(proc)
  assert code == 1 and err.strip().splitlines() == [
      f'error: --config={tmp_path}/missing.py: no such file; give a config file such as '
      'experiments/configs/copying.py']
  from seqjax.training.configuration import check_device_count
  with pytest.raises(UserError, match=r'config.num_devices=4 but this job sees 1 device'):
    check_device_count(_config(tmp_path, num_devices=4), 1)


def test_csv_errors_name_the_row(tmp_path):
  from seqjax.data.errors import DataError
  from seqjax.data.registry import get_task
  rows = [f'some words {i},{"pos" if i % 2 else "neg"}' for i in range(2, 61)]
  rows[51 - 2] = 'some words 51,'
  path = tmp_path / 'reviews.csv'
  path.write_text('text,label\n' + '\n'.join(rows) + '\n')
  for options in ({}, {'num_classes': 2}):
    with pytest.raises(DataError, match=r'line 51: the label \(column 1\) is empty'):
      get_task('csv', path=str(path), **options)


def test_exit_codes_and_nan_messages(tmp_path):
  from seqjax.data.errors import DataError
  from seqjax.training.loop import _non_finite_error
  cases = [(UserError('x'), 1), (DataError('x'), 1), (NonFiniteLossError('x'), 2),
           (EnvironmentFailure('x'), 3), (OSError(28, 'No space left on device', '/w'), 3),
           (RuntimeError('x'), 4), (ValueError('x'), 4)]
  assert [cli.classify(err)[0] for err, _ in cases] == [code for _, code in cases]
  assert cli.classify(cases[4][0])[1] == 'No space left on device (/w)'
  ck = Checkpointer(str(tmp_path), async_save=False)
  step = {'loss_sum': np.float32(2.0e12), 'weight': np.float32(4.0), 'correct': 0.0,
          'seq_correct': 0.0, 'seqs': 1.0, 'grad_norm': np.float32(np.inf), 'lr': 1e-3}
  message = str(_non_finite_error('token', 2, step, ck))
  assert message.startswith('the gradient norm became inf at step 2 (loss 5e+11)')
  assert 'no checkpoint was saved yet' in message and 'None' not in message
  step.update(loss_sum=np.float32(np.nan), grad_norm=np.float32(np.nan))
  assert str(_non_finite_error('token', 3, step, ck)).startswith(
      'the loss became nan at step 3')
  ck.close()
