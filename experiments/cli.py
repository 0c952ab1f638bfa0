"""Shared entry-point plumbing: user mistakes become one line on stderr and exit code 1.

A user mistake is any ``ValueError`` raised while checking flags, configs, tasks, data or
workdirs (``seqjax.training.errors.UserError``, ``seqjax.data.errors.DataError``, the
model config's one-line ``ValueError``s). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging as py_logging
import sys
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging


def fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(1)


def run_user_errors(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
  try:
    return fn(*args, **kwargs)
  except ValueError as err:
    text = str(err).strip().splitlines()
    fail(text[0] if text else type(err).__name__)


def _unknown_field(err: Exception, argv: list[str]) -> str:
  field = str(err).strip().strip('"').strip("'").splitlines()[0].strip("'")
  return (f'unknown config field {field!r} in the flags '
          f'{[a for a in argv[1:] if a.startswith("--config")]}')


def define_config(default: str, help_text: str):
  """``config_flags.DEFINE_config_file`` for ``--config``. With a default file the flag
  applies ``--config.<field>`` overrides already while being defined, so an unknown field
  fails here: one line, exit code 1."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  try:
    return config_flags.DEFINE_config_file('config', default, help_text)
  except (AttributeError, KeyError) as err:
    fail(_unknown_field(err, sys.argv))
  except (ValueError, OSError, ImportError, flags.Error) as err:
    fail(str(err).strip().splitlines()[0])


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with config-override mistakes (an unknown
  ``--config.<field>``, a bad config file) reduced to one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as err:
    fail(f'{str(err).strip().splitlines()[0]} (see --helpfull)')
  except (AttributeError, KeyError) as err:
    fail(_unknown_field(err, argv))
  except (ValueError, OSError, ImportError) as err:
    fail(str(err).strip().splitlines()[0])
  return []


class _QuietLibraries(py_logging.Filter):
  """Orbax logs every save/restore phase at INFO; keep its warnings and errors only."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or '/orbax/' not in record.pathname


def run(main: Callable[[list[str]], Any]) -> None:
  """``absl.app.run`` where bad flags give one line and exit code 1, no traceback."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  app.run(main, flags_parser=_parse_flags)
