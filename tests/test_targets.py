import pytest

from edgeeff.core import targets
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
        assert set(d.sources) == {"ram", "flash", "throughput"}
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
