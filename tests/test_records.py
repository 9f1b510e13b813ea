"""Typed records read back from JSON keep loading across versions (core.records.known)."""

from dataclasses import dataclass

from edgeeff.core import records
from edgeeff.deploy.firmware import FirmwareCheck


@dataclass(frozen=True)
class _Row:
    name: str
    size: int | None = None


def test_known_keeps_declared_fields_only():
    assert records.known(_Row, {"name": "a", "size": 3, "later": True}) == {"name": "a", "size": 3}
    assert _Row(**records.known(_Row, {"name": "a"})) == _Row("a")  # an older file: default


def test_firmware_check_loads_a_newer_and_an_older_tune_json_entry():
    c = FirmwareCheck("cortex-m7", True, flash_bytes=915_000, ram_bytes=220_000,
                      flash_fits=True, ram_fits=True, runner="qemu", output_equal=True)
    assert FirmwareCheck.from_dict({**c.to_dict(), "cycles": 1}) == c
    old = {k: v for k, v in c.to_dict().items() if k != "report"}
    assert FirmwareCheck.from_dict(old) == c
