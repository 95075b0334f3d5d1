"""Capture in its own thread: a bounded queue that drops the oldest frame when inference falls
behind (counted, never silent), and reconnection with exponential backoff for live sources."""
from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .sources import FrameSource, SourceError


class DropOldestQueue:
    """A bounded FIFO: ``put`` never blocks; when full, the oldest item is dropped and counted."""

    def __init__(self, maxsize: int = 2):
        self._dq: collections.deque = collections.deque()
        self._maxsize = max(1, maxsize)
        self._cv = threading.Condition()
        self.dropped = 0
        self.closed = False

    def put(self, item, block: bool = False, stop: threading.Event | None = None) -> None:
        """Add ``item``; when full, drop the oldest (live) or wait for room (``block``: files, folders)."""
        with self._cv:
            while block and len(self._dq) >= self._maxsize and not (stop and stop.is_set()):
                self._cv.wait(0.1)
            if block and len(self._dq) >= self._maxsize:  # the run is stopping: a file's frame is not dropped
                return
            if len(self._dq) >= self._maxsize:
                self._dq.popleft()
                self.dropped += 1
            self._dq.append(item)
            self._cv.notify_all()

    def get(self, timeout: float | None = None):
        """Next item; None when closed and drained, or on timeout."""
        with self._cv:
            if not self._dq and not self.closed:
                self._cv.wait(timeout)
            item = self._dq.popleft() if self._dq else None
            self._cv.notify_all()
            return item

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    @property
    def drained(self) -> bool:
        """Closed, and every item taken: nothing more will come (a ``get`` that timed out just before the last
        item was put and the queue closed is no reason to stop)."""
        with self._cv:
            return self.closed and not self._dq


class Capture(threading.Thread):
    """Reads frames from ``open_source()`` into ``queue``.

    A finite source (file, folder) ends the stream at its end. A live source
    (camera, URL) that fails or ends is reopened with exponential backoff
    (``backoff`` doubling up to ``backoff_cap`` seconds), unless ``exit_on_eof``.
    """

    def __init__(self, open_source: Callable[[], FrameSource], queue: DropOldestQueue, live: bool,
                 exit_on_eof: bool = False, backoff: float = 0.5, backoff_cap: float = 30.0,
                 stop: threading.Event | None = None, on_event: Callable[[str, dict], None] | None = None,
                 name: str = "?"):
        super().__init__(name="capture", daemon=True)
        self._open, self.queue, self.live, self.exit_on_eof = open_source, queue, live, exit_on_eof
        self.backoff, self.backoff_cap = backoff, backoff_cap
        self.stop = stop or threading.Event()
        self.on_event = on_event or (lambda kind, info: None)
        self.frames = 0
        self.reconnects = 0
        self._in_a_row = 0  # failed opens or reads since the source last gave a frame
        self.connected = False
        self.last_frame_time = 0.0
        self.source_name = name  # the source as given until it opens, then as it names itself
        # a folder's image file of each frame queued, in order (``FolderSource.path``)
        self.files: collections.deque[str] = collections.deque()
        self.end_reason: str | None = None  # why a file, folder or --exit-on-eof stream ended ("end of stream")

    def run(self) -> None:
        delay = self.backoff
        source: FrameSource | None = None
        try:
            while not self.stop.is_set():
                if source is None:
                    try:
                        source = self._open()
                        self.source_name = source.name
                        self.connected = True  # the delay starts again at a frame, not here: a stream that
                        # opens but gives nothing was tried every 0.5 s for ever, whatever --backoff-cap said
                    except SourceError as e:
                        if not self._retry(str(e), delay):
                            return
                        delay = min(delay * 2, self.backoff_cap)
                        continue
                try:
                    frame = source.read()
                except SourceError as e:
                    frame, err = None, str(e)
                else:
                    err = "end of stream"
                if frame is not None:
                    self.frames += 1
                    self._in_a_row, delay = 0, self.backoff
                    self.last_frame_time = time.monotonic()
                    if not self.live and getattr(source, "path", None) is not None:  # nothing is dropped: in step
                        self.files.append(str(Path(source.path).resolve()))
                    self.queue.put(np.asarray(frame), block=not self.live, stop=self.stop)
                    continue
                source.close()
                source, self.connected = None, False
                if not self.live or self.exit_on_eof:
                    self.end_reason = err
                    self.on_event("end", {"reason": err})
                    return
                if not self._retry(err, delay):
                    return
                delay = min(delay * 2, self.backoff_cap)
        finally:
            if source is not None:
                source.close()
            self.connected = False
            self.queue.close()

    def _retry(self, reason: str, delay: float) -> bool:
        if not self.live or self.exit_on_eof:
            self.end_reason = reason
            self.on_event("end", {"reason": reason})
            return False
        self.reconnects += 1
        self._in_a_row += 1
        self.on_event("reconnecting", {"reason": reason, "in_seconds": delay, "attempt": self.reconnects,
                                       "in_a_row": self._in_a_row})
        return not self.stop.wait(delay)
