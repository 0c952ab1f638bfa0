"""Figures for the report: labelled axes with units, log scales where growth is the point,
one message per figure."""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use('Agg')  # files only; no display on servers and CI
import matplotlib.patches  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt
import matplotlib.ticker  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top


def lines(records: list[dict[str, Any]], *, x: str, y: str, group: str, path: str,
          title: str, xlabel: str, ylabel: str, loglog: bool = False,
          logx: bool = False, logy: bool = False) -> None:
  """One line per ``group`` value of ``y`` against ``x``. ``loglog``: base-2 ``x`` (sequence
  lengths) and log ``y``; ``logx``/``logy``: base-10 log on one axis (e.g. parameters)."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for name in dict.fromkeys(r[group] for r in records):
    rows = sorted((r for r in records if r[group] == name and r.get(y) is not None),
                  key=lambda r: r[x])
    ax.plot([r[x] for r in rows], [r[y] for r in rows], marker='o', label=str(name))
  if loglog:
    ax.set_xscale('log', base=2)
  elif logx:
    ax.set_xscale('log')
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded labels
  if loglog or logy:
    ax.set_yscale('log')
  ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def spread_lines(series: dict[str, dict[Any, list[float]]], *, path: str, title: str,
                 xlabel: str, ylabel: str, logx: bool = False,
                 reference: float | None = None, reference_label: str = '',
                 ylim: tuple[float, float] | None = None) -> None:
  """One line per ``series`` name through the mean over seeds at each x, with a band
  from the min to the max seed: ``series[name][x] = [value per seed]``."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for name, by_x in series.items():
    xs = sorted(by_x)
    values = [np.asarray([v for v in by_x[x] if v is not None], float) for x in xs]
    keep = [i for i, v in enumerate(values) if v.size]
    xs = [xs[i] for i in keep]
    values = [values[i] for i in keep]
    if not xs:
      continue
    line, = ax.plot(xs, [v.mean() for v in values], marker='o', label=name)
    ax.fill_between(xs, [v.min() for v in values], [v.max() for v in values],
                    color=line.get_color(), alpha=0.2, linewidth=0)
  if logx:
    ax.set_xscale('log', base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  if reference is not None:
    ax.axhline(reference, color='gray', linestyle='--', linewidth=1, label=reference_label)
  if ylim is not None:
    ax.set_ylim(*ylim)
  ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def curves_by_step(curves: dict[Any, list[tuple[int, float]]],
                   budget: int) -> dict[int, list[float]]:
  """``{step: [value per seed]}`` from each seed's ``[(step, value)]`` curve. A seed that
  stopped early (it reached its criterion) keeps its last value up to ``budget``, so the
  band shows a solved run as solved rather than as missing."""
  steps = sorted({s for curve in curves.values() for s, _ in curve} | {budget})
  out = {}
  for step in steps:
    values = []
    for curve in curves.values():
      seen = [v for s, v in curve if s <= step]
      if seen:
        values.append(seen[-1])
    out[step] = values
  return out


def bars(labels: list[str], values: list[float], *, path: str, title: str, ylabel: str,
         log: bool = False, colors: list[str] | None = None,
         reference: float | None = None, reference_label: str = '',
         ylim: tuple[float, float] | None = None,
         errors: list[tuple[float, float]] | None = None) -> None:
  """One bar per label; ``colors`` per bar (default blue), optional dashed ``reference``
  line (e.g. chance level) and ``errors`` (below, above) per bar, e.g. the distance from
  the mean to the min and max over seeds."""
  fig, ax = plt.subplots(figsize=(7.2, 4.4))
  yerr = np.asarray(errors, float).T if errors else None
  ax.bar(labels, values, color=colors or 'tab:blue', yerr=yerr, capsize=3 if errors else 0)
  if log:
    ax.set_yscale('log')
  if reference is not None:
    ax.axhline(reference, color='k', linestyle='--', linewidth=1, label=reference_label)
    ax.legend(fontsize=8)
  ax.set(title=title, ylabel=ylabel)
  if ylim is not None:
    ax.set_ylim(*ylim)
  plt.setp(ax.get_xticklabels(), rotation=30, ha='right', fontsize=7)
  ax.grid(True, axis='y', alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def grouped_bars(labels: list[str], series: dict[str, list[float]], *, path: str,
                 title: str, ylabel: str, reference: float | None = None,
                 reference_label: str = '') -> None:
  """One group of bars per label, one bar per ``series`` entry; optional dashed line."""
  fig, ax = plt.subplots(figsize=(max(6.4, 0.5 * len(labels) * len(series)), 4.2))
  width = 0.8 / max(len(series), 1)
  for i, (name, values) in enumerate(series.items()):
    ax.bar([x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))], values,
           width, label=name)
  if reference is not None:
    ax.axhline(reference, color='gray', linestyle='--', linewidth=1, label=reference_label)
  ax.set_xticks(range(len(labels)), labels)
  ax.set(title=title, ylabel=ylabel)
  ax.grid(True, axis='y', alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _tick(label: Any) -> str:
  # A space or a newline would leave a blank tick; show it as a visible symbol instead.
  return str(label).replace(' ', '\u2423').replace('\n', '\\n')


def heatmap(weights: Any, *, path: str, xlabel: str, ylabel: str, title: str = '',
            xticklabels: list[Any] | None = None, yticklabels: list[Any] | None = None,
            marks: list[tuple[int, int]] = (),
            colorbar_label: str = 'attention weight') -> None:
  """Heat map of a ``[rows, columns]`` matrix, e.g. attention ``[query, key]`` (rows are
  the positions that attend, columns the positions attended to, as in Bahdanau et al.
  2015, fig. 3). ``marks`` outlines ``(row, column)`` cells, e.g. the expected alignment.
  """
  weights = np.asarray(weights, np.float32)
  rows, cols = weights.shape
  fig, ax = plt.subplots(figsize=(min(max(4.0, 0.28 * cols + 2.2), 14.0),
                                  min(max(3.0, 0.28 * rows + 1.6), 12.0)))
  image = ax.imshow(weights, cmap='viridis', vmin=0.0, vmax=max(float(weights.max()), 1e-9),
                    aspect='auto')
  for row, col in marks:
    ax.add_patch(matplotlib.patches.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False,
                                              edgecolor='red', linewidth=1.2))
  small = 7 if max(rows, cols) > 20 else 9
  if xticklabels is not None:
    ax.set_xticks(range(cols), [_tick(s) for s in xticklabels], rotation=90, fontsize=small)
  if yticklabels is not None:
    ax.set_yticks(range(rows), [_tick(s) for s in yticklabels], fontsize=small)
  ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
  fig.colorbar(image, ax=ax, label=colorbar_label, fraction=0.046, pad=0.04)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
