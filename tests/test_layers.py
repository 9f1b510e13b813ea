"""The tiers' import rules: arrows point into the core, and the device side never needs
TensorFlow. Checked on the source (every import statement, nested ones included) and by
running the commands with the heavy packages blocked."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PKG = ROOT / "edgeeff"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
CORE_THIRD_PARTY = {"numpy", "click", "rich", "tomli"}
DEVICE_THIRD_PARTY = CORE_THIRD_PARTY | {"cv2", "ai_edge_litert", "tflite_runtime", "psutil",
                                         "picamera2", "flatbuffers", "tflite_micro"}
NEVER_ON_DEVICE = {"tensorflow", "keras", "tf_keras", "onnx", "onnx2tf", "onnxruntime"}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-node.level])
                out.append((node.lineno, f"{pkg}.{node.module}" if node.module else pkg))
            elif node.module == "edgeeff":  # from edgeeff import x -> edgeeff.x
                out.extend((node.lineno, f"edgeeff.{a.name}") for a in node.names)
            else:
                out.append((node.lineno, node.module))
    return out


def violations(tier: str, allowed_edgeeff: tuple[str, ...], third_party: set[str]) -> list[str]:
    bad = []
    for f in sorted((PKG / tier).glob("*.py")):
        for line, mod in imports(f):
            top = mod.split(".")[0]
            if top == "edgeeff":
                ok = mod == "edgeeff" or any(mod == f"edgeeff.{t}" or mod.startswith(f"edgeeff.{t}.")
                                             for t in allowed_edgeeff)
            else:
                ok = top in STDLIB or top in third_party
            if not ok:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    return bad


def test_core_imports_only_core_and_light_libraries():
    assert violations("core", ("core",), CORE_THIRD_PARTY) == []


def test_device_imports_only_core_device_and_runtime_libraries():
    assert violations("device", ("core", "device"), DEVICE_THIRD_PARTY) == []
    for f in (PKG / "device").glob("*.py"):
        assert not {m.split(".")[0] for _, m in imports(f)} & NEVER_ON_DEVICE, f


def test_nothing_imports_the_cli_and_model_never_imports_export():
    for f in PKG.rglob("*.py"):
        mods = {m for _, m in imports(f)}
        assert "edgeeff.cli" not in mods or f.name == "cli.py", f
        if f.parent.name == "model":
            assert not any(m.startswith("edgeeff.export") for m in mods), f


def test_the_checker_sees_nested_and_from_imports(tmp_path):
    # the rule test must itself be able to fail
    f = PKG / "core" / "_probe_for_test.py"
    f.write_text("def f():\n    import tensorflow\n    from edgeeff.device import demo\n")
    try:
        bad = violations("core", ("core",), CORE_THIRD_PARTY)
    finally:
        f.unlink()
    assert any("tensorflow" in b for b in bad) and any("edgeeff.device" in b for b in bad)


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
