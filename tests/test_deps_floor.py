"""The CLI's error paths with the oldest click and rich that pyproject allows (what Debian
bookworm ships: click 8.1.3, rich 13): every error is one line on stderr and exit code 2,
help exits 0, never a traceback.

The venv is built once and cached under ``~/.cache/edgeeff/`` (keyed by the pins and this
checkout's path), with this tree on its path (a ``.pth`` file, as an editable install without
dependencies has), so it runs this tree's code against the pinned libraries.
Skipped when pip cannot fetch the pins (offline).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the floors in pyproject's [project] dependencies, and the other base dependencies
FLOOR = ("click==8.1.3", "rich==13.0.0")
BASE = ("numpy", "tflite>=2.18", "flatbuffers>=23.5")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeeff"


def _pip(py: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True, timeout=timeout)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


@pytest.fixture(scope="module")
def floor_venv() -> Path:
    """The cached venv's bin folder (built on first use)."""
    key = hashlib.sha256("\n".join((*FLOOR, *BASE, str(ROOT), sys.version)).encode()
                         ).hexdigest()[:12]
    env_dir = CACHE / f"deps-floor-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"deps-floor-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it
        py = env_dir / "bin" / "python"
        done = env_dir / "edgeeff-ready"
        if not done.is_file():
            venv.create(env_dir, clear=True, with_pip=True)
            r = _pip(py, "install", *FLOOR, *BASE)
            if r.returncode != 0:
                pytest.skip(f"pip cannot fetch {' '.join(FLOOR + BASE)}: "
                            f"{_last_line(r.stderr or r.stdout)}")
            # this tree on the venv's path: what 'pip install --no-deps -e' gives, without
            # building the project (setuptools from the network, egg-info in the tree)
            site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig."
                                   "get_paths()['purelib'])"], capture_output=True, text=True,
                                  timeout=60, check=True).stdout.strip()
            (Path(site) / "edgeeff-tree.pth").write_text(f"{ROOT}\n")
            done.write_text("ok\n")
    r = subprocess.run([str(py), "-c", "import click, importlib.metadata as m, edgeeff; "
                        "print(m.version('click'), m.version('rich'), edgeeff.__file__)"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    click_v, rich_v, where = r.stdout.split()
    assert (click_v, rich_v) == ("8.1.3", "13.0.0")
    assert Path(where).resolve().is_relative_to(ROOT), where  # this tree's code
    return env_dir / "bin"


def _run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / "python"), "-m", "edgeeff.cli", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "100"}, cwd=bin_dir)


@pytest.mark.parametrize("args, says", [
    (("fit", "--device", "nosuchboard"), "nosuchboard"),
    (("fit", "--device", "pi4", "--no-such-flag"), "--no-such-flag"),
    (("fit",), "--device"),
    (("fit", "--device", "pi4", "--max-ram", "banana"), "--max-ram"),
    (("profile", "--threads", "0"), "--threads"),
    (("nosuchcommand",), "nosuchcommand"),
])
def test_errors_are_one_line_and_exit_2(floor_venv, args, says):
    r = _run(floor_venv, *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeeff: error:") and says in lines[0], lines


@pytest.mark.parametrize("args", [(), ("--help",), ("fit", "--help")])
def test_help_exits_0(floor_venv, args):
    r = _run(floor_venv, *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage:") and r.stderr == ""


def test_tables_print_with_rich_13(floor_venv):
    """A command that draws a rich table (rich 13's API, not only the error path)."""
    r = _run(floor_venv, "devices")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "pi4" in r.stdout and r.stderr == ""


def test_pins_are_pyprojects_floors():
    """The versions this module tests are pyproject's floors (click 8.1.3: Debian bookworm's
    8.1, the oldest click 8.1 anyone ships)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {d.split(">=")[0]: d.split(">=")[1] for d in deps if ">=" in d}
    for pin in FLOOR:
        name, ver = pin.split("==")
        assert ver.startswith(floors[name] + "."), (pin, floors)
