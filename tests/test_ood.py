"""The stain distance: like the training data scores low, another stain or junk scores high."""
import json

import numpy as np
import pytest

from scopelite.edge import ood
from scopelite.edge.bundle import BundleError, Sidecar
from scopelite.train.synth import make_crops


@pytest.fixture(scope="module")
def crops():
    return make_crops(12, size=96, seed=0)[0]


def test_reference_scores_its_own_images_low_and_another_stain_high(crops):
    ref = ood.reference_from(crops[::2], sample=48)
    assert ref is not None and ref.threshold > 0
    own = [ood.score(ood.stain_stats(x), ref) for x in crops[1::2]]
    other = [ood.score(ood.stain_stats(np.ascontiguousarray(x[..., [1, 2, 0]])), ref) for x in crops[1::2]]
    own_v = [v for v in own if v is not None]
    other_v = [v for v in other if v is not None]
    # generated crops vary more than real ones (their nuclei take class colours), so compare medians
    assert np.median(other_v) > 1.5 * np.median(own_v)
    dim = [ood.score(ood.stain_stats((x * 0.6).astype(np.uint8)), ref) for x in crops[1::2]]
    dim_v = [v for v in dim if v is not None]
    assert abs(np.median(dim_v) - np.median(own_v)) < 0.25 * np.median(own_v)  # a dimmer lamp is not another stain


def test_nothing_to_compare_gives_none(crops):
    ref = ood.reference_from(crops, sample=48)
    blank = np.full((96, 96, 3), 220, np.uint8)
    assert ood.stain_stats(blank) == ood.StainStats(None, None) and ood.score(ood.stain_stats(blank), ref) is None
    assert ood.reference_from(np.repeat(blank[None], 20, axis=0)) is None


def test_sidecar_keeps_a_valid_stain_reference():
    from scopelite.edge.bundle import load_sidecar
    from scopelite.edge.packaged import default_model

    d = load_sidecar(default_model()).to_json()
    ref = ood.StainReference.from_json(d["stain_reference"])
    assert ref.threshold > 0 and len(ref.rbc_od) == 3
    assert Sidecar.from_json(json.loads(json.dumps(d))).stain_reference == ref.to_json()
    for bad in ({"rbc_od": [1, 2]}, {"rbc_od": [1, 2, 3], "nucleus_od": [1, 2, 3], "threshold": -1}, "x"):
        d["stain_reference"] = bad
        with pytest.raises(BundleError, match="stain_reference"):
            Sidecar.from_json(d)


def test_field_mode_reports_each_frames_stain_distance_and_the_page_warns():
    import threading

    from scopelite.edge.bundle import InputSpec
    from scopelite.edge.httpd import Status
    from scopelite.edge.sources import FakeSource
    from scopelite.edge.watch import run_watch
    from scopelite.edge.config import WatchConfig
    from scopelite.train.synth import make_field

    class Fake:  # an interpreter-free classifier with a sidecar that carries a stain reference
        labels = ("basophil", "eosinophil", "erythroblast", "immature_granulocyte", "lymphocyte", "monocyte",
                  "neutrophil", "platelet")
        input_spec = InputSpec(32, 32)

        def __init__(self, ref):
            self.sidecar = type("S", (), {"stain_reference": ref.to_json()})()

        def classify(self, batch):
            return np.tile(np.eye(8)[6], (len(batch), 1))

    rng = np.random.default_rng(2)
    frames = [make_field(rng, 320, 240, n_cells=2)[0] for _ in range(4)]
    crops = make_crops(12, size=96, seed=0)[0]
    ref = ood.reference_from(crops, sample=48)
    recs = []
    status = Status(Fake.labels)
    s = run_watch(WatchConfig(mode="field"), FakeSource(frames), Fake(ref), recs.append, stop=threading.Event(),
                  on_frame=lambda f, r, c: status.update(f, r, c))["summary"]
    stains = [r["scale"]["stain"] for r in recs if "scale" in r]
    assert len(stains) == 4 and all(st["distance"] is not None for st in stains)
    assert s["unlike_training_frames"] == sum(st["unlike_training"] for st in stains)
    far = ood.StainReference((2.0, 0.05, 2.0), (0.05, 2.0, 0.05), 0.5)  # a stain nothing here looks like
    recs.clear()
    status = Status(Fake.labels)
    s = run_watch(WatchConfig(mode="field"), FakeSource(frames), Fake(far), recs.append, stop=threading.Event(),
                  on_frame=lambda f, r, c: status.update(f, r, c))["summary"]
    assert s["unlike_training_frames"] == 4 and "unlike the model's training data" in s["warning"]
    # a lab's own model is not told to "adapt the model to this lab" (it was): label cells of these slides too
    assert "label some cells of these slides too" in s["warning"] and "calibrate or adapt" not in s["warning"]
    import json

    from scopelite.edge.packaged import default_model

    packaged = Fake(far)  # the packaged model's file (its sha256): calibrate, or adapt it to this lab
    packaged.sidecar.sha256 = json.loads(default_model().with_suffix(".json").read_text())["sha256"]
    again = run_watch(WatchConfig(mode="field"), FakeSource(frames), packaged, lambda r: None,
                      stop=threading.Event())["summary"]
    assert "calibrate or adapt the model to this lab" in again["warning"]
    assert "unlike the training data" in status.page()
    assert "scopelite_unlike_training_frames_total 4" in status.metrics_text()
    # overexposed frames: their clipped colours are no judge of the stain (distance kept, no verdict, not counted)
    from scopelite.train.corruptions import corrupt

    recs.clear()
    bright = [corrupt(f, "brightness_up", 5, seed=i) for i, f in enumerate(frames[:3])] + frames[3:]
    s = run_watch(WatchConfig(mode="field"), FakeSource(bright), Fake(far), recs.append,
                  stop=threading.Event())["summary"]
    stains = [r["scale"]["stain"] for r in recs if "scale" in r]
    assert [st["unlike_training"] for st in stains] == [None, None, None, True]
    assert s["unlike_training_frames"] == 1 and s["overexposed_frames"] == 3
    assert "overexposed" in s["warning"] and "unlike the model's training data" not in s["warning"]


def test_the_lab_pages_stain_banner_reads_the_recent_frames_not_the_whole_run():
    """A daemon left for weeks: the "unlike the training data" banner counted every frame since the start, so a new
    stain after 200,000 good frames was not shown for as long again, and an old one stayed after it was fixed. It
    reads the last frames with a verdict now, as the camera's banners do."""
    from scopelite.edge.httpd import CAMERA_WINDOW, Status

    def frames(status, unlike, n):
        for _ in range(n):
            status.update(None, {"frame": 0, "cells": [], "scale": {"stain": {"distance": 3.0 if unlike else 0.3,
                                                                              "unlike_training": unlike}}})

    status = Status(["a", "b"])
    frames(status, False, 5 * CAMERA_WINDOW)
    frames(status, True, CAMERA_WINDOW)
    assert "unlike the training data" in status.page() and f"of the last {CAMERA_WINDOW} frames" in status.page()
    frames(status, False, CAMERA_WINDOW)
    assert "unlike the training data" not in status.page()
    frames(status, None, 3 * CAMERA_WINDOW)  # overexposed: no verdict, the last verdicts stand
    assert "unlike the training data" not in status.page()
    assert f"scopelite_unlike_training_frames_total {CAMERA_WINDOW}" in status.metrics_text()  # the run's count


def test_frames_left_out_of_the_count_say_nothing_of_the_camera():
    """The lamp off for a while (frames left out of the count: "dark" or "no_colour") filled the camera banners'
    window with "all fine" and took an overexposure warning off the page."""
    from scopelite.edge.httpd import CAMERA_WINDOW, Status

    status = Status(["a"])
    for _ in range(CAMERA_WINDOW):
        status.update(None, {"frame": 0, "cells": [], "scale": {"overexposed": 0.4}})
    for key in ("dark", "no_colour"):
        for _ in range(CAMERA_WINDOW):
            status.update(None, {"frame": 0, "cells": [], key: True, "counted": []})
    assert 'id="camera-overexposed"' in status.page()
