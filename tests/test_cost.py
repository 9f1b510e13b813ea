"""Golden figures: the analytic cost model must reproduce Keras' own counts exactly."""

import pytest

from edgeeff.core.arch import expand, phi_spec, preset_spec
from edgeeff.core.cost import cost, live_bytes, stage_table
from edgeeff.core.graph import graph

# trainable parameters of keras.applications.EfficientNetB0..B7 and TF's EfficientNet-Lite0 test
GOLDEN_PARAMS = {
    "b0": 5_288_548, "b1": 7_794_184, "b2": 9_109_994, "b3": 12_233_232, "b4": 19_341_616,
    "b5": 30_389_784, "b6": 43_040_704, "b7": 66_347_960, "lite0": 4_652_008,
}
# conv + depthwise + dense multiply-adds counted on the Keras graphs, in millions
GOLDEN_MMACS = {
    "b0": 385.8, "b1": 686.8, "b2": 993.6, "b3": 1827.1, "b4": 4393.8, "b5": 10266.4,
    "b6": 19067.6, "b7": 37745.9,
}


@pytest.mark.parametrize("preset", sorted(GOLDEN_PARAMS))
def test_params_golden(preset):
    assert cost(preset_spec(preset)).params == GOLDEN_PARAMS[preset]


@pytest.mark.parametrize("preset", sorted(GOLDEN_MMACS))
def test_macs_golden(preset):
    assert round(cost(preset_spec(preset)).macs / 1e6, 1) == GOLDEN_MMACS[preset]


def test_num_classes_changes_only_the_head():
    a, b = cost(preset_spec("b0")), cost(preset_spec("b0", num_classes=10))
    assert a.params - b.params == 1280 * 990 + 990
    assert a.macs - b.macs == 1280 * 990


def test_lite_keeps_stem_head_and_end_stages_fixed():
    lite4, b4 = expand(preset_spec("lite4")), expand(preset_spec("b4"))
    assert lite4.stem_filters == 32 and lite4.top_filters == 1280
    assert b4.stem_filters == 48 and b4.top_filters == 1792
    assert lite4.stages[0] == 1 and lite4.stages[-1] == 1
    assert b4.stages[0] == 2 and b4.stages[-1] == 2
    assert all(blk.se_filters == 0 for blk in lite4.blocks)
    assert all(blk.se_filters > 0 for blk in b4.blocks)


def test_block_names_follow_keras_applications():
    names = [b.name for b in expand(preset_spec("b0")).blocks]
    assert names[:4] == ["block1a", "block2a", "block2b", "block3a"]
    assert names[-1] == "block7a" and len(names) == 16


def test_peak_ram_counts_skip_connections():
    spec = preset_spec("lite0")
    g = graph(spec)
    live = live_bytes(g)
    # during block2b's depthwise conv, its input (56x56x24) is still alive for the residual add
    i = next(k for k, op in enumerate(g.ops) if op.name == "block2b_dwconv")
    expanded, dw_out, skip = 56 * 56 * 144, 56 * 56 * 144, 56 * 56 * 24
    assert live[i] == expanded + dw_out + skip
    c = cost(spec)
    # lite0's peak: block2a's expanded 112x112x96 tensor feeding its stride-2 depthwise conv
    assert c.peak_ram_bytes == 112 * 112 * 96 + 56 * 56 * 96
    assert c.peak_ram_op == "block2a_dwconv"


def test_swish_costs_ram_relu6_does_not():
    # swish lowers to LOGISTIC + MUL, so three expanded tensors are alive at block2a's MUL
    b0 = cost(preset_spec("b0"))
    assert b0.peak_ram_bytes == 3 * 112 * 112 * 96
    assert b0.peak_ram_op == "block2a_expand_activation"


def test_costs_grow_with_phi():
    prev = None
    for phi in (-6, -3, -1, 0, 1, 3):
        c = cost(phi_spec(phi, "lite"))
        if prev:
            assert c.macs > prev.macs and c.params >= prev.params
            assert c.peak_ram_bytes >= prev.peak_ram_bytes and c.flash_bytes >= prev.flash_bytes
        prev = c


def test_stage_table_sums_to_total():
    spec = preset_spec("b1")
    rows = stage_table(spec)
    assert [r["stage"] for r in rows] == ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head"]
    assert sum(r["macs"] for r in rows) == cost(spec).macs
    assert sum(r["params"] for r in rows) == cost(spec).params


def test_io_form_rule_lives_in_the_graph():
    from edgeeff.core.graph import input_ops, output_ops

    assert input_ops("uint8", "cpu") == ("DEQUANTIZE", "QUANTIZE")
    assert input_ops("uint8", "converter") == ("QUANTIZE",)
    assert input_ops("int8", "cpu") == input_ops("int8", "converter") == ()
    assert output_ops("uint8") == ("QUANTIZE",) and output_ops("int8") == ()
    spec = preset_spec("lite0")
    for io, form in (("uint8", "cpu"), ("uint8", "converter"), ("int8", "cpu")):
        g = graph(spec, io, form)
        ends = input_ops(io, form)
        assert [op.kind for op in g.ops[:len(ends)]] == list(ends)
        assert all(op.role == "io" for op in g.ops[:len(ends)])
        assert g.tensors[g.inputs[0]].dtype == io and g.tensors[g.outputs[0]].dtype == io
    # the float32 tensor of the CPU form is what makes its input side 4x larger
    assert graph(spec, "uint8", "cpu").tensors[1].dtype == "float32"


def test_ops_carry_their_attributes():
    g = graph(preset_spec("b0"))
    by_name = {op.name: op for op in g.ops}
    stem = by_name["stem_conv"]
    assert (stem.role, stem.kernel, stem.stride, stem.padding) == ("stem", 3, 2, "SAME")
    dw = by_name["block6a_dwconv"]
    assert (dw.role, dw.kernel, dw.stride) == ("depthwise", 5, 2)
    assert by_name["block2a_se_squeeze"].keep_dims and not by_name["avg_pool"].keep_dims
    assert {op.activation for op in g.ops} == {"NONE"}  # swish is LOGISTIC + MUL
    lite = graph(preset_spec("lite0"))
    fused = {op.role for op in lite.ops if op.activation == "RELU6"}
    assert fused == {"stem", "expand", "depthwise", "head"}  # never the projection
    # costs are sums over the graph's ops
    assert cost(preset_spec("b0")).macs == sum(op.macs for op in g.ops)
    assert cost(preset_spec("b0")).params == sum(op.params for op in g.ops)
