"""Save the frames a lab wants to look at again: classes of interest and low confidence,
within a size cap (oldest saved frames are deleted first, so the disk never fills).

Each saved frame is a JPEG and a JSON file of the same name (its record: why it was saved, the
frame's line); both count against the cap and go together."""
from __future__ import annotations

import collections
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError
from .bundle import write_bytes_atomic


class FrameSaver:
    def __init__(self, folder: str | os.PathLike, classes: set[str] | None = None, below: float | None = None,
                 cap_bytes: int = 500 * 2**20):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--save-dir {folder} cannot be created ({(e.strerror or str(e)).lower()})") from None
        self.classes, self.below, self.cap = set(classes or ()), below, cap_bytes
        self.saved = 0
        self.deleted = 0
        # files already there count against the cap too (a JPEG with its record)
        existing = sorted(self.folder.glob("*.jpg"), key=lambda p: p.stat().st_mtime)
        self._files = collections.deque((p, _size(p) + _size(p.with_suffix(".json"))) for p in existing)
        self.total = sum(size for _, size in self._files)

    def reasons(self, rec: dict) -> list[str]:
        cells = rec.get("cells") or [{"label": rec.get("label"), "score": rec.get("score", 1.0)}]
        out = []
        for c in cells:
            if c.get("decided"):  # a cell followed from an earlier frame, not classified again: saved with that one
                continue
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
        name = f"{time.strftime('%Y%m%d-%H%M%S')}_{rec.get('frame', 0):08d}_{'+'.join(why).replace(':', '-')}.jpg"
        # the record names the saved image ("saved"); "file" stays the frame's own (a folder's image)
        record = (json.dumps({"saved": name, "reasons": why, **rec}) + "\n").encode()
        size = len(data) + len(record)
        if size > self.cap:
            return None
        while self._files and self.total + size > self.cap:
            old, old_size = self._files.popleft()
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
            self.total -= old_size
            self.deleted += 1
        path = self.folder / name
        try:  # the record first: a JPEG is never without its record
            write_bytes_atomic(path.with_suffix(".json"), record, fsync="none")  # a card's wear: no flush per frame
            write_bytes_atomic(path, data, fsync="none")
        except OSError as e:  # disk full, folder gone: no half-written frame left behind
            path.with_suffix(".json").unlink(missing_ok=True)
            raise UserError(f"stopped saving frames: cannot write {path} "
                            f"({(e.strerror or str(e)).lower()})") from None
        self._files.append((path, size))
        self.total += size
        self.saved += 1
        return path


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
