"""How often a burst of Ctrl-C (SIGINT sent again and again for a moment) hangs `celledge watch`.

    python tools/signal_burst.py --runs 10 --burst 0.3 [--out benchmarks/results/signal-burst.json]

Each run starts `celledge watch FOLDER --mode field --loop --fps 5` on a generated field (through
``python -c "from scopelite.edge.cli import main; main()"``, so PYTHONPATH can point at older code), waits 2 s,
sends SIGINT for ``--burst`` seconds and waits up to 8 s for the exit: hung (killed), its exit code, whether a
traceback was printed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def one(folder: Path, burst: float) -> dict:
    p = subprocess.Popen([sys.executable, "-c", "from scopelite.edge.cli import main; main()", "watch", str(folder),
                          "--mode", "field", "--loop", "--fps", "5"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # (a job started with &)
    time.sleep(2.0)
    t0, sent = time.monotonic(), 0
    while time.monotonic() - t0 < burst and p.poll() is None:
        p.send_signal(signal.SIGINT)
        sent += 1
    try:
        _, err = p.communicate(timeout=8)
        return {"hung": False, "code": p.returncode, "traceback": "Traceback" in err, "signals": sent}
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return {"hung": True, "code": None, "traceback": None, "signals": sent}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--burst", type=float, default=0.3)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cv2.imwrite(str(Path(tmp) / "a.png"), np.full((64, 64, 3), 200, np.uint8))
        runs = [one(Path(tmp), a.burst) for _ in range(a.runs)]
    rec = {"label": a.label, "runs": a.runs, "burst_s": a.burst, "hung": sum(r["hung"] for r in runs),
           "tracebacks": sum(bool(r["traceback"]) for r in runs), "codes": [r["code"] for r in runs],
           "signals_per_burst": [r["signals"] for r in runs], "pythonpath": os.environ.get("PYTHONPATH", ""),
           "date": datetime.date.today().isoformat(), "command": " ".join(["python", *sys.argv])}
    print(json.dumps(rec))
    if a.out:
        Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")


if __name__ == "__main__":
    main()
