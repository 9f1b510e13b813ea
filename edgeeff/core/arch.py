"""EfficientNet architecture as data: the B0 block table, the two families, and model specs.

Nothing here imports TensorFlow. ``expand(spec)`` turns a :class:`ModelSpec` into the concrete
list of blocks (with Keras-applications names such as ``block2a``) that both the cost model and
the Keras builder walk, so the analytic figures and the built model cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from edgeeff.core.scaling import (
    PRESETS,
    coefficients_for_phi,
    round_filters,
    round_repeats,
)


@dataclass(frozen=True)
class StageArgs:
    """One row of the base (B0) table. Scaling is applied outside the table."""

    kernel: int
    repeats: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    stride: int
    se_ratio: float


# EfficientNet-B0 (Tan & Le 2019, table 1), the same rows as keras.applications' DEFAULT_BLOCKS_ARGS.
#          kernel repeats  in   out  expand stride  se
B0_STAGES: tuple[StageArgs, ...] = (
    StageArgs(3, 1, 32, 16, 1, 1, 0.25),
    StageArgs(3, 2, 16, 24, 6, 2, 0.25),
    StageArgs(5, 2, 24, 40, 6, 2, 0.25),
    StageArgs(3, 3, 40, 80, 6, 2, 0.25),
    StageArgs(5, 3, 80, 112, 6, 1, 0.25),
    StageArgs(5, 4, 112, 192, 6, 2, 0.25),
    StageArgs(3, 1, 192, 320, 6, 1, 0.25),
)
STEM_FILTERS = 32
STEM_STRIDE = 2
TOP_FILTERS = 1280


@dataclass(frozen=True)
class Family:
    """What distinguishes EfficientNet from its Lite form."""

    name: str
    activation: str  # "swish" or "relu6"
    use_se: bool
    scale_stem_head: bool  # scale the stem/top filter counts with width
    fix_first_last_repeats: bool  # keep repeats of the first and last stage unscaled
    # Input normalisation applied inside the model: (pixel/255 - mean) / std per channel, with
    # ``mean``/``std`` in 0..1 pixel units.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str


FAMILIES: dict[str, Family] = {
    "efficientnet": Family(
        name="efficientnet",
        activation="swish",
        use_se=True,
        scale_stem_head=True,
        fix_first_last_repeats=False,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        description="MBConv + squeeze-excite, swish (the paper's network)",
    ),
    # TF's EfficientNet-Lite choices, each made for integer accelerators and MCUs:
    "lite": Family(
        name="lite",
        # ReLU6 for easier quantization: a bounded activation keeps int8 ranges tight, and it
        # fuses into the convolution on every runtime (swish needs LOGISTIC + MUL ops).
        activation="relu6",
        # No squeeze-excite: its global pooling and broadcast multiply are poorly supported on
        # EdgeTPU and cost a full-size extra tensor per block.
        use_se=False,
        # Fixed stem and head: scaling them up adds parameters and RAM for little accuracy in
        # small models (TF's ``fix_head_stem``).
        scale_stem_head=False,
        fix_first_last_repeats=True,
        # (x - 127) / 128 on 0..255 pixels: a uint8 input with zero point 127 and scale 1/128
        # represents it exactly, so int8 models take raw pixels with no extra op.
        mean=(127.0 / 255.0,) * 3,
        std=(128.0 / 255.0,) * 3,
        description="ReLU6, no SE, fixed stem/head (TF's EfficientNet-Lite; int8/EdgeTPU/MCU)",
    ),
}


# The compound-scaling coefficients edgeeff accepts anywhere (--phi of info/export/train; fit's
# search lies inside). At 12 a model has ~0.4 G parameters (1.7 GB as float32, near the
# flatbuffer's 2 GB limit) and a 1200 px input; at -12 every stage is a single block and the
# input is 40 px, so going lower only shrinks what is already degenerate.
PHI_LIMITS = (-12.0, 12.0)
# Multipliers a spec file may carry (phi = 12 has width 3.1, depth 8.9, 1200 px: these leave room
# for hand-made specs without letting a typo ask for a model no machine can hold)
MAX_WIDTH = 8.0
MAX_DEPTH = 16.0
MAX_RESOLUTION = 4096
MAX_CLASSES = 1_000_000
HEADS = (None, "fixed", "scaled")  # ModelSpec.head


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build (and cost) one network."""

    family: str
    width: float
    depth: float
    resolution: int
    num_classes: int = 1000
    dropout: float = 0.2
    phi: float | None = None
    preset: str | None = None  # set when the spec equals (or is a resized) official member
    # the top 1x1 conv's width: None = the family's rule (efficientnet scales it with width,
    # lite keeps 1280); "scaled" or "fixed" overrides it. A scaled lite head is what lets a
    # microcontroller's flash pay for width and resolution instead of 1280 head channels.
    head: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r} (choose {', '.join(FAMILIES)})")
        if not 1 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be 1..{MAX_CLASSES:,}, got {self.num_classes}")
        if not 32 <= self.resolution <= MAX_RESOLUTION:
            raise ValueError(f"resolution must be 32..{MAX_RESOLUTION}, got {self.resolution}")
        for what, v, top in (("width", self.width, MAX_WIDTH), ("depth", self.depth, MAX_DEPTH)):
            if not (math.isfinite(v) and 0 < v <= top):
                raise ValueError(f"{what} multiplier must be positive and at most {top:g}, got {v}")
        if not (math.isfinite(self.dropout) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.phi is not None and not math.isfinite(self.phi):
            raise ValueError(f"phi must be a finite number, got {self.phi}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(h for h in HEADS if h)}, "
                             f"got {self.head!r}")
        if self.head is not None and (self.head == "scaled") == FAMILIES[self.family].scale_stem_head:
            # the family's own rule is stored as None: one architecture, one spec (and the
            # layout older spec files have)
            object.__setattr__(self, "head", None)

    @property
    def scaled_head(self) -> bool:
        """Whether the top conv's width scales with ``width`` (the family's rule unless
        ``head`` overrides it)."""
        if self.head is None:
            return FAMILIES[self.family].scale_stem_head
        return self.head == "scaled"

    @property
    def name(self) -> str:
        if self.preset is not None:
            base = PRESETS[self.preset][1]
            suffix = "" if self.resolution == base.resolution else f"-{self.resolution}"
            return f"efficientnet-{self.preset}{suffix}{self._head_suffix}"
        base = "efficientnet" if self.family == "efficientnet" else f"efficientnet-{self.family}"
        if self.phi is not None:
            return f"{base}-phi{self.phi:+.2f}-r{self.resolution}{self._head_suffix}"
        return (f"{base}-w{self.width:.3f}-d{self.depth:.3f}-r{self.resolution}"
                f"{self._head_suffix}")

    @property
    def _head_suffix(self) -> str:
        """``-head<N>`` where the head differs from the family's rule."""
        if self.scaled_head == FAMILIES[self.family].scale_stem_head:
            return ""
        return f"-head{top_filters(self)}"

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["head"] is None:  # the family's head: the layout older spec files have
            del d["head"]
        d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        keys = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - keys - {"name"}
        if unknown:
            raise ValueError(f"unknown spec keys: {', '.join(sorted(unknown))}")
        missing = {"family", "width", "depth", "resolution"} - set(d)
        if missing:
            raise ValueError(f"spec lacks: {', '.join(sorted(missing))}")
        kw = {k: v for k, v in d.items() if k in keys}
        for k in ("resolution", "num_classes"):  # whole numbers: 2.5 classes is not 2
            v = kw.get(k)
            if v is None and k == "num_classes":
                continue
            if isinstance(v, bool) or not (isinstance(v, int) or (
                    isinstance(v, float) and v.is_integer())):
                raise ValueError(f"spec field '{k}' must be a whole number, got {v!r}")
        try:
            kw["width"] = float(kw["width"])
            kw["depth"] = float(kw["depth"])
            kw["resolution"] = int(kw["resolution"])
            kw["num_classes"] = int(kw.get("num_classes", 1000))
            kw["dropout"] = float(kw.get("dropout", 0.2))
            if kw.get("phi") is not None:
                kw["phi"] = float(kw["phi"])
            if kw.get("head") is not None:
                kw["head"] = str(kw["head"])
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"bad value in spec: {e}") from None
        if kw.get("preset") is not None and kw["preset"] not in PRESETS:
            raise ValueError(f"unknown preset {kw['preset']!r}")
        return cls(**kw)

    def with_classes(self, num_classes: int) -> ModelSpec:
        return replace(self, num_classes=num_classes)

    def with_head(self, head: str | None) -> ModelSpec:
        """This spec with ``head`` ("scaled", "fixed"; None for the family's rule)."""
        return replace(self, head=head)


def preset_spec(name: str, num_classes: int = 1000, resolution: int | None = None) -> ModelSpec:
    """The spec of an official member (``b0``..``b7``, ``lite0``..``lite4``)."""
    key = name.lower().removeprefix("efficientnet-").removeprefix("efficientnet")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (choose {', '.join(PRESETS)})")
    family, c = PRESETS[key]
    return ModelSpec(
        family=family,
        width=c.width,
        depth=c.depth,
        resolution=resolution or c.resolution,
        num_classes=num_classes,
        dropout=c.dropout,
        preset=key,
    )


def check_phi(phi: float) -> None:
    """ValueError unless ``phi`` lies in :data:`PHI_LIMITS`."""
    lo, hi = PHI_LIMITS
    try:
        phi = float(phi)
    except (TypeError, ValueError):
        raise ValueError(f"phi must be a number, got {phi!r}") from None
    if not math.isfinite(phi):
        raise ValueError(f"phi must be a finite number, got {phi}")
    if not lo <= phi <= hi:
        raise ValueError(f"phi {phi:g} is outside the supported range {lo:g}..{hi:g}")


def block_suffix(j: int) -> str:
    """The letters of a stage's ``j``-th block (0-based): a..z, then aa, ab, ... (bijective base
    26). Keras applications writes ``chr(97 + j)``, which agrees up to z (its largest model, B7,
    has 13 blocks in a stage) and then runs into punctuation."""
    if j < 0:
        raise ValueError(f"block index must be >= 0, got {j}")
    letters = ""
    j += 1
    while j:
        j, r = divmod(j - 1, 26)
        letters = chr(97 + r) + letters
    return letters


def phi_spec(phi: float, family: str = "efficientnet", num_classes: int = 1000,
             head: str | None = None) -> ModelSpec:
    """The spec of the continuous compound-scaling member ``phi`` of ``family`` (``head``:
    see :attr:`ModelSpec.head`)."""
    check_phi(phi)
    c = coefficients_for_phi(phi)
    return ModelSpec(
        family=family,
        width=c.width,
        depth=c.depth,
        resolution=c.resolution,
        num_classes=num_classes,
        dropout=c.dropout,
        phi=float(phi),
        head=head,
    )


@dataclass(frozen=True)
class Block:
    """One concrete MBConv block after scaling."""

    name: str  # Keras-applications name, e.g. "block2a"
    stage: int  # 1-based
    kernel: int
    stride: int
    expand_ratio: int
    filters_in: int
    filters_out: int
    se_filters: int  # 0 = no squeeze-excite
    drop_rate: float = 0.0  # stochastic-depth rate used in training

    @property
    def expanded(self) -> int:
        return self.filters_in * self.expand_ratio

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


@dataclass(frozen=True)
class Architecture:
    spec: ModelSpec
    family: Family
    stem_filters: int
    blocks: tuple[Block, ...]
    top_filters: int
    stages: tuple[int, ...] = field(default=())  # repeats per stage after scaling

    @property
    def activation(self) -> str:
        return self.family.activation


DROP_CONNECT_RATE = 0.2


def top_filters(spec: ModelSpec) -> int:
    """Width of the top 1x1 conv: 1280 scaled with width where the head scales."""
    return round_filters(TOP_FILTERS, spec.width) if spec.scaled_head else TOP_FILTERS


def expand(spec: ModelSpec) -> Architecture:
    """Apply ``spec``'s multipliers to the base table (TF's and Keras' rounding rules); the
    head follows ``spec.head`` (:func:`top_filters`), the stem the family."""
    fam = FAMILIES[spec.family]

    def filters(f: int, fixed: bool = False) -> int:
        return f if fixed else round_filters(f, spec.width)

    stem = filters(STEM_FILTERS, fixed=not fam.scale_stem_head)
    top = top_filters(spec)
    repeats = []
    for i, st in enumerate(B0_STAGES):
        fixed = fam.fix_first_last_repeats and i in (0, len(B0_STAGES) - 1)
        repeats.append(st.repeats if fixed else round_repeats(st.repeats, spec.depth))
    total = sum(repeats)

    blocks: list[Block] = []
    prev_out = stem
    for i, (st, n) in enumerate(zip(B0_STAGES, repeats)):
        # Lite keeps the stem fixed, so its first block takes the stem's width as input.
        f_in = prev_out if i == 0 else filters(st.filters_in)
        f_out = filters(st.filters_out)
        for j in range(n):
            fi = f_in if j == 0 else f_out
            se = max(1, int(fi * st.se_ratio)) if fam.use_se and st.se_ratio > 0 else 0
            blocks.append(
                Block(
                    name=f"block{i + 1}{block_suffix(j)}",
                    stage=i + 1,
                    kernel=st.kernel,
                    stride=st.stride if j == 0 else 1,
                    expand_ratio=st.expand_ratio,
                    filters_in=fi,
                    filters_out=f_out,
                    se_filters=se,
                    drop_rate=DROP_CONNECT_RATE * len(blocks) / total,
                )
            )
        prev_out = f_out
    return Architecture(spec, fam, stem, tuple(blocks), top, tuple(repeats))


def feature_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded convolution."""
    return int(math.ceil(size / stride))
