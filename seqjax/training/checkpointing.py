"""Orbax checkpoints that cannot be silently corrupt.

One ``CheckpointManager`` step directory holds six items, saved together with
``ocp.args.Composite`` (asynchronously by default):

* ``params``    — the model parameters (all evaluation and generation need);
* ``opt``       — ``{'step', 'opt_state', 'rng'}`` (only resuming training needs it);
* ``data``      — the training data iterator's state, JSON;
* ``meta``      — the resolved experiment config, model config and task metadata, JSON;
* ``progress``  — the train metrics accumulated since the last metrics line, JSON (so a
  run pre-empted mid-window writes the same next line as an uninterrupted one);
* ``integrity`` — checksums of all of the above (``integrity.fingerprint`` for arrays,
  SHA-256 for JSON), written by the same commit.

A restore recomputes the checksums and refuses the step on any mismatch, and also when
its parameters or optimizer state hold NaN/Inf. Refused and unreadable steps are reported
with their reason; ``restore_first_good`` tries candidates in order and returns the first
good one together with the refusals, so the caller can fall back with one warning line.

Retention keeps the last ``keep`` steps *and* the best step by the evaluation metric: a
``BestN`` policy alone can delete the latest step, so an ``AnyPreservationPolicy`` ORs
``LatestN`` with ``BestN``. Orbax writes each step into a temporary directory and renames
it on commit, so a run killed mid-save leaves no half-written step; a failed save's
temporary directory is removed here (Orbax would only remove it at the next start), and
``prune`` deletes steps a killed run left beyond the retention.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import json
import logging as py_logging
import os
import re
import shutil
from typing import Any, Sequence

from absl import logging
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from seqjax.training import integrity
from seqjax.training.errors import CheckpointSaveError, DamagedCheckpointError

ITEMS = ('params', 'opt', 'data', 'meta', 'progress', 'integrity')
JSON_ITEMS = ('data', 'meta', 'progress')
TMP_MARK = '.orbax-checkpoint-tmp'
CORRUPT = '.corrupt'


def _json_digest(obj: Any) -> str:
  # Digest the JSON round trip: what a restore returns (int keys become str, tuples lists).
  canonical = json.dumps(json.loads(json.dumps(obj)), sort_keys=True)
  return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _innermost(err: BaseException) -> BaseException:
  while err.__cause__ is not None:
    err = err.__cause__
  return err


def _os_errno(err: BaseException) -> int | None:
  """The OS error number behind ``err``: an ``OSError`` in its chain, or TensorStore's
  ``[os_error_code='N']`` (``RESOURCE_EXHAUSTED``: out of space)."""
  seen = set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    if isinstance(err, OSError) and err.errno:
      return err.errno
    code = re.search(r"os_error_code='(\d+)'", str(err))
    if code:
      return int(code.group(1))
    if 'RESOURCE_EXHAUSTED' in str(err):
      return errno.ENOSPC
    err = err.__cause__ or err.__context__
  return None


def brief(err: BaseException) -> str:
  """A one-line reason for ``err``: the innermost cause's first line, kept short
  (TensorStore's driver chain shortened to the OS error or status, and the key)."""
  inner = _innermost(err)
  text = str(inner).strip().splitlines()[0] if str(inner).strip() else ''
  status = re.match(r'([A-Z_]+): ', text)
  # The innermost access TensorStore names: 'Error opening "zarr" driver: Error reading
  # "<key>"' -> reading <key>.
  accesses = re.findall(r'(?:Failed|Error) (reading|writing|opening)[^"]* "([^"]+)"', text)
  number = _os_errno(inner)
  if status and accesses:
    verb, key = accesses[-1]
    return f'{os.strerror(number) if number else status.group(1)} ({verb} {key})'
  if isinstance(inner, OSError):
    return f'{inner.strerror or type(inner).__name__}' + (
        f' ({inner.filename})' if inner.filename else '')
  text = text.split(' See full TensorStore details')[0]
  return f'{type(inner).__name__}: {text[:120]}' if text else type(inner).__name__


def _drop_failed_reads() -> None:
  """After a failed restore, Orbax's other read tasks of that step end with errors nobody
  awaits; asyncio would log each ("Task exception was never retrieved") whenever they
  are collected. Collect them now, quietly: the refusal already names the reason."""
  asyncio_logger = py_logging.getLogger('asyncio')
  disabled, asyncio_logger.disabled = asyncio_logger.disabled, True
  try:
    gc.collect()
  finally:
    asyncio_logger.disabled = disabled


class Checkpointer:
  """Save / restore train state, data-iterator state and metadata under ``directory``."""

  def __init__(self, directory: str, *, keep: int = 2, best_metric: str = 'loss',
               larger_is_better: bool = False, async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    self.keep = max(int(keep), 1)
    self.read_only = read_only
    sign = 1.0 if larger_is_better else -1.0
    # BestN keeps the *largest* values; negate metrics where smaller is better.
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(n=self.keep),
        pp.BestN(get_metric_fn=lambda m: sign * float(m[best_metric]), n=1,
                 keep_checkpoints_without_metrics=False)])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=lambda m: float(m[best_metric]),
        best_mode='max' if larger_is_better else 'min',
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only,
        read_only=read_only, create=not read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
    self._in_flight: int | None = None  # step of a save not yet known to be complete

  # ------------------------------------------------------------------------ queries

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  # ------------------------------------------------------------------------ save

  def save(self, step: int, state, data_state: dict[str, Any], meta: dict[str, Any],
           metrics: dict[str, float] | None = None,
           progress: dict[str, Any] | None = None) -> None:
    """Saves ``state`` (a ``TrainState``) at ``step`` with checksums of every item;
    ``metrics`` (if given) must hold the best-checkpoint metric. A failure raises
    ``CheckpointSaveError`` after removing the step's temporary files."""
    opt = {'step': state.step, 'opt_state': state.opt_state, 'rng': state.rng}
    progress = progress or {}
    sums = {'params': integrity.fingerprint(state.params), 'opt': integrity.fingerprint(opt),
            **{name: _json_digest(obj) for name, obj in
               (('data', data_state), ('meta', meta), ('progress', progress))}}
    args = ocp.args.Composite(params=ocp.args.StandardSave(state.params),
                              opt=ocp.args.StandardSave(opt),
                              data=ocp.args.JsonSave(data_state),
                              meta=ocp.args.JsonSave(meta),
                              progress=ocp.args.JsonSave(progress),
                              integrity=ocp.args.JsonSave(sums))
    if metrics is not None:
      metrics = {self.best_metric: float(metrics[self.best_metric])}
    self.wait()  # Orbax would wait too; waiting here names the right step if that failed
    try:
      self.manager.save(int(step), args=args, metrics=metrics, force=True)
    except Exception as err:  # pylint: disable=broad-except
      self._save_failed(int(step), err)
    self._in_flight = int(step)

  def poll(self) -> None:
    """Raises ``CheckpointSaveError`` if a background save has failed (cheap: no wait
    while the save is still running)."""
    if self._in_flight is not None and not self.manager.is_saving_in_progress():
      self.wait()

  def wait(self) -> None:
    """Blocks until the in-flight save is committed; ``CheckpointSaveError`` if it
    failed."""
    step, self._in_flight = self._in_flight, None
    try:
      self.manager.wait_until_finished()
    except Exception as err:  # pylint: disable=broad-except
      self._save_failed(step, err)

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()

  def _save_failed(self, step: int | None, err: Exception) -> None:
    removed = self.remove_temporary()
    reason = brief(err)
    if _os_errno(err) in (errno.ENOSPC, errno.EDQUOT):
      reason = f'the disk is full: {reason}'
    kept = [s for s in self.all_steps() if s != step]
    raise CheckpointSaveError(
        f'saving checkpoint step {step} in {self.directory} failed: {reason}; '
        f'{"removed its temporary files; " if removed else ""}the newest complete '
        f'checkpoint is {f"step {kept[-1]}" if kept else "none"}. Fix the cause (e.g. free '
        'disk space) and rerun to resume') from err

  def remove_temporary(self) -> list[str]:
    """Deletes temporary step directories of unfinished saves (one writer: the workdir
    lock guarantees none is still being written)."""
    removed = []
    if not os.path.isdir(self.directory):
      return removed
    for name in os.listdir(self.directory):
      if TMP_MARK in name:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        removed.append(name)
    return removed

  # ------------------------------------------------------------------------ restore

  def restore_meta(self, step: int) -> dict[str, Any]:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
        'meta']

  def _has(self, step: int, item: str) -> bool:
    return os.path.isdir(os.path.join(self.directory, str(step), item))

  def restore(self, step: int, abstract_params, abstract_opt=None) -> dict[str, Any]:
    """Items of ``step`` (all of them for training when ``abstract_opt`` is given, else
    ``params`` and ``meta``), verified; ``DamagedCheckpointError`` when a check fails.

    ``abstract_*`` are pytrees of ``jax.ShapeDtypeStruct`` with shardings (the restore
    target).
    """
    args = {'params': ocp.args.StandardRestore(abstract_params),
            'meta': ocp.args.JsonRestore()}
    if abstract_opt is not None:
      args.update(opt=ocp.args.StandardRestore(abstract_opt), data=ocp.args.JsonRestore(),
                  progress=ocp.args.JsonRestore())
    for name in ('progress', 'integrity'):  # absent in checkpoints of older versions
      if self._has(step, name):
        args.setdefault(name, ocp.args.JsonRestore())
      else:
        args.pop(name, None)
    got = dict(self.manager.restore(step, args=ocp.args.Composite(**args)))
    self._verify(step, got)
    return got

  def _verify(self, step: int, got: dict[str, Any]) -> None:
    sums = got.pop('integrity', None)
    if sums is None:
      logging.warning('checkpoint step %d in %s carries no checksums (written by an older '
                      'seqjax); using it unverified', step, self.directory)
    else:
      for name, value in got.items():
        if name in JSON_ITEMS:
          if sums.get(name) != _json_digest(value):
            raise DamagedCheckpointError(f'{name}: checksum mismatch')
        else:
          bad = integrity.mismatches(sums.get(name, {}), value)
          if bad:
            more = f' and {len(bad) - 1} more' if len(bad) > 1 else ''
            raise DamagedCheckpointError(f'{name}: checksum mismatch in {bad[0]}{more}')
    for name in ('params', 'opt'):
      if name in got:
        bad = integrity.non_finite(got[name])
        if bad:
          raise DamagedCheckpointError(f'{name}: NaN/Inf in {bad[0]}')

  def restore_first_good(self, steps: Sequence[int], abstract_params, abstract_opt=None):
    """``(step, items, refused)`` for the first of ``steps`` that restores and verifies;
    ``refused`` lists ``(step, reason)`` of those tried before it. Raises
    ``DamagedCheckpointError`` (naming every step and reason) when none is good."""
    refused = []
    for step in steps:
      try:
        return step, self.restore(step, abstract_params, abstract_opt), refused
      except Exception as err:  # pylint: disable=broad-except
        logging.debug('checkpoint step %d refused', step, exc_info=True)
        _drop_failed_reads()
        refused.append((step, str(err) if isinstance(err, DamagedCheckpointError)
                        else brief(err)))
    raise DamagedCheckpointError(
        f'no usable checkpoint in {self.directory}: ' + '; '.join(
            f'step {s} is damaged ({why})' for s, why in refused))

  # ------------------------------------------------------------------------ housekeeping

  def quarantine(self, steps: Sequence[int]) -> str:
    """Moves damaged ``steps`` to ``<step>.corrupt`` and keeps only the newest such
    directory; returns a phrase saying what is kept."""
    for step in steps:
      path = os.path.join(self.directory, str(step))
      target = path + CORRUPT
      if os.path.exists(target):
        shutil.rmtree(target)
      os.replace(path, target)
      os.utime(target)  # "newest" = most recently found damaged
    self.manager.reload()
    return self.prune_corrupt()

  def prune_corrupt(self) -> str:
    corrupt = sorted((os.path.join(self.directory, n) for n in os.listdir(self.directory)
                      if n.endswith(CORRUPT)), key=os.path.getmtime)
    if not corrupt:
      return ''
    for path in corrupt[:-1]:
      shutil.rmtree(path, ignore_errors=True)
    older = f'; {len(corrupt) - 1} older .corrupt dir(s) removed' if len(corrupt) > 1 else ''
    return f'{os.path.basename(corrupt[-1])} is kept for inspection{older}'

  def prune(self) -> list[int]:
    """Deletes steps beyond the retention (the last ``keep`` plus the best), which a run
    killed between a save's commit and Orbax's clean-up leaves behind."""
    steps = self.all_steps()
    keep = set(steps[-self.keep:])
    best = self.best_step()
    if best is not None:
      keep.add(best)
    extra = [s for s in steps if s not in keep]
    for step in extra:
      self.manager.delete(step)
    return extra

  def remove_all(self) -> list[int]:
    """Deletes every step (``--config.restart=True``)."""
    steps = self.all_steps()
    for step in steps:
      shutil.rmtree(os.path.join(self.directory, str(step)), ignore_errors=True)
    self.manager.reload()
    return steps

  def candidates(self, which: str | int) -> list[int]:
    """Steps to try for ``which`` (``'best'`` / ``'latest'`` / a step number), in order:
    a named choice falls back to the others, newest first; an explicit step does not.
    ValueError if nothing matches."""
    steps = self.all_steps()
    if not steps:
      raise ValueError(f'no checkpoint in {self.directory}; train first (experiments/'
                       'train.py --workdir=...)')
    newest_first = steps[::-1]
    if which == 'latest':
      return newest_first
    if which == 'best':
      best = self.best_step()
      return newest_first if best is None else [best] + [s for s in newest_first
                                                          if s != best]
    try:
      step = int(which)
    except (TypeError, ValueError):
      raise ValueError(f'checkpoint={which!r} is not valid; use best, latest or one of the '
                       f'saved steps {steps}') from None
    if step not in steps:
      raise ValueError(f'checkpoint={step} is not saved in {self.directory}; saved steps: '
                       f'{steps}')
    return [step]


def fallback_warning(directory: str, refused: Sequence[tuple[int, str]], used: int,
                     action: str, note: str = '') -> None:
  """The one warning line of a fallback past damaged checkpoints."""
  what = '; '.join(f'step {s} ({why})' for s, why in refused)
  logging.warning('damaged checkpoint in %s: %s; %s step %d instead%s', directory, what,
                  action, used, f' ({note})' if note else '')
