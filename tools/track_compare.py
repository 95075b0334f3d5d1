"""Tracking choices measured on synthetic slide scans (train/slide.py): count error and cost per frame.

Compares scopelite's tracker (edge/track.py: numpy greedy matching in slide
coordinates) with the same tracker using scipy's Hungarian assignment, and with
norfair (the pure-Python tracker Frigate uses), alone and with its camera-motion
estimator. Detection (edge/field.py) runs once per frame and is shared; only the
trackers are timed. norfair and scipy are optional: a row is skipped when missing
(norfair is not an edge dependency: `pip install norfair` in a scratch venv).

    python tools/track_compare.py --seeds 0 1 2 3 --out benchmarks/results/track-compare.json
"""
from __future__ import annotations

import argparse
import inspect
import json
import platform
import time

import numpy as np

from scopelite.edge import field, track
from scopelite.train.slide import make_slide_scan


def detect(frame):
    """field.detect, before or after it took the frame's red-cell diameter (synthetic red cells: 24 px)."""
    if "rbc_px" in inspect.signature(field.detect).parameters:
        return field.detect(frame, 24.0)
    return field.detect(frame)


def detect_scan(seed: int, slide_size: tuple[int, int]) -> dict:
    sc = make_slide_scan(seed, slide_size=slide_size)
    motion = track.StageMotion()
    frames, dets, shifts, t_motion = [], [], [], 0.0
    for frame, _ in sc.frames():
        dets.append(detect(frame))
        t = time.perf_counter()
        shifts.append(motion.update(frame))
        t_motion += time.perf_counter() - t
        frames.append(frame)
    return {"scan": sc, "frames": frames, "dets": dets, "shifts": shifts, "motion_ms": 1e3 * t_motion / len(sc)}


def run_ours(d: dict, use_shift: bool, cfg: track.TrackConfig = track.TrackConfig()) -> tuple[int, float]:
    tr, n, t_total = track.Tracker(cfg), 0, 0.0
    w, h = d["scan"].frame_size
    for i, (dets, shift) in enumerate(zip(d["dets"], d["shifts"])):
        pts = [(x.x, x.y) for x in dets]
        cut = [track.cut_by_edge(x.box, w, h) for x in dets]
        t = time.perf_counter()
        n += _counts(tr.update(pts, None, i, shift=shift if use_shift else None, cut=cut))
        t_total += time.perf_counter() - t
    return n + _counts(tr.flush()), 1e3 * t_total / len(d["dets"])


def _counts(events) -> int:
    """Cells counted (a ``final`` event revises a counted cell's class: not another cell)."""
    return sum(e.reason != "final" for e in events)


def hungarian_pairs(a, b, radius):
    from scipy.optimize import linear_sum_assignment

    if len(a) == 0 or len(b) == 0:
        return []
    d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    cost = np.where(d < radius, d, 1e6)
    ii, jj = linear_sum_assignment(cost)
    return [(int(i), int(j)) for i, j in zip(ii, jj) if d[i, j] < radius]


def run_norfair(d: dict, motion: bool, radius: float) -> tuple[int, float]:
    import norfair
    from norfair.camera_motion import MotionEstimator, TranslationTransformationGetter

    tr = norfair.Tracker(distance_function="euclidean", distance_threshold=radius, initialization_delay=2,
                         hit_counter_max=5)
    est = MotionEstimator(transformations_getter=TranslationTransformationGetter()) if motion else None
    t_total = 0.0
    for frame, dets in zip(d["frames"], d["dets"]):
        t = time.perf_counter()
        ct = est.update(frame) if est is not None else None
        tr.update([norfair.Detection(np.array([[x.x, x.y]])) for x in dets], coord_transformations=ct)
        t_total += time.perf_counter() - t
    return tr.total_object_count, 1e3 * t_total / len(d["dets"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--slide", type=int, nargs=2, default=[1100, 800])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    radius = track.TrackConfig().px(track.TrackConfig().match_radius)
    rows = []
    for seed in args.seeds:
        d = detect_scan(seed, tuple(args.slide))
        truth = len(d["scan"].cells)
        row = {"seed": seed, "frames": len(d["dets"]), "cells": truth, "stage_motion_ms": round(d["motion_ms"], 3)}
        variants = {
            "ours_phase": lambda: run_ours(d, True),
            "ours_detections_only": lambda: run_ours(d, False),
            "ours_no_memory": lambda: run_ours(d, True, track.TrackConfig(remember=False)),
        }
        try:
            import scipy  # noqa: F401

            def hungarian():
                greedy, track._greedy_pairs = track._greedy_pairs, hungarian_pairs
                try:
                    return run_ours(d, True)
                finally:
                    track._greedy_pairs = greedy

            variants["ours_phase_hungarian"] = hungarian
        except ImportError:
            pass
        try:
            import norfair  # noqa: F401

            variants["norfair"] = lambda: run_norfair(d, False, radius)
            variants["norfair_motion"] = lambda: run_norfair(d, True, radius)
        except ImportError:
            pass
        for name, fn in variants.items():
            n, ms = fn()
            row[name] = {"counted": n, "error": n - truth, "ms_per_frame": round(ms, 3)}
        rows.append(row)
        print(json.dumps(row))
    versions = {}
    for mod in ("numpy", "cv2", "scipy", "norfair"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    result = {"benchmark": "track_compare", "machine": platform.machine(), "python": platform.python_version(),
              "versions": versions, "cpus_shared": "2 cores shared with other jobs: times are indicative",
              "slide": args.slide, "frame": [640, 480], "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
