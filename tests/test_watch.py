import threading

import numpy as np

from scopelite.edge.bundle import InputSpec
from scopelite.edge.classifier import FakeClassifier
from scopelite.edge.sources import FakeSource, FolderSource
from scopelite.edge.watch import run_watch

LABELS = ["dark", "mid", "bright"]


def _frames(values):
    return [np.full((30, 40, 3), v, np.uint8) for v in values]


def test_watch_classifies_every_frame_and_tallies():
    src = FakeSource(_frames([10, 100, 250, 250]))
    clf = FakeClassifier(LABELS, InputSpec(8, 8))
    recs = []
    summary = run_watch(src, clf, recs.append)["summary"]
    assert [r["label"] for r in recs] == ["dark", "mid", "bright", "bright"]
    assert [r["frame"] for r in recs] == [0, 1, 2, 3]
    assert summary["frames"] == 4 and summary["stopped"] == "end of stream"
    assert summary["tally"]["counts"] == {"dark": 1, "mid": 1, "bright": 2}
    assert src.closed


def test_watch_max_frames_and_stop_event():
    recs = []
    s = run_watch(FakeSource(_frames([10] * 10)), FakeClassifier(LABELS, InputSpec(8, 8)), recs.append,
                  max_frames=3)["summary"]
    assert len(recs) == 3 and s["stopped"] == "max frames"
    stop = threading.Event()
    got = []

    def emit(r):
        got.append(r)
        if len(got) == 2:
            stop.set()

    s = run_watch(FakeSource(_frames([10] * 10)), FakeClassifier(LABELS, InputSpec(8, 8)), emit, stop=stop)["summary"]
    assert len(got) == 2 and s["stopped"] == "stopped by signal"


def test_folder_source_replays_in_order(tmp_path):
    import cv2

    for i, v in enumerate([250, 10]):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((20, 20, 3), v, np.uint8))
    recs = []
    run_watch(FolderSource(tmp_path), FakeClassifier(LABELS, InputSpec(8, 8)), recs.append)
    assert [r["label"] for r in recs] == ["bright", "dark"]
    looped = []
    run_watch(FolderSource(tmp_path, loop=True), FakeClassifier(LABELS, InputSpec(8, 8)), looped.append, max_frames=5)
    assert [r["label"] for r in looped] == ["bright", "dark", "bright", "dark", "bright"]
