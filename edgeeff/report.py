"""Human-readable tables (rich). JSON output never goes through here."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeeff.core import artifacts as A
from edgeeff.core.cost import stage_table
from edgeeff.core.rank import TuneRow
from edgeeff.core.units import format_size
from edgeeff.deploy.firmware import FirmwareCheck
from edgeeff.export.quantreport import HOW_TO_MEASURE

console = Console(highlight=False, soft_wrap=False, width=160)

LEVERS = {
    "mflops": "lower phi shrinks depth, width and resolution together",
    "ram": "resolution drives activation RAM; lite family and negative phi shrink it",
    "flash": "width drives weights; --num-classes and the efficientnet family's scaled head help",
    "latency": "follows the device profile's latency model (per-op, or MACs over throughput)",
}


def devices_table(devs) -> None:
    t = Table(title="Device profiles")
    for col in ("device", "name", "kind", "RAM", "flash", "int8 MAC/s", "latency model",
                "budget", "family", "formats"):
        t.add_column(col)
    for d in devs:
        m = d.latency_model
        if m is None:
            model = "[yellow]estimate[/] (MACs / throughput)"
        elif not m.estimate:
            model = f"measured per-op ({m.threads} threads)"
        elif m.threads:
            model = f"[yellow]estimate[/] (per-op, {m.threads} threads)"
        elif m.runtime == "tflite-micro":
            model = "[yellow]estimate[/] (per-op instruction counts x cycles/instruction)"
        else:
            model = "[yellow]estimate[/] (per-op form of MACs / throughput)"
        t.add_row(d.key, d.name, d.kind, format_size(d.ram_bytes), format_size(d.flash_bytes),
                  f"{d.int8_macs_per_s:.2g}", model,
                  f"{d.max_latency_ms:g} ms" if d.max_latency_ms else "-", d.family,
                  ", ".join(d.formats))
    console.print(t)
    console.print("latency estimates stay estimates until the real board is profiled: "
                  "'edgeeff profile --out board.toml' on the device, then 'fit --device "
                  "./board.toml'")


def fit_table(res, spec_file: str = A.SPEC_FILE) -> None:
    b = res.budgets
    limits = []
    if b.max_macs is not None:
        limits.append(f"{b.max_macs / 1e6:g} MFLOPs")
    limits.append(f"RAM {format_size(b.max_ram_bytes)}")
    limits.append(f"flash {format_size(b.max_flash_bytes)}")
    if b.max_latency_ms is not None:
        limits.append(f"latency {b.max_latency_ms:g} ms")
    ram_note = " (RAM = TFLite Micro arena)" if res.device.kind == "mcu" else ""
    if b.basis:
        ram_note += f" ({b.basis})"
    t = Table(title=f"{res.device.name} ({res.device.key}): " + ", ".join(limits) + ram_note)
    measured = any(c.latency_source == "measured" for c in res.neighbours)
    cols = ["model", "depth", "width", "res", "MFLOPs", "params", "flash", "peak RAM",
            "pred. ms"] + (["measured ms"] if measured else []) + ["weights", "top-1 pred.",
                                                                    "verdict"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("model", "verdict", "weights") else "right")
    for c in res.neighbours:
        s = c.spec
        if c is res.chosen:
            verdict = "[bold green]chosen[/]"
        elif c is res.runner_up:
            verdict = "runner-up"
        elif c.fits:
            verdict = "fits"
        else:
            verdict = "[red]over " + ", ".join(c.violations) + "[/]"
        lat = [f"{c.latency_predicted_ms:.1f}"]
        if measured:
            lat.append(f"{c.latency_ms:.1f}")
        w = "-" if c.weights is None else c.weights.cell
        t.add_row(c.label, f"{s.depth:.3f}", f"{s.width:.3f}", str(s.resolution),
                  f"{c.cost.mflops:.1f}", f"{c.cost.params / 1e6:.2f} M",
                  format_size(c.flash_bytes), format_size(c.ram_bytes), *lat, w,
                  f"{c.top1:.1f} %" if c.top1 is not None else "-", verdict,
                  style="bold" if c is res.chosen else None)
    console.print(t)
    ch = res.chosen
    if res.note:
        console.print(f"note: {res.note}")
    lever = ""
    if ch.spec.phi is None:
        lever = " — ranked by top-1 (predicted int8 ImageNet for pretrained models)"
    elif res.binding in LEVERS:
        lever = f" — {LEVERS[res.binding.split('+')[0]]}"
    console.print(f"chosen: {ch.spec.name} ({ch.spec.family}, {ch.spec.num_classes} classes), "
                  f"binding budget: {res.binding}{lever}")
    if ch.top1 is not None:
        what = ("predicted top-1: {:.1f} % int8 on ImageNet" if ch.weights is not None and ch.weights.kind == "imagenet"
                else "top-1: {:.1f} %")
        console.print(what.format(ch.top1) + f" (basis: {escape(ch.accuracy.basis)})")
    console.print(f"latency: {ch.latency_ms:.1f} ms "
                  + ("measured here (" + f"predicted {ch.latency_predicted_ms:.1f} ms)"
                     if ch.latency_source == "measured" else
                     f"predicted ({escape(res.device.latency_basis)})"))
    left = {k: v for k, v in res.unused().items() if v is not None}
    if left:
        console.print("unused budget: " + ", ".join(
            f"{v:g} MFLOPs" if k == "mflops" else f"{v:g} ms" for k, v in left.items()))
    if res.runner_up is not None:
        r = res.runner_up
        console.print(f"runner-up: {r.label}, predicted top-1 {r.top1:.1f} %, "
                      f"{r.cost.mflops:.1f} MFLOPs, {r.latency_ms:.1f} ms")
    if res.weightless:
        console.print(f"[yellow]weights:[/] {res.weights_hint(spec_file)}")


def info_table(spec, s: dict) -> None:
    console.print(f"[bold]{s['name']}[/]  family={s['family']}  width={s['width']:.3f}  "
                  f"depth={s['depth']:.3f}  resolution={s['resolution']}  "
                  f"classes={s['num_classes']}")
    t = Table()
    for col in ("stage", "ops", "output", "MFLOPs", "params", "peak RAM"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for row in stage_table(spec):
        t.add_row(row["stage"], str(row["ops"]), "x".join(map(str, row["output_shape"])),
                  f"{row['macs'] / 1e6:.1f}", f"{row['params']:,}",
                  format_size(row["peak_ram_bytes"]))
    t.add_row("[bold]total[/]", "", "", f"[bold]{s['mflops']:.1f}[/]", f"[bold]{s['params']:,}[/]",
              f"[bold]{format_size(s['peak_ram_bytes'])}[/]")
    console.print(t)
    console.print(f"int8 flash ~ {format_size(s['flash_bytes'])}; peak RAM at {s['peak_ram_op']}")
    if s.get("latency_basis"):  # info --device
        console.print(f"latency on {s['device']}: {s['latency_ms']:g} ms predicted "
                      f"({escape(s['latency_basis'])})")


def export_summary(card: dict, out) -> None:
    t = Table(title=f"{card['name']} -> {out}")
    for col in ("artifact", "bytes", "input", "output", "ops"):
        t.add_column(col)
    for name, a in card["artifacts"].items():
        if "bytes" not in a:
            continue
        t.add_row(name, f"{a['bytes']:,}", f"{a['input']['dtype']} {a['input']['shape']}",
                  f"{a['output']['dtype']} {a['output']['shape']}", str(len(a["ops"])))
    console.print(t)
    q = card.get("quantization")
    if q and q.get("images"):
        qt = Table(title="Quantization report (float32 vs int8, held-back images)")
        cols = ["images", "top-1 agreement", "mean |score diff|", "max |score diff|"]
        row = [str(q["images"]), f"{q['agreeing']}/{q['images']} ({q['top1_agreement']:.1%})",
               f"{q['mean_abs_score_error']:.5f}", f"{q['max_abs_score_error']:.4f}"]
        if q["labelled"]:
            cols += ["float32 top-1", "int8 top-1", "drop (points)"]
            row += [f"{q['float_top1']:.1%}", f"{q['int8_top1']:.1%}",
                    f"{q['top1_drop_points']:.1f}" if q["can_estimate_accuracy"] else "too few images"]
        for col in cols:
            qt.add_column(col, justify="right")
        qt.add_row(*row)
        console.print(qt)
        if not q["can_estimate_accuracy"]:
            console.print(f"  {q['images']} held-back images are too few to estimate accuracy: "
                          f"{HOW_TO_MEASURE}")
        for row in q.get("worst_layers", []):
            console.print(f"  worst layer {row['tensor']}: rmse/scale {row['rmse_over_scale']}")
    console.print(f"weights: {card['weights']}; model card: {out}/{A.MODEL_CARD}")


def eval_table(res: dict) -> None:
    """The accuracy table, per-class precision/recall/F1 (over 30 classes: the 15 lowest F1),
    the confusion matrix (up to 12 classes) and the most confused pairs with an example file."""
    per_class_rows, matrix_classes = 30, 12
    t = Table(title=f"{res['model']} ({res['runtime']})")
    for col in ("images", "top-1", "top-5", "images/s", "inference images/s"):
        t.add_column(col, justify="right")
    t.add_row(str(res["images"]), f"{res['top1']:.1%}", f"{res['top5']:.1%}",
              f"{res['images_per_s']:.1f}", f"{res['inference_images_per_s']:.1f}")
    console.print(t)
    rows = res.get("per_class", [])
    if rows:
        shown = rows
        title = f"Per class (macro F1 {res['macro_f1']:.3f})"
        if len(rows) > per_class_rows:
            shown = sorted(rows, key=lambda r: (r["f1"], -r["support"]))[:per_class_rows // 2]
            title += f": the {len(shown)} lowest F1 of {len(rows)} classes (--json for all)"
        pc = Table(title=title)
        pc.add_column("class")
        for col in ("precision", "recall", "F1", "support"):
            pc.add_column(col, justify="right")
        for r in shown:
            pc.add_row(escape(r["class"]), f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                       f"{r['f1']:.3f}", str(r["support"]))
        console.print(pc)
    cm = res.get("confusion")
    if cm and 0 < len(cm["labels"]) <= matrix_classes:
        seen = " (classes seen)" if res.get("confusion_classes") == "seen" else ""
        mt = Table(title=f"Confusion matrix{seen}: rows true, columns predicted (by number)")
        mt.add_column("true")
        for j in range(len(cm["labels"])):
            mt.add_column(str(j), justify="right")
        for j, (lab, row) in enumerate(zip(cm["labels"], cm["matrix"])):
            mt.add_row(f"{j} {escape(lab)}",
                       *[(f"[bold]{v}[/]" if i == j else str(v)) if v else "[dim].[/]"
                         for i, v in enumerate(row)])
        console.print(mt)
    if res["most_confused"]:
        console.print("most frequent errors (true -> predicted):")
        for e in res["most_confused"][:5]:
            ex = f", e.g. {escape(e['examples'][0])}" if e.get("examples") else ""
            console.print(f"  {escape(e['true'])} -> {escape(e['predicted'])} ({e['count']}){ex}")


def bench_table(res: dict) -> None:
    t = Table(title="Interpreter latency")
    for col in ("model", "runtime", "threads", "p50 ms", "p90 ms", "p99 ms", "per s", "peak RSS"):
        t.add_column(col, justify="left" if col in ("model", "runtime") else "right")
    for r in res["models"]:
        t.add_row(r["model"], r["runtime"], str(r["threads"]), f"{r['p50_ms']:.2f}",
                  f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['throughput_per_s']:.1f}",
                  format_size(r["peak_rss_bytes"]))
    console.print(t)
    if "int8_speedup_p50" in res:
        console.print(f"int8 speed-up over float32 (p50): {res['int8_speedup_p50']:.2f}x")


def tune_table(doc: dict) -> None:
    """``edgeeff tune``'s table, from ``tune.json``'s content (rows read as
    :class:`~edgeeff.core.rank.TuneRow`): every candidate with its latency, the flash and RAM
    ``fit``'s budgets checked, its ranking top-1 and its paired gain over fit's pick."""
    rows = [TuneRow.from_dict(c) for c in doc["candidates"]]
    pick, fitp = TuneRow.from_dict(doc["pick"]), TuneRow.from_dict(doc["fit_pick"])
    ranked_by = doc.get("ranked_by", "head on cached features")
    pretrained = any(r.imagenet_top1_predicted is not None for r in rows)
    t = Table(title=f"edgeeff tune: candidates that fit {doc['device']}")
    cols = ["candidate", "latency ms", "flash", "RAM"]
    cols += ["ImageNet top-1 (pred.)"] if pretrained else []
    cols += [ranked_by, "vs fit's pick (pt ± s.e.)", ""]
    for col in cols:
        t.add_column(col, justify="left" if col in ("candidate", "") else "right")
    for c in rows:
        r = "not ranked (budget)" if c.rank_top1 is None else f"{c.rank_top1:.1%}"
        vs = "" if c.vs_fit_points is None else \
            f"{c.vs_fit_points:+.1f} ± {c.vs_fit_se_points:.1f}"
        mark = "pick" if c.name == pick.name else ""
        if c.name == fitp.name:
            mark = (mark + ", " if mark else "") + "fit's pick"
        cells = [c.name, f"{c.latency_ms:.1f}",
                 "-" if c.flash_bytes is None else format_size(c.flash_bytes),
                 "-" if c.ram_bytes is None else format_size(c.ram_bytes)]
        if pretrained:
            cells.append("-" if c.imagenet_top1_predicted is None
                         else f"{c.imagenet_top1_predicted:.1f}")
        t.add_row(*cells, r, vs, mark)
    console.print(t)
    b = doc.get("budgets", {})
    if b.get("max_flash_bytes") and b.get("max_ram_bytes"):
        console.print(f"budgets (the model's): flash {format_size(b['max_flash_bytes'])}, "
                      f"RAM {format_size(b['max_ram_bytes'])}"
                      + (f", latency {b['max_latency_ms']:g} ms" if b.get("max_latency_ms")
                         else ""))
    if doc.get("pick_rule"):
        console.print(f"pick rule: {doc['pick_rule']}")
    if pick.name == fitp.name:
        against = "fit's pick kept: no candidate ranked clearly better"
    else:
        against = (f"{doc['vs_fit_pick_points']:+.1f} points over fit's pick "
                   f"({fitp.name}) in the ranking")
    console.print(f"pick {pick.name}: trained {pick.val_top1:.1%} float"
                  + (f", {pick.int8_top1:.1%} int8" if pick.int8_top1 is not None else "")
                  + f" on the validation images; {against}")
    fw = doc.get("firmware")
    if fw is not None:
        console.print(FirmwareCheck.from_dict(fw).line())


def data_check_table(rep) -> None:
    """``edgeeff data check``: one table (class counts, then the checks, train and validation
    side by side, with an example of each finding), then the problems and warnings."""
    folders = {f.split: f for f in rep.folders}
    splits = [s for s in ("train", "val") if s in folders]
    t = Table(title="edgeeff data check: " + ", ".join(
        f"{'validation' if s == 'val' else 'training'} {escape(folders[s].root)}" for s in splits))
    t.add_column("check")
    for s in splits:
        t.add_column("validation" if s == "val" else "train", justify="right")
    t.add_column("example")
    classes = sorted({c for f in rep.folders for c, _ in f.class_counts})
    for c in classes:
        counts = [dict(folders[s].class_counts).get(c) for s in splits]
        t.add_row(f"class {escape(c)}", *[("[red]0[/]" if n == 0 else "-" if n is None else str(n))
                                         for n in counts], "")
    t.add_section()

    def row(name, values, example=""):
        t.add_row(name, *values, escape(example))

    def first(items, fmt=str):
        return next((fmt(x) for s in splits for x in items(folders[s])), "")

    row("images (readable)", [f"{folders[s].images} ({folders[s].readable})" for s in splits])
    imb = [folders[s].imbalance for s in splits]
    ext = [folders[s].extremes() for s in splits]
    row("imbalance (largest / smallest class)",
        [("-" if i is None else (f"[yellow]{i:.1f}[/]" if i >= rep.imbalance_warn else f"{i:.1f}"))
         for i in imb],
        next((f"{a[0]} {a[1]} / {b[0]} {b[1]}" for a, b in (e for e in ext if e)), ""))

    def count(n):
        return f"[yellow]{n}[/]" if n else "0"

    row("unreadable", [count(len(folders[s].unreadable)) for s in splits],
        first(lambda f: f.unreadable, lambda u: f"{u.path}: {u.reason}"))
    row("truncated", [count(len(folders[s].truncated)) for s in splits],
        first(lambda f: f.truncated))
    row(f"tiny (shorter side < {rep.tiny_side} px)",
        [count(len(folders[s].tiny)) for s in splits],
        first(lambda f: f.tiny, lambda x: f"{x.path} {x.width}x{x.height}"))
    row("grayscale", [count(len(folders[s].grayscale)) for s in splits],
        first(lambda f: f.grayscale))
    for groups, label in (
            (rep.exact, "exact duplicates (groups)"),
            (rep.near, f"near duplicates, pHash <= {rep.near_distance} of 64 bits")):
        inside = [[g for g in groups if not g.cross_split and g.files[0].split == s]
                  for s in splits]
        ex = next((g for gs in inside for g in gs), None)
        row(label, [count(len(gs)) for gs in inside],
            "" if ex is None else " = ".join(f.path for f in ex.files[:2]))
    if "val" in folders:
        for kind, groups in (("exact", rep.exact), ("near", rep.near)):
            cross = [g for g in groups if g.cross_split]
            n = sum(1 for g in cross for f in g.files if f.split == "val")
            row(f"in train and validation ({kind})", ["", f"[red]{n}[/]" if n else "0"],
                "" if not cross else " = ".join(map(str, cross[0].files[:2])))
    console.print(t)
    for p in rep.problems:
        console.print(f"[red]problem:[/] {escape(p)}")
    for w in rep.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    if rep.problems:
        console.print("cannot train on this folder: fix the problems above")
    else:
        console.print("ready to train" + (" (see the warnings)" if rep.warnings else ""))
