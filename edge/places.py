"""Knowing a field again: a few frames of each view the stage has shown, matched after a jump.

A jump (``track.StageMotion``: the stage stepped, or a video of separate fields or one that loops) shares
nothing with the frame before, so the tracker cannot say where on the slide the new frame lies, and without
more a field shown again after another one was counted again (A, B, A: 26 cells for 18; a video holding one
pan three times: 45 for 16; benchmarks/results/count-hunt-33.json). ``Places`` keeps, per view, a frame every
``spacing`` of a field the view moved, with the tracker's slide offset there; after a jump the first frame of the new
view is compared with them by the test that decides jumps (``StageMotion.same_place``) and a close match of their
fine detail (``MIN_DETAIL``), and a match puts the tracker back into that view's coordinates
(``Tracker.return_to``), where its counted cells are remembered.

A view that shares less than half of a key frame (the next row of a scan, reached by a cut) is found by the part they
share (``StageMotion.overlap``), tried on the key frames whose correlation with it peaks highest.

Bounded: at most ``cap`` key frames and ``max_bytes`` of them, kept at the stage measurement's working size as
8-bit grey with their coarse spectrum (155 KB at 640x480); when full, the view with the most is thinned
(``_thinnest``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .track import MIN_DETAIL, StageMotion, overlap_surface


@dataclass(frozen=True, eq=False)
class KeyFrame:
    view: int
    grey: np.ndarray  # uint8, StageMotion's working size
    offset: np.ndarray  # the tracker's offset there (slide = frame + offset), px
    spectrum: np.ndarray  # ``StageMotion.spectrum``: the far search compares a new view with every key frame at once


class Places:
    """Key frames of the views seen so far (``note``), and which one a frame shows again (``find``)."""

    def __init__(self, motion: StageMotion, spacing: float | None = None, cap: int = 64, max_bytes: int = 16 << 20,
                 min_detail: float = MIN_DETAIL, far: int = 2):
        """``spacing``: a view gains a key frame once it lies this fraction of the frame's shorter side from the
        view's others; default half of what ``motion.overlap`` leaves unshared (0.375 of 480 px: 180 px), so that a
        view one step past any frame of a pan, a step shorter than the spacing, shares a quarter or more with a key
        frame. At 0.5 a raster of tiles 240 px apart kept no key frame in its second row (each 240 px from the
        first's), and its third row, sharing nothing with the first, was a new view (a trial of session 35: the
        overlap of the second and third rows counted twice). ``min_detail``: the fine
        detail a return must match (``StageMotion.same_place``, ``overlap``). ``far``: how many key frames the
        search for a part shared tries (each costs a few ms)."""
        self.spacing = (1.0 - motion.min_share) / 2 if spacing is None else spacing
        self.motion, self.cap, self.max_bytes = motion, cap, max_bytes
        self.min_detail, self.far = min_detail, far
        self._keys: list[KeyFrame] = []

    def __len__(self) -> int:
        return len(self._keys)

    def note(self, view: int, grey: np.ndarray | None, offset) -> bool:
        """Keep ``grey`` (``StageMotion.current``) as a key frame of ``view`` at ``offset`` unless one of that
        view's key frames lies within ``spacing``; True when kept."""
        if grey is None:
            return False
        offset = np.asarray(offset, np.float64).reshape(2)
        reach = self.spacing * min(grey.shape) * self.motion.downscale  # full-size px
        if any(k.view == view and np.hypot(*(k.offset - offset)) < reach for k in self._keys):
            return False
        kept = np.clip(grey, 0, 255).astype(np.uint8)
        spectrum = self.motion.spectrum(kept)
        self._keys.append(KeyFrame(view, kept, offset.copy(), spectrum))
        limit = max(1, min(self.cap, self.max_bytes // max(kept.nbytes + spectrum.nbytes, 1)))
        while len(self._keys) > limit:
            self._keys.pop(self._thinnest())
        return True

    def _thinnest(self) -> int:
        """The key frame to let go when the set is full: of the view with the most, among the older half of its key
        frames, the one nearest another of its view (the oldest of equals). Dropping the oldest first lost every
        key frame of a field after 30 s of panning elsewhere while its counted cells were still remembered, and the
        field was counted again on return (a count hunt of session 34); thinning keeps each view's reach with
        sparser frames. The newer half is the recent path, kept whole: thinning all of them, each new key frame
        made the one before it the most crowded, so a long pan kept its old ground and its newest frame only, and
        a return to where the stage was 600 frames before a jump, 6000 frames into a scan, counted 13 cells again
        (a long-run check of session 36)."""
        views: dict[int, list[int]] = {}
        for i, k in enumerate(self._keys[:-1]):
            views.setdefault(k.view, []).append(i)
        newest = self._keys[-1].view  # counted in its view's share, though never dropped itself
        view = max(views, key=lambda v: len(views[v]) + (v == newest))
        idx = views[view]
        if len(idx) < 2:
            return idx[0]
        xy = np.array([self._keys[i].offset for i in idx] + ([self._keys[-1].offset] if view == newest else []))
        gaps = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(gaps, np.inf)
        older = (len(xy) + 1) // 2  # the view's key frames oldest first: the older half may go
        near = np.sort(gaps, axis=1)[: min(older, len(idx)), :2]  # each one's nearest and second-nearest of its view
        # the most crowded: nearest first, then second-nearest (a pan's inner frames before its ends)
        return idx[int(np.lexsort((near[:, -1], near[:, 0]))[0])]

    def find(self, grey: np.ndarray | None, views: set[int]) -> tuple[int, np.ndarray] | None:
        """(view, offset): the view among ``views`` that ``grey`` shows again, and where this frame lies in its
        slide coordinates. First by the jump test's reading (``StageMotion.same_place``: the key frame whose coarse
        correlation peaks highest wins); failing that, a part shared with a key frame (``StageMotion.overlap``: the
        next row of a scan reached by a cut), tried on the ``far`` key frames whose correlation without a window
        peaks highest away from no shift (a speck on the camera peaks there in every pair). None: a place not seen."""
        if grey is None or not views:
            return None
        keys = [k for k in self._keys if k.view in views]
        best: tuple[float, int, np.ndarray] | None = None
        for k in keys:
            m = self.motion.same_place(k.grey, grey, self.min_detail)
            if m is None:
                continue
            (dx, dy), peak, _ = m
            if best is None or peak > best[0]:
                best = (peak, k.view, k.offset - np.array([dx, dy]))
        if best is not None:
            return best[1], best[2]
        keys = [k for k in keys if k.grey.shape == grey.shape]
        if not keys:
            return None
        shape = self.motion.coarse_shape(grey)
        spectrum = self.motion.spectrum(grey)
        surfaces = overlap_surface(np.stack([k.spectrum for k in keys]), spectrum, shape)
        near = np.array([-1, 0, 1])
        surfaces[:, near[:, None], near] = -np.inf  # no shift: the same place would have passed above
        heights = surfaces.reshape(len(keys), -1).max(axis=1)
        found: tuple[float, int, np.ndarray] | None = None
        for i in np.argsort(-heights)[: self.far]:
            k = keys[int(i)]
            m = self.motion.overlap(k.grey, grey, self.min_detail, ref_spectrum=k.spectrum, grey_spectrum=spectrum)
            if m is not None and (found is None or m[1] > found[0]):
                found = (m[1], k.view, k.offset - np.array(m[0]))
        return None if found is None else (found[1], found[2])

    def keep_only(self, views: set[int]) -> None:
        """Forget the key frames of views no longer remembered (their cells are gone: nothing to return to)."""
        self._keys = [k for k in self._keys if k.view in views]
