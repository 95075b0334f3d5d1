"""Labelled whole fields: field mode over ``FOLDER/<class>/*.jpg``, scored against the folders.

Each field shows one white cell of its folder's class (PBC centres its fields on it; another lab's
may hold it anywhere), with red cells and platelets around it: the field's *main cell*. Benchmarks,
probes and ``cellcompress bench --protocol native`` run field mode over such a folder as
``celledge watch FOLDER --mode field`` does (one ``FieldScale`` for the folder: one microscope, the
scale smoothed over its fields) and score the main cell's class against the folder's name, or crop
the main cell as field mode crops it. Pure apart from reading images; nothing in the daemon imports
this module.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from . import field as field_lib
from .classifier import Classifier
from .config import WatchConfig
from .sources import read_image_rgb
from .stain import chromaticity, frame_background, stain_layers
from .watch import FieldScale, classify_field, field_config

PICKS = ("largest", "centre")  # which detection is the field's own cell (main_cell)


def default_config(classifier: Classifier, crop_size: int | None = None) -> field_lib.FieldConfig:
    """Field mode's settings for ``classifier`` as ``celledge watch --mode field`` has them with default
    options (crop size from each frame's red cells; ``crop_size``: ``--crop-size``), the model's scale
    from its sidecar."""
    return field_config(WatchConfig(crop_size=crop_size), classifier)


def main_cell(cells: Sequence[dict], shape: tuple[int, ...], pick: str = "largest") -> dict | None:
    """The field's own cell among ``classify_field``'s cells; None when nothing was found.

    Args:
        cells: ``classify_field``'s cells (largest detection first).
        shape: the field's ``image.shape`` (``centre`` measures from its middle).
        pick: ``largest``: the largest white-cell-sized detection, else the largest of any kind (a
            field that holds one white cell anywhere); ``centre``: the detection nearest the middle
            of the field (fields centred on their cell, as PBC's are).
    """
    if pick not in PICKS:
        raise ValueError(f"pick must be one of {', '.join(PICKS)}, not {pick!r}")
    if not cells:
        return None
    if pick == "largest":
        return next((c for c in cells if c["kind"] == "white"), cells[0])
    h, w = shape[:2]
    return min(cells, key=lambda c: np.hypot(c["center"][0] - w / 2, c["center"][1] - h / 2))


@dataclass(frozen=True)
class FieldResult:
    """Field mode on one field: ``classify_field``'s cells and scale, and the main cell among them."""

    cells: list[dict]
    scale: dict
    main: dict | None

    @property
    def label(self) -> str | None:
        """The main cell's best class (None: nothing found)."""
        return None if self.main is None else self.main["best"]


def classify_fields(images: Iterable[np.ndarray], classifier: Classifier, cfg: field_lib.FieldConfig,
                    pick: str = "largest", site=None) -> Iterator[FieldResult]:
    """Field mode over separate fields of one microscope, one field at a time, as ``celledge watch
    FOLDER --mode field`` runs it: one ``FieldScale`` for all (the scale smoothed over the fields),
    every detection classified with its best class (``min_score`` 0), the main cell picked by ``pick``.
    ``site`` (``site.Site``): as ``--site FILE`` (its fixed scale and, when on, its white balance)."""
    scaler = FieldScale(cfg, site_rbc_px=None if site is None else site.scale_rbc_px)
    for img in images:
        cells, scale = classify_field(img, classifier, cfg, 0.0, scale=scaler, site=site)
        yield FieldResult(cells, scale, main_cell(cells, img.shape, pick))


def truth(path: str | Path) -> str:
    """A labelled field's class: the name of its folder."""
    return Path(path).parent.name


def file_number(path: str | Path) -> int:
    """The number in a file's name (``02.jpg`` -> 2; no digits: 0)."""
    return int("".join(c for c in Path(path).stem if c.isdigit()) or 0)


def parts_by_number(paths: Iterable[Path], groups: Sequence[Sequence[Path]] = ()) -> tuple[list[Path], list[Path]]:
    """Another lab's labelled fields split in two by the number in each file name (``02.jpg`` -> 2): the
    even ones (the *adapt* part: its cells may be labelled, calibrated on and chosen by) and the odd ones
    (the *report* part), in the order given. A name without digits counts as 0.

    ``groups`` (``duplicate_groups``): fields that show the same cell go together, to the part of the
    group's smallest number, so that no cell is adapted on and reported on at once."""
    number = {Path(p): min(file_number(q) for q in g) for g in groups for p in g}
    even, odd = [], []
    for p in paths:
        (odd if number.get(Path(p), file_number(p)) % 2 else even).append(p)
    return even, odd


DUPLICATE_NCC = 0.75  # same cell above this (DeepBioNet: the valley between copies and distinct cells)


def copy_score(a: np.ndarray, b: np.ndarray) -> float:
    """How well grey crop ``a``'s centre (with the red cells around it) is found in grey crop ``b`` (float32,
    one size) under any of the 8 turns and flips: the highest normalised cross-correlation, over every shift
    that keeps it inside ``b``."""
    n = a.shape[0] // 6
    t = a[n : a.shape[0] - n, n : a.shape[1] - n]
    return max(float(cv2.matchTemplate(b, np.ascontiguousarray(np.rot90(v, k)), cv2.TM_CCOEFF_NORMED).max())
               for v in (t, t[:, ::-1]) for k in range(4))


def copy_scores(crops: Iterable[tuple[Path, np.ndarray]]) -> dict[tuple[Path, Path], float]:
    """For each pair of fields of one class (in the order given), how alike their main-cell crops are: the
    higher ``copy_score`` of the two ways round (each crop's centre sought in the other)."""
    grey = [(Path(p), cv2.cvtColor(c, cv2.COLOR_RGB2GRAY).astype(np.float32)) for p, c in crops]
    return {(p, q): max(copy_score(a, b), copy_score(b, a))
            for i, (p, a) in enumerate(grey) for q, b in grey[i + 1:] if truth(p) == truth(q)}


def groups_from_scores(paths: Sequence[Path], scores: dict[tuple[Path, Path], float],
                       threshold: float = DUPLICATE_NCC) -> list[list[Path]]:
    """``paths`` in groups: the chains of pairs whose ``copy_scores`` reach ``threshold`` (each path in one
    group, in the order given; a path in no such pair is a group of its own)."""
    parent = {Path(p): Path(p) for p in paths}

    def root(p: Path) -> Path:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for (p, q), score in scores.items():
        if score >= threshold:
            parent[root(q)] = root(p)
    groups: dict[Path, list[Path]] = collections.defaultdict(list)
    for p in parent:
        groups[root(p)].append(p)
    return list(groups.values())


def duplicate_groups(crops: Iterable[tuple[Path, np.ndarray]], threshold: float = DUPLICATE_NCC) -> list[list[Path]]:
    """Fields that show the same cell, as groups (each field in one; a cell seen once is a group of one).

    ``crops``: (path, main-cell crop) as ``main_cell_crops`` gives them, all at one scale. Two fields of
    one class are copies when one crop's centre (two thirds of the side: the cell and the red cells around
    it) matches the other crop, turned, flipped or shifted, with a correlation of at least ``threshold``;
    groups are the chains of copies. Public datasets hold such copies (DeepBioNet: 361 fields, about 170
    distinct cells, a copy mostly under the next file number): a split by file name alone puts one cell
    in both parts."""
    crops = list(crops)
    return groups_from_scores([Path(p) for p, _ in crops], copy_scores(crops), threshold)


def read_fields(paths: Iterable[str | Path],
                transform: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """The fields as RGB uint8, read one at a time (each through ``transform`` when given)."""
    for p in paths:
        img = read_image_rgb(p)
        yield img if transform is None else transform(img)


@dataclass
class Scores:
    """Per true class, in the order first met: whether each field's main cell had that class; and
    how often each (true class, label) pair came (label None: nothing found)."""

    hits: dict[str, list[bool]] = field(default_factory=dict)
    confusion: collections.Counter = field(default_factory=collections.Counter)

    def add(self, true_class: str, label: str | None) -> None:
        self.hits.setdefault(true_class, []).append(label == true_class)
        self.confusion[(true_class, label)] += 1

    @property
    def fields(self) -> int:
        return sum(len(v) for v in self.hits.values())

    @property
    def accuracy(self) -> float:
        """Share of all fields whose main cell had the folder's class."""
        return float(np.mean([h for v in self.hits.values() for h in v]))

    @property
    def per_class(self) -> dict[str, float]:
        """Accuracy per true class (a class's fields only)."""
        return {k: float(np.mean(v)) for k, v in self.hits.items()}


def field_hits(paths: Sequence[str | Path], scores: Scores) -> list[bool]:
    """Whether each field's main cell was right, in the order of ``paths`` (``scores``: ``score_fields``
    over ``paths`` in that order; ``Scores`` keeps them per class)."""
    right = {k: iter(v) for k, v in scores.hits.items()}
    return [next(right[truth(p)]) for p in paths]


def cell_accuracy(paths: Sequence[str | Path], scores: Scores, cell_of: dict[Path, int]) -> float | None:
    """Distinct cells right: each cell's share of its fields right, averaged over the cells (a cell
    photographed n times counts once). ``scores``: ``score_fields`` over ``paths`` in that order; ``cell_of``:
    each path's cell (``duplicate_groups``). None without fields."""
    by_cell: dict[int, list[bool]] = collections.defaultdict(list)
    for p, hit in zip(paths, field_hits(paths, scores)):
        by_cell[cell_of[Path(p)]].append(hit)
    return float(np.mean([np.mean(v) for v in by_cell.values()])) if by_cell else None


def score_fields(classifier: Classifier, paths: Sequence[str | Path], cfg: field_lib.FieldConfig,
                 pick: str = "largest", transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 site=None) -> Scores:
    """Field mode over labelled fields (``<class>/<file>``, in the order given; see ``classify_fields``),
    each field's main cell scored against its folder's class."""
    scores = Scores()
    for p, res in zip(paths, classify_fields(read_fields(paths, transform), classifier, cfg, pick, site)):
        scores.add(truth(p), res.label)
    return scores


def main_cell_crops(paths: Sequence[str | Path], cfg: field_lib.FieldConfig) -> Iterator[tuple[Path, np.ndarray]]:
    """``main_cell_crop`` of each field with one ``FieldScale`` for all (the scale as the daemon smooths it
    over a folder: what it classifies), as (path, crop); fields without a white-cell-sized detection are
    left out."""
    scaler = FieldScale(cfg)
    for p, img in zip(paths, read_fields(paths)):
        crop = main_cell_crop(img, cfg, scaler)
        if crop is not None:
            yield Path(p), crop


def main_cell_crop(image: np.ndarray, cfg: field_lib.FieldConfig, scale: FieldScale | None = None
                   ) -> np.ndarray | None:
    """The field's largest white-cell-sized detection cropped as field mode crops it (the square that
    shows red cells at the model's scale) and resized to ``cfg.input_px`` (area interpolation); None
    when the field has no white-cell-sized detection.

    The red-cell diameter is ``FieldScale.measure``'s, as field mode has it: ``scale``'s (smoothed over
    the fields it has measured) or, without one, a fresh one's: ``cfg.crop_size``'s when fixed, else this
    field's own (``field.FALLBACK_RBC_PX`` when it has too few red cells). Frames over
    ``field.SEARCH_SIDE`` are searched at half size, as field mode does.
    """
    return next(iter(white_cell_crops(image, cfg, scale, limit=1)), None)


def white_cell_crops(image: np.ndarray, cfg: field_lib.FieldConfig, scale: FieldScale | None = None,
                     limit: int | None = None) -> list[np.ndarray]:
    """Every white-cell-sized detection of the field (the first ``limit``), largest first, cropped and resized
    as ``main_cell_crop`` crops the largest (an empty list when there is none)."""
    view, factor = field_lib.shrink_for_search(image)
    layers = stain_layers(view)
    rbc, _ = (scale or FieldScale(cfg)).measure(view, layers, factor)
    white = [d for d in field_lib.detect(view, rbc / factor, layers, cfg) if d.kind == "white"][:limit]
    size = cfg.crop_for(rbc)
    return [cv2.resize(np.ascontiguousarray(field_lib.crop(image, field_lib.scaled(d, factor), size)),
                       (cfg.input_px, cfg.input_px), interpolation=cv2.INTER_AREA) for d in white]


def two_groups(points: np.ndarray) -> np.ndarray:
    """2-means labels of ``points`` (rows of chromaticity), group 0 the one with the larger mean blue share.
    Deterministic (Lloyd's iterations from the two extreme points along the first principal axis, no
    random state). It makes two groups whenever the points differ at all, also for a lab with one set-up: look
    at the points (the plot of ``tools/deepbionet_setups.py``) before reading the groups as set-ups. Fewer
    than 2 points, or all alike: one group."""
    pts = np.asarray(points, np.float64)
    if len(pts) < 2 or np.ptp(pts, axis=0).max() == 0:
        return np.zeros(len(pts), int)  # nothing to split: one group
    centred = pts - pts.mean(axis=0)
    proj = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
    centres = pts[[int(np.argmin(proj)), int(np.argmax(proj))]]
    labels = np.zeros(len(pts), int)
    for _ in range(100):
        labels = ((pts[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
        new = np.array([pts[labels == k].mean(axis=0) if np.any(labels == k) else centres[k] for k in (0, 1)])
        if np.allclose(new, centres):
            break
        centres = new
    return labels if centres[0, 2] >= centres[1, 2] else 1 - labels


SETUP_NAMES = {0: "bluer background", 1: "yellower background"}  # background_setups' groups


def background_setups(paths: Sequence[str | Path]) -> tuple[dict[Path, int], np.ndarray]:
    """Which of two microscope set-ups each field comes from, told apart by its background colour
    (``stain.frame_background``'s chromaticity, ``two_groups``; 0: the bluer background); and the
    chromaticities, one row per path. A lab whose classes were photographed on different set-ups
    lets a model fitted there learn the background instead of the cell: score each set-up apart."""
    chroma = chromaticity(np.array([frame_background(img) for img in read_fields(paths)], np.float64))
    return {Path(p): int(g) for p, g in zip(paths, two_groups(chroma))}, chroma
