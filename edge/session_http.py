"""The session's HTTP routes, behind ``httpd``'s handler (which checks who may change state).

GET  /session              the current session as JSON (state, differential, every cell)
GET  /session/report.html  its printable report, as it stands
GET  /cells/<id>.png       a cell's crop
GET  /review               the review page
POST /session/start        {"target": N} optional: a new session (409 while one is open)
POST /session/stop         close the open session and write its report
POST /session/reset        discard the count: close the session as "reset", start a new one
POST /cells/<id>/label     {"label": "<class>" | "uncertain" | "not_a_cell" | "confirm"}; optional "session" (the
                           session id the page showed) and "was" (the label it showed): 409 when either changed

Each route returns (HTTP status, body, content type), or None when the path is not a session route. Served beyond
loopback (``public``), /session names the session folder, the inputs and each cell's image file by their last
component only: the machine's folder layout (a user's home, a patient's folder name) is not the network's business.
"""
from __future__ import annotations

import json
import re
from pathlib import PurePath

from .errors import UserError
from .review_page import review_page
from . import session as session_mod
from .session import Sessions, SessionError
from .session_report import as_bytes

Response = tuple[int, bytes, str]
_CELL_PNG = re.compile(r"/cells/(\d{1,12})\.png")  # (an id of 5,000 digits was a ValueError, no answer)
_CELL_LABEL = re.compile(r"/cells/(\d{1,12})/label")


def _json(code: int, obj) -> Response:
    return code, json.dumps(obj).encode(), "application/json"


def _error(code: int, message: str) -> Response:
    return _json(code, {"error": message})


def _name(text):
    """A path's last component (a camera index, a URL's text: as they are)."""
    return PurePath(text).name or text if isinstance(text, str) and "://" not in text and "/" in text else text


_FOLDERS = re.compile(r"(?<![\w.:/])/(?:[^\s/]+/)+")  # the folders of an absolute path inside a message


def without_folders(text: str) -> str:
    """A message with the folders of its absolute paths left out ("cannot write cells.jsonl (no space ...)")."""
    return _FOLDERS.sub("", text)


def without_paths(summary: dict) -> dict:
    """``Sessions.summary()`` (or an answer built on it) with its local paths cut to their last component, for a
    server bound beyond loopback (``public``)."""
    out = dict(summary)
    if isinstance(out.get("unrecorded"), dict) and isinstance(out["unrecorded"].get("error"), str):
        out["unrecorded"] = {**out["unrecorded"], "error": without_folders(out["unrecorded"]["error"])}
    if "folder" in out:
        out["folder"] = _name(out["folder"])
    for key in ("sources", "inputs"):
        if isinstance(out.get(key), list):
            out[key] = [_name(v) for v in out[key]]
    if isinstance(out.get("cells"), list):
        out["cells"] = [{**c, "file": _name(c["file"])} if isinstance(c, dict) and "file" in c else c
                        for c in out["cells"]]
    return out


def get(sessions: Sessions, path: str, public: bool = False) -> Response | None:
    """``public``: the server is bound beyond loopback (see the module docstring)."""
    if path in ("/session", "/session/brief"):  # brief: no cell list (the review page asks it every 15 s)
        summary = sessions.summary(cells=path == "/session")
        return _json(200, without_paths(summary) if public else summary)
    if path == "/session/report.html":
        return 200, as_bytes(sessions.report_html()), "text/html; charset=utf-8"
    if path == "/review":
        return 200, review_page(sessions.labels, lab_page=not sessions.review_only).encode(), "text/html; charset=utf-8"
    m = _CELL_PNG.fullmatch(path)
    if m:
        png = sessions.crop_bytes(int(m.group(1)))
        return (200, png, "image/png") if png is not None else _error(404, f"no crop for cell {m.group(1)}")
    return None


def is_post_route(path: str) -> bool:
    return path in ("/session/start", "/session/stop", "/session/reset") or bool(_CELL_LABEL.fullmatch(path))


def post(sessions: Sessions, path: str, body: dict, public: bool = False) -> Response:
    """``public``: the server is bound beyond loopback; its answers name no folder of this machine."""
    code, answer, kind = _post(sessions, path, body)
    if public and kind == "application/json":
        obj = json.loads(answer)
        if isinstance(obj, dict):
            obj = without_paths(obj)
            if isinstance(obj.get("error"), str):
                obj["error"] = without_folders(obj["error"])
            answer = json.dumps(obj).encode()
    return code, answer, kind


def _post(sessions: Sessions, path: str, body: dict) -> Response:
    try:
        if path == "/session/start":
            target = body.get("target")
            if target is not None and (not isinstance(target, int) or isinstance(target, bool)
                                       or not 1 <= target <= session_mod.MAX_CELLS):
                return _error(400, f"target {target!r} is not a whole number of white cells from 1 to "
                                   f"{session_mod.MAX_CELLS} (a session's most)")
            others = sorted(set(body) - {"target"})
            if others:
                return _error(400, f"start takes only a target; not {', '.join(others)}")
            return _json(200, sessions.start(target))
        if path in ("/session/stop", "/session/reset") and body:  # a target given to reset was dropped silently
            return _error(400, f"{path.rsplit('/', 1)[1]} takes nothing (it keeps the session's target); to count "
                               "to another target, stop and then start with {\"target\": N}")
        if path == "/session/stop":
            return _json(200, sessions.stop())
        if path == "/session/reset":
            return _json(200, sessions.reset())
        m = _CELL_LABEL.fullmatch(path)
        if m:
            label, session, was = body.get("label"), body.get("session"), body.get("was")
            if not isinstance(label, str):
                return _error(400, 'send {"label": "<class>"} or {"label": "confirm"}')
            if not all(v is None or isinstance(v, str) for v in (session, was)):
                return _error(400, '"session" and "was" are the session id and the label the page showed (text)')
            return _json(200, sessions.label(int(m.group(1)), label, session, was))
    except SessionError as e:
        return _error(e.http, str(e))
    except (UserError, OSError) as e:  # the disk: full, read-only, gone
        return _error(500, str(e))
    return _error(404, f"no such action: {path}")
