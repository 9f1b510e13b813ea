"""The ``edgeeff`` command line: parse, dispatch, print. The work lives in the modules it calls.

Heavy libraries (TensorFlow, OpenCV, onnx2tf, the TFLite runtimes) are imported inside the
commands that need them, so ``fit``, ``info`` and ``devices`` start in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from edgeeff import plot, report
from edgeeff.core import artifacts as A
from edgeeff.core import budget, fsutil, rank, specfile, targets
from edgeeff.core import fit as fitmod
from edgeeff.core import gpu as gpumod
from edgeeff.core.errors import EdgeeffError, FieldError
from edgeeff.core.fsutil import check_out
from edgeeff.core.graph import graph
from edgeeff.core.units import FiniteFloat, parse_size
from edgeeff.core.zoo import WEIGHTS_HELP
from edgeeff.data import check as datacheck
from edgeeff.data import images
from edgeeff.data.folder import ImageFolder
from edgeeff.deploy import bundle as bundlemod
from edgeeff.deploy import firmware as fw
from edgeeff.device import bench, doctor, evaluate
from edgeeff.device import collect as collectmod
from edgeeff.device import demo as demomod
from edgeeff.device import profile as prof
from edgeeff.device import runtime as devruntime
from edgeeff.export import ExportRequest, click_options
from edgeeff.export import run as run_export
from edgeeff.model import keras_eval, quiet
from edgeeff.model import train as trainmod
from edgeeff.model import tune as tunemod


class _Size(click.ParamType):
    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            n = parse_size(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if n <= 0:
            self.fail(f"must be positive, got {value!r}", param, ctx)
        return n


SIZE = _Size()


def _max_pixels_option(f):
    """``--max-pixels``, for the commands that read image files: the budget per image that
    :func:`edgeeff.data.images.load_bgr` checks from the file header before decoding."""
    return click.option(
        "--max-pixels", type=click.IntRange(min=1), default=images.MAX_PIXELS,
        show_default=True, expose_value=False,
        callback=lambda ctx, param, value: images.set_max_pixels(value),
        help="Largest image (width x height, read from its header) decoded; a larger one is "
             "skipped as unreadable, never decoded.")(f)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` and context manager cleans up
    (temporary folders, the demo's capture thread) before the process exits with 143."""


def _on_sigterm(signum, frame):
    fsutil.note_interrupt(signum)
    raise _Terminated()


def _on_sigint(signum, frame):
    fsutil.note_interrupt(signum)
    raise KeyboardInterrupt


def _interrupted(e: BaseException | None) -> None:
    click.echo("edgeeff: interrupted", err=True)
    term = isinstance(e, _Terminated) or fsutil.interrupted() == signal.SIGTERM
    sys.exit(143 if term else 130)


# The one table from the core's parameter names (a FieldError's ``fields``) to the flags a user
# typed: the core never names a flag, the CLI shows its own when it prints such an error.
FLAGS = {
    "spec_file": "--spec", "preset": "--preset", "phi": "--phi", "family": "--family",
    "num_classes": "--num-classes", "resolution": "--resolution",
    "max_mflops": "--max-mflops", "max_ram": "--max-ram", "max_flash": "--max-flash",
    "max_latency_ms": "--max-latency-ms", "pretrained": "--pretrained", "trained": "--trained",
    "force": "--force",
}

# A bare 'edgeeff' (a group with no_args_is_help): click >= 8.2 raises NoArgsIsHelpError, a
# UsageError, so it is caught before the UsageError clause; click 8.1 prints the help itself
# and exits 0 through click.exceptions.Exit. An empty tuple in an except clause matches nothing.
_NO_ARGS_HELP: tuple[type[BaseException], ...] = tuple(
    c for c in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if c is not None)


class _Group(click.Group):
    """Every user error ends as one line on stderr and exit code 2 — never a traceback.

    Ctrl-C and SIGTERM end as "edgeeff: interrupted" and exit code 130 / 143, after the
    commands' cleanup has run (nothing half-written is left behind).
    """

    def main(self, args=None, prog_name=None, **kw):
        prev = {}
        if threading.current_thread() is threading.main_thread():
            prev = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm),
                    signal.SIGINT: signal.signal(signal.SIGINT, _on_sigint)}
        try:
            self._main(args, prog_name, **kw)
        finally:
            for sig, handler in prev.items():
                signal.signal(sig, handler)

    def _main(self, args=None, prog_name=None, **kw):
        try:
            rv = self._run(args, prog_name, **kw)
        except KeyboardInterrupt as e:
            _interrupted(e)
        if fsutil.interrupted() is not None:  # a signal whose exception native code swallowed
            _interrupted(None)
        sys.exit(rv if isinstance(rv, int) else 0)

    def _run(self, args=None, prog_name=None, **kw):
        """The command's return value; a user error is printed here and exits 2, after
        :func:`fsutil.raise_if_interrupted` (an interrupt that surfaced as another exception
        is an interrupt, not an error)."""
        try:
            return super().main(args=args, prog_name=prog_name or "edgeeff",
                                standalone_mode=False, **kw)
        except _NO_ARGS_HELP as e:  # click >= 8.2 raises it for a bare 'edgeeff'
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except click.UsageError as e:
            fsutil.raise_if_interrupted()
            hint = f" (see 'edgeeff {e.ctx.info_name} --help')" if e.ctx and e.ctx.parent else ""
            click.echo(f"edgeeff: error: {e.format_message()}{hint}", err=True)
            sys.exit(2)
        except click.ClickException as e:
            fsutil.raise_if_interrupted()
            click.echo(f"edgeeff: error: {e.format_message()}", err=True)
            sys.exit(2)
        except FieldError as e:  # the core names parameters; the user typed flags
            fsutil.raise_if_interrupted()
            click.echo(f"edgeeff: error: {e.render(FLAGS)}", err=True)
            sys.exit(2)
        except EdgeeffError as e:
            fsutil.raise_if_interrupted()
            click.echo(f"edgeeff: error: {e}", err=True)
            sys.exit(2)
        except click.exceptions.Abort as e:
            if isinstance(e.__cause__, KeyboardInterrupt):  # click wraps Ctrl-C / SIGTERM
                raise e.__cause__ from None
            fsutil.raise_if_interrupted()
            click.echo("edgeeff: aborted", err=True)
            sys.exit(130)
        except Exception:
            fsutil.raise_if_interrupted()  # never a traceback for an interrupt
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeeff")
def main() -> None:
    """EfficientNet for phones, single-board computers and microcontrollers."""


def _emit_json(obj) -> None:
    click.echo(fsutil.json_text(obj, indent=2))


@contextlib.contextmanager
def _stdout_to_stderr():
    """For the block, everything written to stdout (TensorFlow's converter and C++ logging
    included) goes to stderr, so that a command's --json stdout stays one JSON document."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# --------------------------------------------------------------------------- devices / fit / info


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def devices(as_json: bool) -> None:
    """List the bundled device profiles (targets/*.toml)."""
    devs = targets.load_all()
    if as_json:
        _emit_json([{**d.to_dict(), "latency_basis": d.latency_basis,
                     "latency_estimate": d.latency_is_estimate} for d in devs])
    else:
        report.devices_table(devs)


@main.command()
@click.option("--device", "device_name", required=True,
              help="A bundled profile name (see 'edgeeff devices') or a path to a .toml profile.")
@click.option("--max-mflops", type=FiniteFloat(), help="Multiply-add budget in millions (paper 'FLOPs').")
@click.option("--max-ram", type=SIZE, help="Activation RAM budget, e.g. 320KB.")
@click.option("--max-flash", type=SIZE, help="Weight storage budget, e.g. 1MB.")
@click.option("--max-latency-ms", type=FiniteFloat(), help="Estimated int8 latency budget.")
@click.option("--family", type=click.Choice(["efficientnet", "lite"]),
              help="Network family (default: the device's preferred one).")
@click.option("--num-classes", type=click.IntRange(min=1),
              help="Classes of your task [default: --data's class folders, else ImageNet's "
                   "1000 where a pretrained model fits the device, else 10, said in one line].")
@click.option("--data", "data_dir", metavar="DIR",
              help="Your training images, one sub-folder per class: fit sizes the classifier "
                   "for their class count (the folders are listed, no image is read).")
@click.option("--head", type=click.Choice(["fixed", "scaled"]),
              help="Lite's 1280-wide top conv kept fixed or scaled with width [default: the "
                   "family's rule; on a microcontroller scaled where that fits a larger phi].")
@click.option("--pretrained", is_flag=True,
              help="Only architectures with ImageNet weights (lite0/1/2), scaled by resolution.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--out", default=A.SPEC_FILE, show_default=True, help="Spec file to write.")
@click.option("--measure", is_flag=True,
              help="Hardware in the loop: time every candidate the search considers on this "
                   "machine (synthesized int8 graph, local TFLite runtime) and budget the "
                   "measured latency; needs only edgeeff[runtime].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Interpreter threads for --measure (default: the profile's, else 2).")
@click.option("--time-budget", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds --measure may spend timing candidates; then the pick is the "
                   "largest measured to fit.")
@click.option("--trained", "trained", multiple=True, metavar="SPEC",
              help="A spec file written by 'edgeeff train' (repeatable): rank it by its "
                   "measured validation top-1, with the pretrained models if --pretrained.")
@click.option("--plot", "plot_file", help="Also draw the candidates (predicted top-1 against "
              "latency or MACs, budget lines, pick, runner-up) to a .png or .svg file.")
def fit(device_name, max_mflops, max_ram, max_flash, max_latency_ms, family, num_classes,
        data_dir, head, pretrained, as_json, out, measure, threads, time_budget, trained,
        plot_file) -> None:
    """Pick the largest compound-scaling phi whose model fits the device's budgets."""
    if data_dir is not None:
        n = len(ImageFolder(data_dir, min_classes=2).classes())
        if num_classes is not None and num_classes != n:
            raise EdgeeffError(f"--num-classes {num_classes} disagrees with --data {data_dir}'s "
                               f"{n} class folders: give one")
        num_classes = n
    if plot_file:
        plot.check_path(plot_file)
    device = targets.load(device_name)
    budgets = budget.Budgets.for_device(device, max_mflops, max_ram, max_flash, max_latency_ms)
    timer = None
    if measure:
        n = threads or (device.latency_model.threads if device.latency_model else 2)
        spec_timer = prof.SpecTimer(threads=n)
        if spec_timer.note:
            click.echo(f"edgeeff: {spec_timer.note}", err=True)

        def progress(k, spec, t):
            click.echo(f"edgeeff: timed {k}: {spec.name} {t.p50_ms:.3g} ms "
                       f"(p10..p90 {t.p10_ms:.3g}..{t.p90_ms:.3g}, {t.invokes} frames, "
                       f"{t.seconds:.1f} s)", err=True)

        timer = budget.BudgetedMeasure(spec_timer, time_budget, progress)
    phone_note = device.kind == "phone" and not (pretrained or trained or family)
    if phone_note:
        pretrained = True  # an app needs a model that works: rank the weight-bearing ones
    if pretrained or trained:
        res = rank.pick_pretrained(device, budgets, num_classes=num_classes or 1000,
                                 family=family, trained=trained, pretrained=pretrained,
                                 measure=timer)
    else:
        res = fitmod.fit(device, budgets, family=family, num_classes=num_classes, measure=timer,
                         head=head)
        if res.assumed:
            click.echo(f"edgeeff: {res.assumed}", err=True)
    specfile.write(out, res.spec_file(out))
    if phone_note:  # said once the pick stands (an error is the only line otherwise)
        click.echo("edgeeff: phone: picked the most accurate model with ImageNet weights; for "
                   "the largest model that fits, give --family lite|efficientnet, then 'edgeeff "
                   f"train --data DIR --spec {out}'", err=True)
    measured = None
    if timer is not None:
        measured = timer.summary(res.chosen.spec)
        click.echo(f"edgeeff: {measured.line()}", err=True)
        if measured.warning:
            click.echo(f"edgeeff: warning: {measured.warning}", err=True)
    if plot_file:
        plot.plot_fit(res, plot_file)
    gpu_line = None
    if "float16" in device.formats:  # a GPU-delegate profile: what falls back to the CPU
        falls = gpumod.graph_fallbacks(graph(res.chosen.spec))
        gpu_line = (f"GPU delegate: {len(falls)} op(s) of the pick fall back to the CPU"
                    + (f" ({', '.join(sorted({f.kind for f in falls}))})" if falls else
                       f" ({gpumod.SOURCE.split(':')[0]})"))
    if as_json:
        extra = {"gpu_fallback_ops": [vars(f) for f in falls]} if gpu_line else {}
        _emit_json({**res.summary(out), "spec_file": out,
                    "candidates": [c.row() for c in res.neighbours], **extra,
                    **({"measure": measured.to_dict()} if measured else {})})
    else:
        report.fit_table(res, out)
        if gpu_line:
            click.echo(gpu_line)
        click.echo(f"wrote {out}" + (f" and {plot_file}" if plot_file else ""))


@main.command()
@click.option("--preset", help="b0..b7 or lite0..lite4.")
@click.option("--phi", type=float, help="Continuous compound-scaling coefficient.")
@click.option("--family", type=click.Choice(["efficientnet", "lite"]))
@click.option("--spec", "spec_file", help="A spec file written by 'edgeeff fit'.")
@click.option("--num-classes", type=click.IntRange(min=1))
@click.option("--resolution", type=click.IntRange(min=32), help="Override the input size.")
@click.option("--device", "device_name", help="A device profile (name or .toml path): adds "
              "its predicted int8 latency.")
@click.option("--json", "as_json", is_flag=True)
def info(preset, phi, family, spec_file, num_classes, resolution, device_name, as_json) -> None:
    """Cost of one model: MACs, parameters, flash and peak RAM, per stage."""
    spec, doc = specfile.choose(spec_file, preset, phi, family, num_classes, resolution,
                                default=None)
    fitted = doc.fit if doc is not None else None
    s = specfile.summary(spec, device=fitted and fitted.device,
                         binding=fitted and fitted.binding)
    if device_name:
        dev = targets.load(device_name)
        s.update(device=dev.key, latency_ms=round(dev.latency_ms(spec), 2),
                 latency_source="model", latency_basis=dev.latency_basis)
    if as_json:
        _emit_json(s)
    else:
        report.info_table(spec, s)


# --------------------------------------------------------------------------- export


@main.command()
@click_options(ExportRequest)
@_max_pixels_option
def export(**options) -> None:
    """Build (or import) the model, quantize it and write deployable artifacts."""
    req = ExportRequest(**options).prepared()  # bad input fails before TF loads
    _quiet_tensorflow()
    card = run_export(req, log=lambda m: click.echo(m, err=True))
    report.export_summary(card.to_dict(), str(req.out))


class _PhaseBars(trainmod.Phases):
    """rich progress bars for ``train``: one per phase and one overall, each with an ETA. The
    overall bar weighs each phase's units by a rough cost (seconds a unit took here), so its
    ETA is right within a phase's error, not a unit count."""

    COST = {"load": 0.004, "features": 0.010, "views": 0.015, "train": 1.3}

    def __init__(self, prog: Progress):
        self.prog, self.tasks, self.overall = prog, {}, None

    def plan(self, phases):
        total = sum(self.COST.get(k, 1.0) * n for k, (_, n) in phases.items())
        self.overall = self.prog.add_task("overall", total=total)
        for k, (label, n) in phases.items():
            self.tasks[k] = self.prog.add_task(label, total=n, start=k == "load")

    def report(self, phase, n=1):
        task = self.tasks.get(phase)
        if task is None:
            return
        self.prog.start_task(task)
        self.prog.advance(task, n)
        self.prog.advance(self.overall, n * self.COST.get(phase, 1.0))


@main.command("train")
@click.option("--data", required=True, help="Image folder with one sub-folder per class.")
@click.option("--val", "val_dir", metavar="DIR",
              help="A validation folder with the same class sub-folders (a dataset's own "
                   "validation split); without it --val-split of --data is held out.")
@click.option("--spec", "spec_file", help="Spec file from 'edgeeff fit'.")
@click.option("--preset", help="b0..b7 or lite0..lite4 (default lite0).")
@click.option("--phi", type=float)
@click.option("--family", type=click.Choice(["efficientnet", "lite"]))
@click.option("--resolution", type=click.IntRange(min=32), help="Override the input size.")
@click.option("--weights", default="auto", show_default=True, help=WEIGHTS_HELP)
@click.option("--epochs", type=click.IntRange(min=1),
              help=f"Passes over every view [default: {trainmod.Recipe.epochs} for the cached "
                   f"recipe, 10 with --distribute; {trainmod.defaults('distill').epochs} for the "
                   "distilled one].")
@click.option("--views", type=click.IntRange(min=1),
              help=f"Fixed crops of each training image (the centre and random resized ones) "
                   f"whose frozen features or teacher outputs are computed once [default: "
                   f"{trainmod.Recipe.views} cached, {trainmod.defaults('distill').views} "
                   "distilled].")
@click.option("--batch-size", type=click.IntRange(min=1),
              help=f"[default: {trainmod.Recipe.batch}; 32 with --distribute and the cached "
                   "recipe]")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Views, shuffling and the --val-split hold-out.")
@click.option("--val-split", type=FiniteFloat(0.05, 0.5), default=0.2, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=3, show_default=True,
              help="Early stopping patience with --distribute (epochs without better val "
                   "accuracy); the default recipe keeps the best epoch of its schedule.")
@click.option("--resume", is_flag=True,
              help="Continue the interrupted run whose state is in OUT.resume/.")
@click.option("--distribute", is_flag=True,
              help="tf.distribute: MirroredStrategy, or MultiWorkerMirroredStrategy with TF_CONFIG.")
@click.option("--recipe", type=click.Choice(["auto", *trainmod.recipe.KINDS]), default="auto",
              show_default=True,
              help="auto: 'cached' for a pretrained Lite0/1/2 at its own resolution, else "
                   "'distill' (every layer trained, distilled from a teacher).")
@click.option("--teacher", metavar="DIR",
              help="The distilled recipe's teacher: a folder 'edgeeff train' wrote [default: "
                   "Lite0 at 224 px trained on the same photos once, kept in edgeeff's cache].")
@click.option("--out", default="edgeeff-train", show_default=True)
@click.option("--force", is_flag=True)
@_max_pixels_option
def train_cmd(data, val_dir, spec_file, preset, phi, family, resolution, weights, epochs, views,
              batch_size, seed, val_split, patience, resume, distribute, recipe, teacher, out,
              force) -> None:
    """Transfer learning on a folder of images; writes a model and a spec 'export' takes."""
    check_out(out, force)
    if spec_file is None and phi is None:
        preset = preset or "lite0"
    spec = specfile.resolve(spec_file, preset, phi, family, None, resolution)
    _leakage_line(data, val_dir)
    _quiet_tensorflow()
    console = Console(stderr=True)
    # bars only on a terminal: elsewhere rich's closing newline would come before an error
    with Progress(*Progress.get_default_columns(), transient=True, console=console,
                  disable=not console.is_terminal) as prog:
        res = trainmod.train(data, spec, weights, out, epochs=epochs, batch=batch_size,
                             val_fraction=val_split, patience=patience, distribute=distribute,
                             force=force, log=lambda m: prog.console.print(m, highlight=False, markup=False,
                                                             soft_wrap=True),
                             val_dir=val_dir, resume=resume, views=views, seed=seed,
                             phases=_PhaseBars(prog), recipe=recipe, teacher=teacher)
    if res["chief"]:
        try:
            hist = json.loads((Path(out) / A.TRAIN_HISTORY).read_text())
            plot.plot_history(hist, Path(out) / A.TRAIN_HISTORY_PLOT)
        except EdgeeffError as e:  # no matplotlib: history.json has the same figures
            click.echo(f"no {A.TRAIN_HISTORY_PLOT}: {e}", err=True)
    wrote = (f"wrote {out}/ (export with: edgeeff export --spec {out}/{A.SPEC_FILE} --int8)"
             if res["chief"] else "non-chief worker: the chief writes the outputs")
    click.echo(f"validation accuracy {res['val_accuracy']:.1%} on {res['val_images']} images; "
               + wrote)


@main.command("tune")
@click.option("--device", "device_name", required=True,
              help="A bundled profile name or a .toml profile: its budgets bound the candidates.")
@click.option("--data", required=True, help="Image folder with one sub-folder per class.")
@click.option("--val", "val_dir", metavar="DIR", help="A validation folder (same classes).")
@click.option("--val-split", type=FiniteFloat(0.05, 0.5), default=0.2, show_default=True)
@click.option("--max-mflops", type=FiniteFloat(), help="As in 'fit'.")
@click.option("--max-ram", type=SIZE, help="As in 'fit'.")
@click.option("--max-flash", type=SIZE, help="As in 'fit'.")
@click.option("--max-latency-ms", type=FiniteFloat(), help="As in 'fit' (default: the device's).")
@click.option("--budget-minutes", type=FiniteFloat(min=0.5), default=15.0,
              show_default=True, help="Time for ranking candidates; the pick's full training "
                                      "follows.")
@click.option("--per-backbone", type=click.IntRange(min=1), default=2, show_default=True,
              help="Resolutions tried per pretrained backbone (fit's pick is always tried).")
@click.option("--teacher", metavar="DIR",
              help="Where no pretrained candidate fits (a microcontroller): the distilled "
                   "ranking's and training's teacher, as in 'train' [default: the Pi-class "
                   "model trained on the same photos, once per dataset].")
@click.option("--tflm-dir", help="TensorFlow Lite Micro tree for the firmware step, as in "
                                 "'firmware' [default: $TFLM_DIR].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default="edgeeff-tune", show_default=True,
              help=f"Folder for {A.TUNE_REPORT}, {A.TUNE_PLOT}, train/ and export/.")
@click.option("--plot", "plot_file",
              help=f"The accuracy-latency plot [default: OUT/{A.TUNE_PLOT}].")
@click.option("--json", "as_json", is_flag=True)
@click.option("--force", is_flag=True)
@_max_pixels_option
def tune_cmd(device_name, data, val_dir, val_split, max_mflops, max_ram, max_flash,
             max_latency_ms, budget_minutes, per_backbone, teacher, tflm_dir, seed, out,
             plot_file, as_json, force) -> None:
    """Rank the candidates that fit a device on your data, train and export the best:
    pretrained ones, or, where none fits (a microcontroller), networks across phi, resolution
    and head width, trained briefly with distillation."""
    out = check_out(out, force)
    plot_file = Path(plot_file) if plot_file else out / A.TUNE_PLOT
    plot.check_path(plot_file)
    device = targets.load(device_name)
    budgets = budget.Budgets.for_device(device, max_mflops, max_ram, max_flash, max_latency_ms)
    n_classes = len(ImageFolder(data, min_classes=2).classes())
    try:
        cands = rank.tune_shortlist(device, budgets, n_classes, per_backbone)
    except rank.NoPretrainedFits:
        cands = fitmod.weightless_shortlist(device, budgets, n_classes)
    _leakage_line(data, val_dir)
    _quiet_tensorflow()
    log = lambda m: click.echo(m, err=True)  # noqa: E731

    def export(spec_file, out_dir, formats):
        return run_export(ExportRequest(spec_file=str(spec_file), int8=True, formats=formats,
                                        out=out_dir, force=True), log=log).to_dict()

    def firmware(export_dir):
        return fw.check(export_dir, device.firmware_target, device_name, tflm_dir)

    with _stdout_to_stderr():
        doc = tunemod.tune(device, budgets, cands, data, val_dir, val_split, seed,
                           budget_minutes, out, export, log, teacher,
                           firmware if device.firmware_target else None).doc
        try:
            plot.plot_tune(doc, plot_file)
        except EdgeeffError as e:
            log(f"no plot: {e}")
    if as_json:
        _emit_json(doc)
    else:
        report.tune_table(doc)
        click.echo(f"wrote {out}/ ({A.TUNE_REPORT}, {plot_file.name}, train/, export/)")


@main.command("eval")
@click.argument("model")
@click.option("--data", required=True, help="Labelled images: class sub-folders or <wnid>_*.JPEG.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--plot", "plot_file", metavar="FILE",
              help="Also draw the confusion matrix (row-normalised heatmap) to a .png or .svg file.")
@_max_pixels_option
def eval_cmd(model, data, threads, as_json, plot_file) -> None:
    """Top-1/top-5 accuracy of a .tflite file, an export folder or a .keras model, with
    per-class precision/recall/F1, the confusion matrix and the most confused pairs."""

    if plot_file:
        plot.check_path(plot_file)  # a wrong suffix fails before the evaluation
    if model.endswith(".keras"):
        _quiet_tensorflow()

        runner = keras_eval.KerasRunner(model)
    else:
        runner = evaluate.runner_for(model, threads)
    with Progress(transient=True, disable=as_json) as prog:
        task = prog.add_task("evaluating", total=None)
        res = evaluate.evaluate(runner, data, progress=lambda n: prog.advance(task, n))
    if res["unreadable"]:
        click.echo(f"edgeeff: {images.unreadable_note(res['unreadable'], data)}", err=True)
    if plot_file:
        cm = res["confusion"]
        plot.plot_confusion(cm["labels"], cm["matrix"], plot_file,
                            title=f"{res['model']}: top-1 {res['top1']:.1%} on {res['images']} images")
    if as_json:
        _emit_json(res)
    else:
        report.eval_table(res)
        if plot_file:
            click.echo(f"wrote {plot_file}")


# --------------------------------------------------------------------------- data


@main.group("data")
def data_group() -> None:
    """Check a folder of photos before training on it."""


@data_group.command("check", help=(
    "Unreadable and truncated files, exact and near duplicates (64-bit pHash within "
    f"{datacheck.NEAR_DISTANCE} bits), duplicates across DIR and --val (leakage), class counts "
    f"and imbalance, tiny (shorter side < {datacheck.TINY_SIDE} px) and grayscale images. Exit "
    "code 0 (warnings included), 2 when DIR cannot be trained on."))
@click.argument("folder", metavar="DIR")
@click.option("--val", "val_dir", metavar="DIR",
              help="The validation folder: also checked, and every photo it shares with DIR "
                   "(exact or near duplicate) reported as leakage.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_max_pixels_option
def data_check_cmd(folder, val_dir, as_json) -> int:
    opened = datacheck.open_folders(folder, val_dir)  # a missing folder: one line, exit 2
    bar = Console(stderr=True)
    with Progress(transient=True, disable=as_json or not bar.is_terminal, console=bar) as prog:
        task = prog.add_task("checking images", total=None)
        rep = datacheck.check(folder, val_dir, progress=lambda n: prog.advance(task, n),
                              total=lambda n: prog.update(task, total=n), opened=opened)
    if as_json:
        click.echo(rep.to_json())
    else:
        report.data_check_table(rep)
    return rep.exit_code


def _leakage_line(data, val_dir) -> None:
    """``train``/``tune``: the leakage part of ``data check``, in one line on stderr."""
    click.echo(datacheck.leakage(data, val_dir).line(), err=True)


# --------------------------------------------------------------------------- device side


class _Address(click.ParamType):
    name = "[HOST:]PORT"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return demomod.parse_address(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


def _serving_options(serve_help: str, default: str | None = None):
    """The options of a command that serves a page (``demo --serve``, ``collect``), declared
    once: ``--serve`` (``serve_help`` says what serving means for the command; ``default``:
    its address where serving is not optional), ``--token``/``--token-file`` and
    ``--allow-host``, which :func:`_served_access` checks."""
    options = (
        click.option("--serve", "serve", type=_Address(), metavar="[HOST:]PORT",
                     default=default, show_default=default is not None,
                     help=f"{serve_help} Binds 127.0.0.1 unless HOST is given (0.0.0.0: the "
                          "whole network)."),
        click.option("--token", help="Every path served needs ?token=TOKEN (or the cookie the "
                     "page sets), else 401. --token-file or $EDGEEFF_TOKEN keep it out of ps."),
        click.option("--token-file", type=click.Path(dir_okay=False), metavar="FILE",
                     help="Read the token from FILE (surrounding whitespace ignored)."),
        click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
                     help="Also answer requests for this host name (repeatable). Else only "
                          "loopback, the served address and, when shared, this machine's "
                          "names are answered; other Host headers get 403 (DNS rebinding)."),
    )

    def decorate(f):
        for option in reversed(options):  # as if stacked in this order above ``f``
            f = option(f)
        return f

    return decorate


@main.command()
@click.option("--model", required=True, help="An export folder or a .tflite file.")
@click.option("--source", default="0", show_default=True,
              help="Camera index, /dev/videoN, picamera, a video file, an image folder, or "
                   "'sample' (a clip made from the bundled photos).")
@click.option("--headless", is_flag=True, help="No window: one JSON object per frame on stdout.")
@click.option("--json", "as_json", is_flag=True, help="Also print JSON lines with a window.")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads "
              "(default: all cores but one, kept for capture; at most 4).")
@click.option("--delegate", type=click.Choice(["edgetpu"]), help="Hardware delegate.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after N frames.")
@click.option("--reconnect", is_flag=True, help="Reopen a camera that disconnects, with "
              "backoff (reported as {\"event\": \"reconnect\", ...} JSON lines), instead of "
              "exiting 1.")
@_serving_options("Serve the live picture and predictions to a browser instead of a window "
                  "(/, /stream.mjpg, /predictions, /events); a video, folder or the sample "
                  "loops.")
@click.option("--keep-unsure", "keep_dir", metavar="DIR",
              help="Keep the frames whose top-1 score is below --below in DIR, as JPEGs with "
                   "the model's guess beside them (.json): the ones worth labelling next.")
@click.option("--below", type=click.FloatRange(0, 1, min_open=True),
              default=demomod.keep.DEFAULT_BELOW, show_default=True,
              help="With --keep-unsure: the top-1 score under which a frame is kept.")
@click.option("--keep-gap", type=click.IntRange(min=1), default=demomod.keep.DEFAULT_GAP,
              show_default=True, help="With --keep-unsure: at most one kept frame per N frames.")
@click.option("--max-kept", type=click.IntRange(min=1), default=demomod.keep.DEFAULT_MAX_KEPT,
              show_default=True, help="With --keep-unsure: stop keeping once DIR holds N kept "
                                      "frames (earlier runs' included); nothing is deleted.")
@_max_pixels_option
def demo(model, source, headless, as_json, top_k, threads, delegate, max_frames,
         reconnect, serve, token, token_file, allow_hosts, keep_dir, below, keep_gap,
         max_kept) -> int:
    """Classify live frames on the device (needs only a TFLite runtime and OpenCV)."""
    for given, flag in ((token, "--token"), (token_file, "--token-file"),
                        (allow_hosts or None, "--allow-host")):
        if given is not None and serve is None:
            raise click.UsageError(f"{flag} applies to --serve")
    ctx = click.get_current_context()
    if keep_dir is None:
        given = [f"--{n.replace('_', '-')}" for n in ("below", "keep_gap", "max_kept")
                 if ctx.get_parameter_source(n) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f"{given[0]} applies to --keep-unsure")
    keep = None if keep_dir is None else demomod.KeepUnsure(
        Path(keep_dir), below, keep_gap, max_kept)
    token, allow_hosts = (_served_access(token, token_file, allow_hosts) if serve is not None
                          else (None, ()))
    path = devruntime.resolve_model_path(model, delegate=delegate)
    demomod.need_cv2()
    clf = devruntime.Classifier(path, num_threads=threads or demomod.default_threads(),
                                delegate=delegate)
    if keep is not None:
        keep = keep.prepared()  # the folder is made once the model has loaded
    server = None
    if serve is not None:
        server = demomod.DemoServer(*serve, token=token,  # binds now: a busy port exits 2
                                    allow_hosts=allow_hosts)
        warning = demomod.exposure_warning(server.host, server.port, token)
        if warning:
            click.echo(warning, err=True)
        click.echo(f"edgeeff demo: serving on {server.url}", err=True)
    try:
        with server if server is not None else contextlib.nullcontext():
            demomod.run_demo(clf, source, headless, as_json, top_k, max_frames,
                             reconnect=reconnect, server=server, keep=keep)
    except demomod.DemoError as e:
        fsutil.raise_if_interrupted()
        click.echo(f"edgeeff: error: {e}", err=True)
        return 1
    return 0


def _served_access(token, token_file, allow_hosts) -> tuple[str | None, tuple[str, ...]]:
    """--token / --token-file / $EDGEEFF_TOKEN and --allow-host of a served page (demo --serve,
    collect), checked: a bad one is a usage error."""
    try:
        token = demomod.serve.resolve_token(token, token_file)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        return token, tuple(demomod.serve.normalize_host(h) for h in allow_hosts)
    except ValueError as e:
        raise click.UsageError(f"--allow-host: {e}") from None


@main.command("collect")
@click.argument("folder", metavar="DIR")
@click.option("--source", default="0", show_default=True,
              help="Camera index, /dev/videoN, picamera, a video file, an image folder, or "
                   "'sample' (a clip made from the bundled photos).")
@_serving_options("Where the page is served.", default="8000")
@_max_pixels_option
def collect_cmd(folder, source, serve, token, token_file, allow_hosts) -> int:
    """Take and label photos into DIR/<class>/ from a browser: the live picture, classes,
    capture and hold-to-burst, undo; frames `demo --keep-unsure` kept in DIR are offered for
    labelling. Needs only [runtime] (OpenCV), no model. Runs until Ctrl-C."""
    token, allow_hosts = _served_access(token, token_file, allow_hosts)
    demomod.need_cv2()
    app = collectmod.open_session(folder, source, *serve, token=token, allow_hosts=allow_hosts)
    warning = demomod.exposure_warning(app.host, app.port, token,
                                       what="watch the camera and write photos into "
                                            f"{Path(folder).name}")
    if warning:
        click.echo(warning, err=True)
    click.echo(f"edgeeff collect: serving on {app.url}", err=True)
    try:
        collectmod.serve_until_stopped(app)
    except demomod.DemoError as e:
        click.echo(f"edgeeff: error: {e}", err=True)
        return 1
    return 0


@main.command("bench")
@click.argument("model")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--delegate", type=click.Choice(["edgetpu"]))
@click.option("--json", "as_json", is_flag=True)
def bench_cmd(model, threads, runs, warmup, delegate, as_json) -> None:
    """Latency percentiles, throughput and peak RSS; float32 vs int8 for an export folder."""
    res = bench.bench(model, threads, runs, warmup, delegate)
    if as_json:
        _emit_json(res)
    else:
        report.bench_table(res)


@main.command("profile")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Interpreter threads to measure with (use what the device will run).")
@click.option("--out", default=A.DEVICE_PROFILE, show_default=True,
              help="Device profile to write (then: edgeeff fit --device FILE).")
@click.option("--name", help="Device name in the profile (default: the board or host name).")
@click.option("--quick", is_flag=True, help="A small design (about 20 s): a rougher model.")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.option("--time-budget", type=click.FloatRange(min=1), default=None,
              help="Seconds of timing (default: 110, --quick 12); no new graph is started "
                   "after 1.5x (--quick: 2x) this.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def profile_cmd(threads, out, name, quick, force, time_budget, as_json) -> None:
    """Time synthetic int8 EfficientNets on this device; write a per-op latency profile."""



    if Path(out).exists() and not force:
        raise EdgeeffError(f"{out} exists: pass --force to replace it")
    threads_note = prof.cap_threads(threads)[1]  # profile() caps the same way
    if threads_note:
        click.echo(f"edgeeff: {threads_note}", err=True)
    with Progress(transient=True, disable=as_json) as bar:
        task = bar.add_task("timing synthetic graphs", total=None)

        def log(k, n, probe, ms):
            bar.update(task, completed=k, total=n)

        res = prof.profile(threads=threads, quick=quick, log=log, budget_s=time_budget)
    prof.write_profile(out, res, name)
    threads = res.threads
    v = res.model.validation
    summary = {"profile": out, "threads": threads, "graphs_timed": len(res.measurements),
               "wall_s": round(res.wall_s, 1), "int8_macs_per_s": res.int8_macs_per_s,
               "cv_within_10pct": v.get("within_10pct"),
               "cv_median_abs_error": v.get("median_abs_error"),
               "runtime": f"{res.model.runtime} {res.model.runtime_version}",
               "cpu": res.model.cpu,
               "time_budget_s": time_budget or prof.BUDGET_S["quick" if quick else "full"],
               "runqueue_share": v.get("runqueue_share"), "busy": bool(v.get("busy")),
               "spread_p10": res.spread[0], "spread_p90": res.spread[1]}
    if as_json:
        _emit_json(summary)
    else:
        click.echo(f"timed {summary['graphs_timed']} synthetic int8 graphs in "
                   f"{summary['wall_s']} s ({threads} thread{'s' if threads > 1 else ''}, "
                   f"{summary['runtime']}); "
                   f"{res.int8_macs_per_s / 1e9:.1f} G int8 MACs/s; per-op model "
                   f"cross-validated {v.get('within_10pct', 0):.0%} within +-10 % "
                   f"(median error {v.get('median_abs_error', 0):.1%})")
        click.echo(f"spread of the graphs' frames (p90/p10) {summary['spread_p10']:.0%}.."
                   f"{summary['spread_p90']:.0%}, in a {summary['time_budget_s']:g} s "
                   "timing budget")
        click.echo(f"wrote {out} (use: edgeeff fit --device {out})")
    busy = prof.busy_note(res)
    if busy:
        click.echo(f"edgeeff: warning: {busy}", err=True)
    warning = prof.noise_warning(res)
    if warning:
        click.echo(f"edgeeff: warning: {warning}", err=True)


@main.command("doctor")
@click.option("--model", help="Also verify this export folder or .tflite file and benchmark it.")
@click.option("--seconds", type=FiniteFloat(min=0.1), default=5.0, show_default=True,
              help="How long the --model benchmark runs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def doctor_cmd(model, seconds, as_json) -> int:
    """Is this board set up to run the demo? Runtime, threads, cameras, display, Edge TPU.

    Exit code 0 when the demo can run here, 2 when a required check failed."""


    checks = doctor.run_checks(model, seconds=seconds)
    ok = doctor.can_run_demo(checks)
    if as_json:
        _emit_json(doctor.report(checks))
        return 0 if ok else 2
    table = Table(show_header=True, header_style="bold")
    for col in ("check", "", "found"):
        table.add_column(col)
    for c in checks:
        mark = "ok" if c.ok else ("FAIL" if c.required else "warn")
        table.add_row(c.name, mark, c.detail)
    console = Console(highlight=False)
    console.print(table, markup=False)
    for c in checks:
        if not c.ok:
            click.echo(f"{'problem' if c.required else 'note'}: {c.problem()}")
    click.echo("the demo can run here" if ok else "the demo cannot run here: fix the problems "
               "above")
    return 0 if ok else 2


@main.command("bundle")
@click.argument("export_dir")
@click.option("--target", required=True, help="Device profile, e.g. pi4 or coral-usb.")
@click.option("--out", help="Bundle folder (default: EXPORT_DIR-TARGET-bundle); the archive "
              "is the same name + .tar.gz.")
@click.option("--force", is_flag=True)
@click.option("--wheel", help="Put this edgeeff-*.whl in the bundle (default: build one from "
              "edgeeff's source, or repack the installed edgeeff).")
def bundle_cmd(export_dir, target, out, force, wheel) -> None:
    """Gather model, labels, model card, edgeeff's wheel, run script and a systemd unit."""
    b = bundlemod.bundle(export_dir, target, out, force, wheel=wheel)
    click.echo(f"wrote {b.folder}/ and {b.archive} ({b.model}; {b.wheel}, {b.wheel_source})")


@main.command("firmware")
@click.argument("outdir", type=click.Path())
@click.option("--target", type=click.Choice(targets.FIRMWARE_TARGETS),
              help="host (g++), or a Cortex-M with Arm GCC + CMSIS-NN [default: the --device "
                   "profile's firmware_target, else host].")
@click.option("--tflm-dir", help="TensorFlow Lite Micro source tree (default: $TFLM_DIR, else "
                                 "../shared/tflm/host or cortex-m7-cmsis-nn beside the repo).")
@click.option("--run", "run_it", is_flag=True,
              help="Run it: on the host, or under QEMU (mps2-an500 M7, mps2-an386 M4, "
                   "mps2-an505 M33; none for M0+).")
@click.option("--device", "device_name", help="Compare flash and RAM with this device profile.")
@click.option("--arena", type=SIZE, help="Build with this tensor arena instead of "
                                         "kTensorArenaSize (to find the smallest that works).")
@click.option("--jobs", type=click.IntRange(min=1), help="Parallel compiles (default: all CPUs).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def firmware_cmd(outdir, target, tflm_dir, run_it, device_name, arena, jobs, as_json) -> None:
    """Build the TFLite Micro firmware an 'export --format tflm' folder holds, and check it."""
    if target is None:
        dev = targets.load(device_name) if device_name else None
        target = (dev.firmware_target if dev is not None else None) or "host"
    rep = fw.firmware(outdir, target, tflm_dir, run_it, device_name, arena, jobs)
    if as_json:
        _emit_json(rep)
    else:
        Console().print(fw.table(rep))
    sys.exit(0 if fw.passed(rep) else 1)


def _quiet_tensorflow() -> None:
    quiet.import_tensorflow()  # MissingExtra (one line, the extra to install) without it


if __name__ == "__main__":  # pragma: no cover
    main()
