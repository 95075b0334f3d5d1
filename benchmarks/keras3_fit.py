"""celltrain's recipe on a GPU machine that has no TensorFlow (Keras 3 on JAX), and back.

`celltrain fit` trains on whatever TensorFlow sees, GPUs included. A lent GPU machine
here has JAX and no way to install TensorFlow (no network; its wheels are far over
what can be carried), so this script runs the same recipe on Keras 3's JAX backend and
hands the weights back to an ordinary scopelite run folder:

    # here: pack the train and val images of a run's saved split (the test images stay here)
    python benchmarks/keras3_fit.py pack ../shared/data/pbc96 runs/soup-v56/split.json .gpu/pbc96.npz
    # on the GPU machine (KERAS_BACKEND=jax; any Keras 3 backend works, tests use tensorflow)
    python benchmarks/keras3_fit.py train .gpu/pbc96.npz --out $OUT --epochs 200
    # here: a run folder that `celltrain evaluate`, `cellcompress` and `celledge` take
    python benchmarks/keras3_fit.py import $OUT --split runs/soup-v56/split.json \
        --data ../shared/data/pbc96 --out runs/gpu-v1

The network is the one `scopelite.train.model.build("efficientnetv2b0")` makes (the same
keras.applications code in Keras 3 and tf-keras, so weights match by name and shape).
Augmentation is celltrain's "strong" policy re-spelled in backend-neutral `keras.ops`, run on
the accelerator: dihedral flips, zoom/shift, brightness/contrast/saturation/hue/gamma,
optical-density stain shifts, defocus, sensor noise and dark blots; JPEG artefacts and
MixUp/CutMix are done on the host (no JPEG codec in keras.ops; labels never reach a layer).
`train --hed S --rotate S` adds celltrain's `--aug hed=S` and `--aug rotate=S` (RandAugment is
not re-spelled here: continue the imported run with `celltrain fit --aug randaugment` on CPU).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

CHUNK_BYTES = 15 * 2**20  # files coming back from a lent machine are capped at 16 MiB each


# ---------------------------------------------------------------------------------------------- pack
def pack(data: str, split_file: str, out: str, splits=("train", "val")) -> dict:
    """The JPEG/PNG bytes of the named splits' images, unchanged, in one .npz (no pickles)."""
    saved = json.loads(Path(split_file).read_text())
    root = Path(data)
    names = saved["class_names"]
    blobs, labels, ids, which = [], [], [], []
    for s in splits:
        for rel in saved[s]:
            p = root / rel
            if not p.is_file():
                sys.exit(f"error: {p} (in {split_file}'s {s} split) does not exist; pack needs the run's data")
            cls = rel.split("/")[0]
            if cls not in names:
                sys.exit(f"error: {rel}: folder {cls!r} is not one of the split's classes {names}")
            blobs.append(np.frombuffer(p.read_bytes(), np.uint8))
            labels.append(names.index(cls))
            ids.append(rel)
            which.append(s)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    from scopelite.edge.bundle import atomic_path  # noqa: PLC0415 - pack runs here, where scopelite is installed

    with atomic_path(out) as tmp:
        np.savez(tmp, blob=np.concatenate(blobs), offsets=offsets, labels=np.array(labels, np.int64),
                 ids=np.array(ids), split=np.array(which), class_names=np.array(names))
    return {s: which.count(s) for s in splits} | {"bytes": int(offsets[-1])}


def unpack(path: str, image_size: int):
    import cv2  # noqa: PLC0415

    with np.load(path, allow_pickle=False) as z:
        blob, offsets, labels = z["blob"], z["offsets"], z["labels"]
        ids, split, names = z["ids"].tolist(), z["split"], z["class_names"].tolist()
    images = np.empty((len(labels), image_size, image_size, 3), np.uint8)
    for i in range(len(labels)):
        img = cv2.imdecode(blob[offsets[i]:offsets[i + 1]], cv2.IMREAD_COLOR)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if img.shape[:2] != (image_size, image_size):
            img = cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_AREA)
        images[i] = img
    return images, labels, ids, split, names


def jpeg_copies(images: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """One JPEG re-compression of every image at a random quality (as celltrain's _jpeg)."""
    import cv2  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    out = np.empty_like(images)
    for i, img in enumerate(images):
        q = int(rng.integers(int(90 - 75 * strength), 95))
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return out


# --------------------------------------------------------------------------------------------- model
def build_core(keras, image_size: int, n_classes: int, dropout: float = 0.2, arch: str = "efficientnetv2b0"):
    """scopelite.train.model.build's network, layer names included, in whichever Keras this is."""
    inp = keras.Input((image_size, image_size, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(inp)
    if arch == "tiny":
        for i, filters in enumerate((16, 32, 64)):
            x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
            x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    else:
        base = keras.applications.EfficientNetV2B0(
            include_top=False, weights=None, input_tensor=x, input_shape=(image_size, image_size, 3),
            include_preprocessing=False, pooling="avg")
        x = keras.layers.Dropout(dropout, name="top_dropout")(base.output)
    out = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inp, out, name=arch)


def weight_name(w) -> str:
    """'block1a_project_conv/kernel' in Keras 3 and tf-keras alike (tf-keras says 'depthwise_kernel:0')."""
    name = getattr(w, "path", None) or w.name
    return name.split(":")[0].replace("/depthwise_kernel", "/kernel")


def save_weights(model, folder: Path, tag: str) -> list[str]:
    """Weights by name in .npz chunks of at most CHUNK_BYTES (written atomically; by hand, since the GPU
    machine this runs on has no scopelite and so no scopelite.edge.bundle.atomic_path)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"weights-{tag}-*.npz"):
        old.unlink()
    chunks, cur, size = [], {}, 0
    for w in model.weights:
        a = np.asarray(w.numpy() if hasattr(w, "numpy") else w).astype(np.float32)
        if cur and size + a.nbytes > CHUNK_BYTES:
            chunks.append(cur)
            cur, size = {}, 0
        cur[weight_name(w)] = a
        size += a.nbytes
    chunks.append(cur)
    files = []
    for i, c in enumerate(chunks):
        f = folder / f"weights-{tag}-{i}.npz"
        tmp = folder / f".weights-{tag}-{i}.tmp.npz"
        np.savez(tmp, **c)
        tmp.replace(f)
        files.append(f.name)
    return files


def load_weight_chunks(folder: Path, tag: str) -> dict[str, np.ndarray]:
    files = sorted(folder.glob(f"weights-{tag}-*.npz"))
    if not files:
        sys.exit(f"error: no weights-{tag}-*.npz in {folder}; point import at the folder `train --out` wrote")
    ws: dict[str, np.ndarray] = {}
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            ws.update({k: z[k] for k in z.files})
    return ws


# -------------------------------------------------------------------------------------- augmentation
# scopelite.train.augment.RGB_FROM_HED, spelled again: the GPU machine has no scopelite (the test pins them equal)
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)


def hed_jitter(ops, x, alpha, beta):
    """celltrain's ``--aug hed`` on a batch: stain densities scaled by ``alpha`` and shifted by ``beta`` (n,1,1,3)."""
    od = -ops.log((x + 1.0) / 256.0)
    hed = ops.einsum("nhwi,io->nhwo", od, HED_FROM_RGB) * alpha + beta
    od = ops.einsum("nhwi,io->nhwo", hed, RGB_FROM_HED)
    return ops.clip(256.0 * ops.exp(-ops.maximum(od, 0.0)) - 1.0, 0.0, 255.0)


def make_augment_layer(keras, strength: float, p: float = 0.5, seed: int = 0, hed: float = 0.0,
                       rotate: float = 0.0):
    """celltrain's "strong" policy (minus JPEG, done on the host) as a layer of keras.ops on batches.

    Each transform is drawn per image with its own probability, as in the tf.data pipeline.
    ``hed`` and ``rotate`` (0: off) are celltrain's ``--aug hed=S`` and ``--aug rotate=S``.
    """
    ops, rnd = keras.ops, keras.random

    def blur_kernels(s):
        sigmas = [0.3 + 2.2 * s * (i + 0.5) / 4 for i in range(4)]
        r = np.arange(-4, 5, dtype=np.float32)
        ks = [np.exp(-(r**2) / (2 * sg**2)) for sg in sigmas]
        return [k / k.sum() for k in ks]

    kernels = blur_kernels(strength)
    c = (1.0 / math.sqrt(3.0))

    class Augment(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(dtype="float32", **kw)
            self.gen = keras.random.SeedGenerator(seed)

        def u(self, shape, lo, hi):
            return rnd.uniform(shape, lo, hi, seed=self.gen)

        def coin(self, n, prob):
            return ops.reshape(ops.cast(self.u((n,), 0.0, 1.0) < prob, "float32"), (n, 1, 1, 1))

        def pick(self, m, a, b):
            return m * a + (1.0 - m) * b

        def call(self, x, training=None):
            if not training:
                return x
            s = strength
            x = ops.cast(x, "float32")
            n = ops.shape(x)[0]
            size = x.shape[1]
            # dihedral: flip left-right, flip up-down, transpose (8 views, a cell has no up)
            x = self.pick(self.coin(n, 0.5), ops.flip(x, 2), x)
            x = self.pick(self.coin(n, 0.5), ops.flip(x, 1), x)
            x = self.pick(self.coin(n, 0.5), ops.transpose(x, (0, 2, 1, 3)), x)
            ctr = (size - 1) / 2.0
            zero = ops.zeros((n, 1))
            if rotate > 0:  # small rotations, up to 15°·s about the centre, reflected borders
                th = self.u((n, 1), -15.0 * rotate, 15.0 * rotate) * (math.pi / 180.0)
                cs, sn = ops.cos(th), ops.sin(th)
                rt = ops.concatenate([cs, -sn, ctr - cs * ctr + sn * ctr, sn, cs, ctr - sn * ctr - cs * ctr,
                                      zero, zero], axis=1)
                turned = keras.ops.image.affine_transform(x, rt, interpolation="bilinear", fill_mode="reflect")
                x = self.pick(self.coin(n, p), turned, x)
            # zoom by up to 15 %·s and shift by up to 6 px·s (scaled to size), reflected borders
            z = self.u((n, 1), 1.0 - 0.15 * s, 1.0 + 0.15 * s)
            sh = 6.0 * s * size / 96.0
            t = self.u((n, 2), -sh, sh)
            inv = 1.0 / z
            tf_ = ops.concatenate([inv, zero, ctr - ctr * inv + t[:, :1], zero, inv, ctr - ctr * inv + t[:, 1:],
                                   zero, zero], axis=1)
            zoomed = keras.ops.image.affine_transform(x, tf_, interpolation="bilinear", fill_mode="reflect")
            x = self.pick(self.coin(n, p), zoomed, x)
            # colour: brightness, contrast, saturation, hue (rotation about the grey axis), gamma
            y = x / 255.0
            y = y + self.u((n, 1, 1, 1), -0.25 * s, 0.25 * s)
            mean = ops.mean(y, axis=(1, 2), keepdims=True)
            y = (y - mean) * self.u((n, 1, 1, 1), 1 - 0.45 * s, 1 + 0.45 * s) + mean
            grey = ops.sum(y * ops.convert_to_tensor([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
            y = grey + (y - grey) * self.u((n, 1, 1, 1), 1 - 0.6 * s, 1 + 0.6 * s)
            th = self.u((n,), -0.06 * s, 0.06 * s) * 2.0 * math.pi
            cs, sn = ops.cos(th), ops.sin(th)
            a, b = cs + (1 - cs) / 3.0, (1 - cs) / 3.0
            rot = ops.stack([ops.stack([a, b - c * sn, b + c * sn], -1),
                             ops.stack([b + c * sn, a, b - c * sn], -1),
                             ops.stack([b - c * sn, b + c * sn, a], -1)], 1)  # (n, 3 out, 3 in)
            y = ops.einsum("nhwi,noi->nhwo", y, rot)
            gamma = ops.exp(self.u((n, 1, 1, 1), -0.35 * s, 0.35 * s))
            y = ops.power(ops.clip(y, 0.0, 1.0), gamma)
            x = self.pick(self.coin(n, p), y * 255.0, x)
            # stain: Beer-Lambert optical density scaled and shifted per channel
            od = -ops.log((x + 1.0) / 256.0)
            od = ops.maximum(od * self.u((n, 1, 1, 3), 1 - 0.3 * s, 1 + 0.3 * s)
                             + self.u((n, 1, 1, 3), -0.08 * s, 0.08 * s), 0.0)
            x = self.pick(self.coin(n, p), ops.clip(256.0 * ops.exp(-od) - 1.0, 0.0, 255.0), x)
            if hed > 0:  # stain jitter in haematoxylin-eosin-DAB space
                jit = hed_jitter(ops, x, self.u((n, 1, 1, 3), 1 - 0.3 * hed, 1 + 0.3 * hed),
                                 self.u((n, 1, 1, 3), -0.05 * hed, 0.05 * hed))
                x = self.pick(self.coin(n, p), jit, x)
            # defocus: one of four Gaussian sigmas across celltrain's range, per image
            choice = ops.floor(self.u((n,), 0.0, 4.0))
            blurred = 0.0
            for i, k in enumerate(kernels):
                kx = ops.convert_to_tensor(np.tile(k.reshape(1, 9, 1, 1), (1, 1, 3, 1)))
                ky = ops.convert_to_tensor(np.tile(k.reshape(9, 1, 1, 1), (1, 1, 3, 1)))
                bi = ops.depthwise_conv(ops.depthwise_conv(x, kx, 1, "same"), ky, 1, "same")
                blurred = blurred + ops.reshape(ops.cast(choice == i, "float32"), (n, 1, 1, 1)) * bi
            x = self.pick(self.coin(n, p * 0.6), blurred, x)
            # sensor noise
            sigma = self.u((n, 1, 1, 1), 1.0, 1.0 + 14.0 * s)
            x = self.pick(self.coin(n, p * 0.6), x + rnd.normal(ops.shape(x), seed=self.gen) * sigma, x)
            # 1-3 soft dark blots up to a quarter of the crop wide
            rng_ = ops.cast(ops.arange(size), "float32")
            yy = ops.reshape(rng_, (1, 1, size, 1))
            xx = ops.reshape(rng_, (1, 1, 1, size))
            cy, cx = self.u((n, 3, 1, 1), 0.0, size), self.u((n, 3, 1, 1), 0.0, size)
            ry = self.u((n, 3, 1, 1), 0.02, 0.02 + 0.12 * s) * size
            rx = self.u((n, 3, 1, 1), 0.02, 0.02 + 0.12 * s) * size
            d = ops.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
            count = ops.floor(self.u((n, 1, 1, 1), 1.0, 4.0))
            keep = ops.cast(ops.reshape(ops.cast(ops.arange(3), "float32"), (1, 3, 1, 1)) < count, "float32")
            mask = ops.max(ops.sigmoid((1.0 - d) * 6.0) * keep, axis=1)[..., None]
            dark = self.u((n, 1, 1, 1), 0.5, 1.0)
            x = self.pick(self.coin(n, p * 0.3), x * (1.0 - dark * mask), x)
            return ops.clip(x, 0.0, 255.0)

    return Augment(name="augment")


def host_batches(keras, images, jpegs, labels, n_classes, batch_size, mixup, p_jpeg, class_weight, seed):
    """Epochs of shuffled (pixels, soft labels, sample weights): JPEG copies and MixUp/CutMix on the host."""

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=4, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(labels))

        def __len__(self):
            return len(labels) // batch_size

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
                    lam = r.beta(0.4, 0.4, size=len(idx)).astype(np.float32)
                    x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[perm]
                    y = lam[:, None] * y + (1 - lam[:, None]) * y[perm]
                else:  # CutMix: one box for the batch
                    h = x.shape[1]
                    lam = r.beta(0.4, 0.4)
                    ch = int(h * math.sqrt(1 - lam))
                    y0, x0 = r.integers(0, h - ch + 1, size=2)
                    x[:, y0:y0 + ch, x0:x0 + ch] = x[perm, y0:y0 + ch, x0:x0 + ch]
                    area = ch * ch / (h * h)
                    y = (1 - area) * y + area * y[perm]
            return x, y, w

    return Batches()


# --------------------------------------------------------------------------------------------- train
def train(args) -> dict:
    import keras  # noqa: PLC0415 - Keras 3; its backend comes from KERAS_BACKEND

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_load = time.time()
    images, labels, ids, split, names = unpack(args.pack, args.image_size)
    tr, va = split == "train", split == "val"
    if args.limit:
        tr = tr & (np.cumsum(tr) <= args.limit)
    x_tr, y_tr, x_va, y_va = images[tr], labels[tr], images[va].astype(np.float32), labels[va]
    n_classes = len(names)
    jpegs = jpeg_copies(x_tr, args.strength, args.seed) if args.augment == "strong" else None
    counts = np.bincount(y_tr, minlength=n_classes)
    cw = (len(y_tr) / (n_classes * np.maximum(counts, 1))).astype(np.float32)
    print(f"data: train {len(y_tr)}, val {len(y_va)}, classes {names}; read in {time.time() - t_load:.1f} s",
          flush=True)

    keras.utils.set_random_seed(args.seed)
    if args.precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    core = build_core(keras, args.image_size, n_classes, args.dropout, args.arch)
    inp = keras.Input((args.image_size, args.image_size, 3), name="raw")
    aug = (make_augment_layer(keras, args.strength, seed=args.seed, hed=args.hed, rotate=args.rotate)
           if args.augment == "strong" else None)
    trainer = keras.Model(inp, core(aug(inp) if aug is not None else inp))

    data = host_batches(keras, x_tr, jpegs, y_tr, n_classes, args.batch_size, args.mixup,
                        0.25 if jpegs is not None else 0.0, cw, args.seed)
    steps = len(data) * args.epochs
    warm = int(len(data) * args.warmup_epochs)
    sched = keras.optimizers.schedules.CosineDecay(
        0.0 if warm else args.lr, max(steps - warm, 1), alpha=0.0,
        warmup_target=args.lr if warm else None, warmup_steps=warm)
    opt = keras.optimizers.AdamW(sched, weight_decay=args.weight_decay, use_ema=args.ema > 0,
                                 ema_momentum=args.ema or 0.99)
    opt.exclude_from_weight_decay(var_names=["_bn", "bias", "normalize"])
    trainer.compile(optimizer=opt,
                    loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
                    weighted_metrics=[], metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                    jit_compile=keras.backend.backend() == "jax")  # TF: its image transform has no XLA kernel
    val_y = np.eye(n_classes, dtype=np.float32)[y_va]
    history: list[dict] = []
    t0 = time.time()

    class Log(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.time()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "seconds": round(time.time() - self.t, 2),
                   **{k: round(float(v), 5) for k, v in (logs or {}).items()}}
            history.append(row)
            print(json.dumps(row), flush=True)
            if (epoch + 1) % args.save_every == 0 or epoch + 1 == args.epochs:
                save_weights(core, out, "raw")  # survives a kill; the last epoch's are the raw final weights
                (out / "history.json").write_text(json.dumps({"args": vars(args), "history": history}))

    trainer.fit(data, epochs=args.epochs, validation_data=(x_va, val_y),
                validation_batch_size=512, callbacks=[Log()], verbose=0)
    train_s = time.time() - t0

    # the EMA weights when --ema (fit swaps them in at its end); saved so `import` can prove they arrived intact
    val_probs = core.predict(x_va, batch_size=512, verbose=0).astype(np.float32)
    np.save(out / "val-probs.npy", val_probs)
    result = {"train_seconds": round(train_s, 1), "epochs": args.epochs, "train_images": int(len(y_tr)),
              "images_per_second": round(len(data) * args.batch_size * args.epochs / train_s, 1),
              "backend": keras.backend.backend(), "keras": keras.__version__, "class_names": names,
              "val_accuracy_final": float((val_probs.argmax(1) == y_va).mean())}
    save_weights(core, out, "final")
    (out / "history.json").write_text(json.dumps({"args": vars(args), "history": history, "result": result}))
    print(json.dumps(result), flush=True)
    return result


# -------------------------------------------------------------------------------------------- import
def import_run(args) -> None:
    """Weights from `train` -> a scopelite run folder (model.keras + model.json, split.json, config.json)."""
    import shutil  # noqa: PLC0415

    from scopelite.edge.bundle import atomic_path, write_json_atomic, write_sidecar  # noqa: PLC0415
    from scopelite.edge.errors import UserError  # noqa: PLC0415
    from scopelite.train import data as data_lib  # noqa: PLC0415
    from scopelite.train import fit as fit_lib  # noqa: PLC0415
    from scopelite.train import model as model_lib  # noqa: PLC0415
    from scopelite.train.config import FitConfig  # noqa: PLC0415
    from scopelite.train.run import predict  # noqa: PLC0415

    src = Path(args.weights)
    hist = json.loads((src / "history.json").read_text()) if (src / "history.json").is_file() else {}
    targs = hist.get("args", {})
    ws = load_weight_chunks(src, args.tag)
    out = Path(args.out)
    if (out / "model.keras").exists():
        sys.exit(f"error: {out} already holds a model; give a new --out")
    saved = json.loads(Path(args.split).read_text())
    n_classes = len(saved["class_names"])
    size = int(targs.get("image_size", args.image_size))
    arch = targs.get("arch", "efficientnetv2b0")
    try:
        model = model_lib.build(arch, size, n_classes, weights="none", batch_size=None)
        missing = [n for n in (weight_name(w) for w in model.weights) if n not in ws]
        if missing or len(ws) != len(model.weights):
            sys.exit(f"error: the weights do not fit {arch}: {len(missing)} missing (first: {missing[:1]}), "
                     f"{len(ws)} given for {len(model.weights)}")
        model.set_weights([ws[weight_name(w)] for w in model.weights])
        cfg = FitConfig(out=str(out), data=args.data, arch=arch, image_size=size,
                        epochs=int(targs.get("epochs", 0)), batch_size=int(targs.get("batch_size", 0)),
                        learning_rate=float(targs.get("lr", 0.0)), weight_decay=float(targs.get("weight_decay", 0)),
                        warmup_epochs=float(targs.get("warmup_epochs", 0)),
                        label_smoothing=float(targs.get("label_smoothing", 0)),
                        dropout=float(targs.get("dropout", 0.2)), augment=targs.get("augment", "strong"),
                        strength=float(targs.get("strength", 0.7)), mixup=float(targs.get("mixup", 0)),
                        aug={k: float(targs[k]) for k in ("hed", "rotate") if targs.get(k)} or None,
                        seed=int(saved.get("seed", 0)), train_seed=int(targs.get("seed", 0)),
                        head_epochs=0, fine_tune_fraction=1.0)
        ds = data_lib.load(args.data, size, seed=cfg.seed, progress=True)
        split = data_lib.load_split(args.split, ds)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.split, out / "split.json")
        write_json_atomic(out / "config.json", cfg.to_json())
        va, te = ds.subset(split["val"]), ds.subset(split["test"])
        metrics = {**fit_lib.heldout_metrics(model, va, te, ds.class_names),
                   "train_seconds": hist.get("result", {}).get("train_seconds")}
        check = {}
        if args.tag == "final" and (src / "val-probs.npy").is_file():
            # the trainer's own predictions on the val images against this model's: same weights, same answers
            theirs = np.load(src / "val-probs.npy", allow_pickle=False)
            ours = predict(model, va.images)
            if theirs.shape == ours.shape:
                check = {"val_top1_agreement_with_trainer": float((theirs.argmax(1) == ours.argmax(1)).mean()),
                         "val_max_abs_prob_diff_with_trainer": float(np.abs(theirs - ours).max())}
        final = out / "model.keras"
        with atomic_path(final) as tmp:
            model.save(tmp)
        write_sidecar(final, fit_lib.keras_sidecar(final, cfg, ds, metrics, {
            "trained_with": {"script": "benchmarks/keras3_fit.py", "weights": args.tag,
                             **{k: hist.get("result", {}).get(k) for k in ("backend", "keras", "epochs")},
                             **check}}))
    except UserError as e:
        sys.exit(f"error: {e}")
    print(json.dumps({"val_accuracy": metrics["val"]["accuracy"], "test_accuracy": metrics["test"]["accuracy"],
                      "test_macro_f1": metrics["test"]["macro_f1"], **check, "out": str(final)}))


def _need(path: str, what: str) -> None:
    """A missing input is one line on stderr, not a traceback."""
    if not Path(path).exists():
        sys.exit(f"error: {path}: no such file or folder ({what})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="the train and val images of a saved split, as one .npz")
    p.add_argument("data")
    p.add_argument("split")
    p.add_argument("out")
    t = sub.add_parser("train", help="train with Keras 3 (KERAS_BACKEND=jax on a GPU machine)")
    t.add_argument("pack")
    t.add_argument("--out", required=True)
    t.add_argument("--arch", default="efficientnetv2b0", choices=("efficientnetv2b0", "tiny"))
    t.add_argument("--image-size", type=int, default=96)
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--warmup-epochs", type=float, default=5.0)
    t.add_argument("--label-smoothing", type=float, default=0.1)
    t.add_argument("--dropout", type=float, default=0.2)
    t.add_argument("--augment", default="strong", choices=("strong", "none"))
    t.add_argument("--strength", type=float, default=0.7)
    t.add_argument("--hed", type=float, default=0.0, help="stain jitter in HED space at this strength (0: off)")
    t.add_argument("--rotate", type=float, default=0.0, help="small rotations at this strength (0: off)")
    t.add_argument("--mixup", type=float, default=0.3)
    t.add_argument("--ema", type=float, default=0.999, help="EMA momentum of the weights; 0: off")
    t.add_argument("--precision", default="bf16", choices=("bf16", "float32"))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, default=0, help="use only the first N training images (smoke tests)")
    t.add_argument("--save-every", type=int, default=10)
    i = sub.add_parser("import", help="make a scopelite run folder from `train`'s weights")
    i.add_argument("weights", help="the folder `train --out` wrote")
    i.add_argument("--split", required=True, help="the split.json the pack was made from")
    i.add_argument("--data", required=True, help="the dataset (the test images are read from it)")
    i.add_argument("--out", required=True)
    i.add_argument("--tag", default="final", choices=("final", "raw"))
    i.add_argument("--image-size", type=int, default=96)
    args = ap.parse_args(argv)
    for attr, what in (("data", "the class-folder dataset"), ("split", "a run's split.json"),
                       ("pack", "made by `pack`"), ("weights", "the folder `train --out` wrote")):
        if getattr(args, attr, None):
            _need(getattr(args, attr), what)
    if args.cmd == "pack":
        print(json.dumps(pack(args.data, args.split, args.out)))
    elif args.cmd == "train":
        train(args)
    else:
        import_run(args)


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    main()
