"""The implementation switch: parsing ``impl`` strings, validation, per-platform ``auto``."""

from __future__ import annotations

import pytest

from seqjax.models.families import FAMILIES, all_switches
from seqjax.ops.switch import Switch, check_impl, describe, parse_impl

# A site whose auto rule depends on the platform and the length, like the scan's.
TOY = Switch('toy', ('slow', 'fast', 'wide'),
             lambda platform, time: 'wide' if platform == 'tpu' else
             'fast' if time is not None and time > 100 else 'slow', 'a test site')
OTHER = Switch('other', ('a', 'b'), lambda platform, time: 'a', 'another test site')


def test_parse_and_resolve():
  assert parse_impl('auto') == parse_impl('') == {}
  assert parse_impl(' toy:fast , other:b ') == {'toy': 'fast', 'other': 'b'}
  # Named sites win; unnamed ones follow the rule for the platform and length.
  assert TOY.resolve('other:b,toy:slow', 1000, 'cpu') == 'slow'
  assert TOY.resolve('other:b', 1000, 'cpu') == 'fast'
  assert TOY.resolve('auto', 10, 'cpu') == 'slow'
  assert TOY.resolve('toy:auto', None, 'tpu') == 'wide'
  assert OTHER.resolve('toy:fast', 10) == 'a'


@pytest.mark.parametrize('impl, match', [
    ('toy', "'toy' is not a site:choice pair"),
    ('toy:fast,toy:slow', "names site 'toy' twice"),
    ('toy:quick', r'toy:quick is not valid; choose toy:slow \| fast \| wide \| auto'),
    ('attention:chunked', "unknown site 'attention'; sites are \\['other', 'toy'\\]"),
    (3, 'must be a string'),
])
def test_bad_impl_fails_in_one_line_naming_the_culprit(impl, match):
  with pytest.raises(ValueError, match=match):
    check_impl(impl, (TOY, OTHER))


def test_describe_lists_every_site_with_what_auto_picks():
  rows = {r['site']: r for r in describe((TOY, OTHER, TOY), lengths=(10, 1000),
                                         platform='cpu')}
  assert set(rows) == {'toy', 'other'}
  assert rows['toy']['auto'] == 'T=10: slow, T=1000: fast'
  assert rows['other']['auto'] == 'a' and rows['toy']['choices'] == 'slow | fast | wide'


def test_every_family_switch_has_a_valid_auto_on_every_platform():
  sites = [s.site for s in all_switches()]
  assert len(sites) == len(set(sites))
  assert {s for f in FAMILIES.values() for s in f.switches} == set(all_switches())
  for switch in all_switches():
    for platform in ('cpu', 'gpu', 'tpu'):
      for time in (None, 1, 4096):
        assert switch.rule(platform, time) in switch.choices
