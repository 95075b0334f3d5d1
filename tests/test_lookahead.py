"""The next item is worked on while the caller handles this one (edge/lookahead.py), and field mode uses it: the
next frame is read while this one is classified, with the same answers."""
import collections
import threading
import time

import pytest

from scopelite.edge import watch as watch_mod
from scopelite.edge.bundle import CLASS_NAMES, InputSpec
from scopelite.edge.classifier import FakeClassifier
from scopelite.edge.config import WatchConfig
from scopelite.edge.lookahead import Lookahead
from scopelite.edge.sources import FakeSource
from scopelite.edge.watch import run_watch
from scopelite.train.slide import make_slide_scan
from test_watch_tracking import by_colour


def _items(values):
    """take/finished over a list, as a capture queue gives them."""
    q = collections.deque(values)
    return (lambda timeout: q.popleft() if q else None), (lambda: not q)


def _drain(ahead, limit=5.0):
    got, t0 = [], time.monotonic()
    while not ahead.closed and time.monotonic() - t0 < limit:
        x = ahead.get(timeout=0.1)
        if x is not None:
            got.append(x)
    return got


def test_every_item_in_order_with_its_result_then_closed():
    take, finished = _items(range(10))
    ahead = Lookahead(take, finished, lambda x: x * x)
    assert _drain(ahead) == [(i, i * i) for i in range(10)]
    assert ahead.closed and ahead.get(timeout=0.01) is None
    ahead.stop()


def test_the_next_item_is_worked_on_while_the_caller_holds_this_one():
    started = {i: threading.Event() for i in range(3)}
    take, finished = _items(range(3))
    ahead = Lookahead(take, finished, lambda x: started[x].set() or x)
    assert ahead.get(timeout=2.0) == (0, 0)
    assert started[1].wait(2.0)  # item 1 is read while the caller still handles item 0
    assert _drain(ahead) == [(1, 1), (2, 2)]
    ahead.stop()


def test_an_error_in_the_work_is_raised_at_its_item():
    take, finished = _items(range(5))

    def work(x):
        if x == 3:
            raise ValueError("bad item 3")
        return x

    ahead = Lookahead(take, finished, work)
    got = [ahead.get(timeout=2.0) for _ in range(3)]
    assert got == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(ValueError, match="bad item 3"):
        ahead.get(timeout=2.0)
    assert ahead.closed and ahead.get(timeout=0.01) is None
    ahead.stop()


def test_an_item_is_taken_only_once_the_caller_has_taken_the_one_before():
    """From a live camera the frame read ahead is the newest when the caller starts on the one before it: not
    taken earlier, while the capture queue could still replace it with a newer one."""
    taken = []
    q = collections.deque(range(100))

    def take(timeout):
        if q:
            taken.append(q[0])
            return q.popleft()
        return None

    ahead = Lookahead(take, lambda: not q, lambda x: x)
    time.sleep(0.1)
    assert taken == [0]  # nothing taken while item 0 waits for the caller
    assert ahead.get(timeout=2.0) == (0, 0)
    time.sleep(0.1)
    assert taken == [0, 1]
    assert ahead.get(timeout=2.0) == (1, 1)
    ahead.stop()


def test_stop_lets_go_of_a_thread_waiting_for_the_caller():
    take, finished = _items(range(100))
    ahead = Lookahead(take, finished, lambda x: x)
    assert ahead.get(timeout=2.0) == (0, 0)
    time.sleep(0.05)  # the thread holds item 1 ready and waits for the caller to take it
    t0 = time.monotonic()
    ahead.stop()
    assert time.monotonic() - t0 < 0.1 and not ahead._thread.is_alive()
    assert ahead.get(timeout=0.01) is None  # nothing is handed out after stop


def _scan_frames(n=30):
    scan = make_slide_scan(0, slide_size=(1000, 760), speed=(8.0, 20.0))
    return [scan.frame(i) for i in range(min(n, len(scan)))]


def _timeless(recs):
    return [{k: v for k, v in r.items() if k not in ("infer_ms", "track_ms")} for r in recs]


def test_field_mode_reads_the_next_frame_while_this_one_is_classified(monkeypatch):
    frames = _scan_frames(6)
    reads = []
    real_read = watch_mod.read_frame
    monkeypatch.setattr(watch_mod, "read_frame", lambda f, *a: reads.append(len(reads)) or real_read(f, *a))
    overlapped = []

    def classify(crops):  # while frame k's cells are classified, frame k+1 is (being) read
        k = len(overlapped)
        t0 = time.monotonic()
        while len(reads) < min(k + 2, len(frames)) and time.monotonic() - t0 < 2.0:
            time.sleep(0.002)
        overlapped.append(len(reads) >= min(k + 2, len(frames)))
        return by_colour(crops)

    clf = FakeClassifier(CLASS_NAMES, InputSpec(32, 32), fn=classify)
    s = run_watch(WatchConfig(mode="field", track=False), FakeSource(frames), clf, lambda r: None)["summary"]
    assert s["frames"] == len(frames) and len(reads) == len(frames)
    assert overlapped and all(overlapped), overlapped


@pytest.mark.parametrize("track", [True, False])
def test_field_mode_gives_the_same_lines_as_reading_each_frame_in_turn(track):
    """The records equal a pass that reads, classifies and tracks each frame before taking the next."""
    from scopelite.edge.watch import FieldCounter, FieldScale, classify_field, field_config

    frames = _scan_frames(30)
    clf = FakeClassifier(CLASS_NAMES, InputSpec(32, 32), fn=by_colour)
    recs = []
    cfg = WatchConfig(mode="field", track=track)
    s = run_watch(cfg, FakeSource(frames), clf, recs.append)["summary"]
    assert s["frames"] == len(frames)
    field_cfg = field_config(cfg, clf)
    scale = FieldScale(field_cfg, every=5 if track else 1, slide=watch_mod.SLIDE_SCALE_ESTIMATES if track else 0)
    counter = FieldCounter(clf.labels, 0.5, None, None, track)
    for n, frame in enumerate(frames):
        read = watch_mod.read_frame(frame)
        cells, info = classify_field(read, clf, field_cfg, 0.5, scale,
                                     known=lambda d: counter.known(read.frame, d, n))
        counted = counter.update(read.frame, cells, info, n)
        want = {"frame": n, "cells": cells, "scale": info, "counted": counted, "revised": counter.revised,
                "differential": counter.brief()}
        assert _timeless([recs[n]])[0] == want, n


def test_an_error_reading_a_frame_ends_the_run_with_that_error(monkeypatch):
    frames = _scan_frames(4)
    real_read = watch_mod.read_frame
    calls = []

    def read(f, *a):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("cannot read frame 2")
        return real_read(f, *a)

    monkeypatch.setattr(watch_mod, "read_frame", read)
    recs = []
    clf = FakeClassifier(CLASS_NAMES, InputSpec(32, 32), fn=by_colour)
    with pytest.raises(RuntimeError, match="cannot read frame 2"):
        run_watch(WatchConfig(mode="field"), FakeSource(frames), clf, recs.append)
    assert [r["frame"] for r in recs] == [0, 1]
    assert not [t for t in threading.enumerate() if t.name == "field-read" and t.is_alive()]


def _record_reads(monkeypatch):
    """Patch field mode's frame reading to note the thread each frame is read in."""
    threads = []
    real_read = watch_mod.read_frame
    monkeypatch.setattr(watch_mod, "read_frame",
                        lambda f, *a: threads.append(threading.current_thread().name) or real_read(f, *a))
    return threads


def test_frames_paced_with_fps_are_read_in_turn_not_ahead(monkeypatch):
    """--fps: a frame read ahead would wait out the pace and be that much older when classified."""
    frames = _scan_frames(4)
    threads = _record_reads(monkeypatch)
    clf = FakeClassifier(CLASS_NAMES, InputSpec(32, 32), fn=by_colour)
    run_watch(WatchConfig(mode="field", fps=200.0), FakeSource(frames), clf, lambda r: None)
    assert threads == ["MainThread"] * len(frames)
    threads.clear()
    run_watch(WatchConfig(mode="field"), FakeSource(frames), clf, lambda r: None)
    assert threads == ["field-read"] * len(frames)


def test_copies_in_a_folder_are_not_read(tmp_path, monkeypatch):
    """A copy of an image of the run, or an image counted into the session before, is skipped: not read."""
    import cv2

    from scopelite.edge.sources import FolderSource

    frames = _scan_frames(3)
    for i, name in enumerate(["a", "b", "c"]):
        cv2.imwrite(str(tmp_path / f"{name}.png"), frames[i][..., ::-1])
    for name, of in [("a2", "a"), ("b2", "b"), ("c2", "c"), ("c3", "c")]:
        (tmp_path / f"{name}.png").write_bytes((tmp_path / f"{of}.png").read_bytes())
    threads = _record_reads(monkeypatch)
    recs = []
    clf = FakeClassifier(CLASS_NAMES, InputSpec(32, 32), fn=by_colour)
    s = run_watch(WatchConfig(mode="field", track=False), FolderSource(tmp_path), clf, recs.append)["summary"]
    assert s["frames"] == 3 and s["copies"] == 4
    assert [r["copy_of"].rsplit("/", 1)[1] for r in recs if r.get("event") == "copy"] == ["a.png", "b.png", "c.png",
                                                                                           "c.png"]
    assert len(threads) == 3  # each image once, though a copy right behind its image is looked at meanwhile


def test_the_last_frame_put_as_the_queue_closes_is_not_lost():
    """A get that timed out just before the last frame was put and the queue closed: the frame is still read."""
    from scopelite.edge.capture import DropOldestQueue

    q = DropOldestQueue(2)
    missed = []

    def take(timeout):
        got = q.get(timeout=0.01)
        if got is None and not missed:  # the capture thread puts the last frame and closes, right then
            missed.append(1)
            q.put("last frame", block=True)
            q.close()
        return got

    ahead = Lookahead(take, lambda: q.drained, lambda x: x.upper())
    assert _drain(ahead) == [("last frame", "LAST FRAME")]
    ahead.stop()
    assert not DropOldestQueue(1).drained
