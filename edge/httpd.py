"""The daemon's HTTP face (off by default; loopback unless the user names another address).

/healthz      200 "ok" while frames arrive, 503 otherwise
/metrics      Prometheus text: frames, fps, inference latency histogram, dropped, reconnects, per-class counts
              (field mode: each cell once, from the differential: white cells, uncertain, target; frames
              overexposed, noisy or unevenly lit);
              with --sessions, the current session's too (scopelite_session_*: reviews included)
/latest       the last frame's JSON record
/snapshot.jpg the last frame with its crop or cell boxes and labels
/             a small self-refreshing page for the lab (no external assets)
POST /model/reload  load, check and swap in a model (JSON body {"model": PATH}; none: the file in use)
/session, /review, /cells/<id>.png, POST /session/{start,stop,reset}, /cells/<id>/label: sessions and
              their review (``session_http``), with ``--sessions``

GET and HEAD; POST only to the ``actions`` the daemon registers and the session routes. Who may POST:
with a token (``serve(token=...)``: ``--http-token``, or made up at start when --http binds beyond
loopback) only a request carrying ``Authorization: Bearer TOKEN``; without one, only this machine (a
POST from another address, or naming another host in Host: a page that renamed itself to 127.0.0.1, is
refused with 403). A browser's cross-site POST (its Origin is not this server, or "null": a sandboxed or
file page) is refused too; a chunked body is refused (411). Each read of a request may wait REQUEST_TIMEOUT_S
and the whole request REQUEST_DEADLINE_S, and at most MAX_CONNECTIONS are served at once (others get a
503 and are closed), so a slow or hostile client cannot hold the daemon. Bound beyond loopback, the page is open to the
network: ``exposure_warning``.
"""
from __future__ import annotations

import collections
import errno
import hmac
import html
import ipaddress
import json
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import cv2
import numpy as np

from . import session_http
from .differential import TITLES, percent_text
from .errors import UserError
from .illumination import ADVISE
from .preprocess import center_square

LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 250, 1000)
REQUEST_TIMEOUT_S = 5.0
REQUEST_DEADLINE_S = 10.0  # the whole request (line, headers, body): a header line every few seconds ends here
MAX_CONNECTIONS = 16
DRAIN_S = 2.0  # a refused connection's late bytes are read for this long, so the 503 is read, not a reset
MAX_DRAINING = 256
CAMERA_WINDOW = 100  # the lab page's advice on the camera reads the last this many field-mode frames
# field mode: what each frame's scale says about the camera, as (key, page advice when most recent frames show it)
CAMERA = (
    ("overexposed", "The camera is overexposed: much of the view is pure white and red cells fade into it. "
                    "Shorten the exposure or dim the lamp."),
    ("noise", "The images are grainy (the camera's gain): cells are found on a smoothed copy. More light or a "
              "lower camera gain gives better images."),
    ("uneven_light", f"The light falls off by more than {100 * ADVISE:.0f} % across the view: field mode evens it "
                     "out, but centre the lamp and adjust the condenser (Koehler illumination)."),
)


class Status:
    """Thread-safe state shared by the watch loop (writer) and the HTTP handlers (readers)."""

    def __init__(self, labels, stale_seconds: float = 5.0, clock=time.monotonic,
                 model: Callable[[], dict] | None = None, session=None, review_only: bool = False):
        self._lock = threading.Lock()
        self.review_only = review_only  # celledge review: a session's pages, no camera (/ is /review)
        self.labels = list(labels)
        self.session = session  # session.Sessions (--sessions): the lab page shows its count and controls
        # the model in use and its reloads, read where they are kept: reload.ModelReloader.state
        self.model = model or (lambda: {"ok": 0, "failed": 0})
        self.stale_seconds, self.clock = stale_seconds, clock
        self.frames = 0
        self.counts: dict[str, int] = {}  # crop mode: frames per class; field mode: cells counted per class
        self.differential: dict | None = None  # field mode: the record's differential (watch.FieldCounter.brief)
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.latency_sum_ms = 0.0
        self.counters = {"captured": 0, "dropped": 0, "reconnects": 0, "unreadable": 0}
        self.unlike_frames = 0  # field mode: frames stained unlike the model's training data (edge/ood.py)
        self.stain_distance: float | None = None
        # field mode: frames each camera condition was seen in (totals for /metrics), and the last CAMERA_WINDOW
        # frames' conditions (the page's advice follows a camera that goes wrong after weeks, not the run's start)
        self.camera_frames = {key: 0 for key, _ in CAMERA}
        self._camera: collections.deque[tuple[bool, ...]] = collections.deque(maxlen=CAMERA_WINDOW)
        # the stain verdicts of the last CAMERA_WINDOW frames that had one: the page's banner reads these (a count
        # since the start showed a new stain weeks late, and an old one weeks after it was gone)
        self._stain: collections.deque[bool] = collections.deque(maxlen=CAMERA_WINDOW)
        self.last_record: dict | None = None
        self._last_frame: np.ndarray | None = None
        self.last_time = 0.0
        self.started = clock()
        self._fps = 0.0
        self.source_problem: str | None = None  # why no frames come (``source_trouble``)
        # the run is over (its summary and report are being written): changes are refused, 503, not taken after them
        self.ending = False

    def update(self, frame: np.ndarray, rec: dict, counters: dict | None = None) -> None:
        now = self.clock()
        with self._lock:
            if self.last_time:
                dt = max(now - self.last_time, 1e-6)
                self._fps = 0.9 * self._fps + 0.1 * (1.0 / dt) if self._fps else 1.0 / dt
            self.frames += 1
            self.source_problem = None
            self.last_time, self.last_record, self._last_frame = now, rec, frame
            ms = rec.get("infer_ms", 0.0)
            self.latency_sum_ms += ms
            self.latency_buckets[next((i for i, b in enumerate(LATENCY_BUCKETS_MS) if ms <= b),
                                      len(LATENCY_BUCKETS_MS))] += 1
            scale = rec.get("scale") or {}
            if "cells" in rec and not (rec.get("no_colour") or rec.get("dark")):  # field mode: what the frame says
                # about the camera (a frame left out of the count, the lamp off, says nothing of it)
                seen = (bool(scale.get("overexposed")), bool(scale.get("noise")),
                        (scale.get("uneven_light") or 0.0) > ADVISE)
                self._camera.append(seen)
                for (key, _), flag in zip(CAMERA, (seen[0], seen[1], bool(scale.get("uneven_light")))):
                    self.camera_frames[key] += flag
            stain = scale.get("stain")
            if stain is not None:
                self.stain_distance = stain["distance"]
                self.unlike_frames += bool(stain["unlike_training"])
                if stain["unlike_training"] is not None:  # an overexposed frame's clipped colours: no verdict
                    self._stain.append(bool(stain["unlike_training"]))
            if "differential" in rec:  # field mode: the differential counts each cell once
                self.differential = rec["differential"]
                self.counts = _differential_counts(self.differential)
            elif "label" in rec:  # crop mode: one cell per frame
                self.counts[rec["label"]] = self.counts.get(rec["label"], 0) + 1
            if counters:
                self.counters.update(counters)

    def healthy(self) -> tuple[bool, str]:
        if self.review_only:
            return True, "review only (no camera)"
        with self._lock:
            problem = f": {self.source_problem}" if self.source_problem else ""
            if not self.frames:
                return False, "no frames yet" + problem
            age = self.clock() - self.last_time
        if age > self.stale_seconds:
            return False, f"no frame for {age:.0f} s" + problem
        return True, "ok"

    def source_trouble(self, reason: str | None) -> None:
        """Why the source gives no frames (a ``reconnecting`` event's reason: the camera cannot be opened, the
        stream ended); None once frames come again. /healthz and the lab page say it."""
        with self._lock:
            self.source_problem = reason

    def fps(self) -> float:
        with self._lock:
            return self._fps if self.clock() - self.last_time <= self.stale_seconds else 0.0

    def metrics_text(self) -> str:
        current = self.session.summary(cells=False) if self.session is not None else None  # its own lock
        model = self.model()  # the reloader's lock
        with self._lock:
            lines = [
                "# HELP scopelite_frames_total Frames classified.", "# TYPE scopelite_frames_total counter",
                f"scopelite_frames_total {self.frames}",
                "# HELP scopelite_frames_dropped_total Frames dropped because inference fell behind.",
                "# TYPE scopelite_frames_dropped_total counter",
                f"scopelite_frames_dropped_total {self.counters['dropped']}",
                "# HELP scopelite_reconnects_total Times the source was reopened.",
                "# TYPE scopelite_reconnects_total counter",
                f"scopelite_reconnects_total {self.counters['reconnects']}",
                "# HELP scopelite_unreadable_total Images of a folder source skipped because they could not be read.",
                "# TYPE scopelite_unreadable_total counter",
                f"scopelite_unreadable_total {self.counters.get('unreadable', 0)}",
                "# HELP scopelite_unlike_training_frames_total Frames stained unlike the model's training data.",
                "# TYPE scopelite_unlike_training_frames_total counter",
                f"scopelite_unlike_training_frames_total {self.unlike_frames}",
                "# HELP scopelite_camera_frames_total Field-mode frames overexposed, noisy (read through a "
                "smoothed copy) or lit unevenly (evened out).",
                "# TYPE scopelite_camera_frames_total counter",
                *(f'scopelite_camera_frames_total{{condition="{key}"}} {n}' for key, n in self.camera_frames.items()),
                "# HELP scopelite_stain_distance The latest frame's stain distance to the training data.",
                "# TYPE scopelite_stain_distance gauge",
                f"scopelite_stain_distance {'NaN' if self.stain_distance is None else self.stain_distance}",
                "# HELP scopelite_fps Frames per second (smoothed).", "# TYPE scopelite_fps gauge",
                f"scopelite_fps {self._fps:.3f}",
                "# HELP scopelite_inference_ms Inference latency per frame.",
                "# TYPE scopelite_inference_ms histogram",
            ]
            cum = 0
            for b, n in zip(LATENCY_BUCKETS_MS, self.latency_buckets):
                cum += n
                lines.append(f'scopelite_inference_ms_bucket{{le="{b}"}} {cum}')
            lines += [f'scopelite_inference_ms_bucket{{le="+Inf"}} {self.frames}',
                      f"scopelite_inference_ms_sum {self.latency_sum_ms:.3f}",
                      f"scopelite_inference_ms_count {self.frames}",
                      "# HELP scopelite_class_total Cells counted once each (field mode) or frames (crop mode) "
                      "per class.",
                      "# TYPE scopelite_class_total counter"]
            for lab in _label_order(self.labels, self.counts):
                lines.append(f'scopelite_class_total{{label="{lab}"}} {self.counts.get(lab, 0)}')
            if self.differential is not None:
                lines += _differential_metrics(self.differential)
            lines += _model_metrics(model)
            if current is not None:
                lines += _session_metrics(current, self.labels)
        return "\n".join(lines) + "\n"

    def snapshot_jpeg(self) -> bytes | None:
        with self._lock:
            frame, rec = self._last_frame, self.last_record
        if frame is None:
            return None
        img = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if rec and "cells" in rec:
            boxes = [(c["box"], f"{c['label']} {c['score']:.2f}") for c in rec["cells"]]
        else:
            h, w = frame.shape[:2]
            s = center_square(frame).shape[0]
            s = int((rec or {}).get("scale", {}).get("crop", s))  # crop mode's square, reframed or a site's
            y, x = h // 2 - s // 2, w // 2 - s // 2
            boxes = [([x, y, x + s, y + s], f"{rec.get('label')} {rec.get('score', 0):.2f}" if rec else "")]
        for (x0, y0, x1, y1), text in boxes:
            cv2.rectangle(img, (x0, y0), (x1, y1), (40, 200, 40), 2)
            (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            x = max(2, min(x0 + 3, img.shape[1] - tw - 2))  # a box cut by the frame's edge: its label stays whole
            cv2.putText(img, text, (x, max(y0 - 5, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 120, 20), 1,
                        cv2.LINE_AA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        return buf.tobytes() if ok else None

    def page(self) -> str:
        ok, why = self.healthy()
        with self._lock:
            counts, diff = dict(self.counts), self.differential
            stains = list(self._stain)
            recent = list(self._camera)
        banner = "".join(
            f'<p class="bad camera" id="camera-{key}"><b>{html.escape(text)}</b> ({n} of the last {len(recent)} '
            'frames)</p>'
            for i, (key, text) in enumerate(CAMERA) if (n := sum(r[i] for r in recent)) > len(recent) / 2)
        if stains and (unlike := sum(stains)) > len(stains) / 2:
            banner += ('<p id="unlike" class="bad"><b>These images are unlike the training data</b> '
                      f'({unlike} of the last {len(stains)} frames): the model was trained on another lab\'s stain and '
                      'will make more mistakes here. Calibrate this microscope (<code>celledge calibrate</code>) or '
                      'adapt the model to this lab\'s cells (<code>celltrain fit --preset few-shot</code>): '
                      '"Other labs" in scopelite\'s documentation (docs/cross-lab.md).</p>')
        panel = ""
        if self.session is not None:  # the technician's count is the session's, not the run's
            from .review_page import lab_panel  # noqa: PLC0415

            current = self.session.summary(cells=False)
            diff, panel = current["differential"], lab_panel(current, frames_come=ok)
        if diff is not None:
            body = panel + _differential_html(diff)
        else:
            total = sum(counts.values()) or 1
            bars = "".join(
                f'<div class="row"><span class="name">{html.escape(str(k))}</span>'
                f'<span class="bar" style="width:{300 * v / total:.0f}px"></span>'
                f'<span class="n">{v} ({100 * v / total:.1f} %)</span></div>'
                for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
            body = ('<h2>Frames per class</h2><p class="note">crop mode: the cell in the centre of each frame; '
                    f'frames are counted, not cells</p><div id="counts">{bars or "<p>no frames yet</p>"}</div>')
        # no frame yet: no broken image; a camera gone quiet: its last frame is marked as such, not shown as live
        if not self.frames:
            frame = '<p id="snapshot" class="note">no frame yet</p>'
        else:
            stale = "" if ok else (f'<p class="bad" id="stale">the frame below is the last one received '
                                   f'({html.escape(why)}): not live</p>')
            frame = (f'{stale}<img id="snapshot" class="{"" if ok else "stale"}" '
                     f'src="/snapshot.jpg?t={time.time():.0f}" alt="latest frame">')
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>scopelite</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="2">
<style>body{{font-family:sans-serif;margin:1em;color:#222}}.row{{display:flex;align-items:center;margin:2px 0}}
.name{{width:11em}}.bar{{display:inline-block;height:14px;background:#7a4fa0;margin-right:6px}}
.ok{{color:#1a7f37}}.bad{{color:#b42318}}img{{max-width:min(640px,100%);height:auto;border:1px solid #ccc}}
img.stale{{opacity:.45}}table{{display:block;max-width:100%;overflow-x:auto}}
table{{border-collapse:collapse}}td,th{{padding:2px 10px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}
.sum td{{border-top:1px solid #999;font-weight:bold}}.note{{color:#666}}
progress{{width:300px}}</style></head><body>
<h1>scopelite</h1>
<p id="health" class="{'ok' if ok else 'bad'}">health: {html.escape(why)}</p>
<p id="fps">{self.fps():.1f} frames/s · {self.frames} frames · {self.counters['dropped']} dropped ·
reopened {self.counters['reconnects']} times · {self.counters.get('unreadable', 0)} unreadable</p>
{banner}{frame}
{body}</body></html>"""


def _differential_counts(d: dict) -> dict[str, int]:
    """Cells per class from a differential summary: white rows, erythroblasts, platelets, others, uncertain."""
    counts = {r["class"]: r["count"] for r in d["rows"]}
    counts.update(erythroblast=d["nrbc"], platelet=d["platelets"], **d["other"])
    counts["uncertain"] = d["uncertain"]["count"]
    return counts


def _differential_metrics(d: dict) -> list[str]:
    # gauges: a cell whose class is revised as more views come moves between rows, and a counter must never go down
    # (Prometheus reads a drop as a restart: rate() and increase() spike)
    lines = ["# HELP scopelite_white_cells_total White cells counted since the daemon started (each cell once), over "
             "every session and between them (revisions can lower it); a session's own: scopelite_session_white_cells.",
             "# TYPE scopelite_white_cells_total gauge", f"scopelite_white_cells_total {d['white_total']}",
             "# HELP scopelite_uncertain_cells_total Cells scored below --min-score (for review, not in the %).",
             "# TYPE scopelite_uncertain_cells_total gauge",
             f"scopelite_uncertain_cells_total {d['uncertain']['count']}",
             "# HELP scopelite_differential_percent Each white-cell class as a percentage of the white cells.",
             "# TYPE scopelite_differential_percent gauge"]
    lines += [f'scopelite_differential_percent{{label="{r["class"]}"}} {r["percent"]}' for r in d["rows"]]
    lines += ["# HELP scopelite_nrbc_per_100_wbc Erythroblasts per 100 white cells.",
              "# TYPE scopelite_nrbc_per_100_wbc gauge",
              f"scopelite_nrbc_per_100_wbc {d['nrbc_per_100_wbc'] if d['nrbc_per_100_wbc'] is not None else 0}"]
    if d.get("target"):
        lines += ["# HELP scopelite_differential_target White cells to count (--count).",
                  "# TYPE scopelite_differential_target gauge", f"scopelite_differential_target {d['target']}"]
    return lines


def _label_order(labels, counts) -> list[str]:
    """The model's labels in its order, then any other label counted (a person's, say), sorted."""
    return list(labels) + sorted(set(counts) - set(labels))


def _label_value(v) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _session_metrics(s: dict, labels) -> list[str]:
    """The current session (``--sessions``) as GET /session has it: people's labels over the model's. Gauges,
    not counters: a review moves a cell between classes and a new session starts from zero."""
    d = s["differential"]
    counts = _differential_counts(d)

    def gauge(name: str, help_: str, value) -> list[str]:
        return [f"# HELP scopelite_session_{name} {help_}", f"# TYPE scopelite_session_{name} gauge",
                f"scopelite_session_{name} {value}"]

    lines = ["# HELP scopelite_session_info The current session: its id (its folder's name) and state.",
             "# TYPE scopelite_session_info gauge",
             f'scopelite_session_info{{id="{_label_value(s["id"])}",state="{_label_value(s["state"])}"}} 1']
    lines += gauge("open", "1 while the current session is open (counting), 0 once it is closed.",
                   int(s["state"] == "open"))
    lines += gauge("white_cells", "White cells in the current session's differential.", d["white_total"])
    disk = s.get("disk") or {}
    if disk.get("free_mb") is not None:
        lines += gauge("disk_free_megabytes", "Room left on the sessions folder's disk (looked at every 30 s while "
                       "counting); under 100 MB cells are counted without their pictures.", disk["free_mb"])
    lines += gauge("writable", "1 while the session's files can be written, 0 while cells are counted but not "
                   "recorded (a disk gone read-only or failing).", int(not (s.get("unrecorded") or {}).get("error")))
    if s.get("target"):
        lines += gauge("target", "White cells the current session counts before it closes.", s["target"])
    lines += gauge("uncertain_cells", "Cells of the current session listed for review, not in the %.",
                   d["uncertain"]["count"])
    lines += ["# HELP scopelite_session_class_cells Cells of the current session per class (a person's label "
              "over the model's).", "# TYPE scopelite_session_class_cells gauge"]
    lines += [f'scopelite_session_class_cells{{label="{_label_value(lab)}"}} {counts.get(lab, 0)}'
              for lab in _label_order(labels, counts)]
    lines += ["# HELP scopelite_session_differential_percent Each white-cell class as a percentage of the "
              "current session's white cells.", "# TYPE scopelite_session_differential_percent gauge"]
    lines += [f'scopelite_session_differential_percent{{label="{r["class"]}"}} {r["percent"]}' for r in d["rows"]]
    lines += gauge("cells", "Cells the current session recorded (not-a-cell ones included).", s["cells_total"])
    lines += gauge("cells_reviewed", "Cells of the current session a person has labelled.", s["reviewed"])
    lines += gauge("cells_to_review", "Cells of the current session no person has labelled yet.",
                   s["cells_total"] - s["reviewed"])
    return lines


def _model_metrics(model: dict) -> list[str]:
    lines = ["# HELP scopelite_model_reloads_total Model reloads (SIGHUP, POST /model/reload) by result.",
             "# TYPE scopelite_model_reloads_total counter"]
    lines += [f'scopelite_model_reloads_total{{result="{k}"}} {model[k]}' for k in ("ok", "failed")]
    if model.get("model"):
        lines += ["# HELP scopelite_model_info The model in use: its file and sha256.",
                  "# TYPE scopelite_model_info gauge",
                  f'scopelite_model_info{{file="{_label_value(model["model"])}",'
                  f'sha256="{_label_value(model.get("sha256") or "")}"}} 1']
    if model.get("mtime") is not None:
        lines += ["# HELP scopelite_model_mtime_seconds Modification time of the model file in use (Unix time).",
                  "# TYPE scopelite_model_mtime_seconds gauge", f"scopelite_model_mtime_seconds {model['mtime']}"]
    return lines


def _differential_html(d: dict) -> str:
    """The differential as a lab reads it: white cells in clinical order, NRBC, platelets, uncertain, progress."""
    n, target = d["white_total"], d.get("target")
    if target:
        state = "done" if d["done"] else "counting"
        progress = (f'<p id="progress"><progress max="{target}" value="{min(n, target)}"></progress> '
                    f'{n} / {target} white cells ({state})</p>')
    else:
        progress = f'<p id="progress">{n} white cells counted (no --count target)</p>'
    rows = "".join(
        f'<tr><td>{html.escape(TITLES.get(r["class"], r["class"]))}</td><td>{r["count"]}</td>'
        f'<td>{pct}</td><td>{ci}</td>'
        f'<td><span class="bar" style="width:{2 * r["percent"]:.0f}px"></span></td></tr>'
        for r in d["rows"] for pct, ci in [percent_text(r, n)])
    nrbc = "–" if d["nrbc_per_100_wbc"] is None else f'{d["nrbc_per_100_wbc"]:.1f}'
    others = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{v}</td><td></td><td></td><td></td></tr>"
                     for k, v in d["other"].items())
    return f"""<h2>Differential count</h2>{progress}
<table id="differential"><tr><th>Cell</th><th>Count</th><th>%</th><th>95 % CI</th><th></th></tr>{rows}
<tr class="sum"><td>White cells</td><td>{n}</td><td>{"100.0" if n else "–"}</td><td></td><td></td></tr>
<tr><td>NRBC /100 WBC</td><td>{nrbc}</td><td colspan="3" class="note">({d["nrbc"]} erythroblasts)</td></tr>
<tr><td>Platelets (seen)</td><td>{d["platelets"]}</td><td></td><td></td><td></td></tr>{others}
<tr><td>Uncertain (review)</td><td>{d["uncertain"]["count"]}</td><td colspan="3" class="note">not in the
percentages</td></tr></table>
<p class="note">Each cell is counted once, however long it stays in view; its class may be revised as more views of
it come (a platelet-sized speck beside a white cell becomes uncertain), so a row can go down as well as up.</p>"""


MAX_BODY = 4096  # bytes of a POST body


def _handler(status: Status, actions: dict | None = None, token: str | None = None):
    actions = dict(actions or {})

    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S  # socket timeout: a request line or headers that never come end here
        head_only = False

        def log_message(self, *args):  # keep stdout for JSON lines
            pass

        def setup(self):
            super().setup()
            # REQUEST_TIMEOUT_S bounds each read; this bounds them all (16 clients sending a header line every 3 s
            # held every connection, /healthz too)
            self._deadline = threading.Timer(REQUEST_DEADLINE_S, self._too_slow)
            self._deadline.daemon = True
            self._deadline.start()

        def _too_slow(self):
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def finish(self):
            self._deadline.cancel()
            super().finish()

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self._deadline.cancel()  # answering (a POST refused before its body was read)
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not self.head_only:
                self.wfile.write(body)

        def do_HEAD(self):  # noqa: N802 - http.server's name
            self.head_only = True
            self.do_GET()

        def do_GET(self):  # noqa: N802 - http.server's name
            self._deadline.cancel()  # the request is in: the answer (a large session's report) may take its time
            path = self.path.split("?", 1)[0]
            if token is None and not self._public and self.headers.get("Host") \
                    and self._foreign_host() is not None:  # no Host at all (an HTTP/1.0 probe): not a web page
                # bound to this machine only: a page on another name that resolved here (DNS rebinding) reads nothing
                return self._send(403, b"this server answers requests for this machine's own address only",
                                  "text/plain; charset=utf-8")
            if path == "/healthz":
                ok, why = status.healthy()
                self._send(200 if ok else 503, why.encode(), "text/plain; charset=utf-8")
            elif path == "/metrics":
                self._send(200, status.metrics_text().encode(), "text/plain; version=0.0.4")
            elif path == "/latest":
                self._send(200, json.dumps(status.last_record).encode(), "application/json")
            elif path == "/snapshot.jpg":
                jpg = status.snapshot_jpeg()
                if jpg is None:
                    self._send(503, b"no frame yet", "text/plain")
                else:
                    self._send(200, jpg, "image/jpeg")
            elif path == "/" and status.review_only:  # no camera: the session's review page is the page
                self.send_response(302)
                self.send_header("Location", "/review" + (self.path[1:] if self.path.startswith("/?") else ""))
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/":
                self._send(200, status.page().encode(), "text/html; charset=utf-8")
            elif status.session is not None and (routed := session_http.get(status.session, path,
                                                                             public=self._public)) is not None:
                self._send(*routed)
            else:
                self._send(404, b"not found", "text/plain")

        def _refused(self) -> str | None:
            """Why this POST may not change anything (None: it may): token, loopback, cross-site rules."""
            origin = self.headers.get("Origin")
            if origin and origin.split("://", 1)[-1] != self.headers.get("Host"):  # "null": a sandboxed or file page
                return f"cross-site request from {origin} refused"
            if token is not None:
                given = self.headers.get("Authorization") or ""
                if not given:
                    return "a token is needed: send Authorization: Bearer TOKEN (printed by celledge at start)"
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):  # not "needed": one was sent
                    return "the token sent is not this daemon's: send Authorization: Bearer TOKEN, as celledge " \
                           "printed it at start (--http-token, or the one it made up)"
                return None
            if not is_loopback(self.client_address[0]):
                return "changes are accepted from this machine only (loopback)"
            host = self._foreign_host()
            if host is not None:
                return f"changes are accepted for this machine's own address only, not {host or 'no Host'} " \
                       "(a web page that renamed itself to reach it)"
            return None

        @property
        def _public(self) -> bool:
            """Bound beyond loopback: the network may read the pages (the answers name no folder of this machine)."""
            return not is_loopback(self.server.server_address[0])

        def _foreign_host(self) -> str | None:
            """The Host named, unless it is this machine by address or as localhost (None). A name such as
            127.attacker.example passed as '127.' before: DNS rebinding lets a web page reach the daemon so."""
            raw = (self.headers.get("Host") or "").lower()
            host = raw[1:raw.index("]")] if raw.startswith("[") and "]" in raw else raw.rsplit(":", 1)[0]
            if host == "localhost":
                return None
            try:  # 0.0.0.0 and :: reach this machine's own listeners too (http://0.0.0.0:8080/ on Linux)
                ip = ipaddress.ip_address(host)
                return None if ip.is_loopback or ip.is_unspecified else host
            except ValueError:
                return host

        def _reply(self, code: int, obj: dict) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        def do_POST(self):  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            action = actions.get(path)
            if action is None and (status.session is None or not session_http.is_post_route(path)):
                return self._reply(404, {"ok": False, "error": "no such action"})
            refused = self._refused()
            if refused:
                return self._reply(403, {"ok": False, "error": refused})
            if status.ending:  # a Stop or Start now made sessions after the summary that named another one open
                return self._reply(503, {"ok": False, "error": "the run is ending: no more changes (start it again)"})
            if self.headers.get("Transfer-Encoding"):  # a chunked body was read as none: {} did something else
                return self._reply(411, {"ok": False, "error": "send the body with a Content-Length"})
            length = (self.headers.get("Content-Length") or "0").strip()
            n = int(length) if re.fullmatch(r"[0-9]{1,9}", length) else -1  # not '+22', '2_2' (int() took them)
            if not 0 <= n <= MAX_BODY:
                return self._reply(400, {"ok": False, "error": f"body must be at most {MAX_BODY} bytes of JSON"})
            try:
                raw = self.rfile.read(n) if n else b""
                self._deadline.cancel()  # the request is in
                if len(raw) != n:  # the client stopped (or was cut off) short of its Content-Length: do nothing
                    return self._reply(400, {"ok": False, "error": f"the body ended after {len(raw)} of its {n} "
                                                                   "bytes (Content-Length): nothing was done"})
                body = json.loads(raw or b"{}") if n else {}
                if not isinstance(body, dict):
                    raise ValueError
            except (ValueError, RecursionError):
                example = ('{"model": "/path/model.tflite"}' if action is not None else '{"target": 100}'
                           if path == "/session/start" else '{"label": "neutrophil"}' if "/label" in path else "{}")
                return self._reply(400, {"ok": False, "error": f"body must be a JSON object, e.g. {example}"})
            if action is None:
                return self._send(*session_http.post(status.session, path, body, public=self._public))
            code, reply = action(body)
            self._reply(code, reply)

    return Handler


def parse_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    try:
        port_n = int(port)
        if not 0 <= port_n < 65536:
            raise ValueError
    except ValueError:
        raise UserError(f"--http {value!r} is not HOST:PORT, e.g. 127.0.0.1:8080") from None
    return host.strip("[]") or "127.0.0.1", port_n


_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 37\r\nConnection: close\r\n\r\ntoo many connections: try again soon\n")


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS at once; more get a 503 at once, and what they still send
    is read and dropped by one thread for up to DRAIN_S before the socket closes."""

    daemon_threads = True
    # connections waiting to be accepted: socketserver's 5 overflowed under 50 at once, and the kernel reset the
    # ones it could not queue (a client saw ECONNRESET, not an answer)
    request_queue_size = 128

    def __init__(self, *args, **kwargs):
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._draining: list[tuple[socket.socket, float]] = []
        self._drain_lock = threading.Lock()
        self._to_drain = threading.Event()  # set while a socket waits: the drainer sleeps on it, not in a poll
        self._drainer: threading.Thread | None = None
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self._busy(request)
            return
        super().process_request(request, client_address)

    def _busy(self, request) -> None:
        """Answer 503 without a thread of its own and without waiting. A socket closed with bytes still to come is
        reset, and a client that sends a POST's body after its headers (http.client, urllib, requests) saw the reset,
        not the answer, and could not tell whether its label was kept: so the socket is half-closed after the answer
        and what comes after is read and dropped (``_drain``) until the client closes, or DRAIN_S."""
        try:
            request.setblocking(False)
            try:
                for _ in range(16):  # at most 1 MB now: a client that sends without end does not hold the server
                    if not request.recv(65536):
                        break
            except OSError:  # nothing more to read now (or the client has gone)
                pass
            request.send(_BUSY)
            request.shutdown(socket.SHUT_WR)
        except OSError:
            request.close()
            return
        with self._drain_lock:
            if len(self._draining) >= MAX_DRAINING:  # a flood: closed at once, as before
                request.close()
                return
            self._draining.append((request, time.monotonic() + DRAIN_S))
            self._to_drain.set()
            if self._drainer is None:
                self._drainer = threading.Thread(target=self._drain, name="http-drain", daemon=True)
                self._drainer.start()

    def _drain(self) -> None:
        while True:
            self._to_drain.wait()
            with self._drain_lock:
                items = list(self._draining)
                if not items:  # all closed: sleep until the next refused connection
                    self._to_drain.clear()
                    continue
            try:
                readable = set(select.select([sock for sock, _ in items], [], [], 0.05)[0])
            except (OSError, ValueError):  # a socket closed under us
                readable = set()
            now = time.monotonic()
            for sock, deadline in items:
                done = now > deadline
                if sock in readable:
                    try:
                        done = done or not sock.recv(65536)
                    except OSError:
                        done = True
                if done:
                    with self._drain_lock:
                        self._draining.remove((sock, deadline))
                    sock.close()

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        """One line instead of socketserver's traceback; a client that went away is not worth one."""
        import sys  # noqa: PLC0415

        err = sys.exc_info()[1]
        if not isinstance(err, (ConnectionError, TimeoutError)):
            print(f"warning: HTTP request from {client_address[0]} failed: {type(err).__name__}: {err}",
                  file=sys.stderr)


def is_loopback(host: str) -> bool:
    """127.x, ::1 and names that resolve only there (``localhost``)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def exposure_warning(host: str) -> str | None:
    """The warning to print when the page and its controls are reachable from other machines."""
    if is_loopback(host):
        return None
    where = "every network interface" if host in ("", "0.0.0.0", "::") else host
    return (f"--http binds {where}: the pages (and a daemon's /latest and snapshots) are open to anyone who can "
            "reach this machine (reading needs no password, changes need the token; no TLS); use 127.0.0.1:PORT "
            "unless the network is trusted")


def url(server: ThreadingHTTPServer) -> str:
    """The address to open, e.g. ``http://127.0.0.1:8080/``: where the server really listens (port 0 resolved);
    bound to every interface (``0.0.0.0``, ``::``), this machine's own address on its network, which another
    machine can open (``0.0.0.0`` opens nowhere but here)."""
    host, port = server.server_address[:2]
    if host in ("", "0.0.0.0", "::"):
        host = outward_address(socket.AF_INET6 if host == "::" else socket.AF_INET)
    return f"http://[{host}]:{port}/" if ":" in str(host) else f"http://{host}:{port}/"


def outward_address(family: int = socket.AF_INET) -> str:
    """This machine's address on the network its default route leads to (a UDP socket's chosen source
    address: nothing is sent); its host name when it has no such route (a device on a lab network alone)."""
    probe = ("10.255.255.255", 1) if family == socket.AF_INET else ("fd00::1", 1)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(probe)
            addr = s.getsockname()[0]
    except OSError:
        return socket.gethostname()
    return addr.split("%")[0] if addr not in ("0.0.0.0", "::") else socket.gethostname()


def serve(status: Status, host: str, port: int, actions: dict | None = None,
          token: str | None = None, start: bool = True) -> ThreadingHTTPServer:
    """Start the server in a daemon thread; ``server.shutdown()`` stops it.

    Args:
        actions: {path: fn(body dict) -> (HTTP code, JSON-able reply)} served to POST.
        token: POSTs must carry ``Authorization: Bearer TOKEN`` (None: POSTs from loopback only).
        start: False: bound and listening (connections wait), answered once ``start_serving(server)``.
    """
    try:
        server_cls = _BoundedServer
        if ":" in host:
            server_cls = type("_BoundedServer6", (_BoundedServer,), {"address_family": socket.AF_INET6})
        server = server_cls((host, port), _handler(status, actions, token))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            hint = "is another celledge running? choose another port with --http HOST:PORT"
        elif e.errno == errno.EACCES:
            hint = "ports below 1024 need root: choose a port above 1024"
        else:  # a name that does not resolve, an address this machine does not have
            hint = ("is the address one of this machine's? use 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                    "network it is on)")
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); {hint}") from None
    if start:
        start_serving(server)
    return server


def start_serving(server: ThreadingHTTPServer) -> None:
    """Answer a server made with ``serve(..., start=False)`` (in a daemon thread)."""
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
