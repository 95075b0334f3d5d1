"""Tracking: each physical cell counted once while the stage pans, pauses, jerks and comes back."""
import functools
import inspect
import time

import numpy as np
import pytest

from scopelite.edge import field
from scopelite.edge.bundle import CLASS_NAMES
from scopelite.edge.track import StageMotion, TrackConfig, Tracker, cut_by_edge
from scopelite.train.slide import make_slide_scan

N = len(CLASS_NAMES)


def one_hot(k, strength=0.9):
    s = np.full(N, (1 - strength) / (N - 1))
    s[k] = strength
    return s


def run_points(tracker, frames, scores=None, fresh=None):
    """frames: [[(x, y), ...] per frame] -> all events, flush included."""
    events = []
    for i, pts in enumerate(frames):
        sc = None if scores is None else scores[i]
        events += tracker.update(pts, sc, i, fresh=None if fresh is None else fresh[i])
    return events + tracker.flush()


def counts(events):
    """The events that count a cell (not the ``final`` ones that revise a counted cell's class)."""
    return [e for e in events if e.reason != "final"]


def test_a_flicker_is_not_counted():
    tr = Tracker()
    assert run_points(tr, [[], [(100, 100)], [], [], [], [], [], [], []]) == []
    tr = Tracker()  # two frames is still not steady (min_frames = 3)
    assert run_points(tr, [[(100, 100)], [(101, 100)]] + [[]] * 10) == []


def test_an_empty_frame_with_empty_scores():
    tr = Tracker()
    assert tr.update([], np.empty((0, N)), 0) == [] and tr.update(np.empty((0, 2)), None, 1, shift=(3.0, 0.0)) == []


def test_a_cell_in_view_for_100_frames_is_counted_once():
    tr = Tracker()
    frames = [[(300 + np.sin(i) * 2, 200 + np.cos(i) * 2)] for i in range(100)]  # a little stage jitter
    events = run_points(tr, frames)
    assert len(counts(events)) == 1 and events[0].frames_seen == TrackConfig().decide_frames
    assert events[0].reason == "steady" and tr.counted == 1
    # its track closes at the end: a final event over all 100 views, to revise its class
    assert [(e.reason, e.frames_seen, e.fresh_views) for e in events[1:]] == [("final", 100, 100)]


def test_class_is_the_mean_over_the_frames_seen():
    a, b = CLASS_NAMES.index("lymphocyte"), CLASS_NAMES.index("monocyte")
    weak_a = np.full(N, 0.05)
    weak_a[a], weak_a[b] = 0.4, 0.3
    frames = [[(200, 200)]] * 6
    scores = [weak_a[None]] + [one_hot(b, 0.6)[None]] * 5
    for cfg in (TrackConfig(), TrackConfig(decide_frames=0)):  # counted on the way / when the track closes
        (ev,) = run_points(Tracker(cfg), frames, scores)
        assert int(np.argmax(ev.scores)) == b and ev.frames_seen == 6
        np.testing.assert_allclose(ev.scores, (weak_a + 5 * one_hot(b, 0.6)) / 6)


def test_a_counted_cell_is_revised_over_all_its_views_when_its_track_closes():
    a, b = CLASS_NAMES.index("immature_granulocyte"), CLASS_NAMES.index("monocyte")
    frames = [[(300, 200)]] * 45
    scores = [one_hot(a, 0.6)[None]] * 15 + [one_hot(b, 0.8)[None]] * 30  # A while deciding, then B
    counted, final = run_points(Tracker(), frames, scores)
    assert (counted.reason, int(np.argmax(counted.scores)), counted.frames_seen) == ("steady", a, 15)
    assert (final.reason, final.track_id, final.frames_seen, final.fresh_views) == ("final", counted.track_id, 45, 45)
    np.testing.assert_allclose(final.scores, (15 * one_hot(a, 0.6) + 30 * one_hot(b, 0.8)) / 45)
    # counted when its track closed (all its views already): nothing to revise
    assert [e.reason for e in run_points(Tracker(), frames[:10] + [[]] * 8, scores[:10] + [None] * 8)] == ["lost"]


def test_copied_views_add_no_scores_and_the_next_fresh_view_stands_for_them():
    a, b, c = (CLASS_NAMES.index(k) for k in ("lymphocyte", "monocyte", "basophil"))
    frames = [[(300, 200)]] * 45
    fresh = [[True]] * 15 + [[i % 5 == 4] for i in range(30)]  # classified again one frame in 5 once counted
    scores = [one_hot(a)[None]] * 15 + [(one_hot(b) if f[0] else one_hot(c))[None] for f in fresh[15:]]
    counted, final = run_points(Tracker(), frames, scores, fresh)
    assert final.frames_seen == 45 and final.fresh_views == 15 + 6
    # the copied views' scores (c) are nowhere; each of the 6 fresh b views stands for 5 frames
    np.testing.assert_allclose(final.scores, (15 * one_hot(a) + 30 * one_hot(b)) / 45)
    assert int(np.argmax(counted.scores)) == a and int(np.argmax(final.scores)) == b
    # never classified again after its count: no final event
    fresh = [[True]] * 15 + [[False]] * 30
    assert [e.reason for e in run_points(Tracker(), frames, scores, fresh)] == ["steady"]


def test_a_recalled_cell_gives_another_final_event_when_it_closes_again():
    cells = [(100, 100), (200, 300), (400, 150), (550, 400), (900, 250)]
    offsets = [(12 * i, 0) for i in range(60)] + [(720 - 12 * i, 0) for i in range(61)]  # there and back
    events = run_points(Tracker(), pan(cells, offsets))
    by_track = {}
    for e in events:
        by_track.setdefault(e.track_id, []).append(e)
    assert len(by_track) == len(cells) and all(len(counts(v)) == 1 for v in by_track.values())
    # the cells that left the view and came back: a final event each time their track closed
    assert [e.reason for e in by_track[1]] == ["steady", "final", "final"]
    assert [e.reason for e in by_track[0]] == ["lost", "final"]  # counted when it left; revised after its recall
    for v in by_track.values():  # each over more views than the last
        assert all(a.frames_seen < b.frames_seen for a, b in zip(v, v[1:]))


def pan(cells, offsets):
    """Frame positions of slide points ``cells`` for view offsets, only those inside a 640x480 frame."""
    out = []
    for ox, oy in offsets:
        out.append([(x - ox, y - oy) for x, y in cells if 0 <= x - ox < 640 and 0 <= y - oy < 480])
    return out


def test_panning_back_does_not_recount():
    cells = [(100, 100), (200, 300), (400, 150), (550, 400), (900, 250)]
    there = [(12 * i, 0) for i in range(60)]  # pan 720 px right: the first cells leave the view ...
    back = [(720 - 12 * i, 0) for i in range(61)]  # ... and come back
    frames = pan(cells, there + back)
    assert len(counts(run_points(Tracker(), frames))) == len(cells)
    # Without the slide memory, the cells that left for long are counted again.
    assert len(counts(run_points(Tracker(TrackConfig(remember=False)), frames))) > len(cells)


def test_a_jerk_is_followed_without_a_stage_measurement():
    cells = [(100, 100), (260, 300), (400, 150), (520, 380)]
    offsets = [(0, 0)] * 5 + [(-70, 40)] * 10 + [(-70 + 4 * i, 40) for i in range(10)]  # a 80 px jump
    frames = pan(cells, offsets)
    assert len(counts(run_points(Tracker(), frames))) == len(cells)


def test_views_cut_by_the_edge_decide_nothing_and_fragments_are_ignored():
    tr = Tracker()
    for i in range(10):  # only ever seen cut by the frame edge: never counted
        assert tr.update([(3, 200)], None, i, cut=[True]) == []
    assert tr.flush() == []
    tr = Tracker()
    events = []
    for i in range(20):  # a cell and a small fragment 20 px from it (largest first, as field.detect gives)
        events += tr.update([(300, 200), (316, 212)], None, i)
    assert len(counts(events + tr.flush())) == 1
    assert cut_by_edge((0, 10, 20, 30), 640, 480) and not cut_by_edge((5, 10, 20, 30), 640, 480)
    assert cut_by_edge((600, 10, 640, 30), 640, 480)


def test_platelet_sized_views_are_counted_over_the_whole_views_only():
    tr = Tracker()
    events = []
    for i in range(4):  # entering cut by the edge (and platelet-sized there): not a whole view
        events += tr.update([(3, 200)], None, i, cut=[True], small=[True])
    for i in range(4, 12):  # then whole: platelet-sized in 6 of 8 views
        events += tr.update([(40 + i, 200)], None, i, small=[i % 3 != 0])
    (ev,) = events + tr.flush()
    assert ev.frames_seen == 8 and ev.small_views == sum(i % 3 != 0 for i in range(4, 12)) == 6
    (ev,) = run_points(Tracker(), [[(200, 200)]] * 6)  # not given: none is
    assert ev.small_views == 0


def test_config_sized_from_the_red_cells():
    cfg = TrackConfig.for_rbc_px(24.0, min_frames=4)
    assert cfg.cell_diameter_px == 48.0 and cfg.px(cfg.match_radius) == 24.0 and cfg.min_frames == 4


def test_dropped_frames_keep_the_track():
    tr = Tracker(TrackConfig(decide_frames=0))
    events = []
    for i in (0, 1, 4, 5, 9, 10):  # frame indices with gaps of up to 3 (max_missed 5)
        events += tr.update([(300 + i, 200)], None, i)
    events += tr.flush()
    assert len(events) == 1 and events[0].frames_seen == 6


def test_stage_motion_measures_the_shift():
    sc = make_slide_scan(3, slide_size=(900, 700), events=False)
    big = sc.slide
    a, b = big[50:530, 80:720], big[57:537, 67:707]  # the view moved 13 px left and 7 px down
    sm = StageMotion()
    assert sm.update(a) is None
    dx, dy = sm.update(b)
    assert abs(dx - 13) < 1.5 and abs(dy + 7) < 1.5


SCAN = {"slide_size": (1000, 760), "speed": (8.0, 20.0)}  # 100-180 frames: a few seconds of detection each


def detect(frame):
    """field.detect, before or after it took the frame's red-cell diameter (synthetic red cells: 24 px)."""
    if "rbc_px" in inspect.signature(field.detect).parameters:
        return field.detect(frame, 24.0)
    return field.detect(frame)


@functools.lru_cache(maxsize=None)
def detected_scan(seed):
    """A synthetic scan through the detector: per frame, centres, scores, cut flags and the stage shift.
    Scores: the class of the true cell the detection lies on in 70 % of the frames, a random one otherwise."""
    sc = make_slide_scan(seed, **SCAN)
    rng = np.random.default_rng(seed)
    motion = StageMotion()
    w, h = sc.frame_size
    frames = []
    for i, (frame, _) in enumerate(sc.frames()):
        dets = detect(frame)
        x0, y0 = sc.path[i]
        scores = np.empty((len(dets), N))
        for j, d in enumerate(dets):
            c = min(sc.cells, key=lambda c: np.hypot(c["center"][0] - x0 - d.x, c["center"][1] - y0 - d.y))
            scores[j] = one_hot(CLASS_NAMES.index(c["label"]) if rng.random() < 0.7 else int(rng.integers(N)), 0.6)
        frames.append(([(d.x, d.y) for d in dets], scores, [cut_by_edge(d.box, w, h) for d in dets],
                       motion.update(frame)))
    return sc, frames


def scan_and_count(seed, use_stage_motion=True):
    sc, frames = detected_scan(seed)
    tracker, events = Tracker(), []
    for i, (pts, scores, cut, shift) in enumerate(frames):
        events += tracker.update(pts, scores, i, shift=shift if use_stage_motion else None, cut=cut)
    return sc, events + tracker.flush()


def detectable(sc, frames):
    """Ids of the cells the detector found (within 15 px) in at least min_frames frames that show them whole."""
    hits = {}
    for i, (pts, *_rest) in enumerate(frames):
        for c in sc.visible(i):
            if pts and np.min(np.hypot(*(np.array(pts) - c["center"]).T)) < 15:
                hits[c["id"]] = hits.get(c["id"], 0) + 1
    return {k for k, v in hits.items() if v >= TrackConfig().min_frames}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_detector_and_tracker_count_every_cell_of_a_scan_once(seed):
    sc, events = scan_and_count(seed)
    assert min(sc.frames_in_view().values()) >= TrackConfig().min_frames  # every cell could be counted
    # The tracker's part: exactly the cells the detector found. The detector's: (nearly) all of them;
    # field.detect as committed with this test finds every one on these seeds, so the count is exact.
    found_by_detector = detectable(sc, detected_scan(seed)[1])
    assert len(found_by_detector) >= 0.9 * len(sc.cells), "the detector misses cells: see tests/test_field.py"
    assert len(counts(events)) == len(found_by_detector)
    x0, y0 = sc.path[0]  # slide coordinates of the tracker = those of the first frame
    found, finals = {}, {}
    for e in events:
        c = min(sc.cells, key=lambda c: np.hypot(c["center"][0] - x0 - e.x, c["center"][1] - y0 - e.y))
        assert np.hypot(c["center"][0] - x0 - e.x, c["center"][1] - y0 - e.y) < 15
        (finals if e.reason == "final" else found)[c["id"]] = CLASS_NAMES[int(np.argmax(e.scores))]
    assert set(found) == found_by_detector  # one event per cell found
    assert all(found[c["id"]] == c["label"] for c in sc.cells if c["id"] in found)  # the mean beats 30 % wrong
    # the cells seen again after they were counted: their class over every view, as right
    assert set(finals) <= set(found) and all(finals[k] == found[k] for k in finals)


def test_without_stage_motion_the_detections_alone_suffice():
    sc, events = scan_and_count(3, use_stage_motion=False)
    assert len(counts(events)) == len(detectable(sc, detected_scan(3)[1]))


def test_tracker_costs_well_under_a_millisecond_for_12_cells():
    rng = np.random.default_rng(0)
    cells = rng.uniform([0, 0], [4000, 480], size=(120, 2))  # a long strip: about 12 in view at a time
    tr = Tracker()
    times = []
    for i in range(300):
        ox = 11.0 * i
        pts = cells[(cells[:, 0] >= ox) & (cells[:, 0] < ox + 640)] - [ox, 0] + rng.normal(0, 0.7, 2)
        scores = rng.dirichlet(np.ones(N), size=len(pts))
        t = time.perf_counter()
        tr.update(pts, scores, i)
        times.append(time.perf_counter() - t)
    per_frame = float(np.median(times))
    print(f"tracker: {per_frame * 1e6:.0f} us per frame, median of 300, about 12 cells")
    assert per_frame < 1e-3


def test_slide_scan_is_reproducible_and_moves_as_a_stage_does():
    a, b = make_slide_scan(5, **SCAN), make_slide_scan(5, **SCAN)
    assert a.path == b.path and np.array_equal(a.frame(7), b.frame(7)) and a.frame(7).shape == (480, 640, 3)
    assert not np.array_equal(a.frame(7), a.frame(8)) or a.path[7] != a.path[8]
    kinds = {k for _, k in make_slide_scan(0).events}
    assert {"pause", "jerk", "back", "refocus", "row"} <= kinds
    steps = np.abs(np.diff(np.array(a.path), axis=0)).max(axis=1)
    assert steps.max() < 60 and (steps <= 1).sum() > 5  # jerks are bounded; pauses exist


def test_the_slide_memory_keeps_the_most_recent_cells_and_its_positions_in_step():
    """A daemon scanning for weeks: the remembered (counted, closed) cells are capped, oldest forgotten first,
    and the positions searched for a returning cell stay those of the cells remembered."""
    cells = [(100, 100), (200, 300), (400, 150), (550, 400), (900, 250)]
    frames = pan(cells, [(12 * i, 0) for i in range(60)] + [(720 - 12 * i, 0) for i in range(61)])
    small = Tracker(TrackConfig(memory=1))
    events = []
    for i, pts in enumerate(frames):
        events += small.update(pts, None, i)
        assert len(small._memory) <= 1
        if small._memory_xy is not None:  # built at a recall, then kept in step
            assert np.allclose(small._memory_xy, np.array([m.pos for m in small._memory]).reshape(-1, 2))
    events += small.flush()
    assert len(counts(events)) > len(cells)  # a cell forgotten is counted again on its return: the cap is real
    assert len(counts(run_points(Tracker(TrackConfig(memory=5)), frames))) == len(cells)
    assert small.ids() == {t.id for t in small._active} | {t.id for t in small._memory}


def test_the_counters_classes_of_tracks_that_cannot_return_are_let_go():
    """FieldCounter keeps each counted track's class for ``known`` and revisions; once its track is forgotten
    (a jump, the memory's cap) it cannot return, and a daemon scanning for weeks no longer keeps them all."""
    from scopelite.edge.watch import FieldCounter

    counter = FieldCounter(CLASS_NAMES)
    counter.tracker = Tracker(TrackConfig(memory=1))
    counter.tracker.update([(100.0, 100.0)], None, 0)
    (kept,) = counter.tracker.ids()
    counter._decided = {k: {"label": "neutrophil"} for k in range(kept, kept + 1003)}
    counter._count([], 1)
    assert counter._decided == {kept: {"label": "neutrophil"}}
    counter._decided = {k: {"label": "neutrophil"} for k in range(kept, kept + 1002)}  # under the bound: kept
    counter._count([], 2)
    assert len(counter._decided) == 1002


def test_a_view_returned_to_after_a_jump_keeps_its_counted_cells():
    """A jump parks the view's remembered cells; ``return_to`` brings them back at the offset found (``Places``),
    so a field shown again is not counted again. Without it (the jump alone) it is."""
    a = [(100.0, 100.0), (300.0, 200.0)]
    b = [(150.0, 350.0)]

    def show(tracker, cells, start, frames=20, shift=(0.0, 0.0)):
        return [e for i in range(frames) for e in tracker.update(cells, None, start + i, shift=shift)]

    t = Tracker()
    events = show(t, a, 0)
    events += t.jump() + show(t, b, 20)
    assert t.parked_views() == {0} and t.view == 1
    events += t.jump()
    assert t.parked_views() == {0, 1}
    t.return_to(0, (-40.0, 10.0))  # view 0's slide = this frame + (-40, 10): its cells appear 40 px right, 10 up
    assert t.view == 0 and t.returns == 1 and t.parked_views() == {1}
    events += show(t, [(x + 40.0, y - 10.0) for x, y in a], 40) + t.flush()
    assert len(counts(events)) == 3
    assert t.tracks() == []  # nothing open after the flush
    # the jump alone: view A again is a new view, counted again
    t2 = Tracker()
    e2 = show(t2, a, 0) + t2.jump() + show(t2, b, 20) + t2.jump() + show(t2, a, 40) + t2.flush()
    assert len(counts(e2)) == 5
    with pytest.raises(ValueError):  # only right after a jump, to a parked view
        t.return_to(1, (0.0, 0.0))


def test_parked_views_are_bounded_by_the_memory_and_their_cells_stay_known():
    t = Tracker(TrackConfig(memory=3))
    for v in range(4):  # four views of two cells each: 8 remembered cells, at most 3 kept parked
        for i in range(20):
            t.update([(100.0, 100.0), (300.0, 300.0)], None, 20 * v + i, shift=(0.0, 0.0))
        t.jump()
    assert sum(len(m) for m in t._parked.values()) <= 3 and t.parked_views() == {3}  # the oldest views went first
    assert {m.id for m in t._parked[3]} <= t.ids()  # a parked cell's class is still wanted (it can return)


def test_places_finds_a_view_again_and_nothing_in_another_field():
    from scopelite.edge.places import Places

    scan = make_slide_scan(0, slide_size=(1400, 520), speed=(8.0, 20.0))
    view = lambda x, y: scan.slide[y:y + 480, x:x + 640].copy()  # noqa: E731
    motion = StageMotion()
    motion.update(view(0, 0))
    places = Places(motion)
    assert places.note(0, motion.current, (0.0, 0.0)) and not places.note(0, motion.current, (50.0, 0.0))
    motion.update(view(100, 0))
    assert places.note(0, motion.current, (300.0, 0.0)) and len(places) == 2  # past the spacing (180 px): kept
    motion.update(view(40, 20))  # the first field again, moved: found, with where this frame lies in view 0
    found = places.find(motion.current, {0})
    assert found is not None and found[0] == 0 and np.allclose(found[1], (40.0, 20.0), atol=2.0)
    assert places.find(motion.current, {1}) is None  # only the views asked for
    motion.update(view(760, 40))  # a field that shares nothing with those seen
    assert places.find(motion.current, {0}) is None
    places.keep_only({1})
    assert len(places) == 0
    small = Places(motion, spacing=0.0, cap=4)
    small.note(7, motion.current, (0, 0))  # a field seen briefly, then a long pan elsewhere
    for i in range(8):
        small.note(8, motion.current, (100 * i, 0))
    # full: the long pan is thinned (its start and its recent path kept), the brief field keeps its own
    assert len(small) == 4 and [k.view for k in small._keys].count(7) == 1
    pan = sorted(float(k.offset[0]) for k in small._keys if k.view == 8)
    assert pan == [0.0, 600.0, 700.0]
    long = Places(motion, spacing=0.0, cap=16)  # one long pan: its recent path stays covered, its start too
    for i in range(400):
        long.note(0, motion.current, (100.0 * i, 0.0))
    pan = sorted(float(k.offset[0]) for k in long._keys)
    assert len(pan) == 16 and pan[0] == 0.0 and pan[-8:] == [100.0 * i for i in range(392, 400)]
    tie = Places(motion, spacing=0.0, cap=4)  # the newest frame counts in its view's share (a review): 2 spread
    for view, x in ((1, 0), (1, 1000), (2, 0), (2, 10), (2, 20)):  # frames of view 1 outweigh view 2's crowded 3
        tie.note(view, motion.current, (x, 0))
    assert sorted((k.view, float(k.offset[0])) for k in tie._keys) == [(1, 0.0), (1, 1000.0), (2, 0.0), (2, 20.0)]


def test_a_cell_the_view_passes_too_fast_for_three_whole_views_counts_once():
    """The view moves 330 px a frame across 640 px: a cell is whole in one frame. It counts when its track closes
    (fewer whole views suffice where no cell could be whole in ``min_frames`` running); without the frame's size, or
    where the view is still, one view is a flicker, as before."""
    def run(step, size):
        t, events = Tracker(TrackConfig(cell_diameter_px=50.0)), []
        for i in range(12):
            x = 1000.0 - step * i  # the cell's place in this frame
            pts = [(x, 240.0)] if 25 < x < 615 else []
            events += t.update(pts, np.ones((len(pts), 3)), i, shift=(-step, 0.0) if i else None, size=size)
        return len(counts(events + t.flush()))

    assert run(330.0, (640, 480)) == 1
    assert run(330.0, None) == 0  # no size: min_frames, as before
    still = Tracker(TrackConfig(cell_diameter_px=50.0))
    events = still.update([(300.0, 240.0)], np.ones((1, 3)), 0, size=(640, 480))
    for i in range(1, 12):  # one detection, then nothing where it was: a flicker
        events += still.update([], None, i, shift=(0.0, 0.0), size=(640, 480))
    assert len(counts(events + still.flush())) == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_a_pan_slowing_after_a_step_of_more_than_half_a_field_reads_each_move(seed):
    """After a step that only ``overlap`` reads (400 px), a slower one (150-200 px) broke sharply from it, and the
    torn-frame check measured it again from the frame before the step, where the two frames share too little: its
    noise reading won and the stage seemed to leap 500 px for a frame (a review of session 35; 16 counted for 11).
    A direct reading that matches nothing now leaves the shift as measured."""
    scan = make_slide_scan(seed, slide_size=(2600, 700), speed=(8.0, 20.0))
    for xs in ([0, 10, 20, 420, 570, 580], [0, 10, 20, 400, 560, 570], [0, 10, 20, 420, 620, 630]):
        motion, got = StageMotion(), []
        for x in xs:
            shift = motion.update(np.ascontiguousarray(scan.slide[100:580, x:x + 640]))
            got.append(None if shift is None or motion.jumped else round(shift[0]))
        assert got == [None] + [a - b for a, b in zip(xs, xs[1:])], (xs, got)


def test_fewer_views_count_only_where_the_view_keeps_moving_fast():
    """A detection seen once in one fast jerk of a slow pan is a flicker: the frames after it were slow, and a cell
    would have stayed in view. And a cell wider than the frame is never whole: ``min_frames`` stands (a review)."""
    def flicker(jerk):
        t, events = Tracker(TrackConfig(cell_diameter_px=50.0)), []
        for i in range(16):
            step = jerk if i == 5 else 10.0
            pts = [(300.0, 240.0)] if i == 5 else []
            events += t.update(pts, np.ones((len(pts), 3)), i, shift=(-step, 0.0) if i else None, size=(640, 480))
        return len(counts(events + t.flush()))

    assert flicker(400.0) == 0 and flicker(10.0) == 0
    t, events = Tracker(TrackConfig(cell_diameter_px=50.0)), []
    events += t.update([(20.0, 20.0)], np.ones((1, 3)), 0, size=(40, 40))
    events += t.update([(19.5, 20.0)], np.ones((1, 3)), 1, shift=(-0.5, 0.0), size=(40, 40))
    for i in range(2, 12):
        events += t.update([], None, i, shift=(0.0, 0.0), size=(40, 40))
    assert len(counts(events + t.flush())) == 0


def test_places_finds_the_next_row_of_a_scan_reached_by_a_cut():
    """A view sharing less than half a frame with every key frame (the next row of a scan, 280 px lower, reached by a
    cut): the jump test's windowed correlation fades the frame's edges, where the shared part lies, and the cells of
    that part were counted twice (count-hunt-34.json: 10 for 5). The part shared is found (``StageMotion.overlap``)."""
    from scopelite.edge.places import Places

    scan = make_slide_scan(0, slide_size=(1400, 800), speed=(8.0, 20.0))
    view = lambda x, y: scan.slide[y:y + 480, x:x + 640].copy()  # noqa: E731
    motion = StageMotion()
    motion.update(view(0, 0))
    places = Places(motion)
    places.note(0, motion.current, (0.0, 0.0))
    key = motion.current.copy()
    motion.update(view(60, 280))  # shares 200 of 480 rows and 580 of 640 columns
    assert motion.same_place(key, motion.current) is None  # the jump test's reading alone misses it
    found = places.find(motion.current, {0})
    assert found is not None and found[0] == 0 and np.allclose(found[1], (60.0, 280.0), atol=2.0)
    for x, y in ((700, 0), (0, 400), (400, 200)):  # sharing nothing; a sixth of the frame; 22 % (under a quarter)
        motion.update(view(x, y))
        assert places.find(motion.current, {0}) is None, (x, y)


def test_overlap_reads_a_move_of_more_than_half_a_frame_and_nothing_between_fields():
    scan = make_slide_scan(1, slide_size=(2000, 1200), speed=(8.0, 20.0))
    view = lambda x, y: scan.slide[y:y + 480, x:x + 640].copy()  # noqa: E731
    motion = StageMotion()

    def grey(frame):
        motion.update(frame)
        return motion.current.copy()

    a = grey(view(600, 400))
    for dx, dy in ((330, 0), (-400, 0), (0, 300), (-250, -180), (480, 0)):  # content moves the other way
        m = motion.overlap(a, grey(view(600 + dx, 400 + dy)))
        assert m is not None and np.allclose(m[0], (-dx, -dy), atol=1.5) and m[1] > 0.8, (dx, dy, m)
    for x, y in ((1000, 0), (1300, 700), (0, 700)):  # other fields
        assert motion.overlap(a, grey(view(x, y))) is None


def test_a_measured_stage_shift_is_not_out_voted_by_pairs_of_other_cells():
    """With a stage shift measured (StageMotion), the cells correct it within a cell's radius only. Searched as far
    as a jump, two new cells that happened to lie 1.5 diameters from two tracks out-voted the one cell seen where the
    measured shift put it, the slide offset leapt by 75 px and the tracks split (real PBC cells panned 160 px a
    frame: 13 counted for 21; a count hunt of session 34). Without a measured shift the wide search stays."""
    d = 50.0
    tracks = [(100.0, 200.0), (300.0, 200.0), (500.0, 200.0)]

    def run(shift):
        t = Tracker(TrackConfig(cell_diameter_px=d))
        for i in range(4):
            t.update([(x - 10 * i, y) for x, y in tracks], None, i, shift=(-10.0, 0.0))
        # frame 4: the stage moved 10 px more; cell 0 is seen, cells 1 and 2 are missed, and two new cells lie
        # 75 px to the right of where cells 1 and 2 should be
        x0 = [x - 40 for x, _ in tracks]
        t.update([(x0[0], 200.0), (x0[1] + 75, 200.0), (x0[2] + 75, 200.0)], None, 4, shift=shift)
        return t

    measured = run((-10.0, 0.0))
    assert abs(measured.offset[0] - 50.0) < 1.0  # the slide offset follows the measured stage (5 frames of 10 px)
    unmeasured = run(None)
    assert abs(unmeasured.offset[0] - 50.0) > 50  # no measurement: the detections alone decide (here wrongly)


def test_a_stream_shorter_than_min_frames_counts_its_cells_as_a_still_field():
    """A video of one or two frames, or one image read with tracking (the default for a video), counted nothing: the
    flicker test asked 3 views of a stream that had fewer (a trial of session 36: 0 where --no-track counted 2). Its
    cells seen in each of its frames are counted now, as after a jump; one seen in one of two frames is not."""
    cells = [(100.0, 100.0), (300.0, 200.0), (500.0, 350.0)]
    for n in (1, 2, 3):
        t, events = Tracker(TrackConfig(cell_diameter_px=48.0)), []
        for i in range(n):
            events += t.update(cells, np.ones((3, N)) / N, i, shift=(0.0, 0.0) if i else None, size=(640, 480))
        assert len(counts(events + t.flush())) == 3, n
    t = Tracker(TrackConfig(cell_diameter_px=48.0))
    events = t.update(cells, np.ones((3, N)) / N, 0, size=(640, 480))
    events += t.update(cells[:2], np.ones((2, N)) / N, 1, shift=(0.0, 0.0), size=(640, 480))
    assert len(counts(events + t.flush())) == 2


def test_frames_left_out_between_tiles_do_not_make_the_view_seem_slow():
    """Tiles 320 px apart (a cell whole in one or two of them) with a blank frame after each: field mode leaves blank
    frames out, but their numbers went on, and the move divided by the gap asked 3 views of cells whole in 1-2 (a
    trial of session 36: 0 counted for 20). The move is now per frame added."""
    rng = np.random.default_rng(0)
    cells = np.column_stack([rng.uniform(30, 2200, 40), rng.uniform(30, 450, 40)])

    def counted(every):
        t, events, whole = Tracker(TrackConfig(cell_diameter_px=48.0)), [], set()
        for k in range(6):
            x0 = 320 * k
            inside = [i for i, c in enumerate(cells) if x0 + 24 <= c[0] <= x0 + 640 - 24]
            whole.update(inside)
            pts = np.array([cells[i] - (x0, 0) for i in inside]).reshape(-1, 2)
            events += t.update(pts, np.ones((len(pts), N)) / N, k * every, shift=(-320.0, 0.0) if k else None,
                               size=(640, 480))
        return len(counts(events + t.flush())), len(whole)

    got, whole = counted(1)
    assert whole - 1 <= got <= whole  # two of the 40 lie closer than a cell's fragment radius: one
    assert counted(2) == counted(3) == (got, whole)
