"""Sessions: one differential per slide, kept in a folder with every cell it counted.

A session folder (``<sessions>/<id>/``, the id is its start time) holds

  state.json     open or closed, target, start and stop times, why it stopped, the video files it counted
                 cells from (``sources``: a run on one of them is refused), the models that classified
                 them (``models``: file, sha256s and how many cells came before each); rewritten atomically
  cells.jsonl    one line per counted cell, appended as it is counted: id, the model's label, best
                 class, score, mean score vector, frame number, frame and slide position, crop file;
                 and a {"revise": id, ...} line when the model revises a cell's label (its class over all
                 the frames its track was seen: ``watch.FieldCounter``), replayed in order on load
  reviews.jsonl  one line per label a person gave (appended; the last line for a cell wins)
  crops/<id>.png the crop the cell was classified from (at most CROP_MAX px a side)
  differential.json/.csv/.txt, cells.csv, report.html: the report, written atomically when the session
                 closes, when a closed session's cell is relabelled, and at the end of each run

Both logs are append-only, so a killed daemon loses at most the cell being written: on restart the
logs are replayed, a torn last line is cut off, and the open session goes on (``Sessions``). A power
cut loses no more: each crop is fsync'ed, renamed into place and its folder fsync'ed before its line is
written, each log line is fsync'ed before ``add``/``label`` return, and so is state.json. A person's
label is one of the model's classes, ``uncertain`` (cannot tell: listed for review, not in the
percentages) or ``not_a_cell`` (debris, a smudge: out of the count altogether).

Pure logic and file I/O: no HTTP, no threads of its own (``Sessions`` takes a lock, because the watch
loop and the HTTP handlers both call it).
"""
from __future__ import annotations

import collections
import fcntl
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from .bundle import same_model, write_bytes_atomic, write_json_atomic
from .diskspace import DiskRoom
from .differential import NOT_A_CELL, UNCERTAIN, Differential
from .errors import UserError
from .field import crop_at
from .outputs import LineSink, WriteError, fsync_dir
from .session_report import stain_tally

CROP_MAX = 256  # px: crops larger than this are shrunk before saving (the model sees 96)
VIEW_KEEP_FRAMES = 30  # a tracked cell's latest view is kept this many frames for its crop
# an open-ended session (no --count) closes at this many cells and the count goes on in a new one: a daemon counting
# all day into one session held every cell in memory (3 KB each: 36,000 cells a day filled the service's 512 MB in
# days, and a restart resumed it), and its report and /session grew with it (about 1 ms a cell to build, under the lock)
MAX_CELLS = 5000


class SessionError(UserError):
    """A request the session cannot honour; ``http`` is its HTTP status (404 unknown cell, 400 bad label,
    409 the session is not in the state the request needs)."""

    def __init__(self, message: str, http: int = 409):
        super().__init__(message)
        self.http = http


class ResumeError(UserError):
    """An open session already counted the video file a run is about to read again from its start."""

    def __init__(self, sid: str, source: str, target: int | None):
        until = f" before --count {target}" if target else ""
        super().__init__(f"session {sid} was left open by a run on {source} (it ended or was stopped{until}): "
                         f"reading it again from its start would count its cells twice. --new-session closes {sid} "
                         f"(its report stays) and counts it anew; to add more fields to {sid}, give another video, a "
                         "folder of images or a camera")
        self.session = sid


def read_jsonl(path: Path, damaged: list[str] | None = None,
               check: Callable[[dict], bool] | None = None) -> list[dict]:
    """The complete lines of an append-only log; a torn last line (a kill mid-write) is cut off the file.
    A complete line that is not JSON (a damaged disk, a hand edit), or that ``check`` refuses, is skipped and named
    in ``damaged``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(path, "r+b") as f:  # the next append must start on a line of its own
            f.truncate(len(whole))
    out = []
    for i, line in enumerate(whole.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict) and (check is None or check(rec)):
            out.append(rec)
        elif damaged is not None:
            damaged.append(f"{path.name} line {i}")
    return out


def read_state(folder: Path) -> dict:
    """A session's state.json (ValueError when it is not a JSON object with the keys of one, of their types)."""
    state = json.loads((folder / "state.json").read_text())
    if not isinstance(state, dict):
        raise ValueError(f"not a JSON object but {type(state).__name__}")
    wrong = [k for k, ok in _STATE_KEYS.items() if not ok(state.get(k))]
    wrong += [k for k, ok in _STATE_LISTS.items() if k in state and not ok(state[k])]
    wrong += [k for k in _STATE_TEXTS if state.get(k) is not None and not isinstance(state[k], str)]
    wrong += [k for k in ("stopped", "rbc_fraction") if state.get(k) is not None and not _number(state[k])]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} missing or of the wrong type")
    return state


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _strings(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# a session id names the files it exports (OUT/<class>/<id>_<cell>.png): a plain name, never "../x"
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_STATE_KEYS = {"id": lambda v: isinstance(v, str) and bool(_PLAIN_ID.fullmatch(v)) and ".." not in v,
               "state": lambda v: v in ("open", "closed"), "started": lambda v: v is None or _number(v),
               "labels": lambda v: _strings(v) and len(v) > 0, "min_score": _number,
               "target": lambda v: v is None or isinstance(v, int) and not isinstance(v, bool),
               "wbc_count": lambda v: v is None or _number(v)}
_STATE_TEXTS = ("started_at", "stopped_at", "reason")  # None or text, where present (the report prints them)
_STATE_LISTS = {"sources": _strings, "inputs": _strings, "models": lambda v: isinstance(v, list)
                and all(isinstance(m, dict) for m in v)}
_CROP_NAME = re.compile(r"crops/[0-9]+\.png")  # what ``add`` writes: nothing outside the session's crops/


def _good_cell_line(r: dict) -> bool:
    """A cells.jsonl line ``load`` can use: a counted cell (its id, classes, score, frame, and a crop in crops/ or
    none) or a revision of one; other lines are kept as they are."""
    if "id" in r:
        return (isinstance(r["id"], int) and not isinstance(r["id"], bool) and isinstance(r.get("label"), str)
                and isinstance(r.get("best"), str) and _number(r.get("score"))
                and all(r.get(k) is None or _number(r[k]) for k in ("frame", "frames"))
                and all(r.get(k) is None or isinstance(r[k], list) and len(r[k]) == 2 and all(map(_number, r[k]))
                        for k in ("center", "slide"))
                and (r.get("crop") is None or isinstance(r["crop"], str) and bool(_CROP_NAME.fullmatch(r["crop"])))
                and all(r.get(k) is None or isinstance(r[k], str) for k in ("reviewed", "file", "pixels"))
                and _scores(r.get("scores")))
    if "revise" in r:  # its score, scores and views replace the cell's: of the types a counted cell's are
        return (isinstance(r["revise"], int) and isinstance(r.get("label"), str)
                and (r.get("best") is None or isinstance(r["best"], str))
                and all(r.get(k) is None or _number(r[k]) for k in ("score", "frame", "frames"))
                and _scores(r.get("scores")))
    return True


def _scores(v) -> bool:
    return v is None or isinstance(v, list) and all(map(_number, v))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _png(crop: np.ndarray) -> bytes:
    side = max(crop.shape[:2])
    if side > CROP_MAX:
        f = CROP_MAX / side
        crop = cv2.resize(crop, (max(round(crop.shape[1] * f), 1), max(round(crop.shape[0] * f), 1)),
                          interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    if not ok:
        raise SessionError("cannot encode a cell's crop as PNG", 500)
    return buf.tobytes()


class Session:
    """One session folder: its state, its cells (with people's labels) and its report."""

    def __init__(self, folder: Path, state: dict, cells: list[dict]):
        self.folder, self.state, self.cells = folder, state, cells
        self.by_id = {c["id"]: c for c in cells}
        self.damaged: list[str] = []  # lines of its logs that could not be read (``load``)
        self._log: LineSink | None = None
        self._reviews: LineSink | None = None
        self._thumbs: dict[int, str | None] = {}
        self._lockfd: int | None = None
        self.version = 0  # bumped by every change of its count (cells, revisions, labels, closing)
        # cells per label as they stand (people's over the model's), kept up to date as cells are added, revised
        # and labelled: each frame's line reads the count from it, not from every cell of a session open for weeks
        self._tally: collections.Counter | None = None  # made at first use (``load`` changes cells before)
        self._uncertain: set[int] = set()  # ... with the ids of the cells uncertain as they stand
        self._reviewed = 0  # ... and how many cells people labelled
        self._next_id: int | None = None

    @property
    def id(self) -> str:
        return self.state["id"]

    @property
    def is_open(self) -> bool:
        return self.state["state"] == "open"

    @classmethod
    def create(cls, root: Path, labels, target: int | None, min_score: float, wbc_count: float | None,
               clock: Callable[[], float] = time.time, rbc_fraction: float | None = None,
               seq: int | None = None, continues: str | None = None) -> "Session":
        """A new open session folder under ``root``; ``seq``: its place there (None: after every session in it);
        ``continues``: the session it goes on from (one that closed at MAX_CELLS)."""
        t = clock()
        # the start time, then 6 random hex digits: two devices' sessions started in one second do not
        # share an id (their cells export into one folder by id)
        base = time.strftime("%Y%m%d-%H%M%S", time.localtime(t)) + "-" + os.urandom(3).hex()
        sid, n = base, 1
        while (root / sid).exists():
            n += 1
            sid = f"{base}-{n}"
        folder, seq = root / sid, _next_seq(root) if seq is None else seq
        (folder / "crops").mkdir(parents=True)
        state = {"id": sid, "seq": seq, "state": "open", "target": target, "labels": list(labels),
                 "min_score": min_score, "wbc_count": wbc_count, "started": t, "started_at": _now(),
                 "stopped": None, "stopped_at": None,
                 "reason": None, "rbc_fraction": rbc_fraction, **({"continues": continues} if continues else {})}
        write_json_atomic(folder / "state.json", state, fsync="full")
        fsync_dir(root)  # the session folder's own name
        return cls(folder, state, [])

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Session":
        """Replay a session folder: cells.jsonl, then reviews.jsonl (a torn last line of either is dropped)."""
        folder = Path(folder)
        try:
            state = read_state(folder)
        except (OSError, ValueError) as e:
            raise SessionError(f"{folder} is not a session folder (no readable state.json: {e})", 404) from None
        damaged: list[str] = []
        lines = read_jsonl(folder / "cells.jsonl", damaged, _good_cell_line)
        s = cls(folder, state, [{"reviewed": None, **c} for c in lines if "id" in c])
        for r in lines:  # the model's revisions, in order (``revise``)
            cell = s.by_id.get(r.get("revise")) if "id" not in r else None
            if cell is not None:
                _apply_revision(cell, r)
        allowed = {*state["labels"], UNCERTAIN, NOT_A_CELL}
        for r in read_jsonl(folder / "reviews.jsonl", damaged,
                            lambda r: isinstance(r.get("id"), int) and r.get("label") in allowed):
            cell = s.by_id.get(r.get("id"))
            if cell is not None:
                cell["reviewed"] = r.get("label")
        s.damaged = damaged
        return s

    # ---------------------------------------------------------------- cells
    def add(self, cell: dict, crop: np.ndarray | None) -> dict:
        """Record one counted cell (its crop first, then its line: a kill between leaves no line)."""
        if self._next_id is None:
            self._next_id = max(self.by_id, default=0) + 1
        cid = self._next_id
        rec = {"id": cid, **cell, "crop": None, "reviewed": None, "time": round(time.time(), 3)}
        if crop is not None and crop.size:
            name = f"crops/{cid}.png"
            write_bytes_atomic(self.folder / name, _png(crop), fsync="full")  # on disk before its line
            rec["crop"] = name
        self._cells_log().write(json.dumps(rec))
        self._counts()
        self.cells.append(rec)
        self.by_id[cid] = rec
        self._next_id = cid + 1
        self._moved(rec, None)
        self.version += 1
        return rec

    def revise(self, cell_id: int, revision: dict, frame_index: int) -> dict:
        """The model's new label for a counted cell (``FieldCounter``'s ``revised``: its class over every view of
        its track): a ``{"revise": id, ...}`` line in cells.jsonl, replayed by ``load``. A person's label still
        wins (``effective_label``)."""
        cell = self.by_id[cell_id]
        line = {"revise": cell_id, "label": revision["to"], "was": cell["label"], "best": revision["best"],
                "score": revision["score"], "scores": revision.get("scores"), "frames": revision.get("frames"),
                "frame": frame_index, "time": round(time.time(), 3), "why": revision.get("why")}
        self._cells_log().write(json.dumps(line))
        self._counts()
        was = effective_label(cell)
        _apply_revision(cell, line)
        self._moved(cell, was)
        self.version += 1
        return cell

    def _cells_log(self) -> LineSink:
        """cells.jsonl, opened on the first line written to it (counted cells and revisions)."""
        if self._log is None:
            self._log = LineSink(self.folder / "cells.jsonl", "--sessions", fsync=True)
        return self._log

    def label(self, cell_id: int, label: str) -> dict:
        """A person's label for a cell: one of the model's classes, uncertain, not_a_cell, or "confirm"
        (the label the cell has now is right)."""
        cell = self.by_id.get(cell_id)
        if cell is None:
            raise SessionError(f"no cell {cell_id} in session {self.id}", 404)
        if label == "confirm":
            label = effective_label(cell)
        allowed = [*self.state["labels"], UNCERTAIN, NOT_A_CELL]
        if label not in allowed:
            raise SessionError(f"label {label!r} is not one of {', '.join(allowed)} (or confirm)", 400)
        if self._reviews is None:
            self._reviews = LineSink(self.folder / "reviews.jsonl", "--sessions", fsync=True)
        self._counts()
        was, first_label = effective_label(cell), cell["reviewed"] is None
        self._reviews.write(json.dumps({"id": cell_id, "label": label, "was": was, "time": round(time.time(), 3)}))
        cell["reviewed"] = label
        self._reviewed += first_label
        self._moved(cell, was)
        self.version += 1
        if not self.is_open:
            self.write_reports()
        return cell

    # ---------------------------------------------------------------- count and report
    def differential(self) -> Differential:
        """The count from the cells as they stand: people's labels over the model's (from the running tally, and
        the uncertain cells, in the order counted, for review)."""
        d = self._counted()
        for cid in sorted(self._uncertain):
            c = self.by_id[cid]
            d.review.append({"ref": {"id": cid}, "best": c["best"], "score": c["score"],
                             "reviewed": c["reviewed"] is not None})
        return d

    def _counted(self) -> Differential:
        """The count from the running tally, without the review list."""
        d = self._no_cells()
        for label, n in self._counts().items():
            if n and label not in (NOT_A_CELL, UNCERTAIN):
                d.counts[label] = d.counts.get(label, 0) + n
        return d

    def _no_cells(self) -> Differential:
        """An empty count with the session's classes, target, threshold and white count."""
        st = self.state
        return Differential(st["labels"], target=st["target"], min_score=st["min_score"], wbc_count=st["wbc_count"])

    def _counts(self) -> collections.Counter:
        """The running tally (made from every cell at first use, with the uncertain ids and the reviewed count)."""
        if self._tally is None:
            self._tally = collections.Counter(effective_label(c) for c in self.cells)
            self._uncertain = {c["id"] for c in self.cells if effective_label(c) == UNCERTAIN}
            self._reviewed = sum(c["reviewed"] is not None for c in self.cells)
        return self._tally

    def _moved(self, cell: dict, was: str | None) -> None:
        """Keep the tally and the uncertain ids in step: ``cell`` now stands as its effective label, and stood as
        ``was`` (None: a new cell)."""
        tally, now = self._counts(), effective_label(cell)
        if was is not None:
            tally[was] -= 1
            if was == UNCERTAIN:
                self._uncertain.discard(cell["id"])
        tally[now] += 1
        if now == UNCERTAIN:
            self._uncertain.add(cell["id"])

    def brief(self) -> dict:
        """``differential().brief()`` from the running tally: the same, in time that does not grow with the
        cells counted (worked out from every cell, it took 10 ms a change at 20,000 cells)."""
        return {**self._counted().brief(), "uncertain": {"count": self._counts()[UNCERTAIN]}}

    def summary(self, cells: bool = True) -> dict:
        """JSON-able: the state, the differential, review progress and (``cells``) every cell. Without ``cells``
        (the lab page every 2 s, /metrics, the controls' answers) the differential is ``brief()``'s: the uncertain
        cells' count without their review list, in time that does not grow with the cells counted."""
        tally = self._counts()
        out = {**self.state, "folder": str(self.folder),
               "differential": self.differential().summary() if cells else self.brief(),
               "cells_total": len(self.cells), "reviewed": self._reviewed, "not_cells": tally[NOT_A_CELL]}
        if cells:
            out["cells"] = [{**c, "final": effective_label(c)} for c in self.cells]
        return out

    def lock(self) -> bool:
        """Take this session folder for this process (an exclusive ``flock`` on ``.lock``, held until ``unlock``
        or the process ends): False when another process (a watch counting into it, a review) holds it."""
        if self._lockfd is None:
            try:
                fd = take_lock(self.folder)
            except OSError as e:
                raise UserError(f"session folder {self.folder} cannot be written ({(e.strerror or str(e)).lower()}): "
                                "labels and counts could not be kept") from None
            if fd is None:
                return False
            self._lockfd = fd
        return True

    def unlock(self) -> None:
        if self._lockfd is not None:
            os.close(self._lockfd)  # closing the descriptor releases the flock
            self._lockfd = None

    def read_from(self, source: str | None, given: str | None = None) -> None:
        """Record that a run counted cells from ``source`` (a video file read from its start; None: a camera or a
        folder) and what it was given (``given``: the folder, image's folder, video or camera, in ``inputs``)
        into this session; state.json is written only when either is new here."""
        new = source is not None and source not in self.state.setdefault("sources", [])
        if new:
            self.state["sources"].append(source)
        if given is not None and "inputs" not in self.state:  # the first run to record: earlier runs' folders too
            self.state["inputs"], new = self.counted_from(), True
        if given is not None and given not in self.state.setdefault("inputs", []):
            self.state["inputs"].append(given)
            new = True
        if new:
            write_json_atomic(self.folder / "state.json", self.state, fsync="full")

    def counted_from(self) -> list[str]:
        """What runs counted this session's cells from: ``inputs`` (folders, videos, cameras) and the videos in
        ``sources``; for a session from before inputs were recorded, its cells' images' folders."""
        seen = list(self.state.get("inputs", [])) + [s for s in self.state.get("sources", [])
                                                     if s not in self.state.get("inputs", [])]
        if self.state.get("inputs"):  # recorded: a folder of links counts images that lie elsewhere (by their path)
            return seen
        for c in self.cells:
            parent = str(Path(c["file"]).parent) if c.get("file") else None
            if parent and not any(parent == s or Path(parent).is_relative_to(s) for s in seen):
                seen.append(parent)
        return seen

    def elsewhere(self, given: str) -> str | None:
        """What this session counted its cells from, when ``given`` (a folder, an image's folder or a video,
        ``sources.input_of``) is none of them nor inside one (a subfolder or an image of a folder counted); None
        when it is, or it has no cells yet. A folder holding one it counted is elsewhere: its other folders may
        be other slides."""
        before = self.counted_from() if self.cells else []
        here = Path(given)
        if not before or any(here == Path(b) or here.is_relative_to(b) for b in before):
            return None
        return ", ".join(before[:2]) + (f" and {len(before) - 2} more" if len(before) > 2 else "")

    def record_model(self, model: dict) -> dict | None:
        """Record in ``models`` (state.json) that the cells from now on are classified by ``model``
        (``bundle.model_record``), unless it is the model already recorded (``bundle.same_model``: an Edge TPU
        build of it too). Returns the model it replaces when cells were counted with that one (its differential
        now mixes two models), else None. ``cells_before``: how many cells the session held when it took over."""
        models = self.state.setdefault("models", [])
        if models and same_model(models[-1], model):
            return None
        before = models[-1] if models else None
        models.append({**model, "cells_before": len(self.cells)})
        self.version += 1
        write_json_atomic(self.folder / "state.json", self.state, fsync="full")
        return before if before is not None and self.cells else None

    def retarget(self, target: int | None) -> None:
        """Count to ``target`` white cells from now on (a resumed session given another ``--count``)."""
        self.state["target"] = target
        self.version += 1
        write_json_atomic(self.folder / "state.json", self.state, fsync="full")

    def close(self, reason: str, clock: Callable[[], float] = time.time) -> None:
        self.state.update(state="closed", stopped=clock(), stopped_at=_now(), reason=reason)
        self.version += 1
        write_json_atomic(self.folder / "state.json", self.state, fsync="full")
        self.write_reports()
        self.release_files()

    def release_files(self) -> None:
        """Close its log files (opened again at the next line): a closed session labelled on the review page
        opens reviews.jsonl again, and a daemon that started a session per slide kept one file open for each."""
        for sink in (self._log, self._reviews):
            if sink is not None:
                sink.close()
        self._log = self._reviews = None

    def write_reports(self) -> None:
        """differential.json/.csv/.txt, cells.csv and report.html, each atomically."""
        from . import session_report  # noqa: PLC0415 - HTML only when a report is written

        d = self.differential()
        summary = self.summary()
        write_json_atomic(self.folder / "differential.json", {"session": {k: v for k, v in summary.items()
                                                                          if k != "differential"},
                                                             "differential": summary["differential"]})
        as_bytes = session_report.as_bytes
        write_bytes_atomic(self.folder / "differential.csv", as_bytes(d.to_csv()))
        write_bytes_atomic(self.folder / "differential.txt", as_bytes(d.to_text()))
        write_bytes_atomic(self.folder / "cells.csv", as_bytes(session_report.cells_csv(summary)))
        write_bytes_atomic(self.folder / "report.html", as_bytes(session_report.report_html(summary, self.thumbnail)))

    def thumbnail(self, cell_id: int) -> str | None:
        """The cell's crop as a small data: URI for the report's gallery (made once per cell)."""
        from . import session_report  # noqa: PLC0415

        if cell_id not in self._thumbs:
            png = self.crop_bytes(cell_id)
            self._thumbs[cell_id] = None if png is None else session_report.thumbnail_uri(png)
        return self._thumbs[cell_id]

    def crop_bytes(self, cell_id: int) -> bytes | None:
        cell = self.by_id.get(cell_id)
        if cell is None or not cell.get("crop"):
            return None
        try:
            return (self.folder / cell["crop"]).read_bytes()
        except OSError:
            return None


def _apply_revision(cell: dict, line: dict) -> None:
    """A ``revise`` line on its cell: the model's label, best, score, scores, views; ``revised``: what it was
    counted as first, and in which frame it was last revised."""
    first = (cell.get("revised") or {}).get("from", cell["label"])
    cell.update({k: line[k] for k in ("label", "best", "score", "scores", "frames") if line.get(k) is not None})
    cell["revised"] = {"from": first, "frame": line.get("frame")}
    if "why" in line:  # the revision's own reason (platelet-sized) replaces the count's; lines before it had none
        if line["why"]:
            cell["why"] = line["why"]
        else:
            cell.pop("why", None)


def effective_label(cell: dict) -> str:
    """A person's label when there is one, else the model's."""
    return cell["reviewed"] if cell.get("reviewed") is not None else cell["label"]


def take_lock(folder: Path) -> int | None:
    """An exclusive ``flock`` on ``folder/.lock`` (its descriptor: closing it lets go), or None when another process
    holds it (OSError when the file cannot be opened)."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def went_on_from(root: Path, folder: Path) -> list[str]:
    """The ids of the sessions ``folder``'s session went on from (state ``continues``: each one closed at MAX_CELLS),
    newest first, back to the first or to one that cannot be read."""
    out: list[str] = []
    try:
        before = read_state(folder).get("continues")
    except (OSError, ValueError):
        return out
    while isinstance(before, str) and before not in out and "/" not in before and not before.startswith("."):
        out.append(before)
        try:
            before = read_state(root / before).get("continues")
        except (OSError, ValueError):
            break
    return out


def list_sessions(root: str | os.PathLike, only_open: bool = False, damaged: list[Path] | None = None) -> list[Path]:
    """The session folders under ``root`` (``only_open``: those still open), oldest first. A folder whose
    state.json is there but cannot be read (a damaged disk, a hand edit) is left out and named in ``damaged``."""
    root = Path(root)
    found = []
    for d in root.iterdir() if root.is_dir() else ():
        if d.name.startswith("."):  # a session being removed (--keep-days: retention.HIDDEN)
            continue
        try:
            state = read_state(d)
        except (OSError, ValueError):
            if damaged is not None and (d / "state.json").is_file():
                damaged.append(d)
            continue
        if not only_open or state.get("state") == "open":
            found.append((_seq(state), state.get("started") or 0, d.name, d))
    return [d for *_, d in sorted(found)]


def _seq(state: dict) -> int:
    """A session's place in its folder (``state["seq"]``, counted up at each start; 0 for sessions from before it
    was recorded): the order they were started in, even when the clock stepped back between them (a Pi without
    a clock battery after a power cut, before it finds a time server)."""
    seq = state.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def _next_seq(root: Path) -> int:
    seqs = []
    for d in root.iterdir() if root.is_dir() else ():
        if d.name.startswith("."):
            continue
        try:
            seqs.append(_seq(read_state(d)))
        except (OSError, ValueError):
            continue
    return max(seqs, default=0) + 1


class Sessions:
    """The sessions folder of a running daemon: the current session, start/stop/reset, the watch hook.

    On start-up the last session left open is resumed (``new=True``: closed, its report written, and a
    new one started); with none open, a new one starts. The current session is the open one, or the
    last closed one (so that it can still be reviewed).

    Args:
        root: the sessions folder (created if needed).
        labels: the model's class names, in score order.
        target: white cells a new session counts before it closes (None: until stopped).
        one_shot: the run ends when a session reaches its target (no HTTP page to start the next one).
        rbc_fraction: the scale the crops are cut at: a red cell's diameter over the crop's side (the
            model's ``rbc_px`` over its input size); recorded in each new session's state, so that
            ``celledge export`` can tell ``celltrain fit`` the scale of the cells it exports.
        source: a video file the run reads from its start (None: a camera or stream, which shows new fields,
            or a folder of images, whose images are told apart by ``file``: ``counted``). Recorded in the
            session's ``sources`` at the first cell counted from it; an open session that counted from it already
            is not resumed on it (its cells would be counted twice): ``ResumeError``.
        hold: take each session folder this run counts into (``Session.lock``): a second process on it
            (``celledge review``, another watch) is refused, and this one is refused while another holds it.
        given: what the run reads (a folder, an image's folder or a video, resolved; a camera as given), recorded in
            the session's ``inputs`` at the first cell counted from it (``Session.counted_from``).
    """

    def __init__(self, root: str | os.PathLike, labels, target: int | None = None, min_score: float = 0.5,
                 wbc_count: float | None = None, new: bool = False, one_shot: bool = False,
                 clock: Callable[[], float] = time.time, rbc_fraction: float | None = None,
                 source: str | None = None, hold: bool = False, given: str | None = None):
        self._setup(Path(root), labels, target, min_score, wbc_count, rbc_fraction, source, hold, one_shot, clock)
        self.given = given
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--sessions {root} cannot be created ({(e.strerror or str(e)).lower()})") from None
        open_ones = [Session.load(d) for d in list_sessions(self.root, only_open=True, damaged=self.damaged)]
        for s in open_ones[:-1]:  # more than one open (should not happen): all but the last are closed
            self._close(s, "closed at restart (another session was open)")
        last = open_ones[-1] if open_ones else None
        if last is not None and hold and not last.lock():
            raise UserError(f"session {last.id} in {self.root} is in use by another celledge (a celledge review, or a "
                            "watch counting into it): stop that one first")
        if last is not None and new:
            self._close(last, "closed at restart (--new-session)")
            self.closed_at_start = last
        elif last is not None and last.differential().done:  # killed between its last cell and closing
            self._close(last, "count reached")
            self.closed_at_start = last
        elif last is not None:
            if source is not None and source in last.state.get("sources", []):
                last.unlock()
                raise ResumeError(last.id, source, last.state.get("target"))
            self.resumed = last.id
        if last is not None and not self.resumed:
            last.unlock()
        self.current: Session = last if self.resumed else self._new(target)
        # images counted into the session (and, for a folder, into those it went on from at MAX_CELLS: a camera's
        # cells name no image, and reading every session of a long chain slowed each start), by name and by content
        chain = [self.current]
        if given is not None and Path(str(given)).is_dir():
            for sid in went_on_from(self.root, self.current.folder):
                try:
                    chain.append(Session.load(self.root / sid))
                except (UserError, OSError, ValueError):
                    break
        self._files = {c["file"] for s in chain for c in s.cells if c.get("file")}
        self._pixels = {c["pixels"] for s in chain for c in s.cells if c.get("pixels")}

    def _setup(self, root: Path, labels, target: int | None, min_score: float, wbc_count: float | None,
               rbc_fraction: float | None, source: str | None, hold: bool, one_shot: bool = False,
               clock: Callable[[], float] = time.time, review_only: bool = False) -> None:
        """Every attribute but ``current``, ``_files`` and ``_pixels`` (``__init__`` and ``reviewing`` set those)."""
        self.root, self.source, self.hold, self.review_only = root, source, hold, review_only
        self.given: str | None = None  # what this run reads (Session.read_from's ``given``)
        self.rbc_fraction = rbc_fraction
        self.labels, self.target, self.min_score, self.wbc_count = list(labels), target, min_score, wbc_count
        self.one_shot, self.clock = one_shot, clock
        self.ends_run = False
        self.model: dict | None = None  # what classifies the cells (use_model): recorded in each session's state
        self.resumed: str | None = None
        self.closed_at_start: Session | None = None  # the open session this start closed (--new-session, done)
        self.damaged: list[Path] = []  # sessions whose state.json cannot be read: left alone; the caller says so
        self._lock = threading.RLock()
        # told of what people do on the lab page (start, stop, reset): the daemon's journal says it
        self.on_change: Callable[[str], None] | None = None
        self.on_note: Callable[[str], None] | None = None  # told of what the daemon did by itself (a session rolled over)
        # room left on the sessions' disk (looked at every 30 s while counting); told to on_disk when it runs low,
        # runs out (cells are then counted without their pictures) and has room again
        self.disk = DiskRoom(root)
        self.on_disk: Callable[[str], None] | None = None
        self.pictures_not_kept = 0  # cells counted in this run without their picture: the disk was full
        self.not_recorded = 0  # cells counted in this run that could not be recorded: the session's disk failed
        self.closed_here: dict[str, float] = {}  # sessions this process closed -> when (monotonic)
        self.write_error: str | None = None  # why the session cannot be written now (None: it can)
        # track id -> (crop, frame, centre, scale, image file)
        self._views: dict[int, tuple[np.ndarray, int, list, float | None, str | None]] = {}
        self._cell_of_track: dict[int, int] = {}  # this run's tracks counted in the current session -> cell id
        self._brief: tuple[tuple[str, int], dict] | None = None  # (session id, version) -> brief()
        self._last_seq: int | None = None  # the last session's place in the folder (``seq``), read at the first new one

    @classmethod
    def reviewing(cls, root: str | os.PathLike, sid: str | None = None) -> "Sessions":
        """One session of a sessions folder served for review only (``celledge review``): no camera and no
        model, so Start and Reset are refused (POST /session/stop closes an open session). ``root`` is a
        sessions folder (the session ``sid``, else the latest started) or one session's folder. UserError: no
        such session, or another process holds it (``Session.lock``)."""
        root = Path(root)
        damaged: list[Path] = []
        if (root / "state.json").is_file():
            folder = root
        else:
            found = list_sessions(root, damaged=damaged)
            if sid is not None:
                folder = next((d for d in found if d.name == sid), None)
                if folder is None:
                    have = ", ".join(d.name for d in found[-5:]) or "none"
                    raise UserError(f"no session {sid} in {root} (the latest: {have})")
            elif not found:
                bad = f" ({len(damaged)} whose state.json cannot be read)" if damaged else ""
                inside = next((d for d in root.resolve().parents if (d / "state.json").is_file()), None)
                if inside is not None:  # a session's crops/: "--sessions .../crops makes them" misled
                    raise UserError(f"{root} is inside session {inside.name}'s folder: give that folder, or the "
                                    f"sessions folder that holds it (celledge review {inside.parent})")
                raise UserError(f"{root} holds no session (celledge watch ... --sessions {root} makes them){bad}")
            else:
                folder = found[-1]
        if sid is not None and folder.name != sid:
            raise UserError(f"{root} is the session {folder.name}, not {sid}")
        current = Session.load(folder)
        if not current.lock():
            raise UserError(f"session {current.id} is in use by a running celledge watch (or another celledge review): "
                            "review it on that daemon's /review page (watch --http), or stop it first")
        self = cls.__new__(cls)  # no sessions folder to open or create: only the attributes, then this one
        st = current.state
        self._setup(folder.parent, st["labels"], st.get("target"), st.get("min_score", 0.5), st.get("wbc_count"),
                    st.get("rbc_fraction"), source=None, hold=True, review_only=True)
        self.current = current
        self._files, self._pixels = set(), set()
        self.damaged = damaged  # sessions passed over: state.json unreadable (the caller says so)
        return self

    def counted_before(self) -> "Session | None":
        """The session before the current one when it counted cells from what this run reads (``given``): a
        second count of that slide; None otherwise (or unreadable)."""
        earlier = [d for d in list_sessions(self.root) if d != self.current.folder]
        if not earlier or self.given is None:
            return None
        try:
            last = Session.load(earlier[-1])
        except SessionError:
            return None
        return last if last.cells and last.elsewhere(self.given) is None else None

    def _refuse_in_review(self, what: str) -> None:
        if self.review_only:
            raise SessionError(f"celledge review serves session {self.current.id} for review only: {what} needs "
                               "celledge watch (a camera and a model)")

    def _new(self, target: int | None, continues: str | None = None) -> Session:
        """A new session (held by this process with ``hold``; the one before is let go)."""
        self._last_seq = _next_seq(self.root) if self._last_seq is None else self._last_seq + 1  # read once
        s = Session.create(self.root, self.labels, target, self.min_score, self.wbc_count, self.clock,
                           self.rbc_fraction, seq=self._last_seq, continues=continues)
        if self.model:
            s.record_model(self.model)
        before = getattr(self, "current", None)
        if before is not None:
            before.release_files()
        if self.hold:
            s.lock()
            if before is not None:
                before.unlock()
        self._files, self._pixels = set(), set()
        return s

    def use_model(self, model: dict | None) -> dict | None:
        """The model that classifies the cells from now on (``bundle.model_record``; at start and at each reload),
        recorded in the open session's state (``Session.record_model``, whose answer this returns)."""
        with self._lock:
            self.model = model
            return self.current.record_model(model) if model and self.current.is_open else None

    def counted(self, file: str | None, pixels: str | None = None) -> bool:
        """Whether the open session already counted cells from this image file (a folder run again after it
        stopped part-way, or an image of a folder counted before) or from an image of the same pixels (a copy
        under another name, ``sources.pixels_digest``): its frame is skipped, not counted twice."""
        with self._lock:
            return self.current.is_open and (file is not None and file in self._files
                                             or pixels is not None and pixels in self._pixels)

    def release(self) -> None:
        """The run is over: let go of the session folder (``hold``)."""
        with self._lock:
            self.current.unlock()

    # ---------------------------------------------------------------- controls (lab page, HTTP)
    def start(self, target: int | None = None) -> dict:
        with self._lock:
            self._refuse_in_review("a new session")
            if self.current.is_open:
                raise SessionError(f"session {self.current.id} is open: stop it first")
            self.current = self._new(self.target if target is None else target)
            self._views.clear()
            self._cell_of_track.clear()
            self._tell(f"session {self.current.id} started (target: {self.current.state['target'] or 'none'})")
            return self._answer()

    def stop(self) -> dict:
        with self._lock:
            if not self.current.is_open:
                raise SessionError(f"session {self.current.id} is already closed")
            self._close(self.current, "stopped")
            self._tell(f"session {self.current.id} stopped: report {self.current.folder / 'report.html'}")
            return self._answer()

    def reset(self) -> dict:
        """Discard the count and start again on the same slide: the session is closed as "reset" (its folder
        stays) and a new one starts with the same target."""
        with self._lock:
            self._refuse_in_review("Reset (a new count)")
            old = self.current
            if old.is_open:
                self._close(old, "reset")
            self.current = self._new(old.state["target"])
            self._views.clear()
            self._cell_of_track.clear()
            n = len(old.cells)
            self._tell(f"session {old.id} reset ({n} cell{'' if n == 1 else 's'} set aside, its folder kept): "
                       f"session {self.current.id} started")
            return self._answer()

    def _close(self, session: Session, reason: str) -> None:
        """Close a session and remember when this process did (``closed_here``: --keep-days keeps it a while
        whatever the clock wrote)."""
        self.closed_here[session.id] = time.monotonic()
        session.close(reason, self.clock)

    def _tell(self, what: str) -> None:
        if self.on_change is not None:
            self.on_change(what)

    def label(self, cell_id: int, label: str, session: str | None = None, was: str | None = None) -> dict:
        """A person's label for the current session's cell ``cell_id``. ``session``: the session the page showed;
        another one is refused (409: after a Reset, Start or roll-over, cell N is another cell). ``was``: the label
        the page showed; "confirm" of a cell the model has relabelled since is refused (409), not confirmed unseen."""
        with self._lock:
            if session is not None and session != self.current.id:
                raise SessionError(f"cell {cell_id} of session {session} cannot be labelled: the session is now "
                                   f"{self.current.id} (reset, started or rolled over): reload the page")
            shown = self.current.by_id.get(cell_id)
            if label == "confirm" and was is not None and shown is not None and effective_label(shown) != was:
                raise SessionError(f"cell {cell_id} is now {effective_label(shown)}, not {was} as shown (the model "
                                   "relabelled it since the page loaded): look at it again")
            cell = dict(self.current.label(cell_id, label))
            if self.review_only and self.current.is_open:  # no run will write its report: this one does
                self.current.write_reports()
            return cell

    def summary(self, cells: bool = True) -> dict:
        """The current session's ``Session.summary``, with the room on the sessions' disk (``disk``: looked at
        again here too, at most every 30 s, so that it is not stale while no session counts)."""
        self.check_disk()
        with self._lock:
            unwritten = {"unrecorded": {"cells": self.not_recorded, "error": self.write_error}} \
                if self.not_recorded or self.write_error else {}
            return {**self.current.summary(cells), "disk": self.disk.info(), **unwritten}

    def _answer(self) -> dict:
        """What start, stop and reset answer: the current session without its cells, but with the review list of
        its uncertain cells (what ``summary(cells=False)`` leaves out to stay fast)."""
        return {**self.summary(cells=False), "differential": self.current.differential().summary()}

    def brief(self) -> dict:
        """For each frame's JSON line: the session counted into, and its count so far (people's labels over the
        model's, earlier runs' cells too), as the run's own ``differential`` (the summary less the review list);
        worked out again only when the session changed."""
        with self._lock:
            key = (self.current.id, self.current.version)
            if self._brief is None or self._brief[0] != key:
                self._brief = (key, {"id": self.current.id, "open": self.current.is_open,
                                     "differential": self.current.brief()})
            return self._brief[1]

    def crop_bytes(self, cell_id: int) -> bytes | None:
        with self._lock:
            return self.current.crop_bytes(cell_id)

    def report_html(self) -> str:
        from . import session_report  # noqa: PLC0415

        with self._lock:
            return session_report.report_html(self.current.summary(), self.current.thumbnail)

    def went_on_from(self) -> list[str]:
        """The sessions the current one went on from (each closed at MAX_CELLS), newest first: an open-ended
        count longer than MAX_CELLS is spread over them, each with its own report."""
        with self._lock:
            return went_on_from(self.root, self.current.folder)

    def checkpoint(self) -> None:
        """End of a run: write the current session's report as it stands (an open session stays open), and its
        state.json when the frames' stain tally moved (kept in memory while counting: a resumed session and
        ``celledge review``'s report read it from there)."""
        with self._lock:
            try:
                if self.current.is_open and "stain" in self.current.state:
                    write_json_atomic(self.current.folder / "state.json", self.current.state, fsync="full")
                self.current.write_reports()
            except (UserError, OSError) as err:
                self._not_written(err, cell=False)

    # ---------------------------------------------------------------- the watch loop's hook
    def update(self, frame: np.ndarray | None, rec: dict) -> list[dict]:
        """Per field-mode frame: remember each pending tracked cell's latest whole view (its crop), and
        record the cells counted in this frame (``rec["counted"]``) and the revisions of this run's cells
        (``rec["revised"]``) while a session is open. Returns the records added. A session that reaches its
        target closes (and ends a ``one_shot`` run)."""
        idx, cells = rec.get("frame", 0), rec.get("cells") or []
        if not self.current.is_open:  # nothing to keep (and no wait while a closed session's report is written)
            return []
        self.check_disk()
        with self._lock:
            if frame is not None:
                self.keep_views(frame, rec)
            verdict = ((rec.get("scale") or {}).get("stain") or {}).get("unlike_training")
            if verdict is not None:  # the report says it when most frames were stained unlike the training data
                stain = stain_tally(self.current.state)
                if stain is None:  # none yet (or hand-edited)
                    stain = self.current.state["stain"] = {"frames": 0, "unlike": 0}
                stain["frames"] += 1
                stain["unlike"] += bool(verdict)
            added = []
            for e in rec.get("counted") or []:
                if not self.current.is_open:
                    break
                crop, center, cut_at, file = None, e.get("center"), self.rbc_fraction, rec.get("file")
                pixels = None
                if "track" in e:  # its crop is its latest whole view, cut at the scale of that frame's model
                    crop, _, center, cut_at, file = self._views.pop(e["track"], (None, idx, None, self.rbc_fraction,
                                                                                 file))
                else:  # one image's cell (a folder's): its image is this frame
                    pixels = rec.get("pixels")
                    if frame is not None and "cell" in e and e["cell"] < len(cells):
                        crop = crop_at(frame, cells[e["cell"]]["box"]).copy()
                if crop is not None and self.disk.state == "full":  # the count goes on; its picture cannot
                    crop = None
                    self.pictures_not_kept += 1
                try:
                    self.current.read_from(self.source, self.given)  # at its first cell: a run that counts nothing
                    added.append(self.current.add(_cell_record(e, idx, center, cut_at, file, pixels), crop))
                except (UserError, OSError) as err:  # the count goes on (JSON lines, lab page); the record cannot
                    self._not_written(err)
                    continue
                self._written()
                e["session_cell"] = added[-1]["id"]  # the JSON line names it as the session does (crops/ID.png)
                if file:
                    self._files.add(file)
                if pixels:
                    self._pixels.add(pixels)
                if e.get("track") is not None:
                    self._cell_of_track[e["track"]] = added[-1]["id"]
                self._close_or_say()
            for r in rec.get("revised") or []:
                cid = self._cell_of_track.get(r["track"])
                if cid is not None and self.current.is_open:
                    try:
                        self.current.revise(cid, r, idx)
                    except (UserError, OSError) as err:  # the cell keeps its label; the run's count moves on
                        self._not_written(err, cell=False)
                        continue
                    r["session_cell"] = cid
                    self._close_or_say()
            for tid in [t for t, v in self._views.items() if v[1] < idx - VIEW_KEEP_FRAMES]:
                del self._views[tid]
            return added

    def _close_or_say(self) -> None:
        try:
            self._close_when_done()
        except (UserError, OSError) as err:  # closed here; its state.json or report could not be written
            self._not_written(err, cell=False)

    def _not_written(self, err: Exception, cell: bool = True) -> None:
        """A session's file could not be written (a disk gone read-only, an I/O error, the folder moved away):
        the run goes on counting (the JSON lines, the lab page) and says so once; ``_written`` says when the
        session is written again (nothing is half-written: a cell is recorded whole or not at all)."""
        self.not_recorded += cell
        if self.write_error is None:
            if isinstance(err, WriteError):  # a log line (LineSink)
                self.write_error = f"cannot write {err.path} ({err.reason})"
            elif isinstance(err, OSError):
                why = (err.strerror or str(err)).lower()
                self.write_error = f"cannot write {err.filename} ({why})" if err.filename else why
            else:
                self.write_error = str(err)
            if self.on_disk is not None:
                self.on_disk(f"session {self.current.id} cannot be written: {self.write_error}; cells are counted on "
                             "(JSON lines, lab page) but not recorded in the session until it can be written again "
                             "(a disk gone read-only or failing, or the sessions folder moved)")

    def _written(self) -> None:
        if self.write_error is not None:
            self.write_error = None
            if self.on_disk is not None:
                self.on_disk(f"session {self.current.id} is written again ({self.not_recorded} cell"
                             f"{'' if self.not_recorded == 1 else 's'} counted meanwhile not recorded in it)")

    def check_disk(self) -> None:
        """Look at the room on the sessions' disk (at most every 30 s) and tell ``on_disk`` when that changed."""
        said = self.disk.look()
        if said is not None and self.on_disk is not None:
            self.on_disk(said)

    def keep_views(self, frame: np.ndarray, rec: dict) -> None:
        """Remember each pending tracked cell's view in this frame (its crop, if it is counted later); also
        called for a frame the counter held back, once its cells have their tracks."""
        idx = rec.get("frame", 0)
        with self._lock:
            if not self.current.is_open:
                return
            for c in rec.get("cells") or []:
                tid = c.get("track")
                if tid is not None and not (c.get("decided") or c.get("cut") or tid in self._cell_of_track):
                    self._views[tid] = (crop_at(frame, c["box"]).copy(), idx, c["center"], self.rbc_fraction,
                                        rec.get("file"))

    def _close_when_done(self) -> None:
        """Close the session at its target (the run ends if ``one_shot``), or an open-ended one at MAX_CELLS, the
        count going on in a new one. What can fail (the disk) comes last: a close whose files cannot be written
        still ends the count, and a session that cannot be made leaves the old one counting (tried again at the
        next cell)."""
        if self.current.is_open and self.current.state["target"] is not None and self.current.brief()["done"]:
            self.ends_run = self.one_shot
            self._cell_of_track.clear()
            self._close(self.current, "count reached")
        elif self.current.is_open and self.current.state["target"] is None and len(self.current.cells) >= MAX_CELLS:
            old = self.current
            files, pixels = self._files, self._pixels
            self.current = self._new(None, continues=old.id)
            self._files, self._pixels = files, pixels  # a folder's images counted before are still skipped
            self._cell_of_track.clear()  # a later revision of one of its tracks is not this session's
            self._close(old, f"{MAX_CELLS} cells, an open-ended session's most: the count went on in the next")
            if self.on_note is not None:
                self.on_note(f"session {old.id} closed at {MAX_CELLS} cells (an open-ended session's most; give "
                             f"--count for a differential): report {old.folder / 'report.html'}; session "
                             f"{self.current.id} goes on counting")


def _cell_record(e: dict, frame_index: int, center, rbc_fraction: float | None = None,
                 file: str | None = None, pixels: str | None = None) -> dict[str, Any]:
    """A counted-cell event of the watch loop (``FieldCounter``) as a session's cell line, with the scale its
    crop was cut at (``Sessions.rbc_fraction``: the model's when the cell was counted) and, from a folder, its
    image's file and pixel digest (``sources.pixels_digest``)."""
    return {"label": e["label"], "best": e["best"], "score": e["score"], "scores": e.get("scores"),
            "frame": frame_index, "center": center, "slide": e.get("slide"), "track": e.get("track"),
            "frames": e.get("frames", 1), "rbc_fraction": rbc_fraction, **({"file": file} if file else {}),
            **({"why": e["why"]} if e.get("why") else {}),
            **({"pixels": pixels} if pixels else {})}
