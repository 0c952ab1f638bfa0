"""Pathfinder: the label is checked by flood-filling the solid image (brute force), and the
TFDS builder is deterministic and yields the trainer's pixel-sequence format."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from seqjax.data.registry import get_task
from seqjax.data.synthetic import pathfinder as pf


def _joined(image: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
  """Breadth-first search over lit pixels (8-neighbours) from pixel ``a`` to ``b``."""
  size = image.shape[0]
  start, goal = tuple(np.rint(a).astype(int)), tuple(np.rint(b).astype(int))
  assert image[start] and image[goal]
  seen, queue = {start}, collections.deque([start])
  while queue:
    r, c = queue.popleft()
    if (r, c) == goal:
      return True
    for dr in (-1, 0, 1):
      for dc in (-1, 0, 1):
        n = (r + dr, c + dc)
        if 0 <= n[0] < size and 0 <= n[1] < size and image[n] and n not in seen:
          seen.add(n)
          queue.append(n)
  return False


@pytest.mark.parametrize('size,count', [(32, 24), (64, 4)])
def test_label_is_whether_the_markers_are_joined(size, count):
  opts = dict(pf.SeqjaxPathfinder.DEFAULTS, image_size=size, num_distractors=2)
  rng = np.random.default_rng(size)
  labels = []
  for _ in range(count):
    scene = pf.draw_scene(rng, opts)
    solid, dashed = pf.render(scene, opts, dashed=False) > 0, pf.render(scene, opts) > 0
    assert not (dashed & ~solid).any()  # the dashed curves lie on the solid ones
    assert dashed.sum() < solid.sum()   # and have gaps
    assert _joined(solid, *scene.markers) == bool(scene.label)
    # Difficulty settings shape the scene: curves x segments.
    assert len(scene.curves) == 4 and all(len(c) == 15 for c in scene.curves)
    labels.append(scene.label)
  if count > 20:
    assert 0 < np.mean(labels) < 1


def test_builder_is_deterministic_and_yields_pixel_sequences(tmp_path):
  small = {'num_train': 3, 'num_validation': 2, 'num_test': 2, 'path_length': 8,
           'num_distractors': 1}
  task = get_task('pathfinder', data_dir=str(tmp_path / 'a'), **small)
  spec = task.spec
  assert (spec.kind, spec.input_features, spec.vocab_size, spec.max_len) == (
      'classification', 1, 0, 1024)
  ex = task.dataset('train')[0]
  assert ex['inputs'].dtype == np.float32 and ex['inputs'].shape == (1024, 1)
  assert set(np.unique(ex['inputs'])) <= {0.0, 1.0} and ex['inputs'].max() == 1.0
  assert ex['label'].dtype == np.int32 and ex['label'] in (0, 1)
  # Same seed and options, another directory: the same images; another seed: others.
  again = get_task('pathfinder', data_dir=str(tmp_path / 'b'), **small).dataset('train')
  other = get_task('pathfinder', data_dir=str(tmp_path / 'a'), seed=1, **small)
  for i in range(3):
    np.testing.assert_array_equal(again[i]['inputs'], task.dataset('train')[i]['inputs'])
  assert not np.array_equal(other.dataset('train')[0]['inputs'], ex['inputs'])
  # The stored example is the rendered scene of the split's stream.
  rng = np.random.default_rng(np.random.SeedSequence(
      [0, 0, __import__('zlib').crc32(b'pathfinder')]))
  opts = task.metadata['options']
  first = pf.render(pf.draw_scene(rng, opts), opts).reshape(-1, 1) / 255.0
  np.testing.assert_array_equal(ex['inputs'], first.astype(np.float32))


def test_bad_options_fail_in_one_line():
  with pytest.raises(ValueError, match=r"image_size=48 must be one of \[32, 64, 128, 256\]"):
    get_task('pathfinder', image_size=48)
  opts = dict(pf.SeqjaxPathfinder.DEFAULTS, num_distractors=40)
  with pytest.raises(ValueError, match='could not fit 42 curves'):
    pf.draw_scene(np.random.default_rng(0), opts)
