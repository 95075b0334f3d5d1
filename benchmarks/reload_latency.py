"""What a model reload costs: the time to load and check a bundle, and the frame loop's gaps meanwhile.

The packaged int8 model is reloaded ``--reloads`` times (``ModelReloader.reload``: load, sidecar and hash,
interpreter, the checks); then the watch loop runs crop mode over 640x480 frames from memory, once
without reloads and once with a reload requested every ``--every`` s from another thread (as SIGHUP
does), and the gaps between consecutive frame records are compared (median, p99, max).

    python benchmarks/reload_latency.py --reloads 10 --frames 1500 --out benchmarks/results/model-reload.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

import numpy as np

from scopelite.edge.classifier import make_classifier
from scopelite.edge.config import WatchConfig
from scopelite.edge.packaged import default_model
from scopelite.edge.reload import ModelReloader
from scopelite.edge.sources import FakeSource
from scopelite.edge.sysinfo import machine
from scopelite.edge.watch import run_watch


def _gaps(frames, reloader, every: float | None) -> tuple[dict, int]:
    stamps = []
    done = threading.Event()

    def reload_now_and_then():
        while not done.wait(every):
            reloader.request(trigger="benchmark").join()

    if every:
        threading.Thread(target=reload_now_and_then, daemon=True).start()
    clf = reloader.take()[0] or make_classifier(reloader.path)
    s = run_watch(WatchConfig(), FakeSource(frames), clf,
                  lambda r: "event" not in r and stamps.append(time.perf_counter()), reloader=reloader)["summary"]
    done.set()
    ms = np.diff(stamps) * 1e3
    return ({"median_ms": round(float(np.median(ms)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
             "max_ms": round(float(ms.max()), 3), "fps": s["fps"]}, s["model_reloads"]["ok"])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reloads", type=int, default=10)
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--every", type=float, default=0.25, help="seconds between reloads during the run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    model = str(default_model())
    reloader = ModelReloader(make_classifier, make_classifier(model), model)
    load_ms = [reloader.reload(trigger="benchmark")["load_ms"] for _ in range(args.reloads)]
    reloader.take()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(8)] * (args.frames // 8)
    without, _ = _gaps(frames, ModelReloader(make_classifier, make_classifier(model), model), None)
    during, swaps = _gaps(frames, ModelReloader(make_classifier, make_classifier(model), model), args.every)
    result = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "model": model,
        "load_and_check_ms": {"median": round(statistics.median(load_ms), 1), "max": round(max(load_ms), 1),
                              "n": len(load_ms)},
        "frame_gaps_crop_mode_640x480": {"without_reloads": without,
                                         "with_reloads": {**during, "reloads_ok": swaps,
                                                          "every_s": args.every}},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
