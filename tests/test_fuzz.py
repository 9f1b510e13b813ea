"""Nothing crashes, nothing leaks: damaged models, odd arguments, broken spec and profile files.

Every damaged .tflite goes through the reader (``edgeeff.tflite``: ``verify``, ``read``,
``metadata_buffer``) and through the CLI (``bench`` for all of them, ``eval`` and ``demo`` for a
share), in-process in one child process so that a signal (a segfault in the runtime) is seen and
counted rather than taking pytest down. A few real subprocess runs prove the end-to-end contract:
exit code 2, one line on stderr, no traceback. Hypothesis drives ``fit``, ``info``, the spec
loader and the device-profile parser. Everything is seeded; the module takes about 25 s of CPU,
half of it the one small export.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgeeff.cli import main
from edgeeff.core import specfile, targets
from edgeeff.core.errors import EdgeeffError
from tests.conftest import ROOT, needs

SEED = 13
FUZZ = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------- damaged models


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The smallest real export (phi -10, 3 classes, float32 + int8 with metadata and zip)."""
    needs("tensorflow")
    needs("ai_edge_litert")
    from edgeeff.core.arch import phi_spec
    from edgeeff.export import ExportRequest, run
    from tests.conftest import seed_everything

    out = tmp_path_factory.mktemp("fuzz") / "exp"
    seed_everything(0)
    run(ExportRequest(spec=phi_spec(-10, "lite", 3), int8=True, calib=str(ROOT / "calibration"),
                      num_calib=2, out=out), log=lambda m: None)
    return out


def _structure(data: bytes) -> dict[str, list[int]]:
    """Byte positions of the flatbuffer's parts in a good model: vtables, table heads, fields,
    vector length words, weight bytes, and where the flatbuffer ends."""
    from edgeeff.tflite import verify as g

    w = g._Walker(data)
    parts: dict[str, list[int]] = {"vtable": [], "table": [], "field": [], "veclen": [],
                                   "weights": []}
    end = [0]

    def table(pos: int, name: str) -> None:
        vt = pos - w.i32(pos)
        parts["table"].extend(range(pos, pos + 4))
        parts["vtable"].extend(range(vt, vt + w.u16(vt)))
        end[0] = max(end[0], pos + w.u16(vt + 2), vt + w.u16(vt))
        for slot, (_, kind) in g.SCHEMA.get(name, {}).items():
            p = w.field(pos, slot)
            if not p:
                continue
            parts["field"].append(p)
            if isinstance(kind, int) or kind[0] == "union":
                continue
            target = p + w.u32(p)
            if kind[0] == "table":
                table(target, kind[1])
                continue
            parts["veclen"].append(target)
            n = w.u32(target)
            if kind[0] == "tables":
                for i in range(n):
                    e = target + 4 + 4 * i
                    table(e + w.u32(e), kind[1])
            else:
                size = kind[1] if kind[0] == "vec" else 1
                end[0] = max(end[0], target + 4 + n * size + (kind == "str"))
                if name == "Buffer" and n > 64:
                    parts["weights"].extend(range(target + 4, target + 4 + n))

    table(w.u32(0), "Model")
    parts["end"] = [end[0]]
    return parts


def _damaged(models: dict[str, bytes], rng: random.Random) -> list[tuple[str, bytes | None]]:
    """(label, bytes) for every damaged model; bytes None is a directory."""
    int8 = models["int8"]
    s = _structure(int8)
    end = s["end"][0]
    assert end < len(int8) and int8[end:].find(b"PK\x03\x04") >= 0, "flatbuffer, then the zip"
    cases: list[tuple[str, bytes | None]] = [
        ("empty", b""), ("one byte", b"\x00"), ("seven bytes", int8[:7]),
        ("identifier only", int8[:8]), ("directory", None),
        ("jpeg renamed", (ROOT / "calibration" / "chelsea_0.jpg").read_bytes()),
        ("png renamed", b"\x89PNG\r\n\x1a\n" + rng.randbytes(200)),
        ("text", b"this is not a model\n" * 20),
        ("zip renamed", int8[int8.find(b"PK\x03\x04", end):]),
        ("header then zeros", int8[:8] + bytes(4096)),
        ("root offset huge", struct.pack("<I", 0x7FFFFFF0) + int8[4:]),
        ("root offset past end", struct.pack("<I", len(int8) + 8) + int8[4:]),
    ]
    for n in (16, 100, 1000, 5000, 50_000, 300_000):
        cases.append((f"random {n} bytes", rng.randbytes(n)))
        cases.append((f"random {n} bytes + TFL3", rng.randbytes(4) + b"TFL3" + rng.randbytes(n)))
    # truncations: spread over the whole flatbuffer, and close to its end
    for i in range(40):
        cut = 8 + (end - 8) * i // 40 + rng.randrange(max(1, (end - 8) // 40))
        cases.append((f"truncated at {cut}", int8[:cut]))
    for k in (1, 2, 3, 4, 8, 17, 64):
        cases.append((f"truncated {k} before the flatbuffer's end", int8[:end - k]))
    cases.append(("cut inside the appended zip", int8[:end + 10]))

    def flipped(positions: list[int], n: int, what: str, mode: str = "random"):
        for p in rng.sample(positions, min(n, len(positions))):
            d = bytearray(int8)
            d[p] = rng.randrange(256) if mode == "random" else d[p] ^ 0xFF
            if d[p] == int8[p]:
                d[p] ^= 0x80
            cases.append((f"{what} byte {p} {mode}", bytes(d)))

    flipped(s["vtable"], 45, "vtable")
    flipped(s["table"], 25, "table soffset")
    flipped(s["field"], 45, "field")
    flipped(s["field"], 15, "field", "inverted")
    flipped(s["weights"], 15, "weight")
    for p in rng.sample(s["veclen"], 15):  # vector/string lengths made huge or off by a bit
        d = bytearray(int8)
        n = struct.unpack_from("<I", d, p)[0]
        struct.pack_into("<I", d, p, min(0xFFFFFFFF, rng.choice([n + 1, n + 1000, n * 16 + 7,
                                                                 0x7FFFFFFF, 0xFFFFFFFF])))
        cases.append((f"length at {p} {n}->{struct.unpack_from('<I', d, p)[0]}", bytes(d)))
    for i in range(12):  # several random bytes anywhere in the flatbuffer
        d = bytearray(int8)
        for _ in range(rng.randint(2, 8)):
            d[rng.randrange(end)] = rng.randrange(256)
        cases.append((f"scattered damage {i}", bytes(d)))
    f32 = models["float32"]
    fs = _structure(f32)
    for i, p in enumerate(rng.sample(fs["vtable"] + fs["field"], 10)):
        d = bytearray(f32)
        d[p] ^= 1 << rng.randrange(8)
        cases.append((f"float32 bit flip {i} at {p}", bytes(d)))
    for k in (3, 500, fs["end"][0] // 2):
        cases.append((f"float32 truncated at {k}", f32[:k]))
    seen: set = set()
    unique = []
    for label, data in cases:  # two draws may damage a byte the same way
        if data not in seen:
            seen.add(data)
            unique.append((label, data))
    return unique


@pytest.fixture(scope="module")
def damaged(exported, tmp_path_factory) -> tuple[Path, list[dict]]:
    """The damaged models on disk, one folder each (with labels.txt), and their labels."""
    models = {k: (exported / f"model_{k}.tflite").read_bytes() for k in ("int8", "float32")}
    cases = _damaged(models, random.Random(SEED))
    root = tmp_path_factory.mktemp("damaged")
    index = []
    for i, (label, data) in enumerate(cases):
        path = root / f"{i:03d}" / "model.tflite"
        path.parent.mkdir()
        if data is None:
            path.mkdir()
        else:
            path.write_bytes(data)
        index.append({"path": str(path), "label": label})
    return root, index


def test_at_least_200_distinct_damaged_models(damaged):
    _, index = damaged
    datas = {Path(c["path"]).read_bytes() if Path(c["path"]).is_file() else b"<dir>"
             for c in index}
    assert len(index) >= 200 and len(datas) == len(index)


def test_reader_rejects_or_reads_every_damaged_model(damaged, exported):
    """Only ModelFileError comes out of the reader (never struct.error, IndexError, ...), and
    damage the flatbuffer cannot survive is always caught."""
    from edgeeff.tflite import reader as g

    outcomes = {"rejected": 0, "read": 0}
    read = []
    for c in damaged[1]:
        path = Path(c["path"])
        try:
            data = g.read_model_file(path)
            graph = g.read(data, path)
            g.metadata_buffer(data, "edgeeff", path)
            g.non_integer_ops(graph)
            assert graph.ops and graph.tensors
            outcomes["read"] += 1
        except g.ModelFileError as e:
            assert e.path == str(path) and e.reason, c
            assert str(e) == f"{path}: not a valid TFLite model ({e.reason})"
            outcomes["rejected"] += 1
            continue
        label = c["label"]
        assert not label.startswith(("empty", "random", "truncated", "jpeg", "png", "zip ",
                                     "text", "root", "directory", "header")), label
        read.append(label)
    assert "cut inside the appended zip" in read  # what follows the flatbuffer is not its business
    assert outcomes["rejected"] >= 150 and outcomes["read"] >= 20, outcomes
    # the pristine models (a zip appended after the flatbuffer) stay valid
    for name in ("model_int8.tflite", "model_float32.tflite"):
        g.verify((exported / name).read_bytes())


def test_reader_reasons_name_what_is_wrong(exported, tmp_path):
    from edgeeff.tflite import reader as g

    data = (exported / "model_int8.tflite").read_bytes()
    end = _structure(data)["end"][0]
    cases = {
        b"": "empty file",
        (ROOT / "calibration" / "chelsea_0.jpg").read_bytes(): "it is a JPEG image",
        data[data.find(b"PK\x03\x04", end):]: "it is a zip archive",
        data[:5]: "only 5 bytes",
        b"\x00" * 64: "no TFL3 identifier",
        data[:end - 1]: "outside the file",
        struct.pack("<I", 0x80000000) + data[4:]: "offset 2147483648 is negative or too large",
    }
    for blob, reason in cases.items():
        with pytest.raises(g.ModelFileError, match=reason):
            g.verify(blob)
    with pytest.raises(g.ModelFileError, match="it is a directory"):
        g.read_model_file(tmp_path)


def _patched(data: bytes, table_path: list[int], slot: int, value: bytes) -> bytes:
    """``data`` with the scalar field ``slot`` overwritten with ``value``, in the first table
    that stores it (flatbuffers leave out fields holding their default) among those reached by
    following the vector slots ``table_path`` from the root (first element of each, all of the
    last)."""
    from edgeeff.tflite import verify as g

    w = g._Walker(data)
    tables = [w.u32(0)]
    for i, vslot in enumerate(table_path):
        items = w.items(tables[0], vslot, 0)
        tables = items if i == len(table_path) - 1 else items[:1]
    p = next((w.field(t, slot) for t in tables if w.field(t, slot)), 0)
    assert p, "the field is present in the exported model"
    d = bytearray(data)
    d[p:p + len(value)] = value
    return bytes(d)


@pytest.mark.parametrize("where,slot,value,reason", [
    ([2, 0], 2, struct.pack("<I", 100_000), "names buffer 100000"),  # tensor -> buffer
    ([2, 3], 0, struct.pack("<I", 999), "has opcode 999"),  # operator -> opcode
    ([], 0, struct.pack("<I", 7), "schema version 7"),
    ([6], 1, struct.pack("<I", 4242), "names buffer 4242"),  # metadata -> buffer
    ([7, 1], 1, struct.pack("<I", 5000), "signature 0 names tensor 5000"),  # signature output
])
def test_index_checks(exported, where, slot, value, reason):
    from edgeeff.tflite import verify as g

    data = (exported / "model_int8.tflite").read_bytes()
    with pytest.raises(g.ModelFileError, match=reason):
        g.verify(_patched(data, where, slot, value))


def test_operator_and_subgraph_tensor_indices_are_checked(exported):
    from edgeeff.tflite import verify as g

    data = (exported / "model_int8.tflite").read_bytes()
    w = g._Walker(data)
    sg = w.items(w.u32(0), 2, 0)[0]
    for table, slot, what in ((w.items(sg, 3, 0)[0], 1, "operator 0 of subgraph 0: input"),
                              (sg, 2, "subgraph 0 output")):
        p = w.field(table, slot)
        v = p + w.u32(p)
        for bad in (len(w.items(sg, 0, 0)), -2):
            d = bytearray(data)
            struct.pack_into("<i", d, v + 4, bad)
            with pytest.raises(g.ModelFileError, match=f"{what} tensor {bad}"):
                g.verify(bytes(d))


def test_large_model_buffer_outside_the_file_is_refused(exported):
    """Buffers of the >2 GB layout (offset/size, data after the flatbuffer) must lie in the file;
    one that does is accepted."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s  # the runtime's, with ModelT

    from edgeeff.tflite import verify as g

    data = (exported / "model_int8.tflite").read_bytes()
    m = s.ModelT.InitFromObj(s.Model.GetRootAs(data, 0))

    def packed(offset: int, size: int) -> bytes:
        buf = s.BufferT()
        buf.offset, buf.size = offset, size
        m.buffers.append(buf)
        try:
            b = flatbuffers.Builder(1024)
            b.Finish(m.Pack(b), file_identifier=b"TFL3")
            return bytes(b.Output())
        finally:
            m.buffers.pop()

    ok = packed(0, 0)
    n = len(ok) + 64
    ok = packed(n - 16, 16)
    assert len(ok) < n
    g.verify(ok + bytes(n - len(ok)))  # 16 bytes of data after the flatbuffer: in the file
    with pytest.raises(g.ModelFileError, match=f"buffer {len(m.buffers)} lies at bytes"):
        g.verify(ok)  # the same model without them


def test_verifier_schema_matches_the_generated_schema():
    """Slots and element sizes of every table the verifier knows equal those of the flatbuffer
    schema that ships with the runtime, and no table it walks has an offset field it skips."""
    needs("ai_edge_litert")
    from ai_edge_litert import schema_py_generated as s  # the runtime's schema

    from edgeeff.tflite import verify as g


    class Recorder:
        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            return lambda *a: self.calls.append((name, a)) or 0

    def camel(name: str) -> str:
        return "".join(p[:1].upper() + p[1:] for p in name.split("_"))

    sizes = {"Bool": 1, "Int8": 1, "Uint8": 1, "Int16": 2, "Uint16": 2, "Int32": 4, "Uint32": 4,
             "Float32": 4, "Int64": 8, "Uint64": 8, "Float64": 8}
    checked = 0
    for table, fields in g.SCHEMA.items():
        generated = {}
        for fn in dir(s):
            if fn.startswith(table + "Add") and fn[len(table) + 3:][:1].isupper():
                r = Recorder()
                getattr(s, fn)(r, 0)
                generated[fn[len(table) + 3:]] = r.calls[0]
        for slot, (name, kind) in fields.items():
            call, args = generated[camel(name)]
            assert args[0] == slot, (table, name)
            if isinstance(kind, int):
                assert sizes[call[len("Prepend"):-len("Slot")]] == kind, (table, name)
            else:
                assert call == "PrependUOffsetTRelativeSlot", (table, name)
                vec = f"{table}Start{camel(name)}Vector"
                if kind[0] == "vec":
                    r = Recorder()
                    getattr(s, vec)(r, 0)
                    assert r.calls[0][1][0] == kind[1], (table, name)
            checked += 1
        offsets = {args[0] for call, args in generated.values()
                   if call == "PrependUOffsetTRelativeSlot"}
        assert offsets <= set(fields), (table, offsets - set(fields))
    assert checked > 100
    # every union member with offset fields is walked with its schema (and scalar-only ones
    # only where the reader reads their scalars, under their own name)
    for enum, members in ((s.BuiltinOptions, g._BUILTIN_OPTIONS),
                          (s.BuiltinOptions2, g._BUILTIN_OPTIONS_2)):
        for name, code in vars(enum).items():
            if name.startswith("_") or name == "NONE":
                continue
            has_offsets = False
            for fn in dir(s):
                if fn.startswith(name + "Add") and fn[len(name) + 3:][:1].isupper():
                    r = Recorder()
                    getattr(s, fn)(r, 0)
                    has_offsets |= r.calls[0][0] == "PrependUOffsetTRelativeSlot"
            assert members.get(code) == name if has_offsets else members.get(code) in (None, name), name


# --------------------------------------------------------------------------- the CLI, in a child


def _worker(index_file: str, data_dir: str, out_file: str) -> None:
    """Run bench (every model), eval and demo (every third) in-process; one JSON line each."""
    import traceback

    runner = CliRunner()
    cases = json.loads(Path(index_file).read_text())
    with open(out_file, "w") as out:
        for i, c in enumerate(cases):
            runs = [("bench", ["bench", c["path"], "--runs", "1", "--warmup", "0",
                               "--threads", "1", "--json"])]
            if i % 3 == 0:
                runs.append(("eval", ["eval", c["path"], "--data", data_dir, "--json"]))
                runs.append(("demo", ["demo", "--model", c["path"], "--source", data_dir,
                                      "--headless", "--max-frames", "1", "--threads", "1"]))
            for cmd, args in runs:
                out.write(json.dumps({"case": i, "cmd": cmd, "label": c["label"]}) + "\n")
                out.flush()  # a signal leaves this line last
                r = runner.invoke(main, args)
                tb = None
                if r.exception is not None and not isinstance(r.exception, SystemExit):
                    tb = "".join(traceback.format_exception(*r.exc_info))[-1500:]
                out.write(json.dumps({"case": i, "cmd": cmd, "exit": r.exit_code,
                                      "stderr": r.stderr, "stdout": r.stdout[-2000:],
                                      "traceback": tb}) + "\n")
                out.flush()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """One photo in each of three class folders (the models have three classes), and a
    decompression bomb beside each of two of them (unreadable images, skipped and counted)."""
    from tests.test_input_guards import BOMBS

    data = tmp_path_factory.mktemp("imgs")
    for i, src in enumerate(sorted((ROOT / "calibration").glob("*.jpg"))[:3]):
        (data / f"class_{i}").mkdir()
        shutil.copy(src, data / f"class_{i}" / "a.jpg")
    for i, (name, make) in enumerate(BOMBS.items()):
        (data / f"class_{i}" / name).write_bytes(make())
    return data


def test_cli_on_damaged_models_exits_0_or_2_without_traceback_or_signal(damaged, images, tmp_path):
    needs("cv2")
    root, index = damaged
    (tmp_path / "index.json").write_text(json.dumps(index))
    out = tmp_path / "results.jsonl"
    code = ("import sys; from tests.test_fuzz import _worker; "
            "_worker(sys.argv[1], sys.argv[2], sys.argv[3])")
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "index.json"), str(images),
                        str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    done = [x for x in lines if "exit" in x]
    last = lines[-1] if lines else None
    assert p.returncode == 0, (f"worker died (signal {-p.returncode})" if p.returncode < 0
                               else "worker failed", last, p.stderr[-3000:])
    tracebacks = [x for x in done if x["traceback"]]
    assert not tracebacks, tracebacks[:3]
    by_exit = {}
    for x in done:
        by_exit.setdefault(x["exit"], []).append(x)
        if x["exit"] == 2:
            assert x["stderr"].count("\n") == 1 and x["stderr"].startswith("edgeeff: error: "), x
            assert "Traceback" not in x["stderr"] + x["stdout"], x
    assert set(by_exit) <= {0, 2}, {k: v[:2] for k, v in by_exit.items() if k not in (0, 2)}
    bench = [x for x in done if x["cmd"] == "bench"]
    assert len(bench) == len(index) >= 200
    assert sum(x["exit"] == 2 for x in bench) >= 150
    assert sum("not a valid TFLite model" in x["stderr"] for x in bench) >= 150
    for x in bench:
        if x["exit"] == 0:
            assert json.loads(x["stdout"])["models"][0]["p50_ms"] > 0
    for x in done:  # a model that reads the photos skips the bombs
        if x["cmd"] == "eval" and x["exit"] == 0:
            assert json.loads(x["stdout"])["unreadable"] == 2, x
    assert {x["cmd"] for x in done} == {"bench", "eval", "demo"}


@pytest.mark.parametrize("cmd,case", [
    ("bench", "truncated"), ("bench", "empty"), ("bench", "directory"),
    ("eval", "jpeg"), ("demo", "random"), ("demo", "vtable"),
])
def test_subprocess_end_to_end_exit_2_one_line(damaged, images, cmd, case):
    from edgeeff.tflite import reader as g
    from tests.conftest import run_cli

    def rejected(path: str) -> bool:
        try:
            g.read_model_file(path)
        except g.ModelFileError:
            return True
        return False

    root, index = damaged
    c = next(x for x in index if x["label"].startswith(case)
             and (case == "directory" or rejected(x["path"])))
    if cmd == "bench":
        args = ["bench", c["path"], "--runs", "1"]
    elif cmd == "eval":
        args = ["eval", c["path"], "--data", str(images)]
    else:
        args = ["demo", "--model", c["path"], "--source", str(images), "--headless"]
    if case == "directory":  # an export folder holding no model: the folder is named plainly
        args[1] = str(Path(c["path"]))
    r = run_cli(*args, timeout=120)
    assert r.returncode == 2, (c, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    if case == "directory":
        assert r.stderr.startswith("edgeeff: error: no ") and c["path"] in r.stderr
    else:
        assert r.stderr.startswith(f"edgeeff: error: {c['path']}: not a valid TFLite model (")


def test_direct_classifier_on_a_directory_is_a_plain_error(tmp_path):
    needs("ai_edge_litert")
    from edgeeff.device.runtime import Classifier, load_interpreter
    from edgeeff.tflite.reader import ModelFileError

    d = tmp_path / "x.tflite"
    d.mkdir()
    for fn in (Classifier, load_interpreter):
        with pytest.raises(ModelFileError, match="it is a directory") as e:
            fn(d)
        assert e.value.path == str(d) and e.value.reason == "it is a directory"
    with pytest.raises(ModelFileError, match="empty file"):
        load_interpreter(b"")


def test_a_fifo_named_tflite_is_refused_not_read_forever(tmp_path):
    fifo = tmp_path / "model.tflite"
    os.mkfifo(fifo)
    code = ("import sys; from edgeeff.tflite.reader import ModelFileError, read_model_file\n"
            "try:\n    read_model_file(sys.argv[1])\nexcept ModelFileError as e:\n    print(e)")
    r = subprocess.run([sys.executable, "-c", code, str(fifo)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.stdout == f"{fifo}: not a valid TFLite model (not a regular file)\n", r.stderr


def test_a_valid_model_that_is_not_a_classifier_is_refused(exported, tmp_path):
    """A well-formed model whose input is not [1, R, R, 3] (here: rank 2) is refused before
    the classifier indexes its shape."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s  # the runtime's, with ModelT

    from edgeeff.device.runtime import Classifier
    from edgeeff.tflite import reader as g

    data = (exported / "model_float32.tflite").read_bytes()
    m = s.ModelT.InitFromObj(s.Model.GetRootAs(data, 0))
    sg = m.subgraphs[0]
    out = sg.tensors[sg.outputs[0]]
    sg.inputs = list(sg.outputs)  # output -> input: [1, 3] in, a graph the runtime accepts
    sg.operators = []
    m.signatureDefs = None
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    p = tmp_path / "odd.tflite"
    p.write_bytes(bytes(b.Output()))
    assert list(out.shape) == [1, 3]
    with pytest.raises(g.NotAClassifierError, match=r"input shape \[1, 3\], expected"):
        Classifier(p)
    r = CliRunner().invoke(main, ["bench", str(p), "--runs", "1"])
    assert r.exit_code == 2 and r.stderr == (
        f"edgeeff: error: {p}: not an image classifier (input shape [1, 3], expected "
        "[1, R, R, 3])\n")


# --------------------------------------------------------------------------- hypothesis: fit/info


def _invoke(args: list[str]):
    r = CliRunner().invoke(main, args)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        import traceback

        raise AssertionError(f"{args}: traceback\n"
                             + "".join(traceback.format_exception(*r.exc_info)))
    assert r.exit_code in (0, 2), (args, r.exit_code, r.stderr)
    if r.exit_code == 2:
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("edgeeff: error: "), (
            args, r.stderr)
    return r


_POSITIVE = st.one_of(st.floats(1e-3, 1e7).map(repr), st.integers(1, 10**7).map(str))
_NUMBERS = st.one_of(
    _POSITIVE, _POSITIVE,
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**12, 10**12).map(str),
    st.sampled_from(["0", "-0", "1e6", "-1e6", "1e308", "1e400", "1e-308", "nan", "inf", "-inf",
                     "", "abc", "1,5", "0x10", "12.5", "-12.5", "11", "-11"]),
)
_SIZES = st.one_of(
    st.tuples(st.floats(1, 5000), st.sampled_from(["", "B", "KB", "MB", "GB", " kib", "m"])
              ).map(lambda t: f"{t[0]:g}{t[1]}"),
    st.integers(1, 10**10).map(str),
    st.sampled_from(["320KB", "1MB", "0KB", "-5MB", "1e30GB", "1e400", "1e308KB", "KB",
                     "12 kib", "9" * 40 + "TB", "9" * 400, "nanMB", "infKB", "1.5.5MB"]),
    _NUMBERS, st.text(max_size=12))
_DEVICES = st.one_of(st.sampled_from(targets.bundled_names()), st.sampled_from(["", "nope", "/",
                     "missing.toml", ".toml", "pi4 "]), st.text(max_size=10))


def _opt(name: str, values) -> st.SearchStrategy:
    """Usually absent: each present option is one more chance to be refused."""
    return st.one_of(st.just([]), st.just([]), values.map(lambda v: [name, v]))


_COUNTS = st.one_of(st.integers(1, 5000).map(str), _NUMBERS)


@FUZZ
@given(st.tuples(
    st.one_of(st.sampled_from(targets.bundled_names()), _DEVICES).map(lambda d: ["--device", d]),
    _opt("--max-mflops", _NUMBERS), _opt("--max-ram", _SIZES),
    _opt("--max-flash", _SIZES), _opt("--max-latency-ms", _NUMBERS),
    _opt("--family", st.sampled_from(["lite", "efficientnet", "mobilenet", ""])),
    _opt("--num-classes", _COUNTS), st.sampled_from([[], ["--json"]])))
@example((["--device", "pi4"], [], [], [], ["--max-latency-ms", "nan"], [], [], ["--json"]))
@example((["--device", "pi4"], ["--max-mflops", "inf"], [], [], [], [], [], []))
def test_fit_arguments(tmp_path_factory, parts):
    out = tmp_path_factory.getbasetemp() / "fit-spec.json"
    out.unlink(missing_ok=True)
    r = _invoke(["fit", *[a for p in parts for a in p], "--out", str(out)])
    if r.exit_code == 0:  # NaN and infinity never reach what fit writes
        _strict_json(out.read_text())
        if ["--json"] in parts:
            _strict_json(r.stdout)


def _strict_json(text: str):
    """``text`` parsed as RFC 8259 JSON: Python's NaN / Infinity literals fail."""
    def refuse(name):
        raise AssertionError(f"{name} in JSON output")
    return json.loads(text, parse_constant=refuse)


@FUZZ
@given(st.tuples(
    _opt("--preset", st.one_of(st.sampled_from(["b0", "b7", "lite0", "lite4", "lite9", "B3",
                                                "efficientnet-b1", ""]), st.text(max_size=6))),
    _opt("--phi", _NUMBERS),
    _opt("--family", st.sampled_from(["lite", "efficientnet", "x"])),
    _opt("--num-classes", _COUNTS), _opt("--resolution", _COUNTS),
    st.sampled_from([[], ["--json"]])))
def test_info_arguments(parts):
    _invoke(["info", *[a for p in parts for a in p]])


@pytest.mark.parametrize("phi", [-12, -11, 11, 12])
def test_info_builds_every_phi_it_accepts(phi):
    r = _invoke(["info", "--phi", str(phi), "--family", "efficientnet", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["phi"] == phi


@pytest.mark.parametrize("phi", ["1e6", "12.01", "-12.5", "nan", "inf"])
def test_info_and_export_refuse_absurd_phi_in_one_line(phi, tmp_path):
    for args in (["info", "--phi", phi], ["export", "--phi", phi, "--out", str(tmp_path / "o")]):
        r = _invoke(args)
        assert r.exit_code == 2 and "phi" in r.stderr, (args, r.stderr)
        assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- hypothesis: files

_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
              st.floats(allow_nan=False), st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12)
_SPEC_VALUES = st.one_of(
    _JSON, st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**400, 10**400),
    st.sampled_from(["lite", "efficientnet", "b0", "lite3", "1e9", 1e308]),
    st.floats(0.05, 20), st.integers(1, 5000))  # in and just past the accepted ranges


@st.composite
def _spec_docs(draw) -> str:
    """Spec files: mostly near-valid documents with a few keys changed, sometimes garbage."""
    from edgeeff.core.arch import phi_spec

    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "json", "text"]))
    if kind == "text":
        return draw(st.text(max_size=60))
    if kind == "json":
        return json.dumps(draw(_JSON))
    doc = {"format": "edgeeff-spec", "version": 1, "spec": phi_spec(-2.0, "lite", 10).to_dict()}
    for _ in range(draw(st.integers(1, 4))):
        inner = draw(st.sampled_from([True, True, True, False])) and isinstance(doc.get("spec"), dict)
        target = doc["spec"] if inner else doc
        key = draw(st.one_of(st.sampled_from(sorted(target) or ["x"]), st.text(max_size=6)))
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(_SPEC_VALUES)
    try:
        return json.dumps(doc)
    except (ValueError, OverflowError):
        return "{"


@FUZZ
@given(_spec_docs())
def test_spec_files(tmp_path_factory, text):
    p = tmp_path_factory.getbasetemp() / "fuzz-spec.json"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        spec = specfile.resolve(str(p))
        assert spec.resolution >= 32 and spec.width > 0 and math.isfinite(spec.depth)
    except EdgeeffError as e:
        assert "\n" not in str(e)
    _invoke(["info", "--spec", str(p), "--json"])


@st.composite
def _profiles(draw) -> str:
    """TOML device profiles: the pi4 profile with keys removed, retyped or added; or noise."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "text"]))
    if kind == "text":
        return draw(st.one_of(st.text(max_size=80), st.sampled_from(
            ["[", "name = ", "a = 1\na = 2", "ram = \"1MB\"\n[sources", "\x00", "= 3"])))
    src = (ROOT / "targets" / "pi4.toml").read_text(encoding="utf-8")
    lines = src.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "value", "value", "add"]))
        if action == "drop":
            lines.pop(i)
        elif action == "value" and "=" in lines[i]:
            key = lines[i].split("=")[0].strip()
            v = draw(st.one_of(
                st.sampled_from(['"0MB"', '"-1KB"', '"1e400GB"', "nan", "inf", "-1", "0",
                                 "true", "[]", '["tflite", "coreml"]', '""', '"   "', "{}",
                                 "1e400", '"mcu"', '"sbc"', '"lite"', "[1, 2]", "1979-05-27",
                                 '["tflite", "tflm"]', '"efficientnet"', "1e-300"]),
                _SIZES.map(json.dumps), st.floats(1e-3, 1e13).map(repr),
                st.integers(-10**30, 10**30).map(str),
                st.text(max_size=8).map(json.dumps)))
            lines[i] = f"{key} = {v}"
        else:
            key = draw(st.sampled_from(["max_latency_ms", "max_mflops", "description", "bogus",
                                        "formats", "sources"]))
            value = draw(st.sampled_from(["0", "-3", "1e9", "nan", "inf", "-inf", '"x"']))
            lines.insert(i, f"{key} = {value}")
        if not lines:
            break
    return "\n".join(lines) + "\n"


_PI4 = (ROOT / "targets" / "pi4.toml").read_text(encoding="utf-8")


@FUZZ
@given(_profiles())
@example(_PI4.replace("max_latency_ms = ", "max_latency_ms = nan #", 1))
@example(_PI4.replace("\nram = ", "\nmax_mflops = inf\nram = ", 1))
@example(_PI4.replace("int8_macs_per_s = ", "int8_macs_per_s = nan #"))
def test_device_profiles(tmp_path_factory, text):
    try:
        dev = targets.parse_profile(text, "board", "board.toml")
        assert dev.ram_bytes > 0 and dev.flash_bytes > 0 and dev.int8_macs_per_s > 0
        for v in (dev.int8_macs_per_s, dev.max_latency_ms, dev.max_mflops):
            assert v is None or math.isfinite(v)
        _strict_json(json.dumps(dev.to_dict()))
    except EdgeeffError as e:
        assert "\n" not in str(e)
        assert str(e).startswith("board.toml: ")
    p = tmp_path_factory.getbasetemp() / "board.toml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    _invoke(["fit", "--device", str(p), "--out", str(p.with_suffix(".json"))])


# --------------------------------------------------------------------------- hypothesis: images


@st.composite
def _image_files(draw) -> bytes:
    """Image files whose header declares any size (bombs among them), or real small images
    with a few bytes changed: what :func:`edgeeff.data.images.load_bgr` may be handed."""
    from tests.test_input_guards import jpeg_declaring, png_bytes

    side = st.one_of(st.integers(1, 64), st.integers(1, 200_000))
    w, h = draw(side), draw(side)
    kind = draw(st.sampled_from(["png", "jpeg", "bmp", "webp", "mutated"]))
    if kind == "png":
        return png_bytes(w, h, rows=draw(st.integers(0, 3))) if w <= 20_000 else png_bytes(
            min(w, 65_535), h, rows=0)
    if kind == "jpeg":
        return jpeg_declaring(min(w, 65_535), min(h, 65_535))
    if kind == "bmp":
        return (b"BM" + struct.pack("<IHHI", 54 + 3 * w, 0, 0, 54)
                + struct.pack("<IiiHHIIiiII", 40, w, draw(st.sampled_from([h, -h])), 1, 24, 0, 0,
                              0, 0, 0, 0) + bytes(draw(st.integers(0, 300))))
    if kind == "webp":
        return (b"RIFF" + struct.pack("<I", 22) + b"WEBPVP8X" + struct.pack("<I", 10) + bytes(4)
                + (min(w, 1 << 24) - 1).to_bytes(3, "little")
                + (min(h, 1 << 24) - 1).to_bytes(3, "little"))
    src = (ROOT / "calibration" / "chelsea_0.jpg").read_bytes()[:4000]
    d = bytearray(src)
    for _ in range(draw(st.integers(1, 6))):
        d[draw(st.integers(0, 600))] = draw(st.integers(0, 255))
    return bytes(d)


@FUZZ
@given(_image_files())
def test_image_files_never_raise_and_never_exceed_the_budget(tmp_path_factory, data):
    """Every file is an image within the budget or None: no exception, and a header that
    declares more pixels than the budget is never decoded."""
    pytest.importorskip("cv2")
    from edgeeff.data.images import image_size, load_bgr

    budget = 2_000_000
    p = tmp_path_factory.getbasetemp() / "fuzz-image.bin"
    p.write_bytes(data)
    img = load_bgr(p, max_pixels=budget)
    size = image_size(data)
    if size is None or size[0] * size[1] > budget:
        assert img is None, size
    if img is not None:
        assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] * img.shape[1] <= budget
