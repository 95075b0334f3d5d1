"""``celledge``: classify blood-cell images and watch a microscope camera. Thin over the library."""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import sys
import threading
from pathlib import Path

import click

from ._quiet import verbose_option
from .errors import NonEmptyPath, Number, OneLineGroup, UserError, one_line_errors, warn



class ModelPath(NonEmptyPath):
    """A .tflite model, or a folder holding the approved one (``bundle.model_in``: cellcompress's ``--out``, or a
    training run with its ``int8`` folder): the model file."""

    def __init__(self):
        super().__init__(exists=True)

    def convert(self, value, param, ctx):
        from .bundle import APPROVED, model_in  # noqa: PLC0415

        path = super().convert(value, param, ctx)
        if not Path(path).is_dir():
            return path
        found = model_in(path)
        if found is None:
            self.fail(f"{str(path)!r} is a folder with no approved model in it ({APPROVED}, or int8/{APPROVED}): "
                      "give the .tflite file (cellcompress writes OUT/model.tflite)", param, ctx)
        return str(found)


MODEL = ModelPath()
THREADS = click.IntRange(1, 64)  # more than a board has cores; 100000 crashed the interpreter
TOP_K = click.IntRange(min=1)


def _read_by_watch(cfg, ctx) -> dict:
    """The files a watch run reads besides its source: {what: path} (``precious.not_precious``'s ``reads``)."""
    from .bundle import sidecar_path  # noqa: PLC0415
    from .packaged import default_model  # noqa: PLC0415

    model = cfg.model or str(default_model())
    return {"the model": model, "the model's sidecar": sidecar_path(model),
            "the site file": cfg.site, "the config file": ctx.params.get("config")}


def _check_device(ctx, param, value):
    """cpu, or an Edge TPU as pycoral names it: usb, usb:N, pci, pci:N, :N."""
    if value is None or value == "cpu" or re.fullmatch(r"(usb|pci)?(:\d+)?", value) and value:
        return value
    raise click.BadParameter(f"{value!r} is not a device: use cpu, usb, usb:N, pci, pci:N or :N (an Edge TPU)")


def _classifier(model: str, threads: int | None, device: str | None = None, fallback: str | None = None,
                tta: int | None = None):
    """The model's classifier over ``tta`` views (None: as many as its sidecar advises, said on stderr)."""
    from .bundle import gate_failures
    from .classifier import make_classifier
    from .tta import as_advised, views_of

    clf = as_advised(make_classifier(model, num_threads=threads, device=device, fallback=fallback,
                                     warn=lambda msg: print(msg, file=sys.stderr)), tta)
    failed = gate_failures(clf.sidecar) if getattr(clf, "sidecar", None) is not None else None
    if failed is not None:  # it ran as if approved: a variant cellcompress left beside the approval for the record
        warn(f"{Path(model).name} failed cellcompress's quality gate ({'; '.join(failed) or 'see celledge info'}): it "
             "is not an approved model; expect more mistakes than its float model made")
    n = views_of(clf)
    if tta is None and n > 1:
        print(f"note: {Path(model).name} runs over {n} flipped/rotated views of each cell (its sidecar advises "
              f"it: an adapted model, more accurate so; --tta 1 for {n}x fewer model runs)", file=sys.stderr)
    return clf


def _runtime_options(fn):
    from .bundle import VIEWS

    fn = click.option("--tta", type=click.Choice([str(v) for v in VIEWS]), default=None,
                      callback=lambda ctx, param, v: None if v is None else int(v),
                      help="Test-time augmentation: average the scores of this many flipped/rotated views of each "
                           "cell (1: off). Steadier on blurred, noisy or odd-stained images; costs one inference "
                           "per view. Default: what the model's sidecar advises (1; 8 for a model adapted with "
                           "celltrain fit --preset few-shot).")(fn)
    fn = click.option("--fallback", type=click.Choice(["cpu"]), default=None,
                      help="If the Edge TPU cannot be loaded, run the CPU model beside it instead of failing.")(fn)
    return click.option("--device", default=None, metavar="cpu|usb|pci|:N", callback=_check_device,
                        help="Where to run: the CPU, or an Edge TPU (default: from the model's sidecar).")(fn)


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@verbose_option
def main() -> None:
    """Run an int8 blood-cell classifier on a Pi, a Coral or any Linux box.

    \b
    Example:
      celledge classify model.tflite cell.jpg more_cells/
      celledge watch /dev/video0 --model model.tflite
    """


def _exported_scales(paths) -> dict:
    """``path`` -> the red-cell fraction its crop was cut at, for the images an ``export.json`` beside their class
    folder records (``session_export.recorded_scales``; OUT/<class>/<file>)."""
    from .session_export import recorded_scales

    records: dict[Path, dict[str, float]] = {}
    out = {}
    for p in paths:
        root = Path(p).parent.parent
        if root not in records:
            records[root] = recorded_scales(root) if (root / "export.json").is_file() else {}
        fraction = records[root].get(Path(p).relative_to(root).as_posix()) if records[root] else None
        if fraction is not None:
            out[p] = fraction
    return out


def _split_model(args: tuple[str, ...], model: str | None) -> tuple[str, tuple[str, ...]]:
    """``classify [MODEL] IMAGE...``: a leading .tflite, or a folder holding the approved model (``bundle.model_in``),
    is the model; else --model or the packaged one. A folder of images that holds a model is refused: its files are
    a run's, not cells (a run folder's curves.png were classified as blood cells)."""
    from .bundle import model_in
    from .packaged import default_model

    lead = model_in(args[0]) if args and Path(args[0]).is_dir() else None
    if args and (args[0].endswith(".tflite") or lead is not None):
        if model is not None:
            raise click.UsageError(f"two models: --model {model} and {args[0]}; give one")
        model, args = str(lead or args[0]), args[1:]
    if not args:
        raise click.UsageError("give at least one IMAGE or folder")
    missing = [a for a in args if not Path(a).exists()]
    if missing:
        raise click.BadParameter(f"path {missing[0]!r} does not exist", param_hint="IMAGES")
    for a in args:
        held = model_in(a) if Path(a).is_dir() else None
        if held is not None:
            raise click.BadParameter(f"{a!r} holds a model ({held}), not cells: give it first or as --model {held}, "
                                     "and the cells' folder after it", param_hint="IMAGES")
    if model is None:
        model = str(default_model())
    elif not Path(model).is_file():
        raise click.BadParameter(f"file {model!r} does not exist", param_hint="MODEL")
    return model, args


@main.command()
@click.argument("args", nargs=-1, required=True, type=NonEmptyPath(), metavar="[MODEL] IMAGE|DIR...")
@click.option("--model", default=None, type=MODEL,
              help="The .tflite bundle, or the folder cellcompress approved it into (default: the packaged PBC model).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.option("-k", "--top-k", type=TOP_K, default=3, show_default=True, help="How many classes to list per image.")
@click.option("--threads", type=THREADS, default=None, help="CPU threads for the interpreter (default: runtime's).")
@click.option("--site", type=NonEmptyPath(exists=True, dir_okay=False), default=None, metavar="FILE",
              help="A site calibration file (celledge calibrate). Made with --scale: each image, a crop of that "
                   "microscope, is cut to the square that shows its red cells at the model's training scale "
                   "before it is classified (each JSON line gets its \"scale\"); with --colour: white-balanced.")
@click.option("--rescale", type=click.Choice(["each", "shared", "none"]), default="each", show_default=True,
              help="Images framed unlike the training crops (their red cells, or a white cell that fills one, say "
                   "how) are cut to the training framing. each: every image measured alone; shared: one framing "
                   "for all, the median over up to 15 images spread through them (for a collection cut alike, "
                   "e.g. one lab's crops: better then, docs/cross-lab.md; wrong for a folder mixing framings, "
                   "which it warns about); none: as given. Images at most 1.25x the model's input are "
                   "taken as already cut; crops celledge export wrote are framed from the scale its export.json "
                   "records. The JSON line's \"scale\" says what was done. A --site made with "
                   "--scale fixes the scale instead.")
@_runtime_options
@one_line_errors
def classify(args, model, as_json, top_k, threads, device, fallback, tta, site, rescale):
    """Classify single-cell images (files or folders).

    Without a model, the int8 EfficientNetV2B0 shipped in the package (trained
    on real PBC cells, 96x96 crops) is used.

    Each image should hold one cell near its centre. A model knows cells at the
    framing it was trained at (PBC's: about 5 red cells across the crop); an image
    framed tighter or wider is cut to that framing first (--rescale; for a folder
    of crops cut alike, --rescale shared measures one framing for all).

    The model comes first, or with --model: a .tflite file, or the folder
    cellcompress approved it into (runs/mine/int8, or the run folder above it).

    \b
    Example:
      celledge classify cells/ --json
      celledge classify model.tflite cell1.jpg cell2.png
      celledge classify runs/mine/int8 my_cells/
    """
    from .postprocess import top_k as best_k
    from .preprocess import prepare, too_small
    from .sources import SourceError, images_given, read_image_rgb

    from . import crop_scale, ood
    from .packaged import is_packaged
    from .field import model_rbc_px
    from .stain import is_greyscale

    model, images = _split_model(args, model)
    clf = _classifier(model, threads, device, fallback, tta)
    site_cal = _site(site, clf)
    model_rbc = model_rbc_px(clf.input_spec)
    ref = ood.reference_of(getattr(clf, "sidecar", None))
    paths = images_given(images, warn)
    exported = _exported_scales(paths)  # crops celledge export wrote, with the scale they were cut at
    shared = None  # --rescale shared: (zoom, readings)
    read_ahead: dict = {}
    # --rescale shared reads one framing from the images celledge export did not cut (those keep its record: a
    # walk-through's exported crops were warned "not framed alike" while each was cut at its recorded scale)
    unrecorded = [p for p in paths if p not in exported]
    if rescale == "shared" and unrecorded and not (site_cal is not None and site_cal.use_scale):
        from .site import pick_evenly

        sample = pick_evenly(unrecorded, crop_scale.SAMPLE)
        read_ahead = _readable(sample)  # read once: the loop below takes them from here (a decoder's warning once)
        zoom, zooms = crop_scale.shared_zoom([img if site_cal is None else site_cal.balance(img)
                                              for img in read_ahead.values()], model_rbc, clf.input_spec.height)
        read_ahead = {p: img for p, img in read_ahead.items() if img.size <= KEEP_READ_PX}  # large: read again
        shared = zoom, len(zooms)
        if not zooms:
            warn(f"--rescale shared: none of the {len(sample)} images measured had red cells or a white cell to read "
                 "the framing from: all are classified as given")
        elif crop_scale.framings_differ(zooms, zoom):
            warn(f"--rescale shared: the {len(zooms)} images measured are not framed alike (a third or more lie "
                 f"over {crop_scale.BAND}x from their median): one framing for all misframes some; --rescale each "
                 "measures each image alone")
    failed: list[str] = []
    wide: list[str] = []  # images holding more than the crop classified (whole fields)
    whole: list[str] = []  # camera-sized images classified as given (--rescale none, or no scale to read)
    site_refused: list[str] = []  # far smaller than --site's square
    unlike = grey = 0
    for path in paths:
        try:
            image = read_ahead.pop(path, None)
            image, scale = (image if image is not None else read_image_rgb(path)), None
            if site_cal is not None:
                image, scale = site_cal.view(image, model_rbc, clf.input_spec.height)
            seen = image  # the image as read (and white-balanced by --site): its size, colour and stain
            if scale is None and rescale != "none" and path in exported:  # cut by celledge export: its record
                image, scale = crop_scale.at_fraction(image, exported[path], model_rbc, clf.input_spec.height)
            elif scale is None and shared is not None:
                image, scale = crop_scale.at_zoom(image, *shared, clf.input_spec.height, "shared")
            elif scale is None and rescale == "each":
                image, found = crop_scale.rescale(image, model_rbc, clf.input_spec.height)
                scale = found.record()
            elif scale is None:  # --rescale none
                scale = {"source": "as given", "rbc_px": None, "crop": int(min(image.shape[:2]))}
            crop = prepare(image, clf.input_spec)
        except (SourceError, OSError) as e:
            print(f"skipped: {e}", file=sys.stderr)
            failed.append(str(e))
            continue
        except UserError as e:  # Site.crop_to_scale: a crop already cut, not an image of the microscope
            print(f"skipped {path}: {e}", file=sys.stderr)
            site_refused.append(f"{path}: {e}")
            continue
        spec = clf.input_spec
        doubts = {}  # --json says them per image too: a script reads the lines, not the warnings
        if too_small(seen, spec):
            warn(f"{path} is {seen.shape[1]}x{seen.shape[0]} px: its shorter side, {min(seen.shape[:2])} px, is far "
                 f"smaller than the model's {spec.width}x{spec.height} input: its class below means little")  # not
            # "only 4000x20 px, far smaller than 96x96"
            doubts["too_small"] = True
        if is_greyscale(seen):
            grey += 1
            doubts["no_colour"] = True
        side = (scale or {}).get("crop")
        if side and min(seen.shape[:2]) >= FIELD_SIDE and side < WIDE * min(seen.shape[:2]):  # a whole field
            wide.append(f"{path}: {seen.shape[1]}x{seen.shape[0]} px, its centre {side} px")
        elif (scale or {}).get("source") == "as given" and min(seen.shape[:2]) >= FIELD_SIDE \
                and max(seen.shape[:2]) > 1.1 * min(seen.shape[:2]):  # a camera's frame shrunk whole (not a square crop)
            whole.append(f"{path}: {seen.shape[1]}x{seen.shape[0]} px")
        best = best_k(clf.classify(crop[None])[0], clf.labels, k=top_k)
        distance = ood.score(ood.stain_stats(seen), ref) if ref else None
        unlike += distance is not None and distance > ref.threshold
        if as_json:
            rec = {"path": str(path), "label": best[0].label, "score": round(best[0].score, 4),
                   "top_k": [{"label": c.label, "score": round(c.score, 4)} for c in best]}
            if ref:
                rec["stain_distance"] = distance  # None: no red cell or nucleus to compare
                rec["unlike_training"] = None if distance is None else distance > ref.threshold  # None: no verdict
            if scale is not None:
                rec["scale"] = scale
            click.echo(json.dumps({**rec, **doubts}))
        else:
            alts = ", ".join(f"{c.label} {c.score:.2f}" for c in best[1:])
            click.echo(f"{path}\t{best[0].label}\t{best[0].score:.3f}\t({alts})")
    if wide:
        warn(f"{len(wide)} of {len(paths)} images hold more than one cell's crop (e.g. {wide[0]} classified): "
             "classify names the centre cell only; celledge watch SOURCE --mode field finds and classifies every "
             "cell of a field")
    if whole:  # as given: asked for (--rescale none), or no red cell or white cell gave the scale
        asked = rescale == "none"
        why = ("were classified whole (--rescale none)" if asked else "show no red cell or white cell to read the "
               "scale from (no colour, or none in view), so each was classified as it is, its centre square")
        warn(f"{len(whole)} of {len(paths)} images are camera-sized (e.g. {whole[0]}) and {why}, shrunk to the "
             f"model's {clf.input_spec.width} px: a field's cells are too small to name; "
             + ("--rescale each cuts the centre cell at the training scale, and " if asked else "")
             + "celledge watch SOURCE --mode field classifies every cell")
    if grey:
        warn(f"{grey} of {len(paths)} images hold no colour (greyscale or blank): the model was trained on stained "
             "colour images, so their classes mean little")
    if unlike:
        warn(f"{unlike} of {len(paths)} images are stained unlike the model's training data (stain distance above "
             f"{ref.threshold}): expect more mistakes; "
             + ood.unlike_advice(is_packaged(getattr(clf, "sidecar", None)), site_cal is not None))
    if failed:
        raise UserError(f"{len(failed)} of {len(paths)} images could not be read ({failed[0]})")
    if site_refused:
        raise UserError(f"{len(site_refused)} of {len(paths)} images were not classified ({site_refused[0]})")


REVIEW_GRACE_S = 20.0  # review: how long a label and a 5,000-cell session's report may take to finish after Ctrl-C
WIDE = 0.6  # classify: a crop under this share of an image's shorter side leaves most of it unread (a field) ...
FIELD_SIDE = 400  # ... in an image of a camera's size (480 px and up); datasets' single-cell crops are smaller
KEEP_READ_PX = 3 * 1280 * 960  # --rescale shared keeps its sample images this size or smaller (15 of them: 55 MB)


def _readable(paths) -> dict:
    """{path: RGB image} of the ``paths`` that can be read (the others: the main loop says so)."""
    from .sources import SourceError, read_image_rgb

    out = {}
    for path in paths:
        try:
            out[path] = read_image_rgb(path)
        except (SourceError, OSError):
            continue
    return out


def _crop_size(ctx, param, value: str) -> int | None:
    """``auto`` -> None (measured per frame); else a whole number of pixels >= 8."""
    if str(value).strip().lower() == "auto":
        return None
    try:
        px = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither 'auto' nor a whole number of pixels") from None
    if px < 8:
        raise click.BadParameter(f"{px} px is too small a crop (8 at least; or 'auto')")
    return px


def _size(ctx, param, value: str | None) -> tuple[int, int] | None:
    """``640x480`` -> (640, 480); a site file's ``[640, 480]`` arrives as ``640x480`` (config._plain)."""
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 640x480") from None
    return w, h


def _classes(ctx, param, value: str) -> tuple[str, ...]:
    """``basophil, erythroblast`` -> ('basophil', 'erythroblast'); a site file's list arrives joined."""
    return tuple(c.strip() for c in str(value or "").split(",") if c.strip())


@main.command()
@click.argument("source", required=False)
@click.option("--config", type=NonEmptyPath(exists=True, dir_okay=False), default=None, metavar="FILE",
              help="A site file (YAML or JSON) of these options by their names, e.g. 'mode: field' or "
                   "'crop-size: 360'; a flag given here overrides it. Example: edge/deploy/site.yaml.")
@click.option("--print-config", is_flag=True,
              help="Check the options, print them merged (defaults < --config < flags) as a site file, and exit.")
@click.option("--model", default=None, type=MODEL,
              help="The .tflite model (its .json sidecar beside it), or the folder cellcompress approved it into. "
                   "Default: the packaged PBC model.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after this many frames.")
@click.option("--fps", type=Number(min=0.0001), default=None, help="Cap on frames per second.")
@click.option("--size", default=None, callback=_size, help="Ask the camera for WIDTHxHEIGHT, e.g. 640x480.")
@click.option("--loop", is_flag=True, help="Replay an image folder, an image or a video file forever.")
@click.option("--mode", type=click.Choice(["crop", "field"]), default="crop", show_default=True,
              help="crop: the cell in the centre of the view (reframed to the training framing, --rescale); field: "
                   "find and classify every cell in the frame.")
@click.option("--crop-size", default="auto", show_default=True, callback=_crop_size, metavar="auto|PX",
              help="Field mode: side (px of the frame) of the square cropped around each cell. auto: measured "
                   "on every frame from its red cells (about 7.5 um across in every smear), so that cells appear "
                   "at the scale the model was trained at; a number fixes it (PBC's CellaVision fields: 360).")
@click.option("--site", type=NonEmptyPath(exists=True, dir_okay=False), default=None, metavar="FILE",
              help="A site calibration file (celledge calibrate SOURCE --out FILE). Made with --scale: crop at "
                   "this microscope's measured scale instead of each frame's red-cell ruler, which specks can "
                   "fool (each line's scale says \"source\": \"site\" and still reports the frame's own "
                   "ruler); with --colour: white-balance the crops. Neither is on by default (docs/cross-lab.md).")
@click.option("--rescale/--no-rescale", default=True, show_default=True,
              help="Crop mode: when the views are framed unlike the training crops (their red cells, or a white "
                   "cell that fills the view, say how; the median over the stream), cut each to the training "
                   "framing. Each line's \"scale\" says what was done. A --site made with --scale fixes it instead.")
@click.option("--min-score", type=Number(0, 1), default=0.5, show_default=True,
              help="Field mode: cells scored below this are counted as 'uncertain'.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Field mode: stop once this many white cells are counted (a lab's 100 or 200-cell differential; "
                   "with --sessions at most 5000, a session's most). With --sessions and --http the session closes "
                   "there and the daemon goes on: Start on the lab page counts the next slide (the run's own "
                   "summary and scopelite_white_cells_total count every cell it saw).")
@click.option("--report", type=NonEmptyPath(file_okay=False), default=None,
              help="Field mode: write the differential here when the run ends (differential.json, .csv, .txt).")
@click.option("--wbc", type=Number(min=0, max=1000, min_open=True), default=None, metavar="X10^9/L",
              help="Field mode: the analyser's white count, for absolute counts (corrected for NRBC).")
@click.option("--sessions", type=NonEmptyPath(file_okay=False), default=None, metavar="DIR",
              help="Field mode: one session per slide in DIR/<start time>/: every counted cell with its crop, and "
                   "the report (JSON, CSV, printable HTML with a gallery per class) when it closes (--count, the lab "
                   "page). A session left open by a killed run is resumed (a camera, or a folder: the images "
                   "counted are skipped; not a video file or a folder read with --track, whose cells would be counted "
                   "twice). With --http: "
                   "start/stop/reset on the lab page, review at /review. docs/differential.md")
@click.option("--new-session", is_flag=True,
              help="With --sessions: close the session the last run left open (writing its report) and start anew.")
@click.option("--add-to-session", is_flag=True,
              help="With --sessions: count this folder or video into the session left open by a run on another "
                   "one (more fields of the same slide). Without it that is refused: another slide needs "
                   "--new-session. A camera, or the same folder run again, resumes without it.")
@click.option("--keep-days", type=Number(min=0, max=36500, min_open=True), default=None, metavar="DAYS",
              help="With --sessions: remove closed sessions (whole folders: cells, pictures, reports) once they "
                   "were stopped more than DAYS days ago; looked at on start and every hour. Never the open or "
                   "current session, nor one being reviewed. Export what you want to keep first (celledge export). "
                   "Default: keep every session (about 1 GB a day of counting).")
@click.option("--track/--no-track", default=None,
              help="Field mode: follow cells across frames and count each once (default for cameras, streams and "
                   "videos: the stage moves; give it for a folder of tiles of one slide, in scan order, each sharing "
                   "30-50 % with the one before); --no-track: every image is a separate field and each of its cells "
                   "counts (default for a folder of images or one image).")
@click.option("--exit-on-eof", is_flag=True, help="Camera/stream: exit when it ends instead of reconnecting.")
@click.option("--backoff-cap", type=Number(min=0.1, max=86400), default=30.0, show_default=True,
              help="Camera/stream: longest wait (s) between reconnection attempts (doubling from 0.5 s).")
@click.option("--http", default=None, metavar="HOST:PORT",
              help="Serve /, /healthz, /metrics, /latest, /snapshot.jpg (e.g. 127.0.0.1:8080; off by default).")
@click.option("--http-token", default=None, envvar="SCOPELITE_HTTP_TOKEN", metavar="TOKEN",
              help="Changes over HTTP (sessions, review, model reload) need 'Authorization: Bearer TOKEN'. "
                   "Default: none on loopback; made up and printed once when --http binds beyond it. "
                   "Also read from $SCOPELITE_HTTP_TOKEN.")
@click.option("--out", type=NonEmptyPath(dir_okay=False, writable=True), default=None,
              help="Write the JSON lines to this file instead of stdout (added to its end: a daemon restarted "
                   "keeps one log; each run ends with its own summary line).")
@click.option("--save-dir", type=NonEmptyPath(file_okay=False), default=None,
              help="Save frames that match --save-classes or score below --save-below here.")
@click.option("--save-classes", default="", callback=_classes, help="Comma-separated classes to save, e.g. basophil,erythroblast.")
@click.option("--save-below", type=Number(0, 1), default=None, help="Save frames scored below this.")
@click.option("--save-cap-mb", type=Number(min=1, max=2**30), default=500.0, show_default=True,
              help="Disk cap for --save-dir: the oldest saved frames are deleted first.")
@click.option("-k", "--top-k", type=TOP_K, default=3, show_default=True, help="How many classes each line lists.")
@click.option("--threads", type=THREADS, default=None, help="CPU threads for the interpreter.")
@_runtime_options
@one_line_errors
def watch(**_):
    """Classify the centre of each frame of SOURCE (or every cell: --mode field) and print JSON lines.

    SOURCE is /dev/videoN, a camera index, a video file, a stream URL, a
    folder of images or one image. One JSON object per frame goes to stdout, then a
    summary. Crop mode tallies frames (one cell in the centre of each). Field
    mode follows every cell across frames while the stage moves and counts each
    cell once into a differential (white cells in clinical order, NRBC per 100
    white cells, platelets, uncertain cells for review). Stops cleanly on end of
    stream, --count, Ctrl-C or SIGTERM. SIGHUP (systemctl reload) or POST
    /model/reload loads and checks the model again and swaps it in between
    frames; a bad bundle is refused and the old model keeps serving.

    \b
    Example:
      celledge watch --config /etc/scopelite/site.yaml
      celledge watch /dev/video0 --mode field --count 100 --report diff/ --http 127.0.0.1:8080
      celledge watch /dev/video0 --mode field --count 100 --sessions sessions/ --http 127.0.0.1:8080
      celledge watch /dev/video0 --model model.tflite --fps 5
      celledge watch demo_out/data/microscope.avi --model demo_out/int8/model.tflite
      celledge watch smear_fields/ --mode field --crop-size 360
    """
    from . import shutdown

    # a SIGHUP (systemctl reload) before its handler is in (the model loading, the source opening) would end the
    # run, and systemd does not restart a unit a SIGHUP ended: remembered here, and a reload asked for once in
    early_hup = shutdown.defer(shutdown.SIGHUP)
    from .config import WatchConfig, from_click
    from .outputs import MIN_FREE_MB, LineSink, check_writable
    from .precious import not_precious, only_appends_to_lines
    from .sources import is_live, is_still, open_source, open_unless_stopped, shown
    from .watch import run_watch

    from .packaged import default_model

    low: list[str] = []  # a camera's outputs on a nearly full disk: said, not refused

    def unwritable(cfg) -> list[str]:
        out = []
        low.clear()
        # a camera's or stream's daemon counts on when its disk fills (lines dropped, no pictures): it starts on a
        # nearly full disk too, or systemd's restarts after a reboot or an upgrade were refused every 5 s for good
        live = bool(cfg.source) and is_live(cfg.source)
        for path, flag, is_dir in ((cfg.out, "--out", False), (cfg.save_dir, "--save-dir", True),
                                   (cfg.report, "--report", True), (cfg.sessions, "--sessions", True)):
            try:
                if path and not (flag == "--out" and path == "-"):  # --out -: stdout, as without --out
                    going_on = live and flag != "--report"  # (a report is written at the end, whole)
                    free = check_writable(path, flag, is_dir=is_dir, min_free_mb=0 if going_on else MIN_FREE_MB)
                    if going_on and free < MIN_FREE_MB:
                        low.append(f"{flag} {path}: only {free:.0f} MB free: counting starts, and what "
                                   f"{flag} keeps is dropped until there is room; free some space")
                    if flag == "--out":
                        not_precious(path, flag, "the JSON lines", ending=".jsonl", source=cfg.source,
                                     reads=_read_by_watch(cfg, ctx))
                        only_appends_to_lines(path, flag)
                        _not_inside(path, flag, cfg.report, cfg.sessions)
                    if flag == "--sessions":
                        _not_a_dataset(path, cfg.source)
                    if flag == "--report":
                        _report_replaces_only_a_report(path)
                    if flag == "--save-dir":
                        _not_in_source(path, flag, cfg.source, "the frames it saves", "saved/")
            except UserError as e:
                out.append(str(e))
        if cfg.http:
            from .httpd import parse_address

            try:
                parse_address(cfg.http)
            except UserError as e:
                out.append(str(e))
        return out

    ctx = click.get_current_context()
    cfg = from_click(ctx, checks=unwritable)  # every mistake of the file and the flags at once
    for line in low:
        warn(line)
    if cfg.mode != "field" and cfg.min_score != WatchConfig.min_score:  # (a field-mode site file run in crop mode)
        warn(f"--min-score {cfg.min_score:g} is for field mode: crop mode lists each view's classes and scores and "
             "calls nothing uncertain, so it is not used")
    if cfg.site:  # checked before --print-config returns: it checks the whole set-up
        from .site import load as load_site

        if load_site(cfg.site).use_scale and cfg.crop_size is not None:
            raise UserError(f"--crop-size fixes the crop and --site {cfg.site} (made with --scale) the scale it "
                            "comes from: give one of them")
    if ctx.params["print_config"]:
        from .bundle import load_sidecar

        _check_save_classes(cfg, load_sidecar(cfg.model or default_model()).labels)  # the model's, not a guess
        click.echo(cfg.dump(), nl=False)
        return
    if cfg.out == "-":
        cfg = cfg.replace(out=None)
    if cfg.loop and cfg.mode == "field":
        warn("--loop in field mode counts the same cells again on every pass: the differential is not a count of "
             "this slide")
    source = cfg.source
    if cfg.size is not None and not is_live(source):  # a folder, an image or a video file: nothing to ask
        warn(f"--size asks a camera for its frame size; the frames of {source} are read as they are")
    if cfg.track is None:
        cfg = cfg.replace(track=not is_still(source))

    def load(model: str):
        return _classifier(model, cfg.threads, cfg.device, cfg.fallback, cfg.tta)

    model = cfg.model or str(default_model())
    clf = load(model)
    site = _site(cfg.site, clf)  # a bad site file fails here, before anything is opened
    live = is_live(source)
    sources = {"closed": 0, "open": None}  # a camera reopened for weeks: only the open source is kept

    def open_counted():
        # tracked, a folder is one scan: its tiles in number order (named 0.png ... 41.png, 10.png came before 2.png
        # and the scan was followed out of order: 101-115 counted for 98)
        src = open_source(source, loop=cfg.loop, size=cfg.size, warn=warn, numbered=bool(cfg.track))
        sources["closed"] += getattr(sources["open"], "unreadable", 0)
        sources["open"] = src
        return src

    def unreadable() -> int:
        return sources["closed"] + getattr(sources["open"], "unreadable", 0)

    # a bad file fails here, at once; a missing camera too with --exit-on-eof (else: retried)
    first = open_counted() if (not live or cfg.exit_on_eof) else None
    opened = {"first": first}
    stop = threading.Event()

    def opener():
        src = opened.pop("first", None)
        return src if src is not None else open_unless_stopped(open_counted, stop)

    from .reload import ModelReloader

    # a new model must fit the running site file too (one made for its input size)
    reloader = ModelReloader(load, clf, model, also=(lambda new: _site(cfg.site, new),) if site is not None else ())
    # SIGINT/SIGTERM: stop within 2 s; SIGHUP (systemctl reload): load, check and swap in the model again
    ctx.call_on_close(shutdown.install(stop, on_force=sys.stdout.flush,
                                       others={shutdown.SIGHUP: lambda: reloader.request(trigger="SIGHUP")}))
    if early_hup():
        reloader.request(trigger="SIGHUP")
    # a camera's or stream's daemon: a full disk drops lines and the count goes on (a folder's or video's run ends,
    # to be run again)
    sink = LineSink(cfg.out, while_full=live) if cfg.out else None
    if sink is not None:
        ctx.call_on_close(sink.close)
    status = server = None

    def emit(rec):
        if sink is not None:
            sink.write(json.dumps(rec))
        else:
            sys.stdout.write(json.dumps(rec) + "\n")
            sys.stdout.flush()
        tries = rec.get("in_a_row", 0) if rec.get("event") == "reconnecting" else 0
        if tries and status is not None:  # /healthz and the lab page say why no frames come
            status.source_trouble(f"{rec['reason']} (attempt {tries}, next in {rec['in_seconds']:g} s)")
        if tries > 0 and tries & (tries - 1) == 0:  # said on stderr too, at tries 1, 2, 4, 8... of each outage
            warn(f"{shown(cfg.source)}: {rec['reason']}; trying again in {rec['in_seconds']:g} s (attempt {tries}; watch "
                 "keeps trying until stopped, --exit-on-eof: it stops instead)")
        if rec.get("event") == "model_reload":  # the operator reads the journal (stderr), not only the lines
            if rec["ok"]:
                print(f"model reloaded ({rec['trigger']}): {rec['model']} (sha256 {str(rec.get('sha256'))[:12]})",
                      file=sys.stderr, flush=True)
            else:
                warn(f"model reload ({rec['trigger']}) refused: {rec['error']}; still serving {rec['serving']}")

    if cfg.http:  # listening before a session is opened: a port in use left an empty open session behind
        from .httpd import Status, exposure_warning, parse_address, serve, start_serving, url

        host, port = parse_address(cfg.http)
        status = Status(clf.labels, model=reloader.state)  # its session: below, once opened

        def reload_action(body: dict) -> tuple[int, dict]:
            """POST /model/reload {"model": PATH} (no body: the file in use again): 200 loaded, 422 refused."""
            model = body.get("model", None)
            if set(body) - {"model"} or "model" in body and not (isinstance(model, str) and model.strip()):
                # {"model": ""} (an unset variable) reloaded the file in use and answered ok; a typo's key was ignored
                return 400, {"ok": False, "error": 'body must be {"model": "/path/model.tflite"} or empty'}
            from .bundle import model_in  # noqa: PLC0415

            given = body.get("model") or None  # a relative path is the daemon's (its working folder): said whole
            approved = model_in(given) if given and Path(given).is_dir() else None  # cellcompress's folder, as --model
            given = str(approved) if approved is not None else given
            event = reloader.reload(os.path.abspath(given) if given else None, trigger="http")
            return (200 if event["ok"] else 422), event

        token = _http_token(ctx, host)
        # bound now, answered once the session is open (a request before would find none)
        server = serve(status, host, port, actions={"/model/reload": reload_action}, token=token, start=False)
        ctx.call_on_close(server.server_close)
    elif ctx.params["http_token"] and ctx.get_parameter_source("http_token").name == "COMMANDLINE":
        raise UserError("--http-token needs --http HOST:PORT")
    sessions, cfg = _sessions(cfg, clf, live)
    if sessions is not None:
        ctx.call_on_close(sessions.release)  # another process (celledge review) may take its folder after this run
        sessions.on_change = lambda what: print(f"{what} (lab page)", file=sys.stderr, flush=True)
        sessions.on_note = lambda what: print(what, file=sys.stderr, flush=True)
        sessions.on_disk = warn  # the sessions' disk running low or full: said at the start and while counting
        sessions.check_disk()
        if cfg.keep_days is not None:
            from .retention import Pruner

            pruner = Pruner(cfg.sessions, cfg.keep_days, lambda: sessions.current.folder,
                            tell=lambda what: print(what, file=sys.stderr, flush=True),
                            spare=lambda: sessions.closed_here)
            pruner.start()
            ctx.call_on_close(pruner.stop)
    if server is not None:
        status.session = sessions
        start_serving(server)
        ctx.call_on_close(server.shutdown)
        if exposure_warning(host):
            warn(exposure_warning(host))
        print(f"serving {url(server)}", file=sys.stderr)
        if token and not ctx.params["http_token"]:
            print(f"HTTP token for changes (sessions, review, reload): {token}  (open {url(server)}?token={token})",
                  file=sys.stderr)

    savers: list = []
    summary = run_watch(cfg, opener, clf, emit, stop=stop, live=live, reloader=reloader,
                        on_frame=_on_frame(status, cfg, clf.labels, unreadable, savers), session=sessions,
                        site=site)
    if status is not None:
        status.ending = True  # no Stop, Start, Reset or label between here and the summary and report
    summary["summary"]["unreadable"] = unreadable()
    if sink is not None and sink.dropped:  # the disk was full for a while: what --out lacks
        summary["summary"]["lines_dropped"] = sink.dropped
        warn(f"--out {cfg.out}: {sink.dropped} line{'s' if sink.dropped > 1 else ''} dropped while the disk was full"
             + (", the summary too (the disk is still full)" if sink.full else ""))
    if savers and savers[0].not_saved:
        summary["summary"]["frames_not_saved"] = savers[0].not_saved
    if sessions is not None:
        sessions.checkpoint()  # the report as it stands; an open session stays open for the next run
        s = sessions.summary(cells=False)
        # each frame line's session object (id, open, differential), and what the run's end adds to it
        summary["summary"]["session"] = {**sessions.brief(), "folder": s["folder"], "state": s["state"],
                                         "reason": s["reason"], "resumed": sessions.resumed is not None,
                                         "white_total": s["differential"]["white_total"],
                                         "cells": s["cells_total"], "reviewed": s["reviewed"], "disk": s["disk"],
                                         **({"pictures_not_kept": sessions.pictures_not_kept}
                                            if sessions.pictures_not_kept else {}),
                                         **({"cells_not_recorded": sessions.not_recorded}
                                            if sessions.not_recorded else {}),
                                         **({"went_on_from": chain} if (chain := sessions.went_on_from()) else {})}
    emit(summary)
    if summary["summary"].get("warning"):
        warn(summary["summary"]["warning"])
    diff = summary["summary"].get("differential") or {}
    if sessions is None and cfg.count and not diff.get("done"):  # (a session's count: said below)
        how = _HOW_IT_ENDED.get(summary["summary"].get("stopped"), "ended")
        warn(f"{summary['summary']['source']} {how} at {diff.get('white_total', 0)} of --count {cfg.count} white "
             "cells: the differential is of those"
             + (f" (--report {cfg.report} says so)" if cfg.report else ""))
    if sessions is not None and summary["summary"]["session"]["state"] == "closed":
        print(f"session {s['id']} closed ({s['reason']}): report {s['folder']}/report.html", file=sys.stderr)
    chain = summary["summary"]["session"].get("went_on_from") if sessions is not None else None
    if chain:  # an open-ended count past MAX_CELLS: its cells are in several sessions, each with its report
        from .session import MAX_CELLS
        print(f"session {s['id']} went on from {len(chain)} earlier session{'s' if len(chain) > 1 else ''} closed at "
              f"{MAX_CELLS} cells each (their reports: {cfg.sessions}/<id>/report.html; the newest: {chain[0]}): "
              "the count so far is spread over them", file=sys.stderr)
    skipped = summary["summary"].get("already_counted", 0)
    if skipped:
        print(f"{skipped} image{'s' if skipped > 1 else ''} counted into session {s['id']} by an earlier run: skipped",
              file=sys.stderr)
    if sessions is not None and summary["summary"]["session"]["state"] == "open" and not live:
        how = _HOW_IT_ENDED.get(summary["summary"].get("stopped"), "ended")
        if skipped and not summary["summary"]["frames"]:
            how, again = "held nothing new", "other fields of this slide add to it with --add-to-session"
        elif not _read_again_counts_twice(cfg, live):
            again = "the same command goes on where it stopped (images counted already are skipped)"
        else:
            again = "other fields of this slide add to it with --add-to-session"
        warn(f"{summary['summary']['source']} {how} with session {s['id']} still open: {again}; --new-session "
             "closes it and starts another")
    if sessions is not None and not live and s["cells_total"]:  # with --http too: its lab page ended with the run
        q = shlex.quote(str(cfg.sessions))  # pasted back into a shell
        print(f"review its cells: celledge review {q}  (then celledge export {q} --out DIR)"
              + ("; the lab page and /review ended with the run" if cfg.http else ""), file=sys.stderr)
    if summary["summary"]["frames"] == 0 and summary["summary"]["unreadable"] and not skipped:  # else: read before
        raise UserError(f"none of the {summary['summary']['unreadable']} images of {summary['summary']['source']} "
                        "could be read (see the lines above)")
    got_none = (summary["summary"]["frames"] == 0 and summary["summary"]["stopped"] == "end of stream" and not live
                and not skipped and not summary["summary"].get("copies"))
    if got_none:  # a video with no frame, or none of a size we read: not a run that found nothing
        raise UserError(summary["summary"].get("source_error") or f"{summary['summary']['source']} holds no frames")


def _report_replaces_only_a_report(folder: str) -> None:
    """--report DIR writes differential.json, .csv and .txt there: files of those names that are not an earlier
    report (a user's own notes, a session's report) were replaced without a word."""
    from .watch import REPORT_FILES, is_report

    held = [n for n in REPORT_FILES if (Path(folder) / n).exists()]
    if held and not is_report(folder):
        raise UserError(f"--report {folder} holds {', '.join(held)}, not an earlier report of celledge watch: the "
                        "report would replace them; give another folder, or move them first")


def _not_inside(path: str, flag: str, report: str | None, sessions: str | None) -> None:
    """Refuse an output file that is one of the report's files or inside a session's folder, which the same run
    writes: ``--out rep/differential.json`` with ``--report rep`` lost every line and left the report half JSON,
    half lines. A file beside them (``/var/lib/scopelite/frames.jsonl``) is fine."""
    from .watch import REPORT_FILES

    p = Path(path).resolve()
    rep = Path(report).resolve() if report else None
    if rep is not None and (p == rep or p.parent == rep and p.name.lower() in REPORT_FILES):
        raise UserError(f"{flag} {path} is --report {report} or a file it writes: the report would replace the "
                        "lines, or the lines damage it; give another file name")
    root = Path(sessions).resolve() if sessions else None
    if root is not None and (p == root or p.parent != root and p.is_relative_to(root)):
        raise UserError(f"{flag} {path} is inside a folder of --sessions {sessions}, which this run writes: its "
                        f"files would replace the lines, or the lines damage them; give a file outside it")


def _site(path: str | None, clf):
    """``--site FILE``: the checked site calibration (None without one); a bad file is one Error line per
    mistake (``site.SiteError``)."""
    if not path:
        return None
    from .bundle import same_model
    from .site import load

    site = load(path, input_px=clf.input_spec.height)
    made_for, now = site.record["model"], _model_record(clf)
    # an adapted model on the first model's site file (an Edge TPU build of the same model is the same model)
    if made_for.get("sha256") and now is not None and not same_model(made_for, now):
        warn(f"{path} was calibrated with {made_for.get('name')} (sha256 {made_for['sha256'][:12]}), not this "
             f"model (sha256 {now['sha256'][:12]}): its scale and light are the microscope's and still hold, its "
             "stain distance and advice were that model's; calibrate again with this model to see its own")
    return site


_HOW_IT_ENDED = {"stopped by signal": "was interrupted", "max frames": "stopped at --max-frames"}  # else "ended"


def _read_again_counts_twice(cfg, live: bool) -> bool:
    """Whether this source, read again from its start into the session it left open, would count its cells twice: a
    video file (a folder's images are told apart and skipped), and a folder of tiles read with --track (an image with
    no cell counted in it is read again by a tracker that has forgotten the tiles before it, and the cells it shares
    with them are new to it: 98 -> 138). A camera or stream shows new fields."""
    from .sources import is_still

    return not live and (not is_still(cfg.source) or bool(cfg.track) and Path(cfg.source).is_dir())


def _sessions(cfg, clf, live: bool):
    """``--sessions``: the sessions folder (resumed or new) and the run's config, whose count the session
    now keeps (a session closes at --count; a daemon with --http goes on to the next one). The sessions
    record the scale field mode cuts ``clf``'s cells at (``FieldConfig.cut_scale``); ``live``: the source is a
    camera or stream."""
    if not cfg.sessions:
        return None, cfg
    from .session import Sessions
    from .sources import input_of, shown
    from .watch import field_config

    source = str(Path(cfg.source).resolve()) if _read_again_counts_twice(cfg, live) else None
    given = shown(cfg.source) if live else input_of(cfg.source)  # a stream's password stays out of state.json
    sessions = Sessions(cfg.sessions, clf.labels, target=cfg.count, min_score=cfg.min_score, wbc_count=cfg.wbc,
                        new=cfg.new_session, one_shot=not cfg.http, rbc_fraction=field_config(cfg, clf).cut_scale(),
                        source=source, hold=True, given=given)
    for d in sessions.damaged:
        warn(f"{d}/state.json cannot be read: that session is left as it is (not resumed, not counted into)")
    if sessions.resumed and sessions.current.damaged:
        warn(_damaged_lines(sessions.current.id, sessions.current.damaged))
    if sessions.closed_at_start is not None:
        old = sessions.closed_at_start
        print(f"session {old.id} closed ({old.state['reason']}): report {old.folder / 'report.html'}", file=sys.stderr)
    other = sessions.current.elsewhere(given) if sessions.resumed and not live else None
    if other and not cfg.add_to_session:
        sessions.release()
        n = len(sessions.current.cells)
        raise UserError(f"session {sessions.current.id} is open with {n} cell{'' if n == 1 else 's'} counted from "
                        f"{other}, not from {shown(cfg.source)}: another slide? add --new-session (closes it, its report "
                        "stays); more fields of the same slide? add --add-to-session")
    if not sessions.resumed and not live and not cfg.new_session:
        again = sessions.counted_before()
        if again is not None:
            warn(f"{shown(cfg.source)} was counted into session {again.id} ({again.state.get('reason') or 'closed'}): "
                 f"session {sessions.current.id} counts its cells again (a second count of that slide)")
    if sessions.resumed and cfg.count is not None and cfg.count != sessions.current.state.get("target"):
        have, was = sessions.current.differential().white_total, sessions.current.state.get("target")
        if cfg.count <= have:
            sessions.release()
            raise UserError(f"session {sessions.current.id} is open with {have} white cells counted: --count "
                            f"{cfg.count} is reached already; give a larger --count to go on counting into it, or "
                            "--new-session for another slide")
        sessions.current.retarget(cfg.count)
        print(f"session {sessions.current.id}: counting to {cfg.count} white cells (--count; it was "
              f"{f'counting to {was}' if was else 'open-ended'})", file=sys.stderr)
    now = _model_record(clf)  # recorded once the run is sure to count into the session (not before a refusal)
    before = sessions.use_model(now)
    if before is not None:  # it resumed silently: one differential from two models, and nothing said which
        n = len(sessions.current.cells)
        warn(f"session {sessions.current.id} counted its {n} cell{'' if n == 1 else 's'} so far with "
             f"{before.get('file')} (sha256 {str(before.get('sha256'))[:12]}); it goes on with {now['file']} "
             f"(sha256 {now['sha256'][:12]}): its differential mixes the two models' "
             "calls (state.json 'models' says after how many cells); add --new-session to count afresh")
    state = "resumed" if sessions.resumed else "started"
    print(f"session {sessions.current.id} {state} in {sessions.current.folder}"
          + (f" (adding {shown(cfg.source)} to the cells from {other})" if other else ""), file=sys.stderr)
    return sessions, cfg.replace(count=None)


def _damaged_lines(sid: str, d: list[str]) -> str:
    return (f"session {sid}: {len(d)} line{'s' if len(d) > 1 else ''} of its logs could not be read and "
            f"{'were' if len(d) > 1 else 'was'} skipped ({', '.join(d[:3])}{', ...' if len(d) > 3 else ''})")


def _http_token(ctx, host: str) -> str | None:
    """--http-token, or a new one when the server is reachable beyond this machine (None on loopback)."""
    import secrets

    from .httpd import is_loopback

    token = ctx.params["http_token"]
    if token:
        if not (token.isascii() and token.isprintable()) or token != token.strip():
            # an HTTP header is read as Latin-1: a client's UTF-8 'ä' never matched, even the exact token refused
            raise UserError("--http-token (or SCOPELITE_HTTP_TOKEN) must be ASCII letters, digits and punctuation, "
                            "no spaces at its ends: a browser or curl sends other characters so that they never "
                            "match; e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(16))'")
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(16)


def _not_a_dataset(sessions, source: str | None = None) -> None:
    """Refuse a sessions folder in (or at) a folder celledge export wrote or the folder of images watched (or a
    folder of class folders of images: a training set): its session folders would be read as classes by
    celltrain fit, and its crops as fields by the next run (UserError)."""
    from .session_export import RECORD, written_by_export  # noqa: PLC0415
    from .sources import holds_class_folders  # noqa: PLC0415

    _not_in_source(sessions, "--sessions", source, "each session's crops", "sessions/")
    here = Path(sessions).resolve()
    for d in (here, *here.parents)[:3]:  # a session's own folder, or one in it: a session nested there is unseen
        if _is_session(d):
            raise UserError(f"--sessions {sessions} is {'in ' if d != here else ''}one session's folder ({d}): a "
                            f"session started there would be seen by neither celledge review nor export; give the "
                            f"folder that holds the sessions, --sessions {d.parent}")
    if here.is_dir() and not any((d / "state.json").exists() for d in here.iterdir() if d.is_dir()):
        if holds_class_folders(here):  # none of its folders a session's
            raise UserError(f"--sessions {sessions} holds class folders of images (a training set?): its session "
                            "folders would be read as classes by celltrain fit; give a folder of its own, e.g. "
                            "--sessions sessions/")
    for d in (here, *here.parents)[:3]:  # the folder, or a class folder or one below it
        if written_by_export(d):
            raise UserError(f"--sessions {sessions} is {'in ' if d != here else ''}the cells celledge export wrote "
                            f"({d / RECORD}): its session folders would be read as classes by celltrain fit; "
                            "give a folder of its own, e.g. --sessions sessions/")


def _is_session(folder: Path) -> bool:
    """Whether ``folder`` is one session's folder (its state.json reads as a session's)."""
    from .session import read_state  # noqa: PLC0415

    try:
        return (folder / "state.json").is_file() and read_state(folder).get("id") == folder.name
    except (OSError, ValueError):
        return False


def _not_in_source(folder, option: str, source: str | None, what: str, example: str) -> None:
    """Refuse an output folder at or in the folder of images watched: ``what`` it writes would be read as fields
    by the next run (UserError)."""
    if source and Path(source).is_dir():
        here, src = Path(folder).resolve(), Path(source).resolve()
        hidden = src in here.parents and any(part.startswith(".") for part in here.relative_to(src).parts)
        if (here == src or src in here.parents) and not hidden:  # a hidden folder is never read as fields
            raise UserError(f"{option} {folder} is {'in ' if here != src else ''}the folder of images watched "
                            f"({source}): {what} would be read as fields by the next run; give a folder of its own, "
                            f"e.g. {option} {example}")


def _model_record(clf) -> dict | None:
    """What a session or site file records of the model (``bundle.model_record``; None: no sidecar)."""
    from .bundle import model_record

    return model_record(getattr(clf, "sidecar", None))


def _check_save_classes(cfg, labels) -> None:
    unknown = set(cfg.save_classes) - set(labels)
    if unknown:
        raise UserError(f"--save-classes {', '.join(sorted(unknown))}: not labels of this model "
                        f"({', '.join(labels)})")


def _on_frame(status, cfg, labels, unreadable=lambda: 0, savers: list | None = None):
    """Chain the per-frame consumers: HTTP status and frame saving (``unreadable``: files skipped so far; ``savers``
    receives the frame saver, for the run's summary)."""
    hooks = [status.update] if status else []
    if cfg.save_dir:
        from .saver import FrameSaver

        _check_save_classes(cfg, labels)
        saver = FrameSaver(cfg.save_dir, set(cfg.save_classes), cfg.save_below, int(cfg.save_cap_mb * 2**20))
        hooks.append(saver)
        if savers is not None:
            savers.append(saver)
    if not hooks:
        return None
    return lambda frame, rec, counters: [h(frame, rec, {**counters, "unreadable": unreadable()}) for h in hooks]


@main.command()
@click.argument("source", type=NonEmptyPath())
@click.option("--out", required=True, type=NonEmptyPath(dir_okay=False), metavar="FILE",
              help="The site calibration file to write (JSON; written whole or not at all).")
@click.option("--frames", type=click.IntRange(min=1), default=30, show_default=True,
              help="How many frames to measure: a folder's images spread evenly over it; a video's or a "
                   "camera's first frames (move the stage while it runs).")
@click.option("--model", default=None, type=MODEL,
              help="The model the file is for (its input size, scale and training stain). Default: the "
                   "packaged one.")
@click.option("--scale/--no-scale", default=False, show_default=True,
              help="Whether --site crops at the site scale instead of each frame's red-cell ruler (recorded either "
                   "way). Measured: on PBC fields under heavy debris it was right on 154 of 160 fields instead of "
                   "127, but it cost 2 of 120 clean PBC fields; use it for one objective and camera whose slides "
                   "carry specks (docs/cross-lab.md).")
@click.option("--colour/--no-colour", default=False, show_default=True,
              help="Whether --site white-balances what it classifies to the training background (recorded either "
                   "way). Off: on another lab it lowered field-mode accuracy (63.5 to 55.2 %, docs/cross-lab.md).")
@click.option("--size", default=None, callback=_size, help="Ask the camera for WIDTHxHEIGHT, e.g. 640x480.")
@one_line_errors
def calibrate(source, out, frames, model, scale, colour, size):
    """Measure a microscope once, from a few unlabelled frames, for --site FILE in watch and classify.

    SOURCE is a folder of images, one image, a video file, /dev/videoN, a camera
    index or a stream URL, as for watch. Reads the red-cell diameter (the magnification: red
    cells are about 7.5 um across; the median over the frames is a ruler that one
    frame's specks or crowding cannot fool), the background colour (white
    balance) and the stain distance to the model's training data, and says
    whether to adapt the model to this lab. Nothing here depends on which cells
    the frames show. Progress goes to stderr, a summary to stdout.

    By default --site changes no crop and no colour (both were measured and
    neither helped on clean slides of another lab): it records the site and its
    stain distance; --scale and --colour turn the fixed scale and the white
    balance on. Calibrate each objective and camera apart: frames at two
    magnifications are reported.

    \b
    Example:
      celledge calibrate smear_fields/ --out site.json
      celledge calibrate /dev/video0 --frames 20 --scale --out /etc/scopelite/site.json
      celledge watch /dev/video0 --mode field --site /etc/scopelite/site.json
    """
    from . import ood
    from . import site as site_lib
    from .bundle import write_json_atomic
    from .field import model_rbc_px
    from .outputs import check_writable
    from .packaged import default_model
    from .precious import has_schema, not_precious, only_replaces
    from .site import SCHEMA as SITE_SCHEMA
    from .sources import SourceError, check_frame_size, images_given, is_live, is_still, open_source, read_image_rgb

    if out == "-":
        raise UserError("--out -: calibrate writes a site file for --site to read; give a file name, e.g. site.json")
    check_writable(out, "--out", is_dir=False, replaced=True)
    not_precious(out, "--out", "the site file", ending=".json", source=source)
    only_replaces(out, "--out", f"a site file (a JSON file of schema {SITE_SCHEMA})", has_schema(SITE_SCHEMA))
    if size and not is_live(source):
        warn(f"--size asks a camera for its frame size; the frames of {source} are read as they are")
    model = model or str(default_model())
    clf = _classifier(model, None, tta=1)  # calibrate reads frames, not cells' classes: one view
    spec = clf.input_spec

    skipped = []

    def folder_frames(paths):
        for p in paths:
            try:  # as watch reads a folder: a strip under 16 px holds no red cell (and crashed the resize)
                yield check_frame_size(read_image_rgb(p), str(p))
            except (SourceError, OSError) as e:
                skipped.append(p)
                warn(f"skipped {p}: {e}")

    def stream_frames():
        src = open_source(source, size=size, warn=warn)
        try:
            for _ in range(frames):
                frame = src.read()
                if frame is None:
                    break
                yield frame
        finally:
            src.close()

    if is_still(source):  # a folder, or one image file
        paths = images_given([source], warn)
        picked = site_lib.pick_evenly(paths, frames)
        it, total = folder_frames(picked), len(picked)
    else:
        it, total = stream_frames(), frames

    def progress(i, m):
        cells = f"{m.red_cells} cell{'' if m.red_cells == 1 else 's'}"
        ruler = "too few red cells" if m.rbc_px is None else f"red cell {m.rbc_px:.1f} px ({cells})"
        dist = "" if m.distance is None else f", stain distance {m.distance:.2f}"
        if m.no_colour:  # read, then left out of the site's figures (as calibrate does): said on its line
            dist += ", no colour: left out"
        elif m.overexposed:
            dist += f", overexposed ({100 * m.overexposed:.0f} % pure white): left out"
        # the frame's place among the files picked (skipped ones count)
        print(f"frame {i + 1 + len(skipped)}/{total}: {ruler}{dist}", file=sys.stderr, flush=True)

    reference = ood.reference_of(getattr(clf, "sidecar", None))
    record = site_lib.calibrate(it, input_px=spec.height, model_rbc_px=model_rbc_px(spec),
                                model_name=Path(model).name, reference=reference,
                                scale=scale, colour=colour, source=str(source), progress=progress,
                                model_id=_model_record(clf))
    write_json_atomic(out, record)
    for line in site_lib.summary_lines(record, out):
        click.echo(line)


@main.command()
@click.argument("model", type=MODEL, required=False)
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object instead: the whole sidecar, the op counts, the interpreter and each runtime's "
                   "verdict here (for scripts).")
@one_line_errors
def info(model, as_json):
    """What a model is and whether it runs here: its classes, input, accuracy and gate (from its sidecar), its
    op counts, and which runtimes work on this machine (MODEL: default the packaged one, as the other commands).

    \b
    Example:
      celledge info
      celledge info runs/mine/int8/model.tflite
      celledge info --json | jq .sidecar.metrics.clean.per_class
    """
    from . import runtime
    from .bundle import BundleError, describe, load_sidecar
    from .classifier import LiteRTClassifier
    from .packaged import default_model

    model = model or str(default_model())

    sc = load_sidecar(model)
    report: dict = {"model": str(Path(model).resolve()), "sidecar": sc.to_json()}
    mismatch = None
    if sc.format == "tflite":
        report["ops"] = runtime.op_counts(model)
        report["interpreter"] = runtime.runtime_name()
        report["runtimes"] = {}
        for rt in sc.runtimes:
            try:
                LiteRTClassifier(model, device="" if rt == "edgetpu" else None, sidecar=sc)
                report["runtimes"][rt] = "works here"
            except runtime.RuntimeUnavailable as e:
                report["runtimes"][rt] = f"not here ({e})"
            except BundleError as e:  # the model and its sidecar disagree: no runtime can use it
                report["runtimes"][rt] = f"refused ({e})"
                mismatch = mismatch or e
    if as_json:  # a hand-edited sidecar's NaN printed as NaN, which no JSON reader takes: null
        click.echo(json.dumps(_json_safe(report), indent=2, allow_nan=False))
    else:
        click.echo(f"model: {report['model']}")
        for line in describe(sc):
            click.echo(line)
        if "ops" in report:
            click.echo("ops: " + ", ".join(f"{k} {v}" for k, v in report["ops"].items()))
            click.echo(f"interpreter: {report['interpreter']}")
            for rt, verdict in report["runtimes"].items():
                click.echo(f"{rt}: {verdict}")
        click.echo("the whole sidecar: celledge info --json")
    if mismatch is not None:
        raise UserError(f"the sidecar does not match the model: {mismatch}")


def _json_safe(obj):
    """``obj`` with every NaN or infinite float (JSON has neither) as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


@main.command()
@click.argument("sessions", type=NonEmptyPath(exists=True, file_okay=False))
@click.option("--session", "sid", default=None, metavar="ID", help="Which session (its folder's name; default: "
              "the latest started on the device that counted it).")
@click.option("--http", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Where to serve the review page.")
@click.option("--http-token", default=None, envvar="SCOPELITE_HTTP_TOKEN", metavar="TOKEN",
              help="Labels need 'Authorization: Bearer TOKEN' (default: none on loopback; made up and printed "
                   "once when --http binds beyond it). Also read from $SCOPELITE_HTTP_TOKEN.")
@one_line_errors
def review(sessions, sid, http, http_token):
    """Review a session's cells in the browser, with no camera or model: the /review page of `watch --http`.

    SESSIONS is a sessions folder (`celledge watch --sessions DIR`) or one session's folder. For sessions
    counted from a folder or a video file, whose run ended with the file, and for any session closed
    earlier (an open one can be reviewed too, and exported; the next watch run on other fields still adds
    to it). Each label is kept at once and the session's report rewritten. Refused while a watch counts
    into that session: review it on that daemon's own /review page. Ctrl-C ends it; then `celledge export`.

    \b
    Example:
      celledge watch scan.avi --mode field --count 100 --sessions sessions/
      celledge review sessions/              # open http://127.0.0.1:8080/review
      celledge export sessions/ --out my_cells/
    """
    from . import shutdown
    from .httpd import Status, exposure_warning, parse_address, serve, url
    from .session import Sessions

    host, port = parse_address(http)
    current = Sessions.reviewing(sessions, sid)
    for d in current.damaged:
        warn(f"{d}/state.json cannot be read: that session is not served (this is {current.current.id})")
    if current.current.damaged:  # served without its damaged lines, as watch and export say (a hunt of session 37)
        warn(_damaged_lines(current.current.id, current.current.damaged))
    s = current.summary(cells=False)
    stop = threading.Event()
    # SIGHUP too (the terminal or ssh session closed, systemctl reload): it ended the review without its summary
    hangup = () if shutdown.SIGHUP is None else (shutdown.SIGHUP,)
    # labels in flight, and a large session's report after each, finish first: a forced exit left the report behind
    click.get_current_context().call_on_close(shutdown.install(stop, signals=(signal.SIGINT, signal.SIGTERM) + hangup,
                                                               grace=REVIEW_GRACE_S,
                                                               busy="a label and its report being written"))
    token = _http_token(click.get_current_context(), host)
    server = serve(Status(current.labels, session=current, review_only=True), host, port, token=token)
    if exposure_warning(host):
        warn(exposure_warning(host))
    link = f"{url(server)}review" + (f"?token={token}" if token and not http_token else "")
    print(f"session {s['id']} ({s['state']}; {s['cells_total']} cells, {s['reviewed']} reviewed): review at {link}"
          "  (Ctrl-C ends)", file=sys.stderr)
    try:
        stop.wait()
    finally:
        server.shutdown()
    s = current.summary(cells=False)
    print(f"session {s['id']}: {s['reviewed']} of {s['cells_total']} cells reviewed; report {s['folder']}/report.html",
          file=sys.stderr)


@main.command("export")
@click.argument("sessions", nargs=-1, required=True, type=NonEmptyPath(exists=True, file_okay=False))
@click.option("--out", required=True, type=NonEmptyPath(file_okay=False), help="The dataset folder (created; added to).")
@click.option("--self-train", "self_train", type=MODEL, default=None,
              metavar="MODEL", help="Your adapted int8 model (fitted on these reviewed cells): also export the "
              "unreviewed cells it scores 0.9 or more, under its class, at most twice your largest class's "
              "reviewed count per class (only classes you reviewed receive its guesses); then fit again.")
@one_line_errors
def export(sessions, out, self_train):
    """Export the cells a person reviewed as a class-folder dataset for `celltrain fit --data`.

    SESSIONS are session folders or folders of sessions (`celledge watch --sessions DIR`). Each reviewed
    cell with a class goes to OUT/<class>/<session>_<cell>.png; uncertain, not-a-cell and unreviewed
    cells stay out (with --self-train, the unreviewed cells the adapted model is sure of go too: one
    round of self-training on the cells your device has already seen; export.json marks them "pseudo").
    Exporting more sessions into OUT adds to it.

    \b
    Example:
      celledge export sessions/ --out my_cells/
      celltrain fit --preset few-shot --data my_cells/ --out runs/mine
      cellcompress runs/mine/model.keras --int8 --out runs/mine/int8
      celledge export sessions/ --out my_cells/ --self-train runs/mine/int8/model.tflite
      celltrain fit --preset few-shot --data my_cells/ --out runs/mine2
    """
    from .outputs import check_writable
    from .session_export import RECORD, export_reviewed, summary_line, written_by_export

    check_writable(out, "--out")
    if (Path(out) / RECORD).exists() and not written_by_export(out):  # another program's file: replaced, exit 0
        raise UserError(f"--out {out} holds an {RECORD} that celledge export did not write: it would be replaced; "
                        "give another folder, or move that file away")
    target = Path(out).resolve()
    for folder in sessions:  # class folders dropped among the sessions or their crops would be read as sessions
        home = Path(folder).resolve()
        if target == home or home in target.parents or target in home.parents:
            raise UserError(f"--out {out} is inside the sessions folder {folder} (or holds it): give a folder of "
                            "its own, e.g. --out my_cells/")
    model = None
    if self_train is not None:
        from .bundle import load_sidecar
        from .classifier import make_classifier
        from .packaged import is_packaged

        sidecar = load_sidecar(self_train)
        if is_packaged(sidecar):  # a walk-through gave it: its eosinophils went into neutrophil/ as labels
            raise UserError(f"--self-train {self_train} is the packaged PBC model, not one fitted on your reviewed "
                            "cells: its guesses would become your training labels. Fine-tune it on them first "
                            f"(celledge export SESSIONS --out {shlex.quote(str(out))} without --self-train, celltrain "
                            f"fit --preset few-shot --data {shlex.quote(str(out))} --out runs/mine, cellcompress "
                            "runs/mine/model.keras --int8 --out runs/mine/int8) and give runs/mine/int8/model.tflite")
        if sidecar.runtimes == ("edgetpu",):  # an Edge TPU-only model: its CPU twin is beside it
            cpu = sidecar.provenance.cpu_model
            raise UserError(f"--self-train needs the CPU int8 model, not the Edge TPU one ({self_train})"
                            + (f": use {Path(self_train).with_name(cpu)}" if cpu else ""))
        model = make_classifier(self_train, device="cpu")
    result = export_reviewed(sessions, out, model)
    for sid, lines in result["damaged_lines"].items():
        warn(_damaged_lines(sid, lines))
    if not result["cells"]:
        sk = result["skipped"]
        if sk["no crop"] + sk["unreadable crop"]:
            why = ([f"{sk['no crop']} reviewed without a picture (not kept: counted while the sessions disk was full, "
                    "or never seen whole)"] if sk["no crop"] else []) + (
                [f"{sk['unreadable crop']} whose picture in its session's crops/ folder is missing or damaged"]
                if sk["unreadable crop"] else [])
            raise UserError(f"no reviewed cell could be exported: {'; '.join(why)}; nothing written")
        raise UserError(f"no reviewed cells to export ({sk['unreviewed']} unreviewed, {sk['uncertain or not a cell']} "
                        f"uncertain or not a cell): review them first with celledge review {shlex.quote(str(sessions[0]))}"
                        " (or the /review page of celledge watch --http); nothing written")
    click.echo(summary_line(result, out))
    if self_train is not None and not result["self_trained"]:
        warn(f"--self-train added no cells: {self_train} scored no unreviewed cell of the classes you reviewed "
             f"({', '.join(result['classes'])}) 0.9 or more; only reviewed classes receive its guesses (review more "
             "cells, or fit on the reviewed ones alone)")
    if len([p for p in Path(out).iterdir() if p.is_dir() and not p.name.startswith(".")]) < 2:
        warn(f"{out} holds one class only: celltrain fit needs at least two (export more sessions into it)")


if __name__ == "__main__":  # pragma: no cover
    main()
