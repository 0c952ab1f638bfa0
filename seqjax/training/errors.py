"""How a training or evaluation command can end, one class per outcome.

Each class carries the process exit code the entry points use for it (``experiments/cli``
reads ``exit_code``), so the table lives in one place:

====  ==========================================================================
code  meaning
====  ==========================================================================
0     done, or pre-empted by SIGTERM (``Preempted``; rerun the command to resume)
1     a user mistake: a bad flag, config, data file or workdir (``UserError``, and
      ``seqjax.data.errors.DataError``)
2     the loss or the gradient norm became NaN/Inf (``NonFiniteLossError``)
3     the environment failed: disk full, unwritable or locked workdir, damaged
      checkpoints, a dead peer (``EnvironmentFailure``)
4     an internal error: anything else (a bug; please report it)
====  ==========================================================================

``UserError`` is a ``ValueError`` so that callers catching bad-argument errors catch it too.
``Preempted`` is a ``BaseException``: a broad ``except Exception`` (a library's retry loop,
the checkpoint fallback) must never swallow a pre-emption.
"""

from __future__ import annotations

EXIT_OK, EXIT_USER, EXIT_NONFINITE, EXIT_ENVIRONMENT, EXIT_INTERNAL = 0, 1, 2, 3, 4


class UserError(ValueError):
  """A bad flag or config value, or a workdir that does not fit the request."""

  exit_code = EXIT_USER


class ConfigMismatchError(UserError):
  """The workdir's saved config differs in model shape from the requested one."""


class NonFiniteLossError(RuntimeError):
  """The training loss or gradient norm became NaN/Inf; the message names the quantity,
  the step and the checkpoint that is kept (if any)."""

  exit_code = EXIT_NONFINITE


class EnvironmentFailure(RuntimeError):
  """Something outside the program failed: a full disk, an unwritable or locked workdir,
  damaged checkpoint files, a dead peer. The message names it."""

  exit_code = EXIT_ENVIRONMENT


class WorkdirInUse(EnvironmentFailure):
  """Another trainer holds the workdir's lock. An expected condition, not a failure of
  this process: the line names the holder and no traceback log is written (the workdir
  is the other trainer's)."""

  log_traceback = False


class CheckpointSaveError(EnvironmentFailure):
  """Writing a checkpoint failed (its temporary files are removed)."""


class DamagedCheckpointError(EnvironmentFailure):
  """No checkpoint that was asked for (or none at all) passed its integrity check."""


class Preempted(BaseException):
  """SIGTERM arrived while nothing needed saving (before the first step, or during the
  final test evaluation); the command ends with exit code 0."""

  exit_code = EXIT_OK
