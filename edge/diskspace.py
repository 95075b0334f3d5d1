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
import threading
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
    ``floor``) or "unknown" (not looked at yet, or it could not be read). A state is left only with some room to
    spare (``SPARE`` of its threshold), so that it does not flip at every look while the room hovers there."""

    SPARE = 0.1

    def __init__(self, path: str | Path, low: int = LOW_BYTES, floor: int = FLOOR_BYTES,
                 every: float = CHECK_EVERY_S, clock: Callable[[], float] = time.monotonic,
                 usage: Callable[[str], object] | None = None):
        self.path, self.low, self.floor, self.every = str(path), low, floor, every
        self._clock, self._usage = clock, usage
        self.free: int | None = None
        self.state = "unknown"
        self._at: float | None = None
        self._lock = threading.Lock()  # the frame loop and the lab page's requests both look

    def _state_for(self, free: int | None) -> str:
        if free is None:
            return "unknown"
        spare = 1 + self.SPARE
        floor = self.floor * spare if self.state == "full" else self.floor
        low = self.low * spare if self.state in ("low", "full") else self.low
        return "full" if free < floor else "low" if free < low else "ok"

    def look(self) -> str | None:
        """Look again when ``every`` seconds have passed since the last look: what to say when the state changed
        (None otherwise, and at a first look that finds room)."""
        with self._lock:
            now = self._clock()
            if self._at is not None and now - self._at < self.every:
                return None
            self._at = now
            try:
                self.free = int((self._usage or shutil.disk_usage)(self.path).free)
            except OSError:
                self.free = None
            before, self.state = self.state, self._state_for(self.free)
        if self.state == before or self.state == "unknown" or (self.state == "ok" and before == "unknown"):
            return None
        return self.message(before)

    def message(self, before: str = "unknown") -> str:
        """What to say of the state now, having been ``before``."""
        mb = f"{self.free / 2**20:.0f} MB" if self.free is not None else "an unknown amount"
        where = f"the disk of the sessions folder {self.path} has {mb} free"
        again = "; the cells' pictures are kept again" if before == "full" else ""
        if self.state == "full":
            return f"{where}: counting goes on without keeping the cells' pictures; {ADVICE}"
        if self.state == "low":
            return (f"{where} (about {24 * self.free / BYTES_A_DAY:.0f} hours of counting all day){again}: "
                    f"{ADVICE}")
        return f"{where}: room again{again}"

    def info(self) -> dict:
        """For the lab page, /metrics and the JSON summary."""
        return {"free_mb": None if self.free is None else round(self.free / 2**20), "state": self.state}
