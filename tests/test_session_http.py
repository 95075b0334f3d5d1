"""Sessions over HTTP: the routes, who may change state (loopback, token, cross-site), the lab page's controls."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from scopelite.edge.bundle import CLASS_NAMES
from scopelite.edge.httpd import Status, serve
from scopelite.edge.session import Sessions

from test_session import _feed


def _call(url, method="GET", body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type")


def _post(base, path, body=None, **headers):
    code, raw, _ = _call(base + path, "POST", body if body is not None else {},
                         {"Content-Type": "application/json", **headers})
    return code, json.loads(raw)


@pytest.fixture
def served(tmp_path):
    """A small session (5 cells) behind an HTTP server on loopback: (base URL, sessions, start server fn)."""
    sessions = Sessions(tmp_path / "sessions", CLASS_NAMES, target=100)
    _feed(sessions, ["neutrophil", "lymphocyte", "uncertain", "monocyte", "platelet"])
    servers = []

    def start(token=None):
        server = serve(Status(CLASS_NAMES, session=sessions), "127.0.0.1", 0, token=token)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start, sessions
    for s in servers:
        s.shutdown()


def test_session_routes(served):
    start, sessions = served
    base = start()
    code, raw, ctype = _call(base + "/session")
    s = json.loads(raw)
    assert code == 200 and ctype == "application/json" and s["cells_total"] == 5 and s["state"] == "open"
    assert [c["final"] for c in s["cells"]] == ["neutrophil", "lymphocyte", "uncertain", "monocyte", "platelet"]
    code, png, ctype = _call(base + "/cells/2.png")
    assert code == 200 and ctype == "image/png"
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == (40, 40, 3)
    assert _call(base + "/cells/99.png")[0] == 404
    code, page, _ = _call(base + "/review")
    assert code == 200 and b"/cells/" in page and b"<script src" not in page and b"<link" not in page
    code, lab, _ = _call(base + "/")
    assert code == 200 and b'id="start"' in lab and b'href="/review"' in lab and b"3 white cells of 100" in lab
    # relabel, confirm, mistakes
    code, cell = _post(base, "/cells/3/label", {"label": "basophil"})
    assert code == 200 and cell["reviewed"] == "basophil"
    assert _post(base, "/cells/1/label", {"label": "confirm"})[1]["reviewed"] == "neutrophil"
    assert _post(base, "/cells/1/label", {"label": "cat"})[0] == 400
    assert _post(base, "/cells/77/label", {"label": "confirm"})[0] == 404
    assert _post(base, "/cells/1/label", {"colour": "red"})[0] == 400
    req = urllib.request.Request(base + "/cells/1/label", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 400 and '{"label": "neutrophil"}' in json.loads(e.value.read())["error"]
    s = json.loads(_call(base + "/session")[1])
    assert s["reviewed"] == 2 and s["differential"]["white_total"] == 4 and s["differential"]["uncertain"]["count"] == 0
    req = urllib.request.Request(base + "/session/start", data=b"[1]", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 400 and '{"target": 100}' in json.loads(e.value.read())["error"]
    # start while open, stop, start with a target, reset
    assert _post(base, "/session/start")[0] == 409
    code, stopped = _post(base, "/session/stop")
    assert code == 200 and stopped["state"] == "closed"
    code, report, ctype = _call(base + "/session/report.html")
    assert code == 200 and ctype.startswith("text/html") and b"2 of 5 cells reviewed" in report
    assert _post(base, "/session/start", {"target": "many"})[0] == 400
    assert _post(base, "/session/start", {"target": 10**33})[0] == 400  # held every cell: a session's most is 5000
    assert _post(base, "/session/start", {"target": 100, "count": 5})[0] == 400
    code, started = _post(base, "/session/start", {"target": 200})
    assert code == 200 and started["target"] == 200 and started["id"] != stopped["id"]
    code, err = _post(base, "/session/reset", {"target": 5})  # was 200, the target dropped without a word
    assert code == 400 and "keeps the session's target" in err["error"]
    code, reset = _post(base, "/session/reset")
    assert code == 200 and reset["id"] != started["id"] and reset["state"] == "open"
    assert _post(base, "/session/nope")[0] == 404
    assert _call(base + "/session/stop")[0] == 404  # GET does not change anything


def test_a_label_from_a_page_of_another_session_or_label_is_refused(served):
    """A review page left open across a Reset (or Start, or a roll-over) labelled the new session's cell N; a confirm
    sent after the model relabelled the cell confirmed a label nobody saw. The page sends what it showed."""
    start, sessions = served
    base = start()
    old = json.loads(_call(base + "/session")[1])
    assert _post(base, "/session/reset")[0] == 200
    _feed(sessions, ["neutrophil", "lymphocyte"])  # the new session's cells 1 and 2
    code, err = _post(base, "/cells/2/label", {"label": "eosinophil", "session": old["id"]})
    assert code == 409 and "reload the page" in err["error"]
    new = json.loads(_call(base + "/session")[1])
    assert [c["reviewed"] for c in new["cells"]] == [None, None]
    code, err = _post(base, "/cells/2/label", {"label": "confirm", "session": new["id"], "was": "monocyte"})
    assert code == 409 and "now lymphocyte, not monocyte as shown" in err["error"]
    code, cell = _post(base, "/cells/2/label", {"label": "confirm", "session": new["id"], "was": "lymphocyte"})
    assert code == 200 and cell["reviewed"] == "lymphocyte"
    assert _post(base, "/cells/1/label", {"label": "confirm", "session": 5})[0] == 400
    page = _call(base + "/review")[1].decode()
    assert "session: sid, was: shown[id]" in page  # what the review page sends


def test_no_change_is_taken_once_the_run_is_ending(tmp_path):
    """Stop and Start between the end of the run and its summary made sessions the summary did not name (it said
    one was open that state.json said was closed)."""
    sessions = Sessions(tmp_path / "sessions", CLASS_NAMES, target=100)
    _feed(sessions, ["neutrophil"])
    status = Status(CLASS_NAMES, session=sessions)
    server = serve(status, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        status.ending = True
        for path in ("/session/stop", "/session/start", "/session/reset"):
            code, reply = _post(base, path)
            assert code == 503 and "the run is ending" in reply["error"], path
        assert _post(base, "/cells/1/label", {"label": "monocyte"})[0] == 503
        assert sessions.current.is_open and sessions.summary()["reviewed"] == 0
        assert _call(base + "/session")[0] == 200  # reading goes on
    finally:
        server.shutdown()


def test_token_rules(served):
    start, sessions = served
    base = start(token="s3cret-token")
    assert _call(base + "/session")[0] == 200  # reading needs no token
    code, reply = _post(base, "/cells/1/label", {"label": "monocyte"})
    assert code == 403 and reply["error"].startswith("a token is needed"), reply
    code, reply = _post(base, "/cells/1/label", {"label": "monocyte"}, Authorization="Bearer wrong")
    assert code == 403 and reply["error"].startswith("the token sent is not this daemon's"), reply  # not "needed"
    assert sessions.summary()["reviewed"] == 0  # refused requests changed nothing
    code, cell = _post(base, "/cells/1/label", {"label": "monocyte"}, Authorization="Bearer s3cret-token")
    assert code == 200 and cell["reviewed"] == "monocyte"


def test_cross_site_posts_are_refused(served):
    start, sessions = served
    base = start()  # loopback, no token: the browser of this machine may change state, other sites may not
    code, reply = _post(base, "/session/stop", Origin="http://evil.example")
    assert code == 403 and "cross-site" in reply["error"] and sessions.current.is_open
    # a sandboxed frame or a file: page sends "Origin: null"; a page that renamed itself to 127.0.0.1 (DNS
    # rebinding) names itself in Host and Origin alike
    assert _post(base, "/session/stop", Origin="null")[0] == 403
    port = base.rsplit(":", 1)[1]
    code, reply = _post(base, "/session/stop", Origin=f"http://evil.example:{port}", Host=f"evil.example:{port}")
    assert code == 403 and "own address" in reply["error"] and sessions.current.is_open
    # a name beginning with 127. passed as if it were the address, and reading had no Host rule at all
    evil = f"127.attacker.example:{port}"
    code, reply = _post(base, "/session/stop", Origin=f"http://{evil}", Host=evil)
    assert code == 403 and "own address" in reply["error"] and sessions.current.is_open
    assert _call(base + "/session", headers={"Host": f"attacker.example:{port}"})[0] == 403
    assert _call(base + "/session", headers={"Host": evil})[0] == 403
    for ok in (f"localhost:{port}", f"127.0.0.2:{port}", f"[::1]:{port}", f"0.0.0.0:{port}"):
        assert _call(base + "/session", headers={"Host": ok})[0] == 200, ok
    import socket  # an HTTP/1.0 probe names no Host: not a web page, answered

    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert b" 403 " not in sock.recv(100)
    assert _post(base, "/session/stop", Origin=base)[0] == 200


def test_a_body_shorter_than_its_length_or_an_odd_length_does_nothing(served):
    """A POST whose body ended before its Content-Length (the client half-closed, or was cut off) was carried out on
    what had come; a Content-Length of '+2' or '2_2' was read as a number."""
    import socket

    start, sessions = served
    base = start()
    host, port = base.rsplit("/", 1)[1].split(":")
    for length, body in (("4000", b"{}"), ("+2", b"{}"), ("2_2", b"{}" + b" " * 20)):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"POST /session/reset HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + length.encode()
                  + b"\r\n\r\n" + body)
        s.shutdown(socket.SHUT_WR)
        reply = s.recv(200)
        s.close()
        assert reply.startswith(b"HTTP/1.0 400") or reply.startswith(b"HTTP/1.1 400"), (length, reply)
    assert sessions.current.is_open and sessions.summary()["cells_total"] == 5  # nothing was reset


def test_bodies_and_ids_the_server_cannot_use_are_answered(served):
    """A chunked body (read as none: {} did something else), JSON nested too deeply, a cell id of 5,000 digits:
    each gets an answer, not a closed connection."""
    import http.client

    start, sessions = served
    base = start()
    host, port = base.rsplit("/", 1)[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    c.putrequest("POST", "/session/stop")
    c.putheader("Transfer-Encoding", "chunked")
    c.putheader("Content-Type", "application/json")
    c.endheaders()
    c.send(b"2\r\n{}\r\n0\r\n\r\n")
    r = c.getresponse()
    assert r.status == 411 and sessions.current.is_open
    c.close()
    deep = urllib.request.Request(base + "/cells/1/label", data=b"[" * 1500 + b"]" * 1500, method="POST")
    try:
        urllib.request.urlopen(deep, timeout=5)
    except urllib.error.HTTPError as e:
        assert e.code == 400
    else:
        raise AssertionError("a body nested too deeply was accepted")
    assert _call(base + "/cells/" + "9" * 5000 + ".png")[0] == 404
    assert _post(base, "/cells/" + "9" * 5000 + "/label", {"label": "monocyte"})[0] == 404


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_session_paths_are_cut_to_names_for_the_network():
    from scopelite.edge.session_http import without_paths

    s = {"folder": "/home/lab/sessions/s1", "inputs": ["/data/patient 12/slide3", "0", "rtsp://cam/x"],
         "sources": ["/v/a.mp4"], "cells": [{"id": 1, "file": "/data/p/f1.png"}, {"id": 2}], "state": "open"}
    assert without_paths(s) == {"folder": "s1", "inputs": ["slide3", "0", "rtsp://cam/x"], "sources": ["a.mp4"],
                                "cells": [{"id": 1, "file": "f1.png"}, {"id": 2}], "state": "open"}
    assert s["folder"] == "/home/lab/sessions/s1"  # the session's own record is left as it is
    from scopelite.edge.session_http import without_folders
    assert without_paths({"unrecorded": {"cells": 2, "error": "cannot write /home/lab/s/s1/cells.jsonl (no space)"}}
                         )["unrecorded"]["error"] == "cannot write cells.jsonl (no space)"
    assert without_folders("see http://host:8080/a/b and 3/4") == "see http://host:8080/a/b and 3/4"


def test_daemon_bound_beyond_loopback_makes_up_a_token(tiny_run, synth_dir, tmp_path):
    """celledge watch --sessions --http 0.0.0.0:PORT: the token is printed once and required for changes."""
    port = _free_port()
    exe = Path(sys.executable).parent / "celledge"
    p = subprocess.Popen([str(exe), "watch", str(synth_dir / "fields"), "--mode", "field", "--model",
                          str(tiny_run["tflite"]), "--sessions", str(tmp_path / "sessions"), "--http",
                          f"0.0.0.0:{port}", "--fps", "0.3"],  # 3 fields: about 10 s to test in
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "SCOPELITE_HTTP_TOKEN": ""})
    base = f"http://127.0.0.1:{port}"
    token, lines = None, []
    deadline = time.monotonic() + 60
    while token is None and time.monotonic() < deadline:
        line = p.stderr.readline()
        lines.append(line)
        if line.startswith("HTTP token"):
            token = line.split(":", 1)[1].split()[0]
    try:
        assert token and len(token) >= 16, "".join(lines)
        assert _post(base, "/session/stop")[0] == 403  # not even from this machine without it
        code, answer = _post(base, "/session/stop", Authorization=f"Bearer {token}")
        assert code == 200 and str(tmp_path) not in str(answer), answer  # the answers name no folder either
        session = json.loads(_call(base + "/session")[1])
        assert session["state"] == "closed" and session["reason"] == "stopped"
        # bound beyond loopback, the machine's folder layout is not shown: names only (state.json keeps the paths)
        text = json.dumps(session)
        assert str(tmp_path) not in text and str(synth_dir) not in text, text[:2000]
        assert session["folder"] == next((tmp_path / "sessions").glob("*/state.json")).parent.name
        assert all("/" not in v for v in session.get("inputs", []) + session.get("sources", []))
        assert all("/" not in c.get("file", "") for c in session["cells"])
        # the session records the scale its cells are cut at (celledge export passes it to celltrain fit)
        from scopelite.edge.bundle import load_sidecar
        from scopelite.edge.field import model_rbc_px

        spec = load_sidecar(tiny_run["tflite"]).input
        (state,) = [json.loads(f.read_text()) for f in (tmp_path / "sessions").glob("*/state.json")]
        assert state["rbc_fraction"] == pytest.approx(model_rbc_px(spec) / spec.height, abs=1e-5)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)


def test_the_review_page_links_the_lab_page_only_where_there_is_one(served):
    """Under celledge review "/" is the review page itself: its "Lab page" link led back to it (a visual review)."""
    from scopelite.edge import session_http

    _, sessions = served
    page = session_http.get(sessions, "/review")[1].decode()
    assert '<a href="/">Lab page</a>' in page and '<meta name="viewport"' in page
    sessions.review_only = True
    page = session_http.get(sessions, "/review")[1].decode()
    assert "Lab page" not in page and '<a href="/session/report.html">Report</a>' in page


def test_the_brief_session_answer_has_the_counts_without_the_cell_list(served):
    """The review page asks every 15 s whether the session moved on: /session/brief, not every cell each time."""
    from scopelite.edge import session_http

    _, sessions = served
    full = json.loads(session_http.get(sessions, "/session")[1])
    brief = json.loads(session_http.get(sessions, "/session/brief")[1])
    assert "cells" in full and "cells" not in brief
    assert {k: brief[k] for k in ("id", "state", "cells_total")} == {k: full[k] for k in ("id", "state", "cells_total")}
