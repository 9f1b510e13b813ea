import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeeff.core.arch import PHI_LIMITS, ModelSpec, block_suffix, expand, phi_spec
from edgeeff.core.cost import cost
from edgeeff.core.scaling import (
    ALPHA_DEPTH,
    BETA_WIDTH,
    GAMMA_RESOLUTION,
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
    # the constants the rule uses: alpha * beta^2 * gamma^2 ~= 2 (FLOPs about 2x per unit)
    assert 1.9 < ALPHA_DEPTH * BETA_WIDTH**2 * GAMMA_RESOLUTION**2 < 2.0
    for phi in (-4.0, -0.5, 2.0, 6.25):
        a, b = coefficients_for_phi(phi), coefficients_for_phi(phi + 1)
        assert math.isclose(b.depth / a.depth, ALPHA_DEPTH)
        assert math.isclose(b.width / a.width, BETA_WIDTH)
        assert abs(b.resolution - a.resolution * GAMMA_RESOLUTION) <= 8  # rounded to 8 px


@pytest.mark.parametrize("family", ["efficientnet", "lite"])
def test_real_models_double_their_macs_per_unit_of_phi(family):
    """What the rule is for, measured on the rounded architectures the cost model walks: each
    +1 of phi multiplies the multiply-adds by about 2 (rounding moves single steps around)."""
    macs = [cost(phi_spec(p, family)).macs for p in range(0, 9)]
    steps = [b / a for a, b in zip(macs, macs[1:])]
    assert all(1.3 < r < 2.5 for r in steps), steps
    assert 1.8 < (macs[-1] / macs[0]) ** (1 / 8) < 2.05


def test_block_suffixes_continue_past_z():
    assert [block_suffix(j) for j in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "a", "b", "z", "aa", "ab", "az", "ba", "zz", "aaa"]
    with pytest.raises(ValueError):
        block_suffix(-1)


@pytest.mark.parametrize("phi", [PHI_LIMITS[0], -10.0, 0.0, 8.0, 11.0, PHI_LIMITS[1]])
@pytest.mark.parametrize("family", ["efficientnet", "lite"])
def test_every_accepted_phi_expands_with_unique_block_names(phi, family):
    arch = expand(phi_spec(phi, family))
    names = [b.name for b in arch.blocks]
    assert len(set(names)) == len(names) == sum(arch.stages)
    for stage, n in enumerate(arch.stages, 1):
        assert [b.name for b in arch.blocks if b.stage == stage] == [
            f"block{stage}{block_suffix(j)}" for j in range(n)]
    assert cost(phi_spec(phi, family)).macs > 0


def test_phi_eleven_has_stages_of_more_than_26_blocks():
    arch = expand(phi_spec(11.0, "efficientnet"))
    assert max(arch.stages) > 26
    assert "block6aa" in {b.name for b in arch.blocks}


@pytest.mark.parametrize("phi", [1e6, -1e6, 12.001, -12.5, math.nan, math.inf, -math.inf])
def test_phi_outside_the_limits_is_a_clear_value_error(phi):
    with pytest.raises(ValueError, match="phi"):
        phi_spec(phi)


@pytest.mark.parametrize("field,value", [
    ("width", math.nan), ("width", 100.0), ("depth", math.inf), ("depth", 1e300),
    ("resolution", 10**6), ("num_classes", 10**9), ("dropout", 1.5), ("dropout", math.nan),
    ("phi", math.nan),
])
def test_spec_values_outside_their_ranges_are_refused(field, value):
    d = phi_spec(0.0, "lite").to_dict()
    d[field] = value
    with pytest.raises(ValueError, match=field):
        ModelSpec.from_dict(d)


def test_spec_with_a_huge_integer_is_a_value_error():
    d = phi_spec(0.0, "lite").to_dict()
    d["depth"] = -(10**400)
    with pytest.raises(ValueError, match="bad value in spec"):
        ModelSpec.from_dict(d)


def test_presets_are_the_published_table():
    def wdr(name):
        c = PRESETS[name][1]
        return (c.width, c.depth, c.resolution)

    assert wdr("b3") == (1.2, 1.4, 300)
    assert wdr("b7") == (2.0, 3.1, 600)
    assert wdr("lite4") == (1.4, 1.8, 300)
    assert {k for k, (fam, _) in PRESETS.items() if fam == "lite"} == {
        "lite0", "lite1", "lite2", "lite3", "lite4"}
