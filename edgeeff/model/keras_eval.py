"""Evaluation runner for Keras ``.keras`` models (the TensorFlow side of ``edgeeff eval``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeeff.core import artifacts, specfile
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.preprocess import Preprocessor


def _preprocessor(path: Path, resolution: int) -> Preprocessor:
    """The crop the model was trained with: from the spec file ``edgeeff train`` wrote beside
    it, else edgeeff's default centre crop."""
    spec_file = path.parent / artifacts.SPEC_FILE
    if spec_file.is_file():
        try:
            return specfile.read(spec_file).preprocessor().with_resolution(resolution)
        except EdgeeffError:  # a damaged or foreign spec file: the model still evaluates
            pass
    return Preprocessor(resolution)


class KerasRunner:
    """A ``.keras`` model (e.g. written by ``edgeeff train``): it takes raw 0..255 pixels,
    normalising inside, with the centre crop it was trained with."""

    def __init__(self, path: str | Path):
        import keras

        path = Path(path)
        if not path.is_file():
            raise EdgeeffError(f"model not found: {path}")
        self.model = keras.models.load_model(path, compile=False)
        self.preprocessor = _preprocessor(path, int(self.model.input_shape[1]))
        n = int(self.model.output_shape[-1])
        lab = path.parent / artifacts.LABELS
        self.labels = (lab.read_text().splitlines() if lab.is_file() else
                       [f"class_{i}" for i in range(n)])
        if len(self.labels) != n:
            self.labels = [f"class_{i}" for i in range(n)]
        self.name, self.runtime = path.name, f"keras {keras.__version__}"

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return self.model.predict(batch.astype(np.float32), verbose=0)
