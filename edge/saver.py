"""Save the frames a lab wants to look at again: classes of interest and low confidence,
within a size cap (oldest saved frames are deleted first, so the disk never fills).

Each saved frame is a JPEG and a JSON file of the same name (its record: why it was saved, the
frame's line); both count against the cap and go together."""
from __future__ import annotations

import collections
import json
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError, warn
from .bundle import write_bytes_atomic
from .outputs import DISK_FULL


TRACKS_KEPT = 10_000  # tracked cells remembered as saved
# what this saver names its files (<date>-<time>_<frame>_<reasons>.jpg/.json): only these are counted against the
# cap and deleted; any other file in the folder (a site file, a photo) is left alone
OWN_NAME = re.compile(r"\d{8}-\d{6}_\d{8,}_.+\.(jpg|json)")  # the reasons hold class names: any a label can be


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
        self.too_large = 0  # frames larger than the whole cap: not saved
        self.not_saved = 0  # frames not saved because the disk was full
        self._full = False  # in a spell of full disk (warned once a spell)
        # files already there count against the cap too, oldest first: a JPEG with its record, a record left
        # alone by a kill, the saved.jsonl of versions before
        existing = [p for p in self.folder.iterdir() if OWN_NAME.fullmatch(p.name) and p.is_file() and (
                    p.suffix == ".jpg" or not p.with_suffix(".jpg").exists()) or p.name == "saved.jsonl"]
        existing.sort(key=lambda p: p.stat().st_mtime)
        self._files = collections.deque((p, _size(p) + (_size(p.with_suffix(".json")) if p.suffix == ".jpg" else 0))
                                        for p in existing)
        self.total = sum(size for _, size in self._files)
        # tracked cells that already had a frame saved (a cell in view for many frames is saved once): recent ones
        self._tracks: collections.OrderedDict[int, None] = collections.OrderedDict()

    def _reasons(self, rec: dict) -> list[tuple[int | None, str]]:
        """(track or None, reason) for each cell of interest not saved before."""
        cells = rec.get("cells") or [{"label": rec.get("label"), "score": rec.get("score", 1.0)}]
        out = []
        for c in cells:
            track = c.get("track")
            if c.get("decided") or track is not None and track in self._tracks:  # followed from a saved frame
                continue
            if c["label"] in self.classes or c.get("best") in self.classes:
                out.append((track, f"class:{c.get('best') or c['label']}"))
            if self.below is not None and c["score"] < self.below:
                out.append((track, "low_confidence"))
        return out

    def __call__(self, frame: np.ndarray, rec: dict, counters: dict | None = None) -> Path | None:
        found = self._reasons(rec)
        if not found:
            return None
        why = sorted({w for _, w in found})
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            return None
        data = buf.tobytes()
        reasons = _short("+".join(why).replace(":", "-"))
        name = f"{time.strftime('%Y%m%d-%H%M%S')}_{rec.get('frame', 0):08d}_{reasons}.jpg"
        # the record names the saved image ("saved"); "file" stays the frame's own (a folder's image)
        record = (json.dumps({"saved": name, "reasons": why, **rec}) + "\n").encode()
        size = len(data) + len(record)
        if size > self.cap:  # nothing can be saved within the cap: said once, not left to be found empty
            self.too_large += 1
            if self.too_large == 1:
                warn(f"--save-cap-mb {self.cap / 2**20:g} is smaller than one saved frame ({size / 2**20:.1f} MB "
                     "with its record): frames are not saved; raise the cap")
            return None
        while self._files and self.total + size > self.cap:
            old, old_size = self._files.popleft()
            if old.suffix == ".jpg":  # its record first: a JPEG left alone is counted at the next start
                old.with_suffix(".json").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
            self.total -= old_size
            self.deleted += 1
        path = self.folder / name
        try:  # the record first: a JPEG is never without its record
            write_bytes_atomic(path.with_suffix(".json"), record, fsync="none")  # a card's wear: no flush per frame
            write_bytes_atomic(path, data, fsync="none")
        except OSError as e:  # disk full, folder gone: no half-written frame left behind
            try:
                path.with_suffix(".json").unlink(missing_ok=True)
            except OSError:
                pass
            if e.errno in DISK_FULL:  # an extra, not the count: skipped (and counted) until there is room
                self.not_saved += 1
                if not self._full:
                    warn(f"--save-dir {self.folder}: the disk is full; frames are not saved until there is room "
                         "again, and the count goes on")
                self._full = True
                return
            raise UserError(f"stopped saving frames: cannot write {path} "
                            f"({(e.strerror or str(e)).lower()})") from None
        self._files.append((path, size))
        self.total += size
        self.saved += 1
        self._full = False
        for track, _ in found:
            if track is not None:
                self._tracks[track] = None
        while len(self._tracks) > TRACKS_KEPT:
            self._tracks.popitem(last=False)
        return path


def _short(reasons: str, most: int = 120) -> str:
    """The reasons part of a saved frame's name, at most ``most`` bytes (a file name holds 255; several long class
    names ended the run with "file name too long"): cut on a character and marked with a short digest."""
    if len(reasons.encode()) <= most:
        return reasons
    import hashlib  # noqa: PLC0415

    cut = reasons.encode()[:most - 9].decode("utf-8", "ignore")
    return f"{cut}~{hashlib.blake2b(reasons.encode(), digest_size=4).hexdigest()}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
