"""Do edgeeff's extras resolve to binary wheels where its users are? Linux aarch64 (64-bit
Raspberry Pi OS), macOS arm64, x86-64 Linux; 32-bit Pi OS (armv7l) for information.

For each (platform, Python, extra set) this evaluates the requirements' environment markers
for the *target* (pip evaluates them for the host even with --platform), drops those that do
not apply, and asks pip whether the rest resolves to wheels:

    pip install --dry-run --ignore-installed --only-binary=:all: --platform TAG ...
        --python-version V --implementation cp --target TMP --report R.json REQS...

against the index pip is configured for (it downloads some wheels to read their metadata:
minutes, a few hundred MB, on the first run; pip's cache makes later runs quick). Then, per
package, whether the runtime's own dependencies have wheels on armv7l.

    python benchmarks/check_platforms.py                      # the defaults below
    python benchmarks/check_platforms.py --python 3.11 --platforms linux-aarch64
    python benchmarks/check_platforms.py --markers-only       # no network: the marker table

Exit status: 0 when every required combination resolved, 1 when one did not, 2 on a usage
error, 3 when the index cannot be reached (0 with --offline-ok).
Adapted from a colleague's /tmp/wheels/check_platforms.py (reviewed): the manylinux tags are
spelled out down to 2_17 (pip does not expand an explicit --platform to older glibc tags).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pip vendors it
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _manylinux(arch: str, newest: int) -> tuple[str, ...]:
    return tuple(f"manylinux_2_{m}_{arch}" for m in range(newest, 16, -1)) + (
        f"manylinux2014_{arch}",)


@dataclass(frozen=True)
class Platform:
    name: str
    what: str
    tags: tuple[str, ...]
    sys_platform: str
    platform_system: str
    platform_machine: str
    required: bool = True

    def marker_env(self, python: str) -> dict[str, str]:
        """A complete marker environment, so that nothing falls back to the host's values."""
        return {
            "implementation_name": "cpython", "implementation_version": f"{python}.0",
            "os_name": "posix", "platform_machine": self.platform_machine,
            "platform_python_implementation": "CPython", "platform_release": "",
            "platform_system": self.platform_system, "platform_version": "",
            "python_full_version": f"{python}.0", "python_version": python,
            "sys_platform": self.sys_platform, "extra": "",
        }


PLATFORMS = {p.name: p for p in (
    Platform("linux-x86_64", "x86-64 Linux, glibc <= 2.35 (Ubuntu 22.04)",
             _manylinux("x86_64", 35), "linux", "Linux", "x86_64"),
    Platform("linux-aarch64", "64-bit Raspberry Pi OS Bookworm (glibc 2.36), Ubuntu 22.04 arm64",
             _manylinux("aarch64", 36), "linux", "Linux", "aarch64"),
    Platform("macos-arm64", "Apple-silicon macOS 11-14",
             tuple(f"macosx_{v}_0_{a}" for v in (14, 13, 12, 11) for a in ("arm64", "universal2")),
             "darwin", "Darwin", "arm64"),
    Platform("linux-armv7l", "32-bit Raspberry Pi OS Bookworm (glibc 2.36)",
             _manylinux("armv7l", 36) + ("linux_armv7l",), "linux", "Linux", "armv7l",
             required=False),
)}
PYTHONS = ("3.10", "3.11", "3.12")
SETS = ("export+pretrained", "runtime")
# one by one on armv7l: which of the device's packages have wheels there
ARMV7_PROBES = ("numpy", "opencv-python-headless", "psutil", "ai-edge-litert", "tflite-runtime")
NETWORK_ERRORS = ("Could not fetch URL", "NewConnectionError", "Max retries exceeded",
                  "Temporary failure in name resolution", "Network is unreachable",
                  "Connection refused", "ConnectTimeoutError", "ProxyError")


# --------------------------------------------------------------------------- markers


def load_project(path: Path) -> tuple[str, list[str], dict[str, list[str]]]:
    project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    return (canonicalize_name(project.get("name", "")), list(project.get("dependencies", [])),
            dict(project.get("optional-dependencies", {})))


def expand(project: str, extras: dict[str, list[str]], wanted: list[str],
           seen: set[str] | None = None) -> list[str]:
    """The requirement lines of ``wanted`` extras, following ``project[a,b]`` references."""
    seen = set() if seen is None else seen
    out: list[str] = []
    for extra in wanted:
        if extra in seen:
            continue
        if extra not in extras:
            raise SystemExit(f"error: no extra {extra!r} (have: {', '.join(sorted(extras))})")
        seen.add(extra)
        for line in extras[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == project:
                out += expand(project, extras, sorted(req.extras), seen)
            else:
                out.append(line)
    return out


def for_target(lines: list[str], env: dict[str, str]) -> tuple[list[str], list[str]]:
    """(kept without markers, dropped) for the marker environment ``env``."""
    kept, dropped = [], []
    for line in lines:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            dropped.append(line)
            continue
        req.marker = None
        if str(req) not in kept:
            kept.append(str(req))
    return kept, dropped


def requirements(pyproject: Path, set_name: str, platform: str, python: str
                 ) -> tuple[list[str], list[str]]:
    """(kept, dropped) requirements of ``set_name`` (``a+b`` extras, base dependencies
    included) on ``platform`` with ``python``."""
    project, base, extras = load_project(pyproject)
    lines = base + expand(project, extras, set_name.split("+"))
    return for_target(lines, PLATFORMS[platform].marker_env(python))


# --------------------------------------------------------------------------- pip


@dataclass
class Result:
    platform: str
    python: str
    set_name: str
    reqs: list[str]
    dropped: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | fail | network
    error: str = ""
    versions: dict[str, str] = field(default_factory=dict)


def _pip_dry_run(plat: Platform, python: str, reqs: list[str], no_deps: bool = False,
                 timeout: int = 900) -> tuple[int, str, dict]:
    with tempfile.TemporaryDirectory(prefix="check-platforms-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--dry-run",
               "--ignore-installed", "--only-binary=:all:", "--quiet", "--python-version", python,
               "--implementation", "cp", "--target", str(Path(tmp) / "t"), "--report", str(report)]
        for tag in plat.tags:
            cmd += ["--platform", tag]
        if no_deps:
            cmd.append("--no-deps")
        try:
            r = subprocess.run(cmd + reqs, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return 1, f"pip did not finish in {timeout}s", {}
        data = json.loads(report.read_text()) if r.returncode == 0 and report.is_file() else {}
    return r.returncode, r.stdout + r.stderr, data


def _first_error(output: str) -> str:
    errors = [ln.strip() for ln in output.splitlines() if ln.startswith("ERROR:")]
    return errors[-1] if errors else (output.strip().splitlines() or [""])[-1]


def resolve(res: Result) -> Result:
    rc, out, data = _pip_dry_run(PLATFORMS[res.platform], res.python, res.reqs)
    if rc == 0:
        res.versions = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
                        for i in data.get("install", [])}
    else:
        res.status = "network" if any(s in out for s in NETWORK_ERRORS) else "fail"
        res.error = _first_error(out)
    return res


def probe(plat: Platform, python: str, package: str) -> str:
    rc, out, data = _pip_dry_run(plat, python, [package], no_deps=True)
    if rc != 0:
        return "index unreachable" if any(s in out for s in NETWORK_ERRORS) else "no wheel"
    item = data["install"][0]
    return f"{item['metadata']['version']} ({item['download_info']['url'].rsplit('/', 1)[-1]})"


# --------------------------------------------------------------------------- main


def marker_table(pyproject: Path, platforms, pythons, sets) -> list[str]:
    lines = []
    for p in platforms:
        for py in pythons:
            for s in sets:
                _, dropped = requirements(pyproject, s, p.name, py)
                lines.append(f"  {p.name:<14} py{py:<5} {s:<18} dropped: "
                             + (", ".join(dropped) or "-"))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    ap.add_argument("--sets", default=",".join(SETS), help="extra sets, '+' joins extras")
    ap.add_argument("--python", default=",".join(PYTHONS))
    ap.add_argument("--platforms", default=",".join(PLATFORMS))
    ap.add_argument("--markers-only", action="store_true", help="print the marker table only")
    ap.add_argument("--no-probes", action="store_true", help="skip the per-package armv7l probes")
    ap.add_argument("--offline-ok", action="store_true", help="exit 0 when the index is unreachable")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--jobs", type=int, default=3)
    a = ap.parse_args(argv)
    unknown = [n for n in a.platforms.split(",") if n not in PLATFORMS]
    if unknown:
        print(f"error: unknown platform(s) {', '.join(unknown)} (known: {', '.join(PLATFORMS)})",
              file=sys.stderr)
        return 2
    platforms = [PLATFORMS[n] for n in a.platforms.split(",")]
    pythons = [v.strip() for v in a.python.split(",") if v.strip()]
    sets = [s.strip() for s in a.sets.split(",") if s.strip()]
    print("Requirements dropped by their environment markers:")
    print("\n".join(marker_table(a.pyproject, platforms, pythons, sets)))
    if a.markers_only:
        return 0

    work = []
    for p in platforms:
        for py in pythons:
            for s in sets:
                kept, dropped = requirements(a.pyproject, s, p.name, py)
                work.append(Result(p.name, py, s, kept, dropped))
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        results = list(pool.map(resolve, work))
        probes = {}
        if not a.no_probes and "linux-armv7l" in a.platforms:
            keys = [(py, pkg) for py in pythons for pkg in ARMV7_PROBES]
            found = pool.map(lambda k: probe(PLATFORMS["linux-armv7l"], *k), keys)
            probes = dict(zip(keys, found))
    if all(r.status == "network" for r in results):
        print(f"{'skipped' if a.offline_ok else 'error'}: pip cannot reach the package index "
              f"({results[0].error})", file=sys.stderr)
        return 0 if a.offline_ok else 3

    print("\nplatform        python  set                 required  result")
    for r in results:
        req = "yes" if PLATFORMS[r.platform].required else "-"
        out = "resolved" if r.status == "ok" else f"FAIL {r.error}"
        print(f"{r.platform:<15} {r.python:<7} {r.set_name:<19} {req:<9} {out}")
    print("\nResolved versions of the direct requirements:")
    for r in results:
        if r.status == "ok":
            names = [canonicalize_name(Requirement(q).name) for q in r.reqs]
            print(f"  {r.platform} py{r.python} {r.set_name}: "
                  + ", ".join(f"{n}={r.versions[n]}" for n in names if n in r.versions))
    if probes:
        print(f"\nlinux-armv7l wheels on the index, one package at a time "
              f"({PLATFORMS['linux-armv7l'].what}):")
        for (py, pkg), what in probes.items():
            print(f"  py{py} {pkg:<24} {what}")
    if a.json:
        a.json.write_text(json.dumps({"results": [r.__dict__ for r in results],
                                      "armv7l_probes": {f"{py} {pkg}": v for (py, pkg), v
                                                        in probes.items()}}, indent=2) + "\n")
    bad = [r for r in results if r.status != "ok" and PLATFORMS[r.platform].required]
    if bad:
        print(f"\n{len(bad)} required combination(s) did not resolve.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
