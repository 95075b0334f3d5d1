"""The watch loop: frames in, one JSON-able record per frame out.

Hardware-free: it takes any FrameSource and any Classifier, so tests drive it
with fakes. Stops on end of stream, ``max_frames`` or ``stop.set()``.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


from .classifier import Classifier
from .postprocess import Tally, top_k
from .preprocess import prepare
from .sources import FrameSource


def run_watch(
    source: FrameSource,
    classifier: Classifier,
    emit: Callable[[dict], None],
    max_frames: int | None = None,
    fps: float | None = None,
    k: int = 3,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Classify the centre crop of each frame; return the summary record.

    Args:
        source: where frames come from (closed on return).
        classifier: turns prepared crops into probabilities.
        emit: called with each frame's record.
        max_frames: stop after this many frames (None: until end of stream).
        fps: cap on frames per second (None: as fast as possible).
        k: how many classes each record lists.
        stop: set it (e.g. from a signal handler) to stop after the current frame.
    """
    stop = stop or threading.Event()
    tally = Tally(classifier.labels)
    n, t_start, infer_s = 0, clock(), 0.0
    reason = "end of stream"
    try:
        while not stop.is_set():
            if max_frames is not None and n >= max_frames:
                reason = "max frames"
                break
            t_frame = clock()
            frame = source.read()
            if frame is None:
                break
            crop = prepare(frame, classifier.input_spec)
            t0 = clock()
            scores = classifier.classify(crop[None])[0]
            dt = clock() - t0
            infer_s += dt
            best = top_k(scores, classifier.labels, k=k)
            tally.add(best[0].label)
            emit({
                "frame": n,
                "label": best[0].label,
                "score": round(best[0].score, 4),
                "top_k": [{"label": c.label, "score": round(c.score, 4)} for c in best],
                "infer_ms": round(dt * 1e3, 3),
            })
            n += 1
            if fps:
                remaining = 1.0 / fps - (clock() - t_frame)
                if remaining > 0:
                    stop.wait(remaining)
        else:
            reason = "stopped by signal"
    finally:
        source.close()
    elapsed = max(clock() - t_start, 1e-9)
    return {
        "summary": {
            "source": source.name,
            "frames": n,
            "stopped": reason,
            "seconds": round(elapsed, 3),
            "fps": round(n / elapsed, 2),
            "mean_infer_ms": round(1e3 * infer_s / n, 3) if n else None,
            "tally": tally.summary(),
        }
    }


