"""Save the frames a lab wants to look at again: classes of interest and low confidence,
within a size cap (oldest saved frames are deleted first, so the disk never fills)."""
from __future__ import annotations

import collections
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError
from .outputs import LineSink


class FrameSaver:
    def __init__(self, folder: str | os.PathLike, classes: set[str] | None = None, below: float | None = None,
                 cap_bytes: int = 500 * 2**20):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--save-dir {folder} cannot be created ({(e.strerror or str(e)).lower()})") from None
        self._log = LineSink(self.folder / "saved.jsonl", "--save-dir")
        self.classes, self.below, self.cap = set(classes or ()), below, cap_bytes
        self.saved = 0
        self.deleted = 0
        # files already there count against the cap too
        existing = sorted(self.folder.glob("*.jpg"), key=lambda p: p.stat().st_mtime)
        self._files = collections.deque((p, p.stat().st_size) for p in existing)
        self.total = sum(size for _, size in self._files)

    def reasons(self, rec: dict) -> list[str]:
        cells = rec.get("cells") or [{"label": rec.get("label"), "score": rec.get("score", 1.0)}]
        out = []
        for c in cells:
            if c["label"] in self.classes or c.get("best") in self.classes:
                out.append(f"class:{c.get('best') or c['label']}")
            if self.below is not None and c["score"] < self.below:
                out.append("low_confidence")
        return sorted(set(out))

    def __call__(self, frame: np.ndarray, rec: dict, counters: dict | None = None) -> Path | None:
        why = self.reasons(rec)
        if not why:
            return None
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            return None
        data = buf.tobytes()
        if len(data) > self.cap:
            return None
        while self._files and self.total + len(data) > self.cap:
            old, size = self._files.popleft()
            old.unlink(missing_ok=True)
            self.total -= size
            self.deleted += 1
        name = f"{time.strftime('%Y%m%d-%H%M%S')}_{rec.get('frame', 0):08d}_{'+'.join(why).replace(':', '-')}.jpg"
        path = self.folder / name
        tmp = path.with_name("." + name + ".tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as e:  # disk full, folder gone: no half-written frame left behind
            tmp.unlink(missing_ok=True)
            raise UserError(f"stopped saving frames: cannot write {path} "
                            f"({(e.strerror or str(e)).lower()})") from None
        self._files.append((path, len(data)))
        self.total += len(data)
        self.saved += 1
        self._log.write(json.dumps({"file": name, "reasons": why, **rec}))
        return path
