"""The watch loop: frames in, one JSON-able record per frame out.

Hardware-free: it takes any FrameSource and any Classifier, so tests drive it
with fakes. Stops on end of stream, ``max_frames``, ``stop.set()`` or, in field
mode, once ``count`` white cells are counted.

What is counted
  Field mode counts cells: every detection is tracked across frames in slide
  coordinates (``track.py``, sized from the frame's red cells, helped by the
  stage's measured motion) and each physical cell enters the differential
  (``differential.py``) once, with the mean of its score vectors, however many
  frames it stays in view. Frames that are separate fields (a folder of captures
  that do not overlap: ``track=False``) count every cell of every frame. Crop mode
  has one cell in the centre of the view and counts frames: its tally says what
  the frames showed, not how many cells.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from . import crop_scale
from . import field as field_lib
from . import ood
from . import scale as scale_lib
from . import site as site_lib
from .bundle import model_record, write_bytes_atomic, write_json_atomic
from .classifier import Classifier
from .frameread import FrameRead, read_frame
from .lookahead import Lookahead
from .illumination import ADVISE
from .config import WatchConfig
from .differential import PLATELET, UNCERTAIN, Differential
from .postprocess import Tally, top_k
from .preprocess import prepare
from .reload import ModelReloader
from .capture import Capture, DropOldestQueue
from .sources import FrameSource, SourceError, pixels_digest, shown
from .stain import frame_background, is_dark, is_greyscale, percentile_of_counts
from .packaged import is_packaged
from .places import Places
from .track import StageMotion, TrackConfig, Tracker, TrackEvent, cut_by_edge
from .tta import views_of


def _once(source: FrameSource) -> Callable[[], FrameSource]:
    """An opener for an already-open source: it cannot be reopened."""
    state = {"used": False}

    def open_it() -> FrameSource:
        if state["used"]:
            raise SourceError(f"{source.name} cannot be reopened")
        state["used"] = True
        return source

    return open_it

# one objective's ruler varies about +-10 % (PBC: 60-78 px): further than this factor off a site's scale is another set-up
SITE_TOLERANCE = 0.25
SLIDE_SCALE_ESTIMATES = 1000  # tracking mode: the scale is the median of up to this many estimates (``ScaleSmoother``)


class FieldScale:
    """Where each field-mode frame's scale comes from: a fixed crop size, or the red-cell ruler.

    In auto mode every frame is measured and the median of the last ``window``
    good estimates is used (``ScaleSmoother``); until a first frame has enough red
    cells, the crop falls back to ``field.FALLBACK_RBC_PX`` (PBC's framing, 360 px
    crops for the shipped model) and each record says so. ``every`` > 1 (one
    microscope's stream) measures only every ``every``-th frame once ``every`` good
    estimates are in; the frames between hold the smoothed value (the ruler costs
    5 ms of a 640x480 frame, 36 ms of a 1920x1080 one, and the magnification changes
    only when someone turns the objective). ``slide`` > 0 (tracking: a stage moving over
    one slide): the median of every estimate since the magnification last changed.
    """

    def __init__(self, cfg: field_lib.FieldConfig, window: int = 15, every: int = 1,
                 site_rbc_px: float | None = None, slide: int = 0):
        self.cfg = cfg
        self._window, self._slide = window, slide
        self._by_size: dict[tuple[int, int], scale_lib.ScaleSmoother] = {}  # frame size -> its own ruler
        self.smoother = scale_lib.ScaleSmoother(window, slide=slide)
        self.every = every
        self.site_rbc_px = site_rbc_px  # a site file's fixed scale (``site.py``): crops at it; the ruler is reported
        self._frames = 0
        self.off_site = self.checked = 0  # frames measured with a site / more than SITE_TOLERANCE off its scale
        self.ruler: float | None = None  # the frames' own smoothed ruler, last seen

    _size: tuple[int, int] | None = None
    SIZES = 8  # frame sizes whose rulers are kept (the least recently seen goes)
    SAME_SIZE = 0.1  # sizes this close are one set-up (PBC's fields: 360x360, 363x360 and 369x366)

    def rulers(self) -> list[float]:
        """The smoothed red-cell diameter (px) of each frame size seen whose frames had a reading."""
        return [v for v in (s.current for s in self._by_size.values()) if v is not None]

    def _set_up(self, size: tuple[int, int]) -> tuple[int, int]:
        """The size already seen that ``size`` is within ``SAME_SIZE`` of, in height and in width, or ``size``."""
        for known in [self._size, *self._by_size]:
            if known is not None and all(abs(a - b) <= self.SAME_SIZE * b for a, b in zip(size, known)):
                return known
        return size

    def _smoother_for(self, size: tuple[int, int]) -> scale_lib.ScaleSmoother:
        """The ruler of frames of this size: a folder mixing a 1280x960 camera's frames with a 640x480 one's
        carried the one's red cells (113 px) into the other's crops (50 px), and both were misread."""
        smoother = self._by_size.pop(size, None) or scale_lib.ScaleSmoother(self._window, slide=self._slide)
        self._by_size[size] = smoother
        while len(self._by_size) > self.SIZES:
            self._by_size.pop(next(iter(self._by_size)))
        return smoother

    def measure(self, frame: np.ndarray, layers, factor: int = 1) -> tuple[float, dict]:
        """The red-cell diameter in full-frame px, and the record's ``scale`` dict.

        ``frame``/``layers`` may be the frame shrunk by ``factor`` (``field.shrink_for_search``).
        """
        fixed = self.cfg.rbc_px_for_crop()
        if fixed is not None:
            return fixed, {"source": "crop-size", "rbc_px": round(fixed, 1), "crop": self.cfg.crop_size}
        size = self._set_up((frame.shape[0] * factor, frame.shape[1] * factor))
        if size != self._size:  # another camera or set-up: a ruler of its own (a folder mixing sizes)
            if self._size is None:
                self._by_size[size] = self.smoother
            else:
                self.smoother = self._smoother_for(size)
            self._size = size
        self._frames += 1
        site = self.site_rbc_px
        if self.every > 1 and len(self.smoother.values) >= self.every and self._frames % self.every:
            rbc = site or self.smoother.current
            return rbc, {"source": "site" if site else "red cells (held)", "rbc_px": round(rbc, 1),
                         "crop": self.cfg.crop_for(rbc)}
        est = scale_lib.estimate_rbc_diameter(frame, layers)
        if est.diameter_px is not None and factor != 1:
            est = scale_lib.ScaleEstimate(est.diameter_px * factor, est.cells)
        current = self.smoother.update(est)
        if site:  # the site's scale crops; this frame's ruler is only reported (and checked against it)
            self.ruler, self.checked = current, self.checked + 1
            # this frame's own ruler, not the smoothed one: a few fields at another objective among many were
            # smoothed away, and their lines showed frame_rbc_px 1.4x the site's without a word (session 37)
            own = est.diameter_px
            off = own is not None and max(own / site, site / own) > 1 + SITE_TOLERANCE
            self.off_site += off
            return site, {"source": "site", "rbc_px": round(site, 1), "crop": self.cfg.crop_for(site),
                          "frame_rbc_px": None if est.diameter_px is None else round(est.diameter_px, 1),
                          "red_cells": est.cells, **({"off_site": True} if off else {})}
        source = "red cells" if current is not None else "fallback"
        rbc = current if current is not None else field_lib.FALLBACK_RBC_PX
        return rbc, {"source": source, "rbc_px": round(rbc, 1), "crop": self.cfg.crop_for(rbc),
                     "frame_rbc_px": None if est.diameter_px is None else round(est.diameter_px, 1),
                     "red_cells": est.cells}


def classify_field(frame: np.ndarray | FrameRead, classifier: Classifier, cfg: field_lib.FieldConfig, min_score: float,
                   scale: FieldScale | None = None,
                   reference: ood.StainReference | None = None,
                   known: Callable[[list[field_lib.Detection]], dict[int, dict]] | None = None,
                   site=None) -> tuple[list[dict], dict]:
    """Detect the cells of a field (an RGB uint8 frame, or ``read_frame``'s reading of it) and classify all
    their crops in one pass.

    Returns the cells and the scale used (``FieldScale.measure``); with a ``reference`` (the
    model's training stain) the scale dict also carries ``stain``: this frame's stain distance
    to the training data and whether it is above the reference's threshold (``edge/ood.py``). Each cell has its label
    (``uncertain`` below ``min_score``), best score and class, kind, centre, crop box, its
    score vector (``scores``, model label order, 4 decimals) and whether the frame edge cuts
    its stained region (``cut``).
    ``known(detections)`` may give, by detection index, the label, score, best and scores of
    cells whose class is already decided (``FieldCounter.known``): those are not classified
    again and are marked ``decided``. ``site`` (``site.Site``): its white balance is applied to each crop
    before it is classified (its scale is ``scale``'s: ``FieldScale(site_rbc_px=...)``). Crops are cut from the
    frame with its uneven light divided out (``FrameRead.frame``).
    """
    read = frame if isinstance(frame, FrameRead) else read_frame(frame)
    frame, uneven, clipped, noisy = read.frame, read.uneven, read.overexposed, read.smoothed
    view, factor, layers = read.view, read.factor, read.layers
    rbc_px, scale_info = (scale or FieldScale(cfg)).measure(view, layers, factor)
    if uneven:
        scale_info["uneven_light"] = uneven
    if noisy:
        scale_info["noise"] = noisy
    if clipped:
        scale_info["overexposed"] = clipped
    if reference is not None:
        distance = ood.score(ood.stain_stats(view, layers), reference)
        # an overexposed frame's colours are clipped: its distance is no judge of the stain (null, not counted)
        scale_info["stain"] = {"distance": distance, "unlike_training": None if clipped else
                               distance is not None and distance > reference.threshold}
    dets = [field_lib.scaled(d, factor) for d in field_lib.detect(view, rbc_px / factor, layers, cfg)]
    if not dets:
        return [], scale_info
    side = cfg.crop_for(rbc_px)
    decided = known(dets) if known is not None else {}
    todo = [j for j in range(len(dets)) if j not in decided]
    fresh = {}
    if todo:
        balance = site.balance if site is not None else (lambda c: c)
        crops = np.stack([balance(prepare(field_lib.crop(frame, dets[j], side), classifier.input_spec))
                          for j in todo])
        scores = np.asarray(classifier.classify(crops), dtype=np.float64)
        fresh = dict(zip(todo, zip(scores, np.round(scores, 4).tolist())))
    cells = []
    h, w = frame.shape[:2]
    for j, d in enumerate(dets):
        if j in fresh:
            best = top_k(fresh[j][0], classifier.labels, k=1)[0]
            cell = {"label": best.label if best.score >= min_score else UNCERTAIN, "score": round(best.score, 4),
                    "best": best.label}
        else:
            cell = {k: decided[j][k] for k in ("label", "score", "best")}
        cell.update(kind=d.kind, center=[round(d.x, 1), round(d.y, 1)],
                    box=list(field_lib.crop_box(d, side)),
                    cut=cut_by_edge(d.box, w, h))
        if j in fresh:
            cell["scores"] = fresh[j][1]
        else:
            cell.update(scores=decided[j]["scores"], decided=True)
        cells.append(cell)
    return cells, scale_info


def _not_what_it_looks_like(platelet_sized: bool, scores, labels) -> str | None:
    """Why a cell must be uncertain whatever its scores, or None.

    A platelet-sized detection (``field.Detection.kind`` "small"; for a track, in most of its whole
    views) that the model calls anything but a platelet is not that cell: its crop, scaled as a white
    cell's, is mostly what lies beside it (a white cell, off centre), so the model names the
    neighbour. On the PBC slide scan every such track was a platelet or a granule cluster next to a
    white cell, and every nucleated cell's whole views were white-sized. It is listed for review.
    """
    if platelet_sized and labels[int(np.argmax(scores))] != PLATELET:
        return "platelet-sized"
    return None


REVIEW_LISTED = 10_000  # uncertain cells the run's count lists, the newest (every one is counted; sessions keep all)
MAGNIFICATIONS = 1.5  # a tracked run's frame sizes whose red cells differ more than this: two magnifications
RECHECK_EVERY = 5  # a counted cell still in view is classified again one frame in this many (FieldCounter.known)


class FieldCounter:
    """Field mode's count: each cell once (``Tracker``) into a ``Differential``, revised when its track closes.

    The tracker is sized from the frame's red-cell diameter (``TrackConfig.for_rbc_px``)
    on the first frame, and re-sized when the measured diameter moves by more than
    ``resize`` (a first frame that had to fall back to the default scale, another objective).
    With ``track=False`` the frames are separate fields (a folder of captures that do not
    overlap): every cell of every frame is counted, with its own scores. A platelet-sized cell
    the model calls a nucleated class is counted as uncertain (``_not_what_it_looks_like``).

    A tracked cell is counted after ``decide_frames`` steady views; while it stays in view it is
    classified again one frame in ``RECHECK_EVERY`` (5: five views a second at 25 frames/s, the rate at
    which the red-cell ruler is re-measured, for a fifth of the cost of classifying it every frame), and
    when its track closes its class over all those views (``Tracker``'s ``final`` event) replaces the
    counted one if it differs (``revised``: the last ``update``/``flush``'s revisions), by the same rules.
    Nothing is revised once the count is done.

    Args:
        labels: the model's class names, in score order.
        min_score: a cell whose mean best score is below this is uncertain.
        target: white cells to count (``done`` once reached; None: open-ended).
        wbc_count: the analyser's white count (10^9/L) for absolute counts.
        track: follow cells across frames (a moving stage); False: frames are separate fields.
    """

    def __init__(self, labels, min_score: float = 0.5, target: int | None = None, wbc_count: float | None = None,
                 track: bool = True, resize: float = 0.25):
        self.differential = Differential(labels, target=target, min_score=min_score, wbc_count=wbc_count,
                                         listed=REVIEW_LISTED)
        self.track = track
        self.motion = StageMotion()
        self.places = Places(self.motion)  # key frames of each view: a field shown again after a jump is known
        self.tracker: Tracker | None = None
        self.resize = resize
        self._rbc_px: float | None = None
        self._brief: dict | None = None
        self._decided: dict[int, dict] = {}  # counted track id -> its label, score, best, mean scores
        self.revised: list[dict] = []  # the revisions of the last update/flush: track, from, to, frames, ...
        self._shift: tuple[int, tuple[float, float] | None] | None = None  # (frame index, stage shift)
        self._last_index: int | None = None
        # a frame unlike the one before (StageMotion.jumped), held back until the next frame says whether it began a
        # new view or was a glitch: (cells, scale, frame index); ``holding``: this update held its frame back;
        # ``late``: this update (or flush) fed the frame held back before it (its cells gained their tracks now)
        self._pending: tuple[list[dict], dict, int, tuple[int, int]] | None = None
        self.holding = self.late = False

    @property
    def done(self) -> bool:
        return self.differential.done

    def known(self, frame: np.ndarray, dets: list[field_lib.Detection], frame_index: int) -> dict[int, dict]:
        """Detections that continue an already counted cell: {index: its counted class}, not to classify again.

        A counted track last seen in the previous frame is expected at its last position moved by
        the stage's measured shift; a detection within a quarter of a cell diameter of that is it
        (cells do not overlap). Without a clear stage measurement nothing is skipped. One frame in
        ``RECHECK_EVERY`` (staggered by track) a counted cell is classified again: its class is
        revised over those views when its track closes.
        """
        if not self.track or self.tracker is None or not self._decided or not dets:
            return {}
        shift = self._stage_shift(frame, frame_index)  # None after a jump: nothing is known in a new view
        prev = [t for t in self.tracker.tracks() if t["counted"] and t["last_frame"] == self._last_index
                and t["id"] in self._decided and (frame_index + t["id"]) % RECHECK_EVERY]
        if shift is None or not prev:
            return {}
        at = np.array([t["center"] for t in prev]) + np.asarray(shift)
        pts = np.array([(d.x, d.y) for d in dets])
        dist = np.hypot(pts[:, None, 0] - at[None, :, 0], pts[:, None, 1] - at[None, :, 1])
        near = dist.argmin(axis=1)
        radius = 0.25 * self.tracker.cfg.cell_diameter_px
        return {j: self._decided[prev[k]["id"]] for j, k in enumerate(near) if dist[j, k] < radius}

    def _stage_shift(self, frame: np.ndarray, frame_index: int) -> tuple[float, float] | None:
        """The stage's shift into this frame (``StageMotion``), measured once per frame."""
        if self._shift is None or self._shift[0] != frame_index:
            self._shift = (frame_index, self.motion.update(frame))
        return self._shift[1]

    def update(self, frame: np.ndarray, cells: list[dict], scale_info: dict, frame_index: int) -> list[dict]:
        """Track this frame's cells (each gains ``track`` when matched); return the cells counted now."""
        if not self.track:
            return self._count_cells(cells, frame_index)
        shift = self._stage_shift(frame, frame_index)
        self.late, self.holding = False, False
        events: list[TrackEvent] = []
        pending, self._pending = self._pending, None
        if pending is not None and self.motion.settled == "jump":  # the held frame began a new view
            events += self._new_view(self.motion.began) + self._feed(*pending, shift=None)
            self._note(self.motion.began)
            self.late = True
        elif pending is not None and self.motion.settled is None:  # a blank frame: still undecided
            self._pending = pending
            return self._count(events, frame_index)
        # settled "glitch": the held frame (torn, blurred) is left out; this one continues the view before it
        if self.motion.jumped:  # unlike the view before: another field, or a glitch; the next frame says
            self._pending, self.holding = (cells, scale_info, frame_index, frame.shape[1::-1]), True
            return self._count(events, frame_index)
        if self.motion.restarted and self.tracker is not None:  # another frame size: a view of its own
            events += self._new_view(self.motion.current)
        events += self._feed(cells, scale_info, frame_index, frame.shape[1::-1], shift)
        if shift is not None or self.tracker.segment_frames == 1:  # measured, or the first frame of a view
            self._note(self.motion.current)
        return self._count(events, frame_index)

    def _new_view(self, grey: np.ndarray | None) -> list[TrackEvent]:
        """A jump: every track closes (``Tracker.jump``); when ``grey``, the new view's first frame, shows a view
        seen before (``Places.find``), the tracker goes back into that view's coordinates and remembered cells."""
        events = self.tracker.jump()
        found = self.places.find(grey, self.tracker.parked_views())
        if found is not None:
            self.tracker.return_to(*found)
        self.places.keep_only(self.tracker.parked_views() | {self.tracker.view})
        return events

    def _note(self, grey: np.ndarray | None) -> None:
        if self.tracker is not None:
            self.places.note(self.tracker.view, grey, self.tracker.offset)

    def _feed(self, cells: list[dict], scale_info: dict, frame_index: int, size: tuple[int, int],
              shift: tuple[float, float] | None) -> list[TrackEvent]:
        """One frame's cells to the tracker (each gains ``track`` when matched); its events."""
        self._last_index = frame_index
        self._size_tracker(float(scale_info["rbc_px"]))
        pts = np.array([c["center"] for c in cells], np.float64).reshape(-1, 2)
        scores = np.array([c["scores"] for c in cells], np.float64) if cells else None
        events = self.tracker.update(pts, scores, frame_index, shift=shift, cut=[c["cut"] for c in cells],
                                     small=[c.get("kind") == "small" for c in cells],
                                     fresh=[not c.get("decided") for c in cells], size=size)
        if cells:
            seen = {tuple(t["center"]): t["id"] for t in self.tracker.tracks() if t["last_frame"] == frame_index}
            for c in cells:
                tid = seen.get((c["center"][0], c["center"][1]))
                if tid is not None:
                    c["track"] = tid
        return events

    def flush(self, frame_index: int) -> list[dict]:
        """End of stream: count the open tracks seen in enough whole views (a last frame held back, unlike the
        one before it, is a field of its own)."""
        if self.tracker is None:
            return []
        events: list[TrackEvent] = []
        pending, self._pending = self._pending, None
        self.late = pending is not None
        if pending is not None:  # the frame held back is the last one with texture (``StageMotion.current``)
            events += self._new_view(self.motion.current) + self._feed(*pending, shift=None)
        return self._count(events + self.tracker.flush(), frame_index)

    def brief(self) -> dict:
        """The differential so far, for every frame record: ``Differential.summary()`` less the review list."""
        if self._brief is None:
            self._brief = self.differential.brief()
        return self._brief

    def summary(self) -> dict:
        return self.differential.summary()

    def _size_tracker(self, rbc_px: float) -> None:
        if self._rbc_px is not None and abs(rbc_px - self._rbc_px) <= self.resize * self._rbc_px:
            return
        cfg = TrackConfig.for_rbc_px(rbc_px)
        if self.tracker is None:
            self.tracker = Tracker(cfg)
        else:  # every tracker distance is a fraction of cfg.cell_diameter_px: a new size applies from now on
            self.tracker.cfg = cfg
        self._rbc_px = rbc_px

    def _count_cells(self, cells: list[dict], frame_index: int) -> list[dict]:
        """Separate fields: each cell of the frame is one cell of the count."""
        out = []
        for j, c in enumerate(cells):
            if self.differential.done:
                break
            ref = {"frame": frame_index, "cell": j, "center": c["center"]}
            why = _not_what_it_looks_like(c.get("kind") == "small", c["scores"], self.differential.labels)
            out.append({"cell": j, "label": self.differential.add(c["scores"], ref=ref, why=why), "best": c["best"],
                        "score": c["score"], "center": c["center"], "scores": c["scores"], **({"why": why} if why else {})})
        if out:
            self._brief = None
        return out

    def _count(self, events: list[TrackEvent], frame_index: int) -> list[dict]:
        """Add events to the differential in order, and revise cells on ``final`` events (``self.revised``);
        none once the target is reached (the count stops at it)."""
        out = []
        self.revised = []
        for e in events:
            if self.differential.done:
                break
            if e.reason == "final":
                self._revise(e, frame_index)
                continue
            ref, why, seen = self._seen(e, frame_index)
            label = self.differential.add(e.scores, ref=ref, why=why)
            out.append({"track": e.track_id, "label": label, "best": seen["best"], "score": seen["score"],
                        "slide": ref["slide"], "frames": e.frames_seen, "reason": e.reason, "scores": seen["scores"],
                        **({"why": why} if why else {})})
            self._decided[e.track_id] = {"label": label, **seen, "why": why}
        if self.tracker is not None and len(self._decided) > 2 * self.tracker.cfg.memory + 1000:
            live = self.tracker.ids()  # tracks forgotten (a jump, the memory's cap) cannot return: their classes go
            self._decided = {k: v for k, v in self._decided.items() if k in live}
        if out or self.revised:
            self._brief = None
        return out

    def _revise(self, e: TrackEvent, frame_index: int) -> None:
        """A counted cell's track closed: its class over all its views replaces the counted one if it differs, or if
        only why it is uncertain changed (it was counted uncertain by its score, and most of its views turned out
        platelet-sized: "uncertain" to "uncertain", with the new ``why``, which the session keeps and
        ``export --self-train`` reads: a platelet-sized cell is never guessed)."""
        was = self._decided.get(e.track_id)
        if was is None:
            return
        ref, why, seen = self._seen(e, frame_index)
        now = {"label": self.differential.label_for(e.scores, why=why), **seen}
        if now["label"] == was["label"] and why == was.get("why"):  # copies keep carrying what the records said
            return
        self.differential.revise(was["label"], e.scores, ref=ref, why=why, match={"track": e.track_id})
        self._decided[e.track_id] = {**now, "why": why}
        self.revised.append({"track": e.track_id, "from": was["label"], "to": now["label"], "frames": e.frames_seen,
                             "classified": e.fresh_views, "best": now["best"], "score": now["score"],
                             "slide": ref["slide"], "scores": now["scores"], "why": why})

    def _seen(self, e: TrackEvent, frame_index: int) -> tuple[dict, str | None, dict]:
        """A track event as the count takes it (to count or to revise): its ref in the review list, why it is
        uncertain whatever its score (mostly platelet-sized views), and its best class, score and scores."""
        labels = self.differential.labels
        why = _not_what_it_looks_like(2 * e.small_views > e.frames_seen, e.scores, labels)
        best = int(np.argmax(e.scores))
        ref = {"track": e.track_id, "frame": frame_index, "slide": [round(e.x, 1), round(e.y, 1)]}
        return ref, why, {"best": labels[best], "score": round(float(e.scores[best]), 4),
                          "scores": np.round(e.scores, 4).tolist()}


def _warn(summary: dict, text: str) -> None:
    """Add ``text`` to the summary's warning (one line: "; " between warnings)."""
    summary["warning"] = "; ".join(filter(None, [summary.get("warning"), text]))


def field_config(config: WatchConfig, classifier: Classifier) -> field_lib.FieldConfig:
    """Field mode's detector settings for this classifier: ``config.crop_size`` and the model's scale
    (the red-cell diameter in its input, from the sidecar, and its input side)."""
    spec = classifier.input_spec
    return field_lib.FieldConfig(crop_size=config.crop_size, input_px=spec.height,
                                 model_rbc_px=field_lib.model_rbc_px(spec))


REPORT_FILES = ("differential.json", "differential.csv", "differential.txt")  # what --report DIR holds


def is_report(folder) -> bool:
    """Whether ``folder``'s differential.json is an earlier ``write_report``'s (so --report may replace the three
    files), read without trusting it."""
    try:
        obj = json.loads((Path(folder) / REPORT_FILES[0]).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and {"run", "differential"} <= set(obj)


def write_report(folder, differential: Differential, run: dict) -> None:
    """differential.json (the summary and ``run``: source, frames, why it stopped), .csv and .txt in
    ``folder``, each written atomically (a reader never sees half a report)."""
    as_json, as_csv, as_text = (Path(folder) / name for name in REPORT_FILES)
    write_json_atomic(as_json, {"run": run, "differential": differential.summary()})
    write_bytes_atomic(as_csv, differential.to_csv().encode())
    write_bytes_atomic(as_text, differential.to_text().encode())


def run_watch(
    config: WatchConfig,
    source: FrameSource | Callable[[], FrameSource],
    classifier: Classifier,
    emit: Callable[[dict], None],
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    live: bool = False,
    queue_size: int = 2,
    backoff: float = 0.5,
    on_frame: Callable[[np.ndarray, dict, dict], None] | None = None,
    reloader: ModelReloader | None = None,
    session=None,
    site=None,
) -> dict:
    """Classify each frame (capture runs in its own thread); return the summary record.

    Args:
        config: the run's settings (``config.WatchConfig``): max_frames, fps, top_k, mode, crop_size,
            min_score, exit_on_eof, backoff_cap, count, report, wbc, track (None: on). Field mode
            crops at the classifier's scale (its sidecar's ``rbc_px`` and input size).
        source: where frames come from, or a function that opens it (needed to reconnect).
        classifier: turns prepared crops into probabilities.
        emit: called with each frame's record (and events: reconnecting, model_reload).
        stop: set it (e.g. from a signal handler) to stop after the current frame.
        live: a camera or stream: frames are dropped (oldest first, counted) when inference
            falls behind, and a lost source is reopened with exponential backoff.
        on_frame: called with each frame, its record and the capture counters (HTTP status, saving).
        reloader: a ``reload.ModelReloader``: between frames, a new model it has loaded and checked
            replaces ``classifier`` (the count goes on), and each reload attempt is emitted as an event.
        session: field mode: a ``session.Sessions``, given each frame and its counted cells (it keeps
            them, with their crops, in the open session); the run ends when its ``ends_run`` is set.
        site: a ``site.Site`` (``--site FILE``, from ``celledge calibrate``): its fixed scale replaces the
            per-frame ruler (each record's ``scale.source`` is "site"; crop mode crops the view to the
            training scale) and, when on, its white balance is applied to what is classified.

    Returns:
        {"summary": ...}: frames, drops, why it stopped, speed and the count: in field mode
        ``differential`` (``Differential.summary()``, each cell counted once, ``counted``: the
        cells counted at the end of the stream), in crop mode ``tally`` (frames per class).
    """
    stop = stop or threading.Event()
    mode, min_score, track = config.mode, config.min_score, config.track is not False
    max_frames, fps, k, count = config.max_frames, config.fps, config.top_k, config.count
    field_cfg = field_config(config, classifier)
    stream = mode == "field" and track  # one microscope's stream over one slide: one scale (ScaleSmoother)
    field_scale = FieldScale(field_cfg, every=5 if stream else 1, slide=SLIDE_SCALE_ESTIMATES if stream else 0,
                             site_rbc_px=None if site is None else site.scale_rbc_px)
    reference = ood.reference_of(getattr(classifier, "sidecar", None))
    unlike_frames = grey_frames = dark_frames = already = 0
    site_backgrounds: list = []  # with --site: the first frames' backgrounds, compared with the site file's
    # field mode: how many frames fell off by each 1/1000 (illumination.flatten's, 3 decimals): a bounded record
    # of a camera run for weeks, and the median from it; and how many frames were noisy
    dim_corners = np.zeros(1001, np.int64)
    noisy_frames = bright_frames = 0
    # separate fields (a folder): an image whose pixels an earlier one had (a copy under another name) is not
    # counted again: {digest: the first image's file}, and the copies (file, copy of)
    seen: dict[str, str | None] = {}
    copies: list[tuple[str | None, str | None]] = []
    # ... and how many share a part of the view with the image before (tiles of one slide: counted as separate
    # fields, the cells in their overlaps count twice; --track counts each once)
    tiles, tiled, before_grey, lit = StageMotion(), 0, None, 0
    tally = Tally(list(classifier.labels))
    framing: crop_scale.StreamFraming | None = None  # crop mode: the stream's framing, made at the first view
    held: tuple[np.ndarray, dict] | None = None  # field mode: the frame the counter holds back, and its record
    counter = FieldCounter(classifier.labels, min_score, count, config.wbc, track) if mode == "field" else None
    opener = source if callable(source) and not hasattr(source, "read") else _once(source)
    queue = DropOldestQueue(queue_size)
    capture = Capture(opener, queue, live=live, exit_on_eof=config.exit_on_eof, backoff=backoff,
                      backoff_cap=config.backoff_cap,
                      stop=threading.Event(), on_event=lambda kind, info: live and emit({"event": kind, **info}),
                      name=shown(config.source) if config.source else "?")
    capture.start()

    def take(timeout: float) -> tuple[np.ndarray, str | None] | None:  # the next frame and its image file, if any
        frame = queue.get(timeout=timeout)
        return None if frame is None else (frame, capture.files.popleft() if capture.files else None)

    # a folder's images as separate fields, each read once (--loop replays the same images on purpose)
    folder_fields = counter is not None and not track and not config.loop

    def digest(frame: np.ndarray, file: str | None) -> str | None:  # a folder's image: its pixels (copies)
        return pixels_digest(frame) if folder_fields and file is not None else None

    def read_ahead(got: tuple[np.ndarray, str | None]) -> tuple[str | None, FrameRead | None, float]:
        """In the look-ahead thread: the frame's digest, how field mode reads it (its light evened out, its stain
        layers; None for a copy or an image counted before, skipped below) and the seconds that took."""
        t = clock()
        (frame, file), read = got, None
        pixels = digest(frame, file)
        copy = pixels is not None and (pixels in seen or pixels in read_ahead_of)  # the loop may not have seen it yet
        if not (copy or session is not None and session.counted(file, pixels)):
            read = read_frame(frame)
            if pixels is not None:
                read_ahead_of.add(pixels)
        return pixels, read, clock() - t

    read_ahead_of: set[str] = set()  # the look-ahead thread's own: the digests of the images it read

    # field mode: the next frame is read while this one is classified (not when frames are paced, --fps: the
    # frame read ahead would wait out the pace and be that much older)
    ahead = None if counter is None or fps else Lookahead(take, lambda: queue.drained, read_ahead, name="field-read")
    n, t_start, infer_s = 0, clock(), 0.0
    reason = "end of stream"
    try:
        while not stop.is_set():
            if max_frames is not None and n >= max_frames:
                reason = "max frames"
                break
            if reloader is not None:  # between frames: a checked new model takes over, the count goes on
                new, events = reloader.take()
                if new is not None:
                    classifier, field_cfg = new, field_config(config, new)
                    framing = None  # measured again for the new model's scale
                    field_scale.cfg, reference = field_cfg, ood.reference_of(getattr(new, "sidecar", None))
                    if session is not None:  # the cells counted from now on are cut at the new model's scale
                        session.rbc_fraction = field_cfg.cut_scale()
                        session.use_model(model_record(getattr(new, "sidecar", None)))  # ... and classified by it
                for event in events:
                    emit({**event, "frame": n})
            t_frame = clock()
            if ahead is not None:
                got = ahead.get(timeout=0.25)
                if got is None:
                    if ahead.closed:
                        break
                    continue
                (frame, file), (pixels, read, read_s) = got
            else:
                got = take(0.25)
                if got is None:
                    if queue.drained:
                        break
                    continue
                frame, file = got  # file: a folder's image, named in the line
                pixels, read, read_s = digest(frame, file), None, 0.0
            if pixels is not None and pixels in seen:  # a copy of an image of this run
                copies.append((file, seen[pixels]))
                emit({"event": "copy", "frame": n, "file": file, "copy_of": seen[pixels]})
                continue
            if session is not None and session.counted(file, pixels):  # counted into this session by an earlier run
                already += 1
                continue
            if pixels is not None:
                seen[pixels] = file
            grey = is_greyscale(frame)
            grey_frames += grey
            dark = counter is not None and not grey and is_dark(frame)  # the lamp off on a colour camera
            dark_frames += dark
            if pixels is not None and not (grey or dark):  # a blank between two tiles is not a tile of the scan
                tile_view = tiles.view_of(frame)
                tiled += before_grey is not None and tiles.overlap(before_grey, tile_view) is not None
                before_grey, lit = tile_view, lit + 1
            t0 = clock()
            if counter is not None and (grey or dark):
                # the lamp off, a blank or monochrome view: nothing to find by stain colour, and the tracker is not
                # told of it (a black frame's noise gave 30-40 "cells", and the real ones were counted again when
                # the lamp came back; a colour camera's noise in the dark gave 185 and lost the stage's position)
                rec, dt = {"frame": n, "cells": [], ("dark" if dark else "no_colour"): True, "counted": [],
                           "differential": counter.brief()}, 0.0
            elif counter is not None:
                read = read if read is not None else read_frame(frame)
                # lit evenly once, when read: the cells are read, tracked and kept (the session's crops) from it
                frame, uneven = read.frame, read.uneven
                cells, scale_info = classify_field(read, classifier, field_cfg, min_score, field_scale,
                                                   reference, known=lambda dets: counter.known(frame, dets, n),
                                                   site=site)
                unlike_frames += bool(scale_info.get("stain", {}).get("unlike_training"))
                if site is not None and len(site_backgrounds) < site_lib.BACKGROUND_FRAMES \
                        and not scale_info.get("overexposed"):
                    site_backgrounds.append(frame_background(read.view))
                if uneven:
                    dim_corners[int(round(uneven * 1000))] += 1
                noisy_frames += bool(scale_info.get("noise"))
                bright_frames += bool(scale_info.get("overexposed"))
                dt = clock() - t0
                counted = counter.update(frame, cells, scale_info, n)
                rec = {"frame": n, "cells": cells, "scale": scale_info, "counted": counted, "revised": counter.revised,
                       "differential": counter.brief(), "track_ms": round((clock() - t0 - dt) * 1e3, 3)}
                dt += read_s  # the frame's reading too, done ahead or here
            else:
                view, site_scale = (frame, None) if site is None else site.view(frame, field_cfg.model_rbc_px,
                                                                                field_cfg.input_px)
                if site_scale is None and config.rescale:
                    if framing is None:
                        framing = crop_scale.StreamFraming(field_cfg.model_rbc_px, field_cfg.input_px)
                    view, site_scale = framing.view(view)
                    t0 = clock()  # infer_ms is the model's: reading the framing (5-40 ms a measured view) is not
                scores = classifier.classify(prepare(view, classifier.input_spec)[None])[0]
                dt = clock() - t0
                best = top_k(scores, classifier.labels, k=k)
                tally.add(best[0].label)
                rec = {"frame": n, "label": best[0].label, "score": round(best[0].score, 4),
                       "top_k": [{"label": c.label, "score": round(c.score, 4)} for c in best]}
                if site_scale is not None:
                    rec["scale"] = site_scale
            infer_s += dt
            rec["infer_ms"] = round(dt * 1e3, 3)
            if file is not None:
                rec["file"] = file
            if pixels is not None:
                rec["pixels"] = pixels
            if session is not None and counter is not None and not (grey or dark):
                if counter.late and held is not None:  # its cells have their tracks now: keep their views
                    session.keep_views(*held)
                if counter.holding:  # fed (and kept) when the next frame says it began a new view
                    held = (frame, rec)
                session.update(frame, rec)
                rec["session"] = session.brief()  # the slide's count: this run's cells and earlier runs'
            emit(rec)
            if on_frame is not None:
                on_frame(frame, rec, {"captured": capture.frames, "dropped": queue.dropped,
                                      "reconnects": capture.reconnects})
            n += 1
            if counter is not None and (counter.done or session is not None and session.ends_run):
                reason = "count reached"
                break
            if fps and not (max_frames is not None and n >= max_frames):  # no wait after the last frame ...
                until = t_frame + 1.0 / fps
                while not stop.is_set() and not queue.drained and clock() < until:  # ... nor once the stream ended
                    stop.wait(min(until - clock(), 0.05))
        else:
            reason = "stopped by signal"
    finally:
        capture.stop.set()
        queue.close()
        if ahead is not None:
            ahead.stop()
        capture.join(timeout=2.0)
    if reloader is not None:  # a reload done after the last frame's turn (a SIGHUP just before the stop): its line
        for event in reloader.take()[1]:
            emit({**event, "frame": n, "after_last_frame": True})
    elapsed = max(clock() - t_start, 1e-9)
    summary = {
        "source": capture.source_name,
        "mode": mode,
        "frames": n,
        "captured": capture.frames,
        "dropped": queue.dropped,
        "reconnects": capture.reconnects,
        "stopped": reason,
        "seconds": round(elapsed, 3),
        "fps": round(n / elapsed, 2),
        "mean_infer_ms": round(1e3 * infer_s / n, 3) if n else None,
        "views": views_of(classifier),  # flipped/rotated views averaged per cell (--tta, or the model's sidecar)
    }
    if reason == "end of stream" and capture.end_reason not in (None, "end of stream"):  # a frame it could not give
        summary["source_error"] = capture.end_reason
        if n:
            _warn(summary, f"{capture.source_name} ended early: {capture.end_reason} (the {n} frames before it "
                           "were used)")
        elif live:  # (a file or folder that gave none is an Error: said by the caller)
            _warn(summary, f"{capture.source_name} gave no frame: {capture.end_reason}")
    if already:  # a folder's images the session had counted before: skipped, not counted twice
        summary["already_counted"] = already
    if grey_frames:
        summary["grey_frames"] = grey_frames
    if dark_frames:  # field mode: left out of the count
        summary["dark_frames"] = dark_frames
    if n and grey_frames > n / 2:  # a few blank frames (the lamp between fields) are normal
        _warn(summary, f"{grey_frames} of {n} frames hold no colour (greyscale or blank): the model was trained "
                       "on stained colour images" + (" and field mode finds cells by their stain" if counter
                                                     is not None else "")
                       + "; if the camera is in monochrome mode, set it to colour")
    if copies:
        summary["copies"] = len(copies)
        file, first = (Path(f).name if f else "?" for f in copies[0])
        _warn(summary, f"{len(copies)} image{'s' if len(copies) > 1 else ''} held the same pixels as an earlier one "
                       f"(a copy under another name: {file} is {first}{' ...' if len(copies) > 1 else ''}): each "
                       "counted once")
    if tiled:
        summary["images_sharing_a_part"] = tiled
    if lit >= 3 and tiled >= max(2, (lit - 1) / 2):  # one pair of 3 warned, of 20 not (turned copies of one cell)
        _warn(summary, f"{tiled} of {lit} images share a part of the view with the image before (tiles of one slide?): "
                       "each image was counted as a field of its own, so cells where they overlap were counted more "
                       "than once; give --track to follow the tiles in order and count each cell once")
    rulers = field_scale.rulers() if mode == "field" and track and field_cfg.crop_size is None else []
    if len(rulers) > 1 and max(rulers) > MAGNIFICATIONS * min(rulers):
        # a scanner's overview image beside its tiles shows the whole slide at a lower magnification: with --track
        # its cells are new to the tracker, and every cell was counted again (98 -> 269, a trial of session 36)
        summary["magnifications"] = sorted(round(r, 1) for r in rulers)
        _warn(summary, f"frames of {len(rulers)} sizes show red cells {min(rulers):.0f} to {max(rulers):.0f} px "
                       "across: views of the slide at different magnifications (an overview image beside the tiles?) "
                       "are each counted, so cells shown at more than one were counted again; leave the overview out")
    if site is not None:
        summary["site"] = site.info()
        if field_scale.off_site > field_scale.checked / 2 and field_scale.site_rbc_px and field_scale.ruler:
            off = (f"the frames' red cells measure {field_scale.ruler:.1f} px, the site file's scale "
                   f"{field_scale.site_rbc_px:.1f} px ({field_scale.off_site} of {field_scale.checked} frames measured, "
                   f"more than "
                   f"{1 + SITE_TOLERANCE:g}x off): another objective or camera? cells were cropped at the site's scale; "
                   "calibrate this set-up (celledge calibrate), or run without --site")
            _warn(summary, off)
        unlike_site = site_lib.background_unlike(site.record["background"], site_backgrounds)
        if unlike_site:
            _warn(summary, unlike_site)
    if reloader is not None:
        summary["model_reloads"] = reloader.state()
    if counter is None:
        summary["tally"] = tally.summary()
        return {"summary": summary}
    at_end = counter.flush(max(n - 1, 0)) if reason != "count reached" else []  # past the target: not counted
    revised_at_end = counter.revised if reason != "count reached" else []
    if session is not None:
        if counter.late and held is not None:
            session.keep_views(*held)
        session.update(None, {"frame": max(n - 1, 0), "counted": at_end, "revised": revised_at_end})
    diameter = counter.tracker.cfg.cell_diameter_px if counter.tracker is not None else None
    summary.update(counted=at_end, revised=revised_at_end, differential=counter.summary(),
                   tracking={"on": track, "cell_diameter_px": None if diameter is None else round(diameter, 1),
                             **({"view_jumps": counter.tracker.jumps, "view_returns": counter.tracker.returns}
                                if counter.tracker is not None else {})})
    uneven_frames = int(dim_corners.sum())
    summary.update(uneven_light_frames=uneven_frames, noisy_frames=noisy_frames, overexposed_frames=bright_frames)
    median_falloff = percentile_of_counts(dim_corners, 50) / 1000 if uneven_frames else 0.0
    if n and uneven_frames > n / 2 and median_falloff > ADVISE:
        light = (f"{uneven_frames} of {n} frames were lit unevenly (the light falls off by "
                 f"{100 * median_falloff:.0f} % across the view, median): field mode evened it out, but "
                 "centre the lamp and adjust the condenser (Koehler illumination) for the best images")
        _warn(summary, light)
    if n and noisy_frames > n / 2:
        grain = (f"{noisy_frames} of {n} frames were noisy (the camera's grain): cells were found on a smoothed copy; "
                 "more light, or a lower camera gain, gives better images")
        _warn(summary, grain)
    colour = n - grey_frames  # a frame without colour (all white: no slide) is said apart, not as overexposed
    if colour and bright_frames > colour / 2:
        _warn(summary, f"{bright_frames} of {colour} frames were overexposed (much of the view pure white): red cells "
                       "fade into the background and are measured and classified less well; shorten the camera's "
                       "exposure or dim the lamp")
    if reference is not None:
        summary["unlike_training_frames"] = unlike_frames
        if n and unlike_frames > n / 2:
            unlike = ("most frames are stained unlike the model's training data: expect more mistakes; "
                      + ood.unlike_advice(is_packaged(getattr(classifier, "sidecar", None)), site is not None))
            _warn(summary, unlike)
    if config.report is not None:
        # with a session, the slide's count (every run that counted into it, people's labels over the model's,
        # its --count): the run's own held only this run's cells after a resume, without its target
        current = session.current if session is not None else None
        write_report(config.report, current.differential() if current is not None else counter.differential,
                     {k: summary[k] for k in ("source", "frames", "stopped", "seconds")} | {"min_score": min_score}
                     | {"config": config.to_file()}
                     | ({"session": {"id": current.id, "folder": str(current.folder), "state": current.state["state"],
                                     **({"went_on_from": chain} if (chain := session.went_on_from()) else {})}}
                        if current is not None else {}))
    return {"summary": summary}


