"""Keep TensorFlow's and the converters' native chatter out of the user's terminal."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings

from edgeeff.core.optional import require


@contextlib.contextmanager
def captured_output(keep: list[str] | None = None):
    """Redirect fd 1 and 2 (C++ logging included) into a temp file for the block.

    The captured text is appended to ``keep`` (when given) so callers can show its tail if the
    block fails.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with contextlib.redirect_stdout(sys.stderr):
                    yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if keep is not None:
                log.seek(0)
                keep.append(log.read().decode("utf-8", errors="replace"))


def tail(text: str, n: int = 1) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return " | ".join(lines[-n:])


def import_tensorflow(purpose: str = "this command"):
    """Import TensorFlow with its start-up logging (CUDA probing, absl) kept off the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        with captured_output():
            require("tensorflow", purpose)
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return sys.modules["tensorflow"]
