"""``edgeeff doctor``: is this board set up to run the demo? One command that answers a new
user's first question: the OS and Python, which TFLite runtime (and XNNPACK), the threads the
demo would use, cameras, a display, an Edge TPU, memory and disk; with a model, whether it
verifies and how fast it runs.

Every finding is a :class:`Check` (data, so ``--json`` and the table read the same thing).
Checks that others depend on say what they found in a typed field (``found``: the runtime's
module, picamera2); ``detail`` is prose, for people only.
A failed check carries one line saying what to do; a failed *required* check means the demo
cannot run here (exit code 2). Cameras, a display and an Edge TPU are not required: the demo
runs from a video, an image folder or ``--source sample``, headless, on the CPU.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeeff.core.arch import ModelSpec
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.optional import install_hint
from edgeeff.device import bench, delegate_probe, synth
from edgeeff.device.demo import default_threads
from edgeeff.device.profile.host import meminfo, usable_cores
from edgeeff.device.runtime import resolve_model_path, runtime_info
from edgeeff.tflite.verify import verify

# where Debian / Raspberry Pi OS install Python packages from apt (python3-picamera2)
SYSTEM_SITES = ("/usr/lib/python3/dist-packages",)
MIN_FREE_RAM = 200 * 1024 * 1024  # below this the demo may be killed or swap
MIN_FREE_DISK = 100 * 1024 * 1024  # room for a model and a bundle
RUNTIME_HINT = install_hint("tflite_runtime")
BENCH_FIELDS = ("p50_ms", "p90_ms", "p99_ms", "throughput_per_s", "runs", "threads", "runtime")
VENV_HINT = "recreate the venv with --system-site-packages (python3 -m venv --system-site-packages)"


@dataclass
class Check:
    """One finding: ``ok`` or not, what was found (``detail``) and, when not ok, what to do
    (``fix``). ``required``: the demo cannot run while this check fails."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False
    data: dict | None = None  # figures behind ``detail`` where there are some (the benchmark)
    # what the check found, for the checks that build on it: the TFLite runtime's module name,
    # "picamera2" when it imports; None when nothing was found (decisions read this, not detail)
    found: str | None = None

    def problem(self) -> str | None:
        """The one line a failed check prints: what is wrong and what to do."""
        if self.ok:
            return None
        return f"{self.name}: {self.detail}" + (f": {self.fix}" if self.fix else "")

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- the machine


def _os_name() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def check_platform() -> list[Check]:
    bits = 64 if sys.maxsize > 2**32 else 32
    return [
        Check("os", True, f"{_os_name()} ({platform.system()} {platform.release()})"),
        Check("architecture", True, f"{platform.machine() or 'unknown'} ({bits}-bit Python)"),
        Check("python", True, f"{platform.python_version()} at {sys.executable}"
              + (f" (venv {sys.prefix})" if in_venv() else "")),
    ]


def _importable(name: str) -> bool:
    """Whether ``import name`` would find a module. A finder that raises (a broken install, an
    import hook) counts as not importable rather than ending doctor with a traceback."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def in_venv() -> bool:
    return sys.prefix != sys.base_prefix


def venv_sees_system_site(prefix: str | None = None) -> bool:
    """Whether the venv was made with ``--system-site-packages`` (``pyvenv.cfg``)."""
    cfg = Path(prefix or sys.prefix) / "pyvenv.cfg"
    try:
        for line in cfg.read_text(encoding="utf-8").splitlines():
            key, _, val = line.partition("=")
            if key.strip() == "include-system-site-packages":
                return val.strip().lower() == "true"
    except OSError:
        pass
    return False


def _hidden_system_package(name: str, sites: tuple[str, ...]) -> str | None:
    """The system site folder holding ``name`` when this venv cannot import it from there."""
    if not in_venv() or venv_sees_system_site():
        return None
    for site in sites:
        if os.path.isdir(os.path.join(site, name)) or glob.glob(os.path.join(site, f"{name}-*")):
            return site
    return None


def check_runtime() -> Check:
    try:
        name, ver = runtime_info()
    except EdgeeffError:
        return Check("tflite runtime", False, "no TFLite runtime is importable (ai_edge_litert "
                     "or tflite_runtime)", RUNTIME_HINT, required=True)
    return Check("tflite runtime", True, f"{name} {ver}".strip(), required=True, found=name)


XNNPACK_CHILD = ("import importlib, sys; m = importlib.import_module(sys.argv[1] + '.interpreter');"
                 " it = m.Interpreter(model_content=sys.stdin.buffer.read(), num_threads=1);"
                 " it.allocate_tensors(); it.invoke()")
TINY = ModelSpec(family="lite", width=0.25, depth=0.25, resolution=32, num_classes=10)


def xnnpack_in_log(stderr: str) -> bool:
    """The runtime's own log line when it applies XNNPACK to a model on the CPU."""
    return "XNNPACK delegate" in stderr


def check_xnnpack(runtime: Check, child: str = XNNPACK_CHILD) -> Check:
    """Loads a tiny synthetic int8 model in a child (the runtime logs to the C stderr) and
    looks for the line the runtime prints when it applies XNNPACK. ``child``: the Python code
    the child runs (runtime module in ``argv[1]``, the model on stdin)."""
    if not runtime.found:
        return Check("xnnpack", False, "not checked: no TFLite runtime", RUNTIME_HINT)
    module = runtime.found
    try:
        r = subprocess.run([sys.executable, "-c", child, module],
                           input=synth.build(TINY, metadata=False), capture_output=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check("xnnpack", False, f"a test model did not run: {e}", RUNTIME_HINT)
    err = r.stderr.decode(errors="replace")
    if r.returncode != 0:
        last = next((ln for ln in reversed(err.splitlines()) if ln.strip()), "")
        return Check("xnnpack", False, f"a test model did not run ({last or r.returncode})",
                     f"reinstall the runtime: {RUNTIME_HINT}", required=True)
    if xnnpack_in_log(err):
        return Check("xnnpack", True, "applied to int8 models on the CPU")
    return Check("xnnpack", False, "this runtime build did not apply XNNPACK (slower CPU "
                 "kernels)", f"use a runtime built with XNNPACK: {RUNTIME_HINT}")


def check_opencv() -> Check:
    if _importable("cv2"):
        try:
            import cv2

            return Check("opencv", True, f"cv2 {cv2.__version__}", required=True)
        except ImportError as e:
            return Check("opencv", False, f"cv2 is installed but does not import ({e})",
                         "reinstall it: pip install --force-reinstall opencv-python-headless",
                         required=True)
    site = _hidden_system_package("cv2", SYSTEM_SITES)
    if site:
        return Check("opencv", False, f"OpenCV is installed system-wide ({site}) but this "
                     "venv cannot see it", VENV_HINT, required=True)
    return Check("opencv", False, "cv2 is not importable (the demo reads cameras and video "
                 "with OpenCV)", install_hint("cv2"),
                 required=True)


def check_threads(cores: int | None = None, demo: int | None = None) -> Check:
    cores = usable_cores() if cores is None else cores
    demo = default_threads() if demo is None else demo
    detail = (f"{cores} core{'s' if cores != 1 else ''} usable (of {os.cpu_count() or '?'}); "
              f"the demo would use {demo} interpreter thread{'s' if demo != 1 else ''}")
    if demo > cores:
        return Check("threads", False, detail + ", more than the cores it may run on",
                     f"run the demo with --threads {max(cores - 1, 1)}")
    return Check("threads", True, detail)


# --------------------------------------------------------------------------- cameras, display


def _open_device(path: str) -> None:
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    os.close(fd)


def check_cameras(dev_root: str = "/dev", sites: tuple[str, ...] = SYSTEM_SITES) -> list[Check]:
    """picamera2 importable, and every ``/dev/video*`` opened for reading and writing."""
    out = []
    if _importable("picamera2"):
        out.append(Check("picamera2", True, "importable (--source picamera)", found="picamera2"))
    else:
        site = _hidden_system_package("picamera2", sites)
        if site:
            out.append(Check("picamera2", False, f"picamera2 is installed system-wide ({site}) "
                             "but this venv cannot see it", VENV_HINT))
        else:
            out.append(Check("picamera2", True, "not installed (only for a Raspberry Pi camera "
                             "module: sudo apt install python3-picamera2)"))
    usable, denied, broken = [], [], []
    for dev in sorted(glob.glob(os.path.join(dev_root, "video*"))):
        try:
            _open_device(dev)
            usable.append(dev)
        except PermissionError:
            denied.append(dev)
        except OSError as e:
            broken.append(f"{dev} ({e.strerror or e})")
    cams = usable + [c.found for c in out if c.found]
    if denied and not usable:
        out.append(Check("camera", False, f"{', '.join(denied)} cannot be opened (permission "
                         "denied)", "add yourself to the video group: sudo usermod -aG video "
                         "$USER, then log out and in"))
    elif cams:
        extra = f"; cannot open {', '.join(denied + broken)}" if denied or broken else ""
        out.append(Check("camera", True, ", ".join(cams) + extra))
    else:
        found = f" ({', '.join(broken)} did not open)" if broken else ""
        out.append(Check("camera", False, f"no camera found: no openable {dev_root}/video*"
                         f"{found} and no picamera2", "connect a camera (USB, or a Pi camera "
                         "with python3-picamera2), or run the demo with --source sample, a "
                         "video file or an image folder"))
    return out


def check_display(environ: dict | None = None) -> Check:
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return Check("display", True, f"{platform.system()} (windows open on the desktop)")
    shown = [f"{k}={env[k]}" for k in ("DISPLAY", "WAYLAND_DISPLAY") if env.get(k)]
    if shown:
        return Check("display", True, ", ".join(shown))
    return Check("display", False, "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)",
                 "run the demo with --headless (one JSON line a frame)")


# --------------------------------------------------------------------------- Edge TPU


def check_edgetpu(runtime: Check, lib: str | None = None, sys_root: str = "/sys",
                  dev_root: str = "/dev", probe: bool = True) -> Check:
    """libedgetpu loadable and an Edge TPU attached; with both, the delegate is created in a
    child process (:func:`edgeeff.device.delegate_probe.probe`), which is what the demo does."""
    lib = lib or delegate_probe.edgetpu_lib()
    loadable, why = delegate_probe.lib_loadable(lib)
    devices = delegate_probe.edgetpu_devices(sys_root, dev_root)
    if not loadable and not devices:
        return Check("edge tpu", True, f"none ({lib} not installed, no device attached; only "
                     "for --delegate edgetpu)")
    if devices and not loadable:
        return Check("edge tpu", False, f"{', '.join(devices)} attached but {lib} cannot be "
                     f"loaded ({why})", delegate_probe.INSTALL_HINT)
    if not devices:
        return Check("edge tpu", False, f"{lib} is installed but no Edge TPU is attached",
                     "plug the Coral into a USB 3 port (or install the PCIe driver, "
                     "gasket-dkms, for an M.2 Coral), or run without --delegate edgetpu")
    if probe and runtime.found:
        try:
            delegate_probe.probe(runtime.found, lib)
        except EdgeeffError as e:
            return Check("edge tpu", False, f"{', '.join(devices)}: {e}")
    return Check("edge tpu", True, f"{', '.join(devices)}; {lib} loads")


# --------------------------------------------------------------------------- memory, disk


def _mb(n: int) -> str:
    return f"{n / 1024**2:.0f} MB"


def check_memory(available: int | None = None) -> Check:
    if available is None:
        mem = meminfo()
        available = mem.get("MemAvailable", mem.get("MemFree"))
    if available is None:
        return Check("memory", True, "unknown (no /proc/meminfo)")
    if available < MIN_FREE_RAM:
        return Check("memory", False, f"{_mb(available)} available, less than "
                     f"{_mb(MIN_FREE_RAM)}", "close other programs or add swap "
                     "(sudo dphys-swapfile on Raspberry Pi OS); a smaller model needs less")
    return Check("memory", True, f"{_mb(available)} available")


def check_disk(folder: str = ".", free: int | None = None) -> Check:
    if free is None:
        free = shutil.disk_usage(folder).free
    where = os.path.abspath(folder)
    if free < MIN_FREE_DISK:
        return Check("disk", False, f"{_mb(free)} free in {where}, less than "
                     f"{_mb(MIN_FREE_DISK)}", "free some space (sudo apt clean, old exports)")
    return Check("disk", True, f"{_mb(free)} free in {where}")


# --------------------------------------------------------------------------- a model


def check_model(model: str, runtime: Check, threads: int | None = None,
                seconds: float = 5.0) -> list[Check]:
    """The model verified (bounds-checked before any interpreter sees it), then benchmarked for
    about ``seconds`` with the demo's threads."""
    try:
        path = resolve_model_path(model)
    except EdgeeffError as e:  # missing file, a folder without a model, not a .tflite name
        return [Check("model", False, str(e), "check the path: a .tflite file or an export "
                      "folder (edgeeff export --int8)", required=True)]
    try:
        verify(path.read_bytes(), path)
    except OSError as e:
        return [Check("model", False, f"cannot read {model}: {e.strerror or e}",
                      "check the path and its permissions", required=True)]
    except EdgeeffError as e:
        return [Check("model", False, str(e), "export it again (edgeeff export --int8) or copy "
                      "it again: the file is damaged or not a .tflite model", required=True)]
    out = [Check("model", True, f"{path} verified ({path.stat().st_size / 1024**2:.1f} MB)",
                 required=True)]
    if not runtime.ok:
        out.append(Check("benchmark", False, "not run: no TFLite runtime", RUNTIME_HINT,
                         required=True))
        return out
    threads = threads or default_threads()
    try:
        r = bench.bench_model(path, threads, runs=3, warmup=2, seconds=seconds)
    except EdgeeffError as e:
        out.append(Check("benchmark", False, str(e), "check that it is an image classifier "
                         "exported by edgeeff (edgeeff export --int8)", required=True))
        return out
    out.append(Check("benchmark", True, f"p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, "
                     f"{r['throughput_per_s']} inferences/s over {r['runs']} invokes "
                     f"({threads} thread{'s' if threads != 1 else ''}, {r['runtime']})",
                     required=True, data={k: r[k] for k in BENCH_FIELDS if k in r}))
    return out


# --------------------------------------------------------------------------- all of it


def run_checks(model: str | None = None, seconds: float = 5.0) -> list[Check]:
    """Every check, in the order the table shows them."""
    checks = check_platform()
    runtime = check_runtime()
    checks += [runtime, check_xnnpack(runtime), check_opencv(), check_threads()]
    checks += check_cameras()
    checks += [check_display(), check_edgetpu(runtime), check_memory(), check_disk()]
    if model is not None:
        checks += check_model(model, runtime, seconds=seconds)
    return checks


def can_run_demo(checks: list[Check]) -> bool:
    return all(c.ok for c in checks if c.required)


def report(checks: list[Check]) -> dict:
    """The JSON form: every check and the verdict."""
    return {"can_run_demo": can_run_demo(checks), "checks": [c.to_dict() for c in checks],
            "problems": [p for c in checks if (p := c.problem())]}
