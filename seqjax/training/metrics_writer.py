"""Scalars to three places: the console (absl logging, plus a tqdm progress bar when stdout
is a terminal), ``<workdir>/metrics.jsonl`` (one JSON object per line:
``{"step", "split", <metric>: value, ...}``) and TensorBoard event files under
``<workdir>/tensorboard`` (tensorboardX, no TensorFlow).

A resumed run first drops JSON lines past the restored step, so the file of an interrupted
and resumed run reads exactly like that of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Mapping

from absl import logging

JSONL = 'metrics.jsonl'


def read_jsonl(workdir: str) -> list[dict]:
  path = os.path.join(workdir, JSONL)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


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
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
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
      with open(self._path, 'w') as f:
        f.writelines(keep)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v)))
             for k, v in metrics.items()}
    self._file.write(json.dumps({'step': int(step), 'split': split, **clean}) + '\n')
    self._file.flush()
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(f'{split}/{k}', float(v), int(step))
    text = ' '.join(f'{k}={_fmt(v)}' for k, v in clean.items())
    if self._bar is not None:
      self._bar.set_postfix_str(f'{split} ' + text[:120], refresh=False)
      self._bar.write(f'[{split}] step {step}: {text}')
    logging.info('[%s] step %d: %s', split, step, text)

  def advance(self, steps: int = 1) -> None:
    if self._bar is not None:
      self._bar.update(steps)

  def close(self) -> None:
    if not self.enabled:
      return
    self._file.close()
    if self._tb is not None:
      self._tb.close()
    if self._bar is not None:
      self._bar.close()
