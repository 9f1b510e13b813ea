"""``edgeeff tune``'s cheap ranking of the candidates that fit a device, and its workflow.

Edge Impulse's EON Tuner trains the candidates that fit a device and reports accuracy against
latency. Here, where pretrained candidates fit (:func:`edgeeff.core.rank.tune_shortlist`),
each one's frozen ImageNet backbone runs once over the centre crop and the mirrored centre crop
of every training image (:class:`edgeeff.model.features.TrunkRunner`, up to the pooled
features), and a new softmax head trains on those features for a few seconds (:func:`rank`).
Where none fits (a microcontroller: :func:`edgeeff.core.fit.weightless_shortlist`, across phi,
resolution and head width), each candidate's whole network trains briefly with the distilled
recipe's machinery (:func:`rank_distilled`, sized by :data:`~edgeeff.model.train.recipe.PROXY`),
from views and teacher outputs computed once for all of them. Either way the validation top-1
ranks the candidates: what the user's data says, not ImageNet's. :func:`tune` then picks
(:func:`edgeeff.core.rank.tune_pick`), trains the pick with the recipe ``train`` chooses for it,
exports it (int8; and TFLite Micro where the device runs it, with the firmware built and run
when the tools are there) and evaluates it.

Images are decoded once, at the largest size needed; smaller candidates take area-resampled
copies of those squares (what decoding at their size gives, to within resampling).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeeff.core import artifacts as A
from edgeeff.core import fsutil
from edgeeff.core import rank as core_rank
from edgeeff.core.budget import Budgets, Candidate
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.rank import TuneRow
from edgeeff.core.targets import Device
from edgeeff.device import evaluate
from edgeeff.model import features as F
from edgeeff.model import train as trainmod
from edgeeff.model.build import build_model
from edgeeff.model.inherit import InheritedWeightsWarning
from edgeeff.model.train import Phases, load_split
from edgeeff.model.train import distill as D
from edgeeff.model.train.data import folder_dataset, load_sets
from edgeeff.model.train.full import proxy_hits
from edgeeff.model.train.recipe import PROXY, Proxy
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


def _rank_each(cands: list[Candidate], num_classes: int, t0: float, budget_s: float | None,
               log, score, describe) -> tuple[list[TuneRow], list[list[bool] | None]]:
    """One :class:`TuneRow` per candidate, in ``cands``' order: ``score(candidate, spec)``
    gives its per-image validation hits (``spec``: the candidate's, with ``num_classes``), and
    its ``rank_top1`` and seconds come from them; ``describe(candidate, row)`` is its log line's
    tail. Once ``budget_s`` seconds have passed since ``t0``, the candidates left (never the
    first) are not ranked: ``rank_top1`` and their hits None."""
    rows: list[TuneRow] = []
    hits: list[list[bool] | None] = []
    for c in cands:
        spec = replace(c.spec, num_classes=num_classes)
        row, h = TuneRow.of(c), None
        if budget_s is not None and rows and time.perf_counter() - t0 > budget_s:
            log(f"{spec.name}: not ranked (the ranking budget of {budget_s / 60:g} min is spent)")
        else:
            t = time.perf_counter()
            h = score(c, spec)
            row = replace(row, rank_top1=round(sum(h) / len(h), 4),
                          seconds=round(time.perf_counter() - t, 1))
            log(f"{spec.name}: {describe(c, row)}")
        rows.append(row)
        hits.append(h)
    return rows, hits


def rank(cands: list[Candidate], data, val_dir=None, val_fraction: float = 0.2, seed: int = 0,
         budget_s: float | None = None, log=print, phases: Phases | None = None
         ) -> tuple[list[TuneRow], list[list[bool] | None], list[str]]:
    """Pretrained candidates: one row per candidate, in ``cands``' order, ``rank_top1`` its
    validation top-1 with a new head on its cached features (None for candidates not reached
    within ``budget_s``). Also returns each row's per-image validation hits (None where not
    ranked: what :func:`edgeeff.core.rank.tune_pick` decides on) and the class names."""
    import keras

    largest = max(cands, key=lambda c: c.spec.resolution)
    t0 = time.perf_counter()
    classes, _, pixels, y, tr, va = load_split(data, val_dir, val_fraction, largest.spec, seed,
                                               phases or Phases(), log)
    log(f"decoded {len(pixels)} images at {F.preprocessor(largest.spec).shorter_side} px "
        f"in {time.perf_counter() - t0:.0f} s")
    def score(c: Candidate, spec) -> list[bool]:
        model = build_model(spec)
        load_into(model, spec, "imagenet")
        pooled = keras.Model(model.input, model.get_layer("avg_pool").output)
        runner = F.TrunkRunner(pooled, images=len(pixels) + len(tr))  # all, then flipped tr
        sq = _resized(pixels, F.preprocessor(spec).shorter_side)
        centre = F.centre(sq, spec.resolution)
        f_all = runner(centre).astype(np.float32)
        f_flip = runner(np.ascontiguousarray(centre[tr][:, :, ::-1])).astype(np.float32)
        x_tr = np.concatenate([f_all[tr], f_flip])
        y_tr = np.concatenate([y[tr], y[tr]])
        del model, pooled, runner
        h = _head_hits(x_tr, y_tr, f_all[va], y[va], len(classes), seed)
        keras.backend.clear_session()
        return h

    rows, hits = _rank_each(
        cands, len(classes), t0, budget_s, log, score,
        lambda c, row: f"head on cached features {row.rank_top1:.1%} ({row.latency_ms:.1f} ms "
                       f"on the device, {row.seconds:.0f} s)")
    return rows, hits, classes


@dataclass(frozen=True)
class ProxyRun:
    """What :func:`rank_distilled` spent before the candidates: the proxy's settings, the
    teacher, the photos drawn, the views made and how often the teacher ran (once per view,
    shared by every candidate) and in how many seconds."""

    proxy: Proxy
    teacher: D.TeacherInfo
    photos: int
    views: int
    teacher_images_run: int
    views_seconds: float

    def to_dict(self) -> dict:
        return {"proxy": self.proxy.to_dict(), "teacher": self.teacher.to_dict(),
                "photos": self.photos, "views": self.views,
                "teacher_images_run": self.teacher_images_run,
                "views_seconds": self.views_seconds}


def _draw(y: list[int], per_class: int, seed: int) -> list[int]:
    """Indices of at most ``per_class`` items of every label (seeded), in file order."""
    rng = np.random.default_rng([seed, 33])
    keep: list[int] = []
    for k in sorted(set(y)):
        idx = np.flatnonzero(np.asarray(y) == k)
        keep += rng.permutation(idx)[:per_class].tolist()
    return sorted(keep)


def rank_distilled(cands: list[Candidate], data, val_dir=None, val_fraction: float = 0.2,
                   seed: int = 0, budget_s: float | None = None, log=print, teacher=None,
                   proxy: Proxy = PROXY
                   ) -> tuple[list[TuneRow], list[list[bool] | None], list[str], ProxyRun]:
    """Candidates without weights of their own: as :func:`rank`, ``rank_top1`` each one's
    validation top-1 after its whole network trained briefly (:func:`~edgeeff.model.train.full.
    proxy_hits`, ``proxy``'s recipe, seeded with ``seed``) on ``proxy.per_class`` photos of each
    class. The teacher (``teacher``: a trained model folder, else the default one for these
    photos, trained once per dataset and not counted in ``budget_s``) runs once per view; the
    views are cut at the largest resolution needed and area-resampled for each candidate."""
    import keras

    r = replace(proxy.recipe, seed=seed)
    classes, (files, y_files), (val_files, y_val_files) = folder_dataset(
        data, val_fraction, seed, val_dir)
    t_model, tinfo = trainmod.teacher_for(data, val_dir, val_fraction, teacher, log)(
        classes, files, val_files)
    t0 = time.perf_counter()
    keep = _draw(y_files, proxy.per_class, seed)
    side = max([t_model.resolution] + [c.spec.resolution for c in cands])
    pp = F.preprocessor(replace(cands[0].spec, resolution=side))
    src = f"--val {val_dir}" if val_dir else f"{val_fraction:.0%} of --data"
    sq, y_tr, x_va, y_va = load_sets([files[i] for i in keep], [y_files[i] for i in keep],
                                     val_files, y_val_files, pp, pp, src, log)
    x_side, t_tr = D.teacher_views(sq, side, t_model, r.views, r.seed, r.crop_scale)
    del sq
    y_views = np.tile(y_tr, r.views).astype(np.int32)
    views_s = round(time.perf_counter() - t0, 1)
    log(f"ranking: every candidate's whole network trained {r.epochs} epochs over {r.views} "
        f"views of {len(y_tr)} photos (at most {proxy.per_class} per class) from the inherited "
        f"initialisation (pretrained weights sliced to it, as 'train' starts), distilled from "
        f"{tinfo.name}; the teacher ran once per view ({t_model.images_run} images, "
        f"{views_s:.0f} s)")

    def score(c: Candidate, spec) -> list[bool]:
        with warnings.catch_warnings():  # said once above, not once per candidate
            warnings.simplefilter("ignore", InheritedWeightsWarning)
            h = proxy_hits(spec, "auto", _resized(x_side, spec.resolution), t_tr, y_views,
                           _resized(x_va, spec.resolution), y_va, r)
        keras.backend.clear_session()
        return h

    rows, hits = _rank_each(
        cands, len(classes), t0, budget_s, log, score,
        lambda c, row: f"distilled briefly {row.rank_top1:.1%} (flash "
                       f"{c.flash_bytes / 1024:,.0f} KB, RAM {c.ram_bytes / 1024:,.0f} KB, "
                       f"{row.latency_ms:.0f} ms; {row.seconds:.0f} s)")
    run = ProxyRun(proxy, tinfo, len(y_tr), len(x_side), t_model.images_run, views_s)
    return rows, hits, classes, run


RANKED_BY_HEAD = "head on cached features"
RANKED_BY_PROXY = "whole network, distilled briefly"


@dataclass(frozen=True)
class TuneResult:
    """What ``edgeeff tune`` found and wrote: ``rows`` every candidate's (fit's pick first),
    ``pick`` the index of the one trained fully, ``doc`` is ``tune.json``'s content (device,
    budgets, classes, the rows, the pick and fit's pick, how they were ranked, where the
    trained model, the export and the int8 model are, the pick rule; on the distilled path
    also the proxy's run and the firmware check), ``out`` the folder it is in."""

    rows: tuple[TuneRow, ...]
    pick: int
    doc: dict
    out: Path

    @property
    def picked(self) -> TuneRow:
        return self.rows[self.pick]


def tune(device: Device, budgets: Budgets, cands: list[Candidate], data, val_dir,
         val_split: float, seed: int, budget_minutes: float, out: Path, export, log=print,
         teacher=None, firmware: Callable | None = None, proxy: Proxy = PROXY) -> TuneResult:
    """Rank ``cands`` on the user's data, pick (:func:`edgeeff.core.rank.tune_pick`), train the
    pick, export it with ``export(spec_file, out_dir, formats) -> model card dict``, evaluate
    the int8 model on ``val_dir``, and write ``OUT/tune.json``.

    Pretrained candidates are ranked by :func:`rank` and the pick trains with the cached recipe
    (what the ranking measured). Candidates without weights of their own (no pretrained one
    fits the device) are ranked by :func:`rank_distilled` and the pick trains with the distilled
    recipe from the same ``teacher``; it is exported int8 and, where the device runs TFLite
    Micro, as a TFLite Micro project, whose firmware ``firmware(export_dir)`` then builds and
    runs, or says what is missing: it returns a check with ``line()`` and ``to_dict()``
    (:class:`edgeeff.deploy.firmware.FirmwareCheck`; the deploy tier builds it, so the CLI
    passes the step in)."""
    weightless = any(c.weights is None for c in cands)
    if teacher is not None and not weightless:
        raise EdgeeffError("--teacher applies where no pretrained candidate fits the device "
                           "(the pick then trains with the distilled recipe)")
    log(f"tune: {len(cands)} candidates meet {device.key}'s budgets "
        f"({', '.join(c.spec.name for c in cands)})")
    run = None
    if weightless:
        rows, hits, classes, run = rank_distilled(cands, data, val_dir, val_split, seed,
                                                  60 * budget_minutes, log, teacher, proxy)
        ranked_by = RANKED_BY_PROXY
    else:
        rows, hits, classes = rank(cands, data, val_dir, val_split, seed, 60 * budget_minutes,
                                   log)
        ranked_by = RANKED_BY_HEAD
    rows, k = core_rank.tune_pick(rows, hits)
    pick, fit_pick = rows[k], rows[0]
    spec = cands[k].spec
    if k == 0:
        why = (f"fit's pick: no candidate beats it by more than {core_rank.TUNE_MARGIN_Z:g} "
               "standard errors")
    else:
        why = (f"+{pick.vs_fit_points:.1f} points over fit's pick {fit_pick.name}, "
               f"standard error {pick.vs_fit_se_points:.1f}")
    log(f"pick: {pick.name} ({pick.rank_top1:.1%} {ranked_by}; {why}); training it fully")
    out.mkdir(parents=True, exist_ok=True)
    if weightless:
        tr = trainmod.train(data, spec, "auto", out / "train", val_fraction=val_split,
                            force=True, log=log, val_dir=val_dir, seed=seed, recipe="auto",
                            teacher=teacher)
    else:
        tr = trainmod.train(data, spec, "auto", out / "train", val_fraction=val_split,
                            force=True, log=log, val_dir=val_dir, seed=seed,
                            recipe=trainmod.CACHED)
    formats = ("tflite", "tflm") if weightless and "tflm" in device.formats else ("tflite",)
    card = export(out / "train" / A.SPEC_FILE, out / "export", formats)
    int8 = None
    if val_dir:
        int8 = evaluate.evaluate(evaluate.runner_for(out / "export"), val_dir)["top1"]
    pick = replace(pick, val_top1=tr["val_accuracy"], int8_top1=int8)
    rows[k] = pick
    doc = {"device": device.key, "budgets": budgets.to_dict(),
           "latency_source": "model", "classes": classes,
           "candidates": [r.to_dict() for r in rows], "pick": pick.to_dict(),
           "fit_pick": rows[0].to_dict(), "ranked_by": ranked_by,
           "train": str(out / "train"), "export": str(out / "export"),
           "int8_model": str(out / "export" / A.INT8_MODEL), "card": card.get("name"),
           "pick_rule": core_rank.TUNE_PICK_RULE,
           "vs_fit_pick_points": round(100 * (pick.rank_top1 - fit_pick.rank_top1), 1)}
    if run is not None:
        doc["proxy"] = run.to_dict()
        doc["recipe"] = tr.get("recipe")  # the pick's full training, and its teacher
        doc["teacher"] = tr.get("teacher")
    if "tflm" in formats:
        doc["tflm"] = str(out / "export" / A.TFLM_DIR)
        if firmware is not None:
            check = firmware(out / "export")
            log(check.line())
            doc["firmware"] = check.to_dict()
    fsutil.write_json_atomic(out / A.TUNE_REPORT, doc)
    return TuneResult(tuple(rows), k, doc, out)
