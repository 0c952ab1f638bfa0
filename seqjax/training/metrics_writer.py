"""Scalars to three places: the console (absl logging, plus a tqdm progress bar when stdout
is a terminal), ``<workdir>/metrics.jsonl`` (one JSON object per line:
``{"step", "split", <metric>: value, ...}``) and TensorBoard event files under
``<workdir>/tensorboard`` (tensorboardX, no TensorFlow).

A resumed run first drops JSON lines past the restored step (and TensorBoard purges its
events past it: ``purge_step``), so every ``(step, split)`` appears once and the record of
an interrupted and resumed run reads exactly like that of an uninterrupted one.
``TrainWindow`` holds the train metrics since the last train line; checkpoints carry its
state, so a run pre-empted mid-window writes the same next line after resuming.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from typing import Any, Mapping

from absl import logging
import numpy as np

from seqjax.training import losses

JSONL = 'metrics.jsonl'


def read_jsonl(workdir: str) -> list[dict]:
  path = os.path.join(workdir, JSONL)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def has_line(workdir: str, step: int, split: str) -> dict | None:
  """The ``metrics.jsonl`` record of ``(step, split)``, if written."""
  for record in read_jsonl(workdir):
    if record.get('step') == step and record.get('split') == split:
      return record
  return None


class TrainWindow:
  """Train-step metrics since the last train line: loss/metric sums (``losses.add_sums``),
  gradient norms, steps, scored tokens and training seconds (evaluation excluded)."""

  def __init__(self, state: Mapping[str, Any] | None = None):
    state = state or {}
    sums = state.get('sums')
    self.sums = None if sums is None else {k: np.asarray(v, np.float64)
                                           for k, v in sums.items()}
    self.grad_norm_sum = float(state.get('grad_norm_sum', 0.0))
    self.steps = int(state.get('steps', 0))
    self.lr = float(state.get('lr', 0.0))
    self.tokens = int(state.get('tokens', 0))
    self._seconds = float(state.get('seconds', 0.0))
    self._t0 = time.perf_counter()

  def add(self, step_metrics: list[Mapping[str, Any]], tokens: int) -> None:
    """Adds host copies of train-step outputs (``loss_sum``..., ``grad_norm``, ``lr``)."""
    for m in step_metrics:
      self.sums = losses.add_sums(self.sums, {k: v for k, v in m.items()
                                              if k not in ('grad_norm', 'lr')})
      self.grad_norm_sum += float(m['grad_norm'])
      self.lr = float(m['lr'])
    self.steps += len(step_metrics)
    self.tokens += tokens

  def exclude(self, seconds: float) -> None:
    """Time spent on something else (evaluation) does not count as training time."""
    self._t0 += seconds

  def seconds(self) -> float:
    return self._seconds + time.perf_counter() - self._t0

  def state(self) -> dict[str, Any]:
    """JSON-serialisable state (saved in checkpoints)."""
    return {'sums': None if self.sums is None else {k: np.asarray(v).tolist()
                                                    for k, v in self.sums.items()},
            'grad_norm_sum': self.grad_norm_sum, 'steps': self.steps, 'lr': self.lr,
            'tokens': self.tokens, 'seconds': self.seconds()}

  def take(self, kind: str, names: tuple[str, ...] | None = None
           ) -> dict[str, float] | None:
    """The window's metrics line (None if empty; only the task's metric ``names`` when
    given, see ``losses.finalize``), and a fresh window."""
    if not self.steps:
      return None
    seconds = self.seconds()
    metrics = losses.finalize(kind, self.sums, names)
    metrics.update(grad_norm=self.grad_norm_sum / self.steps, lr=self.lr,
                   step_time=seconds / self.steps,
                   tokens_per_sec=self.tokens / max(seconds, 1e-9))
    self.__init__()
    return metrics


def _tensorboard_writer(logdir: str, start_step: int):
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  # purge_step: TensorBoard hides this run's earlier events from that step on. The
  # sub-second suffix keeps event files of runs started within one second apart and in
  # time order (TensorBoard reads them in name order).
  return SummaryWriter(logdir, purge_step=start_step + 1,
                       filename_suffix=f'.{time.time_ns() % 10**9:09d}')


def _fmt(v: float) -> str:
  return f'{v:.4g}' if isinstance(v, float) else str(v)


class MetricsWriter:
  """Writes scalars; only the lead process writes (``enabled=False`` elsewhere)."""

  def __init__(self, workdir: str, *, enabled: bool = True, total_steps: int = 0,
               start_step: int = 0, tensorboard: bool = True):
    self.enabled = enabled
    self._path = os.path.join(workdir, JSONL)
    self._tb = self._bar = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._truncate_after(start_step)
    self._file = open(self._path, 'a')
    # The event file is made at the first scalar: a rerun of a finished run writes none
    # and so adds no empty file.
    self._tb_args = ((os.path.join(workdir, 'tensorboard'), start_step) if tensorboard
                     else None)
    if sys.stdout.isatty() and total_steps:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total_steps, initial=start_step, unit='step',
                       dynamic_ncols=True)

  def _truncate_after(self, step: int) -> None:
    if not os.path.exists(self._path):
      return
    with open(self._path) as f:
      lines = [ln for ln in f if ln.strip()]
    keep = [ln for ln in lines if json.loads(ln).get('step', 0) <= step]
    if len(keep) != len(lines):
      tmp = f'{self._path}.tmp'
      with open(tmp, 'w') as f:
        f.writelines(keep)
      os.replace(tmp, self._path)  # never a half-written file

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v)))
             for k, v in metrics.items()}
    with self._naming_the_file():
      self._file.write(json.dumps({'step': int(step), 'split': split, **clean}) + '\n')
      self._file.flush()
    if self._tb is None and self._tb_args is not None:
      self._tb = _tensorboard_writer(*self._tb_args)
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(f'{split}/{k}', float(v), int(step))
    text = ' '.join(f'{k}={_fmt(v)}' for k, v in clean.items())
    if self._bar is not None:
      self._bar.set_postfix_str(f'{split} ' + text[:120], refresh=False)
      self._bar.write(f'[{split}] step {step}: {text}')
    logging.info('[%s] step %d: %s', split, step, text)

  @contextlib.contextmanager
  def _naming_the_file(self):
    """An ``OSError`` from writing or flushing (a full disk) carries no file name; the
    command's one line should say which file, so it is raised again with it."""
    try:
      yield
    except OSError as err:
      if err.filename:
        raise
      raise OSError(err.errno, err.strerror or str(err),
                    getattr(self._file, 'name', self._path)) from err

  def advance(self, steps: int = 1) -> None:
    if self._bar is not None:
      self._bar.update(steps)

  def close(self) -> None:
    """Closes every sink; the first failure (e.g. a full disk) is raised after all are
    closed."""
    if not self.enabled:
      return
    failure = None
    for sink in (self._file, self._tb, self._bar):
      try:
        if sink is self._file:
          with self._naming_the_file():
            sink.close()
        elif sink is not None:
          sink.close()
      except Exception as err:  # pylint: disable=broad-except
        failure = failure or err
    self.enabled = False
    if failure is not None:
      raise failure
