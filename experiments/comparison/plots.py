"""Figures for the report: labelled axes with units, log scales where growth is the point,
one message per figure."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use('Agg')  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


def lines(records: list[dict[str, Any]], *, x: str, y: str, group: str, path: str,
          title: str, xlabel: str, ylabel: str, loglog: bool = False) -> None:
  """One line per ``group`` value of ``y`` against ``x``."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for name in dict.fromkeys(r[group] for r in records):
    rows = sorted((r for r in records if r[group] == name and r.get(y) is not None),
                  key=lambda r: r[x])
    ax.plot([r[x] for r in rows], [r[y] for r in rows], marker='o', label=str(name))
  if loglog:
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
  ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def bars(labels: list[str], values: list[float], *, path: str, title: str, ylabel: str,
         log: bool = False) -> None:
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  ax.bar(labels, values, color='tab:blue')
  if log:
    ax.set_yscale('log')
  ax.set(title=title, ylabel=ylabel)
  ax.tick_params(axis='x', rotation=30)
  ax.grid(True, axis='y', alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
