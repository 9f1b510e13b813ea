"""Bad input to any command is exactly one line on stderr, ``edgeeff: error: ...``, and exit
code 2: no blank line before it (rich's progress display), no TFLite runtime ``INFO:`` line
(the XNNPACK delegate) and no OpenCV ``[ WARN ...]`` lines (a camera that cannot be opened).

Every command runs as a user runs it, in a subprocess, with the logging variables a user
would not have set removed (conftest sets TF_CPP_MIN_LOG_LEVEL for the other tests). Each bad
input fails before any heavy work; ``eval`` and ``demo`` get a real int8 model (synthesized
in milliseconds, no TensorFlow), so the runtime has made its interpreter when they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs

# (command and arguments; a name in {braces} is a path from the fixture)
CASES = [
    ["fit", "--device", "no-such-device"],
    ["fit", "--device", "pi4", "--max-ram", "12XB"],
    ["info", "--preset", "b99"],
    ["info", "--phi", "abc"],
    ["devices", "--bogus"],
    ["profile", "--out", "{existing}"],
    ["profile", "--threads", "0"],
    ["export", "--phi", "-6", "--int8", "--calib", "{missing}", "--out", "{out}"],
    ["export", "--phi", "abc"],
    ["train", "--data", "{missing}", "--out", "{out}"],
    ["train", "--data", "{missing}", "--epochs", "0"],
    ["tune", "--device", "pi4", "--data", "{missing}", "--out", "{out}"],
    ["tune", "--device", "no-such-device", "--data", "{missing}", "--out", "{out}"],
    ["eval", "{model}", "--data", "{missing}"],
    ["eval", "{model}", "--data", "{missing}", "--threads", "0"],
    ["demo", "--model", "{model}", "--source", "99", "--headless"],
    ["demo", "--model", "{model}", "--source", "{missing}.mp4", "--headless"],
    ["bench", "{missing}.tflite"],
    ["bench", "{model}", "--runs", "0"],
    ["doctor", "--seconds", "0"],
    ["doctor", "--seconds", "abc"],
    ["bundle", "{missing}", "--target", "pi4"],
    ["bundle", "{export}", "--target", "no-such-device"],
    ["firmware", "{missing}"],
    ["firmware", "{export}", "--target", "bogus"],
]
QUIET_VARS = ("TF_CPP_MIN_LOG_LEVEL", "OPENCV_LOG_LEVEL", "OPENCV_VIDEOIO_DEBUG")


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    from edgeeff.core.arch import phi_spec
    from edgeeff.device import synth

    root = tmp_path_factory.mktemp("one-line")
    model = root / "model.tflite"
    model.write_bytes(synth.build(phi_spec(-8, "lite", 10)))
    export = root / "export"
    export.mkdir()
    (export / "model_int8.tflite").write_bytes(model.read_bytes())
    (root / "existing.toml").write_text("")
    return {"model": str(model), "export": str(export), "existing": str(root / "existing.toml"),
            "missing": str(root / "missing"), "out": str(root / "out"), "root": str(root)}


@pytest.mark.parametrize("args", CASES, ids=[" ".join(c) for c in CASES])
def test_bad_input_is_one_line_on_stderr_and_exit_2(args, paths):
    if args[0] in ("eval", "demo", "bench"):
        needs("ai_edge_litert")
    if args[0] == "demo":
        needs("cv2")
    argv = [a.format(**paths) for a in args]
    env = {k: v for k, v in os.environ.items() if k not in QUIET_VARS}
    r = subprocess.run([sys.executable, "-m", "edgeeff.cli", *argv], capture_output=True,
                       text=True, timeout=300, env=env, cwd=paths["root"])
    lines = r.stderr.splitlines()
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("edgeeff: error: "), r.stderr[-2000:]
    assert r.stderr.endswith("\n")
    assert not Path(paths["out"]).exists()  # nothing half-written either
