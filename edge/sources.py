"""Frame sources: where ``celledge watch`` gets RGB frames from.

Each source yields RGB uint8 frames from ``read()`` and returns None at the
end of the stream. ``open_source`` picks one from a user's SOURCE argument.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import re
import threading
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import cv2
import numpy as np

from ._quiet import native_stderr, verbose
from .errors import UserError
from .field import MAX_SIDE  # larger frames are refused

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm",
                  ".jp2", ".j2k")
# images of a kind not read: a folder's files of these kinds are named (a folder of GIFs read as "no images", and a
# mixed one lost them without a word)
OTHER_IMAGE_SUFFIXES = (".gif", ".heic", ".heif", ".avif", ".jxl", ".svg", ".dng", ".cr2", ".cr3", ".nef", ".arw",
                        ".raw", ".czi", ".nd2", ".vsi", ".svs", ".ndpi", ".mrxs", ".scn")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mjpeg", ".mjpg", ".h264")
MIN_SIDE = 16
# A stream that accepts the connection and never answers must not hold an open or a read for OpenCV's 30 s.
OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # we say what went wrong, in our words
if not verbose():  # FFmpeg's own lines ("[mjpeg @ 0x...] overread 8"), read when a first video is opened: ours instead
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


class SourceError(UserError, OSError):
    """A source cannot be opened or read."""


class FrameSource(Protocol):
    name: str

    def read(self) -> np.ndarray | None:
        """Next RGB uint8 frame, or None when the stream ended."""

    def close(self) -> None: ...


def utf8_name(name: str) -> bool:
    """Whether a file name is UTF-8 (Python keeps other bytes of a name read from the disk as lone surrogates,
    which OpenCV's own file readers crash on)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read any image OpenCV can decode as RGB uint8; raise SourceError if it cannot, or if it is larger than
    ``MAX_SIDE`` px a side (a slide scan's mosaic: seconds and gigabytes for one image on a Pi)."""
    if os.path.isdir(path):  # a folder named like an image (x.jpg/) among the images
        raise SourceError(f"{path} is a folder named like an image, not an image file")
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO named ff.png waited for a writer for ever
        raise SourceError(f"{path} is not a file (a pipe or a device): give image files")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:  # "[Errno 2] No such file or directory: ..." of a link to a file that is gone
        gone = os.path.islink(path) and not os.path.exists(path)
        raise SourceError(f"{path} cannot be read (" + ("a link to a file that is not there" if gone else
                          (e.strerror or str(e)).lower()) + ")") from None
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if img is None and data.size:  # a scientific camera's float TIFF: IMREAD_COLOR gives up on 32-bit samples
            img = _float_as_bgr8(cv2.imdecode(data, cv2.IMREAD_UNCHANGED))
    except cv2.error as e:  # OPENCV_IO_MAX_IMAGE_PIXELS: refused before decoding
        if "CV_IO_MAX_IMAGE_PIXELS" not in str(e):
            raise SourceError(f"cannot decode image {path} (not an image, or corrupt)") from None
        raise SourceError(f"{path} holds more than {MAX_SIDE}x{MAX_SIDE} px, larger than {MAX_SIDE} px a side: give "
                          "fields or crops as the camera takes them (a whole-slide mosaic: cut it into fields "
                          "first)") from None
    if img is not None and img.max() <= DARK_8BIT:  # a 10-16-bit camera's file: its 8 high bits are almost black
        deep = _deep_as_bgr8(cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH))
        img = img if deep is None else deep
    if img is None:
        if Path(path).suffix.lower() in VIDEO_SUFFIXES:  # it said "not an image, or corrupt" of a good film
            raise SourceError(f"{path} is a video, not an image: celledge watch {path} reads it frame by frame")
        raise SourceError(f"cannot decode image {path} (not an image, or corrupt)")
    check_frame_size(img, str(path), min_side=1, hint=": give fields or crops as the camera takes them (a "
                     "whole-slide mosaic: cut it into fields first)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


DARK_8BIT = 64  # up to this brightest level an 8-bit reading may be a 16-bit file of 10-14-bit counts
_DEPTHS = (8, 10, 12, 14, 16)  # what scientific cameras store in 16-bit PNG and TIFF


def _deep_as_bgr8(img: np.ndarray | None) -> np.ndarray | None:
    """A 16-bit BGR image as 8-bit BGR by the camera's bit depth (the fewest of 8, 10, 12, 14, 16 bits that hold its
    brightest count): 12-bit counts become 0-255, as the camera's own viewer shows them, not 0-15 as the high byte
    of 16 bits does. None unless it is 16-bit colour."""
    if img is None or img.dtype != np.uint16 or img.ndim != 3 or img.shape[2] != 3:
        return None
    bits = next(b for b in _DEPTHS if int(img.max()) < 2**b)
    return (img >> (bits - 8)).astype(np.uint8)


def _float_as_bgr8(img: np.ndarray | None) -> np.ndarray | None:
    """A float image (grey, BGR or BGRA) as 8-bit BGR: values up to 1 are read as 0-1, up to 255 as 0-255, larger
    ones scaled by their maximum; not-a-number as 0. None for anything else (then it is not an image we read)."""
    if img is None or img.dtype.kind != "f" or img.ndim not in (2, 3) or img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        return None
    img = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(img.max()) if img.size else 0.0
    gain = 255.0 if top <= 1.0 else 1.0 if top <= 255.0 else 255.0 / top
    out = np.clip(img * gain + 0.5, 0, 255).astype(np.uint8)
    if out.ndim == 2 or out.shape[2] == 1:
        return cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(out, cv2.COLOR_BGRA2BGR) if out.shape[2] == 4 else out


def pixels_digest(frame: np.ndarray) -> str | None:
    """A short digest of a frame's decoded pixels (and shape): one image saved twice under two names gives one
    digest, whatever the file format. None for a uniform frame (blank images are alike without being copies)."""
    if frame.size == 0 or frame.min() == frame.max():
        return None
    h = hashlib.blake2b(digest_size=12)
    h.update(str(frame.shape).encode())
    h.update(np.ascontiguousarray(frame).data)
    return h.hexdigest()


def check_frame_size(frame: np.ndarray, what: str, min_side: int = MIN_SIDE, hint: str = "") -> np.ndarray:
    """Refuse frames larger than ``MAX_SIDE`` px on a side, so no frame takes seconds (``hint``: what to do,
    appended), and smaller than ``min_side``, which hold no cell to find (SourceError)."""
    h, w = frame.shape[:2]
    if max(h, w) > MAX_SIDE:
        raise SourceError(f"{what} is {w}x{h} px, larger than {MAX_SIDE} px a side{hint}")
    if min(h, w) < min_side:
        raise SourceError(f"{what} is {w}x{h} px, smaller than {min_side} px a side: no cell to see")
    return frame


def number_order(path: Path) -> tuple:
    """A sort key that reads the numbers in a path as numbers: ``2.png`` before ``10.png``, as a file browser
    lists them (a scanner's tiles numbered without leading zeros)."""
    return tuple((0, int(part), part) if part.isdigit() else (1, 0, part)
                 for part in re.split(r"([0-9]+)", str(path)) if part)


def list_images(paths: Iterable[str | os.PathLike], unlisted: list[str] | None = None,
                other: list[Path] | None = None, numbered: bool = False) -> list[Path]:
    """Expand files and folders (sorted, recursive) into image paths. Hidden files and folders inside a folder are
    left out (macOS's ``._x.jpg`` resource forks, ``.thumbnails/``): not fields; a file given by name is kept.
    ``unlisted``: gets each folder inside that could not be listed (no permission), with why; ``other``: each
    image inside a folder of a kind not read (OTHER_IMAGE_SUFFIXES: GIF, HEIC, a slide scanner's files), left out.
    ``numbered``: a folder's images in number order (``number_order``), not name order."""
    def failed(e: OSError) -> None:  # a folder that cannot be listed (lost+found is root's own: no fields there)
        if unlisted is not None and Path(e.filename).name != "lost+found":
            unlisted.append(f"{e.filename} ({e.strerror.lower() if e.strerror else e})")

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():  # one walk; folders linked in are not entered (as Path.rglob did not)
            found = []
            for top, dirs, files in os.walk(p, onerror=failed):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                # a folder named like an image too (as rglob listed it): it is then said to be unreadable
                found += [Path(top) / f for f in files + dirs if not f.startswith(".") and Path(f).suffix.lower()
                          in IMAGE_SUFFIXES]
                if other is not None:
                    other += sorted(Path(top) / f for f in files if not f.startswith(".")
                                    and Path(f).suffix.lower() in OTHER_IMAGE_SUFFIXES)
            out.extend(sorted(found, key=number_order if numbered else None))
        else:
            out.append(p)
    return out


def holds_class_folders(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds two or more folders of images (not hidden): a class-folder dataset, a training set.
    Looks at its first 20 folders and their first 50 names (a class folder may hold thousands)."""
    try:
        subs = [d for d in Path(folder).iterdir() if d.is_dir() and not d.name.startswith(".")]
    except OSError:
        return False
    return sum(_some_images(d) for d in subs[:20]) >= 2


def _some_images(folder: Path) -> bool:
    try:
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in itertools.islice(folder.iterdir(), 50))
    except OSError:
        return False


def other_images_note(other: list[Path]) -> str:
    """What to say of a folder's images of a kind not read (``list_images``'s ``other``): how many, which kinds,
    and what to do."""
    kinds = sorted({p.suffix.lower() for p in other})
    return (f"{len(other)} image{'s' if len(other) > 1 else ''} of a kind not read ({', '.join(kinds)}: {other[0]}"
            f"{' ...' if len(other) > 1 else ''}) left out; convert them to PNG, JPEG or TIFF")


def images_given(given: Iterable[str | os.PathLike], warn: Callable[[str], None],
                 numbered: bool = False) -> list[Path]:
    """The images of the files and folders given on a command line or as a source (``list_images``): a
    SourceError when there are none, and ``warn`` names those of a kind not read and each folder inside that
    could not be listed (their images would otherwise be left out of the count without a word)."""
    given, unlisted, other = list(given), [], []
    paths = list_images(given, unlisted, other, numbered)
    names = ", ".join(map(str, given))
    unread = f" ({len(unlisted)} folder{'s' if len(unlisted) > 1 else ''} in it could not be read: " \
             f"{unlisted[0]}{' ...' if len(unlisted) > 1 else ''})" if unlisted else ""
    if not paths:
        raise SourceError(f"no images in {names}{unread}" + (f": {other_images_note(other)}" if other else
                                                             f" (the kinds read: {' '.join(IMAGE_SUFFIXES)})"))
    if other:
        warn(f"{names}: {other_images_note(other)}")
    if unread:
        warn(f"the images of {names} were read without those of some folders in it{unread}")
    return paths


# a camera: its index or /dev/videoN, in ASCII digits OpenCV's C int holds ('²' is a digit to str.isdigit, and
# 2147483648 or 20 digits overflowed in OpenCV: tracebacks); anything else is a file or stream name
_CAMERA = re.compile(r"(?:/dev/video)?([0-9]{1,6})")


_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^/]*@")  # to the last @ of the host part: p@ss


def shown(spec: str | None) -> str | None:
    """A source as it may be shown (terminal, JSON lines, /healthz, the lab page): a stream URL's password replaced
    by ``***`` (``rtsp://admin:***@cam/live``); anything else (None: no source given) as given."""
    return _PASSWORD.sub(r"\1:***@", spec) if isinstance(spec, str) else spec


class OpenCVSource:
    """A camera (``/dev/videoN`` or index), a video file, or a stream URL.

    A video file that ends before the frame count its header announces (cut short, a copy interrupted) is
    read as far as it goes, and ``warn`` says so once.
    """

    def __init__(self, spec: str, size: tuple[int, int] | None = None, loop: bool = False,
                 warn: Callable[[str], None] | None = None):
        self.name = shown(spec)  # a camera's password in its URL stays out of every line and page
        self._loop = loop and Path(spec).is_file()
        self._warn = warn or (lambda msg: None)
        self._read = 0
        m = _CAMERA.fullmatch(spec)
        target: int | str = int(m.group(1)) if m else spec
        if isinstance(target, str) and not utf8_name(target):
            raise SourceError(f"{spec!r}: the name is not valid UTF-8 (made on another system?) and OpenCV cannot "
                              "open it: rename the file")
        with native_stderr():  # a container parser's own complaint ("Unexpected element"): our Error line instead
            if isinstance(target, str):  # a file or a URL: bounded open and read, whatever the server does
                self._cap = cv2.VideoCapture(target, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                                                   cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS])
            else:
                self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            if Path(spec).is_file():
                raise SourceError(f"cannot read {spec} as a video (not a video file OpenCV can decode, or one cut "
                                  "short before its end was written, as an MP4 whose recording stopped; images: "
                                  f"{', '.join(IMAGE_SUFFIXES)})")
            raise SourceError(f"cannot open video source {self.name!r}: no such camera, file or stream")
        if size:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT) if Path(spec).is_file() else 0
        self._announced = int(count) if count and count > 0 else 0  # 0: not known (a camera, a stream)

    def read(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        if ok and frame is not None:
            self._read += 1
        elif self._announced and 0 < self._read < self._announced - 1:  # one frame of slack: headers round
            self._warn(f"{self.name} ended after {self._read} of the {self._announced} frames its header "
                       "announces: the file is cut short or damaged (the frames read were used)")
            self._announced = 0  # said once, looped or not
        if (not ok or frame is None) and self._loop:  # a video file replayed: rewind
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        check_frame_size(frame, f"a frame of {self.name} (ask a camera for smaller frames with --size)")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._cap.release()


class FolderSource:
    """A folder of images (or one image file) replayed in name order (``numbered``: in number order, 2.png before
    10.png, as a scan's tiles are read with --track), optionally looped.

    An image that cannot be read (corrupt, truncated, too large) is skipped, counted in
    ``unreadable`` and passed to ``warn``; the rest of the folder is still read.
    """

    def __init__(self, folder: str | os.PathLike, loop: bool = False,
                 warn: Callable[[str], None] | None = None, numbered: bool = False):
        self.name = str(folder)
        self._warn = warn or (lambda msg: None)
        self._paths = images_given([folder], self._warn, numbered)
        self._loop = loop
        self._i = 0
        self._good = 0  # frames read in this pass
        self._last_error = ""
        self.unreadable = 0
        self.path: Path | None = None  # the image file of the frame ``read`` returned last

    def read(self) -> np.ndarray | None:
        while True:
            if self._i >= len(self._paths):
                if not self._good:
                    if len(self._paths) == 1:
                        raise SourceError(self._last_error)
                    raise SourceError(f"none of the {len(self._paths)} images in {self.name} could be read "
                                      f"(the last: {self._last_error})")
                if not self._loop:
                    return None
                self._i = self._good = 0
            path = self._paths[self._i]
            self._i += 1
            try:
                frame = check_frame_size(read_image_rgb(path), str(path))
            except (SourceError, OSError, cv2.error) as e:
                self.unreadable += 1
                self._last_error = str(e)
                self._warn(f"skipped {path}: {e}")
                continue
            self._good += 1
            self.path = path
            return frame

    def close(self) -> None:
        pass


class FakeSource:
    """Frames from memory; raises SourceError after ``fail_after`` frames if set."""

    def __init__(self, frames: Sequence[np.ndarray], fail_after: int | None = None, name: str = "fake"):
        self.name = name
        self._frames = list(frames)
        self._fail_after = fail_after
        self._i = 0
        self.closed = False

    def read(self) -> np.ndarray | None:
        if self._fail_after is not None and self._i >= self._fail_after:
            raise SourceError("fake source failed")
        if self._i >= len(self._frames):
            return None
        self._i += 1
        return self._frames[self._i - 1]

    def close(self) -> None:
        self.closed = True


def is_still(spec: str | os.PathLike) -> bool:
    """A folder of images or one image file: still fields, each read once (no tracking between them)."""
    p = Path(spec)
    return p.is_dir() or (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def input_of(spec: str | os.PathLike) -> str:
    """What a run on a file or folder reads, as a session records it: the folder (an image's own folder), or the
    video file; resolved."""
    p = Path(spec).resolve()
    return str(p.parent if p.is_file() and is_still(p) else p)


def is_live(spec: str) -> bool:
    """A camera or a stream (reconnect when lost), as opposed to a file or folder (ends)."""
    return "://" in spec or bool(_CAMERA.fullmatch(spec)) or spec.startswith("/dev/video")


def open_unless_stopped(open_fn: Callable[[], FrameSource], stop: threading.Event, poll: float = 0.1) -> FrameSource:
    """``open_fn()``, but give up (SourceError) as soon as ``stop`` is set: a stream that never answers
    must not hold a shutdown for its whole open timeout. A source opened after that is closed."""
    box: dict = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["src"] = open_fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["err"] = e
        done.set()
        if stop.is_set() and "src" in box and not box.get("taken"):
            box["src"].close()

    threading.Thread(target=run, name="open", daemon=True).start()
    while not done.wait(poll):
        if stop.is_set():
            raise SourceError("stopped while the source was opening")
    if "err" in box:
        raise box["err"]
    box["taken"] = True
    return box["src"]


def open_source(spec: str, loop: bool = False, size: tuple[int, int] | None = None,
                warn: Callable[[str], None] | None = None, numbered: bool = False) -> FrameSource:
    """``/dev/video0``, ``0``, ``clip.mp4``, ``rtsp://...``, a folder of images or one image file (``warn``:
    skipped files; ``numbered``: a folder's images in number order, ``FolderSource``)."""
    p = Path(spec)
    if is_still(p):  # an image file too: read as one, not through a video decoder
        return FolderSource(p, loop=loop, warn=warn, numbered=numbered)
    if not (is_live(spec) or p.is_file()):
        what = "is not a video file, an image or a folder" if p.exists() else "not found"
        raise SourceError(f"source {shown(spec)!r} {what}: give a video file, an image folder, /dev/videoN or a URL")
    return OpenCVSource(spec, size=size, loop=loop, warn=warn)
