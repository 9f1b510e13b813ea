"""Every file name edgeeff writes or reads comes from ``edgeeff.core.artifacts``, and package
data is found one way (``edgeeff.core.data.package_data``, importlib.resources), in a checkout
and in an installed wheel alike."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgeeff.core import artifacts as A
from edgeeff.core.data import DATA_PACKAGE, data_dir, package_data
from tests.conftest import ROOT

PKG = ROOT / "edgeeff"
# a file name ending in .tflite, .json or .log (not a method call such as JavaScript's
# ``r.json()``), or a bare suffix; prose such as "a .tflite file" names no file
NAME = re.compile(r"[\w*-]\.(tflite|json|log)\b(?!\()|^\.(tflite|json|log)$")


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant):
            out.add(id(node.body[0].value))
    return out


def file_name_literals(path: Path, root: Path = ROOT) -> list[str]:
    """``path:line: text`` of every string literal (f-string parts included, docstrings not)
    in ``path`` that holds a .tflite/.json/.log file name or suffix."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    return [f"{path.relative_to(root)}:{n.lineno}: {n.value[:60]!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
            and NAME.search(n.value)]


def test_no_file_name_literal_outside_the_artifacts_table():
    found = [hit for f in sorted(PKG.rglob("*.py")) if f != PKG / "core" / "artifacts.py"
             for hit in file_name_literals(f)]
    assert found == []


def test_the_scan_finds_what_it_must(tmp_path):
    """The scan is not vacuous: the literals the exporters held before it are found, prose
    and docstrings are not."""
    src = tmp_path / "m.py"
    src.write_text('"""Writes arena.json."""\n'
                   'A = folder / "edgetpu_compiler.log"\n'
                   'B = int8_path.stem + "_edgetpu.tflite"\n'
                   'C = p.with_suffix(".json")\n'
                   'D = f"{stem}.json"\n'
                   'E = "expected a .tflite file or an export folder"\n'
                   'F = "await r.json()"\n', encoding="utf-8")
    hits = file_name_literals(src, tmp_path)
    assert [h.split(":")[1] for h in hits] == ["2", "3", "4", "5"]


def test_compiled_and_tflm_names_come_from_the_table():
    assert A.EDGETPU_MODEL == "model_int8_edgetpu.tflite" == A.compiled_name(A.INT8_MODEL)
    assert A.EDGETPU_MODEL.endswith(A.EDGETPU_SUFFIX) and A.INT8_MODEL.endswith(A.TFLITE_SUFFIX)
    tflm = A.FORMATS["tflm"].files
    for name in (A.TFLM_MODEL, A.TFLM_ARENA, A.TFLM_MODEL_DATA_H, A.TFLM_MODEL_DATA_CC):
        assert f"{A.TFLM_DIR}/{name}" in tflm


def test_package_data_is_found_one_way():
    """No module outside core/data.py reaches package data through ``__file__`` or
    importlib.resources (``deploy/firmware.py``'s development TFLM tree beside a checkout and
    ``deploy/bundle.py``'s source tree are not package data)."""
    allowed = {"core/data.py", "deploy/firmware.py", "deploy/bundle.py"}
    offenders = [f"{f.relative_to(PKG)}:{i}" for f in sorted(PKG.rglob("*.py"))
                 if f.relative_to(PKG).as_posix() not in allowed
                 for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
                 if "__file__" in line or "resources.files(" in line
                 or "import resources" in line]
    assert offenders == []


def test_every_package_data_file_the_code_reads_is_there():
    for name in (A.IMAGENET_LABELS, A.IMAGENET_WNIDS, A.ACCURACY_TABLE):
        assert package_data(DATA_PACKAGE, name).is_file(), name
    tpl = package_data("edgeeff.export", A.TFLM_PROJECT_TEMPLATE)
    for rel in A.TFLM_PROJECT_FILES:
        name = rel + A.TEMPLATE_SUFFIX if rel in A.TFLM_TEMPLATES else rel
        assert tpl.joinpath(*name.split("/")).is_file(), name
    assert any(data_dir("targets").glob("*.toml"))
    assert any(data_dir("calibration").glob("*.jpg"))


_PROBE = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import edgeeff
assert Path(edgeeff.__file__).is_relative_to(Path(sys.argv[1])), edgeeff.__file__
from edgeeff.core import accuracy, labels
from edgeeff.core.data import data_dir
from edgeeff.export.tflm import PROJECT_FILES, _template
assert len(labels.imagenet_labels()) == len(labels.imagenet_wnids()) == 1000
assert accuracy.measurements()
for rel in PROJECT_FILES:
    assert _template(rel + ".in" if rel in ("Makefile", "CMakeLists.txt", "README.md") else rel)
assert any(data_dir("targets").glob("*.toml")) and any(data_dir("calibration").glob("*.jpg"))
print("ok", edgeeff.__file__)
"""


def test_an_installed_wheel_finds_its_package_data(tmp_path):
    """The wheel built from this checkout, installed into a folder of its own, reads its labels,
    accuracy table, TFLite Micro templates, device profiles and calibration photos without
    the checkout (run from elsewhere, with only that folder on the path)."""
    pytest.importorskip("setuptools")
    from edgeeff.deploy.bundle import build_wheel

    whl = build_wheel(ROOT, tmp_path / "wheels")  # on a copy of the source, as bundle does
    names = set(zipfile.ZipFile(whl).namelist())
    assert f"edgeeff/data/{A.ACCURACY_TABLE}" in names
    assert f"edgeeff/export/{A.TFLM_PROJECT_TEMPLATE}/{A.TFLM_STARTUP}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(whl).extractall(site)  # what pip install --target lays out, without pip
    # -I: neither the checkout (cwd, PYTHONPATH) nor the user's site; the probe puts the
    # installed folder first on the path
    r = subprocess.run([sys.executable, "-I", "-c", _PROBE, str(site)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr
