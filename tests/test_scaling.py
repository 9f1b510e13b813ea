import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeeff.core.scaling import (
    PRESETS,
    coefficients_for_phi,
    round_filters,
    round_repeats,
    round_resolution,
)


@pytest.mark.parametrize("filters,width,expected", [
    (32, 1.0, 32), (32, 1.1, 32), (32, 1.2, 40), (1280, 1.1, 1408), (1280, 2.0, 2560),
    (16, 1.4, 24), (24, 1.4, 32), (40, 1.8, 72), (320, 1.6, 512), (16, 0.5, 8),
    (24, 0.386, 16),  # 9.3 rounds to 8, which would drop >10 %, so it becomes 16
    (3, 0.1, 8),  # never below the divisor
])
def test_round_filters_known_values(filters, width, expected):
    assert round_filters(filters, width) == expected


@pytest.mark.parametrize("repeats,depth,expected", [
    (1, 1.0, 1), (2, 1.1, 3), (3, 1.4, 5), (4, 3.1, 13), (4, 0.5, 2), (1, 0.1, 1),
])
def test_round_repeats_known_values(repeats, depth, expected):
    assert round_repeats(repeats, depth) == expected


@given(st.integers(1, 2048), st.floats(0.05, 4.0))
def test_round_filters_is_multiple_of_8_and_within_10_percent(filters, width):
    f = round_filters(filters, width)
    assert f % 8 == 0 and f >= 8
    assert f >= 0.9 * filters * width


@given(st.integers(1, 512), st.floats(0.05, 4.0), st.floats(0.05, 4.0))
def test_round_filters_monotone_in_width(filters, w1, w2):
    lo, hi = sorted((w1, w2))
    assert round_filters(filters, lo) <= round_filters(filters, hi)


def test_rounding_rejects_nonsense():
    with pytest.raises(ValueError):
        round_filters(0, 1.0)
    with pytest.raises(ValueError):
        round_repeats(2, -1.0)
    with pytest.raises(ValueError):
        round_resolution(-5)


def test_phi_zero_is_b0_and_compound_rule():
    c = coefficients_for_phi(0)
    assert (c.width, c.depth, c.resolution) == (1.0, 1.0, 224)
    c1 = coefficients_for_phi(1)
    assert math.isclose(c1.depth, 1.2) and math.isclose(c1.width, 1.1)
    assert c1.resolution == 256  # 224 * 1.15 = 257.6 -> nearest multiple of 8
    cneg = coefficients_for_phi(-3)
    assert cneg.width < 1 and cneg.depth < 1 and cneg.resolution % 8 == 0
    # alpha * beta^2 * gamma^2 ~= 2: FLOPs grow about 2x per unit of phi
    assert 1.9 < 1.2 * 1.1**2 * 1.15**2 < 2.0


def test_presets_are_the_published_table():
    def wdr(name):
        c = PRESETS[name][1]
        return (c.width, c.depth, c.resolution)

    assert wdr("b3") == (1.2, 1.4, 300)
    assert wdr("b7") == (2.0, 3.1, 600)
    assert wdr("lite4") == (1.4, 1.8, 300)
    assert {k for k, (fam, _) in PRESETS.items() if fam == "lite"} == {
        "lite0", "lite1", "lite2", "lite3", "lite4"}
