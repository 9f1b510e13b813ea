#!/usr/bin/env python3
"""Accuracy-vs-resolution curve of pretrained EfficientNet-Lite models, float32 and full-int8.

Works through the edgeeff CLI only (``python -m edgeeff.cli``), never imports edgeeff internals.
For every (model, resolution) point:

    edgeeff export --preset M --resolution R --weights imagenet --int8 --out WORK --force
    edgeeff eval WORK/model_float32.tflite --data DATA --json
    edgeeff eval WORK/model_int8.tflite    --data DATA --json
    edgeeff info --preset M --resolution R --json          (macs)

Resolutions: every --step px from --min-res up to and including native+--above, plus native itself.
Points already in --out are skipped (resume); the JSON is rewritten atomically after every point.
Points are run strictly one after another.

Environment (PYTHONPATH, EDGEEFF_CACHE_DIR, ...) is passed through unchanged. The default
output is the table edgeeff ships (edgeeff/data/accuracy_lite.json, read by
edgeeff.core.accuracy): delete it, or name another --out, to measure anew (about 45 min on 2
cores for the 64 points).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def cli(python: str, args: list[str], cwd: str | None, timeout: float) -> str:
    cmd = [python, "-m", "edgeeff.cli", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} -> rc {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}"
            f"\n--- stderr ---\n{proc.stderr[-3000:]}")
    return proc.stdout


def cli_json(python, args, cwd, timeout) -> dict:
    out = cli(python, args, cwd, timeout)
    start = out.find("{")  # tolerate stray lines before the JSON object
    if start < 0:
        raise RuntimeError(f"no JSON in output of {args}: {out[-2000:]}")
    return json.loads(out[start:])


def tool_versions(python: str, cwd: str | None) -> dict:
    tools = {"python": None}
    try:
        tools["edgeeff"] = cli(python, ["--version"], cwd, 120).strip().split()[-1]
    except Exception as e:  # noqa: BLE001
        tools["edgeeff"] = f"unknown ({e.__class__.__name__})"
    probe = (
        "import json, sys, importlib.metadata as m\n"
        "d = {'python': sys.version.split()[0]}\n"
        "for p in ('tensorflow', 'tf-keras', 'keras', 'ai-edge-litert', 'tflite-runtime', 'numpy', 'onnx2tf'):\n"
        "    try: d[p] = m.version(p)\n"
        "    except Exception: pass\n"
        "print(json.dumps(d))\n")
    try:
        proc = subprocess.run([python, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=120)
        tools.update(json.loads(proc.stdout))
    except Exception:  # noqa: BLE001
        pass
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd or ".",
                             capture_output=True, text=True, timeout=30)
        if git.returncode == 0:
            tools["edgeeff_git"] = git.stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    return tools


def write_atomic(path: str, doc: dict) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".accuracy_curve.", suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def resolutions(native: int, step: int, lo: int, above: int) -> list[int]:
    rs = set(range(lo, native + above + 1, step))
    rs.add(native)
    return sorted(rs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--data", default=os.path.join(root, "..", "shared", "imagenet-dev"),
                    help="labelled eval images (class folders or <wnid>_*.JPEG)")
    ap.add_argument("--models", default="lite0,lite1,lite2", help="comma list of presets")
    ap.add_argument("--out", default=os.path.join(root, "edgeeff", "data", "accuracy_lite.json"),
                    help="output JSON (also the resume state)")
    ap.add_argument("--step", type=int, default=8, help="resolution step in px (default 8)")
    ap.add_argument("--min-res", type=int, default=96, help="smallest resolution (default 96)")
    ap.add_argument("--above", type=int, default=16, help="go up to native + this many px (default 16)")
    ap.add_argument("--work", default=None, help="scratch export folder (default: <out dir>/exp); replaced each point")
    ap.add_argument("--python", default=sys.executable, help="interpreter that has edgeeff (default: this one)")
    ap.add_argument("--cwd", default=None, help="working directory for the CLI calls (e.g. the repo root)")
    ap.add_argument("--timeout", type=float, default=1800, help="per CLI call timeout in s")
    a = ap.parse_args()

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    work = a.work or tempfile.mkdtemp(prefix="edgeeff-accuracy-")
    data = os.path.abspath(a.data)

    doc = None
    if os.path.exists(a.out):
        with open(a.out) as f:
            doc = json.load(f)
    if not doc:
        doc = {"dataset": os.path.relpath(data, root), "images": None, "calibration": "bundled calibration/ photos",
               "tools": tool_versions(a.python, a.cwd), "points": []}
    done = {(p["model"], p["resolution"]) for p in doc["points"]}

    # plan
    plan = []
    for m in models:
        native = int(cli_json(a.python, ["info", "--preset", m, "--json"], a.cwd, a.timeout)["resolution"])
        for r in resolutions(native, a.step, a.min_res, a.above):
            plan.append((m, r, native))
    todo = [p for p in plan if (p[0], p[1]) not in done]
    print(f"{len(plan)} points planned, {len(plan) - len(todo)} already done, {len(todo)} to run", flush=True)

    failures = 0
    t_all = time.time()
    for i, (m, r, native) in enumerate(todo, 1):
        t0 = time.time()
        try:
            macs = cli_json(a.python, ["info", "--preset", m, "--resolution", str(r), "--json"],
                            a.cwd, a.timeout)["macs"]
            cli(a.python, ["export", "--preset", m, "--resolution", str(r), "--weights", "imagenet",
                           "--int8", "--out", work, "--force"], a.cwd, a.timeout)
            ev = {}
            for kind in ("float32", "int8"):
                ev[kind] = cli_json(a.python, ["eval", os.path.join(work, f"model_{kind}.tflite"),
                                               "--data", data, "--json"], a.cwd, a.timeout)
        except Exception as e:  # noqa: BLE001 - keep going, the point is retried on the next run
            failures += 1
            print(f"[{i}/{len(todo)}] {m} @{r}: FAILED: {e}", file=sys.stderr, flush=True)
            continue
        n = {ev["float32"]["images"], ev["int8"]["images"]}
        if doc["images"] is None:
            doc["images"] = ev["float32"]["images"]
        if n != {doc["images"]}:
            print(f"warning: {m} @{r}: image counts {n} != {doc['images']}", file=sys.stderr, flush=True)
        doc["points"].append({
            "model": m, "resolution": r, "macs": macs,
            "float_top1": ev["float32"]["top1"], "float_top5": ev["float32"]["top5"],
            "int8_top1": ev["int8"]["top1"], "int8_top5": ev["int8"]["top5"],
        })
        order = {mm: k for k, mm in enumerate(models)}
        doc["points"].sort(key=lambda p: (order.get(p["model"], len(order)), p["model"], p["resolution"]))
        write_atomic(a.out, doc)
        p = next(q for q in doc["points"] if q["model"] == m and q["resolution"] == r)
        print(f"[{i}/{len(todo)}] {m} @{r}{' (native)' if r == native else ''}: macs {macs/1e6:.1f}M  "
              f"float {p['float_top1']:.3f}/{p['float_top5']:.3f}  int8 {p['int8_top1']:.3f}/{p['int8_top5']:.3f}  "
              f"({time.time() - t0:.1f}s)", flush=True)
    print(f"done in {time.time() - t_all:.1f}s, {failures} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
