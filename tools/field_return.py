"""Coming back to a field after a jump: counted once (edge/places.py), and no field taken for another.

Measures (decisions 34a and 35a, rules in the results file):
1. generated slides with known cells: A, B, A (still fields), A, B, A, B, A, B, C, A, B, C (C between the two), one pan
   shown twice and three times (a video that loops), a row then the next row 280 px lower reached by a cut, and
   pans of 250-400 px a frame (``true``: cells whole in 3 frames running; ``true_once``: whole in a frame),
   counted by field mode (tracking on) with a fixed classifier, with and without ``Places`` (without:
   ``Places.find`` finds nothing, as before session 34);
2. every pair of different real fields (PBC's 160, DeepBioNet's 361) through ``StageMotion.same_place`` and
   ``StageMotion.overlap`` (a part shared), the tests ``Places.find`` uses (``overlap`` also tells a pan faster than
   half a field a frame from a jump): a match between fields of different cells would count a new field's cells as seen;
   DeepBioNet photographs one cell in several fields (``deepbionet-duplicates.json``'s groups), so a match within a
   group is a true one;
3. videos of 20 different real fields (1 or 3 frames each, and the 20 shown twice) through ``celledge watch`` with
   the shipped model, against the same with an earlier scopelite (``--before``);
4. the cost of a jump with a full set of key frames (64) at 640x480.

    python tools/field_return.py --data ../shared/data --before /tmp/snap34   # snap: scopelite/{edge,train,compress}
"""
import argparse
import datetime
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge import places as places_lib
from scopelite.edge.bundle import CLASS_NAMES, InputSpec
from scopelite.edge.classifier import FakeClassifier, scores_by_colour
from scopelite.edge.config import WatchConfig
from scopelite.edge.sources import FakeSource, list_images
from scopelite.edge.sysinfo import machine
from scopelite.edge.track import StageMotion
from scopelite.edge.watch import run_watch
from scopelite.train.slide import SlideScan, make_slide_scan


def by_colour(crops):
    return scores_by_colour(crops, len(CLASS_NAMES))


def counted(summary: dict) -> int:
    d = summary["differential"]
    return d["white_total"] + d["nrbc"] + d["platelets"] + d["uncertain"]["count"] + sum(d["other"].values())


def generated() -> dict:
    base = make_slide_scan(0, slide_size=(2000, 800), speed=(8.0, 20.0))
    a, b, c = [(0, 0)] * 30, [(1360, 320)] * 30, [(680, 160)] * 30
    pan = list(base.path)
    row = [(10 * i, 20) for i in range(120)]
    scenarios = {"A, B, A (30 frames each)": a + b + a, "A, B, A, B": a + b + a + b,
                 "A, B, C, A, B, C (C between A and B)": a + b + c + a + b + c,
                 "one pan shown twice (a video that loops)": pan * 2, "one pan shown three times": pan * 3,
                 "a row, then a cut to the next row 280 px lower": row + [(x, y + 280) for x, y in row],
                 **{f"a pan at {step} px a frame": [(step * i, 20) for i in range((2000 - 640) // step + 1)]
                    for step in (250, 330, 400)}}
    clf = FakeClassifier(CLASS_NAMES, InputSpec(32, 32), fn=by_colour)
    out = {}
    find = places_lib.Places.find
    for name, path in scenarios.items():
        scan = SlideScan(base.slide, base.cells, path, [0.0] * len(path), base.frame_size, base.seed)
        truth = sum(v >= 3 for v in scan.frames_in_view().values())
        seen = scan.frames_in_view().values()
        row = {"frames": len(path), "true": int(truth), "true_once": int(sum(v >= 1 for v in seen))}
        for label, fn in (("counted", find), ("counted_before", lambda *a, **k: None)):
            places_lib.Places.find = fn
            try:
                s = run_watch(WatchConfig(mode="field"), FakeSource([scan.frame(i) for i in range(len(scan))]), clf,
                              lambda r: None)["summary"]
            finally:
                places_lib.Places.find = find
            row[label] = counted(s)
            if label == "counted":
                row.update(view_jumps=s["tracking"]["view_jumps"], view_returns=s["tracking"]["view_returns"])
        stills = list(dict.fromkeys(path)) if len(set(path)) <= 3 else []
        if stills:  # the reference for still fields: each field counted on its own (a cell the truth calls cut by the
            row["each_field_alone"] = 0  # frame edge can be found whole), the count a return must not exceed
            for pos in stills:
                one = SlideScan(base.slide, base.cells, [pos] * 30, [0.0] * 30, base.frame_size, base.seed)
                row["each_field_alone"] += counted(run_watch(WatchConfig(mode="field"), FakeSource(
                    [one.frame(i) for i in range(30)]), clf, lambda r: None)["summary"])
        out[name] = row
        print(name, row, flush=True)
    return out


def greys(files: list[Path]) -> tuple[StageMotion, list[tuple[Path, np.ndarray]]]:
    """The fields' grey views as StageMotion keeps them (``current``), those of the commonest size."""
    motion = StageMotion()
    views = []
    for f in files:
        im = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        motion.update(im)  # a first frame of each size sets the correlation windows
        if motion.current is not None:
            views.append((f, motion.current.copy()))
    size = max({g.shape for _, g in views}, key=lambda s: sum(g.shape == s for _, g in views))
    motion = StageMotion()
    first = next(f for f, g in views if g.shape == size)
    motion.update(cv2.cvtColor(cv2.imread(str(first)), cv2.COLOR_BGR2RGB))
    return motion, [(f, g) for f, g in views if g.shape == size]


def pairs(data: Path, sub: str, groups: list[list[str]]) -> dict:
    files = list_images([data / sub])
    motion, views = greys(files)
    group_of = {g: i for i, grp in enumerate(groups) for g in grp}
    rel = {f: str(f.relative_to(data)) for f, _ in views}
    matched, same_cell, far, far_same_cell = [], 0, [], 0
    t0, t_far = time.perf_counter(), 0.0
    for (fa, a), (fb, b) in itertools.combinations(views, 2):
        ga, gb = group_of.get(rel[fa]), group_of.get(rel[fb])
        one = ga is not None and ga == gb
        m = motion.same_place(a, b, places_lib.MIN_DETAIL)
        t1 = time.perf_counter()
        o = motion.overlap(a, b, places_lib.MIN_DETAIL)  # a part shared (a far return, a fast pan's next frame)
        t_far += time.perf_counter() - t1
        if o is not None:
            far_same_cell += one
            if not one:
                far.append({"a": rel[fa], "b": rel[fb], "shift": [round(v, 1) for v in o[0]], "detail": round(o[1], 3)})
        if m is None:
            continue
        same_cell += one
        if not one:
            matched.append({"a": rel[fa], "b": rel[fb], "peak": round(m[1], 3), "detail": round(m[2], 3)})
    n = len(views) * (len(views) - 1) // 2
    return {"fields": len(views), "pairs": n, "matched_same_cell": same_cell,
            "matched_outside_the_groups": len(matched), "matches_outside_the_groups": matched[:20],
            "overlap_same_cell": far_same_cell, "overlap_outside_the_groups": len(far),
            "overlaps_outside_the_groups": far[:20],
            "ms_per_pair": round(1000 * (time.perf_counter() - t0 - t_far) / max(n, 1), 3),
            "overlap_ms_per_pair": round(1000 * t_far / max(n, 1), 3)}


def count(cmd: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.splitlines()[-1]
    s = json.loads(out)["summary"]
    d = s["differential"]
    t = s.get("tracking", {})
    return {"white": d["white_total"], "uncertain": d["uncertain"]["count"], "frames": s["frames"],
            "view_jumps": t.get("view_jumps"), "view_returns": t.get("view_returns")}


def videos(data: Path, sub: str, before: str | None) -> dict:
    files = list_images([data / sub])
    random.Random(1).shuffle(files)  # as tools/stage_jump.py
    ims = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files[:160]]
    size = ims[0].shape[:2]
    same = [im for im in ims if im.shape[:2] == size][:20]
    celledge = str(Path(sys.executable).parent / "celledge")
    row: dict = {"fields": len(same)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, seq in (("video_1_frame_each", [im for im in same]), ("video_3_frames_each", [im for im in same for _ in range(3)]),
                          ("video_3_frames_each_shown_twice", [im for im in same for _ in range(3)] * 2)):
            video = Path(tmp) / f"{name}.avi"
            w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size[1], size[0]))
            for im in seq:
                w.write(cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
            w.release()
            cmd = [celledge, "watch", str(video), "--mode", "field"]
            row[name] = count(cmd)
            if before:
                row[name + "_before"] = count(cmd, {**os.environ, "PYTHONPATH": before})
            print(sub, name, row[name], row.get(name + "_before"), flush=True)
    return row


def jump_cost() -> dict:
    scan = make_slide_scan(0, slide_size=(2000, 800), speed=(8.0, 20.0))
    motion = StageMotion()
    motion.update(scan.frame(0))
    keep = places_lib.Places(motion, spacing=0.0)  # a key frame for every frame noted: the set fills
    for i in range(64):
        motion.update(scan.frame(i * 8 % len(scan)))
        keep.note(0, motion.current, (i, 0))
    other = make_slide_scan(5, slide_size=(2000, 800)).frame(0)
    motion.update(other)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        keep.find(motion.current, {0})
        times.append(time.perf_counter() - t0)
    return {"key_frames": len(keep), "frame": "640x480", "ms_median": round(1000 * float(np.median(times)), 1),
            "ms_max": round(1000 * max(times), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--before", metavar="PYTHONPATH", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                                         / "field-return.json"))
    a = ap.parse_args()
    data = Path(a.data)
    groups = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                         / "deepbionet-duplicates.json").read_text())["groups"]
    rec = {"what": __doc__.splitlines()[0], "command": "python " + " ".join(sys.argv), "machine": machine(),
           "date": datetime.date.today().isoformat(),
           "rule": "decision 34a, written before the real-field measurements: keep Places only if no pair of fields of "
                   "different cells is matched (PBC 160, DeepBioNet 361; a match between fields that truly overlap, "
                   "checked by eye, is a right one), the stage-jump videos count as before with no return, generated "
                   "scans are unchanged (tests) and a jump with 64 key frames costs < 30 ms",
           "first_run": "with the jump test alone (not unlike): PBC 15 of 9,180 pairs of different fields matched "
                        "(peak 0.41-0.84, detail 0.10-0.45; by eye all different fields: a centred cell or nucleus "
                        "correlates at no shift); DeepBioNet 3 beyond the duplicate groups, by eye all true overlaps "
                        "(230/231, 123/126, 126/127: detail 0.97-0.98). Failed the rule. Decision 34a' (written "
                        "before the second run): a return also needs detail >= 0.6 (places.MIN_DETAIL), set in the gap "
                        "between those pairs (0.45) and consecutive scan frames (0.834, stage-jump.json), so the pair "
                        "figures below are development figures, not an independent test",
           "rule_35a": "decision 35a, written before any code or measurement of the change: StageMotion.overlap (a part "
                       "shared, down to a quarter of the frame, verified by detail >= 0.6) is tried (i) by Places.find "
                       "when no key frame passes same_place, (ii) by StageMotion.update before a frame is called a "
                       "jump. Adopt only if: the count hunt's cut to the next row counts 5 of 5 and no scenario exact "
                       "before gets worse; no pair of different real fields matches by overlap (DeepBioNet pairs within "
                       "the duplicate groups may); the generated figures here are unchanged; tools/stage_jump.py still "
                       "calls every pair of different fields a jump; the PBC slide scan counts as before; a jump costs "
                       "<= 10 ms more. If (ii) fails and (i) holds, (i) alone",
           "overlap_check_35a": "the 10 DeepBioNet pairs that share a part by overlap outside the duplicate groups "
                                "(230/231, 281/282, 324/322, 52/53, 123/126, 124/126, 125/126, 126/127, 64/67, 66/67; "
                                "detail 0.97-0.99) were checked by eye on their shared parts: the same red cells in the "
                                "same arrangement, photographs of neighbouring regions of one slide (3 with different "
                                "white cells outside the part shared): true overlaps. Adopted with (i), (ii) and "
                                "Tracker._needed (fewer whole views where the view moves more than a third of the frame "
                                "a frame; beyond the rule's text, judged by the same conditions)",
           "generated": generated(), "jump_cost": jump_cost()}
    print(rec["jump_cost"], flush=True)
    rec["pairs"] = {"pbc": pairs(data, "pbc-fields", []),
                    "deepbionet": pairs(data, "other-labs/deepbionet/fields", groups)}
    print(rec["pairs"], flush=True)
    rec["videos"] = {"pbc": videos(data, "pbc-fields", a.before),
                     "deepbionet": videos(data, "other-labs/deepbionet/fields", a.before)}
    Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
