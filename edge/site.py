"""Site calibration: what is fixed for one microscope, measured once, applied to every frame. Pure.

A lab's microscope has one magnification, one lamp and one camera, and its slides one stain. What
``celledge calibrate`` measures on a few unlabelled frames of it, and ``--site FILE`` applies:

* **scale**: the red-cell diameter in the site's pixels (red cells are about 7.5 µm across), the
  median over the calibration frames. Used for the crops instead of the per-frame ruler, which a
  frame's specks, fibres or crowding can fool (``docs/robustness.md``, native debris); the
  per-frame ruler is still measured and reported beside it (``frame_rbc_px``).
* **background** (white balance): the median colour of the empty slide. With ``colour`` on, each
  classified crop is multiplied per channel by ``gain`` = training background / site background.
* **stain**: the median stain distance of the frames to the model's training data (``ood.py``) and
  whether the images are unlike it: the advice to adapt the model (``celltrain fit --preset few-shot``).

Nothing here depends on the slide's class mix: no statistic of the cells' classes, no BatchNorm
re-estimation (which fails exactly when a slide's mix is not the training mix).

Which parts are on by default was measured (rule and figures: ``benchmarks/results/site-calibration.json``,
``docs/cross-lab.md``): neither. The site scale rescued PBC fields under heavy native debris (127 -> 154 of
160) but cost 2 of 120 clean PBC fields and 10 of 181 DeepBioNet fields (DeepBioNet pools two
magnifications); the white balance cost DeepBioNet 15 fields. ``celledge calibrate --scale`` / ``--colour``
turn them on; the file always records both, with the stain distance and the advice.

The record (JSON, ``SCHEMA``)::

    {"schema": "scopelite-site/1", "created": "...", "source": "...", "frames": 30,
     "model": {"name": "bloodcell_int8.tflite", "input_px": 96, "rbc_px": 18.0, "sha256": "...",
               "source_sha256": "..."},
     "scale": {"use": false, "rbc_px": 57.2, "um_per_px": 0.1311, "iqr": [55.0, 59.1], "frames": 30,
               "magnifications": [{"rbc_px": 57.2, "frames": 30}]},
     "background": [171.0, 208.0, 222.0],
     "colour": {"use": false, "gain": [1.39, 0.99, 1.03], "target_background": [255.0, 228.0, 203.0]},
     "stain": {"distance": 1.42, "threshold": 0.62, "unlike_training": true, "unlike_frames": 29, "frames": 30},
     "advice": "..."}
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import cv2
import numpy as np

from . import ood
from .errors import UserError, read_settings_text
from .field import MAX_SIDE, crop_at
from .scale import crop_side, estimate_rbc_diameter
from .frameread import read_frame
from .illumination import ADVISE, UNEVEN
from .noise import NOISY
from .stain import frame_background, is_greyscale

SCHEMA = "scopelite-site/1"
RBC_UM = 7.5  # a red cell's diameter in every blood smear, µm
# The training lab's background (PBC, CellaVision DM96): the median of ``stain.frame_background`` over every
# 4th of ../shared/data/pbc-fields (40 fields; benchmarks/results/site-calibration.json). The target of the
# white balance for the shipped model and any model trained on PBC.
TRAINING_BACKGROUND = (255.0, 228.0, 203.0)
DEFAULT_FRAMES = 30
FEW_FRAMES = 5  # a scale measured on fewer frames than this is reported with a warning
SAME_VIEW = 1.5  # grey levels: a frame whose 32x24 thumbnail is this close to an earlier one shows the same view
CROP_SIZED_PX = 300  # a frame whose longer side is no larger is a cell's crop (celledge export: 256 px at most;
# pbc96: 96), not a camera's field (PBC's fields: 360 px; a 320x240 camera), whatever the model's input
MAX_REFLECT = 1.5  # the site square may exceed a single-cell image's side by this much (borders reflected), no more
GAIN_RANGE = (0.2, 5.0)  # a white balance outside this is not a lamp or a camera: a wrong measurement
ADAPT_ADVICE = ("the images are unlike the model's training data: adapt with celltrain fit --preset few-shot "
                "(label 25 cells per class you see; docs/cross-lab.md)")
LIKE_ADVICE = "the images are stained like the model's training data"
# Frames whose measured red cells cover less than this share of the view (the median over the frames with a ruler)
# while the pixel noise is above NOISY are camera noise, not a smear's fields. Measured in session 33 (red cells the
# ruler rests on x their disc / the view; tools/smear_cover.py): the median over a set of real fields is 9-25 % (PBC's
# 160, also at 0.2x and under defocus or noise at severity 5; DeepBioNet's fields and detection frames), single real
# fields 0.6 % at the least; frames of random pixels or Gaussian noise 0.05-0.6 % in the median, single frames up to
# 1.2 %. A crowded smear covers less too (the ruler counts lone red cells: generated fields at 3x the red cells,
# 1-4.5 %), but its noise is low (2-3 levels; noise frames 20-52), so both must say "noise".
MIN_RED_COVER = 0.02


class SiteError(UserError):
    """A site file that cannot be used: one ``Error:`` line per mistake (``errors.print_error``)."""

    def __init__(self, lines: list[str]):
        self.lines = list(lines)
        super().__init__("; ".join(self.lines))


@dataclass(frozen=True)
class FrameMeasure:
    """One calibration frame: its red-cell diameter (None: too few red cells), background, stain distance, how far
    its light falls off across the view, its pixel noise and how much of it is pure white."""

    rbc_px: float | None
    red_cells: int
    background: tuple[float, float, float]
    distance: float | None  # None: no reference, or no red cell and nucleus to compare
    falloff: float = 0.0  # illumination.flatten's (0: lit evenly)
    noise: float = 0.0  # noise.noise_level's, grey levels
    overexposed: float = 0.0  # illumination.overexposed's: the share of the view pure white (0: under OVEREXPOSED)
    red_cover: float | None = None  # the share of the view the measured red cells cover (None: no ruler)
    no_colour: bool = False  # a blank or monochrome frame (``stain.is_greyscale``): left out of the site's figures


def measure_frame(frame_rgb: np.ndarray, reference: ood.StainReference | None = None) -> FrameMeasure:
    """What calibration reads from one RGB frame (the per-frame ruler, the background, the stain distance), read
    as field mode reads it: uneven light divided out, cells found on a smoothed copy of a noisy frame."""
    read = read_frame(frame_rgb)  # as watch reads it (a frame over 1280 px searched at half size)
    est = estimate_rbc_diameter(read.view, read.layers)
    rbc = None if est.diameter_px is None else est.diameter_px * read.factor
    distance = ood.score(ood.stain_stats(read.view, read.layers), reference) if reference is not None else None
    bg = tuple(round(float(v), 1) for v in frame_background(read.frame))
    cover = None if est.diameter_px is None else \
        est.cells * math.pi * (est.diameter_px / 2) ** 2 / (read.view.shape[0] * read.view.shape[1])
    return FrameMeasure(rbc, est.cells, bg, distance, read.uneven, round(read.noise, 1), read.overexposed,
                        None if cover is None else round(cover, 5), is_greyscale(frame_rgb))


def frame_sizes(shapes, tolerance: float = 0.1) -> list[str]:
    """The frame sizes ("WxH") of a set of (width, height), sizes within ``tolerance`` of each other on both sides
    taken as one (one camera's images cropped a few pixels apart: PBC's 360x360 and 360x363), each named by its
    smallest member; sorted."""
    groups: list[list[tuple[int, int]]] = []
    for w, h in sorted(shapes):
        for g in groups:
            gw, gh = g[0]
            if abs(w - gw) <= tolerance * max(w, gw) and abs(h - gh) <= tolerance * max(h, gh):
                g.append((w, h))
                break
        else:
            groups.append([(w, h)])
    return sorted(f"{g[0][0]}x{g[0][1]}" for g in groups)


def magnifications(sizes, min_share: float = 0.15, min_ratio: float = 1.3) -> list[dict]:
    """The magnifications a set of per-frame red-cell diameters shows: one group, or two when the best split
    (largest between-group variance of the log sizes) leaves at least ``min_share`` of the frames on each side
    and the groups' medians are ``min_ratio`` apart. One microscope and objective varies within about
    +-10 % (PBC: 60-78 px, one group); DeepBioNet's fields are two groups (about 52 and 74 px): two
    set-ups in one folder, which no single site scale fits."""
    v = np.sort(np.asarray(list(sizes), np.float64))
    groups = [v]
    if len(v) >= 6:
        lv = np.log(v)
        best, k = -1.0, None
        for i in range(1, len(v)):
            a, b = lv[:i], lv[i:]
            var = len(a) * len(b) * (a.mean() - b.mean()) ** 2
            if var > best:
                best, k = var, i
        lo, hi = v[:k], v[k:]
        if min(len(lo), len(hi)) >= min_share * len(v) and np.median(hi) >= min_ratio * np.median(lo):
            groups = [lo, hi]
    return [{"rbc_px": round(float(np.median(g)), 2), "frames": int(len(g))} for g in groups]


def pick_evenly(items: list, n: int) -> list:
    """``n`` of ``items`` spread evenly over them, in order (all of them when there are no more than ``n``):
    a folder's calibration frames come from all of it, not from its first class or slide."""
    if len(items) <= n:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def gain_for(background, target=TRAINING_BACKGROUND) -> tuple[float, float, float]:
    """Per-channel white-balance gain taking the site's background to the training one."""
    return tuple(round(float(t) / max(float(b), 1.0), 4) for b, t in zip(background, target))


def apply_gain(image_rgb: np.ndarray, gain) -> np.ndarray:
    """RGB uint8 with each channel multiplied by its gain (rounded, clipped to 0-255)."""
    v = np.arange(256, dtype=np.float64)[:, None]
    table = np.clip(np.round(v * np.asarray(gain, np.float64)[None, :]), 0, 255).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(image_rgb), table.reshape(256, 1, 3))


def balance_to(image_rgb: np.ndarray, background, target=TRAINING_BACKGROUND) -> np.ndarray:
    """``image_rgb`` with ``background`` taken to ``target`` per channel."""
    return apply_gain(image_rgb, gain_for(background, target))


def calibrate(frames: Iterable[np.ndarray], *, input_px: int, model_rbc_px: float, model_name: str | None = None,
              reference: ood.StainReference | None = None, target_background=TRAINING_BACKGROUND,
              scale: bool = False, colour: bool = False, source: str | None = None,
              progress: Callable[[int, FrameMeasure], None] | None = None, model_id: dict | None = None) -> dict:
    """The site record of a microscope from its frames (see the module docstring).

    Args:
        frames: RGB uint8 frames of the site (unlabelled; a few tens of fields is plenty).
        input_px, model_rbc_px, model_name, model_id: the model the file is made for (its input side and
            the red-cell diameter in its input, from the sidecar; ``bundle.model_record``'s sha256s, to tell it
            from another).
        reference: the model's training stain (``ood.reference_of``); None: no stain distance.
        target_background: the training data's background colour (the white balance's target).
        scale, colour: whether ``--site`` uses the site scale / the white balance (both are recorded).
        progress: called with (frame index, its measurement) for each frame.

    Raises:
        SiteError: no frame, or no frame with enough red cells to measure the scale.
    """
    measures, grey, monochrome, bright, shapes = [], 0, 0, 0, set()
    thumbs: list[np.ndarray] = []  # one per frame measured: a view shown again is not another measurement
    repeated = crop_sized = 0
    for i, frame in enumerate(frames):
        shapes.add((frame.shape[1], frame.shape[0]))
        m = measure_frame(frame, reference)
        if m.no_colour:  # a blank or monochrome frame: its background would pull the white balance
            grey += 1
            monochrome += m.rbc_px is not None  # red cells in grey: the camera, not an empty view
        elif m.overexposed:  # clipped white: its background, white balance and stain distance would be wrong
            bright += 1
        else:
            measures.append(m)
            thumb = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (32, 24), interpolation=cv2.INTER_AREA)
            thumb = thumb.astype(np.float32)
            repeated += any(np.abs(thumb - t).mean() < SAME_VIEW for t in thumbs)
            thumbs.append(thumb)
            crop_sized += max(frame.shape[:2]) <= CROP_SIZED_PX
        if progress is not None:
            progress(i, m)
    if not measures and bright:
        raise SiteError([f"{'the frame is' if bright + grey == 1 else f'{bright} of the {bright + grey} frames are'} "
                         "overexposed (much of the view pure white, red cells faint): shorten the camera's exposure "
                         "or dim the lamp, then calibrate again"])
    if not measures and not grey:
        raise SiteError(["no frames to calibrate on: give a folder of images, a video or a camera"])
    if not measures and monochrome:
        raise SiteError([f"the {'frame holds' if grey == 1 else f'{grey} frames hold'} no colour (greyscale or "
                         "blank): a site is measured on stained smears in colour; if the camera is in monochrome "
                         "mode, set it to colour"])
    if not measures:  # every frame grey and none with red cells: blank (said "none shows enough red cells")
        raise SiteError([f"{'the frame is' if grey == 1 else f'the {grey} frames are'} blank (no colour and no red "
                         "cells): calibrate on ordinary fields of a stained smear, in colour, the lamp on"])
    sizes = [m.rbc_px for m in measures if m.rbc_px is not None]
    if not sizes:
        raise SiteError([f"none of the {len(measures) + grey} frames shows enough red cells to measure the scale: "
                         "calibrate on ordinary fields of a smear (red cells around the white cells)"])
    cover = float(np.median([m.red_cover for m in measures if m.red_cover is not None]))
    grain = float(np.median([m.noise for m in measures]))
    if cover < MIN_RED_COVER and grain > NOISY:  # noise read as a few tiny "red cells": a ruler and advice of nothing
        raise SiteError([f"the frames do not look like a blood smear: they are mostly noise ({grain:.0f} grey levels "
                         f"from pixel to pixel) and the red cells found cover {100 * cover:.1f} % of the view in the "
                         "median frame (a smear's fields: 5-40 %). Check the camera (a lens cap, the gain, the "
                         "cable), the light and the slide, then calibrate on ordinary fields of a smear"])
    groups = magnifications(sizes)
    shapes = frame_sizes(shapes)
    if scale and len(shapes) > 1:  # another camera, or frames cut or scaled apart: one fixed scale fits none
        raise SiteError([f"the frames come in {len(shapes)} sizes ({', '.join(sorted(shapes)[:4])}): more than one "
                         "camera, or images resized apart, and --scale would crop them all at one scale. Calibrate "
                         "each set-up apart on its own frames (or leave out --scale: each frame's own ruler)"])
    if scale and len(groups) > 1:  # one fixed scale would crop every set-up wrong
        raise SiteError(["the frames show red cells at " + " and ".join(
            f"{g['rbc_px']:g} px ({_n(g['frames'], 'frame')})" for g in groups) + ": more than one objective or camera, "
            "and --scale would crop them all at one scale in between. Calibrate each set-up apart, one site file "
            "each (or leave out --scale: each frame's own ruler)"])
    rbc = float(np.median(sizes))
    bg = tuple(round(float(v), 1) for v in np.median([m.background for m in measures], axis=0))
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "frames": len(measures),
        **({"grey_frames_left_out": grey} if grey else {}),
        **({"overexposed_frames_left_out": bright} if bright else {}),
        **({"frame_sizes": sorted(shapes)} if len(shapes) > 1 else {}),
        **({"repeated_frames": repeated} if repeated else {}),
        **({"crop_sized_frames": crop_sized} if crop_sized else {}),
        "model": {"name": model_name, "input_px": int(input_px), "rbc_px": round(float(model_rbc_px), 2),
                  **{k: v for k, v in (model_id or {}).items() if k in ("sha256", "source_sha256")}},
        "scale": {"use": bool(scale), "rbc_px": round(rbc, 2), "um_per_px": round(RBC_UM / rbc, 4),
                  "iqr": [round(float(v), 2) for v in np.percentile(sizes, [25, 75])], "frames": len(sizes),
                  "magnifications": groups},
        "background": list(bg),
        "colour": {"use": bool(colour), "gain": list(gain_for(bg, target_background)),
                   "target_background": [round(float(v), 1) for v in target_background]},
    }
    distances = [m.distance for m in measures if m.distance is not None]
    if reference is not None and distances:
        median = round(float(np.median(distances)), 4)
        unlike = median > reference.threshold
        record["stain"] = {"distance": median, "threshold": reference.threshold, "unlike_training": unlike,
                           "unlike_frames": sum(d > reference.threshold for d in distances),
                           "frames": len(distances)}
        record["advice"] = ADAPT_ADVICE if unlike else LIKE_ADVICE
    else:
        record["stain"] = None
        record["advice"] = ("no stain distance: the model carries no stain reference, or no frame shows a red "
                            "cell and a nucleus")
    falloff = float(np.median([m.falloff for m in measures]))
    level = float(np.median([m.noise for m in measures]))
    uneven = [m.falloff for m in measures if m.falloff > 0]  # the frames evened out (past illumination.UNEVEN)
    record["light"] = {"falloff": round(falloff, 3), "uneven_frames": len(uneven),
                       "uneven_falloff": round(float(np.median(uneven)), 3) if uneven else None,
                       "noise": round(level, 1), "noisy_frames": sum(m.noise > NOISY for m in measures)}
    if falloff > ADVISE:
        record["advice"] += (f"; the light falls off by {100 * falloff:.0f} % across the view: centre the lamp and "
                             "adjust the condenser (Koehler illumination); field mode evens it out meanwhile")
    if level > NOISY:
        record["advice"] += ("; the frames are noisy (the camera's grain): more light or a lower camera gain; field "
                             "mode finds cells on a smoothed copy meanwhile")
    if bright:
        record["advice"] += (f"; {_n(bright, 'frame')} overexposed (much of the view pure white, red cells faint), "
                             "left out: shorten the camera's exposure or dim the lamp")
    problems = validate(record)
    if problems:  # a measurement that makes no sense (a blank background, a wild gain): say it, write nothing
        raise SiteError(problems)
    return record


def _finite(x) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an integer of 400 digits (a hand edit): no float holds it
        return False


def _number(d: dict, key: str, where: str, lo: float, hi: float, out: list[str], whole: bool = False) -> None:
    v = d.get(key)
    if key not in d:  # "expected a number, got None" of a key the file does not hold
        out.append(f"{where}.{key}: missing (a number)")
    elif isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite(v):
        out.append(f"{where}.{key}: expected a number, got {v!r}")
    elif whole and not float(v).is_integer():
        out.append(f"{where}.{key}: expected a whole number, got {v!r}")
    elif not lo <= v <= hi:
        out.append(f"{where}.{key}: {v!r} is out of range ({lo:g} to {hi:g})")


def _triple(v: Any, where: str, lo: float, hi: float, out: list[str]) -> None:
    if (not isinstance(v, list) or len(v) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and _finite(x) for x in v)):
        out.append(f"{where}: expected three numbers (R, G, B), got {v!r}")
    elif not all(lo <= x <= hi for x in v):
        out.append(f"{where}: {v!r} is out of range ({lo:g} to {hi:g} each)")


def validate(raw: Any, name: str = "site file") -> list[str]:
    """Every mistake of a site record, one line each (empty: usable)."""
    if not isinstance(raw, dict):
        return [f"{name}: must hold a JSON object made by celledge calibrate, not a {type(raw).__name__}"]
    if raw.get("schema") != SCHEMA:
        return [f"{name}: schema {raw.get('schema')!r} is not {SCHEMA!r}: make it again with celledge calibrate "
                "SOURCE --out FILE"]
    out: list[str] = []
    sections = {"model": dict, "scale": dict, "colour": dict, "background": list}
    for key, kind in sections.items():
        if not isinstance(raw.get(key), kind):
            out.append(f"{name}: {key}: missing or not a{'n object' if kind is dict else ' list'}")
    if out:
        return out
    _number(raw["model"], "input_px", f"{name}: model", 8, 4096, out, whole=True)
    _number(raw["model"], "rbc_px", f"{name}: model", 1, 4096, out)
    sc = raw["scale"]
    _number(sc, "rbc_px", f"{name}: scale", 4, 2000, out)  # a red cell of 4 px is no measurement
    if not isinstance(sc.get("use"), bool):
        out.append(f"{name}: scale.use: " + ("missing (true or false)" if "use" not in sc
                                             else f"expected true or false, got {sc['use']!r}"))
    elif sc["use"] and not out:  # field mode cut 10,667 px crops from rbc_px 2000: seconds and 0.5 GB a frame
        side = crop_side(sc["rbc_px"], raw["model"]["rbc_px"], raw["model"]["input_px"])
        if side > MAX_SIDE:
            out.append(f"{name}: scale.rbc_px {sc['rbc_px']!r} would cut each cell {side} px across, more than any "
                       f"frame scopelite takes ({MAX_SIDE} px): not a measurement of this microscope")
    _triple(raw["background"], f"{name}: background", 1, 255, out)
    co = raw["colour"]
    if not isinstance(co.get("use"), bool):
        out.append(f"{name}: colour.use: " + ("missing (true or false)" if "use" not in co
                                              else f"expected true or false, got {co['use']!r}"))
    _triple(co.get("gain"), f"{name}: colour.gain", *GAIN_RANGE, out)
    stain = raw.get("stain")
    if stain is not None and not isinstance(stain, dict):
        out.append(f"{name}: stain: expected an object or null, got {stain!r}")
    elif stain is not None:  # calibrate's measurement against the model's reference: a hand edit is caught
        _number(stain, "distance", f"{name}: stain", 0, 1e6, out)
        _number(stain, "threshold", f"{name}: stain", 1e-6, 1e6, out)
    return out


BACKGROUND_CHROMA = 0.03  # a share of R, G or B in the background this far from the site file's: another set-up
BACKGROUND_FRAMES = 15  # frames whose background watch compares with the site file's


def chroma(rgb) -> np.ndarray:
    """The shares of R, G and B in a colour (a dimmer or brighter lamp leaves them)."""
    v = np.asarray(rgb, np.float64).reshape(3)
    return v / max(float(v.sum()), 1e-9)


def background_unlike(site_background, backgrounds) -> str | None:
    """A warning when the frames' median background is coloured unlike the site file's (a site file of another
    microscope, lamp or stain: PBC's pink against DeepBioNet's cyan was applied without a word), else None."""
    if not len(backgrounds):
        return None
    seen = np.median(np.asarray(backgrounds, np.float64).reshape(-1, 3), axis=0)
    if float(np.abs(chroma(seen) - chroma(site_background)).max()) <= BACKGROUND_CHROMA:
        return None
    return (f"the frames' background (RGB {' '.join(f'{v:.0f}' for v in seen)}) is coloured unlike the site file's "
            f"(RGB {' '.join(f'{v:.0f}' for v in site_background)}): a site file of another microscope, lamp or "
            "stain? calibrate this set-up (celledge calibrate), or run without --site")


@dataclass(frozen=True)
class Site:
    """A validated site record, ready to apply (``load``)."""

    path: str
    rbc_px: float
    use_scale: bool
    gain: tuple[float, float, float]
    use_colour: bool
    input_px: int
    record: dict

    @property
    def scale_rbc_px(self) -> float | None:
        """The red-cell diameter to crop at (None: the site scale is off, the per-frame ruler decides)."""
        return self.rbc_px if self.use_scale else None

    def balance(self, image_rgb: np.ndarray) -> np.ndarray:
        """``image_rgb`` white-balanced to the training background (unchanged when colour is off)."""
        return apply_gain(image_rgb, self.gain) if self.use_colour else image_rgb

    def crop_to_scale(self, image_rgb: np.ndarray, model_rbc_px: float, input_px: int) -> np.ndarray:
        """A single-cell image of this site as the model saw its training cells: the centred square that
        shows red cells at the model's scale (borders reflected when the image is smaller); unchanged
        when the site scale is off."""
        if not self.use_scale:
            return image_rgb
        side = crop_side(self.rbc_px, model_rbc_px, input_px)
        h, w = image_rgb.shape[:2]
        if side > MAX_REFLECT * min(h, w):
            raise UserError(f"a {w}x{h} px image is far smaller than the {side} px square that {self.path}'s scale cuts "
                            f"(red cells {self.rbc_px:.0f} px across on that microscope): is it a crop already cut to "
                            "the model's scale? Classify such crops without --site, or calibrate with --no-scale")
        x0, y0 = w // 2 - side // 2, h // 2 - side // 2
        return np.ascontiguousarray(crop_at(image_rgb, (x0, y0, x0 + side, y0 + side)))

    def view(self, image_rgb: np.ndarray, model_rbc_px: float, input_px: int) -> tuple[np.ndarray, dict | None]:
        """What crop mode and ``celledge classify`` classify of a single-cell image: cut to the model's scale
        (``crop_to_scale``) and white-balanced (``balance``); and the JSON line's ``scale`` (None when the
        site scale is off)."""
        view = self.balance(self.crop_to_scale(image_rgb, model_rbc_px, input_px))
        scale = {"source": "site", "rbc_px": round(self.rbc_px, 1), "crop": view.shape[0]} if self.use_scale else None
        return view, scale

    def info(self) -> dict:
        """What each JSON line says about the site file."""
        return {"file": self.path, "scale": self.use_scale, "colour": self.use_colour}


def from_record(raw: Any, name: str = "site file", input_px: int | None = None) -> Site:
    """A ``Site`` from a parsed record; ``input_px``: the model it will serve (a file made for another input
    size is refused).

    Raises:
        SiteError: every mistake, one line each.
    """
    problems = validate(raw, name)
    if not problems and input_px is not None and int(raw["model"]["input_px"]) != int(input_px):
        problems.append(f"{name} was made for a model with {raw['model']['input_px']} px inputs, this model takes "
                        f"{input_px} px: calibrate again with this model (celledge calibrate SOURCE --model MODEL)")
    if problems:
        raise SiteError(problems)
    return Site(path=name, rbc_px=float(raw["scale"]["rbc_px"]), use_scale=raw["scale"]["use"],
                gain=tuple(float(g) for g in raw["colour"]["gain"]), use_colour=raw["colour"]["use"],
                input_px=int(raw["model"]["input_px"]), record=raw)


def load(path: str | os.PathLike, input_px: int | None = None) -> Site:
    """Read and check a site file (``celledge calibrate``'s JSON).

    Raises:
        SiteError: missing, unreadable, not JSON, another schema, nonsense values, another input size.
    """
    name = str(path)
    try:
        text = read_settings_text(path, "--site", "site file", ": celledge calibrate SOURCE --out FILE writes one")
    except UserError as e:
        raise SiteError([str(e)]) from None
    try:
        raw = json.loads(text)
    except ValueError as e:  # JSONDecodeError, or a number of more than 4300 digits
        if not isinstance(e, json.JSONDecodeError):
            raise SiteError([f"--site {name}: holds a number too long to read (more than 4300 digits)"]) from None
        first = next((line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
        yaml_like = str(name).lower().endswith((".yaml", ".yml")) or re.match(r"\s*[\w-]+\s*:(\s|$)", first)
        hint = (": this looks like a watch settings file (YAML), which is given as --config FILE" if yaml_like
                else "")
        raise SiteError([f"--site {name}:{e.lineno}: not valid JSON ({e.msg}){hint}; a site file is what celledge "
                         "calibrate SOURCE --out FILE writes"]) from None
    except RecursionError:
        raise SiteError([f"--site {name}: nested too deeply to be a site file (celledge calibrate SOURCE --out FILE "
                         "writes one)"]) from None
    return from_record(raw, name, input_px)


def _n(count: int, word: str) -> str:
    """``1 frame``, ``2 frames``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary_lines(record: dict, out: str) -> list[str]:
    """What ``celledge calibrate`` prints: the file, the scale, the background, the stain, the advice."""
    sc, co, st = record["scale"], record["colour"], record.get("stain")
    lines = [f"site file: {out} ({_n(record['frames'], 'frame')} of {record.get('source') or 'the source'})",
             f"scale: red cell {sc['rbc_px']} px = {sc['um_per_px']} um/px (a red cell is {RBC_UM:g} um; "
             f"{_n(sc['frames'], 'frame')} measured, quartiles {sc['iqr'][0]}-{sc['iqr'][1]} px); "
             + ("--site crops at it instead of each frame's ruler" if sc["use"] else
                "recorded, not used: --site keeps each frame's ruler (calibrate --scale crops at the site scale: "
                "it rescues slides whose specks fool the ruler, and cost a few fields on clean ones; "
                "docs/cross-lab.md)")]
    if record.get("grey_frames_left_out"):
        n = record["grey_frames_left_out"]
        lines.append(f"warning: {n} frame{'s' if n > 1 else ''} without colour (blank or greyscale) left out")
    if record.get("overexposed_frames_left_out"):
        n = record["overexposed_frames_left_out"]
        lines.append(f"warning: {n} overexposed frame{'s' if n > 1 else ''} (much of the view pure white) left out: "
                     "shorten the camera's exposure or dim the lamp")
    if sc["frames"] < FEW_FRAMES:
        lines.append(f"warning: only {sc['frames']} frame{'s' if sc['frames'] > 1 else ''} measured the scale: a median "
                     f"of so few is easily fooled (the scale and the stain advice below); calibrate on {FEW_FRAMES} "
                     "or more ordinary fields of the smear")
    if record.get("repeated_frames"):
        views = record["frames"] - record["repeated_frames"]
        lines.append(f"warning: {_n(record['repeated_frames'], 'frame')} of {record['frames']} showed a view seen "
                     f"before (a still video, or the stage did not move): the scale and stain rest on {_n(views, 'view')}; "
                     "move the stage to another field between frames")
    if record.get("crop_sized_frames"):
        lines.append(f"warning: {record['crop_sized_frames']} of {_n(record['frames'], 'frame')} are {CROP_SIZED_PX} px "
                     "across or less, the size of a cell's crop, not a camera's field: calibrate on the microscope's "
                     "own frames (the camera, or a folder of its fields)")
    if record.get("frame_sizes"):
        lines.append(f"warning: the frames come in {len(record['frame_sizes'])} sizes "
                     f"({', '.join(record['frame_sizes'][:4])}{', ...' if len(record['frame_sizes']) > 4 else ''}): "
                     "more than one camera? calibrate each set-up apart")
    groups = sc.get("magnifications") or []
    if len(groups) > 1:
        lines.append("warning: the frames show red cells at " + " and ".join(
            f"{g['rbc_px']:g} px ({_n(g['frames'], 'frame')})" for g in groups)
            + ": more than one objective or camera; calibrate each set-up apart, one site file each")
    lines.append("background: RGB " + " ".join(f"{v:g}" for v in record["background"])
                 + f"; white balance to the training background: gain {' '.join(f'{g:g}' for g in co['gain'])}, "
                 + ("on" if co["use"] else "off (on another lab it lowered accuracy; calibrate --colour turns it on; "
                                           "docs/cross-lab.md)"))
    light = record.get("light")
    if light:
        if light.get("uneven_frames") and light.get("uneven_falloff") is not None:  # "falls off by 0 % (6 evened
            # out)" read as a contradiction: a frame falling off by less than illumination.UNEVEN is recorded as 0
            evened = (f"falls off by {100 * light['uneven_falloff']:.0f} % across the view in "
                      f"{light['uneven_frames']} of {_n(record['frames'], 'frame')} (their median; evened out)")
        else:
            evened = f"even across the view (no frame falls off by more than {100 * UNEVEN:.0f} %)"
        lines.append(f"light: {evened}; pixel noise {light['noise']:g} grey levels "
                     f"({light['noisy_frames']} frame(s) read through a smoothed copy)")
    if st:
        lines.append(f"stain distance to the training data: {st['distance']} (threshold {st['threshold']}; "
                     f"{st['unlike_frames']} of {_n(st['frames'], 'frame')} above it)")
    lines.append(f"advice: {record['advice']}")
    return lines
