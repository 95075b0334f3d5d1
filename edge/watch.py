"""The watch loop: frames in, one JSON-able record per frame out.

Hardware-free: it takes any FrameSource and any Classifier, so tests drive it
with fakes. Stops on end of stream, ``max_frames`` or ``stop.set()``.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


import numpy as np

from . import field as field_lib
from . import scale as scale_lib
from .classifier import Classifier
from .postprocess import Tally, top_k
from .preprocess import prepare
from .capture import Capture, DropOldestQueue
from .sources import FrameSource, SourceError
from .stain import stain_layers


def _once(source: FrameSource) -> Callable[[], FrameSource]:
    """An opener for an already-open source: it cannot be reopened."""
    state = {"used": False}

    def open_it() -> FrameSource:
        if state["used"]:
            raise SourceError(f"{source.name} cannot be reopened")
        state["used"] = True
        return source

    return open_it

UNCERTAIN = "uncertain"


class FieldScale:
    """Where each field-mode frame's scale comes from: a fixed crop size, or the red-cell ruler.

    In auto mode every frame is measured and the median of the last ``window``
    good estimates is used (``ScaleSmoother``); until a first frame has enough red
    cells, the crop falls back to ``field.FALLBACK_RBC_PX`` (PBC's framing, 360 px
    crops for the shipped model) and each record says so.
    """

    def __init__(self, cfg: field_lib.FieldConfig, window: int = 15):
        self.cfg = cfg
        self.smoother = scale_lib.ScaleSmoother(window)

    def measure(self, frame: np.ndarray, layers) -> tuple[float, dict]:
        fixed = self.cfg.rbc_px_for_crop()
        if fixed is not None:
            return fixed, {"source": "crop-size", "rbc_px": round(fixed, 1), "crop": self.cfg.crop_size}
        est = scale_lib.estimate_rbc_diameter(frame, layers)
        current = self.smoother.update(est)
        source = "red cells" if current is not None else "fallback"
        rbc = current if current is not None else field_lib.FALLBACK_RBC_PX
        return rbc, {"source": source, "rbc_px": round(rbc, 1), "crop": self.cfg.crop_for(rbc),
                     "frame_rbc_px": None if est.diameter_px is None else round(est.diameter_px, 1),
                     "red_cells": est.cells}


def classify_field(frame: np.ndarray, classifier: Classifier, cfg: field_lib.FieldConfig, min_score: float,
                   tally: Tally | None = None, scale: FieldScale | None = None) -> tuple[list[dict], dict]:
    """Detect the cells of a field, classify all their crops in one pass, update the differential count.

    Returns the cells and the scale used (``FieldScale.measure``).
    """
    layers = stain_layers(frame)
    rbc_px, scale_info = (scale or FieldScale(cfg)).measure(frame, layers)
    dets = field_lib.detect(frame, rbc_px, layers, cfg)
    if not dets:
        return [], scale_info
    side = cfg.crop_for(rbc_px)
    crops = np.stack([prepare(field_lib.crop(frame, d, side), classifier.input_spec) for d in dets])
    scores = classifier.classify(crops)
    cells = []
    half = side // 2
    for d, sc in zip(dets, scores):
        best = top_k(sc, classifier.labels, k=1)[0]
        label = best.label if best.score >= min_score else UNCERTAIN
        if tally is not None:
            tally.add(label)
        cells.append({"label": label, "score": round(best.score, 4), "best": best.label, "kind": d.kind,
                      "center": [round(d.x, 1), round(d.y, 1)],
                      "box": [int(d.x) - half, int(d.y) - half, int(d.x) + half, int(d.y) + half]})
    return cells, scale_info


def run_watch(
    source: FrameSource | Callable[[], FrameSource],
    classifier: Classifier,
    emit: Callable[[dict], None],
    max_frames: int | None = None,
    fps: float | None = None,
    k: int = 3,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    mode: str = "crop",
    field_cfg: field_lib.FieldConfig | None = None,
    min_score: float = 0.5,
    live: bool = False,
    exit_on_eof: bool = False,
    queue_size: int = 2,
    backoff: float = 0.5,
    backoff_cap: float = 30.0,
    on_frame: Callable[[np.ndarray, dict, dict], None] | None = None,
) -> dict:
    """Classify each frame (capture runs in its own thread); return the summary record.

    Args:
        source: where frames come from, or a function that opens it (needed to reconnect).
        classifier: turns prepared crops into probabilities.
        emit: called with each frame's record.
        max_frames: stop after this many frames (None: until end of stream).
        fps: cap on frames per second (None: as fast as possible).
        k: how many classes each record lists.
        stop: set it (e.g. from a signal handler) to stop after the current frame.
        mode: "crop" (one cell in the centre of the view) or "field" (find and classify every cell).
        field_cfg: detector settings for field mode.
        min_score: field mode: cells scored below this count as "uncertain".
        live: a camera or stream: frames are dropped (oldest first, counted) when inference
            falls behind, and a lost source is reopened with exponential backoff.
        exit_on_eof: stop instead of reconnecting when a live source ends.
        on_frame: called with each frame, its record and the capture counters (HTTP status, saving).
    """
    stop = stop or threading.Event()
    field_cfg = field_cfg or field_lib.FieldConfig()
    field_scale = FieldScale(field_cfg)
    tally = Tally(list(classifier.labels) + ([UNCERTAIN] if mode == "field" else []))
    opener = source if callable(source) and not hasattr(source, "read") else _once(source)
    queue = DropOldestQueue(queue_size)
    capture = Capture(opener, queue, live=live, exit_on_eof=exit_on_eof, backoff=backoff, backoff_cap=backoff_cap,
                      stop=threading.Event(), on_event=lambda kind, info: live and emit({"event": kind, **info}))
    capture.start()
    n, t_start, infer_s = 0, clock(), 0.0
    reason = "end of stream"
    try:
        while not stop.is_set():
            if max_frames is not None and n >= max_frames:
                reason = "max frames"
                break
            t_frame = clock()
            frame = queue.get(timeout=0.25)
            if frame is None:
                if queue.closed:
                    break
                continue
            t0 = clock()
            if mode == "field":
                cells, scale_info = classify_field(frame, classifier, field_cfg, min_score, tally, field_scale)
                dt = clock() - t0
                rec = {"frame": n, "cells": cells, "scale": scale_info, "count": tally.summary()["counts"]}
            else:
                scores = classifier.classify(prepare(frame, classifier.input_spec)[None])[0]
                dt = clock() - t0
                best = top_k(scores, classifier.labels, k=k)
                tally.add(best[0].label)
                rec = {"frame": n, "label": best[0].label, "score": round(best[0].score, 4),
                       "top_k": [{"label": c.label, "score": round(c.score, 4)} for c in best]}
            infer_s += dt
            rec["infer_ms"] = round(dt * 1e3, 3)
            emit(rec)
            if on_frame is not None:
                on_frame(frame, rec, {"captured": capture.frames, "dropped": queue.dropped,
                                      "reconnects": capture.reconnects})
            n += 1
            if fps:
                remaining = 1.0 / fps - (clock() - t_frame)
                if remaining > 0:
                    stop.wait(remaining)
        else:
            reason = "stopped by signal"
    finally:
        capture.stop.set()
        queue.close()
        capture.join(timeout=2.0)
    elapsed = max(clock() - t_start, 1e-9)
    return {
        "summary": {
            "source": capture.source_name,
            "mode": mode,
            "frames": n,
            "captured": capture.frames,
            "dropped": queue.dropped,
            "reconnects": capture.reconnects,
            "stopped": reason,
            "seconds": round(elapsed, 3),
            "fps": round(n / elapsed, 2),
            "mean_infer_ms": round(1e3 * infer_s / n, 3) if n else None,
            "tally": tally.summary(),
        }
    }


