"""Decisions and results as pictures (matplotlib, from the ``[plot]`` extra, imported lazily).

- ``fit --plot``: every pretrained candidate (lite0/1/2 at each resolution) on predicted top-1
  against latency (or MACs where no latency budget is set), the budget line, the pick and the
  runner-up; for a pick without weights, its position on the cost axis as a dashed line.
- ``eval --plot``: the confusion matrix as a row-normalised heatmap with counts.
- ``train``'s ``history.png``: loss and accuracy by epoch.
- ``tune``'s ``tune.png``: each candidate's validation top-1 against its device latency, and
  on a microcontroller against the flash and RAM fit's budgets check, with the budget lines.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edgeeff.core.budget import FitResult
from edgeeff.core.errors import EdgeeffError
from edgeeff.core.fsutil import write_bytes_atomic
from edgeeff.core.optional import require
from edgeeff.core.rank import TuneRow, pretrained_candidates

FORMATS = {".png": "png", ".svg": "svg"}
COLORS = {"lite0": "#1f77b4", "lite1": "#2ca02c", "lite2": "#d62728"}


def check_path(path: str | Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise EdgeeffError(f"--plot {path}: use a .png or .svg file name")
    return fmt


def _pyplot(purpose: str = "--plot"):
    """matplotlib's pyplot on the file-only Agg backend, or one line on how to install it."""
    require("matplotlib", purpose).use("Agg")
    return require("matplotlib.pyplot", purpose)


def _save(plt, fig, path: str | Path, fmt: str, dpi: float | None = None) -> Path:
    """Render ``fig`` in memory, close it, and write the file in one atomic step."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **({"dpi": dpi} if dpi else {}))
    plt.close(fig)
    out = Path(path)
    write_bytes_atomic(out, buf.getvalue())
    return out


def plot_fit(res: FitResult, path: str | Path) -> Path:
    fmt = check_path(path)
    plt = _pyplot()
    b = res.budgets
    by_latency = b.max_latency_ms is not None or b.max_macs is None

    def x(c) -> float:
        return c.latency_ms if by_latency else c.cost.macs / 1e6

    cands = list(res.candidates) or pretrained_candidates(res.device, b, res.chosen.spec.num_classes)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name, color in COLORS.items():
        own = sorted((c for c in cands if c.spec.preset == name), key=x)
        if not own:
            continue
        ax.plot([x(c) for c in own], [c.top1 for c in own], "-", color=color, alpha=0.35, lw=1)
        fits = [c for c in own if c.fits]
        over = [c for c in own if not c.fits]
        ax.scatter([x(c) for c in fits], [c.top1 for c in fits], color=color, s=22,
                   label=f"{name} (fits)")
        ax.scatter([x(c) for c in over], [c.top1 for c in over], facecolors="none",
                   edgecolors=color, s=22, label=f"{name} (over budget)")
    limit = b.max_latency_ms if by_latency else (None if b.max_macs is None else b.max_macs / 1e6)
    if limit is not None:
        ax.axvline(limit, color="black", ls=":", lw=1.2,
                   label=f"budget {limit:g} {'ms' if by_latency else 'MFLOPs'}")
    ch = res.chosen
    if ch.top1 is not None:
        ax.scatter([x(ch)], [ch.top1], marker="*", s=260, color="gold", edgecolors="black",
                   zorder=5, label=f"pick: {ch.label} ({ch.top1:.1f} %)")
    else:
        ax.axvline(x(ch), color="purple", ls="--", lw=1.2,
                   label=f"pick: {ch.label} (no ImageNet weights)")
        if res.alternative is not None:
            a = res.alternative
            ax.scatter([x(a)], [a.top1], marker="*", s=200, color="violet", edgecolors="black",
                       zorder=5, label=f"best pretrained: {a.label} ({a.top1:.1f} %)")
    if res.runner_up is not None:
        r = res.runner_up
        ax.scatter([x(r)], [r.top1], marker="D", s=70, color="silver", edgecolors="black",
                   zorder=4, label=f"runner-up: {r.label} ({r.top1:.1f} %)")
    ax.set_xlabel(f"{'latency, ms (' + res.device.key + ')' if by_latency else 'MFLOPs (MACs)'}")
    ax.set_ylabel("predicted ImageNet top-1, int8 (%)")
    ax.set_title(f"edgeeff fit: {res.device.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(plt, fig, path, fmt)


def plot_confusion(labels: list[str], matrix, path: str | Path, title: str = "") -> Path:
    """``eval --plot``: the confusion matrix as a heatmap, rows true and columns predicted.

    Colours are row-normalised (each true class's share of predictions, so rare classes show as
    clearly as common ones); the counts are written in the cells (up to 40 classes) and the
    labels on the axes (up to 80).
    """
    fmt = check_path(path)
    plt = _pyplot()
    cm = np.asarray(matrix, np.int64).reshape(len(labels), len(labels))
    n = len(labels)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    side = min(24.0, max(4.5, 0.45 * n + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=110)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 40:
        size = 8 if n <= 15 else 6 if n <= 25 else 4.5
        for t, p in zip(*np.nonzero(cm)):
            ax.text(p, t, str(cm[t, p]), ha="center", va="center", fontsize=size,
                    color="white" if share[t, p] > 0.5 else "black")
    if n <= 80:
        ticks = np.arange(n)
        fs = 8 if n <= 20 else 6 if n <= 40 else 4
        ax.set_xticks(ticks, labels, rotation=90, fontsize=fs)
        ax.set_yticks(ticks, labels, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "edgeeff eval: confusion matrix")
    fig.tight_layout()
    return _save(plt, fig, path, fmt)


def plot_history(history: dict, path: str | Path) -> Path:
    """``train``'s loss and accuracy curves by epoch (``history.json``'s figures)."""
    fmt = check_path(path)
    plt = _pyplot("plots")
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.6))
    for key, ax in (("loss", ax_l), ("val_loss", ax_l), ("accuracy", ax_a),
                    ("val_accuracy", ax_a)):
        ys = history.get(key)
        if ys:
            ax.plot(range(1, len(ys) + 1), ys, marker="o",
                    label=key.replace("val_", "validation ").replace("_", " "))
    for ax, title in ((ax_l, "loss"), (ax_a, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    return _save(plt, fig, path, fmt, dpi=110)


_LABEL_OFFSETS = ((5, 4), (5, -11), (-70, 4), (-70, -11))


def _free_offset(xy: tuple[float, float], placed: list, near_x: float = 2.0) -> tuple[int, int]:
    """A label offset (points) that does not put this point's label on top of one already
    placed for a nearby point (tied candidates: same top-1, x within ``near_x``: 2 ms of
    latency); records it."""
    near = {off for (x, y), off in placed if abs(x - xy[0]) < near_x and abs(y - xy[1]) < 1.0}
    off = next((o for o in _LABEL_OFFSETS if o not in near), _LABEL_OFFSETS[0])
    placed.append((xy, off))
    return off


HEAD_COLORS = {"fixed": "#1f77b4", "scaled": "#ff7f0e"}  # candidates without weights


def _tune_label(r: TuneRow) -> str:
    if r.preset is not None:
        return f"{r.preset} {r.resolution}"
    return ("" if r.phi is None else f"φ{r.phi:+.2f} ") + f"{r.resolution}px"


def _tune_panel(ax, rows: list[TuneRow], pick: TuneRow, fitp: TuneRow, x,
                near_x: float | None, budget: float | None, budget_label: str,
                xlabel: str) -> None:
    """One panel of ``tune.png``: ranking top-1 against ``x(row)``, the budget's line, the
    pick (and its fully trained figures) and fit's pick. Labels of points closer than
    ``near_x`` (None: a fifth of the axis' span) are moved apart."""
    ranked = [100 * r.rank_top1 for r in rows if r.rank_top1 is not None]
    floor = min(ranked) - 2 if ranked else 0.0
    if near_x is None:
        xs = [x(r) for r in rows] + ([budget] if budget else [])
        near_x = 0.2 * (max(xs) - min(xs)) or 1.0
    placed: list[tuple[tuple[float, float], tuple[int, int]]] = []
    for r in rows:
        if r.rank_top1 is None:  # shown too, on the floor: it fits but was not ranked
            ax.scatter(x(r), floor, marker="x", color="#7f7f7f", s=40, zorder=3)
            ax.annotate(f"{_tune_label(r)} (not ranked)", (x(r), floor),
                        textcoords="offset points", xytext=(5, 4), fontsize=8, color="#7f7f7f")
            continue
        col = COLORS[r.preset] if r.preset in COLORS else HEAD_COLORS.get(r.head, "#7f7f7f")
        xy = (x(r), 100 * r.rank_top1)
        ax.scatter(*xy, color=col, s=40, zorder=3)
        ax.annotate(_tune_label(r), xy, textcoords="offset points",
                    xytext=_free_offset(xy, placed, near_x), fontsize=8)
    ax.scatter(x(pick), 100 * pick.rank_top1, s=220, facecolors="none", edgecolors="black",
               linewidths=1.5, zorder=4, label=f"pick: {pick.name}")
    for v, mark, lab in ((pick.val_top1, "*", "pick, trained: float"),
                         (pick.int8_top1, "P", "pick, trained: int8")):
        if v is not None:
            ax.scatter(x(pick), 100 * v, marker=mark, s=120, color="black", zorder=5,
                       label=f"{lab} {v:.1%}")
    if fitp.name != pick.name and fitp.rank_top1 is not None:
        ax.scatter(x(fitp), 100 * fitp.rank_top1, s=160, marker="s", facecolors="none",
                   edgecolors="#9467bd", zorder=4, label="fit's pick")
    if budget:
        ax.axvline(budget, color="red", ls="--", lw=1, label=budget_label)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def plot_tune(doc: dict, path: str | Path) -> Path:
    """``tune``, from ``tune.json``'s content (rows read as :class:`~edgeeff.core.rank.TuneRow`):
    every candidate's ranking top-1 against its latency on the device with the latency budget's
    line; where the candidates have no pretrained weights (a microcontroller), also against the
    flash and the RAM ``fit``'s budgets check, with those budgets' lines. The pick (and its
    fully trained figures) and fit's pick are marked."""
    fmt = check_path(path)
    plt = _pyplot()
    rows = [TuneRow.from_dict(c) for c in doc["candidates"]]
    pick, fitp = TuneRow.from_dict(doc["pick"]), TuneRow.from_dict(doc["fit_pick"])
    b = doc.get("budgets", {})
    lim = b.get("max_latency_ms")
    panels = [(lambda r: r.latency_ms, 2.0, lim, f"latency budget {lim:g} ms" if lim else "",
               f"int8 latency on {doc['device']} (ms, {doc.get('latency_source', 'model')})")]
    weightless = all(r.imagenet_top1_predicted is None and r.flash_bytes is not None
                     for r in rows)
    if weightless:
        kb = 1024
        panels[0] = (panels[0][0], None, *panels[0][2:])
        for key, what in (("flash", "flash"), ("ram", "RAM")):
            cap = b.get(f"max_{key}_bytes")
            panels.insert(len(panels) - 1, (
                lambda r, k=key: getattr(r, f"{k}_bytes") / kb, None,
                None if cap is None else cap / kb,
                "" if cap is None else f"{what} budget {cap / kb:,.0f} KB",
                f"{what} checked by fit's budget (KB)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 4, 4.5),
                             squeeze=False)
    for ax, (x, near, budget, blabel, xlabel) in zip(axes[0], panels):
        _tune_panel(ax, rows, pick, fitp, x, near, budget, blabel, xlabel)
    axes[0][0].set_ylabel(f"validation top-1 (%), {doc.get('ranked_by', 'head on cached features')}")
    fig.suptitle(f"edgeeff tune: {len(rows)} candidates that fit {doc['device']}")
    handles = {}
    if weightless:  # what the colours say
        for head, col in HEAD_COLORS.items():
            if any(r.head == head for r in rows):
                handles[f"{head} head"] = axes[0][0].scatter([], [], color=col, s=40)
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    axes[0][-1].legend(list(handles.values()), list(handles), fontsize=8, loc="upper left",
                       bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return _save(plt, fig, path, fmt, dpi=110)
