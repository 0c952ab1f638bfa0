"""``--config`` files for the entry points: load a task's config file and check the
``--config.<field>=<value>`` overrides before ``ml_collections`` sees them, so that a
missing file, a file without ``get_config()`` or a misspelt field is one line naming the
fix (``ml_collections``' own errors are tracebacks).
"""

from __future__ import annotations

import difflib
import os
import sys
import traceback
import types

from absl import flags

from experiments.cli import REPO, fail


def _config_args(argv: list[str], default: str | None) -> tuple[str | None, list[str]]:
  """``(--config value, ['--config.a.b=v', ...])`` from ``argv``."""
  path, overrides = default, []
  args = argv[1:]
  for i, arg in enumerate(args):
    if arg.startswith('--config='):
      path = arg[len('--config='):]
    elif arg == '--config' and i + 1 < len(args):
      path = args[i + 1]
    elif arg.startswith('--config.'):
      overrides.append(arg)
  return path, overrides


def _line_in(err: BaseException, path: str) -> str:
  frames = [f for f in traceback.extract_tb(err.__traceback__)
            if os.path.abspath(f.filename) == os.path.abspath(path)]
  return f' (line {frames[-1].lineno})' if frames else ''


def load_config_file(spec: str):
  """The ``ConfigDict`` of ``--config=<file>[:<arg>]``, or ``UserError`` naming what is
  wrong with the file: missing, a directory, a syntax error, no ``get_config``, a
  ``get_config`` that raises or returns something else."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from seqjax.training.errors import UserError  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(':')
  where = f'--config={path}'
  if not path:
    raise UserError('--config is empty; give a config file such as '
                    'experiments/configs/copying.py')
  if os.path.isdir(path):
    files = sorted(f for f in os.listdir(path) if f.endswith('.py') and f != '__init__.py')
    hint = f', e.g. {os.path.join(path, files[0])}' if files else ''
    raise UserError(f'{where} is a directory; give one config file in it{hint}')
  if not os.path.isfile(path):
    raise UserError(f'{where}: no such file; give a config file such as '
                    'experiments/configs/copying.py')
  try:
    with open(path, encoding='utf-8') as f:
      code = compile(f.read(), path, 'exec')
  except SyntaxError as err:
    raise UserError(f'{where}: line {err.lineno}: {err.msg}; fix the file') from None
  except (OSError, UnicodeDecodeError) as err:
    raise UserError(f'{where}: cannot read the file ({err})') from None
  module = types.ModuleType('seqjax_config_check')
  module.__file__ = path
  try:
    exec(code, module.__dict__)  # pylint: disable=exec-used
  except Exception as err:  # pylint: disable=broad-except
    raise UserError(f'{where}: running the file raised {type(err).__name__}: {err}'
                    f'{_line_in(err, path)}') from None
  get_config = module.__dict__.get('get_config')
  if not callable(get_config):
    raise UserError(f'{where} defines no get_config(); a config file must define '
                    'get_config() returning an ml_collections.ConfigDict')
  try:
    config = get_config(arg) if arg else get_config()
  except Exception as err:  # pylint: disable=broad-except
    raise UserError(f'{where}: get_config() raised {type(err).__name__}: {err}'
                    f'{_line_in(err, path)}') from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(f'{where}: get_config() returned {type(config).__name__}, not an '
                    'ml_collections.ConfigDict')
  return config


def _config_file_hint(config, overrides: list[str], name: str, path: str | None) -> str:
  """'; add --config=experiments/configs/<task>.py' when ``name`` is an option of the task
  the command names (``--config.task=...`` or the file's) and that task has a config file
  other than the one loaded: with the default file, ``--config.task=text_file`` alone
  keeps the default task's options, so ``--config.task_options.path`` has no field."""
  option = name.split('.')
  if len(option) != 2 or option[0] != 'task_options':
    return ''
  task = config.get('task', '')
  for flag in overrides:
    if flag.startswith('--config.task='):
      task = flag.split('=', 1)[1]
  stem = str(task).split('/')[0]  # glue/mnli -> glue.py
  candidate = os.path.join(REPO, 'experiments', 'configs', f'{stem}.py')
  if not stem or not os.path.isfile(candidate) or (
      path and os.path.abspath(path) == os.path.abspath(candidate)):
    return ''
  from seqjax.data.registry import task_defaults  # pylint: disable=g-import-not-at-top
  try:
    if option[1] not in task_defaults(str(task)):
      return ''
  except ValueError:  # an unknown task: reported as such later
    return ''
  return (f'; {option[1]!r} is an option of task {task!r}, whose config file has all '
          f'its options: add --config=experiments/configs/{stem}.py')


def check_overrides(config, overrides: list[str], path: str | None = None) -> None:
  """``UserError`` for the first ``--config.<field>`` naming no field of ``config`` (the
  file at ``path``), with the closest field name, or the task's own config file, as a
  suggestion."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from seqjax.training.errors import UserError  # pylint: disable=g-import-not-at-top
  for flag in overrides:
    name = flag[len('--config.'):].split('=', 1)[0]
    node = config
    for part in name.split('.'):
      if node is None:
        break  # a placeholder: ml_collections decides what it may hold
      if not isinstance(node, ml_collections.ConfigDict):
        raise UserError(f'unknown config field {part!r} in {flag}: the field before it is '
                        'a value, not a group of fields')
      if part not in node:
        close = difflib.get_close_matches(part, list(node.keys()), n=1)
        hint = _config_file_hint(config, overrides, name, path) or (
            f'; did you mean {close[0]!r}?' if close else '')
        raise UserError(f'unknown config field {part!r} in {flag}{hint}')
      node = node[part]


def check_config_args(argv: list[str], default: str | None) -> None:
  """Config-file and override mistakes in ``argv`` as one line and exit code 1, before
  ``ml_collections`` (whose errors are tracebacks) sees them."""
  from seqjax.training.errors import UserError  # pylint: disable=g-import-not-at-top
  spec, overrides = _config_args(argv, default)
  if spec is None:
    return
  try:
    check_overrides(load_config_file(spec), overrides, spec.partition(':')[0])
  except UserError as err:
    fail(str(err))


def define_config(default: str, help_text: str):
  """``config_flags.DEFINE_config_file`` for ``--config``, after ``check_config_args``
  (with a default file the flag applies ``--config.<field>`` overrides already while
  being defined)."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  check_config_args(sys.argv, default)
  try:
    return config_flags.DEFINE_config_file('config', default, help_text)
  except (AttributeError, KeyError, ValueError, OSError, ImportError, flags.Error) as err:
    fail(str(err).strip().splitlines()[0])
