"""Base experiment config; every per-task file starts from it and overrides what differs.

Every field can be overridden from the command line, e.g.
``--config.model=mamba --config.model_cfg.d_model=128 --config.learning_rate=3e-4``.
``model_cfg`` holds the ``seqjax.models.config.ModelConfig`` fields the user chooses; the
task fixes the rest (head, vocabularies, number of classes).

A per-task file calls ``set_task``: its ``task_options`` then hold every option the task
accepts, with the task's own default (``seqjax.data.registry.task_defaults``, the one
place they are defined), so any of them can be set from the command line.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from seqjax.data.registry import task_defaults
from seqjax.models.config import ModelConfig, Role, field_names

# Fixed by the task (TaskSpec.model_fields) or by config.model, so not in model_cfg.
TASK_FIXED = field_names(Role.TASK)


def model_defaults(**overrides) -> ml_collections.ConfigDict:
  fields = {f.name: f.default for f in dataclasses.fields(ModelConfig)
            if f.name not in TASK_FIXED}
  fields.update(d_model=64, num_layers=2, max_len=512)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def task_options(task: str, **settings) -> ml_collections.ConfigDict:
  """Every option of ``task`` with its default, updated by the file's ``settings``.

  An option whose default is None becomes a placeholder (typed ``str`` unless ``settings``
  gives a typed one, e.g. ``placeholder(int)``): ml_collections cannot parse a command-line
  value into a plain None field.
  """
  defaults = task_defaults(task)
  unknown = sorted(set(settings) - set(defaults))
  if unknown:
    raise ValueError(f'task {task!r} has no option {unknown[0]!r}; its options: '
                     f'{sorted(defaults)}')
  fields = {**defaults, **settings}
  placeholder = ml_collections.config_dict.placeholder
  return ml_collections.ConfigDict(
      {k: placeholder(str) if v is None else v for k, v in fields.items()})


def set_task(c: ml_collections.ConfigDict, task: str, **settings) -> ml_collections.ConfigDict:
  """``c`` set to ``task`` with ``task_options(task, **settings)``."""
  c.task = task
  c.task_options = task_options(task, **settings)
  return c


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Task (seqjax.data.registry.get_task(task, data_dir=..., seed=seed, **task_options)).
  c.task = 'selective_copying'
  # Split sizes are options of every synthetic task; a per-task file sets all the task's
  # options (set_task). Kept this small so that a run with config_name='base' can name
  # any task (experiments/comparison/training.py removes these when they do not apply).
  c.task_options = ml_collections.ConfigDict(
      {'num_train': 10000, 'num_validation': 1000, 'num_test': 1000})
  c.data_dir = ''          # '' = $SEQJAX_DATA_DIR or ~/.cache/seqjax/tensorflow_datasets
  # Model.
  c.model = 'transformer'
  c.model_cfg = model_defaults()
  # Optimisation: AdamW, warmup + cosine/constant, global-norm clipping.
  c.seed = 0
  c.batch_size = 32        # global batch (all devices, all micro-batches)
  c.grad_accum_steps = 1   # micro-batches per update
  c.num_steps = 1000
  c.learning_rate = 1e-3
  c.lr_schedule = 'cosine'
  c.warmup_steps = 100
  c.min_lr_ratio = 0.1
  c.weight_decay = 0.01
  c.b1 = 0.9
  c.b2 = 0.98
  c.eps = 1e-8
  c.grad_clip = 1.0
  # Evaluation, logging, checkpoints.
  c.eval_every = 200       # 0 = no validation during training
  c.eval_steps = 0         # validation batches per evaluation; 0 = the whole split
  c.eval_batch_size = 0    # 0 = batch_size
  c.log_every = 50
  c.checkpoint_every = 200
  c.keep_checkpoints = 2   # last k, plus the best by the task's eval metric
  c.async_checkpoint = True
  c.restart = False        # True: delete this workdir's checkpoints and start from step 0
  c.tensorboard = True
  # Devices.
  c.num_devices = 0        # 0 = all visible devices
  c.fsdp = False           # shard large parameters over the data axis (ZeRO-3 style)
  c.fsdp_min_size = 1024   # parameters with fewer entries stay replicated
  # Multi-process jobs (README "Run on a cluster"): join with jax.distributed. On SLURM,
  # Open MPI, Cloud TPU and Kubernetes the fields below are detected; elsewhere set them
  # (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
  c.multihost = False
  c.coordinator_address = ''  # host:port of process 0; '' = from the env. or detected
  c.num_processes = 0         # 0 = from the environment or detected
  c.process_id = -1           # -1 = from the environment or detected
  c.distributed_init_timeout = 300      # s to wait for every process to join
  c.distributed_heartbeat_timeout = 20  # s of silence before a process counts as dead
  c.distributed_shutdown_timeout = 30   # s to wait for the others at the final barrier
  return c
