"""Implementation switches: one mechanism for every computation seqjax can run two ways.

Several layers compute the same mathematics by more than one implementation: a linear
recurrence as a sequential, associative or chunked scan; S4D as an FFT convolution or a
scan; Mamba's selective scan fused or materialised; attention exact or chunked; an LSTM/GRU
with a hand-written backward pass or by autodiff. Each such computation is a *site* with
one :class:`Switch` defined next to the code that implements it: the site's name, its
choices, and an ``auto`` rule that picks a choice for a platform (``jax.default_backend()``)
and a sequence length, from the measurements in BENCHMARKS.md. The choices of a site compute
the same function (each family's tests check that); only speed and memory differ.

Users choose through one string, ``impl`` — a ``ModelConfig`` field and an attribute of the
same name on every mixer layer — holding comma-separated ``site:choice`` pairs::

    impl='auto'                              # every site picks by its auto rule (default)
    impl='attention:chunked'                 # one site fixed, the others auto
    impl='s4d:scan,scan:associative'         # S4D by its recurrence, as a parallel scan

A site the string does not name is ``auto``. Every layer passes the whole string on and
reads only its own sites, so one string serves a whole model. ``python -m experiments.demo
--list`` prints every site, its choices and what ``auto`` picks on the machine at hand.

(The design follows recurrentgemma's ``ScanType`` enum with its ``AUTO`` member resolved per
platform, generalised from the RG-LRU scan to every switchable computation.)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import jax

AUTO = 'auto'


def parse_impl(impl: str) -> dict[str, str]:
  """``'a:x,b:y'`` -> ``{'a': 'x', 'b': 'y'}``; ``''`` and ``'auto'`` -> ``{}``.

  Raises:
    ValueError: a malformed pair or a site named twice (syntax only; choices are checked
      by :func:`check_impl`).
  """
  if not isinstance(impl, str):
    raise ValueError(f'impl={impl!r} must be a string of site:choice pairs, e.g. '
                     "'attention:chunked'")
  if impl.strip() in ('', AUTO):
    return {}
  out: dict[str, str] = {}
  for pair in impl.split(','):
    site, sep, choice = (part.strip() for part in pair.partition(':'))
    if not sep or not site or not choice:
      raise ValueError(f'impl={impl!r}: {pair.strip()!r} is not a site:choice pair, e.g. '
                       "'attention:chunked,scan:associative'")
    if site in out:
      raise ValueError(f'impl={impl!r} names site {site!r} twice')
    out[site] = choice
  return out


@dataclasses.dataclass(frozen=True)
class Switch:
  """One switchable computation.

  Attributes:
    site: the name used in ``impl`` strings (``'scan'``, ``'attention'`` ...).
    choices: the implementations, every one computing the same function.
    rule: ``(platform, time) -> choice``, what ``auto`` resolves to; ``platform`` is
      ``jax.default_backend()`` (``'cpu'``, ``'gpu'``, ``'tpu'``), ``time`` the sequence
      length (``None`` when not known, e.g. for ``--list``).
    doc: one line saying what the site computes and where its rule was measured.
  """

  site: str
  choices: tuple[str, ...]
  rule: Callable[[str, int | None], str]
  doc: str

  def choice(self, impl: str) -> str:
    """This site's entry of ``impl`` (``'auto'`` when not named), validated."""
    choice = parse_impl(impl).get(self.site, AUTO)
    if choice != AUTO and choice not in self.choices:
      raise ValueError(f'impl: {self.site}:{choice} is not valid; choose {self.site}:'
                       f'{" | ".join(self.choices + (AUTO,))}')
    return choice

  def resolve(self, impl: str, time: int | None = None,
              platform: str | None = None) -> str:
    """The concrete implementation for ``impl`` on ``platform`` (default: this process's
    backend) at sequence length ``time``."""
    choice = self.choice(impl)
    if choice == AUTO:
      choice = self.rule(platform or jax.default_backend(), time)
    return choice


def check_impl(impl: str, switches: Iterable[Switch]) -> None:
  """Raises one-line ``ValueError`` unless every site ``impl`` names is one of
  ``switches`` and every choice is valid for its site."""
  by_site = {s.site: s for s in switches}
  for site in parse_impl(impl):
    if site not in by_site:
      raise ValueError(f'impl={impl!r}: unknown site {site!r}; sites are '
                       f'{sorted(by_site)}')
    by_site[site].choice(impl)


def describe(switches: Iterable[Switch], lengths: tuple[int, ...] = (128, 4096),
             platform: str | None = None) -> list[dict[str, str]]:
  """One row per site: its choices, what ``auto`` resolves to at each of ``lengths`` on
  ``platform``, and its one-line doc (for ``experiments.demo --list``)."""
  platform = platform or jax.default_backend()
  rows = []
  for switch in sorted(set(switches), key=lambda s: s.site):
    auto = {t: switch.rule(platform, t) for t in lengths}
    rows.append({'site': switch.site, 'choices': ' | '.join(switch.choices),
                 'auto': ', '.join(f'T={t}: {c}' for t, c in auto.items())
                         if len(set(auto.values())) > 1 else next(iter(auto.values())),
                 'doc': switch.doc})
  return rows
