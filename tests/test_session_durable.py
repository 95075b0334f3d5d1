"""Sessions survive a power cut: each crop is fsync'ed, renamed and its folder fsync'ed before the cell's line is
written, and each log line is fsync'ed; a failed write leaves no temporary file and no line."""
import errno
import os

import numpy as np
import pytest

from scopelite.edge.bundle import CLASS_NAMES
from scopelite.edge.errors import UserError
from scopelite.edge.review_page import lab_panel
from scopelite.edge.session import Sessions, read_jsonl

from conftest import invoke_cli
from test_session import _feed


def _spy_fsync(monkeypatch, fail=None):
    """Replace os.fsync: record (inode, device) of every fsync'ed file or folder; ``fail``: raise it instead."""
    calls = []
    real = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        calls.append((st.st_ino, st.st_dev))
        if fail is not None:
            raise fail
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def _key(path):
    st = os.stat(path)
    return st.st_ino, st.st_dev


def test_a_cell_is_on_disk_crop_first_then_its_line(tmp_path, monkeypatch):
    sessions = Sessions(tmp_path / "s", CLASS_NAMES, target=100)
    folder = sessions.current.folder
    calls = _spy_fsync(monkeypatch)
    _feed(sessions, ["neutrophil", "lymphocyte"])
    crop1, crop2, crops, log = (_key(folder / "crops" / "1.png"), _key(folder / "crops" / "2.png"),
                                _key(folder / "crops"), _key(folder / "cells.jsonl"))
    # the crop's data (its inode survives the rename), then its folder's names, then the line: per cell
    assert crop1 in calls and crop2 in calls and crops in calls and log in calls
    for crop in (crop1, crop2):
        at = calls.index(crop)
        assert at < calls.index(crops, at) < calls.index(log, at)
    assert calls.index(log) < calls.index(crop2)  # the first line is on disk before the second cell starts
    # a person's label is on disk when label() returns
    calls.clear()
    sessions.label(1, "monocyte")
    assert _key(folder / "reviews.jsonl") in calls
    # state.json (open -> closed) and its folder, when the session closes
    calls.clear()
    sessions.stop()
    assert _key(folder / "state.json") in calls and _key(folder) in calls


def test_a_new_session_folder_and_its_state_are_on_disk(tmp_path, monkeypatch):
    root = tmp_path / "s"
    root.mkdir()
    calls = _spy_fsync(monkeypatch)
    sessions = Sessions(root, CLASS_NAMES)
    folder = sessions.current.folder
    assert _key(folder / "state.json") in calls and _key(folder) in calls and _key(root) in calls


def test_a_failed_crop_write_leaves_no_temporary_file_and_no_line_and_the_count_goes_on(tmp_path, monkeypatch):
    """A disk that fails (an SD card's I/O error, gone read-only) ended the daemon with an Error, and systemd
    restarted it into the same one: no lab page, no live count. Now the count goes on and the page says why."""
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    told = []
    sessions.on_disk = told.append
    folder = sessions.current.folder
    _spy_fsync(monkeypatch, fail=OSError(errno.EIO, "Input/output error"))
    _feed(sessions, ["neutrophil", "monocyte"])
    assert list((folder / "crops").iterdir()) == []  # no .tmp, no crop
    assert read_jsonl(folder / "cells.jsonl") == [] and sessions.summary()["cells_total"] == 0
    error = sessions.summary()["unrecorded"]["error"]
    assert sessions.summary()["unrecorded"]["cells"] == 2 and error.endswith("1.png (input/output error)")
    assert len(told) == 1 and f"cannot be written: {error}; cells are counted on" in told[0]
    assert "cannot be written" in lab_panel(sessions.summary(cells=False))
    monkeypatch.undo()  # the disk is back: the next cell takes id 1
    _feed(sessions, ["lymphocyte"])
    assert [c["id"] for c in read_jsonl(folder / "cells.jsonl")] == [1]
    assert sorted(p.name for p in (folder / "crops").iterdir()) == ["1.png"]
    assert told[1] == f"session {sessions.current.id} is written again (2 cells counted meanwhile not recorded in it)"
    assert sessions.summary()["unrecorded"] == {"cells": 2, "error": None}


def test_a_watch_whose_sessions_disk_turns_read_only_counts_on_and_says_so(tmp_path, monkeypatch):
    import json

    from test_watch_tracking import scan_fields

    fields = scan_fields(tmp_path / "fields")
    real_write = os.write

    def read_only(fd, data):  # every session file (cells.jsonl, crops, state.json) on a disk gone read-only
        if "/s/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", read_only)
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--no-track", "--sessions",
                   str(tmp_path / "s"), "--out", str(tmp_path / "lines.jsonl"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    warned = [x for x in r.stderr.splitlines() if "cannot be written: cannot write" in x
              and "cells.jsonl (read-only file system)" in x]
    assert len(warned) == 1 and warned[0].startswith("warning:"), r.stderr
    lines = [json.loads(x) for x in (tmp_path / "lines.jsonl").read_text().splitlines()]
    session = lines[-1]["summary"]["session"]
    assert session["cells"] == 0 and session["cells_not_recorded"] > 0
    assert lines[-1]["summary"]["differential"]["white_total"] > 0  # the count itself went on


def test_a_failed_line_fsync_leaves_no_line(tmp_path, monkeypatch):
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    _feed(sessions, ["neutrophil"])
    folder = sessions.current.folder
    _spy_fsync(monkeypatch, fail=OSError(errno.EIO, "Input/output error"))
    with pytest.raises(UserError, match="reviews.jsonl"):
        sessions.label(1, "monocyte")
    assert (folder / "reviews.jsonl").read_bytes() == b""  # cut back: no line a restart would replay


def test_a_revision_that_cannot_be_written_is_not_counted_as_an_unrecorded_cell(tmp_path, monkeypatch):
    from test_session import _cell

    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    frame = np.full((40, 40, 3), 90, np.uint8)
    sessions.update(frame, {"frame": 0, "cells": [{"box": [0, 0, 40, 40], "center": [20.0, 20.0], "track": 5}],
                            "counted": [_cell("neutrophil", track=5)]})
    assert len(sessions.current.cells) == 1

    _spy_fsync(monkeypatch, fail=OSError(errno.EIO, "Input/output error"))  # the revision's line cannot be kept
    sessions.update(frame, {"frame": 1, "cells": [], "revised": [{"track": 5, "to": "monocyte", "best": "monocyte",
                                                                  "score": 0.8, "was": "neutrophil"}]})
    log = sessions.current.folder / "cells.jsonl"
    assert sessions.not_recorded == 0 and sessions.write_error == f"cannot write {log} (input/output error)"
    assert sessions.current.cells[0]["label"] == "neutrophil"  # the cell keeps its label
