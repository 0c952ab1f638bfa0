"""Reading a PyTorch module's state dict for the one-to-one weight converters.

``named_weights(weights, names, module=..., target=...)`` finds the common key prefix
(e.g. ``backbone.layers.0.mixer.``, from the first name in ``names``), refuses any key
outside ``names`` and any missing one with a ``ValueError`` naming it, and returns the
``names`` as float32 NumPy arrays. Used by the mLSTM, sLSTM, Hawk and Mamba-2 converters.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def named_weights(weights: Mapping[str, Any], names: Sequence[str], *, module: str,
                  target: str, note: str = '') -> tuple[str, dict[str, np.ndarray]]:
  """``(prefix, {name: float32 array})`` of ``names`` in ``weights``; ``module`` and
  ``target`` name the torch and seqjax modules in the errors, ``note`` is appended to
  the unknown-key error (what the converter supports)."""
  anchor = names[0]
  prefix = next((k[:-len(anchor)] for k in weights if k.endswith(anchor)), '')
  unknown = sorted(k for k in weights
                   if not k.startswith(prefix) or k[len(prefix):] not in names)
  if unknown:
    raise ValueError(f'torch {module} weights {unknown} have no counterpart in '
                     f'{target}{note}')
  out = {}
  for name in names:
    if prefix + name not in weights:
      raise ValueError(f'torch {module} weights are missing {prefix + name!r}')
    out[name] = np.asarray(weights[prefix + name], np.float32)
  return prefix, out
