"""Resume state of an unfinished run: ``OUT.resume/`` beside ``OUT``, saved every epoch.

The state file names a consistent set (the last epoch's weights and optimizer slots, the best
epoch's weights, the history) and is written last; ``--resume`` continues only a run with the
same data, model and recipe (:func:`prepare` compares the run's key).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from edgeeff.core import artifacts as A
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import finite_or_none, write_json_atomic


def resume_dir(out: str | Path) -> Path:
    """Where an unfinished run keeps its state: ``OUT.resume/`` beside ``OUT``."""
    out = Path(out)
    return out.with_name(out.name + ".resume")


def prepare(out: Path, key: dict, resume: bool, force: bool) -> dict | None:
    """The saved state to continue (``resume``), else None after clearing a stale folder:
    an interrupted run is never thrown away without ``--force``."""
    state_dir = resume_dir(out)
    if resume:
        try:
            state = json.loads((state_dir / A.TRAIN_STATE).read_text())
        except (OSError, ValueError):
            raise EdgeeffError(f"nothing to resume: {state_dir} holds no interrupted run") from None
        if state.get("config") != key:
            raise EdgeeffError(f"--resume: {state_dir} is a run with other data, model or "
                               "settings; start over with --force")
        return state
    if (state_dir / A.TRAIN_STATE).is_file():
        if not force:
            raise EdgeeffError(f"{state_dir} holds an interrupted run: continue it with "
                               "--resume, or start over with --force")
        shutil.rmtree(state_dir)
    else:  # stopped before its first epoch: nothing worth keeping
        shutil.rmtree(state_dir, ignore_errors=True)
    return None


def save(state_dir: Path, model, opt, state: dict) -> None:
    """Last epoch's weights, optimizer slots and history, each file replaced atomically, the
    state file last (it names a consistent set)."""
    tmp_w = state_dir / ("." + A.TRAIN_LAST_WEIGHTS)
    model.save_weights(str(tmp_w))
    os.replace(tmp_w, state_dir / A.TRAIN_LAST_WEIGHTS)
    tmp_o = state_dir / ("." + A.TRAIN_OPTIMIZER)
    with open(tmp_o, "wb") as f:
        np.savez(f, *[np.asarray(v) for v in opt.variables])
    os.replace(tmp_o, state_dir / A.TRAIN_OPTIMIZER)
    write_json_atomic(state_dir / A.TRAIN_STATE, finite_or_none(state))  # NaN loss: null


def save_best(state_dir: Path, model) -> None:
    model.save_weights(str(state_dir / ("." + A.TRAIN_BEST_WEIGHTS)))
    os.replace(state_dir / ("." + A.TRAIN_BEST_WEIGHTS), state_dir / A.TRAIN_BEST_WEIGHTS)


def restore(state_dir: Path, model, opt, variables) -> None:
    """The last epoch's weights and optimizer slots into ``model`` and ``opt`` (built over
    ``variables``)."""
    model.load_weights(str(state_dir / A.TRAIN_LAST_WEIGHTS))
    opt.build(variables)
    with np.load(state_dir / A.TRAIN_OPTIMIZER) as z:
        for var, i in zip(opt.variables, range(len(z.files))):
            var.assign(z[f"arr_{i}"])


def resume_from(state_dir: Path, state: dict | None, model, opt, variables, epochs: int,
                log) -> tuple[dict, float, int, int]:
    """(history, best, best epoch, epoch to start at): a fresh run's, or, when ``state`` is an
    interrupted run's (:func:`prepare`), its weights and optimizer slots restored into
    ``model`` and ``opt`` (:func:`restore`) and its bookkeeping, with one log line."""
    if state is None:
        return {}, -1.0, 0, 0
    restore(state_dir, model, opt, variables)
    log(f"resumed after epoch {state['epoch']} of {epochs} (best val_accuracy "
        f"{state['best']:.4f})")
    return state["history"], state["best"], state["best_epoch"], state["epoch"]


def end_epoch(state_dir: Path, model, opt, key: dict, epoch: int, history: dict, acc: float,
              best: float, best_epoch: int) -> tuple[float, int]:
    """After 0-based ``epoch`` scored ``acc`` on validation: keep the weights when they are the
    best so far, save the state (both recipes resume from it); returns the new best and its
    1-based epoch."""
    if acc > best:
        best, best_epoch = acc, epoch + 1
        save_best(state_dir, model)
    save(state_dir, model, opt, {"config": key, "epoch": epoch + 1, "history": history,
                                 "best": best, "best_epoch": best_epoch})
    return best, best_epoch


def interrupted_line(state_dir: Path, best: float, best_epoch: int) -> str:
    """What an interrupted run kept, and how to continue it."""
    done = "no epoch finished" if best < 0 else \
        f"best val_accuracy {best:.4f} (epoch {best_epoch}) kept"
    return f"interrupted: {done} in {state_dir}/; continue with --resume"
