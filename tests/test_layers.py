"""The tiers' import rules, checked on the source (every import statement, nested ones
included) and by running the commands with the heavy packages blocked.

The order is core <- tflite <- data <- device <- model <- export <- deploy <- the CLI
(edgeeff/*.py): a module may import edgeeff modules of its own tier or of tiers to its left,
never to its right. The core imports nothing outside the standard library, numpy, click and rich;
the device tier never imports TensorFlow, Keras or ONNX."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PKG = ROOT / "edgeeff"
TIERS = ("core", "tflite", "data", "device", "model", "export", "deploy")
TOP = len(TIERS)  # edgeeff/cli.py, report.py, plot.py, __main__.py
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
CORE_THIRD_PARTY = {"numpy", "click", "rich", "tomli"}
TFLITE_THIRD_PARTY = CORE_THIRD_PARTY | {"tflite", "flatbuffers", "ai_edge_litert", "tflite_micro"}
DEVICE_THIRD_PARTY = TFLITE_THIRD_PARTY | {"cv2", "tflite_runtime", "psutil", "picamera2"}
THIRD_PARTY = {"core": CORE_THIRD_PARTY, "tflite": TFLITE_THIRD_PARTY, "data": DEVICE_THIRD_PARTY,
               "device": DEVICE_THIRD_PARTY}
NEVER_ON_DEVICE = {"tensorflow", "keras", "tf_keras", "onnx", "onnx2tf", "onnxruntime"}


def imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                pkg = ".".join(path.relative_to(root).with_suffix("").parts[:-node.level])
                out.append((node.lineno, f"{pkg}.{node.module}" if node.module else pkg))
            elif node.module == "edgeeff":  # from edgeeff import x -> edgeeff.x
                out.extend((node.lineno, f"edgeeff.{a.name}") for a in node.names)
            else:
                out.append((node.lineno, node.module))
    return out


def tier_of(module: str) -> int:
    """Rank of an edgeeff module (``edgeeff.device.demo.loop`` -> 3); top-level modules rank last."""
    parts = module.split(".")
    return TIERS.index(parts[1]) if len(parts) > 1 and parts[1] in TIERS else TOP


def violations(files, root: Path = ROOT) -> list[str]:
    bad = []
    for f in files:
        rel = f.relative_to(root)
        own = tier_of(".".join(rel.with_suffix("").parts))
        allowed = THIRD_PARTY.get(TIERS[own]) if own < TOP else None
        for line, mod in imports(f, root):
            top = mod.split(".")[0]
            if top == "edgeeff":
                if mod != "edgeeff" and not mod.startswith("edgeeff.__") and tier_of(mod) > own:
                    bad.append(f"{rel}:{line} imports {mod} (a tier above)")
            elif allowed is not None and top not in STDLIB and top not in allowed:
                bad.append(f"{rel}:{line} imports {mod}")
            if own < TOP and TIERS[own] in ("core", "tflite", "data", "device") and top in NEVER_ON_DEVICE:
                bad.append(f"{rel}:{line} imports {mod} (never on the device)")
    return bad


def test_every_tier_imports_only_its_own_and_lower_tiers():
    files = sorted(PKG.rglob("*.py"))
    assert len(files) > 40
    assert violations(files) == []


def test_the_ruff_allow_list_is_the_one_list_of_optional_modules():
    """pyproject's banned-module-level-imports, the tiers' third-party sets here and
    edgeeff.core.optional.OPTIONAL describe the same modules (issue 36, item 4)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    from edgeeff.core.optional import OPTIONAL

    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    banned = ruff["flake8-tidy-imports"]["banned-module-level-imports"]
    modules = [o.module for o in OPTIONAL]
    assert sorted(banned) == sorted(modules)
    on_device = {o.module for o in OPTIONAL if o.on_device}
    optional_here = DEVICE_THIRD_PARTY - CORE_THIRD_PARTY - {"tflite", "flatbuffers"}
    assert optional_here == on_device
    assert NEVER_ON_DEVICE <= set(modules) - on_device


def test_every_package_is_in_the_wheel():
    """pyproject lists the packages by hand (targets/ and calibration/ are mapped in): a new
    sub-package missing there is missing from the wheel the bundle installs on the board."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in PKG.rglob("__init__.py")}
    assert found <= listed, found - listed


def test_missing_extra_messages_come_from_the_one_list():
    """No module writes its own "pip install 'edgeeff[...]'": require() and install_hint() do."""
    offenders = [f"{f.relative_to(ROOT)}:{i}" for f in sorted(PKG.rglob("*.py"))
                 if f.name != "optional.py"
                 for i, line in enumerate(f.read_text().splitlines(), 1)
                 if "pip install 'edgeeff[" in line and not line.lstrip().startswith("#")
                 and '"""' not in line and "``" not in line]
    assert offenders == []


def test_every_subpackage_is_a_known_tier():
    subpackages = {p.parent.relative_to(PKG).parts[0] for p in PKG.rglob("__init__.py") if p.parent != PKG}
    # edgeeff/data holds package data files too; it is the data tier
    assert subpackages <= set(TIERS), subpackages - set(TIERS)


def test_the_checker_sees_nested_from_and_upward_imports(tmp_path):
    # the rule test must itself be able to fail: a fake tree outside the package
    core = tmp_path / "edgeeff" / "core"
    core.mkdir(parents=True)
    probe = core / "probe.py"
    probe.write_text("def f():\n    import tensorflow\n    from edgeeff.device import demo\n"
                     "from ..export import pipeline\n")
    dev = tmp_path / "edgeeff" / "device"
    dev.mkdir()
    (dev / "probe.py").write_text("import onnx\nfrom edgeeff.core import cost\n")
    bad = violations([probe, dev / "probe.py"], root=tmp_path)
    assert any("tensorflow" in b for b in bad)
    assert any("edgeeff.device" in b for b in bad)
    assert any("imports edgeeff.export (a tier above)" in b for b in bad)
    assert any("device/probe.py:1 imports onnx" in b for b in bad)
    assert not any("edgeeff.core.cost" in b for b in bad)


BLOCKER = (
    "import sys, importlib.abc\n"
    "BLOCKED = set(sys.argv[1].split(','))\n"
    "class _Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in BLOCKED:\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, _Block())\n"
    "from edgeeff.cli import main\n"
    "sys.argv = ['edgeeff'] + sys.argv[2:]\n"
    "main()\n"
)


@pytest.mark.parametrize("args", [
    ["devices"], ["devices", "--json"],
    ["fit", "--device", "pi4", "--max-mflops", "400", "--json"],
    ["fit", "--device", "stm32f746", "--max-ram", "320KB", "--max-flash", "1MB"],
    ["fit", "--device", "pi4", "--pretrained", "--max-mflops", "300"],
    ["info", "--preset", "b0", "--json"], ["info", "--phi", "-2.5", "--family", "lite"],
])
def test_pure_commands_run_with_tensorflow_cv2_and_onnx_blocked(args, tmp_path):
    blocked = "tensorflow,keras,tf_keras,cv2,onnx,onnx2tf,onnxruntime,ai_edge_litert"
    extra = ["--out", str(tmp_path / "s.json")] if args[0] == "fit" else []
    r = subprocess.run([sys.executable, "-c", BLOCKER, blocked, *args, *extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1500:]
