"""Audit a dataset before training: duplicates, label conflicts, non-cell outliers, balance.

Pure numpy + OpenCV. Near duplicates are found with a 64-bit difference hash
(dHash) confirmed by pixel distance. An image is an outlier when it holds
colours no May-Grünwald-Giemsa stain makes (a green ogre, a cyan sky), a dark
background no bright-field microscope gives (a music-video frame), or when it
lies far from its nearest neighbours in a colour/texture feature space.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge.bundle import write_bytes_atomic, write_json_atomic
from scopelite.edge.errors import UserError
from scopelite.edge.outputs import folder_in_place

from .data import Dataset, exact_duplicates


def dhash_bits(images: np.ndarray) -> np.ndarray:
    """(N, 64) bool difference hashes of grey 9x8 thumbnails."""
    out = np.empty((len(images), 64), bool)
    for i, img in enumerate(images):
        g = cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
        out[i] = (g[:, 1:] > g[:, :-1]).reshape(-1)
    return out


def near_duplicate_pairs(images: np.ndarray, max_bits: int = 3, max_pixel_diff: float = 6.0,
                         block: int = 2048) -> list[tuple[int, int]]:
    """Pairs (i < j) whose hashes differ in <= max_bits bits and whose 32x32 grey thumbnails
    differ by <= max_pixel_diff grey levels on average."""
    bits = dhash_bits(images).astype(np.float32)
    thumbs = np.stack([cv2.resize(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
                       for x in images]).astype(np.float32)
    pairs = []
    inv = 1.0 - bits
    for s in range(0, len(bits), block):
        a = bits[s : s + block]
        ham = a @ inv.T + (1.0 - a) @ bits.T  # Hamming distance as two matrix products
        ii, jj = np.nonzero(ham <= max_bits)
        for i, j in zip(ii + s, jj):
            if i < j and np.abs(thumbs[i] - thumbs[j]).mean() <= max_pixel_diff:
                pairs.append((int(i), int(j)))
    return pairs


def features(images: np.ndarray) -> np.ndarray:
    """20 dense colour/texture statistics per image (no sparse histograms: they make distances unstable)."""
    feats = []
    for img in images:
        rgb = img.reshape(-1, 3).astype(np.float32) / 255.0
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.float32)
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32) / 255.0
        sat, val = hsv[:, 1] / 255.0, hsv[:, 2] / 255.0
        ang = hsv[:, 0] * (np.pi / 90.0)  # OpenCV hue 0..180 -> radians
        w = sat / max(sat.sum(), 1e-6)
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        feats.append(np.concatenate([
            rgb.mean(0), rgb.std(0),
            np.percentile(val, [5, 50, 95]), np.percentile(sat, [5, 50, 95]),
            lab[:, 1:].mean(0), lab[:, 1:].std(0),
            [(w * np.cos(ang)).sum(), (w * np.sin(ang)).sum()],
            [cv2.Canny(grey, 50, 150).mean() / 255.0, cv2.Laplacian(grey, cv2.CV_32F).std() / 64.0],
        ]))
    return np.array(feats, np.float32)


def outlier_scores(images: np.ndarray, k_fraction: float = 0.01) -> np.ndarray:
    """Robust z-score of each image's mean distance to its k nearest neighbours (k = 1 % of the data,
    at least 10, so a small cluster of injected images cannot hide among itself) in standardised
    feature space. Copes with several acquisition sessions (modes) in one dataset."""
    f = features(images).astype(np.float64)
    med = np.median(f, 0)
    scale = np.maximum(np.median(np.abs(f - med), 0) * 1.4826, 0.1 * f.std(0) + 1e-6)
    z = (f - med) / scale
    k = min(max(10, int(k_fraction * len(z))), len(z) - 1)
    sq = (z**2).sum(1)
    knn = np.empty(len(z))
    for s in range(0, len(z), 1024):
        d2 = np.maximum(sq[s : s + 1024, None] + sq[None] - 2 * z[s : s + 1024] @ z.T, 0)
        d2[np.arange(len(d2)), np.arange(s, s + len(d2))] = np.inf  # not itself
        knn[s : s + 1024] = np.sqrt(np.partition(d2, k - 1, axis=1)[:, :k]).mean(1)
    m = np.median(knn)
    return (knn - m) / (np.median(np.abs(knn - m)) * 1.4826 + 1e-9)


def stain_violations(images: np.ndarray) -> np.ndarray:
    """(N, 2): share of saturated pixels outside the May-Grünwald-Giemsa gamut (yellow, green,
    cyan: a stain makes none) and share of near-black pixels (a bright-field background is bright)."""
    out = np.empty((len(images), 2))
    for i, img in enumerate(images):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).reshape(-1, 3)
        h, sat, val = hsv[:, 0], hsv[:, 1] / 255.0, hsv[:, 2] / 255.0
        out[i, 0] = ((sat > 0.3) & (val > 0.2) & (h >= 20) & (h <= 100)).mean()
        out[i, 1] = (val < 0.2).mean()
    return out


@dataclass
class AuditResult:
    report: dict
    exclude: list[int]  # indices to leave out of training
    flagged: list[tuple[int, str]]  # (index, reason) for the montage


def nearest_vote(dist: np.ndarray, labels, k: int = 5) -> np.ndarray:
    """Each row's most common label among its ``k`` nearest columns (``dist``: rows x columns distances,
    ``labels``: one per column); a tied vote goes to the tied label of the nearest of them. Equal distances
    keep the columns' order (stable sort)."""
    labels = np.asarray(labels)
    classes, y = np.unique(labels, return_inverse=True)
    near = np.argsort(dist, axis=1, kind="stable")[:, :k]
    vote = np.empty(len(near), int)
    for i, row in enumerate(near):
        counts = np.bincount(y[row], minlength=len(classes))
        tied = counts == counts.max()
        vote[i] = next(y[j] for j in row if tied[y[j]])
    return classes[vote]


SHORTCUT_SAMPLE = 2000  # background_shortcut's images at most (a 2000 x 2000 distance matrix: about 32 MB)


def background_shortcut(images: np.ndarray, labels: np.ndarray, k: int = 5, sample: int = SHORTCUT_SAMPLE, seed: int = 0,
                        among: np.ndarray | None = None) -> dict[int, tuple[float, float]]:
    """How well the background colour alone tells each class: per label, the share of its images whose
    ``k`` nearest neighbours in background chromaticity (``stain.frame_background``, leave-one-out) vote
    for it (a tied vote goes to the tied class of the nearest neighbour), and the label's share of the
    images (what chance gives). At most ``sample`` images, seeded; ``among``: only these indices. Empty
    when the images are not RGB uint8 (N, H, W, 3) or too few."""
    from scopelite.edge.stain import chromaticity, frame_background  # noqa: PLC0415

    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(labels) != len(images):
        return {}
    rng = np.random.default_rng(seed)
    pool = np.arange(len(labels)) if among is None else np.asarray(among, int)
    # a seeded order: backgrounds are whole grey levels, so equal distances are common, and ties must not
    # go to the images filed next to each other (one class's folder)
    idx = rng.permutation(pool)[:sample]
    if len(idx) <= k:
        return {}
    y = labels[idx]
    x = chromaticity(np.array([frame_background(images[i]) for i in idx]))
    sq = (x ** 2).sum(axis=1)
    d = sq[:, None] + sq[None, :] - 2 * x @ x.T
    np.fill_diagonal(d, np.inf)  # leave one out
    vote = nearest_vote(d, y, k)
    return {int(c): (float(np.mean(vote[y == c] == c)), float(np.mean(y == c))) for c in np.unique(y)}


def background_note(images: np.ndarray, labels: np.ndarray, class_names, among: np.ndarray | None = None,
                    min_recall: float = 0.8, min_kappa: float = 0.6) -> str | None:
    """A warning when the background alone tells a class: ``background_shortcut`` recall >= ``min_recall``
    and, over chance, (recall - share) / (1 - share) >= ``min_kappa``; classes of fewer than 3 sampled images
    are not judged. That class was photographed on its own slides or set-up, and a model can learn the
    background instead of the cell. Measured (benchmarks/results/background-shortcut.json): DeepBioNet's
    eosinophils 0.84-1.0 (photographed on their own set-up: tools/deepbionet_setups.py); PBC's eight
    classes (pbc96) at most 0.28."""
    found = background_shortcut(images, labels, among=among)
    flagged = [(class_names[c], r) for c, (r, share) in found.items()
               if share < 1 and share * min(len(labels) if among is None else len(among), SHORTCUT_SAMPLE) >= 3
               and r >= min_recall
               and (r - share) / (1 - share) >= min_kappa]
    if not flagged:
        return None
    listed = ", ".join(f"{r:.0%} of the {name} images" for name, r in flagged)
    which = "that class was" if len(flagged) == 1 else "those classes were"
    return (f"the background colour alone picks out {listed}: {which} photographed on other slides or another "
            "set-up than the rest, and the model can learn the background instead of the cell; label each class "
            "on the same slides and microscope as the others (docs/cross-lab.md)")


def audit(ds: Dataset, outlier_z: float = 50.0, max_violation: float = 0.1, near_bits: int = 3,
          unreadable: Sequence[str] = ()) -> AuditResult:
    """Find exact and near duplicates, label conflicts, outliers and class imbalance in ``ds``; ``unreadable``:
    the ids of files the loader could not decode (reported: training refuses a folder holding them)."""
    n = len(ds)
    exact = exact_duplicates(ds.images)
    near = near_duplicate_pairs(ds.images, near_bits)
    # Groups of duplicates (union-find over exact + near pairs).
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in near:
        parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    dup_groups = [g for g in groups.values() if len(g) > 1]
    conflicts = [g for g in dup_groups if len(set(ds.labels[g].tolist())) > 1]
    conflict_idx = {i for g in conflicts for i in g}
    later_copies = {i for g in dup_groups for i in g[1:]} - conflict_idx
    scores = outlier_scores(ds.images)
    violations = stain_violations(ds.images)
    odd = (scores > outlier_z) | (violations.max(1) > max_violation)
    outliers = [int(i) for i in np.argsort(-(scores + 1000 * violations.max(1))) if odd[i]]
    counts = ds.counts()
    exclude = sorted(later_copies | conflict_idx | set(outliers))
    flagged = ([(i, "outlier") for i in outliers] + [(i, "label conflict") for i in sorted(conflict_idx)]
               + [(i, "duplicate") for i in sorted(later_copies)])
    report = {
        "data": ds.description,
        "images": n,
        "class_counts": counts,
        # over the classes present: a lab labels the 4-6 it sees, the other folders are absent, not tiny
        "imbalance_ratio": round(max(counts.values()) / max(min([c for c in counts.values() if c] or [1]), 1), 2),
        "exact_duplicates": len(exact),
        "near_duplicate_pairs": len(near),
        "duplicate_groups": [[ds.ids[i] for i in g] for g in dup_groups],
        "label_conflicts": [[{"id": ds.ids[i], "label": ds.class_names[ds.labels[i]]} for i in g] for g in conflicts],
        "outliers": [{"id": ds.ids[i], "label": ds.class_names[ds.labels[i]], "knn_z": round(float(scores[i]), 1),
                      "off_stain_colour": round(float(violations[i, 0]), 3), "dark": round(float(violations[i, 1]), 3)}
                     for i in outliers],
        "outlier_rule": f"knn_z > {outlier_z} or off-stain colour / dark share > {max_violation}",
        "excluded": len(exclude),
        "unreadable": list(unreadable),
    }
    return AuditResult(report, exclude, flagged)


def montage(ds: Dataset, flagged: list[tuple[int, str]], path: Path, limit: int = 48) -> None:
    """A PNG grid of flagged images, each captioned with its reason and label."""
    tile = 96
    items = flagged[:limit] or []
    cols = 8
    rows = max(1, (len(items) + cols - 1) // cols)
    canvas = np.full((rows * (tile + 22), cols * tile, 3), 255, np.uint8)
    for k, (i, why) in enumerate(items):
        r, c = divmod(k, cols)
        img = cv2.resize(ds.images[i], (tile, tile), interpolation=cv2.INTER_AREA)
        y, x = r * (tile + 22), c * tile
        canvas[y : y + tile, x : x + tile] = img
        for line, text in enumerate((why, ds.class_names[ds.labels[i]][:14])):
            cv2.putText(canvas, text, (x + 2, y + tile + 9 + 10 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1,
                        cv2.LINE_AA)
    if not items:
        cv2.putText(canvas, "nothing flagged", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    write_bytes_atomic(path, buf.tobytes())


EXCLUSIONS_HEAD = "# image ids to leave out: celltrain fit --exclude this-file"


def foreign_outputs(out: str | os.PathLike) -> list[str]:
    """audit's output names in ``out`` holding what an earlier audit did not write: a user's own exclusions.txt
    (or audit's, edited since: its sha256 is not the one audit.json recorded), another audit.json. A rerun
    replaced them, exit 0."""
    from scopelite.edge.precious import foreign_files, json_with, starts_with  # noqa: PLC0415

    out = Path(out)
    report = json_with("images", "exact_duplicates", "near_duplicate_pairs")

    def exclusions(p: Path) -> bool:
        if not starts_with(EXCLUSIONS_HEAD.encode())(p):
            return False
        try:
            lines = p.read_text(encoding="utf-8", errors="replace").split("\n")
        except OSError:
            return False
        if len(lines) < 2 or not lines[1].startswith(SHA_LINE):  # written before session 33: the head line decides
            return True
        return lines[1] == SHA_LINE + _sha("\n".join(lines[2:]))

    return foreign_files(out, {"audit.json": report, "exclusions.txt": exclusions, "flagged.png": lambda p: None})


SHA_LINE = "# sha256 of the lines below, as audit wrote them: "


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_outputs(ds: Dataset, result: AuditResult, out: str | os.PathLike, source: str | None = None,
                  clean_copy: str | os.PathLike | None = None) -> dict:
    """audit.json, flagged.png and exclusions.txt in ``out``; optionally a cleaned copy of class folders."""
    out = Path(out)
    broken = next((ds.ids[i] for i in result.exclude if ds.ids[i].splitlines() != [ds.ids[i]]), None)
    if broken is not None:  # it became two lines of exclusions.txt, neither an id: fit --exclude refused the file
        raise UserError(f"cannot list {broken!r} in exclusions.txt (one id a line): its file name holds a line "
                        "break; rename it and audit again")
    ids = "\n".join(ds.ids[i] for i in result.exclude) + "\n"
    # the next audit into ``out`` replaces this file only while it is what an audit wrote (not edited by hand): the
    # file carries its own hash, so no other file (written before or after it) has to agree with it
    exclusions = "\n".join([EXCLUSIONS_HEAD, SHA_LINE + _sha(ids), ids]).encode("utf-8")
    write_json_atomic(out / "audit.json", result.report)
    montage(ds, result.flagged, out / "flagged.png")
    write_bytes_atomic(out / "exclusions.txt", exclusions)
    if clean_copy:
        if not source or not Path(source).is_dir():
            raise ValueError("a cleaned copy can only be written for a class-folder dataset")
        _clean_copy(ds, {ds.ids[i] for i in result.exclude}, Path(source), Path(clean_copy))
    return result.report


CLEAN_MARK = ".celltrain-clean-copy"  # in a folder audit --clean-copy made: it may be replaced by the next one


def _clean_copy(ds: Dataset, drop: set, source: Path, dest: Path) -> None:
    """The class folders without ``drop``, made whole and then put in place of the ones an earlier copy made (an
    image excluded now is not left in them; an interrupted copy leaves no half-made folder; what else a user put in
    the folder stays). The marker lists the class folders it made."""
    before = _made_before(dest)  # read once, before the marker is set aside with the rest
    with folder_in_place(dest, owned=lambda e: e.name == CLEAN_MARK or e.name in before) as tmp:
        for id_ in ds.ids:
            if id_ not in drop:
                (tmp / id_).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / id_, tmp / id_)
        made = sorted(p.name for p in tmp.iterdir() if p.is_dir())
        (tmp / CLEAN_MARK).write_text(json.dumps({"made_by": "celltrain audit --clean-copy", "folders": made}) + "\n")


def _made_before(dest: Path) -> set:
    """The class folders an earlier clean copy made in ``dest`` (its marker); none if it cannot be read."""
    try:
        folders = json.loads((dest / CLEAN_MARK).read_text()).get("folders")
    except (OSError, ValueError, AttributeError):
        return set()
    return {f for f in folders if isinstance(f, str) and "/" not in f} if isinstance(folders, list) else set()
