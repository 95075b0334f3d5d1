"""``cellcompress``: quantise a trained model for the Pi / Coral, measure it, and gate it. Thin over the library."""
from __future__ import annotations

import click

from scopelite.edge._quiet import verbose_option
from scopelite.edge.errors import OneLineGroup, one_line_errors

OUT_FREE_MB = 100  # a handful of .tflite bundles, reports and plots


def _check_max_drop(ctx, param, value):
    clean, corrupted = value
    if not (clean >= 0 and corrupted >= 0):  # also refuses nan
        raise click.BadParameter(f"{clean:g} {corrupted:g}: the largest accuracy losses must be >= 0 points, "
                                 "e.g. --max-drop 1 2")
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
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the bundles and report.")
@click.option("--int8", is_flag=True, help="Full-integer post-training quantisation (weights and activations).")
@click.option("--qat", is_flag=True, help="Also quantisation-aware fine-tuning (TFMOT), then full-integer int8.")
@click.option("--float16", is_flag=True, help="Also float16 weights (float compute).")
@click.option("--dynamic-range", is_flag=True, help="Also int8 weights with float activations.")
@click.option("--edgetpu", is_flag=True, help="Compile the approved int8 model with edgetpu_compiler (and report "
              "Edge TPU compatibility offline).")
@click.option("--compiler", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Path to edgetpu_compiler (default: from PATH).")
@click.option("--io-dtype", type=click.Choice(["uint8", "int8"]), default="uint8", help="int8 input/output type.")
@click.option("--representative", type=click.IntRange(min=8), default=256,
              help="Calibration images, drawn stratified from the training split.")
@click.option("--qat-epochs", type=click.IntRange(min=1), default=2)
@click.option("--qat-ranges", type=click.Choice(["learned", "calibrated", "both"]), default="learned",
              help="QAT activation ranges: TFMOT's learned ones (qat_int8), recalibrated on the representative set "
                   "like post-training quantisation (qat_calibrated_int8), or both; the gate picks among all int8.")
@click.option("--qat-lr", "qat_learning_rate", type=click.FloatRange(min=0, min_open=True), default=1e-5)
@click.option("--max-drop", nargs=2, type=float, default=(1.0, 2.0), metavar="CLEAN CORRUPTED",
              callback=_check_max_drop,
              help="Largest accuracy loss (points) against the float model an int8 model may have.")
@click.option("--data", default=None, help="Dataset path if it moved since training (same images).")
@click.option("--seed", type=int, default=0)
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
      cellcompress runs/pbc/model.keras --int8 --qat --edgetpu --out runs/pbc/int8
    """
    from scopelite.edge.outputs import check_writable

    check_writable(out, "--out", min_free_mb=OUT_FREE_MB)  # before TensorFlow is imported
    from .pipeline import CompressConfig, compress

    compress(CompressConfig(model=model, out=out, max_drop_clean=max_drop[0], max_drop_corrupted=max_drop[1],
                            qat_learning_rate=qat_learning_rate, **opts))


@main.command(context_settings={"show_default": True})
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for bench.{csv,json,md,png}.")
@click.option("--limit", type=click.IntRange(min=0), default=400, help="Test images (stratified; 0: all).")
@click.option("--data", default=None, help="Dataset path if it moved since training (same images).")
@click.option("--seed", type=int, default=0)
@click.option("--tta", default="1", metavar="N[,N...]",
              help="Also score each model as the mean over N flipped/rotated views (celledge --tta), e.g. 1,4.")
@one_line_errors
def bench(models, out, limit, data, seed, tta):
    """Accuracy of MODELS under 16 corruptions x 5 severities, on their run's test split.

    Any mix of .keras and .tflite bundles (float, int8, QAT, Edge TPU). The mean
    corruption error (mCE) is relative to the first model: put the float model first.

    \b
    Example:
      cellcompress bench runs/pbc/model.keras runs/pbc/int8/model_int8.tflite runs/pbc/int8/model_qat_int8.tflite --out bench/
      cellcompress bench runs/pbc/int8/model.tflite --tta 1,4,8 --out bench-tta/
    """
    from scopelite.edge.outputs import check_writable

    check_writable(out, "--out")
    from .bench import bench as run_bench

    try:
        counts = [int(v) for v in tta.split(",")]
    except ValueError:
        raise click.BadParameter(f"{tta!r} is not a comma-separated list of view counts, e.g. 1,4",
                                 param_hint="--tta") from None
    run_bench(list(models), out, limit=limit, seed=seed, data=data, tta=counts)


if __name__ == "__main__":  # pragma: no cover
    main()
