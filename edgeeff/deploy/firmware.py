"""``edgeeff firmware``: build the TFLite Micro project ``export --format tflm`` wrote, run it
on the host or under QEMU, and report whether its output equals the .tflite model's, the arena
it used, and the ELF's flash and static RAM against a device profile.

Only the framework sources and the kernels the exported resolver registers are compiled
(``edgeeff.export.tflm.kernel_stems``). Objects of the TFLM tree are cached per machine under
``~/.cache/edgeeff/tflm/`` (``$XDG_CACHE_HOME`` respected), keyed by a checksum of the tree
(every file's path and content) and the compiler with its flags, so a second model or a
second build of the same one compiles only its own ``main.cc`` and ``model_data.cc``, and a
copy of the same tree (another checkout, a re-provisioned ``../shared``) reuses the objects.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.table import Table

from edgeeff.core import artifacts as A
from edgeeff.core import mcu_latency, records, targets
from edgeeff.core.data import DATA_PACKAGE, package_data
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import interrupted, write_json_atomic, write_text_atomic
from edgeeff.export import tflmreport

KB = 1024
RUN_TIMEOUT_S = 300
# QEMU runs the firmware with -icount shift=0: the virtual clock advances 2**0 ns per guest
# instruction and nothing else (align=off: not slowed to the host's clock; sleep=off: no idle
# time), so the board's timers -- SysTick on the processor clock, which main.cc reads around
# every op -- count instructions, the same on every run and host. One SysTick tick is
# 1e9 / (the board's SYSCLK) ns of virtual time, i.e. that many instructions.
ICOUNT_SHIFT = 0
QEMU_SYSCLK_HZ = {"mps2-an386": 25_000_000, "mps2-an500": 25_000_000, "mps2-an505": 20_000_000}
INSTRUCTIONS_NOTE = ("instructions executed, counted by QEMU -icount (deterministic virtual "
                     "time) through SysTick read around each op: a count, not cycles; "
                     "edgeeff.core.mcu_latency turns it into milliseconds per core")


@dataclass(frozen=True)
class Target:
    """One build target: the TFLM tree it needs, compiler flags, and where it can run."""

    name: str
    tree: str  # folder under ../shared/tflm/
    cpu_flags: tuple[str, ...] = ()
    qemu_machine: str | None = None  # qemu-system-arm -M ...
    memory: tuple[int, int, int, int] | None = None  # flash origin, length, RAM origin, length

    @property
    def cross(self) -> bool:
        return self.name != "host"


_MPS2 = (0x00000000, 4 * KB * KB, 0x20000000, 4 * KB * KB)
TARGETS = {
    "host": Target("host", "host"),
    "cortex-m7": Target("cortex-m7", "cortex-m7-cmsis-nn",
                        ("-mcpu=cortex-m7+nofp", "-DCPU_M7=1", "-DARMCM7"), "mps2-an500", _MPS2),
    "cortex-m4": Target("cortex-m4", "cortex-m7-cmsis-nn", ("-mcpu=cortex-m4+nofp",),
                        "mps2-an386", _MPS2),
    "cortex-m33": Target("cortex-m33", "cortex-m7-cmsis-nn", ("-mcpu=cortex-m33+nofp",),
                         "mps2-an505", (0x10000000, 4 * KB * KB, 0x38000000, 4 * KB * KB)),
    "cortex-m0plus": Target("cortex-m0plus", "cortex-m7-cmsis-nn", ("-mcpu=cortex-m0plus",),
                            None, (0x00000000, 16 * KB * KB, 0x20000000, 16 * KB * KB)),
}
NO_QEMU = {"cortex-m0plus": "QEMU has no Cortex-M0+ board (its micro:bit is a Cortex-M0 with "
                            "16 KB RAM): build only"}
# Debian packages that provide the tools
PACKAGES = {"g++": "g++", "gcc": "gcc", "size": "binutils", "ar": "binutils",
            "arm-none-eabi-g++": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
            "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
            "arm-none-eabi-size": "binutils-arm-none-eabi",
            "arm-none-eabi-ar": "binutils-arm-none-eabi",
            "qemu-system-arm": "qemu-system-arm"}

COMMON = ("-O2", "-DTF_LITE_STATIC_MEMORY", "-DTF_LITE_DISABLE_X86_NEON",
          "-DKERNELS_OPTIMIZED_FOR_SPEED", "-ffunction-sections", "-fdata-sections",
          "-fno-unwind-tables", "-fmessage-length=0")
ARM_COMMON = ("-mthumb", "-mfloat-abi=soft", "-DCMSIS_NN", "-DPROJECT_GENERATION",
              "-DTF_LITE_MCU_DEBUG_LOG", "-DARM_NN_ENABLE_F16=0", "-DARM_NN_ENABLE_F32=0",
              "-funsigned-char", "-fomit-frame-pointer")
CXX_ONLY = ("-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics")
C_ONLY = ("-std=c17",)


class ToolMissing(EdgeeffError):
    """A compiler, binutils or QEMU is not on PATH: ``tool`` and the Debian ``package``."""

    def __init__(self, tool: str, package: str):
        super().__init__(f"{tool} not found on PATH: sudo apt-get install {package}")
        self.tool, self.package = tool, package


class BuildFailed(EdgeeffError):
    """A compile or link step failed: ``step`` (the file or 'link') and the compiler's
    first error line."""

    def __init__(self, step: str, first_error: str, log: Path | None = None):
        where = f" (full log: {log})" if log else ""
        super().__init__(f"firmware build failed at {step}: {first_error}{where}")
        self.step, self.first_error, self.log = step, first_error, log


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(name, PACKAGES.get(name, name))
    return path


def repo_tflm_dir() -> Path:
    """``../shared/tflm`` beside the repository this package lives in."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "tflm"


# tflite-micro's own generator of a standalone tree (run from a checkout of that repository;
# its Makefile downloads the third-party sources, CMSIS-NN included, on the first run)
CREATE_TREE = "python3 tensorflow/lite/micro/tools/project_generation/create_tflm_tree.py"


def make_tree_command(target: Target) -> str:
    """The command that makes a tree ``target`` builds against (CMSIS-NN for a Cortex-M)."""
    if not target.cross:
        return f"'{CREATE_TREE} tflm-host'"
    return (f"'{CREATE_TREE} --makefile_options=\"TARGET=cortex_m_generic "
            f"TARGET_ARCH={target.name} OPTIMIZED_KERNEL_DIR=cmsis_nn\" tflm-cmsis-nn'")


def tflm_dir_for(target: Target, tflm_dir: str | os.PathLike | None = None) -> Path:
    """The TFLM tree: ``tflm_dir``, else ``$TFLM_DIR``, else ``../shared/tflm/<tree>``."""
    given = tflm_dir or os.environ.get("TFLM_DIR")
    d = Path(given) if given else repo_tflm_dir() / target.tree
    if not (d / "tensorflow" / "lite" / "micro" / "micro_interpreter.h").is_file():
        if not given:  # neither --tflm-dir nor $TFLM_DIR, and no tree beside the repository
            raise EdgeeffError(f"no TensorFlow Lite Micro tree (none at {d}): make one with "
                               f"{make_tree_command(target)} in a tflite-micro checkout "
                               "(docs/mcu.md), then pass --tflm-dir DIR or set TFLM_DIR")
        how = "--tflm-dir" if tflm_dir else "$TFLM_DIR"
        raise EdgeeffError(f"{d} ({how}) is not a TensorFlow Lite Micro source tree (no "
                           "tensorflow/lite/micro/micro_interpreter.h): pass --tflm-dir, a tree "
                           "made by tflite-micro's create_tflm_tree.py")
    if target.cross and not (d / "third_party" / "cmsis_nn" / "Source").is_dir():
        raise EdgeeffError(f"{d} has no third_party/cmsis_nn: --target {target.name} needs a "
                           "CMSIS-NN tree (create_tflm_tree.py with OPTIMIZED_KERNEL_DIR=cmsis_nn)")
    return d


def tree_checksum(tree: Path) -> str:
    """A checksum of a source tree: every file's relative path and content. Not its mtimes:
    a copied tree (new mtimes, the same sources) keeps its cached objects, and reading the
    sources once costs far less than compiling them again."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            data = p.read_bytes()
            h.update(f"{p.relative_to(tree).as_posix()}\0{len(data)}\n".encode())
            h.update(data)
    return h.hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeeff" / "tflm"


def library_sources(tree: Path, stems: list[str], exclude: list[str]) -> list[Path]:
    """The TFLM sources a firmware of these kernel stems needs, relative to ``tree``
    (``exclude``: framework file names it does not need, as the export recorded them)."""
    kdir = Path("tensorflow/lite/micro/kernels")
    out = []
    for p in sorted((tree / "tensorflow").rglob("*.cc")):
        rel = p.relative_to(tree)
        if kdir in rel.parents or rel.name in exclude:
            continue
        out.append(rel)
    for s in stems:
        cmsis = kdir / "cmsis_nn" / f"{s}.cc"
        main = cmsis if (tree / cmsis).is_file() else kdir / f"{s}.cc"
        if not (tree / main).is_file():
            raise EdgeeffError(f"{tree} has no kernel source {main}: not a TFLM tree this "
                               "export's resolver can build against")
        out.append(main)
        if (tree / kdir / f"{s}_common.cc").is_file():
            out.append(kdir / f"{s}_common.cc")
    nn = tree / "third_party" / "cmsis_nn" / "Source"
    if nn.is_dir():
        out += sorted(p.relative_to(tree) for p in nn.rglob("*.c"))
    return out


def _includes(tree: Path, target: Target) -> list[str]:
    inc = [tree, tree / "third_party/gemmlowp", tree / "third_party/flatbuffers/include",
           tree / "third_party/ruy", tree / "third_party/kissfft"]
    if target.cross:
        inc += [tree / "third_party/cmsis_nn", tree / "third_party/cmsis_nn/Include",
                tree / "third_party/cmsis", tree / "third_party/cmsis/CMSIS/Core/Include"]
    return [f"-I{p}" for p in inc]


@dataclass
class Toolchain:
    cxx: str
    cc: str
    ar: str
    size: str
    flags: tuple[str, ...]

    @classmethod
    def for_target(cls, target: Target) -> Toolchain:
        pre = "arm-none-eabi-" if target.cross else ""
        flags = COMMON + (ARM_COMMON + target.cpu_flags if target.cross
                          else ("-DTF_LITE_USE_CTIME",))
        return cls(_tool(pre + "g++"), _tool(pre + "gcc"), _tool(pre + "ar"),
                   _tool(pre + "size"), flags)

    def key(self) -> str:
        """Compiler identity and flags, for the object cache."""
        v = subprocess.run([self.cxx, "--version"], capture_output=True, text=True).stdout
        return hashlib.sha256((v.splitlines()[0] if v else self.cxx).encode()
                              + "\0".join(self.flags).encode()).hexdigest()[:16]

    def compile_cmd(self, src: Path, obj: Path, includes: list[str],
                    extra: tuple[str, ...] = ()) -> list[str]:
        if src.suffix == ".c":
            return [self.cc, *C_ONLY, *self.flags, *extra, *includes, "-c", str(src), "-o", str(obj)]
        return [self.cxx, *CXX_ONLY, *self.flags, *extra, *includes, "-c", str(src), "-o", str(obj)]


def _first_error(text: str) -> str:
    for line in text.splitlines():
        low = line.lower()
        if ("error" in low or "undefined reference" in low) and "collect2" not in low:
            return line.strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no output"


def _compile_all(jobs: list[tuple[list[str], Path, str]], workers: int, log_dir: Path) -> None:
    """Run compile commands in parallel; each writes a temporary object renamed on success
    (so a cache shared by concurrent builds never holds a half-written object).

    An interrupt (Ctrl-C, SIGTERM) or a failed compile stops the build at once: queued jobs
    are cancelled, the running compilers killed and their temporary objects removed, so
    Ctrl-C ends a cold build in moments rather than after every queued file. Each compiler
    runs in its own session (the gcc driver with its cc1/as children), so it is killed as a
    group, and a terminal's Ctrl-C reaches only edgeeff, which does the stopping.
    """
    stop = threading.Event()
    running: set[subprocess.Popen] = set()
    lock = threading.Lock()

    def one(job):
        cmd, obj, label = job
        obj.parent.mkdir(parents=True, exist_ok=True)
        tmp = obj.with_name(f".{obj.name}.{os.getpid()}.tmp")
        cmd = [*cmd[:-1], str(tmp)]
        try:
            with lock:
                if stop.is_set():
                    return
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
                running.add(proc)
            try:
                _, err = proc.communicate()
            finally:
                with lock:
                    running.discard(proc)
            if stop.is_set() or interrupted() is not None:
                return  # killed by the stop below: not a compile error
            if proc.returncode != 0:
                log_dir.mkdir(parents=True, exist_ok=True)
                log = log_dir / A.FIRMWARE_BUILD_LOG
                write_text_atomic(log, " ".join(cmd) + "\n" + err)
                raise BuildFailed(label, _first_error(err), log)
            os.replace(tmp, obj)
        finally:
            tmp.unlink(missing_ok=True)  # gone after the rename; else a partial object

    ex = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for f in [ex.submit(one, j) for j in jobs]:
            f.result()
    except BaseException:
        stop.set()
        ex.shutdown(wait=False, cancel_futures=True)
        with lock:
            procs = list(running)
        for proc in procs:
            _kill_group(proc)
        ex.shutdown(wait=True)  # the running jobs return as their compilers end
        raise
    ex.shutdown(wait=True)


def _kill_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM to a compiler's process group (the driver removes its own temporary files),
    SIGKILL if it is still there after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def build(project: Path, target: Target, tree: Path, arena: int | None = None,
          jobs: int | None = None) -> dict:
    """Compile and link ``project`` (an export's ``tflm/`` folder) for ``target``; returns the
    build record (ELF path, seconds, objects compiled and taken from the cache)."""
    t0 = time.perf_counter()
    arena_json = project / A.TFLM_ARENA
    if not arena_json.is_file() or not (project / A.TFLM_MAIN).is_file() \
            or not (project / A.TFLM_TEST_INPUT).is_file():
        raise EdgeeffError(f"{project} has no firmware project ({A.TFLM_ARENA}, {A.TFLM_MAIN}, "
                           f"{A.TFLM_TEST_INPUT}): re-run 'edgeeff export --format tflm'")
    rec = tflmreport.read(project)
    tc = Toolchain.for_target(target)
    workers = jobs or os.cpu_count() or 2
    includes = _includes(tree, target)
    key = f"{tree_checksum(tree)}-{tc.key()}"
    cache = cache_root() / key
    srcs = library_sources(tree, list(rec.kernels), list(rec.framework_exclude))
    lib_jobs, cached = [], 0
    objs = []
    for rel in srcs:
        obj = cache / "obj" / rel.with_suffix(rel.suffix + ".o")
        objs.append(obj)
        if obj.is_file():
            cached += 1
        else:
            lib_jobs.append((tc.compile_cmd(tree / rel, obj, includes), obj, rel.as_posix()))
    out = project / "build" / target.name
    _compile_all(lib_jobs, workers, out)
    lib = cache / f"libtflm-{_digest(*[o.as_posix() for o in objs])}.a"
    if not lib.is_file():
        tmp = lib.with_name(f".{lib.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            r = subprocess.run([tc.ar, "rcs", str(tmp), *map(str, objs)], capture_output=True,
                               text=True)
            if r.returncode != 0:
                raise BuildFailed("archive", _first_error(r.stderr))
            os.replace(tmp, lib)
        finally:
            tmp.unlink(missing_ok=True)  # gone after the rename; else a partial archive
    # the project's own sources: rebuilt when they, their headers or the flags change
    extra = (f"-DEDGEEFF_ARENA_SIZE={arena}",) if arena else ()
    headers = b"".join((project / h).read_bytes() for h in (A.TFLM_MODEL_DATA_H, A.TFLM_TEST_INPUT))
    app = [project / A.TFLM_MAIN, project / A.TFLM_MODEL_DATA_CC]
    if target.cross:
        app.append(project / A.TFLM_STARTUP)
    app_jobs, app_objs = [], []
    for src in app:
        d = _digest(src.read_bytes(), headers, key, *extra)
        obj = out / "obj" / f"{src.stem}-{d}.o"
        app_objs.append(obj)
        if not obj.is_file():
            app_jobs.append((tc.compile_cmd(src, obj, [f"-I{project}", *includes], extra),
                             obj, src.name))
    _compile_all(app_jobs, workers, out)
    elf = out / (A.FIRMWARE_ELF if target.cross else A.FIRMWARE_EXE)
    cmd = [tc.cxx, *CXX_ONLY, *tc.flags, *map(str, app_objs), str(lib), "-Wl,--gc-sections"]
    if target.cross:
        fo, fl, ro, rl = target.memory
        ld = (project / A.TFLM_LINKER_SCRIPT).read_text("utf-8")
        for k, v in {"@FLASH_ORIGIN@": fo, "@FLASH_LENGTH@": fl, "@RAM_ORIGIN@": ro,
                     "@RAM_LENGTH@": rl}.items():
            ld = ld.replace(k, f"0x{v:08x}")
        write_text_atomic(out / A.FIRMWARE_LINKER_SCRIPT, ld)
        cmd += ["--specs=rdimon.specs", "-nostartfiles", "-T", str(out / A.FIRMWARE_LINKER_SCRIPT)]
    tmp = elf.with_name(f".{elf.name}.tmp")
    try:
        r = subprocess.run([*cmd, "-o", str(tmp)], capture_output=True, text=True)
        if r.returncode != 0:
            write_text_atomic(out / A.FIRMWARE_BUILD_LOG, " ".join(cmd) + "\n" + r.stderr)
            raise BuildFailed("link", _first_error(r.stderr), out / A.FIRMWARE_BUILD_LOG)
        os.replace(tmp, elf)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; else a partial ELF
    return {"elf": str(elf), "seconds": round(time.perf_counter() - t0, 1),
            "compiled": len(lib_jobs) + len(app_jobs), "cached": cached,
            "library_sources": len(srcs), "cache": str(cache), "arena_override": arena,
            "tree": str(tree), "toolchain": tc.cxx}


_BERKELEY = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+[0-9a-f]+\s", re.M)


def elf_sizes(elf: Path, size_tool: str) -> dict:
    """text (code), rodata, data and bss of an ELF, and flash = text + rodata + data,
    static RAM = data + bss (stack and heap come on top)."""
    b = subprocess.run([size_tool, str(elf)], capture_output=True, text=True, check=True).stdout
    m = _BERKELEY.search(b)
    if m is None:
        raise EdgeeffError(f"cannot read the sizes of {elf}: {b.strip()}")
    text_all, data, bss = (int(v) for v in m.groups())
    a = subprocess.run([size_tool, "-A", str(elf)], capture_output=True, text=True,
                       check=True).stdout
    rodata = sum(int(s) for name, s in re.findall(r"^(\.rodata\S*)\s+(\d+)", a, re.M))
    return {"text": text_all - rodata, "rodata": rodata, "data": data, "bss": bss,
            "flash": text_all + data, "ram": data + bss}


def _budget(sizes: dict, device) -> dict:
    def short(used: int, have: int) -> int:
        return max(0, -(-(used - have) // KB))

    return {"name": device.name, "key": device.key, "flash_bytes": device.flash_bytes,
            "ram_bytes": device.ram_bytes,
            "flash_fits": sizes["flash"] <= device.flash_bytes,
            "ram_fits": sizes["ram"] <= device.ram_bytes,
            "flash_short_kb": short(sizes["flash"], device.flash_bytes),
            "ram_short_kb": short(sizes["ram"], device.ram_bytes)}


_RESULT = re.compile(r"edgeeff: top_class=(\d+) output_hash=([0-9a-f]+) arena_used=(\d+) "
                     r"arena_size=(\d+) kTensorArenaSize=(\d+) output_match=(yes|no)")


def parse_output(text: str) -> dict:
    """The firmware's printed lines -> its output values and result fields."""
    values: dict[int, list[int]] = {}
    for start, rest in re.findall(r"edgeeff: output\[(\d+)\]((?: -?\d+)+)", text):
        values[int(start)] = [int(v) for v in rest.split()]
    out = [v for k in sorted(values) for v in values[k]]
    m = _RESULT.search(text)
    err = re.search(r"edgeeff: ERROR ([^\r\n]*)", text)
    rec = {"output": out, "error": err.group(1).strip() if err else None}
    if m:
        rec.update(top_class=int(m.group(1)), output_hash=m.group(2),
                   arena_used=int(m.group(3)), arena_size=int(m.group(4)),
                   kTensorArenaSize=int(m.group(5)), firmware_match=m.group(6) == "yes")
    return rec


_COUNT_OP = re.compile(r"edgeeff: count op\[(\d+)\] (\S+) ticks=(\d+)")
_COUNT_TOTAL = re.compile(r"edgeeff: count invoke_ticks=(\d+)")


def parse_counts(text: str, ns_per_tick: float) -> dict | None:
    """The firmware's count lines -> instructions per op, per op kind and in total (None
    when it printed none: a host build, or a firmware built without counting).

    ``ns_per_tick``: virtual nanoseconds per SysTick tick; with ``-icount shift=s`` one
    instruction is 2**s ns. Counts are exact to one tick (``resolution``)."""
    total = _COUNT_TOTAL.search(text)
    if total is None:
        return None
    per_insn = 2.0 ** ICOUNT_SHIFT
    scale = ns_per_tick / per_insn
    ops = [{"op": int(i), "kind": k, "instructions": round(int(t) * scale)}
           for i, k, t in _COUNT_OP.findall(text)]
    kinds: dict[str, int] = {}
    for o in ops:
        kinds[o["kind"]] = kinds.get(o["kind"], 0) + o["instructions"]
    n = round(int(total.group(1)) * scale)
    return {"instructions": n, "per_op": ops, "by_kind": dict(sorted(kinds.items(),
                                                                     key=lambda kv: -kv[1])),
            "in_ops": sum(o["instructions"] for o in ops), "resolution": round(scale)}


MCU_CORES = package_data(DATA_PACKAGE, A.MCU_CORES)


def predict_mcu_ms(instructions: int, core: str, device: str) -> dict:
    """``{"predicted_ms", "predicted_basis"}`` for a count on ``core`` at ``device``'s clock
    (edgeeff/data/mcu_cores.json, through :mod:`edgeeff.core.mcu_latency`: the conversion the
    MCU profiles' ``[latency]`` tables use); ``predicted_ms`` None, with the reason, where the
    core is not calibrated, the device's clock is unknown or it has another core."""
    dev = mcu_latency.board(Path(device).stem)
    timing = mcu_latency.core_timing(core)
    if dev is None:
        return {"predicted_ms": None, "predicted_basis": f"no clock known for {device}"}
    if dev["core"] != core:
        return {"predicted_ms": None,
                "predicted_basis": f"{device} has a {dev['core']}, this build is {core}"}
    cpi = timing.cycles_per_instruction
    if cpi is None:
        return {"predicted_ms": None, "predicted_basis": timing.basis}
    ms = mcu_latency.instructions_to_ms(instructions, cpi, dev["clock_hz"])
    return {"predicted_ms": round(ms, 3),
            "predicted_basis": f"{cpi:g} cycles per instruction "
                               f"at {dev['clock_hz'] / 1e6:g} MHz: {timing.basis}"}


def run_firmware(elf: Path, target: Target, timeout: float = RUN_TIMEOUT_S) -> dict:
    """Run the built firmware on the host or under QEMU; its parsed output and how it ran."""
    if target.cross:
        if target.qemu_machine is None:
            return {"ran": False, "runner": None, "why": NO_QEMU.get(target.name, "no QEMU board")}
        icount = f"shift={ICOUNT_SHIFT},align=off,sleep=off"
        cmd = [_tool("qemu-system-arm"), "-M", target.qemu_machine, "-nographic",
               "-monitor", "none", "-semihosting-config", "enable=on,target=native",
               "-icount", icount, "-kernel", str(elf)]
        runner = f"qemu-system-arm -M {target.qemu_machine} -icount {icount}"
    else:
        cmd, runner = [str(elf)], "host"
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"ran": False, "runner": runner, "why": f"no result within {timeout:g} s"}
    rec = {"ran": True, "runner": runner, "exit_code": r.returncode,
           "wall_seconds": round(time.perf_counter() - t0, 2)}
    rec.update(parse_output(r.stdout + "\n" + r.stderr))
    if rec["error"] is None and "top_class" not in rec:
        how = (f"killed by signal {-r.returncode}" if r.returncode < 0
               else f"exit code {r.returncode}")
        rec["error"] = f"the firmware stopped ({how}) before printing its result"
    if target.cross:
        counts = parse_counts(r.stdout + "\n" + r.stderr,
                              1e9 / QEMU_SYSCLK_HZ.get(target.qemu_machine, 25_000_000))
        rec["instructions"] = None if counts is None else counts["instructions"]
        rec["counts"] = counts
        rec["instructions_note"] = INSTRUCTIONS_NOTE
    return rec


def firmware(outdir: str | os.PathLike, target: str = "host", tflm_dir=None, run: bool = False,
             device: str | None = None, arena: int | None = None, jobs: int | None = None) -> dict:
    """Build (and with ``run`` run) the firmware of the export folder ``outdir``; the report
    (also written to ``tflm/build/<target>/firmware.json``)."""
    if target not in TARGETS:
        raise EdgeeffError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    t = TARGETS[target]
    folder = Path(outdir)
    project = folder / A.TFLM_DIR if (folder / A.TFLM_DIR).is_dir() else folder
    if not (project / A.TFLM_ARENA).is_file():
        raise EdgeeffError(f"no TFLite Micro export in {folder}: run 'edgeeff export --format "
                           "tflm --out ...' first")
    dev = targets.load(device) if device else None
    tree = tflm_dir_for(t, tflm_dir)
    rec = tflmreport.read(project)
    b = build(project, t, tree, arena, jobs)
    sizes = elf_sizes(Path(b["elf"]), Toolchain.for_target(t).size)
    ti = rec.test_input
    sizes["test_input"] = int(math.prod(ti.shape)) if ti is not None else 0
    sizes["model"] = int(rec.model_bytes)
    report = {"target": t.name, "tflm_dir": str(tree), "build": b, "sizes": sizes,
              "kTensorArenaSize": rec.recommended_arena_bytes,
              "arena_host_python": rec.min_arena_bytes,
              "expected_with": None if ti is None else ti.expected_with,
              "device": _budget(sizes, dev) if dev else None, "run": None}
    if run:
        r = run_firmware(Path(b["elf"]), t)
        if r.get("ran"):
            expected = None if ti is None else list(ti.expected_output)
            r["output_equal"] = bool(r["output"]) and r["output"] == expected
            r["output_hash_check"] = (None if ti is None else ti.output_hash) == r.get("output_hash")
            if "arena_used" in r:
                r["arena_margin_pct"] = round(100 * (1 - r["arena_used"] / r["arena_size"]), 1)
        if r.get("counts") is not None and device:
            r.update(predict_mcu_ms(r["counts"]["instructions"], t.name, device))
        report["run"] = r
    write_json_atomic(Path(b["elf"]).parent / A.FIRMWARE_REPORT, report)
    return report


class NotCounted(EdgeeffError):
    """The firmware did not run, or ran and printed no instruction counts: ``why``."""

    def __init__(self, why: str):
        super().__init__(f"the firmware did not run or printed no counts: {why}")
        self.why = why


def counts(outdir: str | os.PathLike, target: str, tflm_dir=None) -> dict:
    """Build and run ``outdir``'s TFLite Micro project on ``target`` and return its instruction
    counts (:func:`parse_counts`'s record); :class:`NotCounted` where it did not run or
    printed none. What tools/mcu_op_counts.py and benchmarks/mcu_latency.py count with."""
    r = firmware(outdir, target, tflm_dir=tflm_dir, run=True)["run"]
    if not r.get("ran") or r.get("counts") is None:
        raise NotCounted(str(r.get("why") or r.get("error")))
    return r["counts"]


@dataclass(frozen=True)
class FirmwareCheck:
    """The firmware step of ``edgeeff tune`` on a microcontroller, in brief: built (and run
    under QEMU where the target has a board) or, where a tool or the TFLite Micro tree is
    missing, not built with ``missing`` saying what and how to get it. ``flash_bytes`` and
    ``ram_bytes`` are the ELF's flash and static RAM, ``*_fits`` against the device;
    ``output_equal`` whether the firmware's output equals the .tflite's (None: not run);
    ``report`` the full ``firmware.json``'s absolute path (tune.json may be read from
    elsewhere)."""

    target: str
    built: bool
    missing: str = ""
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    flash_fits: bool | None = None
    ram_fits: bool | None = None
    runner: str | None = None
    output_equal: bool | None = None
    report: str | None = None

    def line(self) -> str:
        if not self.built:
            return f"firmware ({self.target}): not built: {self.missing}"
        kb = f"flash {self.flash_bytes / KB:,.1f} KB, static RAM {self.ram_bytes / KB:,.1f} KB"
        if self.flash_fits is not None:
            kb += " (fits)" if self.flash_fits and self.ram_fits else " (does NOT fit the device)"
        run = ("not run" if self.runner is None else
               f"output {'equals' if self.output_equal else 'DIFFERS from'} the .tflite's "
               f"({self.runner})")
        return f"firmware ({self.target}): {kb}; {run}; {self.report}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FirmwareCheck:
        return cls(**records.known(cls, d))


def missing_for(target: str, tflm_dir=None, run: bool = True) -> str:
    """What building (and with ``run`` running) ``target``'s firmware lacks, as one line
    saying how to get it; "" when nothing is missing."""
    t = TARGETS[target]
    pre = "arm-none-eabi-" if t.cross else ""
    tools = [pre + "g++", pre + "gcc", pre + "ar", pre + "size"]
    if run and t.cross and t.qemu_machine is not None:
        tools.append("qemu-system-arm")
    for tool in tools:
        if shutil.which(tool) is None:
            return str(ToolMissing(tool, PACKAGES.get(tool, tool)))
    try:
        tflm_dir_for(t, tflm_dir)
    except EdgeeffError as e:
        return str(e)
    return ""


def check(outdir: str | os.PathLike, target: str, device: str, tflm_dir=None) -> FirmwareCheck:
    """Build and run the firmware of the export folder ``outdir`` for ``target`` against the
    profile ``device`` (:func:`firmware`), or, where a tool or the tree is missing or the
    build fails, say so in :attr:`FirmwareCheck.missing` instead of raising."""
    missing = missing_for(target, tflm_dir)
    if missing:
        return FirmwareCheck(target, False, missing)
    try:
        rep = firmware(outdir, target, tflm_dir, True, device)
    except BuildFailed as e:
        return FirmwareCheck(target, False, str(e))
    s, d, r = rep["sizes"], rep.get("device") or {}, rep.get("run") or {}
    return FirmwareCheck(target, True, "", s["flash"], s["ram"], d.get("flash_fits"),
                         d.get("ram_fits"), r.get("runner") if r.get("ran") else None,
                         r.get("output_equal") if r.get("ran") else None,
                         str(Path(rep["build"]["elf"]).resolve().parent / A.FIRMWARE_REPORT))


def passed(report: dict) -> bool:
    """Built, and (where checked) ran with the expected output and fits the device."""
    r, d = report.get("run"), report.get("device")
    if r is not None and r.get("runner") is not None and not r.get("output_equal"):
        return False  # it was run (or tried) and did not give the expected output
    return d is None or (d["flash_fits"] and d["ram_fits"])


def table(report: dict):
    """The report as a rich Table: one row per measured quantity."""
    s, d, r, b = report["sizes"], report.get("device"), report.get("run"), report["build"]
    t = Table(title=f"firmware for {report['target']} ({b['seconds']:g} s build: "
                    f"{b['compiled']} compiled, {b['cached']} from cache)")
    for col in ("", "value", "budget / reference", "verdict"):
        t.add_column(col)

    def kb(n):
        return f"{n / KB:,.1f} KB"

    def fit(ok, short):
        return "fits" if ok else f"[red]short by {short} KB[/red]"

    t.add_row("flash (text+rodata+data)", kb(s["flash"]),
              kb(d["flash_bytes"]) + f" ({d['name']})" if d else "-",
              fit(d["flash_fits"], d["flash_short_kb"]) if d else "no --device")
    t.add_row("  of which model / test input", f"{kb(s['model'])} / {kb(s['test_input'])}", "", "")
    t.add_row("static RAM (data+bss)", kb(s["ram"]),
              kb(d["ram_bytes"]) + f" ({d['name']})" if d else "-",
              fit(d["ram_fits"], d["ram_short_kb"]) if d else "no --device")
    if r is None:
        t.add_row("run", "not run", "", "add --run")
    elif not r.get("ran"):
        t.add_row("run", "not run", r.get("runner") or "", r.get("why", ""))
    else:
        if r.get("error"):
            t.add_row("firmware error", r["error"], "", "[red]failed[/red]")
        if "arena_used" in r:
            t.add_row("arena used", f"{r['arena_used']:,} B",
                      f"{r['arena_size']:,} B arena (kTensorArenaSize {r['kTensorArenaSize']:,})",
                      f"{r['arena_margin_pct']:g} % spare")
        t.add_row("output vs .tflite int8", " ".join(map(str, r["output"][:10]))
                  + (" ..." if len(r["output"]) > 10 else ""),
                  report.get("expected_with") or "",
                  "equal" if r.get("output_equal") else "[red]differs[/red]")
        t.add_row("top class / hash", f"{r.get('top_class')} / {r.get('output_hash')}",
                  r["runner"], "")
        if "instructions_note" in r:
            c = r.get("counts")
            if c is None:
                t.add_row("instructions", "-", "", "the firmware printed no counts")
            else:
                top = ", ".join(f"{k} {v / c['instructions']:.0%}"
                                for k, v in list(c["by_kind"].items())[:3])
                t.add_row("instructions (invoke)", f"{c['instructions']:,}",
                          f"{len(c['per_op'])} ops: {top}", "QEMU -icount")
                if r.get("predicted_ms") is not None:
                    t.add_row("predicted latency", f"{r['predicted_ms']:.3g} ms",
                              r.get("predicted_basis", ""), "")
    return t
