"""Nothing gets in, nothing blows up (issue 34, items 2, 3 and 8).

* Decompression bombs: a PNG of a few KB whose IHDR declares 100000x100000 pixels, a JPEG whose
  SOF declares 65000x65000 and a real 8000x8000 PNG (64 MP, 192 MB decoded) are unreadable
  images for :func:`edgeeff.data.images.load_bgr`, refused from the header before anything is
  decoded: eval, export's calibration, train's loading and the demo's folder source skip and
  count them; peak memory stays that of a small process.
* NaN and infinity are refused wherever a budget, rate or spec figure comes in, and no JSON we
  write holds them; whole-number spec fields refuse fractions.
* Class folders whose names hold control characters or line breaks are refused in one line.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgeeff.core import fsutil, specfile, targets
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.units import parse_size
from edgeeff.data import images
from edgeeff.data.folder import FolderError, ImageFolder
from tests.conftest import ROOT, needs, run_cli


def png_bytes(width: int, height: int, rows: int = 4) -> bytes:
    """A PNG whose IHDR says ``width`` x ``height`` (8-bit RGB) and whose data holds ``rows``
    black rows: all rows for a real image, a few for a bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(1)
    row = b"\x00" + bytes(3 * width)
    idat = b"".join(z.compress(row) for _ in range(rows)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real photo whose SOF marker is patched to declare ``width`` x ``height``."""
    data = bytearray((ROOT / "calibration" / "chelsea_0.jpg").read_bytes())
    i = next(k for k in range(len(data) - 1) if data[k] == 0xFF and data[k + 1] in (0xC0, 0xC2))
    struct.pack_into(">HH", data, i + 5, height, width)
    return bytes(data)


BOMBS = {"bomb.png": lambda: png_bytes(100_000, 100_000),
         "bomb.jpg": lambda: jpeg_declaring(65_000, 65_000)}


def _bomb_folder(root: Path) -> Path:
    """Three class folders of two real photos each, plus the two bombs and a truncated JPEG."""
    photos = sorted((ROOT / "calibration").glob("*_0.jpg"))[:3]
    for i, p in enumerate(photos):
        d = root / f"class_{i}"
        d.mkdir(parents=True)
        shutil.copy(p, d / "a.jpg")
        shutil.copy(p, d / "b.jpg")
    (root / "class_0" / "bomb.png").write_bytes(BOMBS["bomb.png"]())
    (root / "class_1" / "bomb.jpg").write_bytes(BOMBS["bomb.jpg"]())
    (root / "class_2" / "cut.jpg").write_bytes(photos[2].read_bytes()[:400])
    return root


# ---------------------------------------------------------------------- the header reader


def test_image_size_reads_every_format_from_its_header():
    cv2 = needs("cv2")
    img = np.zeros((17, 23, 3), np.uint8)
    for ext, params in ((".png", []), (".jpg", []), (".bmp", []), (".webp", []),
                        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless: VP8L
                        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])):
        ok, enc = cv2.imencode(ext, img, params)
        assert ok and images.image_size(enc.tobytes()) == (23, 17), ext
        assert images.image_size(enc) == (23, 17), ext  # a uint8 array as np.fromfile gives
    # a JPEG with an EXIF segment before its frame header (its thumbnail is not the image)
    jpg = (ROOT / "calibration" / "chelsea_0.jpg").read_bytes()
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 14) + b"Exif\x00\x00" + b"\xff\xc0\x00\x11" + bytes(4)
    assert images.image_size(jpg[:2] + app1 + jpg[2:]) == images.image_size(jpg)
    # WebP's extended header (VP8X) carries the canvas size
    vp8x = b"RIFF" + struct.pack("<I", 22) + b"WEBPVP8X" + struct.pack("<I", 10) + bytes(4) \
        + (99_999).to_bytes(3, "little") + (4_999).to_bytes(3, "little")
    assert images.image_size(vp8x) == (100_000, 5_000)
    assert images.image_size(png_bytes(100_000, 100_000)) == (100_000, 100_000)
    for junk in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xd9", b"BM", b"GIF89a" + bytes(20),
                 b"\xff\xd8" + bytes(100), jpg[:3]):
        assert images.image_size(junk) is None, junk


def test_decoded_images_are_unchanged():
    """The budget changes nothing for an ordinary photo: the pixels OpenCV gives."""
    cv2 = needs("cv2")
    for p in sorted((ROOT / "calibration").glob("*.jpg"))[:4]:
        ref = cv2.imdecode(np.fromfile(str(p), np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(images.load_bgr(p), ref)


# ---------------------------------------------------------------------- bombs


# The peak RSS of this process's own memory (VmHWM: reset by exec). getrusage's ru_maxrss is
# not: a child forked from a pytest process that has loaded TensorFlow starts at its size.
_PEAK = """
import re, sys
from edgeeff.data.images import load_bgr
for p in sys.argv[1:]:
    print(p, load_bgr(p) is None)
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
print("maxrss_kb", hwm)
"""


def test_bombs_are_refused_from_the_header_with_little_memory(tmp_path):
    """In a fresh process: every bomb is None (no exception), and the peak RSS stays that of
    an interpreter with OpenCV loaded (today's decoder: a cv2.error for the 100000x100000 PNG,
    and 192 MB more for the 8000x8000 one)."""
    needs("cv2")
    if not Path("/proc/self/status").is_file():
        pytest.skip("reads the peak RSS from /proc/self/status (Linux)")
    files = []
    for name, make in BOMBS.items():
        (tmp_path / name).write_bytes(make())
        files.append(tmp_path / name)
    big = tmp_path / "big.png"  # 64 megapixels, every row present: a real image
    big.write_bytes(png_bytes(8000, 8000, rows=8000))
    files.append(big)
    assert all(f.stat().st_size < 1_000_000 for f in files)
    r = subprocess.run([sys.executable, "-c", _PEAK, *map(str, files)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = dict(line.rsplit(" ", 1) for line in r.stdout.splitlines())
    assert all(lines[str(f)] == "True" for f in files), r.stdout
    assert int(lines["maxrss_kb"]) < 180_000, r.stdout  # the 64 MP image alone is 192 MB
    # the budget is a setting: raised, the 64 MP image decodes
    assert images.load_bgr(big, max_pixels=64_000_000).shape == (8000, 8000, 3)
    assert images.load_bgr(big, max_pixels=63_999_999) is None


def test_cv2_errors_are_unreadable_not_raised(tmp_path):
    """A header within the budget whose data OpenCV refuses with cv2.error (a PNG whose
    declared size exceeds OpenCV's own 2^30-pixel cap, under a budget raised past it)."""
    needs("cv2")
    p = tmp_path / "x.png"
    p.write_bytes(png_bytes(40_000, 40_000))
    assert images.load_bgr(p, max_pixels=2_000_000_000) is None


def test_eval_counts_bombs_as_unreadable(tmp_path):
    needs("ai_edge_litert")
    needs("cv2")
    from edgeeff.core.arch import phi_spec
    from edgeeff.device import synth

    data = _bomb_folder(tmp_path / "data")
    model = tmp_path / "m" / "model_int8.tflite"
    model.parent.mkdir()
    model.write_bytes(synth.build(phi_spec(-8, "lite", 3), seed=3))
    (model.parent / "labels.txt").write_text("class_0\nclass_1\nclass_2\n")
    r = run_cli("eval", str(model), "--data", str(data), "--threads", "1", "--json", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["images"] == 6 and res["unreadable"] == 3
    assert f"edgeeff: skipped 3 unreadable image file(s) under {data}" in r.stderr
    assert "Traceback" not in r.stderr
    # --max-pixels reaches the decoder: below a photo's size, nothing is readable
    r = run_cli("eval", str(model), "--data", str(data), "--max-pixels", "1000", timeout=120)
    assert r.returncode == 2 and r.stderr.endswith(
        f"edgeeff: error: no readable images under {data}\n"), r.stderr


def test_calibration_counts_bombs_as_unreadable(tmp_path):
    needs("cv2")
    from edgeeff.core.preprocess import Preprocessor
    from edgeeff.model.calibrate import load_calibration

    data = _bomb_folder(tmp_path / "data")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cs = load_calibration(data, Preprocessor(64), num=20)
    assert cs.record()["skipped_unreadable"] == 3
    assert len(cs.images) + len(cs.holdout) == 6
    assert any(str(x.message).startswith(f"skipped 3 unreadable image file(s) under {data}")
               for x in w)


def test_train_loading_says_how_many_images_it_skipped(tmp_path):
    needs("cv2")
    from edgeeff.core.arch import phi_spec
    from edgeeff.model import train

    data = _bomb_folder(tmp_path / "data")
    log: list[str] = []
    _, _, pixels, y, tr, va = train.load_split(data, None, 0.3, phi_spec(-8, "lite", 3), 0,
                                               train.Phases(), log.append)
    assert len(pixels) == len(y) == len(tr) + len(va) == 6
    assert log[0].startswith(f"skipped 3 unreadable image file(s) under {data} (")
    assert "--max-pixels" in log[0]


def test_demo_folder_source_skips_bombs(tmp_path):
    needs("cv2")
    from edgeeff.device.demo.sources import ImageFolderSource

    src = ImageFolderSource(_bomb_folder(tmp_path / "data"))
    assert len(list(src.frames())) == 6 and src.skipped == 3


# ---------------------------------------------------------------------- non-finite numbers


def _profile(tmp_path: Path, **changes: str) -> Path:
    lines = (ROOT / "targets" / "pi4.toml").read_text(encoding="utf-8").splitlines()
    top = [k for k in changes]
    lines = [ln for ln in lines if ln.split("=")[0].strip() not in top]
    first_table = next(i for i, ln in enumerate(lines) if ln.startswith("["))
    lines[first_table:first_table] = [f"{k} = {v}" for k, v in changes.items()]
    p = tmp_path / "bad.toml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize("key,value", [
    ("max_latency_ms", "nan"), ("max_latency_ms", "inf"), ("max_mflops", "nan"),
    ("max_mflops", "inf"), ("int8_macs_per_s", "nan"), ("int8_macs_per_s", "inf"),
    ("ram", "nan"), ("flash", "inf"),
])
def test_profiles_refuse_non_finite_figures(tmp_path, key, value):
    p = _profile(tmp_path, **{key: value})
    with pytest.raises(EdgeeffError, match=f"^{p}: key '{key}': "):
        targets.load(str(p))
    r = run_cli("fit", "--device", str(p), "--out", str(tmp_path / "s.json"), timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"key '{key}'" in r.stderr
    assert not (tmp_path / "s.json").exists()


def test_latency_table_refuses_infinity(tmp_path):
    text = (ROOT / "targets" / "pi4.toml").read_text(encoding="utf-8")
    assert "us_per_graph = " in text
    bad = "\n".join("us_per_graph = inf" if ln.startswith("us_per_graph") else ln
                    for ln in text.splitlines())
    with pytest.raises(EdgeeffError, match="us_per_graph"):
        targets.parse_profile(bad, "pi4", "pi4.toml")


def test_budget_options_refuse_non_finite_numbers():
    from click.testing import CliRunner

    from edgeeff.cli import main

    dev = targets.load("pi4")
    from edgeeff.core.budget import Budgets

    for kw in ({"max_latency_ms": math.nan}, {"max_mflops": math.inf}):
        with pytest.raises(EdgeeffError, match="finite"):
            Budgets.for_device(dev, **kw)
    for args in (["fit", "--device", "pi4", "--max-latency-ms", "nan"],
                 ["fit", "--device", "pi4", "--max-mflops", "inf"],
                 ["tune", "--device", "pi4", "--data", ".", "--val-split", "nan"],
                 ["tune", "--device", "pi4", "--data", ".", "--budget-minutes", "inf"],
                 ["export", "--preset", "lite0", "--max-int8-drop", "nan"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, (args, r.output)
        assert "is not a finite number" in r.stderr, (args, r.stderr)


def test_sizes_refuse_non_finite_numbers():
    for v in (math.nan, math.inf, "nanKB", "infMB"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(v)


def test_json_we_write_refuses_nan_and_infinity(tmp_path):
    doc = {"budgets": {"max_latency_ms": math.nan}, "rows": [1.0, math.inf]}
    with pytest.raises(fsutil.NotJSON, match=r"\$\.budgets\.max_latency_ms is nan") as e:
        fsutil.write_json_atomic(tmp_path / "x.json", doc)
    assert e.value.where == "$.budgets.max_latency_ms" and math.isnan(e.value.value)
    assert not list(tmp_path.iterdir())  # nothing written, no temporary left
    with pytest.raises(fsutil.NotJSON, match=r"\$\.rows\[1\] is inf"):
        fsutil.json_text({"rows": [1.0, math.inf]})
    assert fsutil.finite_or_none(doc) == {"budgets": {"max_latency_ms": None},
                                          "rows": [1.0, None]}


# ---------------------------------------------------------------------- spec files


def _spec(tmp_path: Path, edit) -> Path:
    from edgeeff.core.arch import phi_spec

    p = tmp_path / "edgeeff.json"
    specfile.write(p, specfile.SpecFile(phi_spec(-2, "lite", 10)))
    doc = json.loads(p.read_text())
    edit(doc)
    p.write_text(json.dumps(doc))  # Python's json writes NaN where a test puts one
    return p


@pytest.mark.parametrize("field,value", [("num_classes", 2.5), ("resolution", 224.5),
                                         ("num_classes", "10"), ("resolution", True)])
def test_spec_whole_number_fields_refuse_fractions(tmp_path, field, value):
    p = _spec(tmp_path, lambda d: d["spec"].__setitem__(field, value))
    with pytest.raises(specfile.SpecFileError, match=f"spec field '{field}' must be a whole "
                                                     f"number, got {value!r}"):
        specfile.read(p)
    r = run_cli("info", "--spec", str(p), timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"'{field}'" in r.stderr


def test_spec_whole_numbers_written_as_floats_are_accepted(tmp_path):
    p = _spec(tmp_path, lambda d: d["spec"].update(num_classes=10.0, resolution=160.0))
    spec = specfile.read(p).spec
    assert (spec.num_classes, spec.resolution) == (10, 160)
    assert isinstance(spec.num_classes, int) and isinstance(spec.resolution, int)


@pytest.mark.parametrize("edit", [
    lambda d: d["spec"].__setitem__("dropout", math.nan),
    lambda d: d["spec"].__setitem__("width", math.inf),
    lambda d: d.__setitem__("trained", {"weights": "w.h5", "labels": "l.txt", "top1": math.nan}),
])
def test_spec_files_refuse_non_finite_figures(tmp_path, edit):
    p = _spec(tmp_path, edit)
    assert "NaN" in p.read_text() or "Infinity" in p.read_text()
    with pytest.raises(specfile.SpecFileError) as e:
        specfile.read(p)
    assert "\n" not in str(e.value) and ("finite" in str(e.value))


# ---------------------------------------------------------------------- class folder names


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "esc\x1b[31m", "line\u2028sep",
                                  "cr\r", "del\x7f"])
def test_class_folders_with_control_characters_are_refused(tmp_path, name):
    photo = sorted((ROOT / "calibration").glob("*.jpg"))[0]
    for d in (name, "plain"):
        (tmp_path / d).mkdir()
        shutil.copy(photo, tmp_path / d / "a.jpg")
    with pytest.raises(FolderError) as e:
        ImageFolder(tmp_path, min_classes=2)
    assert e.value.problem == "bad_name" and e.value.name == name
    assert "\n" not in str(e.value) and repr(name) in str(e.value)
    if name == "a\nb":  # the one-line error through the command that writes labels.txt
        r = run_cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), timeout=300)
        assert r.returncode == 2 and "class folder 'a\\nb'" in r.stderr, r.stderr[-2000:]
        assert not (tmp_path / "o").exists()


def test_ordinary_unicode_class_names_are_kept(tmp_path):
    photo = sorted((ROOT / "calibration").glob("*.jpg"))[0]
    names = ["café", "中文", "with space", "a-b_c.d"]
    for d in names:
        (tmp_path / d).mkdir()
        shutil.copy(photo, tmp_path / d / "a.jpg")
    assert ImageFolder(tmp_path, min_classes=2).classes() == sorted(names)
