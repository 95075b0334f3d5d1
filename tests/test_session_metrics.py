"""/metrics carries the current session (scopelite_session_*), as GET /session has it, before and after a review."""
import json
import re

import numpy as np

from scopelite.edge.bundle import CLASS_NAMES
from scopelite.edge.differential import Differential
from scopelite.edge.httpd import Status, serve
from scopelite.edge.session import Sessions

from test_session import _feed
from test_session_http import _call, _post

_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict:
    """Prometheus text format -> {(name, ((label, value), ...)): float}; every sample's family has HELP and TYPE."""
    helped, typed, out = set(), {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            typed[name] = kind
        elif line:
            m = _SAMPLE.fullmatch(line)
            assert m, f"not a sample line: {line!r}"
            name, labels, value = m.groups()
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
            assert family in helped and family in typed, f"{name}: no HELP/TYPE"
            key = (name, tuple(_LABEL.findall(labels or "")))
            assert key not in out, f"{key} twice"
            out[key] = float(value)
    return out


def _session_view(m: dict) -> dict:
    """The scopelite_session_* samples, keyed by short name (and label)."""
    view = {}
    for (name, labels), v in m.items():
        if name.startswith("scopelite_session_"):
            short = name[len("scopelite_session_"):]
            view[short if not labels or short == "info" else (short, labels[0][1])] = v
            if short == "info":
                view["info_labels"] = dict(labels)
    return view


def _assert_matches(view: dict, s: dict) -> None:
    """Every session metric says what GET /session says."""
    d = s["differential"]
    assert view["info_labels"] == {"id": s["id"], "state": s["state"]}
    assert view["open"] == (s["state"] == "open")
    assert view["white_cells"] == d["white_total"] and view["uncertain_cells"] == d["uncertain"]["count"]
    assert view.get("target") == s["target"]
    for r in d["rows"]:
        assert view[("class_cells", r["class"])] == r["count"] and view[("differential_percent", r["class"])] == r["percent"]
    assert view[("class_cells", "platelet")] == d["platelets"] and view[("class_cells", "erythroblast")] == d["nrbc"]
    assert view[("class_cells", "uncertain")] == d["uncertain"]["count"]
    assert view["cells"] == s["cells_total"]
    assert view["cells_reviewed"] == s["reviewed"] and view["cells_to_review"] == s["cells_total"] - s["reviewed"]


def test_metrics_follow_the_session_through_review_and_stop(tmp_path):
    sessions = Sessions(tmp_path / "sessions", CLASS_NAMES, target=100)
    _feed(sessions, ["neutrophil", "lymphocyte", "uncertain", "monocyte", "platelet"])
    server = serve(Status(CLASS_NAMES, session=sessions), "127.0.0.1", 0)
    try:
        _follow(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()


def _follow(base):

    def now():
        code, body, ctype = _call(base + "/metrics")
        assert code == 200 and ctype.startswith("text/plain")
        return _session_view(parse_metrics(body.decode())), json.loads(_call(base + "/session")[1])

    view, s = now()
    _assert_matches(view, s)
    assert view["open"] == 1 and view["white_cells"] == 3 and view["uncertain_cells"] == 1 and view["target"] == 100
    assert view[("class_cells", "neutrophil")] == 1 and view[("class_cells", "basophil")] == 0
    assert view["cells_reviewed"] == 0 and view["cells_to_review"] == 5

    assert _post(base, "/cells/3/label", {"label": "basophil"})[0] == 200  # the uncertain cell gets a class
    assert _post(base, "/cells/1/label", {"label": "confirm"})[0] == 200
    view, s = now()
    _assert_matches(view, s)
    assert view["white_cells"] == 4 and view["uncertain_cells"] == 0 and view[("class_cells", "basophil")] == 1
    assert view[("differential_percent", "basophil")] == 25.0
    assert view["cells_reviewed"] == 2 and view["cells_to_review"] == 3

    assert _post(base, "/session/stop")[0] == 200
    view, s = now()
    _assert_matches(view, s)
    assert view["open"] == 0 and view["info_labels"]["state"] == "closed"
    old = s["id"]
    assert _post(base, "/session/start", {"target": 200})[0] == 200
    view, s = now()
    _assert_matches(view, s)
    assert view["info_labels"]["id"] != old and view["white_cells"] == 0 and view["target"] == 200


def test_session_metrics_agree_with_the_runs_differential_until_a_review(tmp_path):
    """The same cells counted by the run (scopelite_class_total, ...) and kept by its session: the same numbers,
    under the same labels; a person's label then moves the session's, not the run's."""
    labels = ["neutrophil"] * 5 + ["lymphocyte"] * 3 + ["monocyte", "erythroblast", "platelet", "uncertain"]
    sessions = Sessions(tmp_path / "s", CLASS_NAMES, target=50)
    _feed(sessions, labels)
    run = Differential(CLASS_NAMES, target=50)
    for lab in labels:
        run.add_label(lab)
    status = Status(CLASS_NAMES, session=sessions)
    status.update(np.zeros((8, 8, 3), np.uint8), {"frame": 0, "infer_ms": 1.0, "differential": run.summary()})
    m = parse_metrics(status.metrics_text())
    view = _session_view(m)
    _assert_matches(view, sessions.summary(cells=False))
    assert view["white_cells"] == m[("scopelite_white_cells_total", ())] == 9
    assert view["uncertain_cells"] == m[("scopelite_uncertain_cells_total", ())] == 1
    assert view["target"] == m[("scopelite_differential_target", ())] == 50
    run_classes = {labels[0][1]: v for (name, labels), v in m.items() if name == "scopelite_class_total"}
    assert run_classes == {k[1]: v for k, v in view.items() if isinstance(k, tuple) and k[0] == "class_cells"}
    for (name, lab), v in m.items():
        if name == "scopelite_differential_percent":
            assert view[("differential_percent", lab[0][1])] == v
    sessions.label(1, "not_a_cell")  # a person takes one cell out: the session moves, the run does not
    after = parse_metrics(status.metrics_text())
    view = _session_view(after)
    _assert_matches(view, sessions.summary(cells=False))
    assert view[("class_cells", "neutrophil")] == 4 and after[("scopelite_class_total", (("label", "neutrophil"),))] == 5
    assert view["white_cells"] == 8 and view["cells_reviewed"] == 1 and view["cells"] == len(labels)
