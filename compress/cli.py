"""``cellcompress``: quantise a trained model for the Pi / Coral and check it. Thin over the library."""
from __future__ import annotations

import click

from scopelite.edge.errors import UserError, one_line_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                                 "show_default": True})
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for model.tflite + model.json.")
@click.option("--int8", is_flag=True, help="Full-integer post-training quantisation (weights and activations).")
@click.option("--io-dtype", type=click.Choice(["uint8", "int8"]), default="uint8", help="Input/output tensor type.")
@click.option("--representative", type=click.IntRange(min=8), default=256,
              help="Calibration images, drawn stratified from the training split.")
@click.option("--data", default=None, help="Dataset path if it moved since training (same images).")
@click.option("--seed", type=int, default=0)
@one_line_errors
def main(model, out, int8, io_dtype, representative, data, seed):
    """Compress MODEL (a run's model.keras) into an int8 TFLite bundle for the device.

    Converts with a fixed batch of 1 and uint8 input (raw pixels), then measures
    float and int8 accuracy on the run's held-out test split, latency and size,
    and writes them into the sidecar.

    \b
    Example:
      cellcompress runs/demo/model.keras --int8 --out runs/demo/int8
    """
    from .pipeline import CompressConfig, compress

    if not int8:
        raise UserError("choose an output: --int8 (full-integer TFLite)")
    compress(CompressConfig(model=model, out=out, int8=int8, io_dtype=io_dtype,
                            representative=representative, data=data, seed=seed))


if __name__ == "__main__":  # pragma: no cover
    main()
