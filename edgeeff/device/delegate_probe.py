"""Load the EdgeTPU delegate in a child process before the demo loads it for real.

libedgetpu is compiled against one TensorFlow Lite version; with another runtime (a newer
ai-edge-litert or tflite-runtime) creating the delegate can crash the whole process with a
segmentation fault, and a missing library or an unplugged accelerator fails with a bare
"Failed to load delegate". The child takes the crash; the parent turns each case into one
line naming what it found (runtime and version, libedgetpu's path and version) and what to do.

Run as ``python -m edgeeff.device.delegate_probe LIBRARY RUNTIME_MODULE``: prints
``path: ...`` and ``version: ...`` lines, then ``ok`` once the delegate loaded.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import platform
import shutil
import signal
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

from edgeeff.core.errors import EdgeeffError

# pycoral's names for the EdgeTPU runtime library (pycoral/utils/edgetpu.py)
EDGETPU_LIBS = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib",
                "Windows": "edgetpu.dll"}
LIB_ENV = "EDGEEFF_EDGETPU_LIB"  # a libedgetpu somewhere else (a community build)
PROBE_TIMEOUT_S = 60
RUNTIME_DISTS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}
INSTALL_HINT = ("install it from Coral's apt repository: sudo apt-get install libedgetpu1-std "
                "(https://coral.ai/docs/accelerator/get-started/)")
CRASH_HINT = ("libedgetpu only works with the TensorFlow Lite version it was built against: use a "
              "libedgetpu build made for this runtime (see the README, 'Coral'), or run without "
              "--delegate edgetpu")


def edgetpu_lib() -> str:
    return os.environ.get(LIB_ENV) or EDGETPU_LIBS.get(platform.system(), "libedgetpu.so.1")


# USB vendor:product of a Coral USB Accelerator: before its firmware is loaded (Global Unichip)
# and after (Google); the M.2 / PCIe Coral is a /dev/apex_N device (the gasket-dkms driver)
CORAL_USB_IDS = {("1a6e", "089a"): "Coral USB Accelerator (firmware not loaded yet)",
                 ("18d1", "9302"): "Coral USB Accelerator"}


def edgetpu_devices(sys_root: str = "/sys", dev_root: str = "/dev") -> list[str]:
    """The Edge TPUs attached: USB accelerators (``/sys/bus/usb/devices/*/idVendor``) and
    PCIe / M.2 ones (``/dev/apex_*``), one description each."""
    found = []
    usb = os.path.join(sys_root, "bus", "usb", "devices")
    try:
        entries = sorted(os.listdir(usb))
    except OSError:
        entries = []
    for name in entries:
        try:
            with open(os.path.join(usb, name, "idVendor")) as f:
                vendor = f.read().strip().lower()
            with open(os.path.join(usb, name, "idProduct")) as f:
                product = f.read().strip().lower()
        except OSError:
            continue
        what = CORAL_USB_IDS.get((vendor, product))
        if what:
            found.append(f"{what} (USB {vendor}:{product})")
    try:
        apex = sorted(n for n in os.listdir(dev_root) if n.startswith("apex_"))
    except OSError:
        apex = []
    found += [f"Coral PCIe / M.2 ({os.path.join(dev_root, n)})" for n in apex]
    return found


def lib_loadable(lib: str | None = None) -> tuple[bool, str]:
    """(whether libedgetpu can be loaded, the error if not). Loading the library alone is safe
    in this process; creating the delegate (:func:`probe`) is what can crash."""
    lib = lib or edgetpu_lib()
    try:
        ctypes.CDLL(lib)
    except OSError as e:
        return False, str(e)
    return True, ""


def _runtime_version(module: str) -> str:
    dist = RUNTIME_DISTS.get(module, module)
    try:
        return f"{dist} {version(dist)}"
    except PackageNotFoundError:
        return dist


def _package_version() -> str | None:
    """libedgetpu1-std/-max's Debian package version, where dpkg knows it."""
    if shutil.which("dpkg-query") is None:
        return None
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n",
                            "libedgetpu1-std", "libedgetpu1-max"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = [ln.strip() for ln in r.stdout.splitlines() if len(ln.split()) == 2]
    return ", ".join(found) or None


def _found(lines: list[str], lib: str) -> str:
    info = dict(ln.split(": ", 1) for ln in lines if ": " in ln)
    text = f"libedgetpu {info.get('path', lib)}"
    version = info.get("version")
    pkg = _package_version()
    extra = [v for v in (version, pkg) if v]
    return text + (f" ({'; '.join(extra)})" if extra else " (version unknown)")


def probe(module: str, lib: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """EdgeeffError (one line) unless ``module``'s load_delegate(lib) works in a child process."""
    lib = lib or edgetpu_lib()
    cmd = [sys.executable, "-m", "edgeeff.device.delegate_probe", lib, module]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EdgeeffError(f"loading the EdgeTPU delegate ({lib}) with {_runtime_version(module)} "
                           f"did not finish in {timeout:.0f}s: is the accelerator connected?") from None
    lines = r.stdout.splitlines()
    if r.returncode == 0 and "ok" in lines:
        return
    runtime = _runtime_version(module)
    if r.returncode < 0:
        try:
            sig = signal.Signals(-r.returncode).name
        except ValueError:
            sig = f"signal {-r.returncode}"
        raise EdgeeffError(f"loading the EdgeTPU delegate crashed ({sig}) with {runtime} and "
                           f"{_found(lines, lib)}: {CRASH_HINT}")
    missing = next((ln[len("missing: "):] for ln in lines if ln.startswith("missing: ")), None)
    if missing is not None:
        if "No such file" in missing or "not found" in missing.lower():
            raise EdgeeffError(f"EdgeTPU runtime {lib} not found (TFLite runtime: {runtime}): "
                               + INSTALL_HINT)
        raise EdgeeffError(f"EdgeTPU runtime {lib} cannot be loaded ({missing.strip()}; TFLite "
                           f"runtime: {runtime}): " + INSTALL_HINT)
    err = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
    last = err[-1] if err else f"exit code {r.returncode}"
    raise EdgeeffError(f"the EdgeTPU delegate did not load with {runtime} and "
                       f"{_found(lines, lib)}: {last}; is the Coral connected (lsusb shows "
                       "'Global Unichip' or 'Google'), and for USB, are Coral's udev rules "
                       "installed (log out and in after installing libedgetpu1-std)?")


def _child(lib: str, module: str) -> int:
    try:
        handle = ctypes.CDLL(lib)
    except OSError as e:
        print(f"missing: {e}", flush=True)
        return 1
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/maps") as maps:
                paths = {ln.split()[-1] for ln in maps if "edgetpu" in ln and "/" in ln}
            if paths:
                print(f"path: {sorted(paths)[0]}", flush=True)
        except OSError:
            pass
    try:  # edgetpu_c.h: const char* edgetpu_version()
        fn = handle.edgetpu_version
        fn.restype = ctypes.c_char_p
        print(f"version: {fn().decode(errors='replace')}", flush=True)
    except AttributeError:
        pass
    load_delegate = importlib.import_module(f"{module}.interpreter").load_delegate
    load_delegate(lib)  # a mismatched libedgetpu crashes here
    print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
