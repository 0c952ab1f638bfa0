r"""The Long Range Arena (Tay et al. 2021): any families on any of its six tasks, written as
a table beside the published numbers.

  python -m experiments.lra --outdir=outputs/lra   # all six; CPU-sized on a CPU
  python -m experiments.lra --tasks=listops,pathfinder --families=s4d,transformer
  python -m experiments.lra --scale=paper --outdir=outputs/lra_paper  # accelerators
  python -m experiments.lra --task_options=pathx.image_size=128,text.max_len=2048 \
      --model_cfg=d_model=128,num_layers=4 --steps=2000

Tasks: listops, text (IMDB bytes), retrieval (AAN pairs, two-tower), image (grey
sCIFAR), pathfinder (32x32), pathx (Pathfinder at 128x128). ``--scale=paper`` trains at
the benchmark's lengths with S4's LRA settings (experiments/configs/lra_settings.py);
``--scale=cpu`` (the default without an accelerator) shrinks lengths, data, model and
steps so the table fills on a CPU, and says so in the table: those numbers are not
comparable with the published ones. ``--families`` takes any family of the model
registry that can classify (seqjax.models.families).
Text, retrieval and image need their data prepared (``python -m scripts.prepare_data``);
a task that is not gets a row saying how. Every (task, family) is one run of the project's
trainer in ``<outdir>/runs/<task>_<family>``; rerunning resumes or reuses finished runs.

Writes ``lra.md`` (the table), ``lra.json`` and ``lra.csv`` into ``--outdir``, rewritten
after every run.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import time
from typing import Any

from absl import app, flags, logging

from experiments import cli
from experiments.configs import base, lra_settings
from seqjax.models.families import FAMILIES as _REGISTRY

# Every family of the model registry that can carry a classifier head (all but the
# seq2seq-only lstm_attention), in the registry's order: a new family is accepted here
# the day it is registered.
FAMILIES = tuple(name for name, family in _REGISTRY.items()
                 if 'classifier' in family.supported_heads)
LENGTH_NAMES = {'listops': 'tokens', 'text': 'bytes', 'retrieval': 'bytes per document',
                'image': 'pixels', 'pathfinder': 'pixels', 'pathx': 'pixels'}
# Published test accuracy (%); None = the model did not beat chance (LRA's "FAIL").
PUBLISHED = {
    'Transformer (LRA, Tay et al. 2021, Table 1)': {
        'listops': 36.37, 'text': 64.27, 'retrieval': 57.46, 'image': 42.44,
        'pathfinder': 71.40, 'pathx': None},
    'S4 (Gu et al. 2022, Table 4)': {
        'listops': 59.60, 'text': 86.82, 'retrieval': 90.90, 'image': 88.65,
        'pathfinder': 94.20, 'pathx': 96.35},
    'S5 (Smith et al. 2023, Table 1)': {
        'listops': 62.15, 'text': 89.31, 'retrieval': 91.40, 'image': 88.00,
        'pathfinder': 95.33, 'pathx': 98.58},
}

def parse_options(items: list[str]) -> dict[str, dict[str, Any]]:
  """``['pathx.image_size=64']`` -> ``{'pathx': {'image_size': 64}}`` (values as Python
  literals, else strings)."""
  out: dict[str, dict[str, Any]] = {}
  for item in items:
    key, sep, value = item.partition('=')
    task, dot, option = key.partition('.')
    if not (sep and dot and option) or task not in lra_settings.TASKS:
      raise ValueError(f'--task_options: {item!r} is not task.option=value with task in '
                       f'{list(lra_settings.TASKS)}')
    out.setdefault(task, {})[option] = _literal(value)
  return out


def _literal(value: str) -> Any:
  try:
    return ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return value


def parse_model(items: list[str]) -> dict[str, Any]:
  """``['d_model=128']`` -> ``{'d_model': 128}``."""
  out = {}
  for item in items:
    key, sep, value = item.partition('=')
    if not sep or key not in base.model_defaults():
      raise ValueError(f'--model_cfg: {item!r} is not field=value with a ModelConfig field '
                       f'the task does not fix')
    out[key] = _literal(value)
  return out


def make_config(name: str, family: str, scale: str, *, seed: int = 0, data_dir: str = '',
                options: dict[str, Any] | None = None, steps: int = 0,
                model_overrides: dict[str, Any] | None = None):
  """The experiment config of LRA task ``name`` for ``family`` at ``scale``."""
  c = lra_settings.apply(base.get_config(), name, scale)
  if options:
    c.task_options.update(options)
  c.model_cfg.update(model_overrides or {})
  if steps:
    c.update(num_steps=steps, warmup_steps=max(steps // 10, 1))
    every = steps if steps < 10 else steps // 5  # validate (and keep the best) 5 times
    c.update(eval_every=every, checkpoint_every=every,
             log_every=max(min(steps // 10, 200), 1))
  s = {**lra_settings.settings(name, scale), 'options': c.task_options.to_dict()}
  c.model_cfg.max_len = lra_settings.sequence_length(s)
  c.model = family
  if family == 'transformer':
    c.model_cfg.num_heads = 4
    if c.model_cfg.max_len > 2048:  # exact attention's T x T weights would not fit
      c.model_cfg.impl = 'attention:chunked'
  c.update(seed=seed, data_dir=data_dir, async_checkpoint=False, tensorboard=False)
  return c


def run_one(name: str, family: str, scale: str, outdir: str, **kwargs) -> dict[str, Any]:
  """Trains one (task, family) pair; a record with its test accuracy or why there is none."""
  from seqjax.data.errors import DataError  # pylint: disable=g-import-not-at-top
  from seqjax.models.sizing import param_count  # pylint: disable=g-import-not-at-top
  from seqjax.training import configuration, loop, tasks  # pylint: disable=g-import-not-at-top
  from seqjax.training.errors import NonFiniteLossError  # pylint: disable=g-import-not-at-top
  config = make_config(name, family, scale, **kwargs)
  record = {'task': name, 'family': family, 'scale': scale, 'dataset': config.task,
            'task_options': config.task_options.to_dict(), 'steps': config.num_steps,
            'batch_size': config.batch_size, 'd_model': config.model_cfg.d_model,
            'num_layers': config.model_cfg.num_layers, 'length': None,
            'test_accuracy': None, 'status': 'ok'}
  start = time.perf_counter()
  try:
    task = tasks.open_task(config)
    record['length'] = task.spec.max_len // max(task.spec.num_segments, 1)
    record['params'] = param_count(configuration.model_config(config, task.spec))
    result = loop.train(config, os.path.join(outdir, 'runs', f'{name}_{family}'))
    if 'preempted' in result:  # SIGTERM: the trainer saved; stop the whole table here
      record['status'] = f'pre-empted at step {result["preempted"]}: rerun to resume'
      record['preempted'] = True
    else:
      record['test_accuracy'] = float(result['test']['accuracy'])
  except NonFiniteLossError as err:
    record['status'] = f'diverged: {str(err).splitlines()[0]}'
  except DataError as err:  # not prepared, bad files: one line saying what to do
    record['status'] = f'not run: {str(err).strip().splitlines()[0]}'
  record['seconds'] = time.perf_counter() - start
  return record


def _cell(value: float | None, published: bool = False) -> str:
  if value is None:
    return 'FAIL' if published else '—'
  return f'{value:.2f}'


def _steps(records: list[dict[str, Any]]) -> str:
  """'300 training steps' or '3-300 training steps': what the runs in the table did."""
  steps = sorted({r['steps'] for r in records})
  span = f'{steps[0]:,}' if len(steps) == 1 else f'{steps[0]:,}-{steps[-1]:,}'
  return f'{span} training step{"" if steps == [1] else "s"}'


def table(records: list[dict[str, Any]], scale: str, families: list[str]) -> str:
  """The markdown table: measured test accuracy (%) beside the published figures."""
  tasks = [t for t in lra_settings.TASKS if any(r['task'] == t for r in records)]
  by = {(r['task'], r['family']): r for r in records}
  lines = ['# Long Range Arena: measured here vs published', '']
  if scale == 'cpu':
    lines += ['**Reduced size, run on a CPU (`--scale=cpu`)**: shorter sequences, fewer '
              f'training examples, a small model and {_steps(records)} (settings per row '
              'below). These numbers show the pipeline works end to end; they are *not* '
              'comparable with the published columns, which train at the full lengths '
              'for tens to hundreds of thousands of steps.', '']
  else:
    lines += ['Trained at the benchmark lengths with S4\'s LRA settings '
              '(`--scale=paper`).', '']
  pub = list(PUBLISHED)
  head = ['task', 'length (this run)', *families, *[f'{p} — published' for p in pub]]
  lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for t in tasks:
    first = next(r for r in records if r['task'] == t)
    length = first['length']
    paper_len = lra_settings.sequence_length(lra_settings.settings(t, 'paper'))
    if t == 'retrieval':
      paper_len //= 2
    shown = (f'{length:,} {LENGTH_NAMES[t]}' if length else '—') + (
        f' (paper {paper_len:,})' if length and length != paper_len else '')
    cells = [_cell(by[(t, f)]['test_accuracy'] * 100
                   if (t, f) in by and by[(t, f)]['test_accuracy'] is not None else None)
             for f in families]
    lines.append('| ' + ' | '.join([t, shown, *cells,
                                    *[_cell(PUBLISHED[p][t], True) for p in pub]]) + ' |')
  lines += ['', 'Test accuracy in %. Published columns are copied from the papers '
            '(Tay et al. 2021, "Long Range Arena", ICLR, Table 1; Gu, Goel & Re 2022, '
            '"Efficiently Modeling Long Sequences with Structured State Spaces", ICLR, '
            'Table 4; Smith, Warrington & Linderman 2023, "Simplified State Space Layers '
            'for Sequence Modeling", ICLR, Table 1), not measured here; FAIL = no better '
            'than chance. The published S4 and S5 rows are those papers\' own models, not '
            'seqjax\'s S4D.', '', '## Runs', '',
            '| task | family | dataset | parameters | d_model x layers | steps | batch | '
            'seconds | status |', '|---|---|---|---|---|---|---|---|---|']
  for r in records:
    lines.append(f"| {r['task']} | {r['family']} | {r['dataset']} "
                 f"{json.dumps(r['task_options'])} | {r.get('params', '—')} | "
                 f"{r['d_model']} x {r['num_layers']} | {r['steps']} | {r['batch_size']} "
                 f"| {r['seconds']:.0f} | {r['status']} |")
  return '\n'.join(lines) + '\n'


def write(outdir: str, records: list[dict[str, Any]], scale: str,
          families: list[str]) -> str:
  os.makedirs(outdir, exist_ok=True)
  path = os.path.join(outdir, 'lra.md')
  with open(path, 'w') as f:
    f.write(table(records, scale, families))
  with open(os.path.join(outdir, 'lra.json'), 'w') as f:
    json.dump({'scale': scale, 'records': records, 'published': PUBLISHED}, f, indent=1)
  with open(os.path.join(outdir, 'lra.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['task', 'family', 'scale', 'length', 'test_accuracy', 'status'])
    for r in records:
      writer.writerow([r['task'], r['family'], scale, r['length'], r['test_accuracy'],
                       r['status']])
  return path


def _earlier(outdir: str, scale: str) -> list[dict[str, Any]]:
  """Records of earlier invocations into ``outdir`` at the same scale (kept in the table
  unless rerun), so tasks and families can be added one command at a time."""
  path = os.path.join(outdir, 'lra.json')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    saved = json.load(f)
  return saved['records'] if saved.get('scale') == scale else []


def run(tasks: list[str], families: list[str], scale: str, outdir: str, *,
        options: dict[str, dict[str, Any]] | None = None, steps: int = 0, seed: int = 0,
        data_dir: str = '', model_overrides: dict[str, Any] | None = None
        ) -> list[dict[str, Any]]:
  """Trains every (task, family) pair; returns this invocation's records. The table in
  ``outdir`` also keeps earlier invocations' pairs that were not rerun."""
  earlier = [r for r in _earlier(outdir, scale)
             if not (r['task'] in tasks and r['family'] in families)]
  shown = [f for f in FAMILIES if f in families or any(r['family'] == f for r in earlier)]
  records = []
  for name in tasks:
    for family in families:
      logging.info('LRA %s with %s (%s scale) ...', name, family, scale)
      records.append(run_one(name, family, scale, outdir, seed=seed, data_dir=data_dir,
                             options=(options or {}).get(name), steps=steps,
                             model_overrides=model_overrides))
      everything = sorted(earlier + records, key=lambda r: (
          lra_settings.TASKS.index(r['task']), FAMILIES.index(r['family'])))
      write(outdir, everything, scale, shown)
      if records[-1].get('preempted'):
        return records
  return records


def define_flags() -> None:
  """The entry point's flags, defined only when it runs (so importing this module, e.g.
  beside experiments.compare in one test process, defines no duplicate flags)."""
  flags.DEFINE_list('tasks', list(lra_settings.TASKS),
                    f'LRA tasks to run, from {list(lra_settings.TASKS)}.')
  flags.DEFINE_list('families', ['lstm', 'transformer', 's4d', 'mamba'],
                    f'Families to train, from {list(FAMILIES)}.')
  flags.DEFINE_enum('scale', None, ['cpu', 'paper'],
                    'cpu: reduced lengths/model/steps (minutes per run on a CPU); paper: '
                    'the benchmark lengths and S4\'s settings. Default: paper on an '
                    'accelerator, cpu otherwise.')
  flags.DEFINE_list('task_options', [], 'Overrides of task options, task.option=value, '
                    'e.g. pathx.image_size=128,listops.max_len=1000.')
  flags.DEFINE_list('model_cfg', [], 'Model overrides for every family, key=value, e.g. '
                    'd_model=128,num_layers=4 (ModelConfig fields).')
  flags.DEFINE_integer('steps', 0, 'Training steps per run (0 = the scale\'s).')
  flags.DEFINE_string('outdir', 'outputs/lra', 'Where the table and runs go.')
  flags.DEFINE_string('data_dir', '', 'Data directory ("" = $SEQJAX_DATA_DIR or '
                      '~/.cache/seqjax/tensorflow_datasets).')
  flags.DEFINE_integer('seed', 0, 'Seed of data and models.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  f = flags.FLAGS
  for flag, values, valid in (('--tasks', f.tasks, lra_settings.TASKS),
                              ('--families', f.families, FAMILIES)):
    unknown = sorted(set(values) - set(valid))
    if unknown or not values:
      cli.fail(f'{flag}: unknown {unknown or "(empty)"}; choose from {list(valid)}')
  scale = f.scale
  if scale is None:
    import jax  # pylint: disable=g-import-not-at-top
    scale = 'cpu' if jax.default_backend() == 'cpu' else 'paper'
  options = cli.run_user_errors(parse_options, f.task_options)
  model = cli.run_user_errors(parse_model, f.model_cfg)
  cli.run_user_errors(run, f.tasks, f.families, scale, f.outdir, options=options,
                      steps=f.steps, seed=f.seed, data_dir=f.data_dir,
                      model_overrides=model)
  print(f'table: {os.path.join(f.outdir, "lra.md")}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
