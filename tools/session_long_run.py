"""A daemon's sessions over a long run (session 27; the code to test on PYTHONPATH): the memory an open-ended session
holds as cells are counted, the files left open by a daemon whose every session is reviewed after it closes, and the
time to close a 5,000-cell session (its report is written while the count waits).

    python tools/session_long_run.py N_CELLS ROUNDS      # prints one JSON object

fsync is switched off for the probe's speed (memory and open files do not depend on it)."""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.fsync = lambda fd: None  # the probe's speed only: memory and open files do not depend on it
from scopelite.edge.bundle import CLASS_NAMES
from scopelite.edge.session import Sessions, list_sessions
import scopelite.edge.session as sm

N, ROUNDS = int(sys.argv[1]), int(sys.argv[2])
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
fds = lambda: len(os.listdir("/proc/self/fd"))
rng = np.random.default_rng(0)
root = Path(tempfile.mkdtemp(prefix="longrun-"))
s = Sessions(root / "a", CLASS_NAMES)
before, t0 = rss(), time.time()
trail = []
frame = np.full((40, 40, 3), 128, np.uint8)
for i in range(N):
    sc = rng.dirichlet(np.ones(8) * 0.3)
    b = int(np.argmax(sc))
    e = {"cell": 0, "label": CLASS_NAMES[b], "best": CLASS_NAMES[b], "score": float(sc[b]), "scores": sc.round(4).tolist(),
         "center": [20.0, 20.0]}
    s.update(frame, {"frame": i, "cells": [{"box": [0, 0, 40, 40], "center": [20.0, 20.0]}], "counted": [e]})
    if (i + 1) % 10000 == 0:
        trail.append(round(rss() - before, 1))
mem = rss() - before
folders = list_sessions(root / "a")
s.release()
# a daemon counting slide after slide (--count 1 --http) whose each session is reviewed after it closes
r = Sessions(root / "b", CLASS_NAMES, target=1, hold=True)
f0 = None
for k in range(ROUNDS):
    e = {"cell": 0, "label": "neutrophil", "best": "neutrophil", "score": 0.9, "scores": [0.01] * 6 + [0.9, 0.01],
         "center": [20.0, 20.0]}
    r.update(frame, {"frame": k, "cells": [{"box": [0, 0, 40, 40], "center": [20.0, 20.0]}], "counted": [e]})
    r.label(r.current.cells[0]["id"], "lymphocyte")
    r.start()
    if k == 0:
        f0 = fds()
# closing a session of MAX_CELLS (5,000) cells with 160 px crops: its report is written while the count waits
from scopelite.edge.session import Session

big = Session.create(root / "c", CLASS_NAMES, None, 0.5, None)
for i in range(5000):
    sc = rng.dirichlet(np.ones(8) * 0.3)
    b = int(np.argmax(sc))
    big.add({"label": CLASS_NAMES[b], "best": CLASS_NAMES[b], "score": float(sc[b]), "scores": sc.round(4).tolist(),
             "frame": i, "center": [1, 2]}, rng.integers(0, 255, (160, 160, 3), dtype=np.uint8))
t1 = time.perf_counter()
big.close("probe")
close_s = time.perf_counter() - t1
print(json.dumps({"close_5000_cell_session_seconds": round(close_s, 2),
                  "report_html_mb": round((big.folder / "report.html").stat().st_size / 2**20, 1),"cells_counted": N, "rss_growth_mb": round(mem, 1), "rss_growth_mb_every_10000_cells": trail, "bytes_per_cell": round(mem * 2**20 / N),
                  "sessions": len(folders), "max_cells_per_session": getattr(sm, "MAX_CELLS", None),
                  "reviewed_sessions": ROUNDS, "open_files_growth": fds() - f0, "seconds": round(time.time() - t0, 1)}))
