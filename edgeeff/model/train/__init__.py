"""``edgeeff train``: transfer learning on a folder of images (one sub-folder per class).

:func:`train` picks the recipe on its own (:func:`.recipe.choose`) and logs which and why:

* ``cached`` (:mod:`.cached`) for a pretrained Lite0/1/2 at its own resolution: stages 1-5
  frozen and run once per view, the top trained on those cached features;
* ``distill`` (:mod:`.full`) for every other spec: every layer trained from the inherited
  initialisation, distilled from a teacher (:mod:`.distill`) whose outputs are computed once per
  view.

One :class:`Recipe` record (:mod:`.recipe`) carries every number of either, on one host or under
``--distribute``. Each epoch saves its state to ``OUT.resume/`` (:mod:`.state`: ``--resume``
continues there; Ctrl-C keeps it); the output folder (:mod:`.outputs`), written at once at the
end, holds ``model.keras``, ``model.weights.h5`` (the best validation epoch), ``labels.txt``,
``history.json`` and ``edgeeff.json``, a spec file that ``export`` takes directly.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from edgeeff.core.arch import ModelSpec, preset_spec
from edgeeff.core.errors import EdgeeffError
from edgeeff.model.train import distill
from edgeeff.model.train.cached import _feature_datasets, train_cached, train_cached_distributed
from edgeeff.model.train.data import _datasets, folder_dataset, load_pixels, load_split
from edgeeff.model.train.distribute import _fit_multi_worker, is_chief
from edgeeff.model.train.full import train_distill
from edgeeff.model.train.progress import Phases
from edgeeff.model.train.recipe import CACHED, DISTILL, Choice, Recipe, choose, defaults
from edgeeff.model.train.state import resume_dir

__all__ = ["CACHED", "DISTILL", "Choice", "Phases", "Recipe", "_datasets", "_feature_datasets",
           "_fit_multi_worker", "choose", "defaults", "folder_dataset", "is_chief",
           "load_pixels", "load_split", "recipe_for", "resume_dir", "teacher_for", "train"]


def recipe_for(spec: ModelSpec, requested: str = "auto", distribute: bool = False,
               **overrides) -> tuple[Choice, Recipe]:
    """The recipe ``train`` runs for ``spec``: its kind (and why) and its :class:`Recipe`,
    the defaults of that kind with ``overrides`` (fields left None are not overridden)."""
    choice = choose(spec, requested)
    r = defaults(choice.kind, distribute)
    return choice, replace(r, **{k: v for k, v in overrides.items() if v is not None})


def _config_key(data, val, spec: ModelSpec, weights: str, r: Recipe, teacher=None) -> dict:
    return {"data": str(Path(data).resolve()), "val": str(Path(val).resolve()) if val else None,
            "spec": asdict(spec), "weights": weights, "recipe": r.to_dict(),
            "teacher": str(Path(teacher).resolve()) if teacher else None}


def train(data: str, spec: ModelSpec, weights: str, out: str | Path, epochs: int | None = None,
          batch: int | None = None, val_fraction: float = 0.2, patience: int | None = None,
          distribute: bool = False, force: bool = False, log=print, val_dir: str | None = None,
          resume: bool = False, views: int | None = None, seed: int = 0,
          phases: Phases | None = None, recipe: str | Recipe = "auto",
          teacher: str | Path | None = None) -> dict:
    """Train ``spec`` on a class-folder dataset; writes ``out`` (see the module docstring).

    ``recipe``: ``auto`` (:func:`choose`), ``cached``, ``distill``, or a whole :class:`Recipe`
    (its kind and numbers used as they are). ``epochs``, ``batch``, ``views``, ``seed`` and
    ``patience`` override the recipe's. ``teacher``: a trained edgeeff model folder for the
    distilled recipe (default: the Pi-class model trained on the same photos, cached).
    Resumable (``resume``) and interruptible (Ctrl-C keeps the state in :func:`resume_dir`)
    without ``distribute``.
    """
    if epochs is not None and epochs < 1:
        raise EdgeeffError("--epochs must be >= 1")
    if distribute and resume:
        raise EdgeeffError("--resume works without --distribute only")
    over = {"epochs": epochs, "batch": batch, "views": views, "seed": seed, "patience": patience}
    if isinstance(recipe, Recipe):
        choice = Choice(recipe.kind, "given as a Recipe")
        r = replace(recipe, **{k: v for k, v in over.items() if v is not None})
    else:
        choice, r = recipe_for(spec, recipe, distribute, **over)
    if teacher is not None and r.kind != DISTILL:
        raise EdgeeffError(f"--teacher applies to the distilled recipe; {spec.name} gets the "
                           f"{r.kind} one ({choice.reason})")
    log(f"recipe: {r.kind} ({choice.reason})")
    phases = phases or Phases()
    key = _config_key(data, val_dir, spec, weights, r, teacher)
    if r.kind == CACHED:
        if distribute:
            return train_cached_distributed(data, spec, weights, out, r, val_fraction, force,
                                            log, val_dir)
        return train_cached(data, spec, weights, out, r, val_fraction, force, log, val_dir,
                            resume, phases, key)

    return train_distill(data, spec, weights, out, r, val_fraction, force, log, val_dir, resume,
                         phases, key, teacher_for(data, val_dir, val_fraction, teacher, log),
                         distribute)


def teacher_for(data, val_dir, val_fraction: float, teacher: str | Path | None, log):
    """The distilled recipe's teacher as ``f(classes, files, val_files) -> (Teacher,
    TeacherInfo)``: the folder ``teacher`` (``--teacher``), else the default Pi-class teacher
    for these photos (:func:`.distill.default_teacher`: trained once per dataset, cached)."""
    def f(classes, files, val_files):
        if teacher is not None:
            t = distill.Teacher(teacher, classes)
            info = distill.TeacherInfo("given", str(teacher), t.spec.name, t.resolution, None)
        else:
            tspec = preset_spec(distill.TEACHER_PRESET)

            def train_teacher(folder):
                train_cached(data, tspec, "auto", folder, defaults(CACHED), val_fraction, True,
                             log, val_dir, False, Phases(),
                             _config_key(data, val_dir, tspec, "auto", defaults(CACHED)))

            info = distill.default_teacher(data, val_dir, val_fraction, files, val_files, log,
                                           train_teacher)
            t = distill.Teacher(info.path, classes)
        log(f"teacher: {info.name} ({info.source}, {info.path}), {t.resolution} px")
        return t, info

    return f
