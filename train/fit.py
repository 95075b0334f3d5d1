"""Train a classifier and write it as a bundle (model.keras + model.json) in a run folder."""
from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from scopelite.edge.bundle import InputSpec, Sidecar, TensorSpec, sha256_file, write_json_atomic, write_sidecar
from scopelite.edge.errors import UserError

from . import data as data_lib
from . import model as model_lib
from ._keras import keras, tf, versions
from .augment import make_dataset
from .config import FitConfig
from .metrics import summarize

MODEL_FILE = "model.keras"


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 0."""

    def __init__(self, peak: float, total: int, warmup: int):
        self.peak, self.total, self.warmup = float(peak), int(total), int(warmup)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak * (step + 1) / max(self.warmup, 1)
        t = (step - self.warmup) / max(self.total - self.warmup, 1)
        cos = 0.5 * self.peak * (1 + tf.cos(np.pi * tf.clip_by_value(t, 0.0, 1.0)))
        return tf.where(step < self.warmup, warm, cos)

    def get_config(self):
        return {"peak": self.peak, "total": self.total, "warmup": self.warmup}


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced weights n / (k * count_c): rare classes count as much as common ones."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    return {c: float(len(labels) / (n_classes * max(counts[c], 1))) for c in range(n_classes)}


def predict(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)


def keras_sidecar(path: Path, cfg: FitConfig, ds: data_lib.Dataset, metrics: dict, extra: dict) -> Sidecar:
    return Sidecar(
        format="keras",
        file=path.name,
        sha256=sha256_file(path),
        labels=tuple(ds.class_names),
        input=InputSpec(height=cfg.image_size, width=cfg.image_size, dtype="float32"),
        output=TensorSpec(dtype="float32"),
        runtimes=("keras",),
        metrics=metrics,
        provenance={
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "data": {"description": ds.description, "synthetic": ds.synthetic, "counts": ds.counts()},
            "split_file": "split.json",
            "tools": versions(),
            "config": cfg.to_json(),
            **extra,
        },
        synthetic_data=ds.synthetic,
    )


def fit(cfg: FitConfig, log: Callable[[str], None] = print, verbose: int = 1) -> dict:
    """Train per ``cfg``; write the bundle, config, split and history into ``cfg.out``.

    Returns:
        The metrics written into the sidecar.
    """
    out = Path(cfg.out)
    if (out / MODEL_FILE).exists():
        raise UserError(f"{out} already holds a trained model; choose another --out or delete it")
    model_lib.check_weights_arg(cfg.weights, cfg.arch)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)

    log(f"[1/4] loading data: {cfg.data or 'generated synthetic smears'}")
    ds = data_lib.load(cfg.data, cfg.image_size, cfg.synthetic_per_class, cfg.seed, progress=verbose > 0)
    if ds.synthetic:
        log("      NOTE: training on SYNTHETIC data - the model is a demo, not a blood-cell classifier")
    dups = data_lib.exact_duplicates(ds.images)
    fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    split = data_lib.stratified_split(ds.labels, fractions, cfg.seed, exclude=dups)
    if min(len(v) for v in split.values()) == 0:
        raise UserError(f"{len(ds)} images are too few to split into train/val/test; add data")
    data_lib.save_split(out / "split.json", ds, split, cfg.seed)
    write_json_atomic(out / "config.json", cfg.to_json())
    n_classes = len(ds.class_names)
    log(f"      {len(ds)} images, {len(dups)} exact duplicates dropped; "
        f"train {len(split['train'])}, val {len(split['val'])}, test {len(split['test'])}")

    log(f"[2/4] building {cfg.arch} at {cfg.image_size}x{cfg.image_size}, weights={cfg.weights}")
    model = model_lib.build(cfg.arch, cfg.image_size, n_classes, cfg.weights, cfg.dropout)
    tr, va, te = (ds.subset(split[s]) for s in data_lib.SPLITS)
    train_ds = make_dataset(tr.images, tr.labels, n_classes, cfg.batch_size, True, cfg.augment, seed=cfg.seed)
    val_ds = make_dataset(va.images, va.labels, n_classes, cfg.batch_size, False)
    steps = int(np.ceil(len(tr) / cfg.batch_size))
    schedule = WarmupCosine(cfg.learning_rate, steps * cfg.epochs, int(steps * cfg.warmup_epochs))
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
    )
    log(f"[3/4] training {cfg.epochs} epochs ({steps} steps each, augmentation: {cfg.augment})")
    ckpt = out / "checkpoints"
    ckpt.mkdir(exist_ok=True)
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(ckpt / "last.keras")),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=max(cfg.epochs, 1),
                                      restore_best_weights=True),
        keras.callbacks.CSVLogger(str(out / "history.csv")),
    ]
    t0 = time.time()
    hist = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, verbose=verbose, callbacks=callbacks,
                     class_weight=class_weights(tr.labels, n_classes) if cfg.class_weights else None)
    train_s = time.time() - t0

    log("[4/4] evaluating on the held-out split and writing the bundle")
    metrics = {
        "split": "test",
        "val": {"accuracy": summarize(va.labels, predict(model, va.images), ds.class_names)["accuracy"]},
        "test": summarize(te.labels, predict(model, te.images), ds.class_names),
        "train_seconds": round(train_s, 1),
        "images_per_second": round(len(tr) * len(hist.history.get("loss", [])) / max(train_s, 1e-9), 1),
    }
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    write_json_atomic(out / "history.json", history)
    _plot_history(history, out / "curves.png")
    from scopelite.edge.bundle import atomic_path  # noqa: PLC0415

    final = out / MODEL_FILE
    with atomic_path(final) as tmp:
        model.save(tmp)
    write_sidecar(final, keras_sidecar(final, cfg, ds, metrics, {}))
    log(f"      test accuracy {metrics['test']['accuracy']:.4f}, macro-F1 {metrics['test']['macro_f1']:.4f} "
        f"({len(te)} images) -> {final}")
    return metrics


def _plot_history(history: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(range(1, len(history[prefix + key]) + 1), history[prefix + key], style,
                        label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(".curves.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def load_run_config(model_path: str | Path) -> dict:
    return json.loads((Path(model_path).parent / "config.json").read_text())
