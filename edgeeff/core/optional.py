"""Import an optional heavy dependency, or say in one line which extra installs it.

The only modules edgeeff imports inside functions are the heavy or optional ones named in
:data:`EXTRAS` (TensorFlow, Keras, OpenCV, the TFLite runtimes, ONNX and friends): everything
else is imported at the top of its module. ``ruff``'s PLC0415 enforces that, with this list as
its allow-list.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgeeff.core.errors import EdgeeffError

# top-level module -> the extra that installs it
EXTRAS: dict[str, str] = {
    "tensorflow": "export",
    "tf_keras": "export",
    "keras": "export",
    "onnx": "export",
    "onnx2tf": "export",
    "onnxruntime": "export",
    "onnx_graphsurgeon": "export",
    "tflite_micro": "export",
    "cv2": "runtime",
    "ai_edge_litert": "runtime",
    "tflite_runtime": "runtime",
    "psutil": "runtime",
    "matplotlib": "plot",
}


class MissingExtra(EdgeeffError):
    """An optional module is not installed; ``extra`` names what installs it."""

    def __init__(self, module: str, extra: str, purpose: str = ""):
        self.module, self.extra, self.purpose = module, extra, purpose
        what = f"{purpose} needs {module}" if purpose else f"{module} is not installed"
        super().__init__(f"{what}: pip install 'edgeeff[{extra}]'")


def require(module: str, purpose: str = "") -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExtra` naming the extra to install."""
    top = module.split(".", 1)[0]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and e.name.split(".", 1)[0] != top:
            raise  # the module is there but one of its own imports is broken: show that
        raise MissingExtra(top, EXTRAS.get(top, "all"), purpose) from None
