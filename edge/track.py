"""Count each physical cell once while the stage moves: tracking in slide coordinates.

Pure numpy (``StageMotion`` also uses OpenCV); no I/O. One ``Tracker.update``
per frame with the centres of that frame's detections and their score vectors.

How a frame is matched
  The tracker keeps an *offset* from frame to slide coordinates (slide = frame +
  offset; the first frame defines the slide's origin) and the slide position of
  every track (the mean of its observations). Each frame it predicts the offset
  (previous offset + the stage shift, when ``StageMotion`` measured one, else the
  smoothed velocity), then corrects the prediction from the detections alone: every
  track/detection pair within ``max_jump`` gives a candidate shift, and the shift
  that most pairs agree with (within the match radius) wins, the smaller one on a
  tie. Tracks and detections are then paired greedily, nearest first, within
  ``match_radius`` (cells do not overlap, so with a radius of half a cell diameter
  a detection has at most one plausible track and greedy equals the optimal
  assignment: scipy's Hungarian gave the same counts at the same cost in
  tools/track_compare.py, so the edge install needs no scipy), and the
  offset is re-estimated as the median of the matched pairs. Nothing here assumes
  a pan speed: jerks of up to ``max_jump`` are recovered from the detections when
  at least two cells stay in view, and from ``StageMotion`` (phase correlation of
  the whole frame, red cells included) otherwise. A detection within
  ``fragment_radius`` of a larger one is part of that cell (a split nucleus, a
  granule at its rim) and is dropped before matching.

When a cell is counted
  Only whole views count: a view cut by the frame edge (``cut_by_edge``) has a
  centroid pulled inward and a half-reflected crop, so it keeps its track alive
  but adds no position, score or frame. A track with fewer than ``min_frames``
  whole views is never counted (a flicker). A track is counted once: when it has
  ``decide_frames`` whole views, or when it is closed (unseen for more than
  ``max_missed`` frames, or ``flush()`` at the end of the stream) having at least
  ``min_frames``. Its class is the mean of its score vectors over those views, so
  a cell in view for 100 frames is counted once, ``decide_frames`` frames after
  it appeared (0.6 s at 25 frames/s), its class resting on that many frames, not
  the first one. ``decide_frames=0`` waits for the track to close and averages
  every frame, at the cost of counting a cell only once it has left the view.
  Each event also says in how many of those whole views the detection was
  platelet-sized (``small``): the caller decides what such a track may be counted as.
  Where the view moves so fast that no cell can be whole in ``min_frames`` frames
  running (more than a third of the frame a frame), fewer suffice: as many as every
  cell the view passes is whole in (``Tracker._needed``; given the frame's size).

Revising the class
  A counted track goes on collecting its whole views. When it closes having had
  fresh views since its last event, it gives a ``final`` event: the mean over all
  its views, so the caller can revise the class it counted. A view whose scores
  were copied from the decision (``fresh`` False: the caller skipped classifying a
  counted cell again) adds no scores; the next fresh view of the track stands for
  it (weight 1 + the copied whole views before it), so when the caller classifies
  a counted cell one frame in k, the mean still estimates the mean over every
  frame the cell was seen, not one weighting the deciding views k times more.
  A remembered cell recalled on panning back gives another ``final`` when it
  closes again (if it was classified again meanwhile).

Panning back
  Counted cells are remembered at their slide position (``remember``, default on).
  A detection that matches no active track but lies within ``recall_radius`` of a
  remembered counted cell continues that cell's track and is not counted again;
  this is what a technician does when panning back over cells already tallied. The
  limit is honest drift: the offset is a sum of frame-to-frame estimates, so the
  recall works while the accumulated error since the cell was last seen stays
  under ``recall_radius`` (about 30 px for a 50 px cell; on the synthetic scans
  of train/slide.py the drift stays within 1 px over 550 frames). A cell whose
  slide position drifted further is counted again, as a new cell. With ``remember=False`` a track
  lost for more than ``max_missed`` frames is forgotten and a cell re-entering the
  view is a new track that may be counted again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class TrackConfig:
    cell_diameter_px: float = 50.0  # a white cell in the frame (about crop_size / 2: the training crops' framing)
    match_radius: float = 0.5  # x diameter: a detection this close to a track's predicted position is that cell
    recall_radius: float = 0.6  # x diameter: second chance for unmatched tracks, and recognising remembered cells
    fragment_radius: float = 0.6  # x diameter: a smaller detection this close to a larger one is part of that cell
    max_jump: float = 2.0  # x diameter: the largest stage move between two frames sought from the detections
    min_frames: int = 3  # a track seen in fewer frames is never counted (flicker, debris)
    decide_frames: int = 15  # counted once seen in this many frames (0: only when its track closes)
    max_missed: int = 5  # frames a track may go unseen (defocus, a missed detection) before it closes
    remember: bool = True  # keep counted cells in slide coordinates: panning back does not recount them
    # ... the most recent this many (a daemon scanning for weeks: memory and the recall search stay bounded; at
    # 0.1 counted cells a frame that is an hour of scanning at 10 frames/s)
    memory: int = 4000
    velocity_smoothing: float = 0.5  # weight of the newest measured stage velocity in the prediction

    def px(self, fraction: float) -> float:
        return fraction * self.cell_diameter_px

    @classmethod
    def for_rbc_px(cls, rbc_px: float, **overrides) -> "TrackConfig":
        """Sized from the frame's red-cell diameter (``scale.py``): a white cell is about two red cells across."""
        return cls(cell_diameter_px=2.0 * rbc_px, **overrides)


@dataclass(frozen=True, eq=False)
class TrackEvent:
    """A cell counted this frame."""

    track_id: int
    x: float  # slide position (px; the first frame's coordinates), mean over the frames seen
    y: float
    frame_x: float  # where it was last seen, in that frame
    frame_y: float
    scores: np.ndarray  # mean score vector over the frames seen
    frames_seen: int
    first_frame: int
    last_frame: int
    reason: str  # "steady" (seen decide_frames times), "lost" (its track closed), "flush" (end of stream),
    #              "final" (a counted track closed: its mean over all its views, to revise its class)
    small_views: int = 0  # of the frames_seen whole views, those where the detection was platelet-sized
    fresh_views: int = 0  # of the frames_seen whole views, those classified (not copied from the decision)


class _Track:
    """A cell's observations: whole ones (position, scores, counting) and ones cut by the frame edge."""

    __slots__ = ("id", "sum_xy", "n", "n_small", "edge_xy", "n_edge", "score_sum", "n_fresh", "copied",
                 "reported", "first", "last", "frame_xy", "counted", "travel_from", "travel_to")

    def __init__(self, tid: int, n_classes: int, frame: int):
        self.id = tid
        self.sum_xy, self.edge_xy = np.zeros(2), np.zeros(2)
        self.n = self.n_edge = self.n_small = 0
        self.score_sum = np.zeros(n_classes)  # weighted: a fresh view counts for itself and the copied ones before it
        self.n_fresh = self.copied = self.reported = 0  # fresh views; copied ones since the last; fresh at last event
        self.first = self.last = frame
        self.frame_xy = np.zeros(2)
        self.counted = False
        # the tracker's ``travel`` (how far the view moved, summed, and over how many frames) when the track began
        # (the move into its first frame included) and one frame after it was last seen
        self.travel_from: tuple[float, int] | None = None
        self.travel_to: tuple[float, int] | None = None

    @property
    def pos(self) -> np.ndarray:
        """Mean slide position over the whole views; over the cut ones while there is none."""
        return self.sum_xy / self.n if self.n else self.edge_xy / self.n_edge

    @property
    def unreported(self) -> bool:
        """Counted, and classified afresh since its last event: its class over every view is due (``final``)."""
        return self.counted and self.n_fresh > self.reported

    def see(self, xy: np.ndarray, frame_xy: np.ndarray, scores: np.ndarray, frame: int, cut: bool,
            small: bool = False, fresh: bool = True) -> None:
        if cut:  # centroid biased inward, crop half reflected: keeps the track alive, decides nothing
            self.edge_xy += xy
            self.n_edge += 1
        else:
            self.sum_xy += xy
            self.n += 1
            self.n_small += small
            if fresh:
                self.score_sum += (1 + self.copied) * scores
                self.n_fresh += 1
                self.copied = 0
            else:  # scores copied from the decision: the next fresh view stands for it
                self.copied += 1
        self.last = frame
        self.frame_xy = frame_xy

    def event(self, reason: str) -> TrackEvent:
        (x, y), (fx, fy) = self.pos, self.frame_xy
        self.reported = self.n_fresh
        weight = self.n - self.copied  # whole views the fresh ones stand for (not those copied since the last)
        return TrackEvent(self.id, float(x), float(y), float(fx), float(fy), self.score_sum / max(weight, 1e-9),
                          self.n, self.first, self.last, reason, self.n_small, self.n_fresh)


def _greedy_pairs(a: np.ndarray, b: np.ndarray, radius: float) -> list[tuple[int, int]]:
    """One-to-one pairs (i, j) of points a[i], b[j] closer than ``radius``, nearest pairs first."""
    if len(a) == 0 or len(b) == 0:
        return []
    d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    ii, jj = np.nonzero(d < radius)
    pairs, used_i, used_j = [], set(), set()
    for k in np.argsort(d[ii, jj], kind="stable"):
        i, j = int(ii[k]), int(jj[k])
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            pairs.append((i, j))
    return pairs


def _drop_fragments(pts: np.ndarray, radius: float) -> np.ndarray:
    """Indices of the points farther than ``radius`` from every earlier kept point."""
    if len(pts) < 2:
        return np.arange(len(pts))
    close = np.triu(np.hypot(pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1]) < radius, 1)
    if not close.any():  # the usual case
        return np.arange(len(pts))
    keep: list[int] = []
    for j in range(len(pts)):
        if not close[keep, j].any():
            keep.append(j)
    return np.array(keep)


def _median(a: np.ndarray) -> np.ndarray:
    """Median of the rows of a small (k, 2) array (np.median costs 60 us on 10 points)."""
    a = np.sort(a, axis=0)
    return (a[(len(a) - 1) // 2] + a[len(a) // 2]) / 2


def _vote_shift(pred: np.ndarray, dets: np.ndarray, max_jump: float, radius: float) -> np.ndarray:
    """The shift (dx, dy) that carries the most predicted track positions onto detections.

    Each pair gives a candidate shift det - pred; a candidate's support is how many
    candidates lie within ``radius`` of it (cells are farther apart than that, so each
    track supports a given shift at most once). Ties go to the smallest shift.
    """
    c = (dets[None, :, :] - pred[:, None, :]).reshape(-1, 2)
    c = c[np.hypot(c[:, 0], c[:, 1]) <= max_jump]
    if len(c) == 0:
        return np.zeros(2)
    if len(c) > 400:  # a crowded field: the 400 smallest candidates are plenty
        c = c[np.argsort(np.hypot(c[:, 0], c[:, 1]))[:400]]
    close = np.hypot(c[:, None, 0] - c[None, :, 0], c[:, None, 1] - c[None, :, 1]) < radius
    support = close.sum(axis=1) - np.hypot(c[:, 0], c[:, 1]) / (2 * max_jump)  # tie-break: < 1 vote
    best = int(np.argmax(support))
    return _median(c[close[best]])


class Tracker:
    """Tracks cells across frames in slide coordinates and says when each is counted."""

    def __init__(self, cfg: TrackConfig = TrackConfig()):
        self.cfg = cfg
        self.offset = np.zeros(2)  # slide = frame + offset
        self._velocity = np.zeros(2)
        self._active: list[_Track] = []
        self._memory: list[_Track] = []  # counted, closed tracks (remember=True)
        self._memory_xy: np.ndarray | None = None
        self._next_id = 0
        self._last_frame: int | None = None
        self._segment_frames = 0  # frames since the stream began or the view last jumped (``jump``)
        self.counted = 0
        self.jumps = 0
        self.returns = 0  # jumps back to a view seen before (``return_to``)
        self._measured = False  # the last frame added came with a measured stage shift
        self.view = 0  # which view the slide coordinates belong to: a new one after each jump
        self._next_view = 1
        self._parked: dict[int, list[_Track]] = {}  # the remembered cells of earlier views, oldest view first
        self._size: tuple[float, float] | None = None  # the frame's (width, height), px (``update``'s ``size``)
        self._travel, self._steps = 0.0, 0  # the view's moves, each as a share of a cell's room (``update``), summed

    def update(self, points, scores: np.ndarray | None, frame_index: int, shift: tuple[float, float] | None = None,
               cut: Sequence[bool] | None = None, small: Sequence[bool] | None = None,
               fresh: Sequence[bool] | None = None, size: tuple[int, int] | None = None) -> list[TrackEvent]:
        """Add one frame's detections; return the cells counted this frame, and a ``final`` event for each
        counted cell whose track closed with views added since it was counted (its class over all of them).

        Args:
            points: [(x, y)] detection centres in this frame, px, largest detection first (as
                ``field.detect`` gives them): one within ``fragment_radius`` of an earlier one is a
                fragment of that cell (a split nucleus, a granule at its rim) and is ignored.
            scores: [n, n_classes] score vectors of those detections (None: not classified).
            frame_index: increasing; gaps (dropped frames) are allowed.
            shift: (dx, dy) the image content moved since the previous frame, px (from
                ``StageMotion.update``); None: predicted from the stage's recent velocity.
            cut: per detection, True where the frame edge cuts the cell (``cut_by_edge``): such a
                view keeps its track alive but gives it no position, score or count while a whole
                view exists. None: every view whole.
            small: per detection, True where it is platelet-sized (``field.Detection.kind``); counted
                per track over its whole views (``TrackEvent.small_views``). None: none is.
            fresh: per detection, False where its scores were copied from its cell's decision (not
                classified again): the view adds no scores (the next fresh one stands for it). None: all fresh.
            size: the frame's (width, height), px: where the view moves so fast that no cell can be whole in
                ``min_frames`` frames running, fewer suffice (``_needed``). None: ``min_frames`` always.
        """
        cfg = self.cfg
        if size is not None:
            self._size = (float(size[0]), float(size[1]))
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if scores is None or len(pts) == 0:
            sc = np.zeros((len(pts), 1))
        else:
            sc = np.asarray(scores, dtype=np.float64).reshape(len(pts), -1)
        cut_ = np.zeros(len(pts), bool) if cut is None else np.asarray(cut, bool).reshape(len(pts))
        small_ = np.zeros(len(pts), bool) if small is None else np.asarray(small, bool).reshape(len(pts))
        fresh_ = np.ones(len(pts), bool) if fresh is None else np.asarray(fresh, bool).reshape(len(pts))
        keep = _drop_fragments(pts, cfg.px(cfg.fragment_radius))
        pts, sc, cut_, small_, fresh_ = pts[keep], sc[keep], cut_[keep], small_[keep], fresh_[keep]
        gap = 1 if self._last_frame is None else max(frame_index - self._last_frame, 1)
        last_frame, self._last_frame = self._last_frame, frame_index
        self._segment_frames += 1
        measured_before, self._measured = self._measured, shift is not None
        previous = self.offset.copy()
        predicted = previous - np.asarray(shift, np.float64) if shift is not None else previous + self._velocity * gap

        tracks = self._active
        pos = np.array([t.pos for t in tracks]).reshape(-1, 2) - predicted  # predicted frame positions
        correction = np.zeros(2)
        if len(tracks) and len(pts):
            # a measured stage shift is right to a px or two: the cells correct it within a cell's radius only
            # (searched as far as a jump, pairs of different cells out-voted a right reading at 160 px a frame and
            # split every track: 13 cells counted for 21); without one, the stage may have jerked that far
            # ... and only when the frame before was placed by one too (after a blank frame or a weak reading, its
            # offset was the stage's speed, a guess the wide search corrects: one blank frame in a 40 px a frame pan
            # counted 21 cells for 15 with the narrow search alone)
            reach = cfg.px(cfg.match_radius) if shift is not None and measured_before else cfg.px(cfg.max_jump)
            correction = _vote_shift(pos, pts, reach, cfg.px(cfg.match_radius))
        pairs = _greedy_pairs(pos + correction, pts, cfg.px(cfg.match_radius))
        whole = [(i, j) for i, j in pairs if not cut_[j]] or pairs  # cut views' centroids are biased
        if whole:
            ii, jj = np.array(whole).T
            self.offset = predicted - _median(pts[jj] - pos[ii])
            a = cfg.velocity_smoothing
            self._velocity = (1 - a) * self._velocity + a * (self.offset - previous) / gap
        else:
            self.offset = predicted - correction
        # Second chance, wider radius: unmatched detections against unmatched tracks.
        free_t = sorted(set(range(len(tracks))) - {i for i, _ in pairs})
        free_d = sorted(set(range(len(pts))) - {j for _, j in pairs})
        if free_t and free_d:
            more = _greedy_pairs(pos[free_t] + (predicted - self.offset), pts[free_d], cfg.px(cfg.recall_radius))
            pairs += [(free_t[i], free_d[j]) for i, j in more]
        before = (self._travel, self._steps)  # a track begun now: its window holds the move into this frame
        room = None if self._size is None else np.asarray(self._size) - cfg.cell_diameter_px
        if self._segment_frames > 1 and room is not None and (room > 0).all():
            # how far the view moved into this frame, as a share of the room a whole cell has along each axis, the
            # larger (a serpentine's turn moves along x, then along y: each share counts where the mean of each
            # axis apart halved both; unknown for a view's first frame). Since the frame added before, not per
            # frame of the source: frames dropped or left out (blank) between them showed no cell, so a cell is
            # whole in as many added frames as this says (divided by the gap, a blank frame after each tile of a
            # scan asked 3 views of cells whole in 1: 0 counted for 20)
            self._travel += float(np.max(np.abs(self.offset - previous) / room))
            self._steps += 1
        for i, j in pairs:
            tracks[i].see(pts[j] + self.offset, pts[j], sc[j], frame_index, bool(cut_[j]), bool(small_[j]),
                          bool(fresh_[j]))
        for t in self._active:  # seen now or in the frame before: its window reaches this frame
            if t.last == frame_index or t.last == last_frame:
                t.travel_to = (self._travel, self._steps)
        events = self._close_lost(frame_index)
        for j in sorted(set(range(len(pts))) - {j for _, j in pairs}):
            self._start_or_recall(pts[j], sc[j], frame_index, bool(cut_[j]), bool(small_[j]), bool(fresh_[j]),
                                  before, (self._travel, self._steps))
        need = max(cfg.decide_frames, cfg.min_frames)
        for t in self._active:
            if not t.counted and cfg.decide_frames > 0 and t.n >= need:
                events.append(self._count(t, "steady"))
        return events

    def flush(self) -> list[TrackEvent]:
        """End of stream: count the open tracks seen steadily; close everything (``final`` events as ``update``).
        A last stretch of fewer than ``min_frames`` frames (after a ``jump``, or a whole stream that short: a video
        of one or two frames, one image) is a still field (``jump``): its cells seen in each of its frames are
        counted, as ``--no-track`` counts them (they counted nothing)."""
        return self._close_all(still=True)

    def _close_all(self, still: bool) -> list[TrackEvent]:
        """Close every open track: count those seen steadily (``still``: a stretch shorter than ``min_frames``
        counts its cells seen in each of its frames), ``final`` events for counted ones."""
        short = still and self._segment_frames < self.cfg.min_frames
        events = [self._count(t, "flush") for t in self._active
                  if not t.counted and t.n >= (max(self._segment_frames, 1) if short else self._needed(t))]
        events += [t.event("final") for t in self._active if t.unreported]
        for t in self._active:
            self._forget_or_remember(t)
        self._active = []
        return events

    def jump(self) -> list[TrackEvent]:
        """The view jumped: the frame about to be added shares nothing with the one before (``StageMotion.jumped``:
        the stage stepped to another field, or a video of separate fields), so no cell of the one can be a cell
        of the other, wherever they sit in the frame. Every open track closes as at the end of a stream, and the
        remembered cells are parked with their view (their slide positions no longer compare with the new view's;
        ``return_to`` brings them back when the stage returns to that view). A stretch of fewer than
        ``min_frames`` frames between jumps is a still field: its cells seen in each of its frames are counted
        (the flicker test needs more views than it has). Returns the events, as ``flush``."""
        events = self._close_all(still=True)
        if self._memory:  # kept apart in case the stage comes back (``return_to``): its coordinates are its own
            self._parked.pop(self.view, None)
            self._parked[self.view] = self._memory
            self._trim_parked()
        self._memory, self._memory_xy = [], None
        self.view, self._next_view = self._next_view, self._next_view + 1
        self.offset, self._velocity = np.zeros(2), np.zeros(2)
        self._segment_frames = 0
        self.jumps += 1
        return events

    @property
    def segment_frames(self) -> int:
        """Frames added since the stream began or the view last jumped."""
        return self._segment_frames

    def parked_views(self) -> set[int]:
        """The earlier views whose remembered cells are kept (``return_to`` can go back to them)."""
        return set(self._parked)

    def return_to(self, view: int, offset: Sequence[float]) -> None:
        """The view that just began (``jump``, before any frame of it was added) is ``view`` seen again
        (``places.Places.find``): its remembered cells come back, and this frame lies at ``offset`` in its slide
        coordinates (slide = frame + offset), so the cells counted there are recognised, not counted again."""
        if self._active or self._segment_frames or view not in self._parked:
            raise ValueError("return_to belongs right after jump, to a parked view")
        self._memory, self._memory_xy = self._parked.pop(view), None
        self.view = view
        self.offset = np.asarray(offset, np.float64).reshape(2).copy()
        self.returns += 1

    def _trim_parked(self) -> None:
        """The parked views together keep at most ``memory`` cells: the oldest view goes first."""
        total = sum(len(m) for m in self._parked.values())
        while self._parked and total > max(self.cfg.memory, 1):
            oldest = next(iter(self._parked))
            total -= len(self._parked.pop(oldest))

    def tracks(self) -> list[dict]:
        """The open tracks, for a live display: id, where last seen in the frame, whole views, counted."""
        return [{"id": t.id, "center": [round(float(t.frame_xy[0]), 1), round(float(t.frame_xy[1]), 1)],
                 "frames": t.n, "counted": t.counted, "last_frame": t.last} for t in self._active]

    # ------------------------------------------------------------------ internals
    def _needed(self, t: _Track) -> int:
        """The whole views a track needs to be counted: ``min_frames``, or fewer where the view moved so fast while
        the cell was in it that no cell could be whole in ``min_frames`` frames running. A whole cell has the frame's
        extent less its diameter to move in along each axis; each frame's move takes a share of it (the larger of
        the two axes'), and one over the mean share is the number of frames every cell the view passes is whole in
        (at 330 px a frame across 640 px, one: count-hunt-35.json, 20-21 of the 28 cells such pans passed counted,
        none twice, where every frame had been taken for a jump). The mean runs
        from the frame the track began in (the move into it included) to the one after it was last seen: a
        detection seen once in one fast jerk of a slow pan is a flicker (the frames after it were slow, and a cell
        would have stayed in view), and one seen once where the view is still or slow needs ``min_frames``, as
        before. A cell wider than the frame is never whole: ``min_frames``."""
        need = self.cfg.min_frames
        if t.travel_from is None or t.travel_to is None or t.travel_to[1] <= t.travel_from[1]:
            return need
        share = (t.travel_to[0] - t.travel_from[0]) / (t.travel_to[1] - t.travel_from[1])
        return need if share <= 0 else max(1, min(need, int(1.0 / share + 1e-9)))

    def _count(self, t: _Track, reason: str) -> TrackEvent:
        t.counted = True
        self.counted += 1
        return t.event(reason)

    def _close_lost(self, frame_index: int) -> list[TrackEvent]:
        events, keep = [], []
        for t in self._active:
            if frame_index - t.last <= self.cfg.max_missed:
                keep.append(t)
                continue
            if not t.counted and t.n >= self._needed(t):
                events.append(self._count(t, "lost"))
            elif t.unreported:  # seen again since it was counted: its class over every view
                events.append(t.event("final"))
            self._forget_or_remember(t)
        self._active = keep
        return events

    def _forget_or_remember(self, t: _Track) -> None:
        if t.counted and self.cfg.remember:
            self._memory.append(t)
            if self._memory_xy is not None:  # kept up to date, not built again from every remembered cell
                self._memory_xy = np.vstack([self._memory_xy, np.asarray(t.pos, np.float64)[None]])
            if len(self._memory) > max(self.cfg.memory, 1):  # the oldest remembered cell is forgotten
                self._memory.pop(0)
                if self._memory_xy is not None:
                    self._memory_xy = self._memory_xy[1:]

    def ids(self) -> set[int]:
        """The ids of the tracks open or remembered (a counted cell's class is needed while its track can return)."""
        return ({t.id for t in self._active} | {t.id for t in self._memory}
                | {t.id for m in self._parked.values() for t in m})

    def _start_or_recall(self, p: np.ndarray, scores: np.ndarray, frame_index: int, cut: bool, small: bool,
                         fresh: bool = True, travel_from: tuple[float, int] | None = None,
                         travel_to: tuple[float, int] | None = None) -> None:
        xy = p + self.offset
        if self._memory:
            if self._memory_xy is None:
                self._memory_xy = np.array([m.pos for m in self._memory], np.float64).reshape(-1, 2)
            d = np.hypot(*(self._memory_xy - xy).T)
            k = int(np.argmin(d))
            if d[k] < self.cfg.px(self.cfg.recall_radius):  # a counted cell back in view: not a new one
                t = self._memory.pop(k)
                self._memory_xy = np.delete(self._memory_xy, k, axis=0)
                t.see(xy, p, scores, frame_index, cut, small, fresh)
                t.travel_to = travel_to
                self._active.append(t)
                return
        t = _Track(self._next_id, len(scores), frame_index)
        t.see(xy, p, scores, frame_index, cut, small, fresh)
        t.travel_from, t.travel_to = travel_from, travel_to
        self._active.append(t)
        self._next_id += 1


# Two views are claimed to show one place on stronger evidence than "not a jump" (``Places.find``, ``overlap``): with
# many key frames to compare, the jump test's tail let 15 of 9,180 pairs of different PBC fields through (a centred
# cell correlates at no shift), their fine detail matching at 0.45 at most; frames of one place match at 0.83 or more
# (benchmarks/results/field-return.json).
MIN_DETAIL = 0.6


def highpass(grey: np.ndarray) -> np.ndarray:
    """A grey view's fine detail: less its blur (sigma 3 px), as ``detail_match`` compares it."""
    import cv2

    return grey - cv2.GaussianBlur(grey, (0, 0), 3)


def detail_match(a: np.ndarray, b: np.ndarray, dx: float, dy: float) -> float:
    """How well the fine detail of grey frame ``a`` moved by (dx, dy) matches ``b``: the correlation of the two
    frames less their blur (sigma 3 px) over where they overlap; 0 when they overlap on less than a fifth."""
    return _highpass_match(highpass(a), highpass(b), dx, dy)


def _highpass_match(hp_a: np.ndarray, hp_b: np.ndarray, dx: float, dy: float) -> float:
    """``detail_match`` on views already passed through ``highpass``."""
    import cv2

    moved = cv2.warpAffine(hp_a, np.float32([[1, 0, dx], [0, 1, dy]]), hp_a.shape[::-1],
                           borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    inside = np.isfinite(moved)
    if inside.sum() < 0.2 * inside.size:
        return 0.0
    x, y = moved[inside], hp_b[inside]
    x, y = x - x.mean(), y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


def _peaks(r: np.ndarray, n: int, apart: int = 2) -> list[tuple[float, float, float]]:
    """The ``n`` highest peaks of a correlation surface that wraps round: (height, x, y), x and y to a fraction of a
    px (the 3x3 centroid), each at least ``apart`` px from a higher one."""
    h, w = r.shape
    r = r.copy()
    out = []
    for _ in range(n):
        y, x = np.unravel_index(int(np.argmax(r)), r.shape)
        ys, xs = (np.arange(y - 1, y + 2) % h), (np.arange(x - 1, x + 2) % w)
        patch = np.clip(r[np.ix_(ys, xs)], 0, None)
        total = float(patch.sum())
        off = (0.0, 0.0) if total <= 0 else (float((patch.sum(0) * [-1, 0, 1]).sum() / total),
                                             float((patch.sum(1) * [-1, 0, 1]).sum() / total))
        out.append((float(r[y, x]), x + off[0], y + off[1]))
        r[np.ix_(np.arange(y - apart, y + apart + 1) % h, np.arange(x - apart, x + apart + 1) % w)] = -np.inf
    return out


def overlap_surface(a_spectrum: np.ndarray, b_spectrum: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The phase correlation of two coarse views from their ``spectrum``s (whitened, so the product needs no
    normalising; over the last two axes: ``a_spectrum`` may be a stack): a peak at (x, y) where ``b`` shows ``a``
    moved by (x, y), modulo the view's size. No window: a window fades the frame's edges, where the part two views
    share lies when they share less than half."""
    return np.fft.irfft2(b_spectrum * np.conj(a_spectrum), s=shape).astype(np.float32)


def cut_by_edge(box: Sequence[float], width: int, height: int, margin: int = 1) -> bool:
    """True when a detection's box (x0, y0, x1, y1; x1/y1 exclusive) touches the frame border."""
    x0, y0, x1, y1 = box
    return x0 <= margin or y0 <= margin or x1 >= width - margin or y1 >= height - margin


class StageMotion:
    """How far the image moved between consecutive frames: phase correlation (OpenCV) of the grey frames.

    Uses the whole frame, red cells included, so it measures the stage's move even
    with no white cell in view. Downscaled by ``downscale`` (2: 0.8-2.5 ms per 640x480
    frame on our two shared cores, within about a px; the tracker refines it from the cells).

    ``jumped``: this frame shares nothing with the one before (``Tracker.jump``): the peak of the same
    correlation on frames 4x smaller is below ``jump_response``, or below ``check_response`` while the fine
    detail of the two frames, aligned by it, hardly matches (``detail_match`` < ``jump_detail``). Measured
    (benchmarks/results/stage-jump.json): consecutive frames of generated slide scans (pans, jerks, pauses,
    refocusing) peak at 0.87 or more; two different fields at 0.20 at most (DeepBioNet) and, for PBC, whose
    fields all centre one large white cell that correlates at no shift, up to 0.68, where their detail matches
    at 0.22 at most (scans: 0.84 or more). Before a frame is called a jump, the part it shares with the one
    before is sought (``overlap``: down to a quarter of the frame, its fine detail matching at ``MIN_DETAIL``):
    a pan faster than half a field a frame, whose shared part the window fades, goes on as a pan. No two
    different real fields share such a part (PBC 9,180 pairs, DeepBioNet 63,546; field-return.json).
    """

    def __init__(self, downscale: int = 2, min_response: float = 0.03, jump_response: float = 0.3,
                 check_response: float = 0.75, jump_detail: float = 0.3, jerk: float = 0.1,
                 min_share: float = 0.25):
        self.downscale = downscale
        self.min_share = min_share  # the least part of the frame ``overlap`` accepts two views to share
        self.jerk = jerk  # x the frame's shorter side: a sharper change of shift is checked (``_checked``)
        self.min_response = min_response
        self.jump_response, self.check_response, self.jump_detail = jump_response, check_response, jump_detail
        self.jumped = False
        self.settled: str | None = None
        self._prev: np.ndarray | None = None
        self._window: np.ndarray | None = None
        self._coarse: np.ndarray | None = None
        self._coarse_window: np.ndarray | None = None
        self._held: tuple[np.ndarray, np.ndarray] | None = None  # the view before a frame that jumped
        self._before: tuple[np.ndarray, np.ndarray] | None = None  # the view before the reference (``_prev``)
        self._last_shift_before: tuple[float, float] | None = None  # the shift from ``_before`` to ``_prev``
        self.began: np.ndarray | None = None  # settled "jump": the grey view (``current``'s size) that began anew
        self.restarted = False  # this frame compares with none before it (another size): a new view begins here

    def update(self, frame_rgb: np.ndarray) -> tuple[float, float] | None:
        """(dx, dy) the content moved since the previous frame, px; None for the first frame, no clear peak, a
        blank frame, or a frame unlike the one before (``jumped``). Sets ``jumped`` and ``settled``:

        - ``jumped``: this frame is unlike the last one with texture (another field, or a glitch: a torn or
          blurred frame). Which one is only known from the next frame, which ``settled`` then says.
        - ``settled`` (the next call): "jump" when the frame that ``jumped`` began a new view (this one is unlike
          the view before it), "glitch" when this one continues the view before it (then the shift returned is
          from that view; the glitch frame is to be left out), None when nothing was pending.

        A blank frame (no texture) proves nothing: it is skipped, and the next frame is compared with the last
        one that had texture (a shutter or a lamp between two fields does not hide the jump).
        """
        import cv2

        grey = self.view_of(frame_rgb)
        self.jumped, self.settled = False, None
        self.restarted = False
        if min(grey.shape) < 8:  # too small to correlate (phaseCorrelate would raise)
            self._restart()
            self._prev = self._coarse = None
            return None
        coarse = self._coarse_of(grey)
        if float(coarse.std()) < 2.0:  # blank: keep the last view with texture as the reference
            return None
        if self._prev is None or self._prev.shape != grey.shape:
            if self._prev is not None:  # another frame size: another camera or set-up, a view of its own
                self._restart()
            self._window = cv2.createHanningWindow(grey.shape[::-1], cv2.CV_32F)
            self._coarse_window = cv2.createHanningWindow(coarse.shape[::-1], cv2.CV_32F)
            self._prev, self._coarse, self._held, self._before = grey, coarse, None, None
            return None
        if self._held is not None:  # the frame before was unlike the view before it: which is this one like?
            held, self._held = self._held, None
            if not self._unlike(held[0], held[1], grey, coarse):
                self.settled = "glitch"
                return self._accept(held, grey, coarse)
            self.settled, self._before, self.began = "jump", None, self._prev
        prev = (self._prev, self._coarse)
        if not self._unlike(*prev, grey, coarse):
            before, into_prev = self._before, self._last_shift_before
            s = self._accept(prev, grey, coarse)
            return self._checked(before, into_prev, grey, s)
        before = self._before
        if before is not None and not self._unlike(before[0], before[1], grey, coarse):
            # the frame before was the odd one (a torn frame close enough to pass) and this one continues the view
            # before it: the shift since that frame is the one since the view before, less the odd frame's
            odd = self._last_shift_before  # from the view before to the odd frame, as the tracker was told
            s = self._accept(before, grey, coarse)
            return None if s is None or odd is None else (s[0] - odd[0], s[1] - odd[1])
        far = self.overlap(prev[0], grey)  # a pan faster than half a field a frame still shares a part
        if far is not None:
            return self._accept(prev, grey, coarse, far[0])
        self.jumped = True
        self._held = prev
        self._prev, self._coarse, self._before = grey, coarse, None
        return None

    def _restart(self) -> None:
        """Nothing before this frame compares with it (another frame size, or a frame too small): ``restarted``,
        and a frame held back (``jumped``) began a view of its own (``settled`` "jump"), not to wait for ever."""
        self.restarted = self._prev is not None or self._held is not None
        if self._held is not None:
            self.settled, self.began = "jump", self._prev
        self._held, self._before = None, None

    def _checked(self, before: tuple[np.ndarray, np.ndarray] | None, into_prev: tuple[float, float] | None,
                 grey: np.ndarray, s: tuple[float, float] | None) -> tuple[float, float] | None:
        """The shift into this frame, checked when it breaks sharply from the one into the frame before (more than
        ``jerk`` of the frame's shorter side): measured again from the frame before that one. A torn frame (half of
        it rolled sideways) matched the view before it by one half and the next frame by the other, and the stage
        seemed to leap, for good (count-hunt-33.json: 41 cells for 23). Of the two readings, the one under which the
        frame before and this one match in fine detail (``detail_match``) is kept: a real move reads alike both ways,
        or (past half the frame, where the direct correlation wraps round) matches better through the reference."""
        if s is None or before is None or into_prev is None:
            return s
        reach = self.jerk * min(grey.shape) * self.downscale
        if max(abs(s[0] - into_prev[0]), abs(s[1] - into_prev[1])) <= reach:
            return s
        direct = self._shift(before[0], grey)
        chained = (into_prev[0] + s[0], into_prev[1] + s[1])  # from the frame before, through the reference
        if direct is None or max(abs(direct[0] - chained[0]), abs(direct[1] - chained[1])) <= reach / 2:
            return s
        # they disagree: the one under which the two frames' fine detail matches better is right (a shift past half
        # the frame wraps round in the correlation, so the direct one is no judge alone: a fast pan's real move).
        # A direct reading that matches nothing is noise: after a step of more than half a field, the frame before
        # and this one share too little for either reading to match (a review of session 35: 16 counted for 11)
        d = self.downscale
        direct_detail = detail_match(before[0], grey, direct[0] / d, direct[1] / d)
        if direct_detail < self.jump_detail or direct_detail <= detail_match(before[0], grey, chained[0] / d,
                                                                             chained[1] / d):
            return s
        s = (direct[0] - into_prev[0], direct[1] - into_prev[1])  # the frame before was the odd one: step over it
        self._last_shift_before = s
        return s

    @property
    def current(self) -> np.ndarray | None:
        """The grey view (float32, ``downscale`` x smaller) of the last frame with texture: the one ``update`` compares
        the next frame with (after a jump not yet settled, the frame that jumped)."""
        return self._prev

    def same_place(self, ref: np.ndarray, grey: np.ndarray,
                   min_detail: float = 0.0) -> tuple[tuple[float, float], float, float] | None:
        """((dx, dy), peak, detail): how far the content moved from grey view ``ref`` to ``grey`` (as ``current``
        gives them), full-size px, the coarse correlation's peak and ``detail_match`` at its shift, when the two show
        one place: what ``update`` would not call a jump from the one to the other, with a detail match of at least
        ``min_detail``. None when they share nothing, or differ in size."""
        if self._window is None or ref.shape != grey.shape or grey.shape != self._window.shape:
            return None
        a, b = ref.astype(np.float32, copy=False), grey.astype(np.float32, copy=False)
        peak, detail = self._likeness(a, self._coarse_of(a), b, self._coarse_of(b), detail_always=True)
        if self._is_jump(peak, detail) or detail < min_detail:
            return None
        s = self._shift(a, b)
        return None if s is None else (s, peak, detail)

    def view_of(self, frame_rgb: np.ndarray) -> np.ndarray:
        """The grey view ``update`` compares (float32, ``downscale`` x smaller): what ``overlap`` takes."""
        import cv2

        grey = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        if self.downscale > 1:
            grey = cv2.resize(grey, None, fx=1 / self.downscale, fy=1 / self.downscale, interpolation=cv2.INTER_AREA)
        return grey.astype(np.float32)

    def spectrum(self, grey: np.ndarray) -> np.ndarray:
        """The Fourier transform of ``grey``'s coarse view less its mean, whitened (each frequency's phase alone,
        complex64): what ``overlap`` correlates. Kept with a key frame (``places.Places``), so that a new view is
        compared with all of them at once."""
        coarse = self._coarse_of(grey.astype(np.float32, copy=False))
        f = np.fft.rfft2(coarse - coarse.mean())
        return (f / (np.abs(f) + 1e-9)).astype(np.complex64)

    def coarse_shape(self, grey: np.ndarray) -> tuple[int, int]:
        """The shape of ``grey``'s coarse view (what ``spectrum`` transforms)."""
        return self._coarse_of(grey.astype(np.float32, copy=False)).shape

    def overlap(self, ref: np.ndarray, grey: np.ndarray, min_detail: float = MIN_DETAIL,
                ref_spectrum: np.ndarray | None = None, grey_spectrum: np.ndarray | None = None,
                peaks: int = 3) -> tuple[tuple[float, float], float] | None:
        """((dx, dy), detail): how far the content moved from grey view ``ref`` to ``grey`` (full-size px) where the
        two share a part too small for the jump test, down to ``min_share`` of the frame: the next row of a scan
        reached by a cut, or a pan faster than half a field a frame. Read from the coarse views' phase correlation
        without a window; each of its ``peaks`` highest peaks is read four ways (a shift wraps round the frame), and the
        reading whose fine detail matches best (``detail_match`` over the part shared) is kept when that match is
        ``min_detail`` or more. None otherwise, or when the views differ in size. ``ref_spectrum``, ``grey_spectrum``:
        their ``spectrum`` where already known."""
        if ref.shape != grey.shape or min(grey.shape) < 8:
            return None
        a, b = ref.astype(np.float32, copy=False), grey.astype(np.float32, copy=False)
        shape = self._coarse_of(b).shape
        surface = overlap_surface(self.spectrum(a) if ref_spectrum is None else ref_spectrum,
                                  self.spectrum(b) if grey_spectrum is None else grey_spectrum, shape)
        h, w = shape
        up = b.shape[1] / w
        hp_a, hp_b = highpass(a), highpass(b)
        best: tuple[float, float, float] | None = None
        for _, x, y in _peaks(surface, peaks):
            for rx in {x, x - w}:
                for ry in {y, y - h}:
                    if (w - abs(rx)) * (h - abs(ry)) < self.min_share * w * h:
                        continue
                    d = _highpass_match(hp_a, hp_b, rx * up, ry * up)
                    if best is None or d > best[0]:
                        best = (d, rx * up, ry * up)
        if best is None or best[0] < min_detail:
            return None
        return (float(best[1] * self.downscale), float(best[2] * self.downscale)), float(best[0])

    def _coarse_of(self, grey: np.ndarray) -> np.ndarray:
        """The coarse view: 4x smaller than the camera's (as is, when ``downscale`` is 4 or more, or it would be
        tiny)."""
        import cv2

        f = self.downscale / 4
        if f >= 1.0 or min(grey.shape) * f < 8:
            return grey
        return cv2.resize(grey, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)

    def _accept(self, ref: tuple[np.ndarray, np.ndarray], grey: np.ndarray, coarse: np.ndarray,
                shift: tuple[float, float] | None = None) -> tuple[float, float] | None:
        """This frame continues the view ``ref``: it becomes the reference (``ref`` the one before); the shift
        (``shift`` where already read, as ``overlap`` reads a part shared; else measured here)."""
        s = self._shift(ref[0], grey) if shift is None else shift
        self._before, self._last_shift_before = ref, s
        self._prev, self._coarse = grey, coarse
        return s

    def _unlike(self, a: np.ndarray, a_coarse: np.ndarray, b: np.ndarray, b_coarse: np.ndarray) -> bool:
        """The two views share nothing: the coarse correlation has no clear peak, or a weak one where the fine
        detail, aligned by it, does not match."""
        return self._is_jump(*self._likeness(a, a_coarse, b, b_coarse))

    def _likeness(self, a: np.ndarray, a_coarse: np.ndarray, b: np.ndarray, b_coarse: np.ndarray,
                  detail_always: bool = False) -> tuple[float, float | None]:
        """(peak, detail): the coarse correlation's peak, and ``detail_match`` at its shift where the jump test
        reads it (a peak between ``jump_response`` and ``check_response``; with ``detail_always`` at any peak
        from ``jump_response`` up); None where it is not read."""
        import cv2

        (cx, cy), peak = cv2.phaseCorrelate(a_coarse, b_coarse, self._coarse_window)
        if peak < self.jump_response or (peak >= self.check_response and not detail_always):
            return float(peak), None
        up = b.shape[1] / b_coarse.shape[1]
        return float(peak), detail_match(a, b, cx * up, cy * up)

    def _is_jump(self, peak: float, detail: float | None) -> bool:
        """The jump test on ``_likeness``'s reading: no clear peak, or a weak one whose fine detail does not match."""
        return peak < self.jump_response or (peak < self.check_response and detail < self.jump_detail)

    def _shift(self, a: np.ndarray, b: np.ndarray) -> tuple[float, float] | None:
        import cv2

        (dx, dy), response = cv2.phaseCorrelate(a, b, self._window)
        if response < self.min_response:
            return None
        return dx * self.downscale, dy * self.downscale
