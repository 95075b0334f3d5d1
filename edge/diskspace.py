"""Room left on the disk that holds the sessions, looked at now and then: a daemon left counting for weeks says it
is running out well before it does, and keeps counting when it has.

A session keeps each counted cell's picture (about 31 KB at 640x480) and a line (about 0.3 KB): counting all day
fills about 1 GB a day (docs/differential.md). Under ``LOW_BYTES`` free the daemon warns (its journal, the lab page,
/metrics); under ``FLOOR_BYTES`` it goes on counting without keeping the cells' pictures (the count, the cells'
lines and the reports go on; those cells cannot be reviewed by their picture). Pure apart from
``shutil.disk_usage``.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

BYTES_A_DAY = 1 << 30  # counting all day (36,000 cells at 10 frames/s, docs/differential.md)
LOW_BYTES = BYTES_A_DAY
FLOOR_BYTES = 100 << 20  # below this, no more pictures: room for the count's lines and reports
CHECK_EVERY_S = 30.0
ADVICE = "export the sessions reviewed (celledge export) and delete old ones (docs/differential.md)"


class DiskRoom:
    """How much room ``path``'s disk has: ``state`` "ok", "low" (under ``low`` bytes free), "full" (under
    ``floor``) or "unknown" (not looked at yet, or it could not be read)."""

    def __init__(self, path: str | Path, low: int = LOW_BYTES, floor: int = FLOOR_BYTES,
                 every: float = CHECK_EVERY_S, clock: Callable[[], float] = time.monotonic,
                 usage: Callable[[str], object] | None = None):
        self.path, self.low, self.floor, self.every = str(path), low, floor, every
        self._clock, self._usage = clock, usage
        self.free: int | None = None
        self._at: float | None = None

    @property
    def state(self) -> str:
        if self.free is None:
            return "unknown"
        return "full" if self.free < self.floor else "low" if self.free < self.low else "ok"

    def look(self) -> str | None:
        """Look again when ``every`` seconds have passed since the last look: what to say when the state changed
        (None otherwise, and at a first look that finds room)."""
        now = self._clock()
        if self._at is not None and now - self._at < self.every:
            return None
        self._at = now
        before = self.state
        try:
            self.free = int((self._usage or shutil.disk_usage)(self.path).free)
        except OSError:
            self.free = None
        after = self.state
        if after == before or after == "unknown" or (after == "ok" and before == "unknown"):
            return None
        return self.message()

    def message(self) -> str:
        mb = f"{self.free / 2**20:.0f} MB" if self.free is not None else "an unknown amount"
        where = f"the disk of the sessions folder {self.path} has {mb} free"
        if self.state == "full":
            return f"{where}: counting goes on without keeping the cells' pictures; {ADVICE}"
        if self.state == "low":
            return f"{where} (about {24 * self.free / BYTES_A_DAY:.0f} hours of counting all day): {ADVICE}"
        return f"{where} again: the cells' pictures are kept"

    def info(self) -> dict:
        """For the lab page, /metrics and the JSON summary."""
        return {"free_mb": None if self.free is None else round(self.free / 2**20), "state": self.state}
