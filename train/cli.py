"""``celltrain``: make data, train and evaluate blood-cell classifiers. Thin over the library."""
from __future__ import annotations

import click

from scopelite.edge.errors import one_line_errors

from .config import FitConfig

_D = FitConfig(out="")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                               "show_default": True})
def main() -> None:
    """Train EfficientNetV2B0 blood-cell classifiers for scopelite.

    \b
    Example:
      celltrain synth demo_data/
      celltrain fit --out runs/demo --epochs 3 --weights none
    """


@main.command()
@click.option("--data", default=None, help="Class-folder dataset (data/<class>/*.jpg). Default: generated synthetic smears.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to create.")
@click.option("--arch", type=click.Choice(["efficientnetv2b0", "tiny"]), default=_D.arch)
@click.option("--weights", default=_D.weights, help="imagenet | none | FILE (.keras from an earlier run).")
@click.option("--epochs", type=click.IntRange(min=1), default=_D.epochs)
@click.option("--image-size", type=click.IntRange(min=16), default=_D.image_size, help="Square input size in pixels.")
@click.option("--batch-size", type=click.IntRange(min=1), default=_D.batch_size)
@click.option("--lr", "learning_rate", type=float, default=_D.learning_rate, help="Peak learning rate (AdamW, warm-up + cosine).")
@click.option("--augment", type=click.Choice(["none", "flips", "strong"]), default=_D.augment,
              help="strong adds zoom, exposure, colour, stain, blur, noise and JPEG.")
@click.option("--label-smoothing", type=click.FloatRange(0, 0.5), default=_D.label_smoothing)
@click.option("--class-weights/--no-class-weights", default=_D.class_weights, help="Balance rare classes in the loss.")
@click.option("--synthetic-per-class", type=click.IntRange(min=3), default=_D.synthetic_per_class,
              help="Images per class when --data is not given.")
@click.option("--seed", type=int, default=_D.seed)
@click.option("--quiet", is_flag=True, help="One line per epoch instead of a progress bar.")
@one_line_errors
def fit(quiet, **opts):
    """Train a model; write model.keras + model.json, config, split and curves to --out.

    \b
    Example (the README demo, ~3 min on 2 cores):
      celltrain fit --out runs/demo --image-size 64 --epochs 4 --weights none
    Real data:
      celltrain fit --data ../shared/data/pbc96 --out runs/pbc --augment strong --epochs 30
    """
    from .fit import fit as run_fit

    run_fit(FitConfig(**opts), verbose=2 if quiet else 1)


@main.command()
@click.argument("run", type=click.Path(exists=True))
@click.option("--data", default=None, help="Dataset path if it moved since training (same images).")
@click.option("--seed", type=int, default=0, help="Seed of the corrupted copy.")
@one_line_errors
def evaluate(run, data, seed):
    """Evaluate RUN (a run folder or its model.keras) on its held-out test split.

    Accuracy, macro precision/recall/F1, per-class table, calibration error and a
    confusion matrix, on the clean split and on a corrupted copy of it (one of 16
    field corruptions per image, severity 1-5). Writes evaluation.json and
    confusion.png into the run folder.

    
    Example:
      celltrain evaluate runs/pbc
    """
    from pathlib import Path

    from .evaluate import evaluate as run_eval

    path = Path(run)
    run_eval(path / "model.keras" if path.is_dir() else path, data=data, seed=seed)


@main.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--per-class", type=click.IntRange(min=1), default=100, help="Crops per class.")
@click.option("--image-size", type=click.IntRange(min=16), default=96)
@click.option("--fields", type=click.IntRange(min=0), default=4, help="Whole 640x480 fields with known cells.")
@click.option("--video/--no-video", default=True, help="Also write microscope.avi (+ per-frame truth).")
@click.option("--seed", type=int, default=0)
@one_line_errors
def synth(out, per_class, image_size, fields, video, seed):
    """Generate synthetic smears: crops (class folders), fields and a microscope video.

    \b
    Example:
      celltrain synth demo_data/ --per-class 50
    """
    from .synth import write_dataset

    m = write_dataset(out, per_class, image_size, seed, fields, video)
    click.echo(f"wrote {sum(m['crops'].values())} crops, {m['fields']} fields"
               + (f", video of {m['video']['frames']} frames" if video else "") + f" to {out} (synthetic)")


if __name__ == "__main__":  # pragma: no cover
    main()
