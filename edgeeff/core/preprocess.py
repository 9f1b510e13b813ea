"""How pixels reach a model: one :class:`Preprocessor`, from the spec to the device.

Geometry: resize the shorter side to ``resolution / crop_fraction`` (OpenCV INTER_AREA when
shrinking, which antialiases; INTER_CUBIC when enlarging), centre-crop ``resolution`` square,
RGB uint8. Values: the model's input tensor takes either the raw 0..255 pixel ``p`` or, when
``normalized``, ``(p - mean) / std``; a quantised input adds ``q = real / scale + zero_point``.

The object is built from a spec (export, train, ``fit``'s spec file) or read back from a
model's embedded metadata (the runtime, eval, the demo), and is the one description every path
uses: calibration, training and validation, evaluation, the demo's frame path, the runtime,
the metadata writer and the ONNX import. Pure numpy; the OpenCV image operations that apply
its geometry live in :mod:`edgeeff.data.images`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from edgeeff.core.arch import FAMILIES, ModelSpec

CROP_FRACTION = 0.875
RESIZER = "opencv INTER_AREA when shrinking, INTER_CUBIC when enlarging"
COLOR = "RGB"
PIXEL_RANGE = (0, 255)


def _triple(v, what: str) -> tuple[float, float, float]:
    vals = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3:
        raise ValueError(f"{what} needs 1 or 3 values, got {len(vals)}")
    return (vals[0], vals[1], vals[2])


# the int8 input table of raw pixels (p - 128), applied as a bit flip
_SHIFT = (np.arange(256) - 128).astype(np.int8)[:, None].repeat(3, 1)

@dataclass(frozen=True)
class Preprocessor:
    resolution: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # pixel units (0..255)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    normalized: bool = False  # the input tensor is (p - mean) / std; else p (norm. in the graph)
    crop_fraction: float = CROP_FRACTION
    color: str = COLOR
    resizer: str = RESIZER
    # the model's input tensor, once known (see :meth:`bind`)
    input_dtype: str = "float32"
    input_scale: float = 0.0
    input_zero_point: int = 0

    def __post_init__(self) -> None:
        if int(self.resolution) < 1:
            raise ValueError(f"resolution must be positive, got {self.resolution}")
        if not 0.0 < float(self.crop_fraction) <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        object.__setattr__(self, "mean", _triple(self.mean, "mean"))
        object.__setattr__(self, "std", _triple(self.std, "std"))
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_spec(cls, spec: ModelSpec, normalized: bool = False) -> Preprocessor:
        """The family's normalisation in pixel units; ``normalized`` when the graph takes the
        normalised image (TFLite models of the lite family) rather than raw pixels."""
        fam = FAMILIES[spec.family]
        return cls(spec.resolution, tuple(m * 255 for m in fam.mean),
                   tuple(s * 255 for s in fam.std), normalized)

    @staticmethod
    def folds_into_input(spec: ModelSpec) -> bool:
        """True when the family's normalisation is one affine map a uint8 input can carry."""
        fam = FAMILIES[spec.family]
        return len(set(fam.mean)) == 1 and len(set(fam.std)) == 1

    @classmethod
    def from_dict(cls, d: dict, resolution: int | None = None) -> Preprocessor:
        """Read back :meth:`to_dict` (as embedded in models and model cards); older models'
        ``input`` records (normalized/mean/std/resolution) are understood too."""
        res = d.get("resolution", d.get("center_crop", resolution))
        if res is None:
            raise ValueError("preprocessing record without a resolution")
        normalized = bool(d.get("normalized", False))
        return cls(
            resolution=int(res),
            mean=d.get("mean", (0.0, 0.0, 0.0)),
            std=d.get("std", (1.0, 1.0, 1.0)),
            normalized=normalized,
            crop_fraction=float(d.get("crop_fraction", CROP_FRACTION)),
            color=str(d.get("color", COLOR)),
            resizer=str(d.get("resizer", RESIZER)),
        )

    def bind(self, dtype, scale: float = 0.0, zero_point: int = 0) -> Preprocessor:
        """This preprocessing for a concrete input tensor (dtype and quantisation)."""
        return replace(self, input_dtype=np.dtype(dtype).name, input_scale=float(scale or 0.0),
                       input_zero_point=int(zero_point or 0))

    def with_resolution(self, resolution: int) -> Preprocessor:
        return replace(self, resolution=int(resolution))

    # ------------------------------------------------------------------ description
    def to_dict(self) -> dict:
        """The record in spec files, model cards, calibration records and model metadata."""
        d = asdict(self)
        d["mean"] = [round(m, 6) for m in self.mean]
        d["std"] = [round(s, 6) for s in self.std]
        for k in ("input_dtype", "input_scale", "input_zero_point"):
            d.pop(k)
        d["resize_shorter_side"] = self.shorter_side
        d["center_crop"] = self.resolution
        d["pixel_range"] = list(PIXEL_RANGE)
        return d

    # ------------------------------------------------------------------ geometry
    @property
    def shorter_side(self) -> int:
        return int(round(self.resolution / self.crop_fraction))

    def resize_to(self, h: int, w: int) -> tuple[int, int, float]:
        """(new height, new width, scale) of the shorter-side resize."""
        scale = self.shorter_side / min(h, w)
        return (max(self.shorter_side, int(round(h * scale))),
                max(self.shorter_side, int(round(w * scale))), scale)

    # ------------------------------------------------------------------ values
    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Float pixels -> the real values of the model's input tensor."""
        x = x.astype(np.float32)
        if self.normalized:
            x = (x - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        return x

    def lut(self) -> np.ndarray | None:
        """(256, 3) table pixel -> quantised input, for uint8/int8 inputs; None when the
        input takes the raw pixels unchanged (uint8, zero-cost) or is float."""
        dt = np.dtype(self.input_dtype)
        if dt not in (np.uint8, np.int8):
            return None
        p = np.arange(256, dtype=np.float64)[:, None].repeat(3, 1)
        real = (p - np.array(self.mean)) / np.array(self.std) if self.normalized else p
        if self.input_scale > 0:
            q = np.round(real / self.input_scale + self.input_zero_point)
        else:  # no quantisation parameters: the usual convention
            q = p if dt == np.uint8 else p - 128
        info = np.iinfo(dt)
        table = np.clip(q, info.min, info.max).astype(dt)
        if dt == np.uint8 and np.array_equal(table.astype(np.int64), p.astype(np.int64)):
            return None
        return table

    def to_input(self, rgb: np.ndarray, out: np.ndarray, lut: np.ndarray | None = None) -> None:
        """A preprocessed RGB uint8 crop -> ``out`` (the model's input buffer, no batch axis).

        Pass ``lut=self.lut()`` computed once when called per frame.
        """
        dt = np.dtype(self.input_dtype)
        if dt in (np.uint8, np.int8):
            if lut is None:
                lut = self.lut()
            if lut is None:
                out[...] = rgb
            elif dt == np.int8 and np.array_equal(lut, _SHIFT):  # int8 = pixel - 128
                np.bitwise_xor(rgb, np.uint8(0x80), out=out.view(np.uint8))
            else:
                out[...] = np.take_along_axis(lut, rgb.reshape(-1, 3).astype(np.intp), 0
                                              ).reshape(rgb.shape)
        elif self.normalized:
            np.subtract(rgb, np.array(self.mean, np.float32), out=out)
            out /= np.array(self.std, np.float32)
        else:
            out[...] = rgb
