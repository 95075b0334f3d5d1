"""Sessions (edge/session.py): cells recorded with their crops, report, resume after a kill, review, export."""
import collections
import json
import re
import shutil

import cv2
import numpy as np
import pytest

from scopelite.edge.bundle import CLASS_NAMES, InputSpec, load_sidecar
from scopelite.edge.classifier import FakeClassifier
from scopelite.edge.config import WatchConfig
from scopelite.edge.packaged import default_model
from scopelite.edge.errors import UserError
from scopelite.edge.session import (NOT_A_CELL, Session, SessionError, Sessions, effective_label, list_sessions,
                                    read_jsonl)
from scopelite.edge.session_export import export_reviewed, summary_line
from scopelite.edge.watch import run_watch
from scopelite.train.slide import make_slide_scan

from conftest import assert_one_line_error, default_signals, invoke_cli
from test_watch_tracking import SCAN, ScanSource, by_colour

WHITE_ROWS = ("Neutrophils", "Lymphocytes", "Monocytes", "Eosinophils", "Basophils", "Immature granulocytes")


def _scan_run(root, seed=0, **kw):
    """A generated slide scan watched in field mode into a sessions folder: (summary, records, sessions)."""
    scan = make_slide_scan(seed, **SCAN)
    sessions = Sessions(root, CLASS_NAMES, **kw)
    recs = []
    s = run_watch(WatchConfig(mode="field"), ScanSource(scan), FakeClassifier(CLASS_NAMES, InputSpec(32, 32),
                                                                              fn=by_colour),
                  recs.append, session=sessions)["summary"]
    return s, recs, sessions, scan


def _cell(label, score=0.9, **kw):
    """A counted-cell event as FieldCounter emits it (separate fields: ``cell`` indexes the frame's cells)."""
    scores = [0.01] * len(CLASS_NAMES)
    if label in CLASS_NAMES:
        scores[CLASS_NAMES.index(label)] = score
    return {"cell": 0, "label": label, "best": label if label in CLASS_NAMES else "monocyte", "score": score,
            "center": [20.0, 20.0], "scores": scores, **kw}


def _feed(sessions, labels, frame0=0, files=None):
    """Count one cell per frame with the given model labels; each frame is a coloured 40x40 image (``files``: the
    image file each frame came from, a folder's)."""
    for i, label in enumerate(labels):
        frame = np.full((40, 40, 3), (30 * i) % 255, np.uint8)
        rec = {"frame": frame0 + i, "cells": [{"box": [0, 0, 40, 40], "center": [20.0, 20.0]}],
               "counted": [_cell(label)], **({"file": files[i]} if files else {})}
        sessions.update(frame, rec)


def test_a_run_records_every_counted_cell_with_its_crop(tmp_path):
    s, recs, sessions, scan = _scan_run(tmp_path / "sessions")
    events = [e for r in recs for e in r["counted"]] + s["counted"]
    cur = sessions.summary()
    assert cur["state"] == "open" and cur["cells_total"] == len(events) == len(scan.cells)
    log = read_jsonl(sessions.current.folder / "cells.jsonl")
    lines = [c for c in log if "id" in c]
    assert [c["id"] for c in lines] == list(range(1, len(events) + 1))
    assert [c["track"] for c in lines] == [e["track"] for e in events]  # in the order counted
    # the model's revisions (a cell's class over every view of its track), each logged once, in order
    revised = [r for rec in recs for r in rec["revised"]] + s["revised"]
    by_track = {c["track"]: c["id"] for c in lines}
    assert [(r["revise"], r["was"], r["label"]) for r in log if "revise" in r] == [
        (by_track[r["track"]], r["from"], r["to"]) for r in revised]
    for c, e in zip(lines, events):
        assert c["label"] == e["label"] and c["scores"] == e["scores"] and c["slide"] == e["slide"]
        assert c["reviewed"] is None and 0 <= c["frame"] < len(scan)
        crop = cv2.imread(str(sessions.current.folder / c["crop"]))
        assert crop is not None and crop.shape[0] == crop.shape[1] >= 16
    # the session's differential is the run's: each cell once
    assert cur["differential"]["rows"] == s["differential"]["rows"]
    assert cur["differential"]["uncertain"]["count"] == s["differential"]["uncertain"]["count"]


def test_count_closes_the_session_and_writes_its_report(tmp_path):
    s, _, sessions, scan = _scan_run(tmp_path / "sessions", target=4, one_shot=True)
    folder = sessions.current.folder
    state = json.loads((folder / "state.json").read_text())
    assert s["stopped"] == "count reached" and s["frames"] < len(scan)
    assert state["state"] == "closed" and state["reason"] == "count reached" and state["target"] == 4
    diff = json.loads((folder / "differential.json").read_text())["differential"]
    assert diff["white_total"] == 4 and diff["done"]
    cells = read_jsonl(folder / "cells.jsonl")
    rows = (folder / "cells.csv").read_text().splitlines()
    assert rows[0].startswith("id,label,model_label") and len(rows) == len(cells) + 1
    assert "white,total,4" in (folder / "differential.csv").read_text()
    assert "Differential: 4 white cells of 4 (done)" in (folder / "differential.txt").read_text()
    page = (folder / "report.html").read_text()
    present = [t for t in WHITE_ROWS if f"<td>{t}</td>" in page]
    assert present and [page.index(f"<td>{t}</td>") for t in present] == sorted(page.index(f"<td>{t}</td>")
                                                                                 for t in present)
    assert f"0 of {len(cells)} cells reviewed" in page and "src=\"http" not in page and "<script" not in page
    figures = re.findall(r'<figure data-id="(\d+)"><img src="data:image/jpeg;base64,', page)
    assert sorted(map(int, figures)) == [c["id"] for c in cells]  # every cell in the gallery, with its picture


def _session_with(root, labels, **kw):
    sessions = Sessions(root, CLASS_NAMES, **kw)
    _feed(sessions, labels)
    return sessions


def test_resume_after_a_kill_with_a_torn_line(tmp_path):
    root = tmp_path / "sessions"
    first = _session_with(root, ["neutrophil", "lymphocyte", "monocyte"], target=10)
    sid, folder = first.current.id, first.current.folder
    first.label(2, "eosinophil")
    # killed mid-write: half a cell line, half a review line, and the crop of the cell in flight
    with open(folder / "cells.jsonl", "ab") as f:
        f.write(b'{"id": 4, "label": "neutr')
    with open(folder / "reviews.jsonl", "ab") as f:
        f.write(b'{"id": 1, "lab')
    (folder / "crops" / "4.png").write_bytes(b"half a png")

    again = Sessions(root, CLASS_NAMES, target=10)
    assert again.resumed == sid and again.current.is_open
    cur = again.summary()
    assert [c["final"] for c in cur["cells"]] == ["neutrophil", "eosinophil", "monocyte"]
    _feed(again, ["basophil"], frame0=3)  # the next cell takes the torn one's id and crop name
    third = Session.load(folder)
    assert [c["label"] for c in third.cells] == ["neutrophil", "lymphocyte", "monocyte", "basophil"]
    assert cv2.imread(str(folder / "crops" / "4.png")) is not None
    assert all(line.strip() for line in (folder / "cells.jsonl").read_text().splitlines())


def test_a_revision_is_logged_replayed_and_a_review_still_wins(tmp_path):
    root = tmp_path / "sessions"
    sessions = Sessions(root, CLASS_NAMES, target=10)
    frame = np.full((40, 40, 3), 90, np.uint8)

    def revision(track, was, now, score=0.7):
        return {"track": track, "from": was, "to": now, "frames": 45, "classified": 21, "best": now, "score": score,
                "scores": _cell(now, score)["scores"]}

    sessions.update(frame, {"frame": 0, "cells": [], "counted": [_cell("immature_granulocyte", track=3),
                                                                _cell("lymphocyte", track=4),
                                                                _cell("uncertain", 0.3, track=5)]})
    revised = [revision(3, "immature_granulocyte", "monocyte"), revision(5, "uncertain", "basophil"),
               revision(99, "lymphocyte", "basophil")]
    sessions.update(frame, {"frame": 9, "cells": [], "counted": [], "revised": revised})
    assert [r.get("session_cell") for r in revised] == [1, 3, None]  # the JSON line names the session's cells
    cur = sessions.summary()
    assert [c["final"] for c in cur["cells"]] == ["monocyte", "lymphocyte", "basophil"]  # track 99: not this session's
    assert cur["cells"][0]["revised"] == {"from": "immature_granulocyte", "frame": 9}
    assert cur["differential"]["uncertain"]["count"] == 0 and cur["differential"]["white_total"] == 3
    folder = sessions.current.folder
    log = read_jsonl(folder / "cells.jsonl")
    assert [(r["revise"], r["was"], r["label"]) for r in log if "revise" in r] == [
        (1, "immature_granulocyte", "monocyte"), (3, "uncertain", "basophil")]
    # a person's label beats the model's, before and after a later revision
    sessions.label(2, "neutrophil")
    sessions.update(frame, {"frame": 12, "cells": [], "counted": [], "revised": [revision(4, "lymphocyte", "monocyte")]})
    assert [c["final"] for c in sessions.summary()["cells"]] == ["monocyte", "neutrophil", "basophil"]
    # killed (a torn revise line) and resumed: the log replayed, revisions applied in order
    with open(folder / "cells.jsonl", "ab") as f:
        f.write(b'{"revise": 1, "label": "eosino')
    again = Sessions(root, CLASS_NAMES, target=10)
    assert again.resumed == sessions.current.id
    cells = again.summary()["cells"]
    assert [(c["label"], c["final"]) for c in cells] == [("monocyte", "monocyte"), ("monocyte", "neutrophil"),
                                                          ("basophil", "basophil")]
    assert cells[0]["best"] == "monocyte" and cells[0]["score"] == 0.7 and cells[0]["frames"] == 45
    # the new run's track 3 is another cell: nothing of the old run is revised by it
    again.update(frame, {"frame": 0, "cells": [], "counted": [], "revised": [revision(3, "monocyte", "eosinophil")]})
    assert [c["label"] for c in again.summary()["cells"]] == ["monocyte", "monocyte", "basophil"]
    again.stop()
    rows = (folder / "cells.csv").read_text().splitlines()
    assert rows[1].startswith("1,monocyte,monocyte,monocyte,0.7,") and rows[2].startswith("2,neutrophil,monocyte,")
    d = json.loads((folder / "differential.json").read_text())["differential"]
    counts = {r["class"]: r["count"] for r in d["rows"]}
    assert (counts["monocyte"], counts["neutrophil"], counts["basophil"], d["white_total"]) == (1, 1, 1, 3)


def test_restart_closes_a_finished_or_unwanted_session(tmp_path):
    root = tmp_path / "sessions"
    done = _session_with(root, ["neutrophil"] * 3, target=3)
    assert not done.current.is_open  # closed when the third white cell came
    # killed between the last cell and closing: state.json still says open
    state = json.loads((done.current.folder / "state.json").read_text())
    state.update(state="open", reason=None)
    (done.current.folder / "state.json").write_text(json.dumps(state))
    again = Sessions(root, CLASS_NAMES, target=3)
    assert again.resumed is None and again.current.id != done.current.id
    assert Session.load(done.current.folder).state["reason"] == "count reached"

    old = again.current.id
    _feed(again, ["lymphocyte"])
    fresh = Sessions(root, CLASS_NAMES, new=True)
    closed = Session.load(root / old)
    assert fresh.current.id != old and fresh.current.is_open and not closed.is_open
    assert closed.state["reason"] == "closed at restart (--new-session)" and (root / old / "report.html").is_file()


def test_start_stop_reset(tmp_path):
    sessions = _session_with(tmp_path / "s", ["neutrophil", "platelet"], target=100)
    told = []
    sessions.on_change = told.append  # the daemon's journal: what people did on the lab page
    first = sessions.current.id
    with pytest.raises(SessionError) as e:
        sessions.start()
    assert e.value.http == 409
    assert sessions.stop()["reason"] == "stopped"
    assert (sessions.current.folder / "report.html").is_file()
    _feed(sessions, ["neutrophil"])  # no open session: nothing recorded
    assert sessions.summary()["cells_total"] == 2
    with pytest.raises(SessionError):
        sessions.stop()
    started = sessions.start(target=200)
    assert started["state"] == "open" and started["target"] == 200 and started["id"] != first
    _feed(sessions, ["monocyte"])
    reset = sessions.reset()
    assert reset["target"] == 200 and reset["cells_total"] == 0 and reset["state"] == "open"
    assert Session.load(tmp_path / "s" / started["id"]).state["reason"] == "reset"
    assert [t.split()[2] for t in told] == ["stopped:", "started", "reset"] and told[1].endswith("target: 200)")
    assert f"session {started['id']} reset (1 cell set aside" in told[2] and reset["id"] in told[2]


def test_review_round_trip_updates_the_count_and_the_report(tmp_path):
    root = tmp_path / "s"
    sessions = _session_with(root, ["neutrophil", "neutrophil", "lymphocyte", "uncertain", "platelet"])
    sessions.stop()
    folder = sessions.current.folder
    before = sessions.summary()["differential"]
    assert before["white_total"] == 3 and before["uncertain"]["count"] == 1
    assert sessions.label(2, "monocyte")["reviewed"] == "monocyte"
    assert sessions.label(1, "confirm")["reviewed"] == "neutrophil"
    sessions.label(4, "basophil")  # an uncertain cell gets its class
    sessions.label(5, NOT_A_CELL)  # debris
    for bad, code in (("dog", 400), ("confirm", 404)):
        with pytest.raises(SessionError) as e:
            sessions.label(99 if code == 404 else 1, bad)
        assert e.value.http == code
    after = Session.load(folder).summary()  # from disk: the review log replayed
    d = after["differential"]
    counts = {r["class"]: r["count"] for r in d["rows"]}
    assert counts["neutrophil"] == 1 and counts["monocyte"] == 1 and counts["basophil"] == 1
    assert d["white_total"] == 4 and d["uncertain"]["count"] == 0 and d["platelets"] == 0
    assert after["reviewed"] == 4 and after["not_cells"] == 1
    page = (folder / "report.html").read_text()  # a closed session's report is rewritten on each label
    assert "4 of 5 cells reviewed" in page and page.count("✓ reviewed") == 4
    assert "(model: Neutrophils)" in page  # cell 2 was relabelled
    assert json.loads((folder / "differential.json").read_text())["differential"]["white_total"] == 4
    assert len(read_jsonl(folder / "reviews.jsonl")) == 4


def test_export_is_a_dataset_that_celltrain_reads(tmp_path):
    from scopelite.train.data import load_folders

    root = tmp_path / "s"
    sessions = _session_with(root, ["neutrophil", "lymphocyte", "monocyte", "uncertain", "platelet", "eosinophil"])
    sessions.label(1, "confirm")
    sessions.label(2, "monocyte")
    sessions.label(3, "confirm")
    sessions.label(4, "uncertain")
    sessions.label(5, NOT_A_CELL)
    out = tmp_path / "data"
    r = export_reviewed([root], out)
    assert r["classes"] == {"monocyte": 2, "neutrophil": 1} and r["cells"] == 3
    assert r["skipped"] == {"unreviewed": 1, "uncertain or not a cell": 2, "no crop": 0, "unreadable crop": 0}
    ds = load_folders(out, 32)
    assert len(ds) == 3 and ds.class_names == CLASS_NAMES
    assert sorted(CLASS_NAMES[i] for i in ds.labels) == ["monocyte", "monocyte", "neutrophil"]
    assert ds.images.shape == (3, 32, 32, 3)
    files = json.loads((out / "export.json").read_text())["files"]
    assert {f["cell"]: f["model_label"] for f in files} == {1: "neutrophil", 2: "lymphocyte", 3: "monocyte"}
    export_reviewed([root / sessions.current.id], out)  # again: the same files, not copies
    assert len(load_folders(out, 32)) == 3


def test_two_devices_sessions_started_in_one_second_export_into_one_folder(tmp_path):
    """Two microscopes' daemons, one second: their sessions get different ids, so their cells do not overwrite
    each other in a shared export folder; sessions that do share an id (made before ids had a suffix) are
    refused, not merged."""
    def second():
        return 1_790_000_000.0

    a = _session_with(tmp_path / "a", ["neutrophil", "lymphocyte"], clock=second)
    b = _session_with(tmp_path / "b", ["monocyte", "eosinophil"], clock=second)
    assert a.current.id != b.current.id and a.current.id[:15] == b.current.id[:15]  # same second, own suffix
    for s in (a, b):
        s.label(1, "confirm")
        s.label(2, "confirm")
    out = tmp_path / "data"
    export_reviewed([tmp_path / "a"], out)
    r = export_reviewed([tmp_path / "b"], out)
    assert r["cells"] == 2
    assert sorted(p.parent.name for p in out.glob("*/*.png")) == ["eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    # an older pair of sessions with one id: refused before anything is written or removed
    clone = tmp_path / "c" / a.current.id
    shutil.copytree(a.current.folder, clone)
    state = json.loads((clone / "state.json").read_text())
    (clone / "state.json").write_text(json.dumps({**state, "started": state["started"] + 0.5}))
    before = sorted(out.rglob("*"))
    with pytest.raises(SessionError, match="share the session id"):
        export_reviewed([tmp_path / "c"], out)  # another session under an id already exported here
    with pytest.raises(SessionError, match="share the session id"):
        export_reviewed([tmp_path / "a", tmp_path / "c"], tmp_path / "fresh")  # two in one export
    assert sorted(out.rglob("*")) == before and not (tmp_path / "fresh").exists()
    export_reviewed([tmp_path / "a"], out)  # the same session again is fine
    r = export_reviewed([tmp_path / "a", a.current.folder], tmp_path / "twice")  # one folder named twice: once
    assert r["cells"] == 2 and len(json.loads((tmp_path / "twice" / "export.json").read_text())["files"]) == 2
    copy = tmp_path / "d" / a.current.id
    shutil.copytree(a.current.folder, copy)  # a copy of the same session (same start): said as such
    with pytest.raises(SessionError, match="two copies of session"):
        export_reviewed([tmp_path / "a", tmp_path / "d"], tmp_path / "copies")
    # a folder exported before session_started was recorded: the clash is told by the cells it lists
    legacy = tmp_path / "legacy"
    shutil.copytree(out, legacy)
    rec = json.loads((legacy / "export.json").read_text())
    for e in rec["files"]:
        e.pop("session_started")
    (legacy / "export.json").write_text(json.dumps(rec))
    export_reviewed([tmp_path / "a"], legacy)  # the session it lists: fine
    clone_cells = [json.loads(x) for x in (clone / "cells.jsonl").read_text().splitlines()]
    (clone / "cells.jsonl").write_text("".join(json.dumps({**c, "score": 0.5} if "id" in c else c) + "\n"
                                               for c in clone_cells))  # another session's cells under the id
    for e in rec["files"]:
        e.pop("session_started", None)
    (legacy / "export.json").write_text(json.dumps(rec))
    with pytest.raises(SessionError, match="share the session id"):
        export_reviewed([tmp_path / "c"], legacy)


def _by_brightness(crops):
    """An adapted model that names a crop by its brightness (the frames of _feed: 30 per cell)."""
    out = np.full((len(crops), len(CLASS_NAMES)), 0.005)
    for i, b in enumerate(crops.reshape(len(crops), -1).mean(axis=1)):
        name, p = ("neutrophil", 0.95) if b < 45 else ("lymphocyte", 0.95) if b < 75 else \
            ("neutrophil", 0.6) if b < 105 else ("monocyte", 0.99) if b < 135 else ("neutrophil", 0.97)
        out[i, CLASS_NAMES.index(name)] = p
    return out


def test_export_self_train_adds_the_unreviewed_cells_the_adapted_model_is_sure_of(tmp_path):
    root = tmp_path / "s"
    sessions = _session_with(root, ["neutrophil", "lymphocyte", "neutrophil", "lymphocyte", "monocyte", "neutrophil"])
    sid = sessions.current.id
    sessions.label(1, "confirm")
    sessions.label(2, "confirm")
    model = FakeClassifier(CLASS_NAMES, InputSpec(32, 32), fn=_by_brightness)
    out = tmp_path / "data"
    r = export_reviewed([root], out, model)
    # cell 3 (the daemon said neutrophil) is a sure lymphocyte, cell 6 a sure neutrophil; cell 4 unsure; cell 5 a
    # monocyte, a class nobody reviewed: judged among neutrophil and lymphocyte it scores too little for either
    assert r["cells"] == 2 and r["self_trained"] == {"lymphocyte": 1, "neutrophil": 1}
    assert r["skipped"]["unreviewed"] == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.png")) == [
        f"lymphocyte/{sid}_2.png", f"lymphocyte/{sid}_3.png", f"neutrophil/{sid}_1.png", f"neutrophil/{sid}_6.png"]
    files = {f["cell"]: f for f in json.loads((out / "export.json").read_text())["files"]}
    assert files[3]["pseudo"] and files[3]["label"] == "lymphocyte" and files[3]["model_label"] == "neutrophil"
    assert files[3]["pseudo_score"] == 0.95 and "pseudo" not in files[1]
    assert "and 2 unreviewed cells the adapted model is sure of: lymphocyte 1, neutrophil 1" in summary_line(r, out)
    sessions.label(3, "eosinophil")  # a person names cell 3 after all: it moves, reviewed, not a guess
    _feed(sessions, ["neutrophil"] * 4, frame0=6)  # cells 7-10, brightness 0, 30, 60, 90
    r = export_reviewed([root], out, model)
    assert r["classes"] == {"eosinophil": 1, "lymphocyte": 1, "neutrophil": 1}
    assert not (out / "lymphocyte" / f"{sid}_3.png").exists() and (out / "eosinophil" / f"{sid}_3.png").is_file()
    # sure neutrophils: 6 (0.97), 7 and 8 (0.95); one reviewed cell per class allows two guesses per class
    assert r["self_trained"] == {"lymphocyte": 1, "neutrophil": 2}
    assert (out / "neutrophil" / f"{sid}_6.png").is_file() and (out / "lymphocyte" / f"{sid}_9.png").is_file()
    # an unreviewed crop that cannot be read (a torn copy) is left out of the guesses, not the export's end
    broken = next(c for c in sessions.current.cells if c["id"] == 10)
    (sessions.current.folder / broken["crop"]).write_bytes(b"torn")
    r = export_reviewed([root], out, model)
    assert r["skipped"]["unreadable crop"] == 1 and r["self_trained"] == {"lymphocyte": 1, "neutrophil": 2}
    assert r["skipped"]["unreviewed"] == 3  # 4, 5 and the third sure neutrophil (10 counts once: unreadable)
    # exported again without --self-train: the guesses go, the reviewed cells stay
    r = export_reviewed([root], out)
    assert r["self_trained"] == {} and sorted(p.parent.name for p in out.glob("*/*.png")) == [
        "eosinophil", "lymphocyte", "neutrophil"]
    assert not any(f.get("pseudo") for f in json.loads((out / "export.json").read_text())["files"])


def test_export_cli(tmp_path):
    root = tmp_path / "s"
    sessions = _session_with(root, ["neutrophil", "lymphocyte"])
    r = invoke_cli("celledge", "export", str(root), "--out", str(tmp_path / "none"))
    assert_one_line_error(r, "no reviewed cells", "2 unreviewed", f"celledge review {root}", "nothing written")
    assert "exported" not in r.stdout and not (tmp_path / "none").exists()
    sessions.label(1, "confirm")
    sessions.label(2, "confirm")
    r = invoke_cli("celledge", "export", str(root), "--out", str(tmp_path / "data"))
    assert r.returncode == 0 and "exported 2 reviewed cells" in r.stdout
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if p.is_dir()) == ["lymphocyte", "neutrophil"]
    for inside in (root, next(root.iterdir()) / "crops", tmp_path):  # among the sessions, or holding them: refused
        r = invoke_cli("celledge", "export", str(root), "--out", str(inside))
        assert_one_line_error(r, "inside the sessions folder")
    assert not (root / "neutrophil").exists()
    mine = tmp_path / "mine"  # another program's export.json there was replaced, exit 0
    mine.mkdir()
    (mine / "export.json").write_text('{"my": "own notes"}')
    r = invoke_cli("celledge", "export", str(root), "--out", str(mine))
    assert_one_line_error(r, "holds an export.json that celledge export did not write")
    assert (mine / "export.json").read_text() == '{"my": "own notes"}' and not (mine / "neutrophil").exists()


def test_self_train_never_guesses_a_platelet_or_a_platelet_sized_cell(tmp_path):
    """A second-site trial: an adapted model fitted on white cells only named 18 unreviewed platelet crops
    'lymphocyte' at 0.9 or more, and export --self-train put them in the training set. Cells field mode counted as
    platelets or found platelet-sized are left out of the guesses (unless the lab reviewed platelets)."""
    root = tmp_path / "s"
    sessions = Sessions(root, CLASS_NAMES)
    for i, (label, kw) in enumerate([("neutrophil", {}), ("lymphocyte", {}), ("uncertain", {"why": "platelet-sized"}),
                                     ("platelet", {}), ("immature_granulocyte", {})]):
        frame = np.full((40, 40, 3), 30 * i + 40 * (i >= 2), np.uint8)  # cells 3-5: brightness 100-160
        sessions.update(frame, {"frame": i, "cells": [{"box": [0, 0, 40, 40], "center": [20.0, 20.0]}],
                                "counted": [_cell(label, **kw)]})
    assert [c.get("why") for c in sessions.current.cells] == [None, None, "platelet-sized", None, None]
    sessions.label(1, "confirm")
    sessions.label(2, "confirm")
    sure = FakeClassifier(CLASS_NAMES, InputSpec(32, 32), fn=lambda crops: np.tile(
        np.where(np.arange(len(CLASS_NAMES)) == CLASS_NAMES.index("lymphocyte"), 0.95, 0.005), (len(crops), 1)))
    r = export_reviewed([root], tmp_path / "data", sure)
    assert r["self_trained"] == {"lymphocyte": 1}  # cell 5 (counted IG, the model says lymphocyte); not 3 nor 4
    files = {f["cell"] for f in json.loads((tmp_path / "data" / "export.json").read_text())["files"]}
    assert files == {1, 2, 5}


def test_a_revision_carries_its_own_why_to_the_session_and_self_training(tmp_path):
    """A cell counted as a white cell and revised to uncertain because most of its views were platelet-sized kept
    no 'why', and --self-train could still export it as the lab's class; the reverse kept a stale one (a review of
    session 34). The revision's own reason replaces the count's, in the session and after a resume."""
    root = tmp_path / "s"
    sessions = Sessions(root, CLASS_NAMES)
    frame = np.full((40, 40, 3), 90, np.uint8)
    boxes = [{"box": [0, 0, 40, 40], "center": [20.0, 20.0], "track": t, "cut": False} for t in (1, 2, 3)]
    sessions.update(frame, {"frame": 0, "cells": boxes, "counted": [
        _cell("lymphocyte", track=1, cell=0), _cell("neutrophil", track=2, cell=1),
        _cell("uncertain", track=3, cell=2, why="platelet-sized")]})
    scores = _cell("lymphocyte")["scores"]
    revised = [{"track": 1, "from": "lymphocyte", "to": "uncertain", "frames": 40, "classified": 9, "best": "lymphocyte",
                "score": 0.9, "scores": scores, "why": "platelet-sized"},
               {"track": 3, "from": "uncertain", "to": "lymphocyte", "frames": 40, "classified": 9, "best": "lymphocyte",
                "score": 0.9, "scores": scores, "why": None}]
    sessions.update(frame, {"frame": 5, "cells": [], "counted": [], "revised": revised})
    assert [c.get("why") for c in sessions.current.cells] == ["platelet-sized", None, None]
    sessions.label(2, "confirm")
    again = Sessions(root, CLASS_NAMES)
    assert [c.get("why") for c in again.current.cells] == ["platelet-sized", None, None]
    sure = FakeClassifier(CLASS_NAMES, InputSpec(32, 32), fn=lambda crops: np.tile(
        np.where(np.arange(len(CLASS_NAMES)) == CLASS_NAMES.index("neutrophil"), 0.95, 0.005), (len(crops), 1)))
    r = export_reviewed([root], tmp_path / "data", sure)
    files = {f["cell"] for f in json.loads((tmp_path / "data" / "export.json").read_text())["files"]}
    assert files == {2, 3} and r["self_trained"] == {"neutrophil": 1}  # cell 1, platelet-sized, is no guess


def test_export_into_a_folder_a_session_counted_is_refused(tmp_path):
    """A walk-through exported into the watched folder (slides/cells), and the next run on slides, resuming the
    session, counted the exported crops as fields (31 cells -> 36, no warning). Refused, nothing written."""
    slides, root = tmp_path / "slides", tmp_path / "s"
    slides.mkdir()
    sessions = _session_with(root, ["neutrophil", "lymphocyte"])
    sessions.current.read_from(None, str(slides))
    sessions.label(1, "confirm")
    for inside in (slides, slides / "cells"):
        r = invoke_cli("celledge", "export", str(root), "--out", str(inside))
        assert_one_line_error(r, f"inside {slides}, which session", "count the exported crops as fields")
    assert list(slides.iterdir()) == []
    r = invoke_cli("celledge", "export", str(root), "--out", str(tmp_path / "cells"))
    assert r.returncode == 0 and "exported 1 reviewed cell" in r.stdout, r.stderr


def test_export_cli_self_train(tmp_path, tiny_run):
    """With the tiny model fitted on generated crops, sessions of such crops: the unreviewed ones it is sure of
    are exported under its class; an Edge TPU-only model is refused with the CPU model's name."""
    import dataclasses

    from scopelite.edge.bundle import copy_bundle, derive_sidecar, write_sidecar
    from scopelite.train.synth import make_crops

    x, y = make_crops(6, size=32, seed=7)
    want = [CLASS_NAMES.index("neutrophil"), CLASS_NAMES.index("lymphocyte")]
    picked = [i for i in range(len(y)) if y[i] in want]
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    for k, i in enumerate(picked):  # each generated crop is one frame, and the counted cell fills it
        frame = cv2.resize(x[i], (40, 40), interpolation=cv2.INTER_LINEAR)
        sessions.update(frame, {"frame": k, "cells": [{"box": [0, 0, 40, 40], "center": [20.0, 20.0]}],
                                "counted": [_cell(CLASS_NAMES[y[i]])]})
    truth = {k + 1: CLASS_NAMES[y[i]] for k, i in enumerate(picked)}
    first = {name: next(c for c, t in truth.items() if t == name) for name in ("neutrophil", "lymphocyte")}
    for cid in first.values():
        sessions.label(cid, "confirm")
    r = invoke_cli("celledge", "export", str(tmp_path / "s"), "--out", str(tmp_path / "data"), "--self-train",
                   str(tiny_run["tflite"]))
    assert r.returncode == 0 and "exported 2 reviewed cells" in r.stdout, r.stderr
    files = json.loads((tmp_path / "data" / "export.json").read_text())["files"]
    guessed = [f for f in files if f.get("pseudo")]
    assert 1 <= len(guessed) <= 4  # at most twice one reviewed cell per class
    assert all(f["pseudo_score"] >= 0.9 and f["label"] == truth[f["cell"]] for f in guessed)
    assert f"and {len(guessed)} unreviewed cells the adapted model is sure of" in r.stdout
    for cid in truth:  # every cell reviewed: nothing left to guess, and it says so (it said nothing)
        if cid not in first.values():
            sessions.label(cid, "confirm")
    r = invoke_cli("celledge", "export", str(tmp_path / "s"), "--out", str(tmp_path / "data_all"), "--self-train",
                   str(tiny_run["tflite"]))
    assert r.returncode == 0 and "warning: --self-train added no cells" in r.stderr, r.stderr
    # an Edge TPU-only model: refused, naming the CPU model beside it
    tpu_dir = tmp_path / "tpu"
    tpu_dir.mkdir()
    cpu = copy_bundle(tiny_run["tflite"], tpu_dir / "model.tflite")
    (tpu_dir / "model_edgetpu.tflite").write_bytes(b"compiled")
    write_sidecar(tpu_dir / "model_edgetpu.tflite", derive_sidecar(
        cpu, tpu_dir / "model_edgetpu.tflite", runtimes=("edgetpu",),
        provenance=dataclasses.replace(cpu.provenance, cpu_model="model.tflite", copied_from=None)))
    r = invoke_cli("celledge", "export", str(tmp_path / "s"), "--out", str(tmp_path / "data3"), "--self-train",
                   str(tpu_dir / "model_edgetpu.tflite"))
    assert_one_line_error(r, "needs the CPU int8 model", "model.tflite")
    r = invoke_cli("celledge", "export", str(tmp_path / "s"), "--out", str(tmp_path / "data3"), "--self-train",
                   str(tiny_run["keras"]))  # the float model: not the Edge TPU message
    assert r.returncode != 0 and "Edge TPU" not in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.tflite").write_bytes(b"not a model")
    r = invoke_cli("celledge", "export", str(tmp_path / "s"), "--out", str(tmp_path / "data2"), "--self-train",
                   str(tmp_path / "bad.tflite"))
    assert_one_line_error(r, "bad.tflite")
    # the packaged PBC model, or a copy of it, was not fitted on these cells: its guesses would become labels (a
    # walk-through's eosinophils went into neutrophil/); refused, saying how to fit one
    from scopelite.edge.packaged import default_model

    copy_bundle(default_model(), tmp_path / "shipped_copy.tflite")
    for shipped in (default_model(), tmp_path / "shipped_copy.tflite"):
        r = invoke_cli("celledge", "export", str(tmp_path / "s"), "--out", str(tmp_path / "data4"), "--self-train",
                       str(shipped))
        assert_one_line_error(r, "is the packaged PBC model", "celltrain fit --preset few-shot")
    assert not any((tmp_path / d).exists() for d in ("data2", "data3", "data4"))


def test_watch_options_that_contradict_sessions(tmp_path):
    (tmp_path / "fields").mkdir()
    folder = str(tmp_path / "fields")  # (a sessions folder inside the folder watched is refused too)
    r = invoke_cli("celledge", "watch", folder, "--sessions", str(tmp_path / "s"))
    assert_one_line_error(r, "--sessions needs --mode field")
    r = invoke_cli("celledge", "watch", folder, "--mode", "field", "--new-session")
    assert_one_line_error(r, "--new-session needs --sessions")
    (tmp_path / "file").write_text("x")
    r = invoke_cli("celledge", "watch", folder, "--mode", "field", "--sessions", str(tmp_path / "file"))
    assert_one_line_error(r, "--sessions", "is a file")
    assert not (tmp_path / "s").exists()


def test_export_records_the_scale_the_cells_were_cut_at_and_fit_trains_at_it(tmp_path):
    """A lab's exported cells carry the daemon's crop scale; celltrain fit records that scale in the new
    model's sidecar instead of measuring the small crops again (which read DeepBioNet's 6 % low)."""
    from scopelite.edge.session_export import recorded_scales
    from scopelite.train.data import load_folders, training_scale

    root = tmp_path / "s"
    first = _session_with(root, ["neutrophil", "lymphocyte"], rbc_fraction=0.1875)
    first.label(1, "confirm")
    first.label(2, "confirm")
    out = tmp_path / "data"
    export_reviewed([root], out)
    scales = recorded_scales(out)
    assert len(scales) == 2 and set(scales.values()) == {0.1875}
    ds = load_folders(out, 64)
    assert training_scale(ds) == (12.0, "as export.json records (the crops were cut at it)")  # 0.1875 x 64
    assert training_scale(ds.subset([1]))[0] == 12.0  # the training split keeps its folder

    # a second export into the same folder keeps the first one's record of the files it did not write again
    # (another daemon's sessions: another start time, so other session ids and file names)
    second = _session_with(tmp_path / "s2", ["monocyte"], rbc_fraction=0.1875, clock=lambda: 1.0e9)
    second.label(1, "confirm")
    export_reviewed([tmp_path / "s2"], out)
    assert len(recorded_scales(out)) == 3

    # a person changes a review: re-exporting moves the cell, it does not train under two labels
    first.label(2, "monocyte")
    export_reviewed([root], out)
    assert len(list(out.glob("*/*.png"))) == 3 and len(recorded_scales(out)) == 3
    assert not (out / "lymphocyte").exists()
    first.label(1, "uncertain")
    export_reviewed([root], out)
    assert len(list(out.glob("*/*.png"))) == 2 and not (out / "neutrophil").exists()  # no empty class folder left

    # a session from before the scale was recorded (its cell lines have no rbc_fraction): fit measures the
    # crops instead, and says for how many images it had one
    legacy = tmp_path / "old"
    old = _session_with(legacy, ["eosinophil"], clock=lambda: 1.1e9)
    lines = [json.loads(x) for x in (old.current.folder / "cells.jsonl").read_text().splitlines()]
    (old.current.folder / "cells.jsonl").write_text("".join(
        json.dumps({k: v for k, v in c.items() if k != "rbc_fraction"}) + "\n" for c in lines))
    old = Sessions(legacy, CLASS_NAMES, clock=lambda: 1.1e9)
    old.label(1, "confirm")
    export_reviewed([legacy], out)
    ds = load_folders(out, 64)
    rbc, how = training_scale(ds)
    assert how.startswith("measured on the images") and "2 of 3 images" in how, how

    # cells cut by two models at different scales: one median would fit neither, so fit measures
    mixed = tmp_path / "mixed"
    export_reviewed([tmp_path / "s2"], mixed)
    third = _session_with(tmp_path / "s3", ["basophil"], rbc_fraction=0.25, clock=lambda: 1.2e9)
    third.label(1, "confirm")
    export_reviewed([tmp_path / "s3"], mixed)
    rbc, how = training_scale(load_folders(mixed, 64))
    assert how.startswith("measured on the images") and "0.1875 to 0.2500" in how
    assert recorded_scales(tmp_path) == {}  # no record: nothing recorded
    (out / "export.json").write_text("{not json")
    assert recorded_scales(out) == {}


def test_cells_counted_after_a_model_reload_carry_the_new_models_scale(tmp_path):
    """A lab hot-reloads its fine-tuned model into the running daemon: the cells counted from then on are cut
    at that model's scale, and their records (and the export) say so."""
    from scopelite.edge.reload import ModelReloader

    scan = make_slide_scan(0, **SCAN)
    old = FakeClassifier(CLASS_NAMES, InputSpec(32, 32, rbc_px=6.0), fn=by_colour)
    new = FakeClassifier(CLASS_NAMES, InputSpec(32, 32, rbc_px=8.0), fn=by_colour)
    sessions = Sessions(tmp_path / "s", CLASS_NAMES, rbc_fraction=6.0 / 32)
    reloader = ModelReloader(lambda path: new, old, "old")
    half = len(scan) // 2

    def emit(rec):
        if rec.get("frame") == half and "event" not in rec:
            reloader.reload("new")

    run_watch(WatchConfig(mode="field"), ScanSource(scan), old, emit, session=sessions, reloader=reloader)
    fractions = [(c["frame"], c["rbc_fraction"]) for c in sessions.current.cells]
    before = {f for fr, f in fractions if fr <= half}
    after = {f for fr, f in fractions if fr > half + 1}
    assert before == {6.0 / 32} and after == {0.25}, fractions  # the new model's 8 px in 32
    assert sessions.current.state["rbc_fraction"] == 6.0 / 32  # the session's own: the model it started with


def test_a_fixed_crop_size_records_no_scale(tmp_path):
    """--crop-size PX follows no ruler: the cells' scale is not known, so the sessions record none (fit measures)."""
    from scopelite.edge.cli import _sessions

    clf = FakeClassifier(CLASS_NAMES, InputSpec(96, 96, rbc_px=18.0))
    auto, _ = _sessions(WatchConfig(mode="field", sessions=str(tmp_path / "a")), clf, live=True)
    fixed, _ = _sessions(WatchConfig(mode="field", sessions=str(tmp_path / "f"), crop_size=360), clf, live=True)
    assert auto.rbc_fraction == 0.1875 and auto.current.state["rbc_fraction"] == 0.1875
    assert fixed.rbc_fraction is None and fixed.current.state["rbc_fraction"] is None


def test_fit_trains_on_self_trained_guesses_but_never_validates_or_tests_on_them(tmp_path):
    """export --self-train's guesses (export.json: pseudo) go to fit's training split only, and the cells people
    labelled split exactly as they would without the guesses."""
    from scopelite.edge.session_export import record_files
    from scopelite.train.config import FitConfig
    from scopelite.train.fit import fit
    from scopelite.train.synth import make_crops

    x, y = make_crops(12, size=32, seed=4)
    names = {CLASS_NAMES.index("neutrophil"): "neutrophil", CLASS_NAMES.index("lymphocyte"): "lymphocyte"}
    keep = [i for i, c in enumerate(y) if c in names]
    labelled, both = tmp_path / "labelled", tmp_path / "both"
    guesses, seen = [], {}
    for k, i in enumerate(keep):
        cls = names[y[i]]
        seen[cls] = seen.get(cls, 0) + 1
        guess = seen[cls] % 2 == 0  # every other cell of a class only as a guess
        for root in (both,) if guess else (labelled, both):
            (root / cls).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / cls / f"{'p' if guess else 'c'}{k:03d}.png"), cv2.cvtColor(x[i], cv2.COLOR_RGB2BGR))
        if guess:
            guesses.append(f"{cls}/p{k:03d}.png")
    record_files(both, [{"file": f, "label": f.split("/")[0], "pseudo": True} for f in guesses])
    splits = {}
    for root in (labelled, both):
        fit(FitConfig(out=str(tmp_path / f"run-{root.name}"), data=str(root), arch="tiny", image_size=32, epochs=1,
                      batch_size=8), log=lambda _: None, verbose=0)
        splits[root.name] = json.loads((tmp_path / f"run-{root.name}" / "split.json").read_text())
    assert set(guesses) <= set(splits["both"]["train"])
    for part in ("val", "test"):
        assert not set(guesses) & set(splits["both"][part]) and splits["both"][part] == splits["labelled"][part]
    assert set(splits["both"]["train"]) == set(splits["labelled"]["train"]) | set(guesses)


def test_export_skips_a_reviewed_crop_that_is_not_an_image(tmp_path):
    root = tmp_path / "s"
    sessions = _session_with(root, ["neutrophil", "lymphocyte", "monocyte"])
    for cid in (1, 2, 3):
        sessions.label(cid, "confirm")
    (sessions.current.folder / sessions.current.by_id[2]["crop"]).write_text("not a png")  # a damaged crop
    out = tmp_path / "data"
    r = export_reviewed([root], out)
    assert r["classes"] == {"monocyte": 1, "neutrophil": 1} and r["skipped"]["unreadable crop"] == 1
    assert not (out / "lymphocyte").exists() or not any((out / "lymphocyte").iterdir())
    assert {f["cell"] for f in json.loads((out / "export.json").read_text())["files"]} == {1, 3}
    for cid in (1, 3):  # every reviewed crop gone: said so, not "review them first"
        (sessions.current.folder / sessions.current.by_id[cid]["crop"]).unlink()
    r = invoke_cli("celledge", "export", str(root), "--out", str(tmp_path / "again"))
    assert_one_line_error(r, "3 whose picture in its session's crops/ folder is missing or damaged")


def test_a_session_whose_state_cannot_be_read_is_named_not_skipped(tmp_path):
    root = tmp_path / "s"
    first = _session_with(root, ["neutrophil", "lymphocyte"])
    first.label(1, "confirm")
    damaged = first.current.folder
    (damaged / "state.json").write_text('{"id": "torn')  # a damaged disk, a hand edit
    r = invoke_cli("celledge", "export", str(root), "--out", str(tmp_path / "data"))
    assert_one_line_error(r, f"{damaged}/state.json cannot be read")
    assert not (tmp_path / "data").exists()
    again = Sessions(root, CLASS_NAMES)  # the daemon's start-up: a new session, and it says why
    assert again.damaged == [damaged] and again.current.folder != damaged and again.resumed is None
    (damaged / "state.json").write_text("null")  # JSON, but not a session's state
    assert_one_line_error(invoke_cli("celledge", "export", str(root), "--out", str(tmp_path / "data")),
                          f"{damaged}/state.json cannot be read")
    newer = Sessions(root, CLASS_NAMES)
    assert damaged in newer.damaged
    # celledge review serves the readable one, and names the one it passed over
    newer.release()
    served = Sessions.reviewing(root)
    assert served.damaged == [damaged] and served.current.id == newer.current.id
    served.release()


def _write_fields(folder, seeds, name="{}.png"):
    """Generated 320x240 fields (one per seed) written into ``folder`` as ``name.format(i)``."""
    from scopelite.train.synth import make_field

    folder.mkdir(exist_ok=True)
    for i, seed in enumerate(seeds):
        cv2.imwrite(str(folder / name.format(i)), cv2.cvtColor(make_field(np.random.default_rng(seed), 320, 240)[0],
                                                                cv2.COLOR_RGB2BGR))
    return folder


def test_a_folder_with_an_unreadable_image_resumed_says_what_it_read_before(tmp_path):
    """A folder holding one unreadable image (half copied), run again into its session: the images counted before are
    skipped, and the run ended with "Error: none of the 1 images ... could be read" and exit 2 (a trial of session 36)
    though the folder's other images had been read. It now ends as a resumed run with nothing new."""
    fields = _write_fields(tmp_path / "fields", range(2))
    (fields / "2.png").write_bytes(cv2.imencode(".png", np.zeros((240, 320, 3), np.uint8))[1].tobytes()[:60])
    watch = ("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(tmp_path / "s"), "--count", "500")
    r = invoke_cli(*watch)
    assert r.returncode == 0 and "2.png" in r.stderr, r.stderr[-2000:]
    r = invoke_cli(*watch)
    assert r.returncode == 0 and "could be read" not in r.stderr, r.stderr[-2000:]
    summary = json.loads(r.stdout.splitlines()[-1])["summary"]
    assert summary["already_counted"] == 2 and summary["unreadable"] == 1 and "held nothing new" in r.stderr


def test_a_folder_that_ends_before_the_count_says_the_session_stays_open(tmp_path):
    fields = _write_fields(tmp_path / "fields", range(3))
    watch = ("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(tmp_path / "s"))
    r = invoke_cli(*watch, "--count", "100", "--max-frames", "1")  # stopped part-way
    assert r.returncode == 0, r.stderr[-2000:]
    assert "stopped at --max-frames with session" in r.stderr and "goes on where it stopped" in r.stderr
    assert f"celledge review {tmp_path / 's'}" in r.stderr
    first = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]
    assert first["state"] == "open" and first["white_total"] > 0
    from_first = len(Session.load(tmp_path / "s" / first["id"]).cells)

    # the same folder again goes on where it stopped: the image counted before is skipped, not counted twice
    r = invoke_cli(*watch)
    summary = json.loads(r.stdout.splitlines()[-1])["summary"]
    assert r.returncode == 0 and summary["session"]["id"] == first["id"] and summary["already_counted"] == 1
    assert "1 image counted into session" in r.stderr
    # each line names its image (absolute), and so does each cell (a frame number restarts with every run)
    lines = [json.loads(x) for x in r.stdout.splitlines()[:-1]]
    assert [x["file"] for x in lines] == [str(fields.resolve() / "1.png"), str(fields.resolve() / "2.png")]
    # each line's "differential" is this run's; its "session" the slide's, the first run's cells included
    last = lines[-1]
    assert last["session"]["id"] == first["id"] and last["session"]["open"]
    assert last["session"]["differential"]["white_total"] == summary["session"]["white_total"]
    assert last["session"]["differential"]["white_total"] == last["differential"]["white_total"] + first["white_total"]
    assert "cells" not in last["session"]["differential"]["uncertain"]  # the review list stays out of each line
    assert set(last["session"]) <= set(summary["session"])  # the summary's session: the lines' keys and more
    assert summary["session"]["differential"] == last["session"]["differential"] and summary["session"]["open"]
    named = [e["session_cell"] for x in lines for e in x["counted"]]  # each counted cell as the session names it
    assert named and all((tmp_path / "s" / first["id"] / "crops" / f"{i}.png").is_file() for i in named)
    assert min(named) > from_first  # numbered on from the first run's cells, not from 0 again
    whole = Session.load(tmp_path / "s" / first["id"])
    assert {c["file"] for c in whole.cells} <= {str(fields.resolve() / f"{i}.png") for i in range(3)}
    assert sum(c["file"] == str(fields.resolve() / "0.png") for c in whole.cells) == from_first
    csv_rows = (tmp_path / "s" / first["id"] / "cells.csv").read_text().splitlines()
    assert csv_rows[0].endswith(",file") and all(row.endswith(".png") for row in csv_rows[1:])

    # the whole folder in one run (the scale smoothed over the folder: a count a little apart)
    r = invoke_cli(*watch, "--new-session")
    anew = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]
    assert r.returncode == 0 and not anew["resumed"] and anew["white_total"] > 0, r.stderr[-2000:]
    assert f"session {first['id']} closed (closed at restart (--new-session)): report" in r.stderr
    total = anew["white_total"]
    assert Session.load(tmp_path / "s" / first["id"]).state["state"] == "closed"
    # again, or one of its images: nothing is counted twice
    for again in (watch, ("celledge", "watch", str(fields / "0.png"), *watch[3:])):
        r = invoke_cli(*again)
        s = json.loads(r.stdout.splitlines()[-1])["summary"]
        assert r.returncode == 0 and s["session"]["id"] == anew["id"] and s["session"]["white_total"] == total
    # another folder: another slide, or more fields of this one? refused until the user says which
    more = tmp_path / "more"
    more.mkdir()
    _write_fields(more, [5], name="a.png")
    into = ("celledge", "watch", str(more), "--mode", "field", "--sessions", str(tmp_path / "s"))
    r = invoke_cli(*into)
    assert_one_line_error(r, f"session {anew['id']} is open with", f"counted from {fields.resolve()}, not from {more}",
                          "--new-session", "--add-to-session")
    assert Session.load(tmp_path / "s" / anew["id"]).differential().summary()["white_total"] == total
    r = invoke_cli(*into, "--add-to-session")  # a slide scanned in parts: its other fields add to it
    assert f"adding {more} to the cells from {fields.resolve()}" in r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["summary"]["session"]["white_total"] > total
    r = invoke_cli(*into, "--add-to-session", "--new-session")
    assert_one_line_error(r, "give one of them")
    # a count reached closes the session, and watch says so
    r = invoke_cli(*watch, "--new-session", "--count", "1")
    done = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]
    assert done["state"] == "closed" and f"session {done['id']} closed (count reached): report" in r.stderr
    assert "counts its cells again" not in r.stderr  # --new-session: asked for
    # the same folder after its session closed: a second count of the slide, said so
    r = invoke_cli(*watch)
    assert r.returncode == 0 and f"was counted into session {done['id']} (count reached)" in r.stderr


def test_a_video_counted_into_an_open_session_is_not_read_again_from_its_start(tmp_path):
    from scopelite.train.synth import make_field

    video = tmp_path / "scan.avi"
    out = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(3):
        frame = cv2.cvtColor(make_field(np.random.default_rng(i), 320, 240)[0], cv2.COLOR_RGB2BGR)
        for _ in range(12):
            out.write(frame)
    out.release()
    watch = ("celledge", "watch", str(video), "--mode", "field", "--sessions", str(tmp_path / "s"), "--count", "100")
    r = invoke_cli(*watch)
    first = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]
    assert r.returncode == 0 and first["state"] == "open" and first["white_total"] > 0, r.stderr[-2000:]
    assert "other fields of this slide add to it with --add-to-session" in r.stderr
    r = invoke_cli(*watch)
    assert_one_line_error(r, f"session {first['id']} was left open by a run on {video.resolve()}",
                          "count its cells twice", "--new-session")
    assert Session.load(tmp_path / "s" / first["id"]).differential().summary()["white_total"] == first["white_total"]
    assert Session.load(tmp_path / "s" / first["id"]).state["sources"] == [str(video.resolve())]


def test_review_ends_on_a_hangup_as_on_ctrl_c(tmp_path):
    """A closed terminal or ssh session (SIGHUP) killed celledge review outright: no summary line, exit -1."""
    import os
    import select
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "s"
    _session_with(root, ["neutrophil", "lymphocyte"], target=2)
    exe = Path(sys.executable).parent / "celledge"
    p = subprocess.Popen([str(exe), "review", str(root), "--http", "127.0.0.1:0"], preexec_fn=default_signals,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([p.stderr], [], [], 60)[0], "celledge review printed nothing in 60 s"
        assert "review at http://127.0.0.1:" in p.stderr.readline()
        p.send_signal(signal.SIGHUP)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
    assert p.returncode == 0, err
    assert "0 of 2 cells reviewed" in err and "Traceback" not in err


def test_review_says_the_lines_of_a_sessions_logs_it_could_not_read(tmp_path):
    """Two damaged lines of cells.jsonl: watch and export said so, review served the session without them in
    silence (a hunt of session 37)."""
    import os
    import select
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "s"
    _session_with(root, ["neutrophil", "lymphocyte", "monocyte"], target=3)
    log = next(root.glob("*/cells.jsonl"))
    lines = log.read_text().splitlines(keepends=True)
    lines[1] = "{not json\n"
    log.write_text("".join(lines))
    exe = Path(sys.executable).parent / "celledge"
    p = subprocess.Popen([str(exe), "review", str(root), "--http", "127.0.0.1:0"], preexec_fn=default_signals,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        while not any("review at http://" in x for x in seen):
            assert select.select([p.stderr], [], [], 60)[0], f"celledge review printed {seen} in 60 s"
            seen.append(p.stderr.readline())
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
    assert any("1 line of its logs could not be read and was skipped (cells.jsonl line 2)" in x for x in seen), seen


def test_review_serves_a_closed_session_with_no_camera(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    root = tmp_path / "s"
    sessions = _session_with(root, ["neutrophil", "lymphocyte", "monocyte"], target=3)
    assert not sessions.current.is_open
    old = sessions.current.id
    _session_with(root, ["neutrophil"])  # a later one, open: the default
    r = invoke_cli("celledge", "review", str(root), "--session", "nope")
    assert_one_line_error(r, "no session nope in", old)
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke_cli("celledge", "review", str(tmp_path / "empty")), "holds no session")
    crops = root / old / "crops"  # a session's own crops folder: "--sessions .../crops makes them" misled
    assert_one_line_error(invoke_cli("celledge", "review", str(crops)), f"is inside session {old}'s folder",
                          f"celledge review {root.resolve()}")

    exe = Path(sys.executable).parent / "celledge"
    p = subprocess.Popen([str(exe), "review", str(root), "--session", old, "--http", "127.0.0.1:0"],
                         preexec_fn=default_signals,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import select

        assert select.select([p.stderr], [], [], 60)[0], "celledge review printed nothing in 60 s"
        line = p.stderr.readline()
        assert f"session {old} (closed; 3 cells, 0 reviewed): review at http://127.0.0.1:" in line, line
        base = re.search(r"(http://\S+/)review", line).group(1)
        with urllib.request.urlopen(base + "review", timeout=10) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
        with urllib.request.urlopen(base + "session", timeout=10) as resp:
            assert json.load(resp)["id"] == old
        with urllib.request.urlopen(base, timeout=10) as resp:  # no camera: the lab page is the review page
            assert resp.url.endswith("/review")
        with urllib.request.urlopen(base + "healthz", timeout=10) as resp:
            assert resp.status == 200 and b"review only" in resp.read()
        # the session is this process's: a watch resuming it, or a second review, is refused meanwhile
        with pytest.raises(Exception, match="in use by"):
            Sessions.reviewing(root, old)

        def post(path, body):
            req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, json.load(resp)
            except urllib.error.HTTPError as e:
                return e.code, json.load(e)

        code, cell = post("cells/2/label", {"label": "monocyte"})
        assert code == 200 and cell["reviewed"] == "monocyte"
        code, body = post("session/start", {})
        assert code == 409 and "review only" in body["error"]
        code, body = post("session/reset", {})
        assert code == 409 and "review only" in body["error"]
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
    assert p.returncode == 0, err
    assert "1 of 3 cells reviewed" in err
    report = json.loads((root / old / "differential.json").read_text())
    rows = {r["class"]: r["count"] for r in report["differential"]["rows"]}
    assert (rows["neutrophil"], rows["lymphocyte"], rows["monocyte"]) == (1, 0, 2)  # the report follows the label
    done = Session.load(root / old)
    assert done.by_id[2]["reviewed"] == "monocyte"
    r = invoke_cli("celledge", "export", str(root / old), "--out", str(tmp_path / "data"))
    assert r.returncode == 0 and "exported 1 reviewed cell" in r.stdout, r.stdout + r.stderr[-2000:]


def test_a_damaged_log_line_is_skipped_and_named(tmp_path):
    root = tmp_path / "s"
    sessions = _session_with(root, ["neutrophil", "lymphocyte", "monocyte"])
    for cid in (1, 2, 3):
        sessions.label(cid, "confirm")
    log = sessions.current.folder / "cells.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    second = next(i for i, line in enumerate(lines) if '"id": 2' in line)
    lines[second] = "{garbled\n"  # a damaged disk: a whole line, not a torn last one
    log.write_text("".join(lines) + "\n")  # a blank line (a hand edit) is no damage
    loaded = Session.load(sessions.current.folder)
    assert loaded.damaged == [f"cells.jsonl line {second + 1}"] and sorted(loaded.by_id) == [1, 3]
    r = invoke_cli("celledge", "export", str(root), "--out", str(tmp_path / "data"))
    assert r.returncode == 0 and "exported 2 reviewed cells" in r.stdout, r.stderr[-2000:]
    assert f"1 line of its logs could not be read and was skipped (cells.jsonl line {second + 1})" in r.stderr


def test_review_of_an_open_session_rewrites_its_report_and_a_watch_holds_its_session(tmp_path):
    root = tmp_path / "s"
    sessions = _session_with(root, ["neutrophil", "lymphocyte"])  # open: a folder ended before its count
    folder = sessions.current.folder
    review = Sessions.reviewing(root)
    assert review.current.is_open and review.current.id == sessions.current.id
    review.label(1, "monocyte")
    rows = {r["class"]: r["count"] for r in json.loads((folder / "differential.json").read_text())["differential"]["rows"]}
    assert (rows["neutrophil"], rows["monocyte"]) == (0, 1)  # written now: no run will write it
    with pytest.raises(SessionError, match="review only"):
        review.start()
    review.release()
    # a watch holds the session it counts into: review refused; and a watch will not resume one under review
    daemon = Sessions(root, CLASS_NAMES, hold=True)
    assert daemon.resumed == sessions.current.id
    with pytest.raises(UserError, match="in use by a running celledge watch"):
        Sessions.reviewing(root)
    daemon.release()
    review = Sessions.reviewing(root)
    with pytest.raises(UserError, match="in use by another celledge"):
        Sessions(root, CLASS_NAMES, hold=True)
    review.release()


def test_a_run_that_counted_nothing_from_a_folder_does_not_bar_it(tmp_path):
    """The folder is recorded at its first counted cell: a run that counted none (blank images) leaves it free."""
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(2):
        cv2.imwrite(str(blank / f"{i}.png"), np.full((240, 320, 3), (200, 180, 230), np.uint8))
    args = ("celledge", "watch", str(blank), "--mode", "field", "--sessions", str(tmp_path / "s"), "--count", "10")
    r = invoke_cli(*args)
    first = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]
    assert r.returncode == 0 and first["cells"] == 0 and first["state"] == "open", r.stderr[-2000:]
    assert "celledge review" not in r.stderr  # nothing to review
    r = invoke_cli(*args)
    again = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]
    assert r.returncode == 0 and again["resumed"] and again["id"] == first["id"], r.stderr[-2000:]
    assert Session.load(tmp_path / "s" / first["id"]).state.get("sources", []) == []


def test_the_sessions_brief_follows_cells_labels_and_closing(tmp_path):
    """Each frame's "session" (Sessions.brief): worked out again after every cell, person's label and close."""
    sessions = Sessions(tmp_path, CLASS_NAMES, target=3)
    _feed(sessions, ["neutrophil", "lymphocyte"])
    b = sessions.brief()
    assert b["open"] and b["differential"]["white_total"] == 2 and sessions.brief() is b  # unchanged: not redone
    sessions.label(1, NOT_A_CELL)
    assert sessions.brief()["differential"]["white_total"] == 1
    _feed(sessions, ["monocyte", "monocyte"], frame0=2)
    b = sessions.brief()
    assert b["differential"]["white_total"] == 3 and not b["open"]  # the target closed it


def test_the_review_hint_can_be_pasted_back_for_a_folder_with_a_space(tmp_path):
    import shlex

    from scopelite.train.synth import make_field

    fields = tmp_path / "fields"
    fields.mkdir()
    cv2.imwrite(str(fields / "0.png"), cv2.cvtColor(make_field(np.random.default_rng(0), 320, 240)[0], cv2.COLOR_RGB2BGR))
    where = tmp_path / "odd dir" / "my sessions"
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(where))
    assert r.returncode == 0, r.stderr[-2000:]
    hint = next(x for x in r.stderr.splitlines() if x.startswith("review its cells: "))
    assert shlex.split(hint.split(": ", 1)[1].split("  (")[0]) == ["celledge", "review", str(where)]
    # with --http as well: the lab page (and its /review) ended with the folder's run, which a walk-through found out
    # by trying it; the hint says so
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(where), "--new-session",
                   "--http", "127.0.0.1:0")
    assert r.returncode == 0, r.stderr[-2000:]
    hint = next(x for x in r.stderr.splitlines() if x.startswith("review its cells: "))
    assert hint.endswith("the lab page and /review ended with the run"), hint


def test_what_a_session_counted_from_decides_what_may_add_to_it(tmp_path):
    """A folder with subfolders run again is the same input; a folder after a camera's cells is another slide's."""
    from scopelite.edge.sources import input_of
    from scopelite.train.synth import make_field

    slide = tmp_path / "slide"
    for sub in ("a", "b"):
        (slide / sub).mkdir(parents=True)
        cv2.imwrite(str(slide / sub / "0.png"), cv2.cvtColor(make_field(np.random.default_rng(len(sub)), 320, 240)[0],
                                                              cv2.COLOR_RGB2BGR))
    watch = ("celledge", "watch", str(slide), "--mode", "field", "--sessions", str(tmp_path / "s"), "--count", "500")
    r = invoke_cli(*watch)
    sid = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]["id"]
    session = Session.load(tmp_path / "s" / sid)
    assert session.state["inputs"] == [str(slide.resolve())]
    for same in (slide, slide / "a", slide / "b" / "0.png"):  # again, a part of it, one image of it
        assert session.elsewhere(input_of(str(same))) is None
    assert session.elsewhere(input_of(str(tmp_path)))  # a folder holding it and others: refused
    other = tmp_path / "other"
    other.mkdir()
    assert session.elsewhere(input_of(str(other))) == str(slide.resolve())
    r = invoke_cli(*watch)  # the whole folder again: resumed (its images skipped), not refused
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["summary"]["already_counted"] == 2

    # a camera's session: a folder is another slide's unless told
    cam = Sessions(tmp_path / "cam", CLASS_NAMES, given="/dev/video0")
    _feed(cam, ["neutrophil"])
    assert cam.current.state["inputs"] == ["/dev/video0"]
    assert cam.current.elsewhere(input_of(str(other))) == "/dev/video0"


def test_a_copy_of_an_image_under_another_name_is_counted_once(tmp_path):
    """A folder holding one field twice (saved again under another name and format) counts its cells once and
    says so; a copy added to a session later (--add-to-session) is skipped like the image it copies; blank images
    are alike without being copies."""
    from scopelite.train.synth import make_field

    fields, more = tmp_path / "fields", tmp_path / "more"
    fields.mkdir()
    more.mkdir()
    images = [cv2.cvtColor(make_field(np.random.default_rng(i), 320, 240)[0], cv2.COLOR_RGB2BGR) for i in range(2)]
    for i, im in enumerate(images):
        cv2.imwrite(str(fields / f"{i}.png"), im)
    plain = invoke_cli("celledge", "watch", str(fields), "--mode", "field")
    once = json.loads(plain.stdout.splitlines()[-1])["summary"]
    assert plain.returncode == 0 and "copies" not in once and once["differential"]["white_total"] > 0
    cv2.imwrite(str(fields / "2 copy.bmp"), images[0])  # the same pixels, another name and format
    cv2.imwrite(str(fields / "3.png"), np.zeros((240, 320, 3), np.uint8))  # blank twice: not copies
    cv2.imwrite(str(fields / "4.png"), np.zeros((240, 320, 3), np.uint8))
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    summary = lines[-1]["summary"]
    assert summary["copies"] == 1 and summary["frames"] == 4
    assert summary["differential"]["white_total"] == once["differential"]["white_total"]
    assert [x for x in lines if x.get("event") == "copy"] == [
        {"event": "copy", "frame": 2, "file": str((fields / "2 copy.bmp").resolve()),
         "copy_of": str((fields / "0.png").resolve())}]
    assert "1 image held the same pixels as an earlier one" in r.stderr and "2 copy.bmp is 0.png" in r.stderr
    # sessions: a copy in a folder added later is skipped as counted already
    for p in (fields / "2 copy.bmp", fields / "3.png", fields / "4.png"):
        p.unlink()
    watch = ("celledge", "watch", "--mode", "field", "--sessions", str(tmp_path / "s"))
    r = invoke_cli(*watch, str(fields))
    first = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]
    cv2.imwrite(str(more / "a.png"), images[1])  # a copy of fields/1.png
    new = cv2.cvtColor(make_field(np.random.default_rng(7), 320, 240)[0], cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(more / "b.png"), new)
    cv2.imwrite(str(more / "c.png"), new)  # a copy of this run's b.png: a copy, not "counted by an earlier run"
    r = invoke_cli(*watch, str(more), "--add-to-session")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.splitlines()[-1])["summary"]
    assert summary["already_counted"] == 1 and summary["frames"] == 1 and summary["session"]["id"] == first["id"]
    assert summary["copies"] == 1 and "c.png is b.png" in r.stderr
    # --loop replays a folder on purpose (no session): no copies, and --max-frames still ends it
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--loop", "--max-frames", "5")
    summary = json.loads(r.stdout.splitlines()[-1])["summary"]
    assert r.returncode == 0 and summary["frames"] == 5 and "copies" not in summary
    cells = Session.load(tmp_path / "s" / first["id"]).cells
    assert {c["file"] for c in cells} >= {str((fields / "0.png").resolve()), str((more / "b.png").resolve())}
    assert str((more / "a.png").resolve()) not in {c["file"] for c in cells}


def test_a_resumed_session_counts_to_the_count_given_now(tmp_path):
    """--count on a run that resumes an open session is its new target (said on stderr); one already reached is
    refused in one line, before anything is counted."""
    fields = _write_fields(tmp_path / "fields", range(4))
    watch = ("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(tmp_path / "s"))
    r = invoke_cli(*watch, "--count", "1000", "--max-frames", "1")
    first = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]
    have = first["white_total"]
    assert r.returncode == 0 and have > 0 and first["state"] == "open"
    r = invoke_cli(*watch, "--count", str(have))
    assert_one_line_error(r, f"session {first['id']} is open with {have} white cells counted", "--count", "reached")
    assert Session.load(tmp_path / "s" / first["id"]).state["target"] == 1000  # nothing changed
    r = invoke_cli(*watch, "--count", str(have + 1))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"session {first['id']}: counting to {have + 1} white cells (--count; it was counting to 1000)" in r.stderr
    done = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]
    assert done["id"] == first["id"] and done["state"] == "closed" and done["white_total"] >= have + 1
    assert done["differential"]["target"] == have + 1


def test_a_folder_of_links_records_the_folder_given_not_where_the_images_lie(tmp_path):
    """Sessions record what a run was given: after a folder of links to another folder's images, that other
    folder is another input (refused without --add-to-session), not the same one."""
    real, links = _write_fields(tmp_path / "real", range(3)), tmp_path / "links"
    links.mkdir()
    (links / "0.png").symlink_to(real / "0.png")
    r = invoke_cli("celledge", "watch", str(links), "--mode", "field", "--sessions", str(tmp_path / "s"))
    sid = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]["id"]
    assert r.returncode == 0 and Session.load(tmp_path / "s" / sid).cells
    r = invoke_cli("celledge", "watch", str(real), "--mode", "field", "--sessions", str(tmp_path / "s"))
    assert_one_line_error(r, f"session {sid} is open with", f"counted from {links.resolve()}, not from {real}",
                          "--add-to-session")


def test_a_session_from_before_inputs_were_recorded_keeps_the_folders_it_counted_from(tmp_path):
    """The first run that records what it was given into an older session (cells, no ``inputs``) records the
    folders the earlier cells came from too: the earlier folder is not refused afterwards as another slide's."""
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    _feed(sessions, ["neutrophil"])
    cur = sessions.current
    cur.cells[-1]["file"] = str(tmp_path / "slideA" / "1.png")  # as a cell counted from slide A's folder
    cur.state.pop("inputs", None)  # written before inputs were recorded
    assert cur.counted_from() == [str(tmp_path / "slideA")]
    cur.read_from(None, str(tmp_path / "slideB"))  # --add-to-session slideB
    assert cur.state["inputs"] == [str(tmp_path / "slideA"), str(tmp_path / "slideB")]
    assert cur.elsewhere(str(tmp_path / "slideA")) is None and cur.elsewhere(str(tmp_path / "slideB")) is None
    assert json.loads((cur.folder / "state.json").read_text())["inputs"] == cur.state["inputs"]


def test_a_session_resumed_with_another_model_says_so_and_records_both(tmp_path, tiny_run):
    """A session counted with the shipped model and resumed with an adapted one went on silently: its differential
    mixed two models and nothing recorded which classified which cell."""
    fields = _write_fields(tmp_path / "fields", range(3))
    watch = ("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(tmp_path / "s"))
    r = invoke_cli(*watch, "--count", "1000", "--max-frames", "1")
    first = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]
    assert r.returncode == 0 and first["white_total"] > 0 and "mixes the two models" not in r.stderr
    n = len(Session.load(tmp_path / "s" / first["id"]).cells)
    r = invoke_cli(*watch, "--max-frames", "1")  # the same model again: nothing to say
    assert r.returncode == 0 and "mixes the two models" not in r.stderr, r.stderr[-2000:]
    n2 = len(Session.load(tmp_path / "s" / first["id"]).cells)
    other = _write_fields(tmp_path / "other", [7])  # another slide with the other model: refused, nothing recorded
    r = invoke_cli("celledge", "watch", str(other), "--mode", "field", "--sessions", str(tmp_path / "s"), "--model",
                   str(tiny_run["tflite"]))
    assert r.returncode == 2 and "another slide?" in r.stderr and "mixes the two models" not in r.stderr
    assert len(Session.load(tmp_path / "s" / first["id"]).state["models"]) == 1
    r = invoke_cli(*watch, "--model", str(tiny_run["tflite"]))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"session {first['id']} counted its {n2} cells so far with bloodcell_int8.tflite" in r.stderr
    assert "goes on with model.tflite" in r.stderr and "--new-session" in r.stderr
    models = Session.load(tmp_path / "s" / first["id"]).state["models"]
    assert [m["file"] for m in models] == ["bloodcell_int8.tflite", "model.tflite"]
    assert models[0]["cells_before"] == 0 and models[1]["cells_before"] == n2 >= n > 0
    assert models[1]["sha256"] == load_sidecar(tiny_run["tflite"]).sha256


def test_an_edge_tpu_build_is_the_same_model_as_its_cpu_model():
    """Their files differ (the compiled one is another file): a daemon falling back to the CPU after the
    accelerator was unplugged must not be told its differential mixes two models."""
    from scopelite.edge.bundle import model_record, same_model

    cpu = load_sidecar(default_model())
    cpu_rec = model_record(cpu)
    tpu_rec = {**cpu_rec, "file": "model_edgetpu.tflite", "sha256": "1" * 64}  # same source, another file
    assert cpu_rec["source_sha256"] == cpu.provenance.source.sha256
    assert same_model(cpu_rec, tpu_rec) and same_model(cpu_rec, cpu_rec)
    assert not same_model(cpu_rec, {**tpu_rec, "source_sha256": "2" * 64})
    assert not same_model({"sha256": "a"}, {"sha256": "b"}) and same_model({"sha256": "a"}, {"sha256": "a"})


def test_report_with_a_session_is_the_slides_count_over_every_run(tmp_path):
    """--report after a resume held only the last run's cells, with no --count (the session keeps it)."""
    fields = _write_fields(tmp_path / "fields", range(3))
    watch = ("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(tmp_path / "s"),
             "--report", str(tmp_path / "rep"))
    r = invoke_cli(*watch, "--count", "1000", "--max-frames", "1")
    first = json.loads(r.stdout.splitlines()[-1])["summary"]["session"]
    assert r.returncode == 0 and first["white_total"] > 0
    r = invoke_cli(*watch)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.splitlines()[-1])["summary"]
    rep = json.loads((tmp_path / "rep" / "differential.json").read_text())
    assert rep["run"]["session"]["id"] == first["id"] and rep["run"]["session"]["state"] == "open"
    d = rep["differential"]
    assert d["white_total"] == summary["session"]["white_total"] > summary["differential"]["white_total"]
    assert d["target"] == 1000 and not d["done"]
    assert f"{d['white_total']} white cells" in (tmp_path / "rep" / "differential.txt").read_text()


def test_each_frames_count_comes_from_a_running_tally_that_matches_the_cells(tmp_path):
    """Sessions.brief (every frame's line) read the count from every cell of the session after each change:
    0.5 s at 100,000 cells, a session left open for weeks. Now a tally kept as cells are added, revised and
    labelled; after every step, and after a reload from disk, it is the count worked out from the cells."""
    rng = np.random.default_rng(3)
    s = Session.create(tmp_path, CLASS_NAMES, target=None, min_score=0.5, wbc_count=7.0)
    choices = [*CLASS_NAMES, "uncertain"]
    for step in range(120):
        op = rng.choice(["add", "add", "revise", "label"]) if s.cells else "add"
        if op == "add":
            lab = str(rng.choice(choices))
            s.add({"label": lab, "best": lab if lab != "uncertain" else "monocyte", "score": 0.9, "track": step},
                  None)
        elif op == "revise":
            cid = int(rng.integers(1, len(s.cells) + 1))
            to = str(rng.choice(choices))
            s.revise(cid, {"to": to, "best": to if to != "uncertain" else "basophil", "score": 0.4}, step)
        else:
            cid = int(rng.integers(1, len(s.cells) + 1))
            s.label(cid, str(rng.choice([*choices, NOT_A_CELL, "confirm"])))
        assert s.brief() == s.differential().brief(), (step, op)
    assert s.brief()["white_total"] > 0 and s.brief()["uncertain"]["count"] > 0
    again = Session.load(s.folder)
    assert again.brief() == again.differential().brief() == s.brief()
    assert again.add({"label": "neutrophil", "best": "neutrophil", "score": 0.9}, None)["id"] == len(s.cells) + 1


def test_sessions_keep_the_order_they_were_started_in_when_the_clock_steps_back(tmp_path):
    """A Pi without a clock battery, after a power cut and before it finds a time server, starts with its clock
    behind: the session started then is still the latest (resumed, reviewed, compared with the one before)."""
    from scopelite.edge.session import list_sessions

    t = [2.0e9]
    sessions = Sessions(tmp_path / "s", CLASS_NAMES, clock=lambda: t[0])
    first = sessions.current.id
    _feed(sessions, ["neutrophil"])
    sessions.stop()
    t[0] = 1.9e9  # about three years behind
    sessions.start()
    second = sessions.current.id
    _feed(sessions, ["lymphocyte"])
    assert [d.name for d in list_sessions(tmp_path / "s")] == [first, second]
    sessions.release()
    assert Sessions(tmp_path / "s", CLASS_NAMES).resumed == second
    assert Sessions.reviewing(tmp_path / "s").current.id == second
    # sessions from before the order was recorded come first, by their start time
    legacy = json.loads((tmp_path / "s" / first / "state.json").read_text())
    del legacy["seq"]
    (tmp_path / "s" / first / "state.json").write_text(json.dumps(legacy))
    assert [d.name for d in list_sessions(tmp_path / "s")] == [first, second]


def _count_from_every_cell(session):
    """A session's differential made again from every cell, as it was before the running tally."""
    from scopelite.edge.session import effective_label

    d = session._no_cells()
    for c in session.cells:
        lab = effective_label(c)
        if lab == NOT_A_CELL:
            continue
        if lab == "uncertain":
            d.review.append({"ref": {"id": c["id"]}, "best": c["best"], "score": c["score"],
                             "reviewed": c["reviewed"] is not None})
        else:
            d.add_label(lab)
    return d.summary(), sum(c["reviewed"] is not None for c in session.cells), sum(
        effective_label(c) == NOT_A_CELL for c in session.cells)


def test_the_running_count_equals_one_made_from_every_cell(tmp_path):
    """Cells added, revised by the model and labelled by people in any order (to and from uncertain and not a
    cell): the count, its review list and the review progress, kept as they change, equal a count made again
    from every cell, also after the session is read back from its folder."""
    import random

    rng = random.Random(3)
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    cur = sessions.current
    models = [*CLASS_NAMES, "uncertain"]

    def same(session):
        full, reviewed, not_cells = _count_from_every_cell(session)
        assert session.differential().summary() == full
        brief = session.summary(cells=False)
        assert brief["differential"] == {**full, "uncertain": {"count": full["uncertain"]["count"]}}
        assert (brief["reviewed"], brief["not_cells"]) == (reviewed, not_cells)
        assert session.summary()["differential"] == full

    for step in range(400):
        op = rng.random()
        if op < 0.45 or not cur.cells:
            _feed(sessions, [rng.choice(models)], frame0=step)
        elif op < 0.7:
            to = rng.choice(models)
            cur.revise(rng.choice(cur.cells)["id"], {"to": to, "best": to if to != "uncertain" else "basophil",
                                                     "score": round(rng.random(), 3), "frames": 5}, step)
        else:
            cur.label(rng.choice(cur.cells)["id"], rng.choice([*CLASS_NAMES, "uncertain", NOT_A_CELL, "confirm"]))
        if step % 40 == 0:
            same(cur)
    same(cur)
    full = _count_from_every_cell(cur)[0]
    assert full["uncertain"]["count"] > 5 and sum(r["count"] for r in full["rows"]) > 50
    sessions.release()
    same(Session.load(cur.folder))


def test_lines_and_states_of_the_wrong_shape_are_named_as_damaged_not_trusted(tmp_path):
    """JSON of the wrong shape in a session's files (a hand edit, another program) is named and left out like a
    line that is not JSON: no traceback in watch, review or export, and export writes nothing outside --out."""
    from scopelite.edge.session import list_sessions

    root = tmp_path / "sessions"
    sessions = _session_with(root, ["neutrophil", "lymphocyte", "monocyte"])
    folder = sessions.current.folder
    sessions.label(1, "confirm")
    sessions.release()
    with open(folder / "cells.jsonl", "a") as f:
        for line in ({"id": 9}, {"id": 10, "label": "neutrophil", "best": "neutrophil", "score": 0.9,
                                  "crop": str(tmp_path / "elsewhere.png")},
                     {"id": 11, "label": "neutrophil", "best": "neutrophil", "score": 0.9, "center": 5},
                     {"revise": [2], "label": "monocyte"},
                     # a revision's score as text: the report's sort of the scores was a TypeError in every later
                     # watch, and review's label requests failed
                     {"revise": 2, "label": "monocyte", "score": "0.9"},
                     {"id": 12, "label": "neutrophil", "best": "neutrophil", "score": 0.9, "scores": "high"}):
            f.write(json.dumps(line) + "\n")
    with open(folder / "reviews.jsonl", "a") as f:
        for line in ({"id": [1], "label": "monocyte"}, {"id": 2, "label": "../../../escaped"}, {"id": 3, "label": 5},
                     {"id": 3, "label": "lymphocyte"}):
            f.write(json.dumps(line) + "\n")
    s = Session.load(folder)
    assert sorted(s.by_id) == [1, 2, 3]
    assert s.damaged == ["cells.jsonl line 4", "cells.jsonl line 5", "cells.jsonl line 6", "cells.jsonl line 7",
                         "cells.jsonl line 8", "cells.jsonl line 9",
                         "reviews.jsonl line 2", "reviews.jsonl line 3", "reviews.jsonl line 4"]
    assert [c["reviewed"] for c in s.cells] == ["neutrophil", None, "lymphocyte"]
    out = tmp_path / "data"
    r = export_reviewed([root], out)
    assert r["classes"] == {"lymphocyte": 1, "neutrophil": 1}
    assert not (tmp_path / "escaped").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "data", "sessions"]
    # a state.json of the wrong types: that session is named as damaged and left alone
    state = json.loads((folder / "state.json").read_text())
    for bad in ({"target": "x"}, {"labels": [1, 2]}, {"id": 5}, {"wbc_count": "many"}, {"inputs": 5},
                {"models": "x"}, {"state": None}, {"started_at": 5}, {"stopped_at": []}, {"rbc_fraction": "x"}):
        (folder / "state.json").write_text(json.dumps({**state, **bad}))
        damaged = []
        assert list_sessions(root, damaged=damaged) == [] and damaged == [folder], bad
    (folder / "state.json").write_text(json.dumps({k: v for k, v in state.items() if k != "labels"}))
    r = invoke_cli("celledge", "export", str(root), "--out", str(tmp_path / "again"))
    assert_one_line_error(r, "state.json")


def test_a_crop_whose_header_claims_a_huge_image_is_left_out_of_the_report(tmp_path):
    """A damaged crop PNG whose header says 5000x5000 px: OpenCV raised (over the pixel limit celledge sets) instead
    of giving None, and every later watch on that session ended in a traceback while writing the report."""
    import struct
    import subprocess
    import sys
    import zlib

    ok, buf = cv2.imencode(".png", np.full((40, 40, 3), 128, np.uint8))
    png = bytearray(buf.tobytes())
    png[16:24] = struct.pack(">II", 5000, 5000)  # IHDR's width and height, then its CRC made right again
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    (tmp_path / "huge.png").write_bytes(bytes(png))
    (tmp_path / "fine.png").write_bytes(buf.tobytes())
    code = ("import sys; from scopelite.edge.session_report import thumbnail_uri; "  # a fresh process: the limit is set
            "print([str(thumbnail_uri(open(p, 'rb').read()))[:23] for p in sys.argv[1:]])")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "huge.png"), str(tmp_path / "fine.png")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stdout.strip() == "['None', 'data:image/jpeg;base64,']"


def test_an_image_whose_name_is_not_utf8_does_not_break_the_session(tmp_path):
    """A field image named on another system (bytes that are not UTF-8): its cells are counted and the session's
    reports written (the name with escapes); the session stays usable run after run."""
    import os

    scan = make_slide_scan(0, **SCAN)
    fields = tmp_path / "fields"
    fields.mkdir()
    cv2.imwrite(str(fields / "a.png"), np.ascontiguousarray(scan.frame(0)[..., ::-1]))
    os.rename(fields / "a.png", fields / os.fsdecode(b"caf\xe9.png"))
    for _ in range(2):  # again: the same session, resumed
        r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(tmp_path / "s"),
                       "--out", str(tmp_path / "lines.jsonl"))
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-1500:]
    folder = next((tmp_path / "s").iterdir())
    assert "caf\\udce9.png" in (folder / "cells.csv").read_text() and (folder / "report.html").is_file()


def test_reviewing_each_closed_session_leaves_no_file_open(tmp_path):
    """A daemon counting slide after slide (--count, --http): each session reviewed after it closed opened
    reviews.jsonl again, and starting the next one left it open: one file per slide, until the process's
    limit (1024) ended the run."""
    import os

    sessions = Sessions(tmp_path / "s", CLASS_NAMES, target=1, hold=True)
    open_files = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    before = None
    for k in range(30):
        _feed(sessions, ["neutrophil"], frame0=k)
        assert not sessions.current.is_open  # --count 1 reached
        sessions.label(sessions.current.cells[0]["id"], "lymphocyte")  # the review after the count
        sessions.start()  # the next slide
        if k == 2:
            before = open_files()
    assert open_files() <= before
    sessions.release()


def test_an_open_ended_session_closes_at_max_cells_and_the_count_goes_on_in_the_next(tmp_path, monkeypatch):
    """A daemon counting all day into one session without --count held every cell in memory (3 KB each) until
    the service's memory limit killed it, and a restart resumed the same session into the same end."""
    import scopelite.edge.session as session_mod

    told = []
    _, _, _, scan = _scan_run(tmp_path / "unused")  # the same scan, into one session, for comparison
    monkeypatch.setattr(session_mod, "MAX_CELLS", 4, raising=False)  # (raising: the code before had no limit)
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    sessions.on_note = told.append
    run_watch(WatchConfig(mode="field"), ScanSource(make_slide_scan(0, **SCAN)),
              FakeClassifier(CLASS_NAMES, InputSpec(32, 32), fn=by_colour), lambda rec: None, session=sessions)
    folders = list_sessions(tmp_path / "s")
    loaded = [Session.load(f) for f in folders]
    n = len(scan.cells)
    assert n > 8 and [len(x.cells) for x in loaded] == [4] * (n // 4) + ([n % 4] if n % 4 else [])
    assert all(x.state["state"] == "closed" and "4 cells" in x.state["reason"] for x in loaded[:-1])
    assert loaded[-1].is_open and len(told) == len(loaded) - 1 and "goes on counting" in told[0]
    for x in loaded:  # every revision names a cell of its own session, and no line is damaged
        assert not x.damaged
        revised = [r for r in read_jsonl(x.folder / "cells.jsonl") if "revise" in r]
        assert all(r["revise"] in x.by_id for r in revised)
    total = collections.Counter(effective_label(c) for x in loaded for c in x.cells)
    one = collections.Counter(effective_label(c) for c in Session.load(list_sessions(tmp_path / "unused")[0]).cells)
    assert sum(total.values()) == sum(one.values()) == n
    sessions.release()


def test_a_folder_run_again_after_a_session_rolled_over_skips_every_image_counted(tmp_path, monkeypatch):
    """Images counted into a session that closed at MAX_CELLS were counted again when the folder was run again
    (the resumed session knew only its own images)."""
    import scopelite.edge.session as session_mod

    monkeypatch.setattr(session_mod, "MAX_CELLS", 3)
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    _feed(sessions, ["neutrophil"] * 5, files=[f"img{i}.png" for i in range(5)])
    assert len(list_sessions(tmp_path / "s")) == 2 and all(sessions.counted(f"img{i}.png") for i in range(5))
    sessions.release()
    again = Sessions(tmp_path / "s", CLASS_NAMES, given=str(tmp_path))  # the folder watched again: resumed
    assert again.resumed and [again.counted(f"img{i}.png") for i in range(6)] == [True] * 5 + [False]
    again.release()


def test_a_rollover_whose_close_cannot_be_written_goes_on_counting_into_the_next_session(tmp_path, monkeypatch):
    """The report of the session closing at MAX_CELLS failed (a full disk): the closed session stayed current and
    no cell was recorded again, even after the disk recovered, with nothing said."""
    import errno

    import scopelite.edge.session as session_mod

    monkeypatch.setattr(session_mod, "MAX_CELLS", 3)
    real = Session.write_reports
    fail = [True]

    def reports(self):
        if fail[0]:
            fail[0] = False
            raise OSError(errno.ENOSPC, "No space left on device", str(self.folder / "report.html"))
        return real(self)

    monkeypatch.setattr(Session, "write_reports", reports)
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    told = []
    sessions.on_disk = told.append
    _feed(sessions, ["neutrophil"] * 5)
    assert sessions.current.is_open and len(sessions.current.cells) == 2
    assert len(list_sessions(tmp_path / "s")) == 2 and sessions.not_recorded == 0
    assert any("no space left on device" in t for t in told)
    sessions.release()


def test_the_reports_gallery_shows_each_classs_least_sure_cells_up_to_a_limit(tmp_path, monkeypatch):
    """A 5,000-cell session's report embedded every thumbnail: 12 MB of HTML built in 3 s while the count waited."""
    import scopelite.edge.session_report as report

    monkeypatch.setattr(report, "GALLERY_PER_CLASS", 3, raising=False)  # (raising: the code before had no limit)
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    for i, score in enumerate([0.9, 0.6, 0.95, 0.7, 0.8]):
        frame = np.full((40, 40, 3), 40 * i, np.uint8)
        sessions.update(frame, {"frame": i, "cells": [{"box": [0, 0, 40, 40], "center": [20.0, 20.0]}],
                                "counted": [_cell("neutrophil", score)]})
    sessions.stop()
    page = (sessions.current.folder / "report.html").read_text()
    shown = [int(x) for x in re.findall(r'<figure data-id="(\d+)">', page)]
    assert shown == [2, 4, 5]  # the three least sure (0.6, 0.7, 0.8), least sure first
    assert "… and 2 more, the surest" in page and "Neutrophils (5)" in page
    sessions.release()


def test_sessions_given_as_one_sessions_folder_is_refused(tmp_path):
    """--sessions S/<id> nested a new session in the old one's folder; review and export saw only the outer one."""
    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    _feed(sessions, ["neutrophil"])
    one = sessions.current.folder
    sessions.release()
    fields = _write_fields(tmp_path / "fields", [0])
    for inside in (one, one / "crops"):
        r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(inside))
        assert_one_line_error(r, "one session's folder", code=2)
        assert f"--sessions {tmp_path / 's'}" in r.stderr
    assert [p.name for p in one.iterdir() if (p / "state.json").exists()] == []  # nothing nested
    r = invoke_cli("celledge", "watch", str(fields), "--mode", "field", "--sessions", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr[-2000:]


def test_export_never_writes_outside_out_for_a_label_with_a_path_in_it(tmp_path):
    """A hand-edited session (its labels, a review) named a class "../../evil": export wrote the crop outside --out."""
    root = tmp_path / "s"
    sessions = _session_with(root, ["neutrophil", "lymphocyte"])
    sessions.label(1, "confirm")
    folder = sessions.current.folder
    sessions.release()
    state = json.loads((folder / "state.json").read_text())
    state["labels"] = [*state["labels"][:-1], "../../evil"]
    (folder / "state.json").write_text(json.dumps(state))
    with open(folder / "reviews.jsonl", "a") as f:
        f.write(json.dumps({"id": 2, "label": "../../evil"}) + "\n")
    out = tmp_path / "a" / "b" / "out"
    r = export_reviewed([root], out)
    assert r["skipped"].get("label not a class name") == 1
    assert not list(tmp_path.rglob("evil")) and [p.parent.name for p in out.glob("*/*.png")] == ["neutrophil"]


def test_export_deletes_and_writes_nothing_outside_out_for_hand_edited_records(tmp_path):
    """export.json naming "../victim/thesis.txt" as an earlier copy of an unreviewed cell: export deleted that file
    and its folder. A session id "../../x" in state.json: the crops were written outside --out."""
    root = tmp_path / "s"
    sessions = _session_with(root, ["neutrophil", "lymphocyte"])
    sessions.label(1, "confirm")
    folder, sid = sessions.current.folder, sessions.current.id
    sessions.release()
    victim = tmp_path / "victim" / "thesis.txt"
    victim.parent.mkdir()
    victim.write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    (out / "export.json").write_text(json.dumps({"last_export": {}, "files": [
        {"file": "../victim/thesis.txt", "session": sid, "cell": 2},
        {"file": str(victim), "session": sid, "cell": 1},
        {"file": "neutrophil/x.png", "session": [sid], "cell": 1},  # unhashable: a TypeError traceback
        {"file": ["a"], "session": sid, "cell": {"id": 1}}]}))
    r = export_reviewed([root], out)
    assert r["cells"] == 1 and victim.read_text() == "mine"
    state = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps({**state, "id": "../../escaped"}))
    with pytest.raises(Exception, match="id missing or of the wrong type"):
        export_reviewed([folder], tmp_path / "out2")
    assert not list(tmp_path.rglob("escaped*"))


def test_hand_edited_session_logs_are_named_damaged_not_a_traceback(tmp_path):
    """cells.jsonl lines with "reviewed": 5 or ["x"], "file": ["a"], and a state.json "started": "yesterday" beside
    another session of the same seq: TypeErrors in export, review and watch --sessions."""
    root = tmp_path / "s"
    sessions = _session_with(root, ["neutrophil", "lymphocyte", "monocyte"])
    folder = sessions.current.folder
    sessions.release()
    lines = [json.loads(x) for x in (folder / "cells.jsonl").read_text().splitlines()]
    lines[0]["reviewed"], lines[1]["reviewed"], lines[2]["file"] = 5, ["x"], ["a"]
    (folder / "cells.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    s = Session.load(folder)
    assert s.cells == [] and len(s.damaged) == 3
    twin = root / "twin"
    shutil.copytree(folder, twin)
    state = json.loads((twin / "state.json").read_text())
    (twin / "state.json").write_text(json.dumps({**state, "id": "twin", "started": "yesterday"}))
    damaged = []
    assert list_sessions(root, damaged=damaged) == [folder] and damaged == [twin]


def test_a_sessions_count_is_at_most_what_a_session_holds(monkeypatch):
    import scopelite.edge.session as session_mod

    monkeypatch.setattr(session_mod, "MAX_CELLS", 7)
    assert WatchConfig(source="x", mode="field", sessions="s", count=7).problems() == []
    assert any("more than a session holds (7 cells)" in p
               for p in WatchConfig(source="x", mode="field", sessions="s", count=8).problems())
    assert WatchConfig(source="x", mode="field", count=8).problems() == []  # no session: nothing held


def test_the_report_says_why_a_cell_is_uncertain_when_its_score_does_not(tmp_path):
    """A visual review: cells scored 0.88 and 0.70 were listed as Uncertain under "(cells scored below 0.5 are
    uncertain)"; their reason (platelet-sized in every view) was in /session only."""
    from scopelite.edge import session_report

    sessions = _session_with(tmp_path / "s", ["neutrophil", "lymphocyte"])
    summary = sessions.current.summary()
    summary["cells"][1] = {**summary["cells"][1], "final": "uncertain", "score": 0.88, "why": "platelet-sized"}
    page = session_report.report_html(summary, lambda cell_id: None)
    assert "#2 · 0.88<br>" in page and '<span class="model">platelet-sized</span>' in page
    assert "of a kind the model cannot tell apart" in page
    empty = Sessions(tmp_path / "e", CLASS_NAMES)  # no cell yet: not "0 of 0 cells reviewed" in red
    page = session_report.report_html(empty.current.summary(), lambda cell_id: None)
    assert "no cells counted yet" in page and "0 of 0" not in page


def test_a_session_stained_unlike_the_training_data_says_so_in_its_report(tmp_path):
    """A visual review: the lab page said "unlike the training data (15 of the last 17 frames)", and the session's
    report, differential.txt and .json said nothing of it. The session counts the frames' stain verdicts; its report
    warns when most were unlike."""
    from scopelite.edge import session_report

    sessions = Sessions(tmp_path / "s", CLASS_NAMES)
    frame = np.full((60, 60, 3), 200, np.uint8)
    for i, verdict in enumerate([True, True, None, False, True]):  # None: no verdict (overexposed): not counted
        sessions.update(frame, {"frame": i, "cells": [], "scale": {"stain": {"unlike_training": verdict}}})
    _feed(sessions, ["neutrophil"], frame0=5)
    assert sessions.current.state["stain"] == {"frames": 4, "unlike": 3}
    sessions.checkpoint()  # a run ends with its session open (a daemon stopped): the tally is kept for its resumption
    again = Session.load(sessions.current.folder)
    assert again.state["stain"] == {"frames": 4, "unlike": 3} and again.is_open
    assert "Stained unlike the model's training data in 3 of 4 frames" in (again.folder / "report.html").read_text()
    sessions.stop()
    page = (sessions.current.folder / "report.html").read_text()
    assert "Stained unlike the model's training data in 3 of 4 frames" in page
    assert json.loads((sessions.current.folder / "state.json").read_text())["stain"] == {"frames": 4, "unlike": 3}
    summary = sessions.current.summary()
    for stain in ({"frames": 4, "unlike": 1}, {"frames": "x"}, None):  # mostly like it, hand-edited, none: no warning
        assert "Stained unlike" not in session_report.report_html({**summary, "stain": stain}, lambda i: None)
