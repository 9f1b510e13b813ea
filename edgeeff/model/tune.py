"""``edgeeff tune``'s cheap ranking: each candidate's head trained on its cached features.

Edge Impulse's EON Tuner trains the candidates that fit a device and reports accuracy against
latency; here every candidate of :func:`edgeeff.core.rank.tune_shortlist` (fit's budgets) gets
its frozen ImageNet backbone run once over the centre crop and the mirrored centre crop of every
training image (:class:`edgeeff.model.features.TrunkRunner`, up to the pooled features), and a new
softmax head trained on those features for a few seconds. Its validation top-1 ranks the
candidates: what the user's data says, not ImageNet's. The CLI then trains the best one with the
full recipe (:mod:`edgeeff.model.train`), exports it int8 and evaluates it.

Images are decoded once, at the largest candidate's size; smaller candidates take area-resampled
copies of those squares (what decoding at their size gives, to within resampling).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeeff.core import artifacts as A
from edgeeff.core import fsutil
from edgeeff.core import rank as core_rank
from edgeeff.core.budget import Budgets, Candidate
from edgeeff.core.targets import Device
from edgeeff.device import evaluate
from edgeeff.model import features as F
from edgeeff.model import train as trainmod
from edgeeff.model.build import build_model
from edgeeff.model.train import Phases, load_split
from edgeeff.model.weights import load_into

HEAD_EPOCHS = 40


def _resized(squares: np.ndarray, side: int) -> np.ndarray:
    import cv2

    if squares.shape[1] == side:
        return squares
    return np.stack([cv2.resize(s, (side, side), interpolation=cv2.INTER_AREA) for s in squares])


def _head_hits(x_tr, y_tr, x_va, y_va, num_classes: int, seed: int) -> list[bool]:
    """Per validation image, whether a softmax head (dropout 0.2, label smoothing 0.1, Adam
    with a cosine schedule) trained on pooled features gets it right."""
    import keras

    keras.utils.set_random_seed(seed)
    head = keras.Sequential([keras.Input(x_tr.shape[1:]), keras.layers.Dropout(0.2),
                             keras.layers.Dense(num_classes, activation="softmax")])
    steps = HEAD_EPOCHS * -(-len(x_tr) // 128)
    head.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        3e-3, steps)), loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1))
    head.fit(x_tr, np.eye(num_classes, dtype=np.float32)[y_tr], batch_size=128,
             epochs=HEAD_EPOCHS, verbose=0, shuffle=True)
    pred = head.predict(x_va, verbose=0, batch_size=512)
    return [bool(h) for h in np.argmax(pred, 1) == y_va]


def rank(cands: list[Candidate], data, val_dir=None, val_fraction: float = 0.2, seed: int = 0,
         budget_s: float | None = None, log=print, phases: Phases | None = None
         ) -> tuple[list[dict], list[list[bool] | None], list[str]]:
    """One row per candidate (name, spec, latency, predicted ImageNet top-1, ``rank_top1`` on
    the user's validation images, seconds), in ``cands``' order; candidates not reached within
    ``budget_s`` get ``rank_top1`` None. Also returns each row's per-image validation hits
    (None where not ranked: what :func:`edgeeff.core.rank.tune_pick` decides on) and the class
    names."""
    import keras

    largest = max(cands, key=lambda c: c.spec.resolution)
    t0 = time.perf_counter()
    classes, _, pixels, y, tr, va = load_split(data, val_dir, val_fraction, largest.spec, seed,
                                               phases or Phases(), log)
    log(f"decoded {len(pixels)} images at {F.preprocessor(largest.spec).shorter_side} px "
        f"in {time.perf_counter() - t0:.0f} s")
    rows: list[dict] = []
    hits: list[list[bool] | None] = []
    for c in cands:
        spec = replace(c.spec, num_classes=len(classes))
        row = {"name": spec.name, "preset": spec.preset, "resolution": spec.resolution,
               "latency_ms": round(c.latency_ms, 2), "macs": c.cost.macs,
               "imagenet_top1_predicted": round(c.top1, 1), "rank_top1": None, "seconds": None}
        rows.append(row)
        hits.append(None)
        spent = time.perf_counter() - t0
        if budget_s is not None and rows[:-1] and spent > budget_s:
            log(f"{spec.name}: not ranked (the ranking budget of {budget_s / 60:.0f} min is spent)")
            continue
        t = time.perf_counter()
        model = build_model(spec)
        load_into(model, spec, "imagenet")
        pooled = keras.Model(model.input, model.get_layer("avg_pool").output)
        runner = F.TrunkRunner(pooled)
        sq = _resized(pixels, F.preprocessor(spec).shorter_side)
        centre = F.centre(sq, spec.resolution)
        f_all = runner(centre).astype(np.float32)
        f_flip = runner(np.ascontiguousarray(centre[tr][:, :, ::-1])).astype(np.float32)
        x_tr = np.concatenate([f_all[tr], f_flip])
        y_tr = np.concatenate([y[tr], y[tr]])
        hits[-1] = _head_hits(x_tr, y_tr, f_all[va], y[va], len(classes), seed)
        row["rank_top1"] = round(sum(hits[-1]) / len(hits[-1]), 4)
        row["seconds"] = round(time.perf_counter() - t, 1)
        log(f"{spec.name}: head on cached features {row['rank_top1']:.1%} "
            f"({row['latency_ms']:.1f} ms on the device, {row['seconds']:.0f} s)")
        del model, pooled, runner
        keras.backend.clear_session()
    return rows, hits, classes


@dataclass(frozen=True)
class TuneResult:
    """What ``edgeeff tune`` found and wrote: ``doc`` is ``tune.json``'s content (device,
    budgets, classes, every candidate's row, the pick and fit's pick, where the trained model,
    the export and the int8 model are, the pick rule), ``out`` the folder it is in."""

    doc: dict
    out: Path

    @property
    def pick(self) -> dict:
        return self.doc["pick"]


def tune(device: Device, budgets: Budgets, cands: list[Candidate], data, val_dir,
         val_split: float, seed: int, budget_minutes: float, out: Path, export, log=print
         ) -> TuneResult:
    """Rank ``cands`` on the user's data (:func:`rank`), pick (:func:`edgeeff.core.rank.tune_pick`),
    train the pick with the cached recipe (pretrained candidates: what the ranking measured),
    export it int8 with ``export(spec_file, out_dir) -> model card dict``, evaluate the int8
    model on ``val_dir``, and write ``OUT/tune.json``."""
    log(f"tune: {len(cands)} candidates meet {device.key}'s budgets "
        f"({', '.join(c.spec.name for c in cands)})")
    rows, hits, classes = rank(cands, data, val_dir, val_split, seed, 60 * budget_minutes, log)
    pick = core_rank.tune_pick(rows, hits)
    fit_pick = rows[0]
    spec = next(c.spec for c in cands if c.spec.name == pick["name"])
    if pick is fit_pick:
        why = (f"fit's pick: no candidate beats it by more than {core_rank.TUNE_MARGIN_Z:g} "
               "standard errors")
    else:
        why = (f"+{pick['vs_fit_points']:.1f} points over fit's pick {fit_pick['name']}, "
               f"standard error {pick['vs_fit_se_points']:.1f}")
    log(f"pick: {pick['name']} ({pick['rank_top1']:.1%} with a head on cached features; "
        f"{why}); training it fully")
    out.mkdir(parents=True, exist_ok=True)
    tr = trainmod.train(data, spec, "auto", out / "train", val_fraction=val_split, force=True,
                        log=log, val_dir=val_dir, seed=seed, recipe=trainmod.CACHED)
    pick["val_top1"] = tr["val_accuracy"]
    card = export(out / "train" / A.SPEC_FILE, out / "export")
    pick["int8_top1"] = None
    if val_dir:
        res = evaluate.evaluate(evaluate.runner_for(out / "export"), val_dir)
        pick["int8_top1"] = res["top1"]
    doc = {"device": device.key, "budgets": budgets.to_dict(),
           "latency_source": "model", "classes": classes, "candidates": rows, "pick": pick,
           "fit_pick": fit_pick, "train": str(out / "train"), "export": str(out / "export"),
           "int8_model": str(out / "export" / A.INT8_MODEL), "card": card.get("name"),
           "pick_rule": core_rank.TUNE_PICK_RULE,
           "vs_fit_pick_points": round(100 * (pick["rank_top1"] - fit_pick["rank_top1"]), 1)}
    fsutil.write_json_atomic(out / A.TUNE_REPORT, doc)
    return TuneResult(doc, out)
