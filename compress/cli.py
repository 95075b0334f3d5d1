"""``cellcompress``: quantise a trained model for the Pi / Coral, measure it, and gate it. Thin over the library."""
from __future__ import annotations

import shlex

import click

from scopelite.edge._quiet import verbose_option
from scopelite.edge.errors import SEED, NonEmptyPath, Number, OneLineGroup, UserError, one_line_errors

OUT_FREE_MB = 100  # a handful of .tflite bundles, reports and plots


def _check_max_drop(ctx, param, value):
    clean, corrupted = value
    if not (0 <= clean <= 100 and 0 <= corrupted <= 100):  # also refuses nan and inf (written as Infinity: not JSON)
        raise click.BadParameter(f"{clean:g} {corrupted:g}: the largest accuracy losses must be 0 to 100 points, "
                                 "e.g. --max-drop 1 2 (100 100 accepts any model)")
    return value


class _DefaultToConvert(OneLineGroup):
    """``cellcompress MODEL ...`` means ``cellcompress convert MODEL ...``."""

    def parse_args(self, ctx, args):
        lead = 1 if args and args[0] == "--verbose" else 0  # the group's own option comes first
        rest = args[lead:]
        if rest and rest[0] not in self.commands and rest[0] not in ("-h", "--help"):
            args = [*args[:lead], "convert", *rest]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultToConvert, context_settings={"help_option_names": ["-h", "--help"],
                                                       "max_content_width": 100})
@verbose_option
def main() -> None:
    """Compress trained models for the device, and benchmark their robustness.

    \b
    Examples:
      cellcompress runs/pbc/model.keras --int8 --qat --edgetpu --out runs/pbc/int8
      cellcompress bench runs/pbc/model.keras runs/pbc/int8/model_*.tflite --out bench/
    """


@main.command(context_settings={"show_default": True})
@click.argument("model", type=NonEmptyPath(exists=True))
@click.option("--out", required=True, type=NonEmptyPath(file_okay=False),
              help="Folder for the bundles and report. A folder used before is updated: the variants, Edge TPU "
                   "build and diagnosis an earlier run left there and this one does not make are removed.")
@click.option("--int8", is_flag=True, help="Full-integer post-training quantisation (weights and activations).")
@click.option("--qat", is_flag=True, help="Also quantisation-aware fine-tuning (TFMOT), then full-integer int8.")
@click.option("--float16", is_flag=True, help="Also float16 weights (float compute).")
@click.option("--dynamic-range", is_flag=True, help="Also int8 weights with float activations.")
@click.option("--edgetpu", is_flag=True, help="Compile the approved int8 model with edgetpu_compiler (and report "
              "Edge TPU compatibility offline).")
@click.option("--compiler", type=NonEmptyPath(exists=True, dir_okay=False), default=None,
              help="Path to edgetpu_compiler (default: from PATH).")
@click.option("--io-dtype", type=click.Choice(["uint8", "int8"]), default="uint8", help="int8 input/output type.")
@click.option("--representative", type=click.IntRange(min=8), default=256,
              help="Calibration images, drawn stratified from the training split.")
@click.option("--qat-epochs", type=click.IntRange(min=1), default=2)
@click.option("--qat-ranges", type=click.Choice(["learned", "calibrated", "both"]), default="learned",
              help="QAT activation ranges: TFMOT's learned ones (qat_int8), recalibrated on the representative set "
                   "like post-training quantisation (qat_calibrated_int8), or both; the gate picks among all int8.")
@click.option("--qat-lr", "qat_learning_rate", type=Number(min=0, min_open=True), default=1e-5)
@click.option("--max-drop", nargs=2, type=float, default=(1.0, 2.0), metavar="CLEAN CORRUPTED",
              callback=_check_max_drop,
              help="Largest accuracy loss (points) against the float model an int8 model may have. On a test split "
                   "too small to measure it (one image worth more points: a few-shot run's 6-13 images), one lost "
                   "image per metric passes with a NOTE; two fail. Under 5 test images (a run of a few labelled "
                   "cells of a few classes) the gate cannot judge: an int8 model that loses no image is approved with "
                   "a NOTE, one that loses any is refused; check it on your own cells and, if it is good, accept it "
                   "with --max-drop 100 100.")
@click.option("--data", default=None, type=NonEmptyPath(), help="Dataset path if it moved since training (same images).")
@click.option("--seed", type=SEED, default=0)
@click.option("--diagnose", is_flag=True,
              help="Also measure where post-training int8 loses: every tensor of the int8 graph against the float "
                   "one, its range and scale, and BatchNorm statistics; writes OUT/int8-diagnosis.{csv,json,png} "
                   "(docs/int8.md).")
@one_line_errors
def convert(model, out, max_drop, qat_learning_rate, **opts):
    """Compress MODEL (a run's model.keras) and approve the best int8 result.

    Converts with a fixed batch of 1 and uint8 input (raw pixels). Every output
    gets a sidecar with accuracy on the run's held-out test split, clean and on
    a corrupted copy, latency, size and op counts. The best int8 model that
    loses at most --max-drop points against the float model is written as
    OUT/model.tflite; if none does, cellcompress exits 3 and approves nothing.

    \b
    Example:
      cellcompress runs/demo/model.keras --int8 --out runs/demo/int8
      cellcompress runs/pbc --int8 --qat --edgetpu --out runs/pbc/int8          # a run folder: its model.keras
      cellcompress runs/demo/model.keras --int8 --diagnose --out runs/demo/int8   # per-tensor int8 error
    """
    from pathlib import Path

    from scopelite.edge.outputs import check_writable

    from scopelite.train.runpath import model_file

    model = str(model_file(model))  # a run folder, as every celltrain command takes ("File 'runs/x' is a directory")
    if not Path(model).is_file():  # (click checked that MODEL exists: only a folder's model.keras can be missing)
        raise UserError(f"{model} not found: give a run folder of celltrain fit, or its model.keras")
    check_writable(out, "--out", min_free_mb=OUT_FREE_MB)  # before TensorFlow is imported
    from .pipeline import CompressConfig, compress

    compress(CompressConfig(model=model, out=out, max_drop_clean=max_drop[0], max_drop_corrupted=max_drop[1],
                            qat_learning_rate=qat_learning_rate, **opts))


@main.command(context_settings={"show_default": True})
@click.argument("models", nargs=-1, required=True, type=NonEmptyPath(exists=True, dir_okay=False))
@click.option("--out", required=True, type=NonEmptyPath(file_okay=False),
              help="Folder for bench.{csv,json,md,png} (crop), native.* (native), protocols.* (both side by side).")
@click.option("--protocol", type=click.Choice(["crop", "native", "both"]), default="crop",
              help="crop: the run's 96 px test crops, sizes in crop pixels; native: whole --fields at the camera's "
                   "resolution, debris sized in µm from the red cells, classified by field mode; both: side by side.")
@click.option("--fields", type=NonEmptyPath(exists=True, file_okay=False), default=None,
              help="For native/both: class folders of whole fields, each centred on a cell of its folder's class.")
@click.option("--limit", type=click.IntRange(min=0), default=400,
              help="Test images, and fields (stratified by class; 0: all).")
@click.option("--data", default=None, type=NonEmptyPath(), help="Dataset path if it moved since training (same images).")
@click.option("--run", default=None, type=NonEmptyPath(exists=True),
              help="The training run (folder or model.keras) whose test split to use, when the models' own run is "
                   "not on this machine (e.g. the shipped model: any run of the same data and seed).")
@click.option("--seed", type=SEED, default=0)
@click.option("--tta", default="1", metavar="N[,N...]",
              help="Also score each model as the mean over N flipped/rotated views (celledge --tta), e.g. 1,4.")
@one_line_errors
def bench(models, out, protocol, fields, limit, data, run, seed, tta):
    """Accuracy of MODELS under 16 corruptions x 5 severities, on their run's test split;
    with --protocol native, under debris, bubbles, blur and pixelation sized in µm on whole fields.

    Any mix of .keras and .tflite bundles (float, int8, QAT, Edge TPU). The mean
    corruption error (mCE) is relative to the first model: put the float model first.
    How the protocols differ: docs/robustness.md.

    \b
    Example:
      cellcompress bench runs/pbc/model.keras runs/pbc/int8/model_int8.tflite runs/pbc/int8/model_qat_int8.tflite --out bench/
      cellcompress bench runs/pbc/int8/model.tflite --tta 1,4,8 --out bench-tta/
      cellcompress bench edge/models/bloodcell_int8.tflite --protocol both --fields ../shared/data/pbc-fields \\
          --run runs/mine --out bench-native/
    """
    from scopelite.edge.outputs import check_writable

    check_writable(out, "--out")
    from .native import bench_protocols

    try:
        counts = [int(v) for v in tta.split(",")]
    except ValueError:
        raise click.BadParameter(f"{tta!r} is not a comma-separated list of view counts, e.g. 1,4",
                                 param_hint="--tta") from None
    if protocol != "crop" and not fields:
        raise click.BadParameter(f"--protocol {protocol} needs --fields DIR (class folders of whole fields, e.g. "
                                 "../shared/data/pbc-fields)", param_hint="--fields")
    from scopelite.train.data import refuse_out_in_data

    if fields:  # its plots would be read as fields of a class next time
        refuse_out_in_data(out, fields, f"--fields {fields}", "give a folder outside it")
    given = [("--protocol", protocol), ("--fields", fields), ("--limit", str(limit)), ("--data", data),
             ("--run", run), ("--seed", str(seed)), ("--tta", tta), ("--out", out)]
    command = shlex.join(["cellcompress", "bench", *models, *(x for kv in given if kv[1] is not None for x in kv)])
    bench_protocols(list(models), out, protocol=protocol, fields=fields, limit=limit, seed=seed, data=data,
                    tta=counts, run=run, command=command)


if __name__ == "__main__":  # pragma: no cover
    main()
