"""celledge watch --http over loopback: health, metrics, latest, snapshot, page; port in use."""
import json
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

from conftest import run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type")


@pytest.fixture
def daemon(tiny_run, synth_dir):
    port = _free_port()
    exe = Path(sys.executable).parent / "celledge"
    p = subprocess.Popen([str(exe), "watch", str(synth_dir / "crops"), "--loop", "--fps", "30", "--model",
                          str(tiny_run["tflite"]), "--http", f"127.0.0.1:{port}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if _get(base + "/healthz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    yield base, port, p
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=10)


def test_endpoints(daemon):
    base, _, p = daemon
    code, body, _ = _get(base + "/healthz")
    assert code == 200 and body == b"ok"
    time.sleep(0.5)
    code, body, ctype = _get(base + "/metrics")
    text = body.decode()
    assert code == 200 and ctype.startswith("text/plain")
    frames = int(next(x for x in text.splitlines() if x.startswith("scopelite_frames_total ")).split()[1])
    assert frames > 3
    assert 'scopelite_inference_ms_bucket{le="+Inf"}' in text and "scopelite_frames_dropped_total" in text
    assert 'scopelite_class_total{label="basophil"}' in text and "scopelite_reconnects_total 0" in text
    code, body, _ = _get(base + "/latest")
    rec = json.loads(body)
    assert code == 200 and rec["label"] in rec["top_k"][0]["label"]
    code, body, ctype = _get(base + "/snapshot.jpg")
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert code == 200 and ctype == "image/jpeg" and img.shape == (96, 96, 3)
    code, body, _ = _get(base + "/")
    page = body.decode()
    assert code == 200 and "Frames per class" in page and "frames are counted, not cells" in page
    assert 'http-equiv="refresh"' in page
    assert "health: ok" in page and "<script src" not in page and "http://" not in page.split("<body>")[1]
    assert _get(base + "/nope")[0] == 404


def test_health_goes_bad_when_frames_stop(tiny_run, tmp_path):
    from scopelite.edge.httpd import Status

    t = [0.0]
    s = Status(["a"], stale_seconds=5, clock=lambda: t[0])
    assert s.healthy() == (False, "no frames yet")
    s.update(np.zeros((4, 4, 3), np.uint8), {"label": "a", "score": 1.0, "infer_ms": 1.5})
    assert s.healthy()[0]
    t[0] = 9.0
    ok, why = s.healthy()
    assert not ok and "no frame for 9 s" in why


def test_the_lab_page_fits_a_phone_and_marks_a_frame_that_is_not_live():
    """A visual review: no viewport tag (a phone drew the page 980 px wide at 0.4x, 6 px text), a broken-image icon
    before the first frame, and a camera gone quiet left its last frame with boxes and labels as if live."""
    from scopelite.edge.httpd import Status

    t = [0.0]
    s = Status(["a"], stale_seconds=5, clock=lambda: t[0])
    page = s.page()
    assert '<meta name="viewport" content="width=device-width' in page
    assert "no frame yet" in page and "<img" not in page
    s.update(np.zeros((4, 4, 3), np.uint8), {"label": "a", "score": 1.0, "infer_ms": 1.5})
    page = s.page()
    assert '<img id="snapshot" class=""' in page and "not live" not in page
    t[0] = 9.0
    page = s.page()
    assert '<img id="snapshot" class="stale"' in page and "the last one received (no frame for 9 s): not live" in page


def test_field_mode_metrics_and_page_show_the_differential():
    """Field mode: counts come from the record's differential (each cell once), not from the cells of each frame."""
    from scopelite.edge.differential import Differential
    from scopelite.edge.httpd import Status
    from scopelite.edge.watch import FieldCounter

    labels = ["basophil", "eosinophil", "erythroblast", "immature_granulocyte", "lymphocyte", "monocyte",
              "neutrophil", "platelet"]
    d = Differential(labels, target=100)
    for label, n in [("neutrophil", 30), ("lymphocyte", 9), ("monocyte", 1), ("erythroblast", 2), ("platelet", 5)]:
        for _ in range(n):
            d.add(np.eye(len(labels))[labels.index(label)])
    d.add(np.full(len(labels), 1 / len(labels)))  # uncertain
    counter = FieldCounter(labels)
    counter.differential = d
    s = Status(labels)
    cell = {"label": "neutrophil", "score": 0.9, "box": [0, 0, 4, 4], "center": [2.0, 2.0]}
    for _ in range(3):  # the same cell in three frames
        s.update(np.zeros((8, 8, 3), np.uint8), {"frame": 0, "cells": [cell], "counted": [],
                                                 "differential": counter.brief(), "infer_ms": 2.0})
    text = s.metrics_text()
    assert 'scopelite_class_total{label="neutrophil"} 30' in text and "scopelite_white_cells_total 40" in text
    # revisions move a cell between rows: gauges, not counters (Prometheus reads a counter's drop as a restart)
    assert "# TYPE scopelite_white_cells_total gauge" in text and "# TYPE scopelite_uncertain_cells_total gauge" in text
    assert 'scopelite_class_total{label="uncertain"} 1' in text and "scopelite_uncertain_cells_total 1" in text
    assert 'scopelite_differential_percent{label="neutrophil"} 75.0' in text
    assert "scopelite_nrbc_per_100_wbc 5.0" in text and "scopelite_differential_target 100" in text
    page = s.page()
    assert "Differential count" in page and "40 / 100 white cells (counting)" in page
    rows = ("Neutrophils", "Lymphocytes", "Monocytes", "Eosinophils", "Basophils", "Immature granulocytes")
    assert [page.index(x) for x in rows] == sorted(page.index(x) for x in rows)  # clinical order
    assert "<td>75.0</td>" in page and "<td>NRBC /100 WBC</td><td>5.0</td>" in page
    assert "<td>Platelets (seen)</td><td>5</td>" in page and "<td>Uncertain (review)</td><td>1</td>" in page


def test_lab_page_advises_on_the_camera_from_the_recent_frames():
    """Field mode's frames say when the camera is overexposed, grainy or unevenly lit: /metrics counts them all the
    run, and the page advises while most of the last CAMERA_WINDOW frames show it (a camera that goes wrong after
    weeks is said at once; one put right stops being said)."""
    from scopelite.edge.httpd import CAMERA_WINDOW, Status

    s = Status(["neutrophil"])
    frame = np.zeros((8, 8, 3), np.uint8)

    def feed(n, **scale):
        for _ in range(n):
            s.update(frame, {"frame": 0, "cells": [], "scale": {"source": "red cells", **scale}, "infer_ms": 1.0})

    feed(3 * CAMERA_WINDOW)  # weeks of good frames
    feed(CAMERA_WINDOW // 2 + 1, overexposed=0.7, noise=9.0, uneven_light=0.2)
    page = s.page()
    assert 'id="camera-overexposed"' in page and "Shorten the exposure" in page
    assert f"({CAMERA_WINDOW // 2 + 1} of the last {CAMERA_WINDOW} frames)" in page
    assert 'id="camera-noise"' in page and 'id="camera-uneven_light"' not in page  # falls off by 20 %: no advice
    text = s.metrics_text()
    assert f'scopelite_camera_frames_total{{condition="overexposed"}} {CAMERA_WINDOW // 2 + 1}' in text
    assert f'scopelite_camera_frames_total{{condition="uneven_light"}} {CAMERA_WINDOW // 2 + 1}' in text
    feed(CAMERA_WINDOW)  # the exposure put right
    assert "camera-" not in s.page()
    s.update(frame, {"label": "neutrophil", "score": 0.9, "scale": {"overexposed": 0.7}})  # crop mode: not read
    assert f'condition="overexposed"}} {CAMERA_WINDOW // 2 + 1}' in s.metrics_text()


def test_port_in_use_is_one_line(daemon, tiny_run, synth_dir):
    _, port, _ = daemon
    r = run_cli("celledge", "watch", str(synth_dir / "crops"), "--model", str(tiny_run["tflite"]),
                "--http", f"127.0.0.1:{port}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [x for x in r.stderr.splitlines() if x.startswith("Error")][0].count("cannot listen on") == 1
    assert "another celledge running" in r.stderr
    r = run_cli("celledge", "watch", str(synth_dir / "crops"), "--model", str(tiny_run["tflite"]),
                "--http", "nosuchhost.invalid:8080")  # not a port in use: not said to be one
    assert r.returncode == 2 and "one of this machine's" in r.stderr and "another celledge" not in r.stderr


def _chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.browser
@pytest.mark.skipif(not _chromium(), reason="no Chromium (.ci/run installs Debian's chromium)")
def test_lab_page_in_headless_chromium(daemon, tmp_path):
    base, _, _ = daemon
    time.sleep(1.0)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", base + "/"], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-1500:]
    html_text = dom.stdout
    assert "health: ok" in html_text and 'id="snapshot"' in html_text
    assert html_text.count('class="bar"') >= 1 and "frames/s" in html_text
    shot = tmp_path / "page.png"
    r = subprocess.run([_chromium(), *flags, "--window-size=800,900", f"--screenshot={shot}", base + "/"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-1500:]
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[1] == 800
    # the snapshot (a stained cell, purple) was drawn: blue well above green somewhere on the page
    b, g = img[..., 0].astype(int), img[..., 1].astype(int)
    assert ((b - g) > 40).sum() > 200


def test_url_of_a_server_on_every_interface_opens_from_elsewhere():
    """--http 0.0.0.0:0: the printed link is this machine's own address and the real port, not 0.0.0.0:0."""
    from scopelite.edge.httpd import Status, serve, url

    server = serve(Status(["a", "b"]), "0.0.0.0", 0)
    try:
        link = url(server)
        host, port = link[len("http://"):].rstrip("/").rsplit(":", 1)
        assert host not in ("0.0.0.0", "", "127.0.0.1") and int(port) == server.server_address[1] > 0
        with urllib.request.urlopen(link + "healthz", timeout=5) as r:
            assert r.status in (200, 503)
    except urllib.error.HTTPError as e:
        assert e.code == 503  # no frame yet: unhealthy, but it answered at that address
    finally:
        server.shutdown()
        server.server_close()
    loop = serve(Status(["a", "b"]), "127.0.0.1", 0)
    try:
        assert url(loop) == f"http://127.0.0.1:{loop.server_address[1]}/"
    finally:
        loop.shutdown()
        loop.server_close()


def test_health_and_the_page_say_why_no_frames_come(tmp_path):
    """A camera that cannot be opened: /healthz and the lab page said only "no frames yet"; now the reason the
    daemon is retrying, until frames come."""
    from scopelite.edge.httpd import Status

    t = [0.0]
    st = Status(["a", "b"], clock=lambda: t[0])
    st.source_trouble("cannot open video source '/dev/video0': no such camera (attempt 4, next in 4 s)")
    ok, why = st.healthy()
    assert not ok and why.startswith("no frames yet: cannot open video source '/dev/video0'")
    assert "no such camera (attempt 4" in st.page()
    # a visual review read "0 reconnects" beside "attempt 4", and a session "open: counting" with no camera
    assert "reopened 0 times" in st.page() and "0 reconnects" not in st.page()
    from scopelite.edge.bundle import CLASS_NAMES
    from scopelite.edge.session import Sessions

    st.session = Sessions(tmp_path / "s", CLASS_NAMES)
    assert "open: waiting for frames" in st.page() and "open: counting" not in st.page()
    st.update(np.zeros((8, 8, 3), np.uint8), {"frame": 0, "label": "a", "score": 0.9, "infer_ms": 1.0})
    assert "open: counting" in st.page()
    assert st.healthy() == (True, "ok") and st.source_problem is None


def test_slow_clients_cannot_hold_every_connection(monkeypatch):
    """Clients that send a header line every little while (each read within its timeout) held all
    MAX_CONNECTIONS for as long as they liked: /healthz went unanswered. The whole request has a deadline."""
    import socket as socket_lib
    import threading
    import time
    import urllib.request

    from scopelite.edge import httpd

    monkeypatch.setattr(httpd, "REQUEST_DEADLINE_S", 1.0)
    server = httpd.serve(httpd.Status(["a"]), "127.0.0.1", 0)
    port = server.server_address[1]
    stop = threading.Event()

    def slow():
        s = socket_lib.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        try:
            while not stop.wait(0.3):
                s.sendall(b"X-Slow: 1\r\n")
        except OSError:  # closed by the server: the point
            pass
        s.close()

    clients = [threading.Thread(target=slow, daemon=True) for _ in range(httpd.MAX_CONNECTIONS)]
    try:
        for c in clients:
            c.start()
        time.sleep(1.6)  # past the deadline, the slow clients still sending
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3)
        except urllib.error.HTTPError as e:  # 503: no frames yet, but answered (the connection was not closed)
            assert e.code == 503
    finally:
        stop.set()
        server.shutdown()


def test_a_connection_beyond_the_limit_is_told_503_not_just_closed():
    """More than MAX_CONNECTIONS at once (a wall of browser tabs, a monitoring system polling hard): the one
    over the limit got its connection closed with no answer, which a client reads as the daemon being down."""
    import socket as socket_lib
    import threading
    import time
    import urllib.error
    import urllib.request

    from scopelite.edge import httpd

    server = httpd.serve(httpd.Status(["a"]), "127.0.0.1", 0)
    port = server.server_address[1]
    held = []
    try:
        for _ in range(httpd.MAX_CONNECTIONS):  # each holds a slot: a request begun, never finished
            s = socket_lib.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            held.append(s)
        time.sleep(0.3)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3)
        assert e.value.code == 503 and e.value.headers["Retry-After"] == "1"
        assert b"too many connections" in e.value.read()
        # a POST's body sent after its headers (http.client, urllib, requests do): the socket was closed with the
        # body still to come, and the client saw a reset instead of the 503 (was its label kept?)
        for _ in range(5):
            s = socket_lib.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /session/stop HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n")
            time.sleep(0.2)
            try:
                s.sendall(b"{}")
                reply = s.recv(200)
            except ConnectionResetError:
                reply = b"reset"
            s.close()
            assert reply.startswith(b"HTTP/1.1 503"), reply
        replies = []  # 30 at once: socketserver's backlog of 5 overflowed and the kernel reset the rest

        def post():
            c = socket_lib.create_connection(("127.0.0.1", port), timeout=10)
            try:
                c.sendall(b"POST /session/stop HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n")
                c.sendall(b"{}")
                replies.append(c.recv(40).split(b"\r\n")[0])
            except OSError as err:
                replies.append(type(err).__name__.encode())
            finally:
                c.close()

        burst = [threading.Thread(target=post) for _ in range(30)]
        for t in burst:
            t.start()
        for t in burst:
            t.join(30)
        assert replies == [b"HTTP/1.1 503 Service Unavailable"] * 30, replies
        for s in held:
            s.close()
        time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:  # slots given back
            assert r.status == 200
    finally:
        for s in held:
            s.close()
        server.shutdown()
