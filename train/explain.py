"""Grad-CAM: where in the image the model looked for its answer (Selvaraju et al., 2017)."""
from __future__ import annotations

import collections
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge.bundle import write_bytes_atomic
from scopelite.edge.preprocess import prepare
from scopelite.edge.sources import SourceError, read_image_rgb

from ._keras import keras, tf
from .run import load_keras_bundle


def last_feature_layer(model):
    """The last layer with a spatial (4-D) output: the feature map Grad-CAM weighs."""
    for layer in reversed(model.layers):
        shape = layer.output.shape
        if len(shape) == 4 and not isinstance(layer, keras.layers.InputLayer):
            return layer
    raise ValueError("model has no spatial feature map")


def grad_cam(model, image: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """Heat map (H, W) in 0..1 for ``class_index`` (default: the predicted class).

    CAM = ReLU(sum_k alpha_k A_k), alpha_k = mean over positions of d y_c / d A_k.
    """
    layer = last_feature_layer(model)
    grad_model = keras.Model(model.inputs, [layer.output, model.output])
    x = tf.convert_to_tensor(image[None].astype(np.float32))
    with tf.GradientTape() as tape:
        fmap, probs = grad_model(x, training=False)
        c = int(tf.argmax(probs[0])) if class_index is None else class_index
        score = probs[:, c]
    grads = tape.gradient(score, fmap)[0]
    weights = tf.reduce_mean(grads, axis=(0, 1))
    cam = tf.nn.relu(tf.reduce_sum(fmap[0] * weights, axis=-1)).numpy()
    cam = cam / cam.max() if cam.max() > 0 else cam
    cam = cv2.resize(cam, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cam, c, probs[0].numpy()


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    heat = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * cam), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return np.uint8(np.clip((1 - alpha) * image + alpha * heat, 0, 255))


def overlay_names(images: list[Path]) -> list[str]:
    """``<stem>_gradcam.png`` per image; images of one stem (a/cell.jpg, a/cell.png, b/cell.jpg) wrote one file over
    the other: theirs are named by folder and file name too (``a_cell.jpg_gradcam.png``), and numbered if still alike."""
    stems = collections.Counter(Path(p).stem for p in images)
    used, names = set(), []
    for p in images:
        p = Path(p)
        base = p.stem if stems[p.stem] == 1 else f"{p.parent.name}_{p.name}"
        name, k = f"{base}_gradcam.png", 1
        while name in used:
            k += 1
            name = f"{base}_{k}_gradcam.png"
        used.add(name)
        names.append(name)
    return names


def explain(run_model: str | Path, images: list[Path], out: str | Path, scale: int = 3) -> list[dict]:
    """Write ``<image stem>_gradcam.png`` (image | overlay, label and score) per image into ``out``
    (``overlay_names``); an image that cannot be read gets a record with its ``error``, and the rest go on."""
    sc, model = load_keras_bundle(run_model)
    out = Path(out)
    results = []
    for path, name in zip(images, overlay_names(images)):
        try:
            rgb = read_image_rgb(path)
        except SourceError as e:
            results.append({"image": str(path), "error": str(e)})
            continue
        img = prepare(rgb, sc.input)
        cam, c, probs = grad_cam(model, img)
        pair = np.hstack([img, overlay(img, cam)])
        pair = cv2.resize(pair, (pair.shape[1] * scale, pair.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
        bar = np.full((26, pair.shape[1], 3), 255, np.uint8)
        text = f"{sc.labels[c]} {probs[c]:.2f}"
        cv2.putText(bar, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(np.vstack([pair, bar]), cv2.COLOR_RGB2BGR))
        dest = out / name
        write_bytes_atomic(dest, buf.tobytes())
        results.append({"image": str(path), "label": sc.labels[c], "score": float(probs[c]), "overlay": str(dest)})
    return results
