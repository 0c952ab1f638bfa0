"""Pathfinder and Path-X (Linsley et al. 2018; the LRA versions of Tay et al. 2021).

``classification`` task with 2 classes: is there a path between the two marked dots? An
image ``[S, S]`` (S = ``image_size``: 32, 64, 128 = Path-X, or 256) is read as a sequence
of ``S*S`` grey pixels, ``inputs`` float32 ``[S*S, 1]`` in [0, 1] (raster order, the input
S4 and S5 use), ``label`` int32 ``[]``: 1 = the dots are the two ends of one curve.

Every image holds the same number of curves: two *main* curves and ``num_distractors``
others. A positive image marks both ends of main curve 0; a negative one marks one end of
main curve 0 and one end of main curve 1, so the count of curves or markers gives nothing
away. A curve is ``path_length`` straight segments of ``segment_length * S/32`` pixels
whose heading turns by a uniform angle in ``[-max_turn, max_turn]`` degrees per segment;
rendered dashed, each segment shows its first ``dash_fraction`` (Linsley et al.'s
"paddles" with gaps). Curves never touch: each is kept at least ``margin`` pixels
(Chebyshev) from every other curve and marker, so whether the dots are joined is decided
by following one curve, through its gaps, past the distractors, which is the long-range
dependency the benchmark tests. ``path_length`` (contour length; Linsley et al. use 6, 9
and 14, LRA the hardest, 14), ``num_distractors`` and ``max_turn`` set the difficulty.

The generator is seeded and deterministic: ``draw_scene`` samples the geometry and
``render`` rasterises it, dashed or solid (the solid image contains the dashed one and
is what tests flood-fill to check the label).

Stored as ``uint8`` ``[S*S]`` in array_record (64 KiB per 256x256 image) and converted to
float pixels when read. Generation is pure NumPy, one image at a time: 25-30 ms per image
at every size with the defaults, measured on the shared 2-core CPU (so LRA's 200,000
Pathfinder images take about 1.5 hours, once).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data.spec import TaskSpec
from seqjax.data.synthetic import base

IMAGE_SIZES = (32, 64, 128, 256)
_STEP = 0.5             # sampling step along a segment (pixels): rounded samples stay
                        # 8-connected, so a solid curve is one connected component
_TURNS = 7              # turn angles tried per segment (a shuffled grid)
_BACKJUMP = 3           # segments undone at a dead end
_EXPANSIONS = 300       # segments tried from one start before the curve starts elsewhere
_CURVE_TRIES = 30       # starts of one curve before the whole image is redrawn
_SCENE_TRIES = 30       # redraws of one image before the settings are declared impossible


@dataclasses.dataclass
class Scene:
  """Geometry of one image: curves as vertex arrays ``[path_length + 1, 2]`` (row, col),
  the two marker centres and the label."""

  curves: list[np.ndarray]
  markers: tuple[np.ndarray, np.ndarray]
  label: int


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Pixel sizes for one image size, scaled from the 32x32 settings."""

  size: int
  segment: float
  thickness: int
  margin: int
  radius: int
  border: int

  @classmethod
  def of(cls, opts: dict[str, Any]) -> 'Geometry':
    size = opts['image_size']
    scale = size / 32
    thickness = max(1, size // 64)
    radius = max(1, round(opts['marker_radius'] * scale))
    return cls(size=size, segment=opts['segment_length'] * scale, thickness=thickness,
               margin=max(1, round(opts['margin'] * scale)), radius=radius,
               border=max(radius, thickness) + 1)


def _segment_points(a: np.ndarray, b: np.ndarray, upto: float = 1.0) -> np.ndarray:
  """Points at most ``_STEP`` pixels apart from ``a`` to ``b``, keeping those in the first
  ``upto`` of the way (a dash is a subset of the solid segment's points)."""
  n = int(math.ceil(math.hypot(b[0] - a[0], b[1] - a[1]) / _STEP)) + 1
  t = np.linspace(0.0, 1.0, max(n, 2))
  if upto < 1.0:
    t = t[t <= upto]
  return a[None] + t[:, None] * (b - a)[None]


def _stamp(points: np.ndarray, offsets: np.ndarray | None, size: int) -> np.ndarray:
  """Flat pixel indices covered by ``offsets`` around each rounded point (clipped; may
  repeat). ``offsets=None`` is the one-pixel pen."""
  pix = np.rint(points).astype(np.int64)
  if offsets is not None:
    pix = (pix[:, None, :] + offsets[None]).reshape(-1, 2)
  np.clip(pix, 0, size - 1, out=pix)
  return pix[:, 0] * size + pix[:, 1]


def _square(half_low: int, half_high: int) -> np.ndarray:
  r = np.arange(-half_low, half_high + 1)
  return np.stack(np.meshgrid(r, r, indexing='ij'), -1).reshape(-1, 2)


def _disk(radius: int) -> np.ndarray:
  sq = _square(radius, radius)
  return sq[(sq ** 2).sum(1) <= radius * radius + radius]  # a round-ish dot


class _Canvas:
  """Collision bookkeeping: the pixels a new curve must not touch."""

  def __init__(self, geo: Geometry):
    self.geo = geo
    self.blocked = np.zeros(geo.size * geo.size, bool)
    t = geo.thickness
    self.pen = _square((t - 1) // 2, t // 2) if t > 1 else None
    self.halo = _square(geo.margin + (t - 1) // 2, geo.margin + t // 2)
    self.dot = _disk(geo.radius)
    # The dot grown by ``margin`` in every direction (a Minkowski sum with a square: a
    # bigger disk would miss the diagonal neighbours of the dot's corner pixels).
    grow = _square(geo.margin, geo.margin)
    self.dot_halo = np.unique((self.dot[:, None] + grow[None]).reshape(-1, 2), axis=0)

  def inside(self, p: np.ndarray) -> bool:
    b, s = self.geo.border, self.geo.size
    return b <= p[0] <= s - 1 - b and b <= p[1] <= s - 1 - b

  def footprint(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _stamp(_segment_points(a, b), self.pen, self.geo.size)

  def free(self, pixels: np.ndarray) -> bool:
    return not self.blocked[pixels].any()

  def block_curve(self, curve: np.ndarray) -> None:
    pts = np.concatenate([_segment_points(a, b) for a, b in zip(curve[:-1], curve[1:])])
    self.blocked[_stamp(pts, self.halo, self.geo.size)] = True

  def dot_free(self, centre: np.ndarray) -> bool:
    return self.free(_stamp(centre[None], self.dot, self.geo.size))

  def block_dot(self, centre: np.ndarray) -> None:
    self.blocked[_stamp(centre[None], self.dot_halo, self.geo.size)] = True


def _draw_curve(rng: np.random.Generator, canvas: _Canvas, length: int,
                max_turn: float, needs_dots: bool) -> np.ndarray | None:
  """One curve avoiding ``canvas.blocked`` and its own older segments, or None.

  Depth-first: each segment tries the turns of a shuffled grid over ``[-max_turn,
  max_turn]``; a dead end backtracks one segment, and a start that runs out of its
  ``_EXPANSIONS`` budget is abandoned for a new one (uniform turns with restarts alone
  almost never fit long curves into a 32x32 image).
  """
  geo = canvas.geo
  grid = np.linspace(-max_turn, max_turn, _TURNS)
  for _ in range(_CURVE_TRIES):
    start = rng.uniform(geo.border, geo.size - 1 - geo.border, 2)
    if needs_dots and not canvas.dot_free(start):
      continue
    vertices, headings = [start], [rng.uniform(0, 2 * math.pi)]
    prints: list[np.ndarray] = []
    options = [np.zeros(1)]  # the first segment keeps the start heading
    budget = _EXPANSIONS
    while options and budget:
      if len(vertices) == length + 1:
        if not needs_dots or canvas.dot_free(vertices[-1]):
          return np.stack(vertices)
        budget = 0  # the end lands on a reserved dot: start elsewhere
        break
      if not len(options[-1]):  # dead end: back up _BACKJUMP segments
        for _ in range(min(_BACKJUMP, len(options))):
          options.pop()
          if len(vertices) > 1:
            vertices.pop(), headings.pop(), prints.pop()
        continue
      turn, options[-1] = options[-1][0], options[-1][1:]
      budget -= 1
      h = headings[-1] + turn
      end = vertices[-1] + geo.segment * np.array([math.sin(h), math.cos(h)])
      if not canvas.inside(end):
        continue
      pix = canvas.footprint(vertices[-1], end)
      older = prints[:-2]  # segments k-2 and older: the curve may not run into them
      if not canvas.free(pix) or (older and np.isin(pix, np.concatenate(older)).any()):
        continue
      vertices.append(end)
      headings.append(h)
      prints.append(pix)
      options.append(rng.permutation(grid))
  return None


def draw_scene(rng: np.random.Generator, opts: dict[str, Any]) -> Scene:
  """The geometry of one image for resolved task options ``opts``."""
  geo = Geometry.of(opts)
  turn = math.radians(opts['max_turn'])
  for _ in range(_SCENE_TRIES):
    canvas = _Canvas(geo)
    curves = []
    for i in range(2 + opts['num_distractors']):
      main = i < 2
      curve = _draw_curve(rng, canvas, opts['path_length'], turn, needs_dots=main)
      if curve is None:
        break
      curves.append(curve)
      canvas.block_curve(curve)
      if main:  # both ends may carry a marker: keep every other curve away from them
        canvas.block_dot(curve[0])
        canvas.block_dot(curve[-1])
    else:
      label = int(rng.integers(2))
      end = int(rng.integers(2))                       # which end of curve 0 is marked
      first = curves[0][-end]
      if label:
        second = curves[0][end - 1]                    # the other end of curve 0
      else:
        second = curves[1][-int(rng.integers(2))]
      return Scene(curves=curves, markers=(first, second), label=label)
  raise ValueError(f'task pathfinder: could not fit {2 + opts["num_distractors"]} curves '
                   f'of path_length={opts["path_length"]} into a {geo.size}x{geo.size} '
                   f'image; lower num_distractors, path_length or segment_length')


def render(scene: Scene, opts: dict[str, Any], dashed: bool = True) -> np.ndarray:
  """uint8 ``[S, S]``: curves (dashed or solid) and the two markers at 255 on 0."""
  geo = Geometry.of(opts)
  t = geo.thickness
  pen = _square((t - 1) // 2, t // 2) if t > 1 else None
  upto = opts['dash_fraction'] if dashed else 1.0
  image = np.zeros(geo.size * geo.size, np.uint8)
  for curve in scene.curves:
    pts = np.concatenate([_segment_points(a, b, upto) for a, b in zip(curve[:-1], curve[1:])])
    image[_stamp(pts, pen, geo.size)] = 255
  image[_stamp(np.stack(scene.markers), _disk(geo.radius), geo.size)] = 255
  return image.reshape(geo.size, geo.size)


class _FloatPixels:
  """Stored example -> ``{'inputs': float32 [S*S, 1] in [0, 1], 'label': int32 []}``."""

  def __call__(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
    pixels = np.asarray(example['inputs'], np.float32) / 255.0
    return {'inputs': pixels[:, None], 'label': np.asarray(example['label'], np.int32)}


class SeqjaxPathfinder(base.SyntheticBuilder):
  """Pathfinder / Path-X: are the two dots joined by one dashed curve?"""

  TASK = 'pathfinder'
  DEFAULTS = {'image_size': 32, 'path_length': 14, 'num_distractors': 2, 'max_turn': 30.0,
              'segment_length': 1.8, 'dash_fraction': 0.6, 'margin': 1.0,
              'marker_radius': 1.0}

  @classmethod
  def validate(cls, opts):
    task = cls.TASK
    if opts['image_size'] not in IMAGE_SIZES:
      raise ValueError(f'task {task!r}: option image_size={opts["image_size"]!r} must be '
                       f'one of {list(IMAGE_SIZES)}')
    base.check_int(task, opts, 'path_length', 1, 64)
    base.check_int(task, opts, 'num_distractors', 0, 64)
    base.check_float(task, opts, 'max_turn', 0.0, 90.0)
    base.check_float(task, opts, 'segment_length', 1.0, 16.0)
    base.check_float(task, opts, 'dash_fraction', 0.1, 1.0)
    base.check_float(task, opts, 'margin', 0.5, 8.0)
    base.check_float(task, opts, 'marker_radius', 0.5, 8.0)

  @classmethod
  def make_spec(cls, opts):
    return TaskSpec(name=cls.TASK, kind='classification', vocab_size=0, input_features=1,
                    num_classes=2, max_len=opts['image_size'] ** 2, metrics=('accuracy',),
                    eval_metric='accuracy', eval_metric_larger_is_better=True,
                    order_sensitive=True)

  @classmethod
  def reader(cls, dtypes):
    del dtypes
    return _FloatPixels()

  def features(self):
    return tfds.features.FeaturesDict({
        'inputs': tfds.features.Tensor(shape=(self.opts['image_size'] ** 2,),
                                       dtype=np.uint8),
        'label': tfds.features.Tensor(shape=(), dtype=np.int32),
    })

  def generate(self, rng, n):
    images, labels = [], []
    for _ in range(n):
      scene = draw_scene(rng, self.opts)
      images.append(render(scene, self.opts).reshape(-1))
      labels.append(scene.label)
    return {'inputs': np.stack(images), 'label': np.asarray(labels, np.int32)}
