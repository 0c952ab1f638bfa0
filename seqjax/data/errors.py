"""Errors a user's data can cause, each with one line naming what is wrong and the fix.

Both are ``ValueError`` subclasses, so callers that already catch bad-argument errors catch
these too.
"""

from __future__ import annotations


class DataError(ValueError):
  """Bad input data: a missing/empty/non-UTF-8 file, a malformed row, a bad label, a
  sequence longer than ``max_len``... The message names the file, the row or line number
  and the fix, on one line."""


class DatasetNotPreparedError(DataError):
  """A TFDS dataset is not prepared in ``data_dir`` and cannot be downloaded here.

  The message names the dataset, the ``data_dir`` searched and how to prepare it.
  """
