"""Multi-process plumbing that needs no second process: where the cluster settings come
from, the launcher's per-process environment, and the per-process data states of a
checkpoint. (Launched two-process runs: test_train_runs.py.)"""

from __future__ import annotations

import ml_collections
import pytest

from experiments import launch
from seqjax.training import multihost, resume
from seqjax.training.errors import UserError


def _config(**fields):
  base = dict(multihost=True, coordinator_address='', num_processes=0, process_id=-1)
  return ml_collections.ConfigDict({**base, **fields})


def test_cluster_settings_fields_win_over_environment_which_wins_over_detection():
  env = {'JAX_COORDINATOR_ADDRESS': 'head:1234', 'JAX_NUM_PROCESSES': '4',
         'JAX_PROCESS_ID': '3'}
  assert multihost.cluster_settings(_config(), {}) == {
      'coordinator_address': None, 'num_processes': None, 'process_id': None}  # detect
  assert multihost.cluster_settings(_config(), env) == {
      'coordinator_address': 'head:1234', 'num_processes': 4, 'process_id': 3}
  assert multihost.cluster_settings(_config(process_id=0, num_processes=2), env) == {
      'coordinator_address': 'head:1234', 'num_processes': 2, 'process_id': 0}


@pytest.mark.parametrize('fields,env,needle', [
    ({'process_id': 2, 'num_processes': 2}, {}, r'process_id=2 must be in \[0, '
                                                r'num_processes=2\)'),
    ({}, {'JAX_NUM_PROCESSES': 'two'}, "JAX_NUM_PROCESSES='two' must be an integer"),
    ({'coordinator_address': 'head'}, {}, "coordinator_address='head' needs a port"),
])
def test_cluster_settings_mistakes_are_one_line(fields, env, needle):
  with pytest.raises(UserError, match=needle):
    multihost.cluster_settings(_config(**fields), env)


def test_cluster_fields_without_multihost_are_a_mistake():
  multihost.check_fields(_config(multihost=False))  # defaults: fine
  with pytest.raises(UserError, match=r'config.num_processes=2 is set but '
                                      r'config.multihost=False'):
    multihost.check_fields(_config(multihost=False, num_processes=2))


def test_launcher_gives_each_process_its_id_and_devices():
  env = launch.process_env(1, 3, 5555, 2, 'cpu',
                           base={'XLA_FLAGS': '--xla_force_host_platform_device_count=8 '
                                              '--xla_dump_to=/tmp/x', 'HOME': '/h'})
  assert env['JAX_COORDINATOR_ADDRESS'] == '127.0.0.1:5555'
  assert (env['JAX_NUM_PROCESSES'], env['JAX_PROCESS_ID']) == ('3', '1')
  assert env['JAX_PLATFORMS'] == 'cpu' and env['HOME'] == '/h'
  assert env['XLA_FLAGS'].split() == ['--xla_dump_to=/tmp/x',
                                      '--xla_force_host_platform_device_count=2']


def test_checkpoint_data_item_holds_every_process_state():
  states = [{'epoch': 1, 'batch': 4, 'shard_index': i, 'shard_count': 2} for i in (0, 1)]
  item = resume.data_states(states)
  assert [resume.data_state_of_process(item, i) for i in (0, 1)] == states
  # Another topology resumes from any of them (the position is global).
  assert resume.data_state_of_process(item, 3) == states[0]
  # A checkpoint of an older version: one bare state.
  assert resume.data_state_of_process(states[0], 0) == states[0]
  with pytest.raises(RuntimeError, match='out of step'):
    resume.data_states([states[0], dict(states[1], batch=5)])
