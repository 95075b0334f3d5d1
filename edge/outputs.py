"""Check an output before long work starts: can we write there, is there room?

Nothing is created: a folder that does not exist yet is judged by its nearest
existing parent, so a refused run leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import threading
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from .errors import UserError, warn

MIN_FREE_MB = 50
FULL_WARN_EVERY_S = 600.0  # a daemon's full disk is said again at most this often
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no room (or no quota) left: passes once files are removed


def _existing_parent(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(path: str | os.PathLike, option: str, is_dir: bool = True, min_free_mb: float = MIN_FREE_MB,
                   replaced: bool = False) -> float:
    """Raise UserError unless ``path`` (a folder, or a file with ``is_dir=False``) can be written; else return the
    room left on its disk, in MB.

    Args:
        path: the output folder or file; it need not exist yet.
        option: how the user named it (``--out``), for the message.
        min_free_mb: refuse if the disk has less free space than this.
        replaced: the file is written whole and renamed over ``path`` (``bundle.write_bytes_atomic``): a device
            or pipe there is refused (a line sink, appended to, may write to one).
    """
    path = Path(path)
    if path.exists() and path.is_dir() != is_dir:
        kind = "a folder" if is_dir else "a file"
        raise UserError(f"{option} {path} exists and is not {kind}")
    if not is_dir and replaced and path.exists() and not path.is_file():  # renamed over: a device would be lost
        raise UserError(f"{option} {path} is a device or pipe, not a file: the output is written to a file beside "
                        "it and renamed over it; give a file path")
    if not is_dir and path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path} is not writable; choose another path")
    base = _existing_parent(path if is_dir else path.parent)
    if not base.is_dir():
        raise UserError(f"{option} {path}: {base} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".scopelite-probe."):
            pass
    except OSError as e:
        why = (e.strerror or str(e)).lower()
        raise UserError(f"{option} {path} cannot be written ({why} at {base}); choose another path") from None
    free_mb = shutil.disk_usage(base).free / 2**20
    if free_mb < min_free_mb:
        raise UserError(f"{option} {path}: only {free_mb:.0f} MB free at {base} (need at least {min_free_mb:.0f} MB); "
                        "free some space or choose another disk")
    return free_mb


WORK_PREFIX = ".scopelite-"  # folder_in_place's hidden work folders (``.scopelite-partial-*``, ``.scopelite-old-*``)


def holdings(folder: str | os.PathLike) -> str:
    """What ``folder`` holds for a message, "a, b, c, ..." (hidden files left out: a file browser's .DS_Store in a
    folder made beforehand); "" when it holds nothing else or is not a folder."""
    p = Path(folder)
    held = sorted(e.name for e in p.iterdir() if not e.name.startswith(".")) if p.is_dir() else []
    return ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")


def entries(folder: Path) -> list[Path]:
    """What ``folder`` holds, less folder_in_place's work folders (a kill can leave one behind)."""
    return [e for e in folder.iterdir() if not e.name.startswith(WORK_PREFIX)]


@contextlib.contextmanager
def folder_in_place(dest: str | os.PathLike, owned: Callable[[Path], bool] = lambda entry: False) -> Iterator[Path]:
    """A hidden folder to fill; when the block ends, what it holds takes the place of what ``dest`` held, and when it
    fails (an error, Ctrl-C) it is removed and ``dest`` is left as it was: a command interrupted half-way never
    leaves a half-made folder that reads as a whole one.

    A new ``dest`` is the filled folder renamed. In an existing one (which may be a mount point, or the folder a
    user stands in) the work folder is made inside it, on its own disk; then, with Ctrl-C held off for the few
    renames, the entries ``owned`` says the command made before are set aside, the new ones moved in, and what was
    set aside removed. Entries it does not own stay (a user's notes); a new entry of the same name as one it does not
    own is refused (UserError) and nothing changes. Work folders left by a kill are removed first."""
    dest = Path(dest).absolute()
    dest = dest.parent.resolve() / dest.name if dest.name not in ("", ".", "..") else dest.resolve()
    if dest.is_symlink() and not dest.exists():
        raise UserError(f"{dest} is a link to nothing: give a folder")
    inside = dest.is_dir()
    if inside:
        for left in dest.glob(WORK_PREFIX + "*"):
            shutil.rmtree(left, ignore_errors=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
    where = dest if inside else dest.parent
    tmp = Path(tempfile.mkdtemp(dir=where, prefix=f"{WORK_PREFIX}partial-"))
    _umask_mode(tmp)
    try:
        yield tmp
        if not inside:
            os.rename(tmp, dest)
            return
        new = list(tmp.iterdir())
        mine = {e.name for e in entries(dest) if owned(e)}  # asked once
        clash = [e.name for e in new if (dest / e.name).exists() and e.name not in mine]
        if clash:
            raise UserError(f"{dest} holds {', '.join(sorted(clash)[:3])} of its own, which this would replace; "
                            "move it or give another folder")
        old = dest / f"{WORK_PREFIX}old-{os.getpid()}"
        with _no_interrupt():
            old.mkdir()
            for name in mine:
                os.rename(dest / name, old / name)
            for e in new:
                os.rename(e, dest / e.name)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _no_interrupt():
    """SIGINT and SIGTERM wait until the block ends (the main thread only; elsewhere the block runs as it is)."""
    import signal  # noqa: PLC0415

    held = {signal.SIGINT, signal.SIGTERM}
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, OSError, ValueError):
        before = None
    try:
        yield
    finally:
        if before is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _umask_mode(folder: Path) -> None:
    """mkdtemp makes 0700 folders; what ends up as the user's folder gets the mode mkdir would have given it."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make the names in ``folder`` (files created or renamed there) survive a power cut."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform that cannot open a folder (Windows): nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:  # a filesystem that cannot fsync a folder (EINVAL): its names are as safe as it makes them
        pass
    finally:
        os.close(fd)


class WriteError(UserError):
    """A file could not be opened or written: ``path`` and ``reason`` (the system's words) for whoever carries on
    without it (a session counting on while its disk fails), the whole line for the user."""

    def __init__(self, what: str, path: Path, err: OSError, after: str = ""):
        self.path, self.reason, self.errno = path, (err.strerror or str(err)).lower(), err.errno
        super().__init__(f"{what} ({self.reason})" + (f"; {after}" if after else ""))


PIPE_READER_WAIT_S = 10.0  # LineSink on a named pipe: how long a reader may take to start


class LineSink:
    """Append text lines to a file; a write that fails (disk full) leaves no half line behind.

    Raises UserError naming the file and the reason, so the run ends with one clear line.
    ``fsync=True``: each line is on disk when ``write`` returns (and the file's name when it is
    opened), so a power cut loses no line written before it; it costs a disk flush per line.
    Missing folders on the way are made at the start. A file renamed or removed under it (logrotate, a person)
    is followed: the next line starts a new file at the path, so a daemon's lines can be rotated.
    """

    def __init__(self, path: str | os.PathLike, option: str = "--out", fsync: bool = False,
                 while_full: bool = False):
        """``while_full``: a daemon's lines: while the disk is full (ENOSPC, EDQUOT) lines are dropped and counted
        (``dropped``), with one warning, and the count goes on; the first line written once there is room again is
        ``{"event": "lines_dropped", ...}``. Without it a full disk ends the run, as any other failed write."""
        self.path, self.option, self.fsync, self.while_full = Path(path), option, fsync, while_full
        self.dropped = 0  # lines dropped while the disk was full, over the run
        self._spell = 0  # ... in the current spell (0: none)
        self._warned_at: float | None = None  # when a spell was last said (time.monotonic)
        self._lock = threading.Lock()  # a camera's reconnect events are written from the capture thread
        self._fd, self._id = self._open(make_folders=True), None
        st = os.fstat(self._fd)
        if stat.S_ISREG(st.st_mode):  # a device or pipe (/dev/stdout) is never rotated
            self._id = (st.st_dev, st.st_ino)
            self._end_torn_line(st.st_size)

    def _end_torn_line(self, size: int) -> None:
        """A file whose last line was cut short (power lost, kill -9 mid-write) gets a newline first: the first line
        written was glued onto the torn one, and both were lost to a reader."""
        if not size:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                torn = f.read(1) != b"\n"
            if torn:
                os.write(self._fd, b"\n")
        except OSError:  # not readable (a write-only file): appended to as before
            pass

    def _open(self, make_folders: bool = False) -> int:
        try:
            if make_folders:  # at the start only: a folder moved away later is not made again
                self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_fifo():  # opening a pipe no one reads waited for ever, without a word
                fd = self._open_pipe()
            else:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise WriteError(f"{self.option} {self.path} cannot be opened", self.path, e) from None
        if self.fsync:
            fsync_dir(self.path.parent)
        return fd

    def _open_pipe(self, wait_s: float = PIPE_READER_WAIT_S) -> int:
        """A named pipe, once a program reads it (a reader started just after us is waited for ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                if time.monotonic() >= deadline:
                    raise UserError(f"{self.option} {self.path} is a named pipe that no program read within "
                                    f"{wait_s:g} s: start the reader first (e.g. cat < PIPE), or give a file") from None
                time.sleep(0.2)
                continue
            os.set_blocking(fd, True)
            return fd

    def _follow(self) -> None:
        """Open the path again if the file written to is no longer there (a stat per line: microseconds)."""
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != self._id
        except OSError:
            moved = True
        if moved:
            fd = self._open()
            os.close(self._fd)
            st = os.fstat(fd)
            self._fd, self._id = fd, (st.st_dev, st.st_ino)

    def write(self, line: str) -> None:
        with self._lock:
            self._write(line)

    def _write(self, line: str) -> None:
        if self._spell:  # room again? first say what is missing, where it is missing
            if not self._put(json.dumps({"event": "lines_dropped", "lines": self._spell, "reason": "disk full"})):
                self._full()
                return
            self._spell = 0
        if not self._put(line):
            self._full()

    def _put(self, line: str) -> bool:
        """Append one whole line; False when the disk is full and lines may be dropped (``while_full``)."""
        data = (line if line.endswith("\n") else line + "\n").encode()
        if self._id is not None:
            try:
                self._follow()
            except WriteError as e:  # the rotated file cannot be made again: no room (or no inodes) yet
                if self.while_full and e.errno in DISK_FULL:
                    return False  # the old descriptor stays; the next line tries again
                raise
        start = os.lseek(self._fd, 0, os.SEEK_END) if self._id is not None else None  # a pipe cannot seek
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if self.fsync:
                os.fsync(self._fd)
        except OSError as e:
            try:  # cut back to the last whole line
                if start is not None:
                    os.ftruncate(self._fd, start)
            except OSError:
                pass
            if self.while_full and e.errno in DISK_FULL:
                return False
            raise WriteError(f"stopped: cannot write {self.path}", self.path, e,
                             "every line before this one is complete") from None
        return True

    @property
    def full(self) -> bool:
        """Whether the last line was dropped (the disk still full)."""
        return self._spell > 0

    def _full(self) -> None:
        self.dropped += 1
        self._spell += 1
        # said once, and again only FULL_WARN_EVERY_S later: a disk hovering at full (other writers taking and
        # giving back a few bytes) made spells a second apart, each with its warning (4 in a minute, a walk-through)
        now = time.monotonic()
        if self._spell == 1 and (self._warned_at is None or now - self._warned_at >= FULL_WARN_EVERY_S):
            self._warned_at = now
            warn(f"{self.option} {self.path}: the disk is full; its lines are dropped (and counted) until there is "
                 "room again, and the count goes on: free some space (old sessions, saved frames, rotated logs)")

    def flush(self) -> None:  # unbuffered: nothing to do
        pass

    def close(self) -> None:
        with self._lock:
            try:
                os.close(self._fd)
            except OSError:
                pass
