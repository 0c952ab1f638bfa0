"""Errors a user can cause in a training run; entry points print them as one line.

Every class is a ``ValueError`` so the entry points catch them together with the model
config's and the data layer's own ``ValueError``s (``seqjax.data.errors.DataError``).
"""

from __future__ import annotations


class UserError(ValueError):
  """A bad flag or config value, or a workdir that does not fit the request."""


class ConfigMismatchError(UserError):
  """The workdir's saved config differs in model shape from the requested one."""


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN/Inf; the message names the step and the last good
  checkpoint (which is kept)."""
