"""Full-size end to end: pretrained Lite0 -> full int8 -> accuracy in ai-edge-litert."""

import json

from tests.conftest import run_cli


def test_lite0_int8_accuracy_on_imagenet_dev(lite0_export, imagenet_dev):
    res = {}
    for name in ("model_float32.tflite", "model_int8.tflite"):
        r = run_cli("eval", str(lite0_export / name), "--data", str(imagenet_dev), "--json")
        assert r.returncode == 0, r.stderr
        res[name] = json.loads(r.stdout)
        assert res[name]["images"] == 200 and res[name]["runtime"] == "ai_edge_litert"
    f, q = res["model_float32.tflite"]["top1"], res["model_int8.tflite"]["top1"]
    assert f >= 0.89  # faithful port: reference 89.5-90.0 %
    assert q >= 0.885  # int8 bar
    assert round(abs(f - q), 4) <= 0.01  # within 1.0 point of float (2 of 200 images)
    card = json.loads((lite0_export / "model_card.json").read_text())
    assert card["weights"].startswith("imagenet") and card["quantization"]["top1_agreement"] >= 0.9


def test_readme_main_job_steps(tmp_path):
    """fit -> export (auto weights) -> demo, exactly as the README's first command."""
    r = run_cli("fit", "--device", "pi4", "--max-mflops", "400", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli("export", "--int8", "--force", "--num-calib", "8", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((tmp_path / "edgeeff-out" / "model_card.json").read_text())
    assert card["weights"].startswith("imagenet") and card["spec"]["resolution"] == 224
    r = run_cli("demo", "--model", "edgeeff-out", "--source", "sample", "--headless",
                "--max-frames", "8", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout.splitlines()[0])
    assert first["top"][0]["label"] in ("Egyptian cat", "tabby", "tiger cat")
