"""Knowing when the images are unlike the training data: a stain distance. Pure numpy + OpenCV.

A model trained on one lab's slides is confidently wrong on another lab's stain.
The cheapest signal that this is happening needs no second network: the colour
of the red cells and of the nuclei in optical density (``stain.py``), which is
independent of the lamp and the camera's white balance but not of the stain.

``StainStats`` of an image (a field or a crop) are the median OD vectors of its
red-cell pixels and of its stained (nucleus) pixels. The sidecar of a model keeps
the training images' stats (``reference``, measured by ``celltrain fit``). The
score of an image is the distance between the two in log-OD:

    score = || log(rbc / rbc_ref) || + || log(nucleus / nucleus_ref) ||

0 is "stained like the training data"; PBC's own crops score about 0.2-0.4; a
score above ``reference.threshold`` (the 99th percentile of the training images'
own scores) means "calibrate or adapt before trusting the differential". An image
with no measurable red cells or nucleus scores ``None`` (nothing to compare).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .stain import Layers, stain_layers

_MIN_PIXELS = 30
_FLOOR = 0.05  # OD floor before the log: below it is noise, and the log would magnify it


@dataclass(frozen=True)
class StainStats:
    rbc_od: tuple[float, float, float] | None
    nucleus_od: tuple[float, float, float] | None


@dataclass(frozen=True)
class StainReference:
    """The training images' stain, and the score above which an image is unlike them."""

    rbc_od: tuple[float, float, float]
    nucleus_od: tuple[float, float, float]
    threshold: float

    def to_json(self) -> dict:
        return {"rbc_od": list(self.rbc_od), "nucleus_od": list(self.nucleus_od), "threshold": self.threshold}

    @classmethod
    def from_json(cls, d: dict) -> "StainReference":
        return cls(tuple(float(v) for v in d["rbc_od"]), tuple(float(v) for v in d["nucleus_od"]),
                   float(d["threshold"]))


def reference_of(sidecar) -> StainReference | None:
    """The stain reference a model's sidecar carries (None: not measured, or no sidecar)."""
    d = getattr(sidecar, "stain_reference", None)
    return StainReference.from_json(d) if d else None


def unlike_advice(packaged: bool, site_given: bool) -> str:
    """What to do about images stained unlike the model's training data. A lab's own model (adapted, or trained on
    its cells) was told to "adapt the model to this lab" as the packaged one is (a second-site trial): its training
    data are that lab's labelled cells, so the advice is to label cells of these slides too."""
    if not packaged:
        return ("this model was trained on cells of other slides or another set-up: label some cells of these "
                "slides too and fit again (celltrain fit --preset few-shot; docs/cross-lab.md)")
    return (("" if site_given else "calibrate or ")
            + "adapt the model to this lab (celltrain fit --preset few-shot; docs/cross-lab.md)")


def _vec(v) -> tuple[float, float, float]:
    return tuple(round(float(x), 4) for x in v)


def stain_stats(image_rgb: np.ndarray, layers: Layers | None = None) -> StainStats:
    """Median OD of an image's red-cell pixels and of its stained pixels (None where too few)."""
    layers = layers if layers is not None else stain_layers(image_rgb)
    # every other row and column: medians need no more
    stained = layers.residual[::2, ::2] > layers.t_stained
    near = cv2.dilate(stained.astype(np.uint8), np.ones((4, 4), np.uint8)).astype(bool)
    red = (layers.od[::2, ::2] > layers.t_cell) & ~near
    n_red, n_stained = int(red.sum()), int(stained.sum())
    if layers.od_table is not None:
        rbc_od, nuc_od = _medians_from_counts(image_rgb, layers.od_table, red, stained)
    else:
        rbc_od, nuc_od = (np.median(layers.od_raw[::2, ::2][m], axis=0) if m.any() else None for m in (red, stained))
    rbc = _vec(rbc_od) if n_red >= _MIN_PIXELS // 4 else None
    nuc = _vec(nuc_od) if n_stained >= _MIN_PIXELS // 4 else None
    return StainStats(rbc, nuc)


def _medians_from_counts(image_rgb: np.ndarray, table: np.ndarray, *masks: np.ndarray) -> list[np.ndarray | None]:
    """Per mask (disjoint, on every other row and column), ``np.median(od_raw[::2, ::2][mask], axis=0)`` from counts of the
    image's uint8 values, in a fifth of the time: a channel's OD is ``table[value]``, which falls as the value
    rises, so the middle OD values are those of the middle image values (for an even count the mean of the two,
    in float32, as numpy's median). None for an empty mask."""
    sub = image_rgb[::2, ::2]
    label = np.zeros(masks[0].shape, np.int32)
    for k, m in enumerate(masks, 1):
        label[m] = k
    counts = [np.bincount((sub[..., c].astype(np.int32) * (len(masks) + 1) + label).ravel(),
                          minlength=256 * (len(masks) + 1)).reshape(256, -1) for c in range(3)]
    out = []
    for k in range(1, len(masks) + 1):
        n = int(counts[0][:, k].sum())
        if n == 0:
            out.append(None)
            continue
        med = np.empty(3, np.float32)
        for c in range(3):
            lo, hi = np.searchsorted(np.cumsum(counts[c][:, k]), [(n - 1) // 2 + 1, n // 2 + 1])
            med[c] = (table[lo, c] + table[hi, c]) / np.float32(2)
        out.append(med)
    return out


def score(stats: StainStats, ref: StainReference) -> float | None:
    """Stain distance of an image to the training data (see the module docstring)."""
    if stats.rbc_od is None or stats.nucleus_od is None:
        return None
    d = 0.0
    for v, r in ((stats.rbc_od, ref.rbc_od), (stats.nucleus_od, ref.nucleus_od)):
        d += float(np.linalg.norm(np.log(np.maximum(v, _FLOOR)) - np.log(np.maximum(r, _FLOOR))))
    return round(d, 4)


def reference_from(images: np.ndarray, sample: int = 400, seed: int = 0, quantile: float = 99.0) -> StainReference | None:
    """The stain reference of a set of training images: median stats, threshold at their own ``quantile``."""
    idx = np.random.default_rng(seed).permutation(len(images))[:sample]
    stats = [stain_stats(np.ascontiguousarray(images[i])) for i in idx]
    rbc = [s.rbc_od for s in stats if s.rbc_od is not None]
    nuc = [s.nucleus_od for s in stats if s.nucleus_od is not None]
    if len(rbc) < 10 or len(nuc) < 10:
        return None
    ref = StainReference(_vec(np.median(rbc, axis=0)), _vec(np.median(nuc, axis=0)), 0.0)
    scores = [v for v in (score(s, ref) for s in stats) if v is not None]
    if len(scores) < 10:  # no image holds both a red cell and a nucleus to compare
        return None
    return StainReference(ref.rbc_od, ref.nucleus_od, round(float(np.percentile(scores, quantile)), 4))
