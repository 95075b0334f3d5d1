"""Train a classifier and write it as a bundle (model.keras + model.json) in a run folder.

The run folder holds everything needed to repeat or continue the run:
config.json (resolved config), split.json, checkpoints/last.keras (every
epoch), checkpoints/best.keras (best val accuracy), state.json (epochs done),
history.csv/json, curves.png and TensorBoard logs.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from scopelite.edge.bundle import (FileRef, Machine, Provenance, Sidecar, TensorSpec, TrainingData, TrainingRun,
                                   atomic_path, build_sidecar, sha256_file, write_bytes_atomic, write_json_atomic,
                                   write_sidecar)
from scopelite.edge.errors import UserError, is_number_text
from scopelite.edge.ood import reference_from
from scopelite.edge.sysinfo import machine

from . import data as data_lib
from . import model as model_lib
from . import multiworker
from ._keras import keras, tf, versions
from .augment import crop_backgrounds, make_dataset
from .config import FitConfig
from .metrics import summarize
from .recipe import class_weights  # noqa: F401 - also part of fit's API
from .run import predict
from .runpath import MODEL_FILE



@keras.utils.register_keras_serializable("scopelite")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine (or exponential) decay."""

    def __init__(self, peak: float, total: int, warmup: int, kind: str = "cosine"):
        self.peak, self.total, self.warmup, self.kind = float(peak), int(total), int(warmup), kind

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak * (step + 1) / max(self.warmup, 1)
        t = tf.clip_by_value((step - self.warmup) / max(self.total - self.warmup, 1), 0.0, 1.0)
        if self.kind == "exponential":
            decay = self.peak * tf.pow(0.01, t)  # to 1 % of the peak at the end
        else:
            decay = 0.5 * self.peak * (1 + tf.cos(np.pi * t))
        return tf.where(step < self.warmup, warm, decay)

    def get_config(self):
        return {"peak": self.peak, "total": self.total, "warmup": self.warmup, "kind": self.kind}


RESTANDARDISE_IMAGES = 512  # training images measured to restore BatchNorm statistics after --weights X.tflite


@dataclass(frozen=True)
class Segment:
    """Epochs [start, end) trained with one image size, strength and set of trainable layers."""

    start: int
    end: int
    image_size: int
    strength: float
    phase: str  # "scratch" | "head" | "finetune"


def _restandardise(model, images: np.ndarray, class_names, cfg: FitConfig, log) -> None:
    """A model rebuilt from a .tflite file has BN layers with identity statistics: give them real ones."""
    from . import from_tflite  # noqa: PLC0415

    # tied to the split seed, not --train-seed: sibling runs start from identical weights (soups need that)
    idx = np.sort(np.random.default_rng(cfg.seed).permutation(len(images))[:RESTANDARDISE_IMAGES])
    n = from_tflite.restandardise_batchnorm(model, images[idx], cfg.batch_size)
    log(f"      weights from {cfg.weights} (dequantised, BatchNorm unfolded); statistics of {n} BatchNorm "
        f"layers measured on {len(idx)} training images")
    labels = from_tflite.sidecar_labels(cfg.weights)
    if labels is not None and list(labels) != list(class_names):
        log(f"      NOTE: that model's classes ({', '.join(labels)}) are not this data's "
            f"({', '.join(class_names)}): its output layer starts from other classes and must learn them")


def plan(cfg: FitConfig) -> list[Segment]:
    """Phases (head on a frozen backbone, then fine-tuning, when pretrained) and progressive-resizing stages."""
    pretrained = cfg.weights != "none"
    head = min(cfg.head_epochs, cfg.epochs - 1) if pretrained and cfg.epochs > 1 else 0
    segs = [Segment(0, head, cfg.image_size, cfg.strength * 0.5, "head")] if head else []
    phase = "finetune" if pretrained else "scratch"
    n = cfg.epochs - head
    if not cfg.progressive or n < 3:
        return segs + [Segment(head, cfg.epochs, cfg.image_size, cfg.strength, phase)]
    # EfficientNetV2's progressive learning: 3 stages, 60 % -> 100 % of the size, weak -> full augmentation.
    bounds = np.linspace(head, cfg.epochs, 4).round().astype(int)
    for i in range(3):
        size = int(round(cfg.image_size * (0.6 + 0.2 * i) / 8) * 8)
        segs.append(Segment(int(bounds[i]), int(bounds[i + 1]), max(size, 16), cfg.strength * (0.4 + 0.3 * i), phase))
    return segs


def make_strategy(name: str):
    """tf.distribute strategy; SCOPELITE_CPU_REPLICAS=N splits the CPU into N replicas (for tests)."""
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG
    n = int(os.environ.get("SCOPELITE_CPU_REPLICAS", "0"))
    if n > 1 and not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])
    return tf.distribute.MirroredStrategy()


def set_trainable(model, phase: str, fine_tune_fraction: float) -> bool:
    """Freeze per phase; BatchNormalization stays frozen when fine-tuning. Returns True if anything changed."""
    before = [layer.trainable for layer in model.layers]
    body = [layer for layer in model.layers if layer.name not in ("predictions", "top_dropout")]
    if phase == "scratch":
        for layer in model.layers:
            layer.trainable = True
    elif phase == "head":
        for layer in body:
            layer.trainable = False
    else:
        first = int(len(body) * (1 - fine_tune_fraction))
        for i, layer in enumerate(body):
            layer.trainable = i >= first and not isinstance(layer, keras.layers.BatchNormalization)
    return before != [layer.trainable for layer in model.layers]


def _optimizer(cfg: FitConfig, total_steps: int, warmup_steps: int):
    lr = WarmupCosine(cfg.learning_rate, total_steps, warmup_steps, cfg.schedule)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if cfg.optimizer == "lion":
        return keras.optimizers.Lion(lr, weight_decay=cfg.weight_decay)
    return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay)


def _compile(model, cfg: FitConfig, seg: Segment, steps: int, segments: list[Segment]):
    phase_epochs = sum(s.end - s.start for s in segments if s.phase == seg.phase)
    model.compile(
        optimizer=_optimizer(cfg, steps * phase_epochs, int(steps * min(cfg.warmup_epochs, phase_epochs))),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
    )


class Diverged(Exception):
    """The loss became NaN or infinite (``_StopOnNaN``)."""


class _StopOnNaN(keras.callbacks.Callback):
    """First in the list: a loss that became NaN or infinite stops the run before the epoch's checkpoints, snapshots
    and state.json are written with broken weights (Keras's TerminateOnNaN let them be written: a --resume then
    started from them and diverged again)."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if self.model.stop_training and loss is not None and not np.isfinite(loss):
            raise Diverged(f"epoch {epoch + 1}: loss {loss}")


class _EpochState(keras.callbacks.Callback):
    """Write state.json after every epoch (after the checkpoint), for --resume."""

    def __init__(self, path: Path, best: float):
        super().__init__()
        self.path, self.best, self.t0 = path, best, 0.0
        self.epoch_seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.time() - self.t0)
        self.best = max(self.best, float((logs or {}).get("val_accuracy", -1)))
        write_json_atomic(self.path, {"epochs_done": epoch + 1, "best_val_accuracy": self.best})


class _AtomicCheckpoint(keras.callbacks.Callback):
    """Save the model to ``path`` after each epoch through a temporary file and a rename.

    Keras' own ModelCheckpoint writes in place, so a kill during the write left a
    truncated ``last.keras`` that ``--resume`` could not open. With ``monitor`` it
    saves only when the monitored value beats ``best`` (higher is better).
    """

    def __init__(self, path: Path, monitor: str | None = None, best: float | None = None):
        super().__init__()
        self.path, self.monitor, self.best = path, monitor, best

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None:
            value = (logs or {}).get(self.monitor)
            if value is None or (self.best is not None and float(value) <= self.best):
                return
            self.best = float(value)
        with atomic_path(self.path) as tmp:
            self.model.save(tmp)


class _Snapshots(keras.callbacks.Callback):
    """Save the weights of each of the last ``n`` epochs (of ``total``) as checkpoints/epoch-NNN.npz."""

    def __init__(self, folder: Path, n: int, total: int):
        super().__init__()
        self.folder, self.first = folder, total - n + 1

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.first:
            buf = io.BytesIO()
            np.savez(buf, *self.model.get_weights())
            write_bytes_atomic(self.folder / f"epoch-{epoch + 1:03d}.npz", buf.getvalue())


def segment_ops(cfg: FitConfig, seg: Segment) -> dict | None:
    """``--aug`` strengths for one segment: scaled like the policy's (weaker in early progressive stages)."""
    if not cfg.aug:
        return None
    scale = seg.strength / cfg.strength if cfg.strength > 0 else 1.0
    return {k: min(1.0, (cfg.strength if v is None else v) * scale) for k, v in cfg.aug.items()}


def snapshot_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("epoch-[0-9][0-9][0-9].npz"))


def _average_snapshots(model, files: list[Path], train_images: np.ndarray, batch_size: int, log) -> dict:
    """Load the snapshots, average them into ``model``; re-estimate BatchNorm when its statistics moved."""
    from .average import average_into  # noqa: PLC0415

    lists = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            lists.append([z[f"arr_{i}"] for i in range(len(z.files))])
    info = {"averaged_epochs": [int(f.stem.split("-")[1]) for f in files],
            "batchnorm_recalibrated": average_into(model, lists, train_images, batch_size)}
    log(f"      averaged the weights of epochs {info['averaged_epochs'][0]}-{info['averaged_epochs'][-1]} "
        f"({len(files)} snapshots" + (", BatchNorm statistics re-estimated)" if info["batchnorm_recalibrated"]
                                       else ")"))
    return info


def heldout_metrics(model, val: data_lib.Dataset, test: data_lib.Dataset, class_names,
                    val_probs: np.ndarray | None = None) -> dict:
    """What a bundle's sidecar records: val accuracy and the full test summary.

    ``val_probs``: the model's predictions on ``val`` when the caller already has them (not predicted again).
    """
    val_probs = predict(model, val.images) if val_probs is None else val_probs
    return {"split": "test",
            "val": {"accuracy": summarize(val.labels, val_probs, class_names)["accuracy"]},
            "test": summarize(test.labels, predict(model, test.images), class_names)}


def keras_sidecar(path: Path, cfg: FitConfig, ds: data_lib.Dataset, metrics: dict, extra: dict) -> Sidecar:
    """The sidecar of a trained ``model.keras`` in its run folder (``split.json`` beside it).

    ``extra``: what this trainer adds to the training record (replicas, weight averaging, ...).
    """
    split = path.parent / "split.json"
    state = path.parent / "state.json"
    epochs = json.loads(state.read_text()).get("epochs_done") if state.is_file() else None
    training = TrainingRun(
        run=Path(cfg.out).resolve().name, config=cfg.to_json(),
        data=TrainingData(ds.description, ds.synthetic, ds.counts()),
        split=FileRef(split.name, sha256_file(split)) if split.is_file() else None,
        seed=cfg.seed, epochs=int(epochs) if isinstance(epochs, int) else cfg.epochs,
        machine=Machine.from_dict(machine()), extra=dict(extra))
    return build_sidecar(
        path, format="keras", labels=ds.class_names,
        # the preprocessing the training images went through (data_lib.input_spec), as float32 pixels
        input=dataclasses.replace(data_lib.input_spec(cfg.image_size), dtype="float32",
                                  rbc_px=data_lib.training_scale(ds)[0]),
        output=TensorSpec(dtype="float32", quantization=None), runtimes=("keras",), metrics=metrics,
        provenance=Provenance(tools=versions(), training=training),
        synthetic_data=ds.synthetic, stain_reference=_stain_reference(ds.images), views=cfg.views)


def _stain_reference(images: np.ndarray) -> dict | None:
    ref = reference_from(images)
    return None if ref is None else ref.to_json()


def _good_state(o) -> bool:
    """state.json as _EpochState writes it."""
    return (isinstance(o, dict) and isinstance(o.get("epochs_done"), int) and not isinstance(o["epochs_done"], bool)
            and o["epochs_done"] >= 0 and isinstance(o.get("best_val_accuracy"), (int, float))
            and not isinstance(o["best_val_accuracy"], bool))


def _prepare_run(cfg: FitConfig, resume: bool, log) -> tuple[data_lib.Dataset, dict, int, float]:
    out = Path(cfg.out)
    state_file = out / "state.json"
    if cfg.average_last > cfg.epochs:
        raise UserError(f"--average-last {cfg.average_last} is more than --epochs {cfg.epochs}")
    if resume:
        if not (out / "checkpoints" / "last.keras").is_file() or not state_file.is_file():
            raise UserError(f"{out} has no checkpoint to resume from; start it with celltrain fit --out {out}")
        if (out / MODEL_FILE).exists():
            raise UserError(f"{out} already finished (model.keras exists); nothing to resume")
    else:
        if (out / MODEL_FILE).exists():
            raise UserError(f"{out} already holds a trained model; choose another --out or delete it")
        if state_file.exists():
            raise UserError(f"{out} holds an unfinished run; continue it with celltrain fit --resume {out}")
        if (out / "members").is_dir():  # a plain fit there left the soup's members beside a model not theirs
            raise UserError(f"{out} holds the members of a --soup run (--preset few-shot makes one): give the "
                            "command that started it again to finish it, or choose another --out")
    model_lib.check_weights_arg(cfg.weights, cfg.arch)
    out.mkdir(parents=True, exist_ok=True)

    log(f"[1/4] loading data: {cfg.data or 'generated synthetic smears'}")
    ds = data_lib.load(cfg.data, cfg.image_size, cfg.synthetic_per_class, cfg.seed, progress=True,
                       classes=_weights_classes(cfg.weights))
    if ds.synthetic:
        log("      NOTE: training on SYNTHETIC data - the model is a demo, not a blood-cell classifier")
    if resume:
        split = data_lib.load_split(out / "split.json", ds)
        state = data_lib.read_json_file(state_file, "the run's state file", _good_state)
        trim_history(out / "history.csv", int(state["epochs_done"]))
        return ds, split, int(state["epochs_done"]), float(state["best_val_accuracy"])
    drop = data_lib.exact_duplicates(ds.images)
    if cfg.exclude:
        drop = np.union1d(drop, data_lib.read_exclusions(cfg.exclude, ds))
    fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    pseudo = data_lib.pseudo_labelled(ds)  # --self-train's guesses (export.json): train on, never judge by
    if ds.predefined_split is not None:  # keep the dataset's own split, minus what is dropped
        split = {k: np.setdiff1d(v, drop) for k, v in ds.predefined_split.items()}
    else:
        guessed = np.setdiff1d(pseudo, drop)  # training only
        split = data_lib.stratified_split(ds.labels, fractions, cfg.seed, exclude=np.union1d(drop, guessed))
        if len(guessed):
            split["train"] = np.union1d(split["train"], guessed)
            log(f"      {len(guessed)} cells the adapted model labelled ({data_lib.RECORD}: pseudo) go to train only")
    if min(len(v) for v in split.values()) == 0:
        raise UserError(f"{len(ds)} images are too few to split into train/val/test; add data")
    data_lib.save_split(out / "split.json", ds, split, cfg.seed)
    write_json_atomic(out / "config.json", cfg.to_json())
    log(f"      {len(ds)} images, {len(drop)} left out (exact duplicates/exclusions); "
        f"train {len(split['train'])}, val {len(split['val'])}, test {len(split['test'])}")
    for note in (data_lib.mixed_sizes_note(ds), data_lib.whole_fields_note(ds)):
        if note:
            log(f"      NOTE: {note}")
    if ds.root and (Path(ds.root) / data_lib.RECORD).is_file():  # cells exported by celledge export
        rbc, how = data_lib.training_scale(ds)
        log(f"      training scale: red cells {rbc} px across, {how}")
    people = np.delete(ds.labels, pseudo)  # the guesses are not people's labels
    note = few_cells_note({n: int((people == i).sum()) for i, n in enumerate(ds.class_names)},
                          pretrained=cfg.weights not in ("none", "imagenet") and not ds.synthetic)
    if note:
        log(f"      NOTE: {note}")
    if not ds.synthetic:
        from .audit import background_note  # noqa: PLC0415

        try:  # a warning only: it must never stop a training
            note = background_note(ds.images, ds.labels, ds.class_names,
                                   among=np.setdiff1d(np.arange(len(ds)), drop))
        except Exception as e:  # noqa: BLE001
            note = f"background check skipped ({type(e).__name__}: {e})"
        if note:
            log(f"      NOTE: {note}")
    return ds, split, 0, -1.0


FEW_CELLS = 25  # labelled cells per class below which adapting to a new lab varied most with the cells drawn


def _weights_classes(weights: str) -> list[str] | None:
    """The classes of the model ``--weights`` fine-tunes (from its sidecar), which it keeps; None: trained from
    scratch, or a model without a readable sidecar."""
    if weights in ("none", "imagenet"):
        return None
    from . import from_tflite  # noqa: PLC0415

    return from_tflite.sidecar_labels(model_lib.resolve_weights(weights))


FEW_TEST = 20  # below this many test images, one image moves the accuracy by 5 points or more


def few_test_note(n: int) -> str:
    """After a test accuracy on ``n`` images: how much one image weighs, when that is a lot."""
    return (f"; one image is {100 / n:.0f} points: check the model on cells kept apart, from other slides"
            if 0 < n < FEW_TEST else "")


def few_cells_note(counts: dict[str, int], pretrained: bool) -> str | None:
    """What to tell a lab fine-tuning a model on fewer than ``FEW_CELLS`` labelled cells of a class it has
    (classes with none are not in its folder: the model keeps them); None when there is nothing to say."""
    few = {k: n for k, n in counts.items() if 0 < n < FEW_CELLS}
    if not pretrained or not few:
        return None
    listed = ", ".join(f"{k} {n}" for k, n in sorted(few.items(), key=lambda kv: kv[1]))
    return (f"few labelled cells ({listed}): adapting the shipped model to another lab gave 85-93 % of fields "
            f"right with 5 different cells per class, 89-95 % with 10 (one fit, before session 19), 88-96 % with 25 "
            f"(mean 92.5 % over six draws, the preset of now, one view; 95.4 % over the 8 views its models are run with) and 88-91 % with all it had (35-47 of its two common classes; docs/cross-lab.md): with fewer cells, "
            f"which ones you label moves the result more; label {FEW_CELLS} or more different cells of each class you see where you can "
            f"(one cell photographed twice counts once)")


def fit(cfg: FitConfig, log: Callable[[str], None] = print, verbose: int = 1, resume: bool = False) -> dict:
    """Train per ``cfg`` (or continue the run in ``cfg.out`` with ``resume``); write the bundle.

    Returns:
        The metrics written into the sidecar.
    """
    if cfg.backend != "tf-keras":
        raise UserError(f"this is the tf-keras trainer; backend {cfg.backend!r} is scopelite.train.keras3.fit")
    if cfg.ema:
        raise UserError("--ema needs --backend keras3 (tf-keras celltrain fit averages weights with --average-last)")
    if cfg.strategy != "multiworker":
        return _fit(cfg, make_strategy(cfg.strategy), None, log, verbose, resume)  # before other TensorFlow work
    cluster, strategy = multiworker.connect(cfg.worker_timeout, log)  # every worker runs the same steps
    if cluster.is_chief:
        with multiworker.peer_errors(cluster, cfg.out, fresh=not Path(cfg.out).exists()):
            return _fit(cfg, strategy, cluster, log, verbose, resume)
    wlog = lambda line: log(f"worker {cluster.rank}: {line.strip()}")  # noqa: E731
    with multiworker.scratch_run(cfg.out, cluster, resume) as scratch, multiworker.peer_errors(cluster, cfg.out):
        metrics = _fit(dataclasses.replace(cfg, out=scratch), strategy, cluster, wlog, 0, resume)
    wlog(f"done; its temporary run folder is deleted (the chief, {cluster.to_json()['chief']}, writes {cfg.out})")
    return metrics


def _fit(cfg: FitConfig, strategy, cluster: multiworker.Cluster | None, log: Callable[[str], None], verbose: int,
         resume: bool) -> dict:
    """``fit`` under ``strategy``; ``cluster``: this worker's place when several train together (else None)."""
    if cfg.batch_size < strategy.num_replicas_in_sync:
        raise UserError(f"--batch-size {cfg.batch_size} is the global batch, split over "
                        f"{strategy.num_replicas_in_sync} replicas; give at least {strategy.num_replicas_in_sync}")
    if cfg.mixed_precision:
        if tf.config.list_physical_devices("GPU"):
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            log("      mixed precision needs a GPU; training in float32")
    if not resume:
        cfg = dataclasses.replace(cfg, weights=model_lib.resolve_weights(cfg.weights))
    out = Path(cfg.out)
    fresh = not out.exists()
    try:
        ds, split, done, best = _prepare_run(cfg, resume, log)
    except BaseException:  # bad data, too few images, Ctrl-C: leave no half-made run folder behind
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        raise
    keras.utils.set_random_seed(cfg.training_seed + done)
    n_classes = len(ds.class_names)
    tr, va, te = (ds.subset(split[s]) for s in data_lib.SPLITS)
    segments = plan(cfg)
    steps = len(tr) // cfg.batch_size if cluster else int(np.ceil(len(tr) / cfg.batch_size))  # see drop_remainder
    if steps == 0:
        raise UserError(f"--batch-size {cfg.batch_size} is more than the {len(tr)} training images; give a smaller one")
    ckpt = out / "checkpoints"
    ckpt.mkdir(exist_ok=True)

    with strategy.scope():
        if resume:
            log(f"[2/4] resuming after epoch {done} from {ckpt / 'last.keras'}")
            try:
                model = keras.models.load_model(ckpt / "last.keras")
            except (OSError, ValueError) as e:  # a file cut short by an older, non-atomic checkpoint
                raise UserError(f"{ckpt / 'last.keras'} cannot be read ({type(e).__name__}); the checkpoint is "
                                f"damaged, so this run cannot continue: start again with another --out") from None
        else:
            log(f"[2/4] building {cfg.arch} at {cfg.image_size}x{cfg.image_size}, weights={cfg.weights}"
                + (f", {strategy.num_replicas_in_sync} replicas" if cfg.strategy != "none" else "")
                + (f" on {cluster.num_workers} workers (global batch {cfg.batch_size})" if cluster else ""))
            try:
                model = model_lib.build(cfg.arch, None if cfg.progressive else cfg.image_size, n_classes,
                                        cfg.weights, cfg.dropout)
            except UserError:
                if fresh:  # --weights did not fit this architecture: leave no half-made run folder behind
                    shutil.rmtree(out, ignore_errors=True)
                raise
            if model_lib.is_tflite(cfg.weights):
                _restandardise(model, tr.images, ds.class_names, cfg, log)
    aug = cfg.augment + "".join(f", {k}={'strength' if v is None else v}" for k, v in (cfg.aug or {}).items())
    log(f"[3/4] training {cfg.epochs} epochs ({steps} steps each, augmentation {aug}, "
        f"{', '.join(f'{s.phase} {s.start + 1}-{s.end}@{s.image_size}px' for s in segments)})")
    cw = class_weights(tr.labels, n_classes) if cfg.balance == "weights" else None
    rbc_px = None  # --aug debris sizes its artefacts in µm from the training crops' own red cells
    if (cfg.aug or {}).get("debris", 0) != 0:
        rbc_px = data_lib.training_scale(tr)[0]
        log(f"      debris sized from the training scale: red cells {rbc_px} px = 7.5 µm" if rbc_px else
            "      debris: no red cells measurable in the training crops; 18 px per 96 px = 7.5 µm assumed")
    backgrounds = None  # --aug bgswap draws from the training crops' own backgrounds
    if (cfg.aug or {}).get("bgswap", 0) != 0:
        backgrounds = crop_backgrounds(tr.images)
        log(f"      bgswap: backgrounds drawn from the {len(backgrounds)} training crops' own")
    val_batch = cfg.batch_size  # multi-worker: no replica may get an empty share of the last batch
    if cluster:
        val_batch = multiworker.eval_batch_size(len(va), cfg.batch_size, strategy.num_replicas_in_sync)
    val_ds = make_dataset(va.images, va.labels, n_classes, val_batch, False)
    if cluster:
        val_ds = multiworker.shard_by_data(val_ds)
    state_cb = _EpochState(out / "state.json", best)
    best_cb = _AtomicCheckpoint(ckpt / "best.keras", "val_accuracy", best if best >= 0 else None)
    # Order matters for --resume: checkpoint, then the log line, then state.json. A kill
    # between the checkpoint and state.json repeats one epoch; it never loses one.
    callbacks = [_AtomicCheckpoint(ckpt / "last.keras"), best_cb,
                 keras.callbacks.CSVLogger(str(out / "history.csv"), append=True), state_cb,
                 keras.callbacks.TensorBoard(str(out / "tensorboard"), update_freq="epoch")]
    if cfg.average_last:
        callbacks.insert(0, _Snapshots(ckpt, cfg.average_last, cfg.epochs))
    if cfg.patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=cfg.patience))
    callbacks.insert(0, _StopOnNaN())  # a diverged run stops at once, before anything of that epoch is written
    t0 = time.time()
    steps_run = 0
    for seg in segments:
        if seg.end <= done:
            continue
        with strategy.scope():
            changed = set_trainable(model, seg.phase, cfg.fine_tune_fraction)
            if changed or model.optimizer is None:  # a new phase, or a fresh model
                _compile(model, cfg, seg, steps, segments)
        train_ds = make_dataset(tr.images, tr.labels, n_classes, cfg.batch_size, True, cfg.augment, seg.strength,
                                cfg.training_seed + seg.start, image_size=seg.image_size, balance=cfg.balance,
                                mixup=cfg.mixup, ops=segment_ops(cfg, seg), rbc_px=rbc_px, ordered=cluster is not None,
                                drop_remainder=cluster is not None, backgrounds=backgrounds)
        if cluster:
            train_ds = multiworker.shard_by_data(train_ds)
        steps_before = int(model.optimizer.iterations.numpy())
        try:
            hist = model.fit(train_ds, validation_data=val_ds, initial_epoch=max(seg.start, done), epochs=seg.end,
                             verbose=verbose, callbacks=callbacks, class_weight=cw)
        except Diverged as e:
            raise UserError(f"training diverged ({e}): the loss became NaN or infinite and {out / MODEL_FILE} was not "
                            f"written. Train again with {_lower(cfg)} into a new --out "
                            f"(or delete {out}; --resume would start from the same weights)") from None
        steps_run += int(model.optimizer.iterations.numpy()) - steps_before
        done = seg.end
        if model.stop_training or (cfg.patience and len(hist.epoch) < seg.end - seg.start):
            break
    train_s = time.time() - t0
    bad = model_lib.non_finite_weights(model)
    if bad:  # a loss that stayed finite over weights that did not (or --weights of a broken model): keep nothing
        raise UserError(f"training diverged: the loss became NaN or infinite and {bad} weight arrays are not finite"
                        f"; {out / MODEL_FILE} was not written. Train again with {_lower(cfg)} into a new --out "
                        f"(or delete {out}), and without --weights of a "
                        "model that is itself broken")

    log("[4/4] evaluating on the held-out split and writing the bundle")
    averaging: dict = {}
    snaps = snapshot_files(ckpt) if cfg.average_last else []
    if cfg.average_last and not snaps:
        log("      no epoch snapshots to average (stopped early?); keeping the best epoch")
    if snaps:
        averaging = _average_snapshots(model, snaps, tr.images, cfg.batch_size, log)
    elif (ckpt / "best.keras").is_file():
        model.set_weights(keras.models.load_model(ckpt / "best.keras", compile=False).get_weights())
    fixed = model_lib.rebuild_for_export(model, cfg.arch, cfg.image_size, n_classes, batch_size=None)
    in_step = {}
    if cluster:  # every worker logs this; equal hashes prove the copies stayed in step
        in_step = {**cluster.to_json(), "steps": steps_run, "global_batch_size": cfg.batch_size,
                   "weights_sha256": multiworker.weights_sha256(fixed.get_weights())}
        log(f"      {steps_run} steps of global batch {cfg.batch_size} on {cluster.num_workers} workers; "
            f"final weights sha256 {in_step['weights_sha256']}")
    epochs_run = len(state_cb.epoch_seconds)
    metrics = {
        **heldout_metrics(fixed, va, te, ds.class_names),
        "train_seconds": round(train_s, 1),
        "epochs_this_session": epochs_run,
        "images_per_second": round(len(tr) * epochs_run / max(train_s, 1e-9), 1),
    }
    history = _read_history(out / "history.csv")
    history["epoch_seconds_this_session"] = [round(s, 1) for s in state_cb.epoch_seconds]
    write_json_atomic(out / "history.json", history)
    _plot_history(history, out / "curves.png")
    final = out / MODEL_FILE
    with atomic_path(final) as tmp:
        fixed.save(tmp)
    write_sidecar(final, keras_sidecar(final, cfg, ds, metrics,
                                       {"replicas": strategy.num_replicas_in_sync, "resumed": resume,
                                        **({"multiworker": in_step} if in_step else {}),
                                        **({"weight_averaging": averaging} if averaging else {})}))
    log(f"      test accuracy {metrics['test']['accuracy']:.4f}, macro-F1 {metrics['test']['macro_f1']:.4f} "
        f"({len(te)} images{few_test_note(len(te))}) -> {final}")
    return metrics


def trim_history(path: Path, done: int) -> None:
    """Keep the rows of epochs before ``done`` that were written whole; the resumed run appends the rest.

    A kill can land after the log line and before state.json (that epoch is trained again) or in
    the middle of a line; either would leave a repeated or broken row.
    """
    import csv  # noqa: PLC0415

    if not path.is_file():
        return
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is damaged ({e}); delete it to resume (the per-epoch log starts again)") from None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()  # the last row was cut off in the middle
    if not lines:
        return
    rows = list(csv.reader(lines))
    if not rows[0] or rows[0][0] != "epoch" or not all(rows[0]):  # emptied, or re-saved with ';' (a spreadsheet)
        raise UserError(f"{path} is damaged (its first line is not the header celltrain writes, epoch,...); delete it "
                        "to resume (the per-epoch log starts again)")
    width = len(rows[0])
    keep = [lines[0]] + [line for line, cells in zip(lines[1:], rows[1:])
                         if len(cells) == width and cells[0].isdigit() and int(cells[0]) < done
                         and all(is_number_text(c) for c in cells[1:])]  # a hand-edited 'abc': the end's plot crashed
    write_bytes_atomic(path, "".join(keep).encode())


def _read_history(path: Path) -> dict:
    import csv  # noqa: PLC0415

    rows = list(csv.DictReader(path.open())) if path.is_file() else []
    keys = [k for k in (rows[0] if rows else {}) if k and k != "epoch"]  # None: a row longer than the header
    return {k: [float(r[k]) for r in rows if isinstance(r.get(k), str) and is_number_text(r[k])] for k in keys}


def _lower(cfg: FitConfig) -> str:
    """What to lower after a diverged training: the learning rate, and a weight decay far above the usual."""
    return f"a lower --lr (it was {cfg.learning_rate:g})" + (
        f" and --weight-decay (it was {cfg.weight_decay:g})" if cfg.weight_decay > 0.1 else "")


def _plot_history(history: dict, path: Path) -> None:
    from scopelite.train._plot import pyplot, save  # noqa: PLC0415

    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if history.get(prefix + key):
                ax.plot(range(1, len(history[prefix + key]) + 1), history[prefix + key], style,
                        label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path, dpi=90)


__all__ = ["FitConfig", "fit", "plan"]
