"""The teacher of the distilled recipe, and its outputs on fixed views, computed once.

A teacher is any folder ``edgeeff train`` wrote (``model.keras``, ``edgeeff.json``,
``labels.txt``) whose labels are the student's classes. By default it is the Pi-class model
edgeeff trains on the same photos with the cached recipe (pretrained Lite0 at 224 px), trained
once per dataset and kept under edgeeff's cache folder, keyed by the dataset's file list.

:func:`teacher_views` makes ``K`` fixed views of every training photo (the whole centre square,
then random resized crops and coin-flip mirrors with brightness/contrast jitter, view ``v``
seeded by ``(seed, v)``) and runs the teacher over each view **once**, on the *same* crop region
at the teacher's own resolution, as a float32 TFLite model on XNNPACK: the student's epochs
read the cached views (uint8, student resolution) and the teacher's log-probabilities
(float16), never the teacher.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeeff.core import artifacts as A
from edgeeff.core import specfile
from edgeeff.core.arch import ModelSpec, preset_spec
from edgeeff.core.data import cache_dir
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import write_json_atomic
from edgeeff.model import features as F

TEACHER_PRESET = "lite0"  # the Pi-class model: pretrained, trained with the cached recipe
LOG_FLOOR = -30.0  # log-probabilities below this are zero for any temperature used here


@dataclass(frozen=True)
class TeacherInfo:
    """Where the teacher came from (``given``, ``cached``: trained earlier for this dataset,
    ``trained``: trained now), its folder, spec name, resolution and training seconds (when
    edgeeff trained it)."""

    source: str
    path: str
    name: str
    resolution: int
    train_seconds: float | None

    def to_dict(self) -> dict:
        return asdict(self)


# the last teacher loaded in this process: (folder, its model file's size and mtime) -> its
# Keras model and its runners by whether converting pays (seconds to make; tune needs it twice)
_LOADED: dict[tuple, dict] = {}


class Teacher:
    """A trained edgeeff model folder, run as a float32 TFLite model (XNNPACK, every core).

    ``images_run`` counts the images it has classified: the distilled recipe runs it once per
    view, whatever the number of epochs. The loaded and converted model is reused by the next
    Teacher of the same, unchanged folder in this process (tune's ranking, then its pick's
    training). Where :meth:`expect` said beforehand that too few images will run to pay for
    the conversion, the first use keeps Keras instead (:class:`edgeeff.model.features.TrunkRunner`).
    """

    def __init__(self, folder: str | Path, classes: list[str]):
        import keras

        folder = Path(folder)
        missing = [n for n in (A.TRAINED_KERAS, A.SPEC_FILE, A.LABELS)
                   if not (folder / n).is_file()]
        if missing:
            raise EdgeeffError(f"--teacher {folder}: not a trained edgeeff model folder "
                               f"(no {', '.join(missing)}; 'edgeeff train' writes them)")
        labels = (folder / A.LABELS).read_text().splitlines()
        if labels != list(classes):
            raise EdgeeffError(f"--teacher {folder}: its classes ({', '.join(labels[:5])}"
                               f"{' ...' if len(labels) > 5 else ''}) are not the training "
                               f"data's ({', '.join(classes[:5])}{' ...' if len(classes) > 5 else ''})")
        self.folder = folder
        self.spec: ModelSpec = specfile.read(folder / A.SPEC_FILE).spec
        st = (folder / A.TRAINED_KERAS).stat()
        key = (str(folder.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _LOADED:  # tune's ranking and its pick's training share one teacher
            model = keras.models.load_model(folder / A.TRAINED_KERAS, compile=False)
            _LOADED.clear()  # the last one only: a teacher's model stays in memory
            _LOADED[key] = {"model": model, "runners": {}}
        self._loaded = _LOADED[key]
        self.resolution = int(self._loaded["model"].input_shape[1])
        self.images_run = 0
        self.expected: int | None = None

    def expect(self, images: int) -> None:
        """Say how many images the teacher will run: its first use converts it only if they pay
        for the conversion."""
        self.expected = images

    @property
    def runner(self) -> F.TrunkRunner:
        """The model as TFLite, converted on first use (a resumed run that has its views and
        teacher outputs saved never converts it); kept per answer to "does converting pay", so
        a small first run's Keras runner does not serve a later, larger one."""
        model, runners = self._loaded["model"], self._loaded["runners"]
        pays = F.TrunkRunner.converting_pays(model, self.expected)
        if pays not in runners:
            runners[pays] = F.TrunkRunner(model, images=self.expected)
        return runners[pays]

    def __call__(self, images: np.ndarray, progress=None) -> np.ndarray:
        """uint8 (n, r, r, 3) at the teacher's resolution -> float16 log-probabilities."""
        p = self.runner(images, progress).astype(np.float32)
        self.images_run += len(images)
        return np.maximum(np.log(np.maximum(p, 1e-30)), LOG_FLOOR).astype(np.float16)


def dataset_key(files: list[Path], val_files: list[Path]) -> str:
    """A key for a dataset: its training and validation files (paths, sizes, times)."""
    h = hashlib.sha256()
    for group in (files, val_files):
        for p in group:
            st = Path(p).stat()
            h.update(f"{Path(p).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        h.update(b"--\n")
    return h.hexdigest()[:20]


def default_teacher(data, val_dir, val_fraction: float, files: list[Path],
                    val_files: list[Path], log, train_fn) -> TeacherInfo:
    """The Pi-class teacher for this dataset: from edgeeff's cache folder when trained before,
    else trained now with ``train_fn(out)`` (the cached recipe on pretrained Lite0, seed 0)
    and kept there. Its training time is recorded beside it."""
    folder = cache_dir() / "teachers" / dataset_key(files, val_files)
    info_file = folder / A.TEACHER_INFO
    spec = preset_spec(TEACHER_PRESET)
    if (folder / A.SPEC_FILE).is_file() and info_file.is_file():
        took = json.loads(info_file.read_text()).get("train_seconds")
        log(f"teacher: {spec.name} at {spec.resolution} px trained earlier on these photos "
            f"({took / 60:.1f} min then), from {folder}")
        return TeacherInfo("cached", str(folder), spec.name, spec.resolution, took)
    log(f"teacher: training {spec.name} at {spec.resolution} px on these photos with the "
        f"cached recipe (once per dataset; kept in {folder})")
    t0 = time.perf_counter()
    train_fn(folder)
    took = round(time.perf_counter() - t0, 1)
    write_json_atomic(info_file, {"train_seconds": took, "data": str(Path(data).resolve()),
                                  "val": str(Path(val_dir).resolve()) if val_dir else None,
                                  "val_fraction": val_fraction})
    log(f"teacher: trained in {took / 60:.1f} min")
    return TeacherInfo("trained", str(folder), spec.name, spec.resolution, took)


def _resize(img: np.ndarray, side: int) -> np.ndarray:
    import cv2

    if img.shape[0] == side and img.shape[1] == side:
        return img
    interp = cv2.INTER_AREA if img.shape[0] > side else cv2.INTER_LINEAR
    return cv2.resize(img, (side, side), interpolation=interp)


def view_boxes(n: int, side: int, v: int, seed: int, scale: tuple[float, float]):
    """View ``v``'s crop box (y, x, h, w), mirror and (contrast, brightness) factors for each
    of ``n`` squares of ``side`` px; view 0 is the whole square, unchanged. Depends only on
    (seed, v, n, side, scale)."""
    if v == 0:
        return [((0, 0, side, side), False, (1.0, 1.0))] * n
    rng = np.random.default_rng([seed, v])
    out = []
    for _ in range(n):
        area = side * side * rng.uniform(*scale)
        ratio = np.exp(rng.uniform(np.log(F.RRC_RATIO[0]), np.log(F.RRC_RATIO[1])))
        w = min(side, int(round(np.sqrt(area * ratio))))
        h = min(side, int(round(np.sqrt(area / ratio))))
        y, x = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
        flip = bool(rng.random() < 0.5)
        jitter = (float(rng.uniform(0.8, 1.2)), float(rng.uniform(0.8, 1.2)))
        out.append(((y, x, h, w), flip, jitter))
    return out


def _cut(square: np.ndarray, box, flip: bool, jitter) -> np.ndarray:
    y, x, h, w = box
    crop = square[y:y + h, x:x + w]
    if flip:
        crop = crop[:, ::-1]
    if jitter != (1.0, 1.0):
        f = crop.astype(np.float32)
        mean = f.mean()
        crop = np.clip((f - mean) * jitter[0] + mean * jitter[1], 0, 255).astype(np.uint8)
    return np.ascontiguousarray(crop)


def teacher_views(squares: np.ndarray, student_res: int, teacher: Teacher, views: int,
                  seed: int, scale: tuple[float, float], progress=None, chunk: int = 256
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 views (views * n, r, r, 3) at the student's resolution ``r``, float16 teacher
    log-probabilities (views * n, classes)), view-major: view ``v`` of image ``i`` is row
    ``v * n + i``. The teacher sees each view once, the same crop at its own resolution."""
    n, side = len(squares), squares.shape[1]
    teacher.expect(views * n)
    x = np.empty((views * n, student_res, student_res, 3), np.uint8)
    logp = None
    for v in range(views):
        boxes = view_boxes(n, side, v, seed, scale)
        for s in range(0, n, chunk):
            crops = [_cut(squares[i], *boxes[i]) for i in range(s, min(n, s + chunk))]
            x[v * n + s:v * n + s + len(crops)] = [_resize(c, student_res) for c in crops]
            t = teacher(np.stack([_resize(c, teacher.resolution) for c in crops]), progress)
            if logp is None:
                logp = np.empty((views * n, t.shape[1]), np.float16)
            logp[v * n + s:v * n + s + len(crops)] = t
    return x, logp
