"""``--host_memory``: each policy keeps the blocks it promises to keep (fresh pages counted
per call, not timed); every command applies the flag before its main; a bad value is
refused, on the command line with one line and exit code 1."""

import subprocess
import sys

from absl.testing import flagsaver
import pytest

from experiments import cli
from seqjax.utils import host_memory

# Applies a policy before JAX starts, then counts the minor page faults of calls that
# write a fresh output of argv[2] MiB, once the heap has settled: under reuse glibc cannot
# hand an aligned request the exact block the previous step freed, so the heap grows for
# the first few steps (8 here) until freed blocks coalesce, and now and then a later step
# still grows it, hence the median over 9 calls.
_PROGRAM = '''
import sys
from seqjax.utils import host_memory
policy = host_memory.set_policy(sys.argv[1])
import jax, jax.numpy as jnp
x = jnp.ones((int(sys.argv[2]) * 256 * 1024,), jnp.float32)
f = jax.jit(lambda v: v * 2.0 + 1.0)
for _ in range(16):
  out = f(x)
  jax.block_until_ready(out)
  del out
faults = []
for _ in range(9):
  before = host_memory.minor_page_faults()
  out = f(x)
  jax.block_until_ready(out)
  del out
  faults.append(host_memory.minor_page_faults() - before)
print(policy, sorted(faults)[len(faults) // 2])
'''


@pytest.mark.parametrize('policy, mib, kept', [
    ('system', 64, False),  # glibc maps a block this large afresh on every call
    ('keep', 24, True),  # up to 32 MiB from the threads' heaps
    ('keep', 64, False),  # larger than a thread's heap can hold
    ('reuse', 64, True),  # one heap without a size cap
])
def test_policies_keep_the_blocks_they_promise(policy, mib, kept):
  proc = subprocess.run([sys.executable, '-c', _PROGRAM, policy, str(mib)],
                        capture_output=True, text=True, cwd=cli.REPO, timeout=300,
                        check=True)
  in_effect, faults = proc.stdout.split()
  pages = mib * 1024 * 1024 // 4096
  assert in_effect == policy
  if kept:
    assert float(faults) < 0.05 * pages
  else:
    assert float(faults) > 0.5 * pages


def test_unknown_policy_is_refused():
  with pytest.raises(ValueError, match='host memory policy'):
    host_memory.set_policy('fast')
  assert host_memory.in_effect() == 'system'


def test_bad_flag_value_is_one_line_and_exit_1():
  proc = subprocess.run([sys.executable, '-m', 'scripts.bench', '--host_memory=fast'],
                        capture_output=True, text=True, cwd=cli.REPO, timeout=300)
  assert proc.returncode == 1
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and 'host_memory' in lines[0], proc.stderr


def test_commands_apply_the_policy_before_main(monkeypatch):
  calls = []
  monkeypatch.setattr(host_memory, 'set_policy', lambda policy: calls.append(policy))
  monkeypatch.setattr(sys, 'argv', ['command', '--host_memory=reuse'])
  with flagsaver.flagsaver(), pytest.raises(SystemExit) as ended:
    cli.run(lambda argv: calls.append(('main', argv[1:])))
  assert calls == ['reuse', ('main', [])]
  assert not ended.value.code
