"""What a finished run writes: the model, its weights, labels, history and a spec file."""

from __future__ import annotations

import os
from pathlib import Path

from edgeeff.core import artifacts as A
from edgeeff.core import specfile
from edgeeff.core.fsutil import atomic_dir, finite_or_none, write_json_atomic, write_text_atomic
from edgeeff.model import features as F


def write_outputs(out, force, model, spec, classes, history, data, desc, n_tr, n_va, val_acc,
                   extra=None) -> dict:
    """:func:`write_files` into ``out``, all at once (:func:`atomic_dir`)."""
    with atomic_dir(out, force=force) as tmp:
        result = write_files(tmp, out, model, spec, classes, history, data, desc, n_tr, n_va,
                             val_acc, (extra or {}).get("recipe"))
    return result | (extra or {})


def write_files(tmp: Path, out, model, spec, classes, history, data, desc, n_tr, n_va,
                val_acc, recipe: dict | None = None) -> dict:
    """model.keras, model.weights.h5, labels.txt, history.json and edgeeff.json into ``tmp``
    (the folder that becomes ``out``); returns the figures recorded in the spec file, with the
    ``recipe``'s settings (:meth:`Recipe.to_dict`)."""
    for layer in model.layers:
        layer.trainable = True
    model.save(str(tmp / A.TRAINED_KERAS))
    model.save_weights(str(tmp / A.TRAINED_WEIGHTS))
    write_text_atomic(tmp / A.LABELS, "\n".join(classes) + "\n")
    write_json_atomic(tmp / A.TRAIN_HISTORY, finite_or_none(history))  # NaN loss: null
    result = {"classes": classes, "train_images": int(n_tr), "val_images": int(n_va),
              "val_accuracy": round(val_acc, 4), "weights_from": desc,
              "top1": round(100 * val_acc, 2),
              "top1_basis": f"measured by edgeeff train on {n_va} validation images",
              "epochs_run": len(history.get("loss", []))}
    specfile.write(tmp / A.SPEC_FILE, specfile.SpecFile(spec, trained=specfile.Trained(
        **result, weights=A.TRAINED_WEIGHTS, labels=A.LABELS,
        crop_fraction=F.TRAIN_CROP_FRACTION, recipe=recipe,
        # relative to this spec file: resolves from any working directory
        data=os.path.relpath(Path(data).resolve(), Path(out).resolve()))))
    return result
