"""``--keep-days``: a daemon counting for weeks removes the sessions it closed long ago.

A session keeps every counted cell's picture: about 1 GB a day of counting (docs/differential.md), so an SD card
fills in weeks. With ``--keep-days DAYS`` the daemon looks, at its start and every hour, for closed sessions
stopped more than DAYS days ago (``state.json``'s ``stopped``, the wall clock: a clock set back keeps them) and
removes each whole folder. A Pi's clock can be wrong until it finds a time server (the time it was switched off,
or 1970), so a stop time the clock wrote then can make a session look old: a session this process saw open, as
the current one or closed (at its start or later) is kept for DAYS of the process's own (monotonic) time after it
last saw it so, and a stop time (or a clock) before 2020 removes nothing.

Never the current session (the open one, or the last closed, still on the lab page), never an open one, never one
another process holds (``celledge review``: ``Session.lock``'s ``.lock``), never a folder whose state cannot be
read, never one the open or current session went on from (an open-ended session closed at MAX_CELLS: the images
counted in it are skipped when a folder is watched again). A folder is renamed to a hidden name before its files
go, so nothing reads a half-removed session; what a cut-off removal left behind goes at the next look.
"""
from __future__ import annotations

import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from .session import list_sessions, read_state, take_lock, went_on_from
from .sources import VIDEO_SUFFIXES, is_live

DAY_S = 86400.0
SANE_AFTER = 1_577_836_800.0  # 2020-01-01: a clock before it was never set
EVERY_S = 3600.0  # how often the daemon looks
HIDDEN = ".removing-"  # a folder being removed


def expired(root: str | os.PathLike, keep_days: float, now: float, keep: Path | None = None) -> list[Path]:
    """The closed sessions under ``root`` stopped more than ``keep_days`` days before ``now`` (seconds since the
    epoch), oldest first; never ``keep``."""
    out = []
    for d in list_sessions(root):
        if keep is not None and d.resolve() == keep.resolve():
            continue
        try:
            state = read_state(d)
        except (OSError, ValueError):
            continue
        stopped = state.get("stopped")
        if state.get("state") != "closed" or isinstance(stopped, bool) or not isinstance(stopped, (int, float)):
            continue
        if SANE_AFTER <= stopped and now - stopped > keep_days * DAY_S:
            out.append(d)
    return out


def remove(folder: Path) -> bool:
    """Remove one session folder unless another process holds it (False): its lock is taken, the folder renamed
    hidden, then its files removed."""
    try:
        fd = take_lock(folder)
    except OSError:
        return False
    if fd is None:
        return False  # a review, or a watch counting into it
    try:
        gone = folder.with_name(HIDDEN + folder.name)
        try:
            os.rename(folder, gone)
        except OSError:
            return False
        shutil.rmtree(gone, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def leftovers(root: str | os.PathLike) -> None:
    """Finish removals a power cut or a kill cut off."""
    root = Path(root)
    for d in root.iterdir() if root.is_dir() else ():
        if d.name.startswith(HIDDEN) and d.is_dir() and not d.is_symlink():
            shutil.rmtree(d, ignore_errors=True)


def counts_a_folder(folder: Path) -> bool:
    """Whether the session in ``folder`` counts a folder of images (state ``inputs``: not a camera, a stream or a
    video file), judged by what was given, not by what is mounted now (a USB stick out at the hourly look removed
    the chain, and its images were counted again when it came back). Unreadable: True (its chain is kept)."""
    try:
        inputs = read_state(folder).get("inputs")
    except (OSError, ValueError):
        return True
    if not isinstance(inputs, list) or not inputs:  # nothing counted yet, or from before inputs were recorded
        return True
    return any(isinstance(i, str) and not is_live(i) and Path(i).suffix.lower() not in VIDEO_SUFFIXES
               for i in inputs)


class Pruner:
    """Removes expired sessions at ``start`` and every ``every`` seconds in a thread of its own (a large session's
    thousands of pictures take seconds to remove on an SD card: not in the frame loop), until ``stop``.

    Args:
        root: the sessions folder.
        keep_days: how long a closed session is kept after it stopped.
        current: the current session's folder now (never removed).
        tell: told of each session removed, in a line for the journal.
        spare: the sessions this process closed, and when (monotonic): ``Sessions.closed_here``, read at each look
            (a slide's session started and closed between two looks is kept too).
        clock: the wall clock (``stopped`` is written with it); ``monotonic``: the process's own.
    """

    def __init__(self, root: str | os.PathLike, keep_days: float, current: Callable[[], Path],
                 tell: Callable[[str], None], spare: Callable[[], dict[str, float]] = dict,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, every: float = EVERY_S):
        self.root, self.keep_days, self.current, self.tell = Path(root), keep_days, current, tell
        self.clock, self.monotonic, self.every = clock, monotonic, every
        self.spare = spare
        self._seen: dict[str, float] = {}  # session id -> when last seen open or current, or closed here
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def once(self) -> list[str]:
        """One look: the ids of the sessions removed."""
        leftovers(self.root)
        now, wall, gone = self.monotonic(), self.clock(), []
        live = [*list_sessions(self.root, only_open=True), self.current()]
        for d in live:
            self._seen[d.name] = now
        for sid, when in dict(self.spare()).items():
            self._seen[sid] = max(self._seen.get(sid, -math.inf), when)
        if wall < SANE_AFTER:
            return gone
        # the sessions an open or the current session went on from (MAX_CELLS), when it counts a folder: a folder
        # watched again skips the images counted in them. A camera's chain is every session since the daemon started
        # (one roll-over every 5000 cells): kept, --keep-days removed nothing and the disk filled.
        kept = {sid for d in live if counts_a_folder(d) for sid in went_on_from(self.root, d)}
        for d in expired(self.root, self.keep_days, wall, keep=live[-1]):
            if d.name in kept:
                continue
            if now - self._seen.get(d.name, -math.inf) <= self.keep_days * DAY_S:
                continue  # closed while this process ran (or at its start): its stop time may be the wrong clock's
            if remove(d):
                gone.append(d.name)
                self.tell(f"session {d.name} removed: closed more than {self.keep_days:g} day"
                          f"{'' if self.keep_days == 1 else 's'} ago (--keep-days)")
        return gone

    def _run(self) -> None:
        while True:
            try:
                self.once()
            except OSError as e:  # the folder gone or unreadable for a while: try again at the next look
                self.tell(f"old sessions could not be looked at ({(e.strerror or str(e)).lower()}); "
                          f"trying again in {self.every / 60:.0f} min")
            if self._stop.wait(self.every):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scopelite-keep-days", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
