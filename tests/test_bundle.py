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
import re
import shlex
import shutil
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


# --------------------------------------------------------------------------- deployment habits


@pytest.fixture(scope="module")
def synth_export(tmp_path_factory) -> Path:
    """An export folder holding only a synthesized int8 model (milliseconds, no TensorFlow),
    its files 0666 as an export made under umask 000 has them."""
    from edgeeff.core.arch import phi_spec
    from edgeeff.device import synth

    d = tmp_path_factory.mktemp("synth") / "export"
    d.mkdir()
    (d / "model_int8.tflite").write_bytes(synth.build(phi_spec(-8, "lite", 10)))
    (d / "labels.txt").write_text("".join(f"c{i}\n" for i in range(10)))
    for p in d.iterdir():
        p.chmod(0o666)
    return d


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else b""
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("where", ["itself", "inside", "its parent"])
def test_out_equal_to_inside_or_around_the_export_is_refused(synth_export, where, tmp_path):
    base = tmp_path / "work"
    export = base / "export"
    export.mkdir(parents=True)
    for p in synth_export.iterdir():
        (export / p.name).write_bytes(p.read_bytes())
    before = _snapshot(base)
    out = {"itself": export, "inside": export / "bundle", "its parent": base}[where]
    r = run_cli("bundle", str(export), "--target", "pi4", "--out", str(out), "--force")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeeff: error: --out ") \
        and "export folder" in lines[0], r.stderr
    assert _snapshot(base) == before  # the export untouched, nothing added


@pytest.fixture(scope="module")
def umask0_bundle(synth_export, tmp_path_factory) -> Path:
    """A bundle made under umask 000 (what a careless shell or a container has)."""
    out = tmp_path_factory.mktemp("umask0") / "b"
    r = subprocess.run(["sh", "-c", 'umask 000; exec "$@"', "sh", sys.executable, "-m",
                        "edgeeff.cli", "bundle", str(synth_export), "--target", "pi4", "--out",
                        str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def test_bundle_modes_do_not_follow_the_umask(umask0_bundle):
    out = umask0_bundle

    def want(name: str, is_dir: bool) -> int:
        return 0o755 if is_dir or name.endswith("run.sh") else 0o644

    found = {p.relative_to(out).as_posix(): (p.stat().st_mode & 0o7777, p.is_dir())
             for p in [out, *out.rglob("*")]}
    assert {k for k in found} >= {".", "run.sh", "edgeeff-demo@.service", "model_int8.tflite",
                                  "labels.txt", "README.txt"}
    assert {k: oct(m) for k, (m, d) in found.items() if m != want(k, d)} == {}
    archive = out.parent / "b.tar.gz"
    assert archive.stat().st_mode & 0o7777 == 0o644
    with tarfile.open(archive) as t:
        members = t.getmembers()
    assert len(members) == len(found)
    assert {m.name: oct(m.mode) for m in members if m.mode != want(m.name, m.isdir())} == {}


def _exec_start(unit: str) -> list[str]:
    """The unit's ExecStart as the argv systemd runs: continuation lines joined, quotes
    split, ``$$`` made ``$``."""
    text = unit.replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    return [a.replace("$$", "$") for a in shlex.split(line.split("=", 1)[1])]


def test_systemd_unit_runs_sandboxed_as_an_ordinary_user(umask0_bundle, tmp_path):
    unit = (umask0_bundle / "edgeeff-demo@.service").read_text()
    settings = {}
    for ln in unit.replace("\\\n", " ").splitlines():
        if "=" in ln and not ln.startswith("#"):
            k, v = ln.split("=", 1)
            settings[k] = v
    assert settings["User"] == "%i"
    for k, v in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                 "ProtectHome": "read-only", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
                 "ProtectKernelTunables": "yes", "ProtectControlGroups": "yes"}.items():
        assert settings.get(k) == v, k
    assert "/home/%i/edgeeff-venv" in settings["ReadWritePaths"]  # run.sh's venv, writable
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not checked")
    inst = tmp_path / "edgeeff-demo@pi.service"  # a template is verified as an instance
    inst.write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", str(inst)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and (r.stdout + r.stderr).strip() == "", r.stdout + r.stderr
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(inst)],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0 and "offline" in r.stderr:
        pytest.skip(f"this systemd-analyze has no offline security review: {r.stderr.strip()}")
    level = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout).group(1))
    assert level <= 5.0, r.stdout[-3000:]  # systemd calls <= 5.0 "OK"; unsandboxed is 9.2


def test_systemd_unit_refuses_to_run_as_root(umask0_bundle, tmp_path):
    """ExecStart as systemd runs it, with a stand-in ``id`` (uid 0, then 1000) and the device
    path pointing at a stand-in run.sh: root gets exit 78 (no restart) and a message."""
    unit = (umask0_bundle / "edgeeff-demo@.service").read_text()
    device = tmp_path / "device"
    device.mkdir()
    (device / "run.sh").write_text('echo "run.sh ran with $*"\n')
    argv = [a.replace("/home/pi/edgeeff-bundle", str(device)) for a in _exec_start(unit)]
    assert "RestartPreventExitStatus=78" in unit
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for uid in (0, 1000):
        (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
        (bin_dir / "id").chmod(0o755)
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        if uid == 0:
            assert r.returncode == 78 and "refusing to run as root" in r.stderr, r
            assert "run.sh ran" not in r.stdout
        else:
            assert r.returncode == 0 and r.stdout.strip() == "run.sh ran with --headless", r
