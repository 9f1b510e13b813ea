"""``edgeeff bundle``: a self-contained folder (model + edgeeff's own wheel + run.sh) that installs
into a fresh venv and runs the demo.

The install test creates a plain venv (not --system-site-packages: nothing of this machine's
Python may leak in), points run.sh at it with EDGEEFF_VENV and lets run.sh install the bundled
wheel with its [runtime] extra. edgeeff comes only from the bundle; its dependencies come from
a local wheelhouse (PIP_NO_INDEX=1), filled once from pip's cache or the configured index and
kept in edgeeff's cache folder, so later runs work offline. It is skipped, saying so, when the
wheelhouse cannot be filled (offline, empty cache). About a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs, run_cli
from tests.tiny_export import tiny_export

needs("ai_edge_litert")
needs("cv2")

NETWORK_ERRORS = ("Could not fetch URL", "NewConnectionError", "Max retries exceeded",
                  "Temporary failure in name resolution", "Network is unreachable",
                  "No matching distribution found")


@pytest.fixture(scope="module")
def export_dir() -> Path:
    return tiny_export()


def test_dotted_out_name_archives_as_out_name_and_cli_prints_real_paths(export_dir, tmp_path):
    out = tmp_path / "model.v2-pi4-bundle"
    r = run_cli("bundle", str(export_dir), "--target", "pi4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    archive = tmp_path / "model.v2-pi4-bundle.tar.gz"
    assert archive.is_file() and not (tmp_path / "model.tar.gz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.name, out.name])
    assert f"wrote {out}/ and {archive}" in r.stdout
    wheels = list(out.glob("edgeeff-*.whl"))
    assert len(wheels) == 1 and "built from the source" in r.stdout
    with tarfile.open(archive) as t:
        names = t.getnames()
    assert f"{out.name}/run.sh" in names and f"{out.name}/{wheels[0].name}" in names
    run_sh = (out / "run.sh").read_text()
    assert "--threads" not in run_sh.split("exec", 1)[1]  # the demo picks them on the device
    assert run_sh.rstrip().endswith('"$@"') and "--system-site-packages" in run_sh
    assert f'WHEEL="$HERE/{wheels[0].name}"' in run_sh and '"$WHEEL[runtime]"' in run_sh
    # an archive left from before is not overwritten without --force: one line, exit 2
    (tmp_path / "other.tar.gz").write_text("keep")
    r = run_cli("bundle", str(export_dir), "--target", "pi4", "--out", str(tmp_path / "other"))
    assert r.returncode == 2 and "other.tar.gz" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "other.tar.gz").read_text() == "keep" and not (tmp_path / "other").exists()


def test_run_sh_on_32_bit_pi_os_asks_for_the_apt_packages_it_needs(export_dir, tmp_path):
    # An armv7l CPU cannot exist here: EDGEEFF_ARCH stands in for `uname -m` on 32-bit Pi OS.
    # The venv is a plain one without numpy/OpenCV, as on a Pi before the apt packages.
    out = tmp_path / "b"
    assert run_cli("bundle", str(export_dir), "--target", "pi-zero-2w", "--out", str(out)).returncode == 0
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {**os.environ, "EDGEEFF_VENV": str(venv), "EDGEEFF_ARCH": "armv7l"}
    r = subprocess.run(["sh", str(out / "run.sh"), "--headless"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(
        "sudo apt install -y python3-numpy python3-opencv python3-psutil python3-click python3-rich")
    assert "[runtime]" not in r.stderr  # never the PyPI route that would try to compile numpy


def test_bad_wheel_option_is_one_line(export_dir, tmp_path):
    bogus = tmp_path / "numpy-1.0-py3-none-any.whl"
    bogus.write_bytes(b"")
    r = run_cli("bundle", str(export_dir), "--target", "pi4", "--out", str(tmp_path / "b"),
                "--wheel", str(bogus))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "edgeeff-*.whl" in r.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.tar.gz").exists()


# --------------------------------------------------------------------------- fresh venv


def _pip(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _wheelhouse(wheel: Path) -> Path:
    """The [runtime] dependencies of ``wheel`` as wheels for this Python, without edgeeff."""
    from edgeeff.core.data import cache_dir

    wh = cache_dir() / "test-wheelhouse" / f"py{sys.version_info.major}{sys.version_info.minor}"
    wh.mkdir(parents=True, exist_ok=True)
    req = f"{wheel}[runtime]"
    r = _pip("download", "-q", "--no-index", "--find-links", str(wh), "-d", str(wh), req)
    if r.returncode != 0:  # not all there yet: pip's cache, else the configured index
        r = _pip("download", "-q", "--only-binary=:all:", "-d", str(wh), req)
        if r.returncode != 0:
            out = r.stdout + r.stderr
            if any(s in out for s in NETWORK_ERRORS):
                pytest.skip("the [runtime] dependencies are neither in pip's cache nor reachable "
                            f"on the package index (offline?): {out.strip().splitlines()[-1]}")
            pytest.fail(f"pip download of the runtime dependencies failed:\n{out}")
    for w in wh.glob("edgeeff-*.whl"):  # edgeeff must come from the bundle only
        w.unlink()
    return wh


@pytest.fixture(scope="module")
def installed(export_dir, tmp_path_factory):
    """(bundle folder, venv, env, first run.sh result): run.sh installed and ran the demo."""
    base = tmp_path_factory.mktemp("bundle-venv")
    bundle = base / "tiny-pi4-bundle"
    r = run_cli("bundle", str(export_dir), "--target", "pi4", "--out", str(bundle))
    assert r.returncode == 0, r.stderr
    wheel = next(bundle.glob("edgeeff-*.whl"))
    wh = _wheelhouse(wheel)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    images = base / "images"
    images.mkdir()
    for name in ("chelsea_0.jpg", "coffee_0.jpg", "rocket_0.jpg"):
        (images / name).write_bytes((ROOT / "calibration" / name).read_bytes())
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(EDGEEFF_VENV=str(venv), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wh),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    cmd = ["sh", str(bundle / "run.sh"), "--headless", "--source", str(images),
           "--max-frames", "2"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900,
                           cwd=base)
    return bundle, venv, env, cmd, first


def test_run_sh_installs_the_bundled_wheel_in_a_fresh_venv_and_runs_the_demo(installed):
    bundle, venv, env, cmd, r = installed
    assert r.returncode == 0, r.stderr[-3000:]
    frames = [json.loads(line) for line in r.stdout.splitlines()]
    assert [f["frame"] for f in frames] == [1, 2]
    assert all(len(f["top"]) == 3 and f["latency_ms"] > 0 for f in frames)
    assert "installing edgeeff-" in r.stderr and "ai_edge_litert" in r.stderr
    # the venv's edgeeff is the bundle's wheel, installed (not this source tree)
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import edgeeff, json, importlib.metadata as m; "
         "print(json.dumps([edgeeff.__file__, m.distribution('edgeeff').read_text('direct_url.json')]))"],
        capture_output=True, text=True, env=env, timeout=60, cwd="/")
    path, direct = json.loads(probe.stdout)
    assert Path(path).is_relative_to(venv) and not Path(path).is_relative_to(ROOT / "edgeeff")
    assert json.loads(direct)["url"].endswith(next(bundle.glob("edgeeff-*.whl")).name)


def test_second_run_reuses_the_venv(installed):
    bundle, venv, env, cmd, first = installed
    assert first.returncode == 0, first.stderr[-2000:]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "installing" not in r.stderr and len(r.stdout.splitlines()) == 2


def test_installed_edgeeff_repacks_its_own_wheel(installed, export_dir, tmp_path):
    """Without a source tree (installed from a wheel) edgeeff bundles its installed files."""
    bundle, venv, env, cmd, first = installed
    assert first.returncode == 0, first.stderr[-2000:]
    out = tmp_path / "again"
    r = subprocess.run([str(venv / "bin" / "edgeeff"), "bundle", str(export_dir), "--target",
                        "pi4", "--out", str(out)], capture_output=True, text=True, env=env,
                       timeout=120, cwd="/")
    assert r.returncode == 0 and "repacked from the installed edgeeff" in r.stdout, r.stderr
    orig = zipfile.ZipFile(next(bundle.glob("edgeeff-*.whl")))
    again = zipfile.ZipFile(next(out.glob("edgeeff-*.whl")))
    assert again.filename.endswith(Path(orig.filename).name)
    assert sorted(orig.namelist()) == sorted(again.namelist())
    for name in orig.namelist():
        if not name.endswith("/RECORD"):
            assert orig.read(name) == again.read(name), name
    # a valid RECORD: every file, with its size and sha256 (pip checks them on install)
    from edgeeff.deploy.bundle import _record_hash

    record = again.read(next(n for n in again.namelist() if n.endswith("/RECORD"))).decode()
    rows = {ln.split(",")[0]: ln.split(",")[1:] for ln in record.splitlines()}
    assert set(rows) == set(again.namelist())
    for name, (digest, size) in rows.items():
        if not name.endswith("/RECORD"):
            data = again.read(name)
            assert digest == _record_hash(data) and int(size) == len(data), name
