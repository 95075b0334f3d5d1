"""Where the daemon's time goes: per-stage costs, end-to-end frames/s vs the bare invoke rate,
and whole-field mode. Ratios are measured in the same run; --assert-ratios makes them pass/fail."""
import dataclasses
import os
import time

import cv2
import numpy as np
import pytest

from conftest import measure
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.postprocess import dequantize, top_k
from scopelite.edge.preprocess import prepare


@pytest.fixture(scope="module")
def clf(bundle):
    return LiteRTClassifier(bundle, num_threads=2)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from scopelite.train.synth import write_video

    p = tmp_path_factory.mktemp("video") / "clip.avi"
    write_video(p, n_per_class=2, frames_per_cell=10, seed=5)  # 160 frames, 640x480
    return p


def test_stage_costs(clf, video, record, request):
    runs = request.config.getoption("--runs")
    cap = cv2.VideoCapture(str(video))
    ok, bgr = cap.read()
    cap.release()
    ok, jpg = cv2.imencode(".jpg", bgr)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    crop = prepare(rgb, clf.input_spec)
    tensor = clf.prepare_tensor(crop)
    raw = clf.invoke(tensor).reshape(-1)
    q = clf.sidecar.output.quantization
    stages = {
        "decode 640x480 JPEG + BGR->RGB": lambda: cv2.cvtColor(cv2.imdecode(jpg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB),
        "crop + resize to input": lambda: prepare(rgb, clf.input_spec),
        "invoke (2 threads)": lambda: clf.invoke(tensor),
        "post-process (dequantise, top-3)": lambda: top_k(dequantize(raw, q.scale, q.zero_point), clf.labels, 3),
    }
    for name, fn in stages.items():
        record.add(f"stage: {name}", **measure(fn, runs))


def test_crop_mode_throughput_vs_bare_invoke(clf, video, record, request):
    from scopelite.edge.sources import OpenCVSource
    from scopelite.edge.watch import run_watch
    from scopelite.edge.config import WatchConfig

    tensor = clf.prepare_tensor(np.zeros((clf.input_spec.height, clf.input_spec.width, 3), np.uint8))
    bare = measure(lambda: clf.invoke(tensor), request.config.getoption("--runs"))
    bare_fps = 1e3 / bare["p50_ms"]
    s = run_watch(WatchConfig(rescale=False), OpenCVSource(str(video)), clf, lambda r: None)["summary"]
    ratio = s["fps"] / bare_fps
    record.add("watch crop mode, video file (frames/s)", fps=s["fps"], bare_invoke_fps=round(bare_fps, 1),
               ratio=round(ratio, 3), frames=s["frames"], rescale=False)
    # the default also reframes (crop_scale.StreamFraming: the first 5 views measured, then every 25th)
    d = run_watch(WatchConfig(), OpenCVSource(str(video)), clf, lambda r: None)["summary"]
    record.add("watch crop mode with reframing (the default), video file (frames/s)", fps=d["fps"], frames=d["frames"])
    if request.config.getoption("--assert-ratios"):
        decode = record.rows.get("stage: decode 640x480 JPEG + BGR->RGB", {}).get("p50_ms")
        assert ratio >= 0.9, (f"daemon reaches {100 * ratio:.0f} % of the bare invoke rate (goal 90 %); "
                              f"decode costs {decode} ms/frame vs invoke {bare['p50_ms']} ms")


def _scan_for(frame_wh, cells_in_view, seed):
    """A slide scan whose view holds ``cells_in_view`` cells on average (train/slide.py)."""
    from scopelite.train.slide import make_slide_scan

    w, h = frame_wh
    slide = (int(w * 1.6), int(h * 1.6))
    n = int(round(cells_in_view * slide[0] * slide[1] / (w * h)))
    return make_slide_scan(seed, n_cells=n, slide_size=slide, frame_size=frame_wh, speed=(8.0, 20.0))


class _WithoutStainReference:
    """The classifier with no stain reference in its sidecar: field mode without the stain check."""

    def __init__(self, clf):
        self._clf, self.sidecar = clf, dataclasses.replace(clf.sidecar, stain_reference=None)

    def __getattr__(self, name):
        return getattr(self._clf, name)


def _field_pass(clf, frames, stain_check=True):
    """Field mode as the daemon runs it (``run_watch``: frames from a capture thread, the next frame read while
    this one is classified, the tracker) over frames rendered beforehand: (timed frames, s per frame,
    s in the tracker per frame, cells, cells classified, cells counted). The first 5 frames are a warm-up."""
    from scopelite.edge.config import WatchConfig
    from scopelite.edge.sources import FakeSource
    from scopelite.edge.watch import run_watch

    stamps, recs = [], []

    def emit(rec):
        if "cells" in rec:
            stamps.append(time.perf_counter())
            recs.append(rec)

    classifier = clf if stain_check else _WithoutStainReference(clf)
    summary = run_watch(WatchConfig(mode="field"), FakeSource(frames), classifier, emit)["summary"]
    assert summary["frames"] == len(frames) == len(recs) and summary["tracking"]["on"]
    timed = recs[5:]
    n = len(timed)
    cells = sum(len(r["cells"]) for r in timed)
    decided = sum(bool(c.get("decided")) for r in timed for c in r["cells"])
    counted = sum(len(r["counted"]) for r in recs) + len(summary["counted"])
    return (n, (stamps[-1] - stamps[4]) / n, sum(r["track_ms"] for r in timed) / 1e3 / n, cells, cells - decided,
            counted)


@pytest.mark.parametrize("frame_wh,goal_fps", [((640, 480), 25.0), ((1920, 1080), 8.0)], ids=["640x480", "1920x1080"])
def test_field_mode_fields_per_second(clf, record, request, frame_wh, goal_fps):
    """Field mode as the daemon runs it on a stream (``run_watch``): the light evened out and the stain
    layers (read one frame ahead, in a thread), scale (measured one frame in 5), the stain check against the
    model's training data (when its sidecar has a stain reference), detection, the stage-motion estimate,
    crops and classification of the cells not counted yet, and the tracker (each cell counted once), per
    frame of a moving slide scan. Frames are rendered outside the timed part. Also measured without the
    stain check, for its share."""
    from scopelite.edge import ood

    scan = _scan_for(frame_wh, 9, seed=0)
    frames = [scan.frame(i) for i in range(min(len(scan), 125 if frame_wh[0] <= 640 else 45))]
    reference = ood.reference_of(clf.sidecar)
    n, per_frame, track_s, cells, classified, counted = _field_pass(clf, frames)
    bare = _field_pass(clf, frames, stain_check=False)[1] if reference is not None else per_frame
    fps = 1 / per_frame
    w, h = frame_wh
    record.add(f"field mode + tracking {w}x{h}, <=12 cells (fields/s)", fields_per_second=round(fps, 1),
               without_stain_check=round(1 / bare, 1), stain_check=reference is not None,
               tracking_ms=round(1e3 * track_s, 2), cells_per_field=round(cells / n, 1),
               classified_per_field=round(classified / n, 1), frames=n, cells_counted=counted, goal=goal_fps,
               load_avg_1min=round(os.getloadavg()[0], 2))  # other work on the machine slows every figure
    assert 5 <= cells / n <= 12 and counted > 0
    if request.config.getoption("--assert-ratios"):
        assert fps >= goal_fps, f"field mode with tracking: {fps:.1f} frames/s at {w}x{h} (goal {goal_fps:g})"
