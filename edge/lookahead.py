"""Work on the next item in a thread while the caller handles this one: one item ahead, in order.

The next item is taken as soon as the caller has taken the one before, not earlier: from a live camera, the
frame worked on is the newest one at the moment the caller starts on the frame before it (the capture queue
keeps replacing older frames until then).

Field mode reads a frame (its light evened out, its stain layers: ``frameread.read_frame``, pure) while the frame
before it is detected, classified and tracked; NumPy, OpenCV and the interpreter let go of Python's lock while they
work, so on two cores the two overlap. The work must not depend on what the caller does with earlier items: it runs
on each item as it is taken, before the caller has seen the one before. An error in the work (or in taking) is
raised in the caller, at the item it happened on. Pure: threading only.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()
POLL_S = 0.25  # how often a waiting thread looks whether it is told to stop


class Lookahead(Generic[T, R]):
    """``take(timeout)`` gives the next item or None (nothing yet); ``finished()`` says whether nothing more will
    come once ``take`` gives None. ``work(item)`` runs in the thread, one item ahead of the caller's ``get``."""

    def __init__(self, take: Callable[[float], T | None], finished: Callable[[], bool], work: Callable[[T], R],
                 name: str = "lookahead"):
        self._take, self._finished, self._work = take, finished, work
        self._out: queue.Queue = queue.Queue(maxsize=1)
        self._slot = threading.Semaphore(1)  # the next item is taken only once the caller has taken the one before
        self._stop = threading.Event()
        self.closed = False  # the caller has had every item (or the error that ended them)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                while not self._slot.acquire(timeout=POLL_S):  # a live camera's frame is taken when it can be used
                    if self._stop.is_set():
                        return
                item = self._take(POLL_S)
                if self._stop.is_set():
                    return
                if item is None:
                    self._slot.release()
                    if self._finished():
                        break
                    continue
                self._put((item, self._work(item), None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller, raised there
            self._put((None, None, e))
            return
        self._put(_END)

    def _put(self, entry) -> None:
        self._out.put(entry)  # never waits: an entry is put only once the caller has taken the one before (_slot)

    def get(self, timeout: float | None = None) -> tuple[T, R] | None:
        """The next item and its work's result; None on timeout or once ``closed``. Raises the work's error."""
        if self.closed or self._stop.is_set():
            return None
        try:
            entry = self._out.get(timeout=timeout)
        except queue.Empty:
            return None
        self._slot.release()
        if entry is _END:
            self.closed = True
            return None
        item, result, error = entry
        if error is not None:
            self.closed = True
            raise error
        return item, result

    def stop(self, timeout: float = 2.0) -> None:
        """Stop taking items and wait (up to ``timeout`` s) for the thread: an item being worked on is finished,
        an item read ahead is let go. ``take`` should give up soon (its source closed)."""
        self._stop.set()
        self._slot.release()  # a thread waiting for the caller looks again, and stops
        self._thread.join(timeout)
