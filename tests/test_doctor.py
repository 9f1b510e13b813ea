"""``edgeeff doctor``: one test per problem it reports.

Real conditions where this machine has them (no camera, no display, no libedgetpu, a damaged
model, a runtime blocked from importing); stand-ins only for hardware that cannot exist here
(a Pi's system-wide picamera2, a Coral on USB, a camera that refuses to open), each saying so.
"""

from __future__ import annotations

import ctypes.util
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeeff.core.arch import ModelSpec
from edgeeff.device import delegate_probe, doctor, synth
from tests.test_layers import BLOCKER

TINY = ModelSpec(family="lite", width=0.25, depth=0.25, resolution=32, num_classes=10)
NO_DISPLAY = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}


def doctor_cli(*args: str, block: str = "", env: dict | None = None, cwd=None
               ) -> subprocess.CompletedProcess:
    """``edgeeff doctor ARGS`` in a child, with the modules in ``block`` made unimportable."""
    return subprocess.run([sys.executable, "-c", BLOCKER, block or "-", "doctor", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=NO_DISPLAY if env is None else env)


def problems(r: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in r.stdout.splitlines() if ln.startswith(("problem: ", "note: "))]


def by_name(checks) -> dict:
    return {c["name"] if isinstance(c, dict) else c.name: c for c in checks}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("doctor") / "tiny.tflite"
    p.write_bytes(synth.build(TINY))
    return p


# --------------------------------------------------------------------------- the whole command


def test_healthy_machine_exits_0_and_json_has_the_tables_checks():
    table = doctor_cli()
    js = doctor_cli("--json")
    assert table.returncode == 0 and js.returncode == 0, table.stdout + table.stderr
    assert "Traceback" not in table.stderr + js.stderr
    report = json.loads(js.stdout)
    names = [c["name"] for c in report["checks"]]
    assert names[:3] == ["os", "architecture", "python"]
    for n in ("tflite runtime", "xnnpack", "opencv", "threads", "picamera2", "camera",
              "display", "edge tpu", "memory", "disk"):
        assert n in names
    rows = [ln.split("│")[1].strip() for ln in table.stdout.splitlines()
            if ln.count("│") >= 3 and ln.split("│")[1].strip()]
    assert rows == names  # the same checks, in the same order
    assert report["can_run_demo"] is True
    assert report["problems"] == [p.split(": ", 1)[1] for p in problems(table)]


def test_missing_runtime_exits_2_naming_what_to_install():
    r = doctor_cli(block="ai_edge_litert,tflite_runtime")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    bad = [p for p in problems(r) if p.startswith("problem: ")]
    assert bad == [f"problem: tflite runtime: no TFLite runtime is importable (ai_edge_litert "
                   f"or tflite_runtime): {doctor.RUNTIME_HINT}"]
    assert "pip install 'edgeeff[runtime]'" in bad[0] and "tflite-runtime" in bad[0]
    js = json.loads(doctor_cli("--json", block="ai_edge_litert,tflite_runtime").stdout)
    assert js["can_run_demo"] is False
    assert by_name(js["checks"])["xnnpack"]["detail"] == "not checked: no TFLite runtime"


def test_missing_opencv_exits_2():
    r = doctor_cli(block="cv2")
    assert r.returncode == 2, r.stdout + r.stderr
    bad = [p for p in problems(r) if p.startswith("problem: ")]
    assert len(bad) == 1 and bad[0].startswith("problem: opencv: cv2 is not importable")
    assert "pip install 'edgeeff[runtime]'" in bad[0]


@pytest.mark.parametrize("cut", ["half", "junk"])
def test_damaged_model_exits_2_with_one_line(tiny_model, tmp_path, cut):
    data = tiny_model.read_bytes()
    bad = tmp_path / "damaged.tflite"
    bad.write_bytes(data[: len(data) // 2] if cut == "half" else b"not a model" * 10)
    r = doctor_cli("--model", str(bad), "--seconds", "1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = [p for p in problems(r) if p.startswith("problem: ")]
    assert len(lines) == 1 and lines[0].startswith(f"problem: model: {bad}: not a valid TFLite")
    assert "export it again" in lines[0]
    js = json.loads(doctor_cli("--model", str(bad), "--json").stdout)
    assert js["can_run_demo"] is False and "benchmark" not in by_name(js["checks"])


def test_missing_model_says_check_the_path(tmp_path):
    r = doctor_cli("--model", str(tmp_path / "nosuch.tflite"))
    assert r.returncode == 2
    lines = [p for p in problems(r) if p.startswith("problem: ")]
    assert len(lines) == 1 and "model not found" in lines[0] and "check the path" in lines[0]
    assert "damaged" not in lines[0]


def test_good_model_is_verified_and_benchmarked(tiny_model):
    r = doctor_cli("--model", str(tiny_model), "--seconds", "1", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    checks = by_name(json.loads(r.stdout)["checks"])
    assert checks["model"]["ok"] and "verified" in checks["model"]["detail"]
    b = checks["benchmark"]
    assert b["ok"] and b["required"]
    assert b["data"]["p50_ms"] > 0 and b["data"]["runs"] >= 3
    assert b["data"]["throughput_per_s"] > 0 and b["data"]["threads"] >= 1
    assert f"p50 {b['data']['p50_ms']} ms" in b["detail"]


# --------------------------------------------------------------------------- runtime, threads


def test_runtime_that_cannot_run_a_model_is_required():
    # a runtime doctor found but whose interpreter does not import in a fresh process
    c = doctor.check_xnnpack(doctor.Check("tflite runtime", True, "no_such_runtime 1.0",
                                          found="no_such_runtime"))
    assert not c.ok and c.required and "a test model did not run" in c.detail
    assert "No module named 'no_such_runtime'" in c.detail and "reinstall" in c.fix


def test_later_checks_read_the_runtime_found_not_its_prose():
    # the module the xnnpack check loads is the runtime check's typed ``found``; its detail is
    # display text only (here it names another module, which must not be tried)
    shown = doctor.Check("tflite runtime", True, "tflite_runtime 2.14 (whatever it says)",
                         found="no_such_runtime")
    c = doctor.check_xnnpack(shown)
    assert "No module named 'no_such_runtime'" in c.detail
    # nothing found: not checked, whatever the detail says
    c = doctor.check_xnnpack(doctor.Check("tflite runtime", True, "tflite_runtime 2.14"))
    assert not c.ok and c.detail == "not checked: no TFLite runtime"
    runtime = doctor.check_runtime()
    assert runtime.found == (doctor.runtime_info()[0] if runtime.ok else None)


def test_runtime_without_xnnpack_is_a_note():
    runtime = doctor.check_runtime()
    if not runtime.ok:
        pytest.skip("no TFLite runtime")
    # the real runtime with its default delegates (XNNPACK) turned off: what a build without
    # XNNPACK logs
    plain = doctor.XNNPACK_CHILD.replace(
        "num_threads=1)", "num_threads=1, experimental_op_resolver_type="
        "m.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)")
    assert plain != doctor.XNNPACK_CHILD
    c = doctor.check_xnnpack(runtime, plain)
    assert not c.ok and not c.required and "did not apply XNNPACK" in c.detail
    assert doctor.check_xnnpack(runtime).ok


def test_threads_more_than_cores():
    c = doctor.check_threads(cores=1, demo=3)
    assert not c.ok and not c.required and c.fix == "run the demo with --threads 1"
    c = doctor.check_threads(cores=4, demo=3)
    assert c.ok and "4 cores usable" in c.detail and "3 interpreter threads" in c.detail
    assert doctor.check_threads(cores=3, demo=3).ok


# --------------------------------------------------------------------------- cameras, display


def test_no_camera_is_a_note_pointing_at_other_sources(tmp_path):
    if glob.glob("/dev/video*"):
        pytest.skip("this machine has a /dev/video* device")
    r = doctor_cli()
    assert r.returncode == 0
    cam = [p for p in problems(r) if p.startswith("note: camera: ")]
    assert len(cam) == 1 and "no camera found" in cam[0] and "--source sample" in cam[0]
    checks = by_name(doctor.check_cameras())
    assert not checks["camera"].ok and not checks["camera"].required


def test_an_importable_picamera2_is_a_camera(tmp_path, monkeypatch):
    # stand-in: picamera2 exists only on a Raspberry Pi; the import check answers yes for it
    real = doctor._importable
    monkeypatch.setattr(doctor, "_importable", lambda n: n == "picamera2" or real(n))
    checks = by_name(doctor.check_cameras(str(tmp_path), sites=()))  # no /dev/video* here
    assert checks["picamera2"].ok and checks["picamera2"].found == "picamera2"
    assert checks["camera"].ok and checks["camera"].detail == "picamera2"
    # not installed: the check is fine (ok) but found nothing, so no camera
    monkeypatch.setattr(doctor, "_importable", lambda n: n != "picamera2" and real(n))
    checks = by_name(doctor.check_cameras(str(tmp_path), sites=()))
    assert checks["picamera2"].ok and checks["picamera2"].found is None
    assert not checks["camera"].ok


def test_camera_permission_denied(tmp_path, monkeypatch):
    # stand-in: no camera exists here, and as root every device node opens, so a video node
    # that refuses to open is a plain file plus an open() that says EACCES
    (tmp_path / "video0").write_bytes(b"")

    def denied(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(doctor, "_open_device", denied)
    cam = by_name(doctor.check_cameras(str(tmp_path), sites=()))["camera"]
    assert not cam.ok and "permission denied" in cam.detail and "usermod -aG video" in cam.fix


def test_no_display_is_a_note_pointing_at_headless():
    c = doctor.check_display({})
    assert not c.ok and not c.required and "--headless" in c.fix
    assert doctor.check_display({"DISPLAY": ":0"}).ok
    assert doctor.check_display({"WAYLAND_DISPLAY": "wayland-0"}).ok
    r = doctor_cli()  # this machine, DISPLAY and WAYLAND_DISPLAY unset
    assert [p for p in problems(r) if p.startswith("note: display: ")] == [
        "note: display: " + c.problem().split(": ", 1)[1]]


@pytest.mark.skipif(not doctor.in_venv() or doctor.venv_sees_system_site(),
                    reason="needs a venv made without --system-site-packages")
def test_picamera2_installed_system_wide_but_hidden_from_the_venv(tmp_path):
    # stand-in: python3-picamera2 exists only on Raspberry Pi OS; a fake dist-packages
    # folder holds it, as apt would put it there
    site = tmp_path / "dist-packages"
    (site / "picamera2").mkdir(parents=True)
    (site / "picamera2" / "__init__.py").write_text("")
    checks = by_name(doctor.check_cameras(str(tmp_path / "nodev"), sites=(str(site),)))
    pc = checks["picamera2"]
    assert not pc.ok and str(site) in pc.detail and "cannot see it" in pc.detail
    assert "--system-site-packages" in pc.fix
    assert pc.problem() == (f"picamera2: picamera2 is installed system-wide ({site}) but this "
                            f"venv cannot see it: {doctor.VENV_HINT}")
    # nothing in the system site: not installed is fine (only for a Pi camera module)
    assert by_name(doctor.check_cameras(str(tmp_path), sites=(str(tmp_path),)))["picamera2"].ok


@pytest.mark.skipif(not doctor.in_venv() or doctor.venv_sees_system_site(),
                    reason="needs a venv made without --system-site-packages")
def test_opencv_installed_system_wide_but_hidden_from_the_venv(tmp_path):
    # stand-in: Debian's python3-opencv in a fake dist-packages; cv2 blocked in the child so
    # that this venv's own OpenCV does not answer
    site = tmp_path / "dist-packages"
    (site / "cv2").mkdir(parents=True)
    code = BLOCKER.split("from edgeeff.cli")[0] + (
        "from edgeeff.device import doctor\n"
        f"doctor.SYSTEM_SITES = ({str(site)!r},)\n"
        "import json; print(json.dumps(doctor.check_opencv().to_dict()))\n")
    r = subprocess.run([sys.executable, "-c", code, "cv2"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert not c["ok"] and c["required"] and str(site) in c["detail"]
    assert c["fix"] == doctor.VENV_HINT


# --------------------------------------------------------------------------- Edge TPU


def _fake_sys(root: Path, devices: dict[str, tuple[str, str]]) -> Path:
    for name, (vendor, product) in devices.items():
        d = root / "bus" / "usb" / "devices" / name
        d.mkdir(parents=True)
        (d / "idVendor").write_text(vendor + "\n")
        (d / "idProduct").write_text(product + "\n")
    return root


def test_no_libedgetpu_and_no_coral_is_fine(tmp_path):
    if delegate_probe.lib_loadable()[0]:
        pytest.skip("libedgetpu is installed here")
    c = doctor.check_edgetpu(doctor.check_runtime())  # this machine: neither
    assert c.ok and "not installed" in c.detail and "--delegate edgetpu" in c.detail


def test_coral_usb_ids_are_recognised(tmp_path):
    # stand-in: no Coral can be plugged in here; a fake /sys holds its USB IDs, before and
    # after its firmware is loaded, next to another USB device
    root = _fake_sys(tmp_path / "sys", {"1-1": ("1a6e", "089a"), "2-1": ("18d1", "9302"),
                                       "3-1": ("046d", "0825")})
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "apex_0").write_text("")
    found = delegate_probe.edgetpu_devices(str(root), str(tmp_path / "dev"))
    assert found == ["Coral USB Accelerator (firmware not loaded yet) (USB 1a6e:089a)",
                     "Coral USB Accelerator (USB 18d1:9302)",
                     f"Coral PCIe / M.2 ({tmp_path / 'dev' / 'apex_0'})"]
    assert delegate_probe.edgetpu_devices(str(tmp_path / "nosys"), str(tmp_path / "nodev")) == []


def test_coral_attached_without_libedgetpu(tmp_path):
    # stand-in: a fake /sys with a Coral's USB IDs; libedgetpu is really absent here
    if delegate_probe.lib_loadable()[0]:
        pytest.skip("libedgetpu is installed here")
    root = _fake_sys(tmp_path / "sys", {"2-1": ("18d1", "9302")})
    c = doctor.check_edgetpu(doctor.check_runtime(), sys_root=str(root),
                             dev_root=str(tmp_path))
    assert not c.ok and not c.required
    assert "Coral USB Accelerator (USB 18d1:9302) attached" in c.detail
    assert c.fix == delegate_probe.INSTALL_HINT


def test_libedgetpu_without_a_coral(tmp_path):
    # stand-in: libc plays an installed libedgetpu (a loadable library), no Coral attached
    lib = ctypes.util.find_library("c")
    c = doctor.check_edgetpu(doctor.check_runtime(), lib=lib, sys_root=str(tmp_path),
                             dev_root=str(tmp_path))
    assert not c.ok and "no Edge TPU is attached" in c.detail and "USB 3" in c.fix


def test_coral_whose_delegate_does_not_load(tmp_path):
    # stand-ins: a fake /sys with a Coral and libc as the "libedgetpu" that loads but is not
    # a delegate; the delegate is really created, in doctor's child process
    runtime = doctor.check_runtime()
    if not runtime.ok:
        pytest.skip("no TFLite runtime")
    root = _fake_sys(tmp_path / "sys", {"2-1": ("18d1", "9302")})
    c = doctor.check_edgetpu(runtime, lib=ctypes.util.find_library("c"), sys_root=str(root),
                             dev_root=str(tmp_path))
    assert not c.ok and c.detail.startswith("Coral USB Accelerator (USB 18d1:9302): ")
    assert "delegate did not load" in c.detail and "\n" not in c.problem()


# --------------------------------------------------------------------------- memory, disk


def test_low_memory_and_disk():
    assert not doctor.check_memory(150 * 1024**2).ok
    assert "150 MB available, less than 200 MB" in doctor.check_memory(150 * 1024**2).detail
    assert "swap" in doctor.check_memory(150 * 1024**2).fix
    assert doctor.check_memory(doctor.MIN_FREE_RAM).ok
    low = doctor.check_disk(".", free=50 * 1024**2)
    assert not low.ok and "50 MB free" in low.detail and "less than 100 MB" in low.detail
    assert doctor.check_disk(".", free=doctor.MIN_FREE_DISK).ok
    assert doctor.check_memory().ok and doctor.check_disk().ok  # this machine has plenty


def test_demo_threads_follow_the_cpu_affinity(monkeypatch):
    """The demo's default interpreter threads come from the cores this process may use (a
    taskset or container cpuset), not the machine's count."""
    from edgeeff.device.demo import loop

    for cores, want in ((1, 1), (2, 1), (3, 2), (16, 4)):
        monkeypatch.setattr(loop, "usable_cores", lambda c=cores: c)
        assert loop.default_threads() == want
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this OS")
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from edgeeff.device.profile.host import usable_cores; print(usable_cores())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
