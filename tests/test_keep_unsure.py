"""``demo --keep-unsure``: a real synthesized int8 model classifies a folder of images; the
frames whose top-1 score is under --below are kept (JPEG at the source's resolution plus the
guess in a sidecar JSON), at most one per --keep-gap frames and never more than --max-kept in
the folder, earlier runs included.

Which frames are unsure is read from the same run's JSON lines (the scores the keeper saw), so
the tests need no knowledge of the random model's outputs."""

import json

import numpy as np
import pytest

from edgeeff.core.arch import ModelSpec
from edgeeff.device import synth
from edgeeff.device.demo import keep as keepmod
from tests.conftest import needs, run_cli

cv2 = needs("cv2")
needs("ai_edge_litert")

TINY = ModelSpec(family="lite", width=0.25, depth=0.25, resolution=32, num_classes=10)
N_IMAGES = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("keep")
    model = root / "tiny.tflite"
    model.write_bytes(synth.build(TINY))
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):  # different pictures, so the scores differ
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        cv2.imwrite(str(images / f"{i:02d}.png"),
                    cv2.resize(small, (96, 72), interpolation=cv2.INTER_NEAREST))
    # every frame's top-1 score, from a run that keeps nothing
    r = run_cli("demo", "--model", str(model), "--source", str(images), "--headless")
    assert r.returncode == 0, r.stderr
    top1 = {x["frame"]: x["top"][0]["score"] for x in map(json.loads, r.stdout.splitlines())
            if "frame" in x}
    assert sorted(top1) == list(range(1, N_IMAGES + 1))
    return model, images, top1


def expected(top1: dict, below: float, gap: int, room: int) -> list[int]:
    kept, last = [], None
    for n in sorted(top1):
        if top1[n] < below and (last is None or n - last >= gap) and len(kept) < room:
            kept.append(n)
            last = n
    return kept


def run_keep(model, images, folder, below, gap, max_kept):
    r = run_cli("demo", "--model", str(model), "--source", str(images), "--headless",
                "--keep-unsure", str(folder), "--below", repr(below), "--keep-gap", str(gap),
                "--max-kept", str(max_kept))
    assert r.returncode == 0, r.stderr
    return r


def kept(folder) -> list[dict]:
    out = []
    for jpg in keepmod.kept_files(folder):
        meta = json.loads(jpg.with_suffix(".json").read_text())
        assert meta["image"] == jpg.name
        img = cv2.imread(str(jpg))
        assert img is not None and img.shape == (72, 96, 3)  # the source frame, not the crop
        out.append(meta)
    return sorted(out, key=lambda m: m["frame"])


def test_unsure_frames_are_kept_with_their_guess(setup, tmp_path):
    model, images, top1 = setup
    scores = sorted(top1.values())
    below = scores[len(scores) // 2]  # about half the frames are under it
    assert scores[0] < below <= scores[-1]
    folder = tmp_path / "unsure"
    r = run_keep(model, images, folder, below, 1, 100)
    want = expected(top1, below, 1, 100)
    metas = kept(folder)
    assert [m["frame"] for m in metas] == want and 0 < len(want) < N_IMAGES
    assert all(m["top"][0]["score"] == top1[m["frame"]] < below for m in metas)
    assert all(m["below"] == below and m["source"].startswith("images:") for m in metas)
    assert not [p for p in folder.iterdir() if p.suffix not in (".jpg", ".json")]  # no temps
    assert f"{len(want)} unsure frames kept in {folder}" in r.stderr


def test_gap_and_max_kept_bound_what_is_kept(setup, tmp_path):
    model, images, top1 = setup
    below = 1.0  # every frame is unsure: the gap and the bound decide
    folder = tmp_path / "unsure"
    run_keep(model, images, folder, below, 3, 4)
    assert [m["frame"] for m in kept(folder)] == expected(top1, below, 3, 4) == [1, 4, 7, 10]
    # a second run into the same folder: it is full, nothing more is kept, nothing deleted
    r = run_keep(model, images, folder, below, 1, 4)
    assert len(keepmod.kept_files(folder)) == 4 and "keeping no more" in r.stderr
    # room for two more
    run_keep(model, images, folder, below, 1, 6)
    assert len(keepmod.kept_files(folder)) == 6


def test_keep_options_need_keep_unsure(setup):
    model, images, _ = setup
    r = run_cli("demo", "--model", str(model), "--source", str(images), "--headless",
                "--max-kept", "3")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--max-kept applies to --keep-unsure" in r.stderr
