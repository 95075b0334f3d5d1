"""--keep-days (edge/retention.py): a daemon counting for weeks removes the sessions it closed long ago, and
nothing else: not the current one, an open one, one being reviewed, a damaged one, or one a set-back clock
makes look young."""
import fcntl
import json
import os

from scopelite.edge.bundle import CLASS_NAMES
from scopelite.edge.retention import DAY_S, HIDDEN, Pruner, expired
from scopelite.edge.session import Session, Sessions, list_sessions
from conftest import invoke_cli
from test_session import _feed
from test_watch_tracking import scan_fields

NOW = 1_800_000_000.0


def _closed(root, days_ago: float, cells=("neutrophil",)) -> Session:
    """A session that counted ``cells`` and was stopped ``days_ago`` days before NOW."""
    sessions = Sessions(root, CLASS_NAMES, new=True)
    _feed(sessions, list(cells))
    s = sessions.current
    s.close("stopped on the lab page", clock=lambda: NOW - days_ago * DAY_S)
    return s


def test_only_sessions_closed_long_enough_ago_are_removed(tmp_path):
    root = tmp_path / "s"
    old = _closed(root, 10)
    young = _closed(root, 0.5)
    held = _closed(root, 20)  # a celledge review holds it
    damaged = _closed(root, 30)
    future = _closed(root, -3)  # the clock was set back since it closed
    (damaged.folder / "state.json").write_text("{not json")
    current = Sessions(root, CLASS_NAMES, new=True)  # open now; and the last closed is never the current one
    _feed(current, ["lymphocyte"])
    leftover = root / (HIDDEN + "20260101-000000-abcdef")  # a removal cut off by a power cut
    (leftover / "crops").mkdir(parents=True)
    (leftover / "state.json").write_text(json.dumps({**old.state, "id": leftover.name}))
    fd = os.open(held.folder / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    told = []
    try:
        assert expired(root, 7, NOW, keep=current.current.folder) == [old.folder, held.folder]
        pruner = Pruner(root, 7, lambda: current.current.folder, told.append, clock=lambda: NOW)
        assert pruner.once() == [old.id]
    finally:
        os.close(fd)
    assert not old.folder.exists() and not leftover.exists()
    assert told == [f"session {old.id} removed: closed more than 7 days ago (--keep-days)"]
    left = {p.name for p in list_sessions(root)}
    assert left == {young.id, held.id, future.id, current.current.id}  # the damaged one is not listed, but there
    assert damaged.folder.is_dir()
    # once the review lets go, the next look removes it; the open session stays however old it is
    assert Pruner(root, 7, lambda: current.current.folder, told.append, clock=lambda: NOW + 400 * DAY_S).once() \
        == [young.id, held.id, future.id]  # oldest first
    assert {p.name for p in list_sessions(root)} == {current.current.id}
    current.release()


def test_the_current_session_is_kept_even_when_closed_and_old(tmp_path):
    root = tmp_path / "s"
    _closed(root, 10)
    sessions = Sessions(root, CLASS_NAMES)  # none open: a new one starts
    sessions.current.close("count reached", clock=lambda: NOW - 9 * DAY_S)  # closed long ago, still on the page
    pruner = Pruner(root, 1, lambda: sessions.current.folder, lambda _: None, clock=lambda: NOW)
    assert len(pruner.once()) == 1 and sessions.current.folder.is_dir()
    sessions.release()


def test_a_clock_that_was_wrong_when_a_session_closed_does_not_remove_it_early(tmp_path):
    """A Pi without a clock battery boots at the time it was switched off (or 1970) until a time server answers:
    a session closed then carries a stop time days too old, and --keep-days removed it within the hour."""
    root = tmp_path / "s"
    at_start = _closed(root, 3)  # closed by this process's start (--new-session), with the clock of switch-off
    unset = _closed(root, 0)
    unset.close("stopped", clock=lambda: 1000.0)  # the clock at 1970
    sessions = Sessions(root, CLASS_NAMES, new=True)
    _feed(sessions, ["lymphocyte"])
    mono = [0.0]
    pruner = Pruner(root, 2, lambda: sessions.current.folder, lambda _: None, spare=lambda: {at_start.id: 0.0},
                    clock=lambda: NOW, monotonic=lambda: mono[0])
    assert pruner.once() == []
    seen_open = sessions.current
    sessions.current.close("stopped", clock=lambda: NOW - 5 * DAY_S)  # closed while the clock was still wrong
    sessions.start()
    _feed(sessions, ["neutrophil"], frame0=5)
    assert pruner.once() == [] and Pruner(root, 2, lambda: sessions.current.folder, lambda _: None,
                                          clock=lambda: 1e9).once() == []  # a clock before 2020 removes nothing
    mono[0] = 2.1 * DAY_S  # two days of the process's own time later: the stop times are believed
    assert pruner.once() == [at_start.id, seen_open.id] and unset.folder.is_dir()
    sessions.release()


def test_watch_removes_old_sessions_and_says_so(tmp_path):
    root = tmp_path / "s"
    import time

    old = _closed(root, 0)
    old.close("stopped on the lab page", clock=lambda: time.time() - 3 * DAY_S)
    keep = _closed(root, 0)
    keep.close("stopped on the lab page", clock=lambda: time.time() - 1 * DAY_S)
    fields = scan_fields(tmp_path / "fields", frames=(0, 40))
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(root), "--keep-days", "2",
                   "--out", str(tmp_path / "lines.jsonl"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"session {old.id} removed: closed more than 2 days ago (--keep-days)" in r.stderr
    assert not old.folder.exists() and keep.folder.is_dir() and len(list_sessions(root)) == 2


def test_keep_days_is_checked():
    for args, said in ((["--keep-days", "3"], "--keep-days needs --sessions DIR"),
                       (["--sessions", "s", "--keep-days", "0"], "--keep-days"),
                       (["--sessions", "s", "--keep-days", "nan"], "--keep-days")):
        r = invoke_cli("celledge", "watch", "nowhere/", "--mode", "field", *args)
        assert r.returncode != 0 and "Traceback" not in r.stderr and said in r.stderr, r.stderr


def test_a_session_closed_between_two_looks_with_a_clock_behind_is_kept(tmp_path):
    """A slide's session started and closed between two hourly looks, while the clock was still 10 days behind
    (fake-hwclock after 10 days off), was removed at the next look once the clock was right."""
    import time

    root = tmp_path / "s"
    sessions = Sessions(root, CLASS_NAMES, clock=lambda: NOW - 10 * DAY_S)
    pruner = Pruner(root, 7, lambda: sessions.current.folder, lambda _: None, spare=lambda: sessions.closed_here,
                    clock=lambda: NOW)
    assert pruner.once() == []
    _feed(sessions, ["neutrophil"])
    slide = sessions.current
    sessions.stop()  # stopped on the lab page: its stop time is the clock's, 10 days behind
    sessions.start()
    assert slide.id in sessions.closed_here and sessions.closed_here[slide.id] <= time.monotonic()
    assert pruner.once() == [] and slide.folder.is_dir()
    sessions.release()


def test_a_session_the_open_one_went_on_from_is_kept(tmp_path, monkeypatch):
    """An open-ended session closed at MAX_CELLS and the count went on in the next; --keep-days removed the first,
    and the folder watched again counted its images a second time (the skip list is rebuilt from the chain)."""
    import scopelite.edge.session as session_mod

    monkeypatch.setattr(session_mod, "MAX_CELLS", 2)
    root = tmp_path / "s"
    sessions = Sessions(root, CLASS_NAMES, clock=lambda: NOW - 30 * DAY_S)  # a month ago
    _feed(sessions, ["neutrophil"] * 5)  # 2 + 2 closed, 1 open
    first, second = list_sessions(root)[:2]
    pruner = Pruner(root, 7, lambda: sessions.current.folder, lambda _: None, clock=lambda: NOW,
                    monotonic=lambda: 1e12)  # long after this process closed them
    assert pruner.once() == [] and first.is_dir() and second.is_dir()
    sessions.stop()
    sessions.start()  # a new slide: the chain is no longer open or current
    assert sorted(pruner.once()) == sorted([first.name, second.name])
    sessions.release()


def test_a_cameras_open_ended_count_lets_its_old_sessions_go(tmp_path, monkeypatch):
    """A daemon on a camera, no --count: one roll-over every MAX_CELLS cells, each session going on from the one
    before. The chain was kept whole (it is for a folder watched again), so --keep-days removed nothing in weeks and
    the disk filled. A camera's old sessions go; a folder's chain stays (the test above)."""
    import scopelite.edge.session as session_mod

    monkeypatch.setattr(session_mod, "MAX_CELLS", 2)
    root = tmp_path / "s"
    sessions = Sessions(root, CLASS_NAMES, clock=lambda: NOW - 30 * DAY_S, given="/dev/video0")
    _feed(sessions, ["neutrophil"] * 5)  # 2 + 2 closed a month ago, 1 open (the current)
    first, second, current = list_sessions(root)
    assert json.loads((first / "state.json").read_text())["inputs"] == ["/dev/video0"]
    pruner = Pruner(root, 7, lambda: sessions.current.folder, lambda _: None, clock=lambda: NOW,
                    monotonic=lambda: 1e12)
    assert sorted(pruner.once()) == sorted([first.name, second.name]) and current.is_dir()
    sessions.release()


def test_a_folders_chain_is_kept_while_its_folder_is_away(tmp_path, monkeypatch):
    """The chain of an open-ended count on a folder is kept by what was given, not by what is mounted at the look: a
    USB stick out at the hourly look removed the chain, and its images were counted again when it came back."""
    import shutil

    import scopelite.edge.session as session_mod

    monkeypatch.setattr(session_mod, "MAX_CELLS", 2)
    stick = tmp_path / "usb" / "slide7"
    stick.mkdir(parents=True)
    root = tmp_path / "s"
    sessions = Sessions(root, CLASS_NAMES, clock=lambda: NOW - 30 * DAY_S, given=str(stick))
    _feed(sessions, ["neutrophil"] * 5)
    first, second, _ = list_sessions(root)
    shutil.rmtree(tmp_path / "usb")  # unplugged
    pruner = Pruner(root, 7, lambda: sessions.current.folder, lambda _: None, clock=lambda: NOW,
                    monotonic=lambda: 1e12)
    assert pruner.once() == [] and first.is_dir() and second.is_dir()
    sessions.release()


def test_a_run_whose_session_went_on_from_others_names_them(tmp_path, monkeypatch):
    """An open-ended count past MAX_CELLS is spread over several sessions; the run's summary and its --report
    named only the last one, whose differential holds only its own cells (the others' reports unmentioned)."""
    import scopelite.edge.session as session_mod

    monkeypatch.setattr(session_mod, "MAX_CELLS", 2)
    root = tmp_path / "s"
    sessions = Sessions(root, CLASS_NAMES)
    _feed(sessions, ["neutrophil"] * 5)  # closed at 2 cells each, the last open
    chain = sessions.went_on_from()
    assert len(chain) >= 2 and sessions.current.is_open and len(list_sessions(root)) == len(chain) + 1
    sessions.release()
    monkeypatch.undo()  # (the run below, in this process, counts on in one session)
    fields = scan_fields(tmp_path / "fields", frames=(0,))
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(root), "--add-to-session",
                   "--report", str(tmp_path / "report"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    summary = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]
    assert summary["went_on_from"] == chain
    assert f"went on from {len(chain)} earlier sessions" in r.stderr and chain[0] in r.stderr
    report = json.loads((tmp_path / "report" / "differential.json").read_text())
    assert report["run"]["session"]["went_on_from"] == chain
