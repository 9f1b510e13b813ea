"""``edgeeff export``: build (or import) a model, quantize it, write deployable artifacts.

The request lives in :mod:`edgeeff.export.request`, the steps in :mod:`edgeeff.export.pipeline`,
the formats in :mod:`edgeeff.export.formats`; this package only re-exports their API.
"""

from edgeeff.export.formats import FORMAT_FUNCS, FormatJob, Models
from edgeeff.export.frontend import Frontend, from_spec
from edgeeff.export.pipeline import Int8DropTooLarge, ModelCard, NoHeldOutImages, check_int8_drop, run
from edgeeff.export.request import ExportOptionError, ExportRequest, InputNotFound, click_options

__all__ = ["FORMAT_FUNCS", "ExportOptionError", "ExportRequest", "FormatJob", "Frontend",
           "InputNotFound", "Int8DropTooLarge", "ModelCard", "Models", "NoHeldOutImages",
           "check_int8_drop", "click_options", "from_spec", "run"]
