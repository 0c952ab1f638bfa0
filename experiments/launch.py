r"""Start a multi-process job on this machine: N trainers joined by ``jax.distributed``.

    python -m experiments.launch --num_processes=2 -- \
        --config=experiments/configs/copying.py --workdir=/tmp/run

Everything after ``--`` goes to ``python -m experiments.train`` (``--module`` picks
another entry point), with ``--config.multihost=True`` added. Process ``i`` gets
``JAX_COORDINATOR_ADDRESS=127.0.0.1:<free port>``, ``JAX_NUM_PROCESSES=N`` and
``JAX_PROCESS_ID=i`` (``seqjax.training.multihost`` reads them) and, on CPU,
``--devices_per_process`` host devices; CPU processes exchange collectives with gloo. It
is the cluster in miniature: for tests, and for trying a multi-host run without one.

Each line a process prints is shown prefixed with ``[i]``. SIGTERM or Ctrl-C to the
launcher is passed to every process (a pre-emption: they save one checkpoint at the same
step and exit). When a process fails the others are given ``--grace`` seconds to stop by
themselves (they notice the lost peer), then killed; the launcher then names the first
process that failed and exits with its exit code (0 when all succeeded).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags

from experiments import cli

_NUM = flags.DEFINE_integer('num_processes', 2, 'Processes to start (>= 1).')
_DEVICES = flags.DEFINE_integer('devices_per_process', 1,
                                'CPU devices per process (XLA host platform devices).')
_MODULE = flags.DEFINE_string('module', 'experiments.train',
                              'Entry point each process runs (python -m MODULE).')
_PLATFORM = flags.DEFINE_string('platform', 'cpu', "JAX_PLATFORMS of the processes; '' "
                                'keeps the environment\'s.')
_PORT = flags.DEFINE_integer('port', 0, 'Coordinator port; 0 = a free one.')
_GRACE = flags.DEFINE_float('grace', 60.0, 'Seconds the other processes get to stop by '
                            'themselves after one fails, before they are killed.')


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def process_env(index: int, count: int, port: int, devices: int, platform: str,
                base: dict[str, str] | None = None) -> dict[str, str]:
  """The environment of process ``index`` of ``count``."""
  env = dict(os.environ if base is None else base)
  env.update(JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES=str(count),
             JAX_PROCESS_ID=str(index))
  if platform:
    env['JAX_PLATFORMS'] = platform
  if platform == 'cpu':
    flags_ = [f for f in env.get('XLA_FLAGS', '').split()
              if not f.startswith('--xla_force_host_platform_device_count')]
    env['XLA_FLAGS'] = ' '.join(flags_ + [
        f'--xla_force_host_platform_device_count={devices}'])
  return env


def _pump(stream, prefix: str, out) -> None:
  for line in iter(stream.readline, ''):
    out.write(f'{prefix}{line}')
    out.flush()
  stream.close()


def launch(args: list[str], num_processes: int, *, devices_per_process: int = 1,
           module: str = 'experiments.train', platform: str = 'cpu', port: int = 0,
           grace: float = 60.0) -> int:
  """Runs the job; returns its exit code (see the module docstring)."""
  port = port or free_port()
  command = [sys.executable, '-m', module, *args, '--config.multihost=True']
  procs, pumps = [], []
  for i in range(num_processes):
    proc = subprocess.Popen(command, env=process_env(i, num_processes, port,
                                                     devices_per_process, platform),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1)
    procs.append(proc)
    for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
      pump = threading.Thread(target=_pump, args=(stream, f'[{i}] ', out), daemon=True)
      pump.start()
      pumps.append(pump)

  def forward(signum, frame):  # pylint: disable=unused-argument
    for proc in procs:
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)

  signal.signal(signal.SIGTERM, forward)
  signal.signal(signal.SIGINT, forward)
  failed, killed = None, []
  deadline = None
  while any(p.poll() is None for p in procs):
    if failed is None:
      # Seen in the same round, a process killed by a signal failed first: the others'
      # errors are about losing it.
      down = sorted((p.poll() > 0, i) for i, p in enumerate(procs)
                    if p.poll() not in (None, 0))
      if down:
        failed, deadline = down[0][1], time.monotonic() + grace
    if deadline is not None and time.monotonic() > deadline:
      for i, proc in enumerate(procs):
        if proc.poll() is None:
          proc.kill()
          killed.append(i)
      break
    time.sleep(0.1)
  codes = [p.wait() for p in procs]
  for pump in pumps:
    pump.join(5)
  if failed is None:
    failed = next((i for i, c in enumerate(codes) if c), None)
  if failed is None:
    return 0
  code = codes[failed]
  why = (f'killed by signal {-code}' if code < 0 else f'exited with code {code}')
  more = (f'; processes {killed} did not stop within {grace:g} s and were killed'
          if killed else '')
  print(f'error: process {failed} of {num_processes} {why}{more}', file=sys.stderr)
  return code if code > 0 else 1


def main(argv):
  if _NUM.value < 1:
    cli.fail(f'--num_processes={_NUM.value} must be at least 1')
  if _DEVICES.value < 1:
    cli.fail(f'--devices_per_process={_DEVICES.value} must be at least 1')
  sys.exit(launch(argv[1:], _NUM.value, devices_per_process=_DEVICES.value,
                  module=_MODULE.value, platform=_PLATFORM.value, port=_PORT.value,
                  grace=_GRACE.value))


if __name__ == '__main__':
  cli.run(main)
