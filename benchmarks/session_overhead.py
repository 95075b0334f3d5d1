"""What a session costs the watch loop: field mode on a generated 640x480 slide scan, with and without
``--sessions`` (every counted cell's crop saved as PNG and its line appended), same frames, same model.

Frames are rendered before timing; runs alternate (without, with, with os.fsync a no-op, without, ...) so
that load on a shared machine falls on all alike, and the ratios of the medians are reported. The time
inside ``Sessions.update`` is measured directly too (per frame, and per counted cell), and the time of
``Session.add`` alone (crop PNG written, fsync'ed and renamed, folder fsync'ed, line appended and fsync'ed).
The third arm (fsync made a no-op) is the old, kill-safe but not power-cut-safe, behaviour: the difference
is what the power-cut safety costs. ``--dir`` puts the sessions on the disk to measure (an SD card...).

    python benchmarks/session_overhead.py --seeds 0 1 --repeats 3 --out benchmarks/results/session-overhead.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from scopelite.edge.classifier import make_classifier
from scopelite.edge.config import WatchConfig
from scopelite.edge.packaged import default_model
from scopelite.edge.session import Session, Sessions
from scopelite.edge.sources import FakeSource
from scopelite.edge.sysinfo import machine
from scopelite.edge.watch import run_watch
from scopelite.train.slide import make_slide_scan


class Timed(Sessions):
    """Sessions that add up the time spent in update()."""

    spent = 0.0
    calls = 0

    def update(self, frame, rec):
        t = time.perf_counter()
        try:
            return super().update(frame, rec)
        finally:
            self.spent += time.perf_counter() - t
            self.calls += 1


def one(frames, clf, with_session: bool, where: str | None = None, fsync: bool = True) -> dict:
    added = []  # seconds per Session.add
    add, real_fsync = Session.add, os.fsync

    def timed_add(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return add(self, *args, **kwargs)
        finally:
            added.append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory(dir=where) as tmp:
        sessions = Timed(tmp, clf.labels) if with_session else None
        Session.add = timed_add
        if not fsync:
            os.fsync = lambda fd: None
        try:
            t = time.perf_counter()
            s = run_watch(WatchConfig(mode="field"), FakeSource(frames), clf, lambda rec: None,
                          session=sessions)["summary"]
            wall = time.perf_counter() - t
        finally:
            Session.add, os.fsync = add, real_fsync
        out = {"fps": round(s["frames"] / wall, 2), "frames": s["frames"]}
        if sessions is not None:
            cells = sessions.summary(cells=False)["cells_total"]
            out.update(cells=cells, update_ms_per_frame=round(1e3 * sessions.spent / sessions.calls, 3),
                       add_ms_per_cell=round(1e3 * statistics.median(added), 2) if added else None,
                       update_ms_per_cell=round(1e3 * sessions.spent / max(cells, 1), 2),
                       folder_kb=round(sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp)
                                           for f in fs) / 1024, 1))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--dir", default=None, help="where the sessions are written (default: the system's temp folder)")
    args = ap.parse_args()
    load = os.getloadavg()
    clf = make_classifier(str(default_model()))
    rows = []
    for seed in args.seeds:
        scan = make_slide_scan(seed)
        frames = [f for f, _ in scan.frames()]
        without, with_, loose = [], [], []
        for _ in range(args.repeats):
            without.append(one(frames, clf, False, args.dir))
            with_.append(one(frames, clf, True, args.dir))
            loose.append(one(frames, clf, True, args.dir, fsync=False))
        fps0 = statistics.median(r["fps"] for r in without)
        fps1 = statistics.median(r["fps"] for r in with_)
        fps2 = statistics.median(r["fps"] for r in loose)

        def med(runs, key):
            return statistics.median(r[key] for r in runs)

        rows.append({"seed": seed, "frames": len(frames), "cells_on_slide": len(scan.cells),
                     "fps_without": fps0, "fps_with_session": fps1, "ratio": round(fps1 / fps0, 3),
                     "fps_with_session_no_fsync": fps2, "ratio_no_fsync": round(fps2 / fps0, 3),
                     "cells_recorded": with_[0]["cells"],
                     "update_ms_per_frame": med(with_, "update_ms_per_frame"),
                     "update_ms_per_cell": med(with_, "update_ms_per_cell"),
                     "add_ms_per_cell": med(with_, "add_ms_per_cell"),
                     "update_ms_per_frame_no_fsync": med(loose, "update_ms_per_frame"),
                     "add_ms_per_cell_no_fsync": med(loose, "add_ms_per_cell"),
                     "session_folder_kb": with_[0]["folder_kb"],
                     "kb_per_cell": round(with_[0]["folder_kb"] / max(with_[0]["cells"], 1), 1)})
        print(json.dumps(rows[-1]), flush=True)
    result = {"command": "python " + " ".join(sys.argv), "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "load_average_at_start": [round(x, 2) for x in load], "model": "packaged int8 EfficientNetV2B0 (CPU)",
              "frame_size": "640x480", "sessions_dir": args.dir or tempfile.gettempdir(), "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
