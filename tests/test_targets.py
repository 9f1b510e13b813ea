import pytest

from edgeeff.core import targets
from edgeeff.core.data import data_dir
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.units import parse_size

REQUIRED_DEVICES = {"pi4", "pi5", "pi-zero-2w", "coral-usb", "coral-devboard", "android-midrange",
                    "esp32-s3", "stm32h743", "nrf52840", "rp2040", "stm32f746"}

GOOD = """
name = "My board"
kind = "mcu"
ram = "256KB"
flash = "1MB"
int8_macs_per_s = 1e8
family = "lite"
formats = ["tflm"]
[sources]
ram = "datasheet"
flash = "datasheet"
throughput = "measured"
"""


def test_all_bundled_profiles_load_with_sources():
    devs = {d.key: d for d in targets.load_all()}
    assert REQUIRED_DEVICES <= set(devs)
    for d in devs.values():
        assert d.ram_bytes > 0 and d.flash_bytes > 0 and d.int8_macs_per_s > 0
        runtime = {"runtime"} if d.kind == "mcu" else set()
        need = {"ram", "flash", "throughput", "latency_budget"} | runtime
        assert need <= set(d.sources) <= need | {"latency"}  # phones cite their latency table
    for mcu in ("esp32-s3", "stm32h743", "nrf52840", "rp2040", "stm32f746"):
        assert devs[mcu].family == "lite" and "tflm" in devs[mcu].formats
    assert "edgetpu" in devs["coral-usb"].formats
    assert devs["stm32f746"].ram_bytes == 320 * 1024


def test_user_profile_by_path(tmp_path):
    p = tmp_path / "board.toml"
    p.write_text(GOOD)
    d = targets.load(str(p))
    assert d.key == "board" and d.ram_bytes == 256 * 1024 and d.flash_bytes == 1024**2


@pytest.mark.parametrize("edit,key", [
    (lambda s: s.replace('ram = "256KB"\n', ""), "ram"),
    (lambda s: 'bogus = 1\n' + s, "bogus"),
    (lambda s: s + 'extra = "x"\n', "sources.extra"),
    (lambda s: s.replace('"256KB"', '"12XB"'), "ram"),
    (lambda s: s.replace('"lite"', '"mobilenet"'), "family"),
    (lambda s: s.replace('["tflm"]', '["onnx"]'), "formats"),
    (lambda s: s.replace('throughput = "measured"', ""), "sources.throughput"),
    (lambda s: s.replace("1e8", "-1"), "int8_macs_per_s"),
])
def test_bad_profile_names_file_and_key(tmp_path, edit, key):
    p = tmp_path / "bad.toml"
    p.write_text(edit(GOOD))
    with pytest.raises(EdgeeffError) as e:
        targets.load(str(p))
    assert str(p) in str(e.value) and f"'{key}'" in str(e.value)


def test_unknown_device_lists_known_ones():
    with pytest.raises(EdgeeffError, match="pi4"):
        targets.load("toaster")


@pytest.mark.parametrize("text,expected", [
    ("320KB", 320 * 1024), ("1MB", 1024**2), ("1.5 MiB", int(1.5 * 1024**2)), ("4096", 4096),
    ("2GB", 2 * 1024**3), (512, 512),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["12XB", "abc", "-5KB", "", "1..2MB"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


LATENCY = """
[latency]
form = "per-op-linear"
version = 1
threads = 2
runtime = "ai_edge_litert"
runtime_version = "2.3.0"
cpu = "Cortex-A72, 4 cores, aarch64"
us_per_graph = 30.0
[latency.validation]
within_10pct = 0.95
[latency.ops.CONV_2D_1x1]
ns_per_mac = 0.1
us_per_op = 5.0
[latency.ops.DEPTHWISE_CONV_2D_3x3]
ns_per_act_byte = 0.5
"""


def test_profile_with_a_latency_table(tmp_path):
    from edgeeff.core.arch import preset_spec
    from edgeeff.core.graph import graph

    p = tmp_path / "measured.toml"
    p.write_text(GOOD.replace('throughput = "measured"',
                              'throughput = "measured"\nlatency = "edgeeff profile"') + LATENCY)
    d = targets.load(str(p))
    m = d.latency_model
    assert m.threads == 2 and m.graph_s == pytest.approx(30e-6)
    assert m.coefficients["CONV_2D_1x1"] == {"macs": pytest.approx(1e-10),
                                             "fixed": pytest.approx(5e-6)}
    spec = preset_spec("lite0")
    g = graph(spec)
    macs = sum(op.macs for op in g.ops if op.kind == "CONV_2D" and op.weights // (
        g.shape(op.inputs[0])[2] * g.shape(op.output)[2]) == 1)
    n = sum(1 for i in range(len(g.ops)) if latency_type(g, i) == "CONV_2D_1x1")
    act = sum(g.tensors[op.inputs[0]].nbytes + g.tensors[op.output].nbytes
              for op in g.ops if op.kind == "DEPTHWISE_CONV_2D" and op.weights == 9 * g.shape(
                  op.inputs[0])[2])
    expect = 1000 * (30e-6 + 1e-10 * macs + 5e-6 * n + 0.5e-9 * act)
    assert d.latency_ms(spec) == pytest.approx(expect)
    assert d.latency_ms(g.ops[0].macs) == 1000 * g.ops[0].macs / d.int8_macs_per_s  # MACs: flat
    assert d.to_dict()["latency"]["threads"] == 2


def latency_type(g, i):
    from edgeeff.core.latency import op_type

    return op_type(g, i)


@pytest.mark.parametrize("edit,key", [
    (lambda s: s.replace('form = "per-op-linear"', 'form = "forest"'), "latency.form"),
    (lambda s: s.replace("version = 1", "version = 9"), "latency.version"),
    (lambda s: s.replace("threads = 2", "threads = 0"), "latency.threads"),
    (lambda s: s.replace("us_per_graph = 30.0", "us_per_graph = -1"), "latency.us_per_graph"),
    (lambda s: s.replace("[latency.ops.CONV_2D_1x1]", "[latency.ops.CONV_3D]"),
     "latency.ops.CONV_3D"),
    (lambda s: s.replace("ns_per_mac = 0.1", "ns_per_flop = 0.1"),
     "latency.ops.CONV_2D_1x1.ns_per_flop"),
    (lambda s: s.replace("ns_per_mac = 0.1", "ns_per_mac = -0.1"),
     "latency.ops.CONV_2D_1x1.ns_per_mac"),
    (lambda s: s.replace('cpu = "Cortex', 'colour = "red"\ncpu = "Cortex'), "latency.colour"),
])
def test_bad_latency_table_names_file_and_key(tmp_path, edit, key):
    p = tmp_path / "bad.toml"
    p.write_text(GOOD + edit(LATENCY))
    with pytest.raises(EdgeeffError) as e:
        targets.load(str(p))
    assert str(p) in str(e.value) and f"'{key}'" in str(e.value)


def test_dumps_writes_toml_that_parses_back():
    tomllib = targets.tomllib
    data = {"name": 'a "quoted"\nname', "n": 3, "x": 1e-05, "y": 2.0, "flag": True,
            "list": ["tflite", "tflm"], "t": {"a": 1, "deep": {"b": "c"}}}
    assert tomllib.loads(targets.dumps(data)) == data


RESERVE = 'runtime_flash = "136KB"\nruntime_ram = "4KB"\n'
RESERVE_SOURCE = 'runtime = "measured from the ELF"\n'


def with_reserve(reserve=RESERVE, source=RESERVE_SOURCE):
    head, _, tail = GOOD.partition("[sources]\n")
    return head + reserve + "[sources]\n" + tail + source


def test_runtime_reserve_parses_and_every_mcu_profile_has_one():
    d = targets.parse_profile(with_reserve(), "board", "board.toml")
    assert (d.runtime_flash_bytes, d.runtime_ram_bytes) == (136 * 1024, 4 * 1024)
    assert d.to_dict()["runtime_flash_bytes"] == 136 * 1024
    for d in targets.load_all():
        has = d.runtime_flash_bytes > 0 and d.runtime_ram_bytes > 0
        assert has == (d.kind == "mcu"), d.key


@pytest.mark.parametrize("text,key", [
    (with_reserve(RESERVE.replace('"136KB"', '"-4KB"')), "runtime_flash"),
    (with_reserve(RESERVE.replace('"4KB"', '"lots"')), "runtime_ram"),
    (with_reserve(RESERVE.replace('"136KB"', '"1MB"')), "runtime_flash"),  # all of the flash
    (with_reserve(source=""), "sources.runtime"),
])
def test_bad_runtime_reserve_exits_2_naming_the_key(tmp_path, text, key):
    from tests.conftest import run_cli

    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(EdgeeffError) as e:
        targets.load(str(p))
    assert str(p) in str(e.value) and f"'{key}'" in str(e.value)
    if key == "runtime_flash" and "-4KB" in text:  # and the CLI: one line, exit 2
        r = run_cli("fit", "--device", str(p), "--out", str(tmp_path / "s.json"))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "runtime_flash" in r.stderr and not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("key,classes", [("nrf52840", 10), ("stm32f746", 1000),
                                         ("stm32h743", 1000)])
def test_fit_takes_the_runtime_reserve_out_of_flash_and_ram(key, classes):
    from dataclasses import replace

    from edgeeff.core.budget import Budgets
    from edgeeff.core.fit import fit

    # the memory budgets alone (the nRF52840's pick is latency-bound since its latency is
    # counted instructions, issue 35)
    dev = replace(targets.load(key), max_latency_ms=None)
    b = Budgets.for_device(dev)
    assert b.max_flash_bytes == dev.flash_bytes - dev.runtime_flash_bytes
    assert b.max_ram_bytes == dev.ram_bytes - dev.runtime_ram_bytes
    res = fit(dev, b, num_classes=classes)
    ch = res.chosen
    assert ch.cost.flash_bytes + dev.runtime_flash_bytes <= dev.flash_bytes
    assert ch.ram_bytes + dev.runtime_ram_bytes <= dev.ram_bytes
    s = res.summary()
    assert s["runtime_flash_bytes"] == dev.runtime_flash_bytes and "runtime" in s["budget_basis"]
    # without the reserve the pick (flash-bound on these boards) would leave no room for it
    bare = replace(dev, runtime_flash_bytes=0, runtime_ram_bytes=0)
    res0 = fit(bare, Budgets.for_device(bare), num_classes=classes)
    assert res0.chosen.spec != ch.spec
    assert res0.chosen.cost.flash_bytes + dev.runtime_flash_bytes > dev.flash_bytes


def test_max_flash_below_the_runtime_reserve_is_bad_input():
    from edgeeff.core.budget import Budgets

    dev = targets.load("nrf52840")
    with pytest.raises(EdgeeffError, match="runtime takes 136.0 KB"):
        Budgets.for_device(dev, max_flash=100 * 1024)


def test_every_microcontroller_names_the_firmware_build_it_runs(tmp_path):
    """`edgeeff firmware --device D` builds for D's core without --target: each MCU profile's
    firmware_target is one of the builds firmware.py knows, and a bad one is refused."""
    from edgeeff.deploy import firmware as fw

    assert sorted(fw.TARGETS) == sorted(targets.FIRMWARE_TARGETS)
    for dev in targets.load_all():
        if dev.kind == "mcu":
            assert dev.firmware_target in fw.TARGETS and dev.firmware_target != "host", dev.key
        else:
            assert dev.firmware_target is None, dev.key
    text = (data_dir("targets") / "nrf52840.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('firmware_target = "cortex-m4"', 'firmware_target = "cortex-a72"'))
    with pytest.raises(EdgeeffError, match="firmware_target"):
        targets.load(str(bad))


def test_the_bundle_camera_is_a_typed_profile_field_not_a_name_prefix(tmp_path):
    """The Raspberry Pis say picamera; a Pixel (whose key also starts with "pi") does not, and
    `bundle` refuses a phone instead of writing a Pi camera script for it."""
    from click.testing import CliRunner

    from edgeeff.cli import main

    pis = ("pi4", "pi5", "pi-zero-2w")
    assert {k: targets.load(k).camera for k in pis} == dict.fromkeys(pis, "picamera")
    assert targets.load("pixel4-cpu").camera == targets.load("coral-devboard").camera == "0"
    bad = tmp_path / "bad.toml"
    text = (data_dir("targets") / "pi4.toml").read_text()
    bad.write_text(text.replace('camera = "picamera"', 'camera = "usb"'))
    with pytest.raises(EdgeeffError, match="camera"):
        targets.load(str(bad))
    (tmp_path / "export").mkdir()
    r = CliRunner().invoke(main, ["bundle", str(tmp_path / "export"), "--target", "pixel4-cpu"])
    assert r.exit_code == 2 and "is a phone" in r.output, r.output
