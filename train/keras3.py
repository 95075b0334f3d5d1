"""``celltrain fit --backend keras3``: celltrain's recipe under Keras 3, e.g. JAX on a GPU machine.

The GPU machines we are lent have JAX and no TensorFlow, so ``celltrain fit`` (tf-keras, which
the QAT step needs) cannot run there. This trainer runs the same recipe under Keras 3 on any
backend: the network of ``network.py`` and the augmentation ranges of ``recipe.py`` (spelled
in keras.ops by ``keras3_augment.py``), the same FitConfig and flags. It reads a pack of the
train and val images (``celltrain pack``; the test images stay home) and writes the weights
by name in chunks of at most 15 MiB (a lent machine sends files back up to 16 MiB each) with
its own validation predictions; ``celltrain import`` turns them into an ordinary run folder
that ``celltrain evaluate``, ``cellcompress`` and ``celledge`` take.

Where it differs from tf-keras ``celltrain fit``: JPEG artefacts and MixUp/CutMix are made on
the host; weight decay skips BatchNorm, biases and the input scaling; ``--ema`` is available;
``--mixed-precision`` means bfloat16. Options it does not have are refused (``check``).
No TensorFlow import here: Keras 3 is imported when training starts, on the backend KERAS_BACKEND
names (default: jax where it is installed, else tensorflow).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from scopelite.edge.bundle import atomic_path, write_json_atomic
from scopelite.edge.errors import UserError

from . import keras3_augment, network, recipe
from .config import FitConfig
from .data import NPZ_DAMAGED, open_npz
from .pack import unpack

CHUNK_BYTES = 15 * 2**20
SAVE_EVERY = 10  # epochs between saves of the raw weights (a killed run keeps them)
HISTORY = "history.json"
VAL_PROBS = "val-probs.npy"
NEEDS_TF_KERAS = {  # FitConfig field -> (its default, what to say) for what only tf-keras celltrain fit does
    "weights": ("none", "--weights (continue the imported run with celltrain fit --weights RUN/model.keras)"),
    "progressive": (False, "--progressive"), "strategy": ("none", "--strategy"), "patience": (0, "--patience"),
    "average_last": (0, "--average-last"), "exclude": (None, "--exclude (pack a split made without them)"),
    "optimizer": ("adamw", "--optimizer other than adamw"), "schedule": ("cosine", "--schedule exponential"),
}


def check(cfg: FitConfig) -> None:
    """Refuse, in one line, what the Keras 3 trainer cannot do; before anything is read or imported."""
    if not cfg.data or Path(cfg.data).suffix != ".npz":
        raise UserError("--backend keras3 trains on a pack of a run's train and val images: "
                        "celltrain pack DATA RUN/split.json PACK.npz, then --data PACK.npz")
    if not Path(cfg.data).is_file():
        raise UserError(f"--data {cfg.data}: no such file (make it with celltrain pack)")
    try:
        with np.load(cfg.data, allow_pickle=False) as z:
            is_pack = {"blob", "offsets", "labels", "split", "class_names"} <= set(z.files)
    except (OSError, ValueError):
        is_pack = False
    if not is_pack:
        raise UserError(f"--data {cfg.data} is not a pack; --backend keras3 reads what celltrain pack writes")
    for name, (default, what) in NEEDS_TF_KERAS.items():
        if getattr(cfg, name) != default:
            raise UserError(f"{what} needs the tf-keras backend (celltrain fit without --backend keras3)")
    if cfg.balance == "oversample":
        raise UserError("--balance oversample needs the tf-keras backend; use weights or none")
    try:
        ops = recipe.resolve_ops(cfg.augment, cfg.strength, cfg.aug)
    except ValueError as e:
        raise UserError(str(e)) from None
    bad = [op for op in ops if op in keras3_augment.UNBATCHED]
    if bad:
        raise UserError(f"--aug {', '.join(bad)}: not in the Keras 3 trainer; continue the imported run with "
                        f"celltrain fit --aug {bad[0]}")


def jpeg_copies(images: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """One JPEG re-compression of every image at a random quality (``augment._jpeg``'s range)."""
    import cv2  # noqa: PLC0415

    top, span, best = recipe.JPEG_QUALITY
    rng = np.random.default_rng(seed)
    out = np.empty_like(images)
    for i, img in enumerate(images):
        q = int(rng.integers(int(top - span * strength), best))
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return out


def save_weights(model, folder: Path, tag: str) -> list[str]:
    """The weights by name in ``weights-TAG-N.npz`` files of at most CHUNK_BYTES each, written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks, cur, size = [], {}, 0
    for w in model.weights:
        a = np.asarray(w.numpy() if hasattr(w, "numpy") else w).astype(np.float32)
        if cur and size + a.nbytes > CHUNK_BYTES:
            chunks.append(cur)
            cur, size = {}, 0
        cur[network.weight_name(w)] = a
        size += a.nbytes
    chunks.append(cur)
    names = [f"weights-{tag}-{i}.npz" for i in range(len(chunks))]
    for old in folder.glob(f"weights-{tag}-*.npz"):
        if old.name not in names:
            old.unlink()
    for name, c in zip(names, chunks):
        with atomic_path(folder / name) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **c)
    return names


def load_weight_chunks(folder: Path, tag: str) -> dict[str, np.ndarray]:
    files = sorted(Path(folder).glob(f"weights-{tag}-*.npz"))
    if not files:
        raise UserError(f"no weights-{tag}-*.npz in {folder}; give the folder celltrain fit --backend keras3 wrote")
    ws: dict[str, np.ndarray] = {}
    for f in files:  # copied back from a GPU machine: one may be cut short or empty
        with open_npz(f) as z:
            try:
                ws.update({k: z[k] for k in z.files})
            except (*NPZ_DAMAGED, ValueError) as e:
                raise UserError(f"{f} is a damaged .npz ({type(e).__name__}: {e}); copy the weights folder "
                                "again") from None
    return ws


def host_batches(keras, images, jpegs, labels, n_classes, batch_size, mixup, p_jpeg, class_weight, seed):
    """Epochs of shuffled (pixels, soft labels, sample weights): JPEG copies and MixUp/CutMix on the host."""
    a = recipe.MIX_ALPHA

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=4, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(labels))

        def __len__(self):
            return max(len(labels) // batch_size, 1)

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(labels))

        def __getitem__(self, i):
            r = np.random.default_rng([seed, i, int(self.order[0])])
            idx = self.order[i * batch_size:(i + 1) * batch_size]
            x = images[idx].astype(np.float32)
            if jpegs is not None:
                use = r.random(len(idx)) < p_jpeg
                x[use] = jpegs[idx[use]]
            y = np.eye(n_classes, dtype=np.float32)[labels[idx]]
            w = class_weight[labels[idx]].astype(np.float32)
            if mixup > 0 and r.random() < mixup:
                perm = r.permutation(len(idx))
                if r.random() < 0.5:  # MixUp
                    lam = r.beta(a, a, size=len(idx)).astype(np.float32)
                    x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[perm]
                    y = lam[:, None] * y + (1 - lam[:, None]) * y[perm]
                else:  # CutMix: one box for the batch
                    h = x.shape[1]
                    ch = int(h * math.sqrt(1 - r.beta(a, a)))
                    y0, x0 = r.integers(0, h - ch + 1, size=2)
                    x[:, y0:y0 + ch, x0:x0 + ch] = x[perm, y0:y0 + ch, x0:x0 + ch]
                    area = ch * ch / (h * h)
                    y = (1 - area) * y + area * y[perm]
            return x, y, w

    return Batches()


def fit(cfg: FitConfig, log: Callable[[str], None] = print) -> dict:
    """Train per ``cfg`` under Keras 3 (backend from KERAS_BACKEND); write weights and history to ``cfg.out``.

    Returns:
        The result written into history.json (timings, backend, final val accuracy).
    """
    check(cfg)
    out = Path(cfg.out)
    if list(out.glob("weights-final-*.npz")):
        raise UserError(f"{out} already holds trained weights; choose another --out")
    # Keras 3 picks its backend once, at import: JAX where it is installed (a GPU machine without TensorFlow)
    os.environ.setdefault("KERAS_BACKEND", "jax" if importlib.util.find_spec("jax") else "tensorflow")
    from scopelite.edge import _quiet  # noqa: PLC0415

    _quiet.tensorflow_env()  # TF_CPP_MIN_LOG_LEVEL=3 unless --verbose: TensorFlow's start-up lines, as tf-keras fit
    with _quiet.native_stderr():  # printed before absl reads it (oneDNN, cudart, cuInit): held back, errors pass
        import keras  # noqa: PLC0415 - Keras 3; imported late so that a bad option fails in a second

    log(f"[1/3] reading {cfg.data} at {cfg.image_size}x{cfg.image_size}")
    images, labels, _, split, names = unpack(cfg.data, cfg.image_size)
    tr, va = split == "train", split == "val"
    x_tr, y_tr, x_va, y_va = images[tr], labels[tr], images[va].astype(np.float32), labels[va]
    if not len(y_tr) or not len(y_va):
        raise UserError(f"{cfg.data} holds {len(y_tr)} train and {len(y_va)} val images; it needs both")
    n_classes, seed = len(names), cfg.training_seed
    ops = recipe.resolve_ops(cfg.augment, cfg.strength, cfg.aug)
    jpegs = jpeg_copies(x_tr, ops["jpeg"], seed) if "jpeg" in ops else None
    cw = recipe.class_weights(y_tr, n_classes) if cfg.balance == "weights" else {}
    cw = np.array([cw.get(c, 1.0) for c in range(n_classes)], np.float32)

    keras.utils.set_random_seed(seed)
    policy = keras.mixed_precision.global_policy().name
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        core = network.build(keras, cfg.arch, cfg.image_size, n_classes, cfg.dropout)
        inp = keras.Input((cfg.image_size, cfg.image_size, 3), name="raw")
        aug = (keras3_augment.make_layer(keras, ops, flips=cfg.augment != "none", seed=seed)
               if ops or cfg.augment != "none" else None)
        trainer = keras.Model(inp, core(aug(inp) if aug is not None else inp))
        p_jpeg = recipe.P * recipe.SHARE["jpeg"]
        batch = min(cfg.batch_size, len(y_tr))
        data = host_batches(keras, x_tr, jpegs, y_tr, n_classes, batch, cfg.mixup, p_jpeg, cw, seed)
        steps = len(data) * cfg.epochs
        warm = int(len(data) * cfg.warmup_epochs)
        sched = keras.optimizers.schedules.CosineDecay(
            0.0 if warm else cfg.learning_rate, max(steps - warm, 1), alpha=0.0,
            warmup_target=cfg.learning_rate if warm else None, warmup_steps=warm)
        opt = keras.optimizers.AdamW(sched, weight_decay=cfg.weight_decay, use_ema=cfg.ema > 0,
                                     ema_momentum=cfg.ema or 0.99)
        opt.exclude_from_weight_decay(var_names=["_bn", "bias", "normalize"])
        trainer.compile(optimizer=opt,
                        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                        weighted_metrics=[], metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                        jit_compile=keras.backend.backend() == "jax")  # TF: its image transform has no XLA kernel
        aug_text = ", ".join(f"{k}={v:g}" for k, v in ops.items()) or "none"
        log(f"[2/3] training {cfg.arch} {cfg.epochs} epochs on Keras {keras.__version__} "
            f"({keras.backend.backend()}): train {len(y_tr)}, val {len(y_va)}, {len(data)} steps each, "
            f"augmentation {'flips + ' if cfg.augment != 'none' else ''}{aug_text}")
        result = _train(keras, cfg, trainer, core, data, batch, x_va, y_va, log)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    result.update({"class_names": names, "train_images": int(len(y_tr))})
    _write_history(out, cfg, result["history"], {k: v for k, v in result.items() if k != "history"})
    log(f"[3/3] val accuracy {result['val_accuracy_final']:.4f}; weights in {out}. Next, where the data is:\n"
        f"      celltrain import {out} --split RUN/split.json --data DATA --out RUN2")
    return result


def _write_history(out: Path, cfg: FitConfig, history: list, result: dict | None = None) -> None:
    write_json_atomic(out / HISTORY, {"config": cfg.to_json(), "history": history,
                                      **({"result": result} if result else {})})


def _train(keras, cfg: FitConfig, trainer, core, data, batch: int, x_va, y_va, log) -> dict:
    out = Path(cfg.out)
    n_classes = core.output.shape[-1]
    history: list[dict] = []

    class Log(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.time()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "seconds": round(time.time() - self.t, 2),
                   **{k: round(float(v), 5) for k, v in (logs or {}).items()}}
            history.append(row)
            log(json.dumps(row))
            if (epoch + 1) % SAVE_EVERY == 0 or epoch + 1 == cfg.epochs:
                save_weights(core, out, "raw")  # survives a kill; the last epoch's are the raw final weights
                _write_history(out, cfg, history)

    t0 = time.time()
    trainer.fit(data, epochs=cfg.epochs, validation_data=(x_va, np.eye(n_classes, dtype=np.float32)[y_va]),
                validation_batch_size=512, callbacks=[Log()], verbose=0)
    train_s = time.time() - t0
    # the EMA weights when --ema (fit swaps them in at its end); saved so that import can prove they arrived intact
    val_probs = np.asarray(core.predict(x_va, batch_size=512, verbose=0), np.float32)
    with atomic_path(out / VAL_PROBS) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, val_probs)
    save_weights(core, out, "final")
    return {"train_seconds": round(train_s, 1), "epochs": cfg.epochs,
            "images_per_second": round(len(data) * batch * cfg.epochs / max(train_s, 1e-9), 1),
            "backend": keras.backend.backend(), "keras": keras.__version__,
            "val_accuracy_final": float((val_probs.argmax(1) == y_va).mean()), "history": history}
