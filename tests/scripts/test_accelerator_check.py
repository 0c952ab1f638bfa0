"""scripts/accelerator_check.py on CPU: bfloat16 compute against the float32 CPU reference.

Cheap on purpose: the Transformer LM through all three programs (its decode path streams
through the KV cache), and the encoder-decoder's forward pass only (in bfloat16 it did not
run before this check existed).
"""

from __future__ import annotations

import jax
import numpy as np

from scripts import accelerator_check as check


def test_bfloat16_rows_pass_within_tolerance_and_name_the_device():
  rows = [check.check_family(name, 'bfloat16', batch=2, time_len=6, d_model=16, repeats=1,
                             num_layers=1, only=only)
          for name, only in (('lstm_attention', ('forward',)),
                             ('transformer', ('forward', 'train', 'decode')))]
  for row in rows:
    assert row['ok'], row
    errors = [row[k] for k in ('forward_err', 'train_err', 'decode_err') if k in row]
    # bfloat16 really ran (not the float32 program twice) and stayed within tolerance.
    assert all(0 < e <= check.TOLERANCE['bfloat16'] for e in errors), row
  assert 'decode_err' in rows[1] and 'train_err' in rows[1] and 'train_err' not in rows[0]
  text = check.table(rows, jax.devices()[0])
  assert text.splitlines()[0].startswith('device: cpu')
  assert [l.split()[-1] for l in text.splitlines()[2:]] == ['ok', 'ok']


def test_relative_error_ignores_padding_and_scales_by_the_reference():
  ref = np.ones((2, 3, 4))
  got = ref.copy()
  got[1, 2] = 100.0  # a padded position
  mask = np.array([[True, True, True], [True, True, False]])
  assert check.relative_error(got, ref, mask) == 0.0
  got[0, 0, 0] = 1.5
  assert check.relative_error({'a': got}, {'a': ref}, mask) == 0.5
  failed = dict(family='x', head='lm', dtype='bfloat16', tolerance=0.06, ok=False,
                failure='forward: TypeError: boom')
  assert check.table([failed], jax.devices()[0]).splitlines()[-1] == \
      'x: forward: TypeError: boom'
