"""``time_interleaved``: round-robin order, and ``settle`` calls right before each timed
call of the same variant (so a variant is timed with its own caches, not its
predecessor's)."""

import mmap
import time

import pytest

from seqjax.utils import timing


def _recorder(log: list, name: str):
  def fn():
    log.append(name)
    return 0
  return fn


@pytest.mark.parametrize('settle', [0, 2])
def test_calls_are_round_robin_with_settle_calls_before_each_timed_one(settle):
  log = []
  fns = {name: (_recorder(log, name), ()) for name in ('a', 'b', 'c')}
  timing.time_interleaved(fns, warmup=1, repeats=3, settle=settle)
  warm, rounds = log[:3], log[3:]
  assert warm == ['a', 'b', 'c']
  assert rounds == [n for _ in range(3) for n in ('a', 'b', 'c') for _ in range(settle + 1)]


def test_settle_calls_are_not_timed():
  calls = {'n': 0}

  def slow_then_fast():
    # Odd calls (the settle calls) sleep; even calls (the timed ones) do not.
    calls['n'] += 1
    time.sleep(0.05 if calls['n'] % 2 else 0.0)
    return 0

  result = timing.time_interleaved({'x': (slow_then_fast, ())}, warmup=0, repeats=3,
                                   settle=1)
  assert result['x']['median_ms'] < 25


def test_page_faults_count_fresh_memory_touched_in_the_timed_call():
  pages = 256

  def touch_fresh_pages():
    # An anonymous mapping is fresh memory every time: each page faults on first write.
    with mmap.mmap(-1, pages * mmap.PAGESIZE) as buf:
      for page in range(pages):
        buf[page * mmap.PAGESIZE] = 1
    return 0

  result = timing.time_interleaved({'fresh': (touch_fresh_pages, ()),
                                    'idle': (lambda: 0, ())}, warmup=1, repeats=3)
  assert result['fresh']['median_page_faults'] >= pages
  assert result['idle']['median_page_faults'] < pages // 4
