"""Room on the sessions' disk (edge/diskspace.py): a daemon left counting for weeks warns before its disk fills,
and keeps counting (without the cells' pictures) once it has."""
import collections
import json

from scopelite.edge.bundle import CLASS_NAMES
from scopelite.edge.diskspace import FLOOR_BYTES, LOW_BYTES, DiskRoom
from scopelite.edge.httpd import Status
from scopelite.edge.review_page import lab_panel
from scopelite.edge.session import Sessions, read_jsonl
from conftest import assert_one_line_error, invoke_cli, run_cli
from test_session import _feed
from test_watch_tracking import scan_fields

Usage = collections.namedtuple("Usage", "total used free")
MB = 1 << 20


class FakeDisk:
    """shutil.disk_usage with a free figure the test sets; raises OSError when ``free`` is None."""

    def __init__(self, free):
        self.free, self.calls = free, 0

    def __call__(self, path):
        self.calls += 1
        if self.free is None:
            raise OSError(5, "Input/output error")
        return Usage(64 << 30, (64 << 30) - self.free, self.free)


def test_states_messages_and_how_often_it_looks():
    t = [0.0]
    disk = FakeDisk(5 << 30)
    room = DiskRoom("/data/sessions", every=30, clock=lambda: t[0], usage=disk)
    assert room.state == "unknown" and room.look() is None and room.state == "ok"  # room at the start: nothing said
    disk.free = 500 * MB
    t[0] = 10
    assert room.look() is None and disk.calls == 1  # not looked at again within 30 s
    t[0] = 31
    said = room.look()
    assert room.state == "low" and "500 MB free" in said and "12 hours" in said and "celledge export" in said
    t[0] = 62
    assert room.look() is None  # still low: said once
    disk.free = 50 * MB
    t[0] = 93
    said = room.look()
    assert room.state == "full" and "without keeping the cells' pictures" in said
    assert room.info() == {"free_mb": 50, "state": "full"}
    disk.free = 105 * MB  # just over the floor: still full (it leaves it with 10 % to spare)
    t[0] = 124
    assert room.look() is None and room.state == "full"
    disk.free = 3 << 30
    t[0] = 155
    said = room.look()
    assert room.state == "ok" and "room again" in said and "pictures are kept again" in said
    disk.free = 900 * MB
    t[0] = 186
    assert room.look() is not None and room.state == "low"
    disk.free = 2 << 30
    t[0] = 217
    said = room.look()
    assert room.state == "ok" and "room again" in said and "pictures" not in said  # never stopped while low
    disk.free = None  # the disk cannot be read: unknown, nothing said, counting goes on as before
    t[0] = 248
    assert room.look() is None and room.state == "unknown" and room.info()["free_mb"] is None
    assert FLOOR_BYTES < LOW_BYTES


def test_a_full_disk_counts_cells_without_their_pictures_and_says_so(tmp_path, monkeypatch):
    disk = FakeDisk(10 << 30)
    monkeypatch.setattr("scopelite.edge.diskspace.shutil.disk_usage", disk)
    told = []
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    sessions.on_disk = told.append
    sessions.disk.every = 0  # look at every frame
    _feed(sessions, ["neutrophil", "lymphocyte"])
    disk.free = 20 * MB
    _feed(sessions, ["monocyte", "neutrophil"], frame0=2)
    disk.free = 10 << 30
    _feed(sessions, ["eosinophil"], frame0=4)
    cells = [c for c in read_jsonl(sessions.current.folder / "cells.jsonl") if "id" in c]
    assert [c["label"] for c in cells] == ["neutrophil", "lymphocyte", "monocyte", "neutrophil", "eosinophil"]
    assert [c["crop"] is not None for c in cells] == [True, True, False, False, True]
    assert sorted(p.name for p in (sessions.current.folder / "crops").iterdir()) == ["1.png", "2.png", "5.png"]
    assert sessions.pictures_not_kept == 2
    assert len(told) == 2 and "20 MB free" in told[0] and "pictures are kept again" in told[1]
    s = sessions.summary(cells=False)
    assert s["disk"]["state"] == "ok" and s["differential"]["white_total"] == 5
    # a reviewed cell counted without its picture cannot be exported: said so, not "deleted or damaged"
    for cid in (1, 2, 5):
        sessions.label(cid, "confirm")
    for name in ("1.png", "2.png", "5.png"):
        (sessions.current.folder / "crops" / name).unlink()
    sessions.label(3, "monocyte")
    sessions.release()
    r = invoke_cli("celledge", "export", str(tmp_path / "s"), "--out", str(tmp_path / "data"))
    assert r.returncode != 0 and "not kept: counted while the sessions disk was full" in r.stderr
    assert "3 whose picture" in r.stderr and "Traceback" not in r.stderr


def test_the_disk_is_looked_at_again_when_no_session_counts(tmp_path, monkeypatch):
    """After the count stops, the lab page and /metrics still follow the disk (someone deleted old sessions)."""
    disk = FakeDisk(50 * MB)
    monkeypatch.setattr("scopelite.edge.diskspace.shutil.disk_usage", disk)
    t = [0.0]
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    sessions.disk._clock = lambda: t[0]
    _feed(sessions, ["neutrophil", "uncertain"])
    stopped = sessions.stop()
    assert stopped["disk"]["state"] == "full"
    assert stopped["differential"]["uncertain"]["cells"][0]["ref"] == {"id": 2}  # the controls' answers keep it
    disk.free = 50 << 30
    t[0] = 31
    assert sessions.summary(cells=False)["disk"] == {"free_mb": 50 << 10, "state": "ok"}


def test_the_lab_page_and_metrics_say_the_disk_is_low(tmp_path, monkeypatch):
    monkeypatch.setattr("scopelite.edge.diskspace.shutil.disk_usage", FakeDisk(300 * MB))
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    _feed(sessions, ["neutrophil"])
    summary = sessions.summary(cells=False)
    assert summary["disk"] == {"free_mb": 300, "state": "low"}
    page = lab_panel(summary)
    assert 'id="disk"' in page and "running out of room" in page and "300 MB free" in page
    status = Status(CLASS_NAMES)
    status.session = sessions
    assert "scopelite_session_disk_free_megabytes 300" in status.metrics_text()
    monkeypatch.setattr("scopelite.edge.diskspace.shutil.disk_usage", FakeDisk(50 << 30))
    sessions.disk.every = 0
    sessions.check_disk()
    assert 'id="disk"' not in lab_panel(sessions.summary(cells=False))


def test_watch_warns_at_the_start_and_counts_on_a_full_disk(tmp_path, monkeypatch):
    fields = scan_fields(tmp_path / "fields")
    monkeypatch.setattr("scopelite.edge.diskspace.shutil.disk_usage", FakeDisk(80 * MB))  # a run starts over 50 MB
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(tmp_path / "s"),
                   "--out", str(tmp_path / "lines.jsonl"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    warned = [x for x in r.stderr.splitlines() if x.startswith("warning:") and "80 MB free" in x]
    assert len(warned) == 1 and "without keeping the cells' pictures" in warned[0]
    summary = json.loads((tmp_path / "lines.jsonl").read_text().splitlines()[-1])["summary"]["session"]
    assert summary["cells"] > 0 and summary["pictures_not_kept"] == summary["cells"]
    assert summary["disk"] == {"free_mb": 80, "state": "full"}


def _full_for(calls: int):
    """os.write that fails with ENOSPC for its next ``calls`` calls, then writes (a disk freed by a person)."""
    import errno
    import os

    real, left = os.write, [calls]

    def write(fd, data):
        if left[0] > 0:
            left[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)
    return write


def test_a_daemons_lines_are_dropped_while_the_disk_is_full_and_the_gap_is_said(tmp_path, monkeypatch, capsys):
    """watch --out on a disk that filled: "Error: stopped: cannot write frames.jsonl (no space left on device)",
    exit 2, and systemd's restarts refused under 50 MB free: counting stopped for good. Now the lines are dropped
    and counted, one warning says so, and the first line once there is room says how many are missing."""
    import pytest

    from scopelite.edge import outputs

    sink = outputs.LineSink(tmp_path / "frames.jsonl", while_full=True)
    sink.write('{"frame": 1}')
    monkeypatch.setattr(outputs.os, "write", _full_for(3))
    for i in (2, 3, 4):
        sink.write(json.dumps({"frame": i}))
    monkeypatch.undo()
    sink.write('{"frame": 5}')
    lines = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert lines == [{"frame": 1}, {"event": "lines_dropped", "lines": 3, "reason": "disk full"}, {"frame": 5}]
    assert sink.dropped == 3
    warned = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert len(warned) == 1 and "the disk is full" in warned[0] and "the count goes on" in warned[0]
    # a disk hovering at full: spells a line apart each say where lines are missing, but the warning is not said
    # again within FULL_WARN_EVERY_S (a walk-through saw 4 alike in a minute)
    for _ in range(3):
        monkeypatch.setattr(outputs.os, "write", _full_for(1))
        sink.write('{"frame": 6}')
        monkeypatch.undo()
        sink.write('{"frame": 7}')
    lines = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert lines[3:] == [{"event": "lines_dropped", "lines": 1, "reason": "disk full"}, {"frame": 7}] * 3
    assert not [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    monkeypatch.setattr(outputs, "FULL_WARN_EVERY_S", 0.0)  # ... and said again once that long has passed
    monkeypatch.setattr(outputs.os, "write", _full_for(1))
    sink.write('{"frame": 8}')
    monkeypatch.undo()
    assert len([x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]) == 1
    plain = outputs.LineSink(tmp_path / "report-lines.jsonl")  # not a daemon's: a full disk ends the run, as before
    monkeypatch.setattr(outputs.os, "write", _full_for(1))
    with pytest.raises(outputs.WriteError, match="no space left"):
        plain.write('{"a": 1}')


def test_frames_are_not_saved_while_the_disk_is_full_and_the_count_goes_on(tmp_path, monkeypatch, capsys):
    """--save-dir on a full disk: "Error: stopped saving frames ... (no space left on device)" ended the daemon; the
    saved frames are an extra, so they are skipped (and counted) until there is room."""
    import errno

    import numpy as np

    from scopelite.edge import saver as saver_mod

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    saver = saver_mod.FrameSaver(tmp_path / "saved", below=0.9)
    frame = np.zeros((48, 64, 3), np.uint8)
    rec = {"frame": 1, "cells": [{"label": "neutrophil", "best": "neutrophil", "score": 0.5, "track": None}]}
    monkeypatch.setattr(saver_mod, "write_bytes_atomic", full)
    assert saver(frame, rec) is None and saver(frame, {**rec, "frame": 2}) is None
    monkeypatch.undo()
    assert saver.not_saved == 2 and saver.saved == 0 and not list((tmp_path / "saved").iterdir())
    assert saver(frame, {**rec, "frame": 3}) is not None and saver.saved == 1
    warned = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert len(warned) == 1 and "--save-dir" in warned[0] and "the count goes on" in warned[0]


def test_a_camera_daemon_runs_on_with_out_on_a_full_device(tmp_path):
    """/dev/full answers every write with ENOSPC. A live source (here a video as a stream, file://, which
    reconnects at its end like a camera) goes on counting, says once that its lines are dropped, and stops on
    the end of its stream with exit 0; it ended at the first line before. A folder's run still ends with the Error (the table in
    test_bad_input: watch-out-disk-full): it can be run again."""
    import os

    import cv2
    import pytest

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    fields = sorted(p for p in scan_fields(tmp_path / "fields").iterdir() if p.suffix == ".png")
    first = cv2.imread(str(fields[0]))
    video = tmp_path / "slide.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (first.shape[1], first.shape[0]))
    for f in fields:
        for _ in range(3):
            w.write(cv2.resize(cv2.imread(str(f)), (first.shape[1], first.shape[0])))
    w.release()
    r = run_cli("celledge", "watch", f"file://{video}", "--mode", "field", "--sessions", str(tmp_path / "s"),
                "--out", "/dev/full", "--exit-on-eof")  # a stream that ends: the run ends at its end, exit 0
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert sum("the disk is full" in x for x in r.stderr.splitlines()) == 1, r.stderr[-2000:]
    assert read_jsonl(next((tmp_path / "s").glob("*/cells.jsonl")))  # the count went on


def test_a_rotated_file_that_cannot_be_made_again_on_a_full_disk_drops_lines_too(tmp_path, monkeypatch):
    """logrotate renamed frames.jsonl; making it again failed (no room, or no inodes left after many crops) and the
    daemon ended although its lines may be dropped. The line is dropped and the next one tries again."""
    import errno

    from scopelite.edge import outputs

    path = tmp_path / "frames.jsonl"
    sink = outputs.LineSink(path, while_full=True)
    sink.write('{"frame": 1}')
    path.rename(tmp_path / "frames.jsonl.1")
    real = outputs.os.open

    def no_room(p, flags, *a):
        if flags & outputs.os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(p, flags, *a)

    monkeypatch.setattr(outputs.os, "open", no_room)
    sink.write('{"frame": 2}')
    assert sink.dropped == 1 and sink.full and not path.exists()
    monkeypatch.undo()
    sink.write('{"frame": 3}')
    assert [json.loads(x) for x in path.read_text().splitlines()] == [
        {"event": "lines_dropped", "lines": 1, "reason": "disk full"}, {"frame": 3}]


def test_a_cameras_daemon_starts_on_a_nearly_full_disk_and_a_folders_run_does_not(tmp_path, monkeypatch):
    """A restart on a nearly full disk (a reboot, an upgrade) was refused under 50 MB free, and systemd retried every
    5 s for good while a running daemon counts on when its disk fills. A camera's or stream's run now passes the
    start-up checks (--print-config) with a warning; a folder's run, which can be run again, is still refused."""
    monkeypatch.setattr("scopelite.edge.outputs.shutil.disk_usage", FakeDisk(3 * MB))
    fields = scan_fields(tmp_path / "fields")
    args = ["--mode", "field", "--sessions", str(tmp_path / "s"), "--out", str(tmp_path / "lines.jsonl"),
            "--print-config"]
    r = invoke_cli("celledge", "watch", "http://127.0.0.1:9/stream.mjpg", *args)
    assert r.returncode == 0 and "Error" not in r.stderr, r.stderr
    warned = [x for x in r.stderr.splitlines() if x.startswith("warning:") and "only 3 MB free: counting starts" in x]
    assert len(warned) == 2 and any("--sessions" in x for x in warned) and any("--out" in x for x in warned)
    r = invoke_cli("celledge", "watch", "http://127.0.0.1:9/stream.mjpg", *args, "--report", str(tmp_path / "rep"))
    assert_one_line_error(r, "--report", "need at least 50 MB")  # written whole at the end: still refused
    r = invoke_cli("celledge", "watch", str(fields), *args)
    assert r.returncode == 2 and "need at least 50 MB" in r.stderr
