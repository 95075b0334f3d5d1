"""Sessions survive a power cut: each crop is fsync'ed, renamed and its folder fsync'ed before the cell's line is
written, and each log line is fsync'ed; a failed write leaves no temporary file and no line."""
import errno
import os

import pytest

from scopelite.edge.bundle import CLASS_NAMES
from scopelite.edge.errors import UserError
from scopelite.edge.session import Sessions, read_jsonl

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


def test_a_failed_crop_write_leaves_no_temporary_file_and_no_line(tmp_path, monkeypatch):
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    folder = sessions.current.folder
    _spy_fsync(monkeypatch, fail=OSError(errno.EIO, "Input/output error"))
    with pytest.raises(OSError):
        _feed(sessions, ["neutrophil"])
    assert list((folder / "crops").iterdir()) == []  # no .tmp, no crop
    assert read_jsonl(folder / "cells.jsonl") == [] and sessions.summary()["cells_total"] == 0
    monkeypatch.undo()  # the disk is back: the next cell takes id 1
    _feed(sessions, ["lymphocyte"])
    assert [c["id"] for c in read_jsonl(folder / "cells.jsonl")] == [1]
    assert sorted(p.name for p in (folder / "crops").iterdir()) == ["1.png"]


def test_a_failed_line_fsync_leaves_no_line(tmp_path, monkeypatch):
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    _feed(sessions, ["neutrophil"])
    folder = sessions.current.folder
    _spy_fsync(monkeypatch, fail=OSError(errno.EIO, "Input/output error"))
    with pytest.raises(UserError, match="reviews.jsonl"):
        sessions.label(1, "monocyte")
    assert (folder / "reviews.jsonl").read_bytes() == b""  # cut back: no line a restart would replay
