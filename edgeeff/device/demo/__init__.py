"""``edgeeff demo``: live classification of a camera, a video, an image folder or the sample clip.

``sources`` (where frames come from), ``capture`` (the thread that reads and preprocesses
them), ``loop`` (inference, output, summary), ``keep`` (``--keep-unsure``) and ``serve``
(``--serve``: the browser view).
"""

from edgeeff.device.demo import capture, keep, loop, serve, sources
from edgeeff.device.demo.capture import END, QUEUE_SIZE, Capture
from edgeeff.device.demo.keep import KeepUnsure
from edgeeff.device.demo.loop import CAMERA_TIMEOUT_S, default_threads, need_cv2, run_demo
from edgeeff.device.demo.serve import DemoServer, ServeError, exposure_warning, overlay, parse_address
from edgeeff.device.demo.sources import (
    RECONNECT_DELAYS_S,
    DemoError,
    ImageFolderSource,
    LoopingSource,
    PiCameraSource,
    ReconnectingSource,
    Source,
    VideoSource,
    open_source,
    sample_clip,
)

__all__ = [
    "CAMERA_TIMEOUT_S", "END", "QUEUE_SIZE", "RECONNECT_DELAYS_S", "Capture", "DemoError",
    "DemoServer", "ImageFolderSource", "KeepUnsure", "LoopingSource", "PiCameraSource",
    "ReconnectingSource", "ServeError", "Source", "VideoSource", "capture", "default_threads",
    "exposure_warning", "keep", "loop", "need_cv2", "open_source", "overlay", "parse_address",
    "run_demo", "sample_clip", "serve", "sources",
]
