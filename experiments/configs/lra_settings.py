"""Long Range Arena (Tay et al. 2021) settings shared by the LRA task configs and
``experiments/lra.py``: one table, so the two cannot drift apart.

``PAPER`` holds, per LRA task, the seqjax task and options at the benchmark's lengths and
the training settings of S4's LRA experiments (Gu, Goel & Re 2022; the files
``configs/experiment/lra/s4-{listops,imdb,aan,cifar,pathfinder,pathx}.yaml`` of
state-spaces/s4): layers, width, state size, batch, AdamW learning rate, weight decay
0.05, steps and warmup of a cosine schedule. seqjax's blocks are its own pre-norm residual
blocks (``x + mixer(norm(x))``, ``x + mlp(norm(x))``), not S4's exact layer, so these are
starting points, not a replication recipe.

``CPU`` shrinks each task so one run takes minutes on a 2-core CPU (ListOps with the LSTM:
7 minutes on the shared machine): shorter sequences (Path-X at 64x64), fewer examples, a
small model, a few hundred steps. Results at that size are not
comparable with the published ones; ``experiments/lra.py`` labels them as reduced.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import base

TASKS = ('listops', 'text', 'retrieval', 'image', 'pathfinder', 'pathx')

# task, task options (benchmark lengths), model and optimisation settings (S4's LRA files).
PAPER = {
    'listops': dict(task='listops', options={
        'max_len': 2000, 'min_len': 500, 'max_depth': 10, 'max_args': 10,
        'num_train': 96000, 'num_validation': 2000, 'num_test': 2000},
        num_layers=6, d_model=256, s4d_state_size=4, dropout=0.0, batch_size=32,
        learning_rate=0.01, num_steps=120000, warmup_steps=12000),
    'text': dict(task='imdb_bytes', options={'max_len': 4096, 'tokenizer': 'byte'},
                 num_layers=6, d_model=256, s4d_state_size=4, dropout=0.0, batch_size=16,
                 learning_rate=0.01, num_steps=50000, warmup_steps=5000),
    'retrieval': dict(task='retrieval', options={'max_len': 4000},
                      num_layers=6, d_model=256, s4d_state_size=4, dropout=0.0,
                      batch_size=64, learning_rate=0.01, num_steps=50000, warmup_steps=5000),
    'image': dict(task='scifar', options={'grayscale': True},
                  num_layers=6, d_model=512, s4d_state_size=64, dropout=0.1, batch_size=50,
                  learning_rate=0.01, num_steps=180000, warmup_steps=18000),
    'pathfinder': dict(task='pathfinder', options={
        'image_size': 32, 'num_train': 160000, 'num_validation': 20000, 'num_test': 20000},
        num_layers=6, d_model=256, s4d_state_size=64, dropout=0.0, batch_size=64,
        learning_rate=0.004, num_steps=500000, warmup_steps=50000),
    'pathx': dict(task='pathfinder', options={
        'image_size': 128, 'num_train': 160000, 'num_validation': 20000, 'num_test': 20000},
        num_layers=6, d_model=256, s4d_state_size=64, dropout=0.0, batch_size=16,
        learning_rate=0.002, num_steps=500000, warmup_steps=50000),
}

# Reduced settings for a CPU: options merged over PAPER's, the rest replaces it.
_CPU_MODEL = dict(num_layers=2, d_model=64, s4d_state_size=16, dropout=0.0, batch_size=32,
                  learning_rate=3e-3, num_steps=300, warmup_steps=30)
CPU = {
    'listops': dict(options={'max_len': 256, 'min_len': 32, 'max_depth': 6,
                             'max_args': 6, 'num_train': 4000, 'num_validation': 256,
                             'num_test': 512}, **_CPU_MODEL),
    'text': dict(options={'max_len': 512}, **_CPU_MODEL),
    'retrieval': dict(options={'max_len': 256}, **_CPU_MODEL),
    'image': dict(options={}, **_CPU_MODEL),
    'pathfinder': dict(options={'num_train': 4000, 'num_validation': 256, 'num_test': 512},
                       **_CPU_MODEL),
    'pathx': dict(options={'image_size': 64, 'num_train': 2000, 'num_validation': 128,
                           'num_test': 256}, **{**_CPU_MODEL, 'batch_size': 16,
                                                'num_steps': 200, 'warmup_steps': 20}),
}


def settings(name: str, scale: str = 'paper') -> dict:
  """The merged settings of LRA task ``name`` at ``scale`` ('paper' or 'cpu')."""
  out = dict(PAPER[name])
  if scale == 'cpu':
    reduced = dict(CPU[name])
    out['options'] = {**out['options'], **reduced.pop('options')}
    out.update(reduced)
  return out


def sequence_length(s: dict) -> int:
  """Input positions of the task in settings ``s`` (what ``model_cfg.max_len`` must hold)."""
  opts = s['options']
  if s['task'] in ('scifar',):
    return 1024
  if s['task'] == 'pathfinder':
    return opts['image_size'] ** 2
  if s['task'] == 'retrieval':
    return 2 * opts['max_len']  # a document pair
  return opts['max_len']


def apply(c: ml_collections.ConfigDict, name: str, scale: str = 'paper'):
  """Sets ``c`` (a ``base.get_config()``) to LRA task ``name`` at ``scale``."""
  s = settings(name, scale)
  base.set_task(c, s['task'], **s['options'])  # every option of the task, LRA's set
  c.model = 's4d'
  for key in ('num_layers', 'd_model', 's4d_state_size', 'dropout'):
    c.model_cfg[key] = s[key]
  c.model_cfg.causal = False   # LRA classifiers see the whole sequence
  c.model_cfg.max_len = sequence_length(s)
  c.model_cfg.pooling = 'mean'
  for key in ('batch_size', 'learning_rate', 'num_steps', 'warmup_steps'):
    c[key] = s[key]
  c.weight_decay = 0.05
  c.b2 = 0.999
  c.min_lr_ratio = 0.0         # cosine to zero, as S4's cosine_warmup
  c.eval_every = max(c.num_steps // 20, 1)
  c.checkpoint_every = c.eval_every
  c.log_every = max(min(c.eval_every // 4, 200), 1)
  return c
