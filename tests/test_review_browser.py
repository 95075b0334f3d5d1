"""The review page in headless Chromium: real key presses and clicks relabel cells on the daemon.

Set SCOPELITE_UPDATE_DOCS=1 to also write the screenshot to docs/review-page.png.
"""
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from scopelite.edge.bundle import CLASS_NAMES
from scopelite.edge.httpd import Status, serve
from scopelite.edge.review_page import keys_for
from scopelite.edge.session import Sessions
from scopelite.train.synth import make_crops

from cdp import Browser, chromium

DOCS_SHOT = Path(__file__).resolve().parents[1] / "docs" / "review-page.png"


def _session(root):
    """24 generated cells, 3 per class; the model is unsure of a few (one below min_score: uncertain)."""
    images, labels = make_crops(3, size=96, seed=4)
    sessions = Sessions(root, CLASS_NAMES, target=100)
    rng = np.random.default_rng(0)
    for i, (img, y) in enumerate(zip(images, labels)):
        label = CLASS_NAMES[y]
        score = float(rng.uniform(0.55, 0.99)) if i % 5 else float(rng.uniform(0.3, 0.49))
        scores = [round((1 - score) / 7, 4)] * 8
        scores[y] = round(score, 4)
        event = {"cell": 0, "label": label if score >= 0.5 else "uncertain", "best": label, "score": round(score, 4),
                 "center": [48.0, 48.0], "scores": scores}
        sessions.update(img, {"frame": i, "cells": [{"box": [0, 0, 96, 96], "center": [48.0, 48.0]}],
                              "counted": [event]})
    return sessions


def _reviewed(sessions, cell_id):
    return next(c for c in sessions.summary()["cells"] if c["id"] == cell_id)["reviewed"]


@pytest.mark.browser
@pytest.mark.skipif(not chromium(), reason="no Chromium (.ci/run installs Debian's chromium)")
def test_review_page_relabels_cells_with_keys_and_clicks(tmp_path):
    sessions = _session(tmp_path / "sessions")
    server = serve(Status(CLASS_NAMES, session=sessions), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    browser = Browser(tmp_path / "profile")
    try:
        browser.send("Page.enable")
        browser.send("Emulation.setDeviceMetricsOverride", width=1100, height=1000, deviceScaleFactor=1, mobile=False)
        browser.send("Page.navigate", url=base + "/review")
        assert browser.wait_for("document.querySelectorAll('.cell').length") == 24
        # uncertain first, least sure first: the page opens on the lowest-scored uncertain cell
        cells = sessions.summary()["cells"]
        uncertain = sorted((c for c in cells if c["final"] == "uncertain"), key=lambda c: c["score"])
        assert uncertain and browser.evaluate("sel") == uncertain[0]["id"]
        assert browser.evaluate("document.querySelector('h2').textContent").startswith("Uncertain")
        # a digit relabels the selected cell: 3 is the third class in clinical order (monocytes)
        third = keys_for(CLASS_NAMES)[2]
        assert third == {"key": "3", "label": "monocyte", "title": "Monocytes"}
        first = uncertain[0]["id"]
        browser.key("3")
        settle = "pending === 0 && document.querySelectorAll('.cell.done').length === {}"
        browser.wait_for(settle.format(1))
        assert _reviewed(sessions, first) == "monocyte"
        # and the selection moved on to the next cell of the old order
        assert browser.evaluate("sel") == uncertain[1]["id"]
        # ... the next one not yet reviewed: a cell reviewed meanwhile (here on the server, kept in its group) is
        # skipped, not relabelled unseen by the next key (a visual review: "0" turned a reviewed cell into "not a cell")
        assert len(uncertain) >= 4, len(uncertain)
        sessions.label(uncertain[2]["id"], "uncertain")
        browser.evaluate("load()")
        browser.wait_for(settle.format(2))
        browser.key("9")  # uncertain[1] stays uncertain, reviewed
        browser.wait_for(settle.format(3))
        assert browser.evaluate("sel") == uncertain[3]["id"]
        browser.key("ArrowLeft")
        browser.key("ArrowLeft")  # back to uncertain[1], as the rest of this test expects
        assert browser.evaluate("sel") == uncertain[1]["id"]
        # a click selects a cell, Enter confirms the label it has
        neutrophils = [c for c in cells if c["final"] == "neutrophil"]
        browser.click(f"#cell-{neutrophils[0]['id']}")
        assert browser.evaluate("sel") == neutrophils[0]["id"]
        browser.key("Enter")
        browser.wait_for(settle.format(4))
        assert _reviewed(sessions, neutrophils[0]["id"]) == "neutrophil"
        # arrows move (in the page's order: least sure first), 0 marks "not a cell"
        here = browser.evaluate("sel")
        browser.key("ArrowRight")
        moved = browser.evaluate("sel")
        assert moved == browser.evaluate(f"order[order.indexOf({here}) + 1]") and moved != here
        browser.key("0")
        browser.wait_for(settle.format(5))
        assert _reviewed(sessions, moved) == "not_a_cell"
        s = sessions.summary()
        assert s["reviewed"] == 5 and s["not_cells"] == 1
        browser.evaluate("window.scrollTo(0, 0)")
        shot = tmp_path / "review.png"
        browser.screenshot(shot)
    finally:
        browser.close()
        server.shutdown()
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1000, 1100)
    b, g = img[..., 0].astype(int), img[..., 1].astype(int)
    assert ((b - g) > 40).sum() > 2000  # the stained cells (purple) are drawn
    if os.environ.get("SCOPELITE_UPDATE_DOCS"):
        shutil.copyfile(shot, DOCS_SHOT)


@pytest.mark.browser
@pytest.mark.skipif(not chromium(), reason="no Chromium (.ci/run installs Debian's chromium)")
def test_the_review_page_says_when_the_session_moved_on_and_r_redraws_it(tmp_path):
    """A visual review: /review opened before the first cell stayed blank ("0 cells", "(open)") while the session
    counted 11 and closed. An empty session says so; the page looks for news (every 15 s) and says it; r redraws."""
    sessions = Sessions(tmp_path / "sessions", CLASS_NAMES, target=100)
    server = serve(Status(CLASS_NAMES, session=sessions), "127.0.0.1", 0)
    browser = Browser(tmp_path / "profile")
    try:
        browser.send("Page.enable")
        browser.send("Page.navigate", url=f"http://127.0.0.1:{server.server_address[1]}/review")
        assert "No cells counted" in browser.wait_for("document.getElementById('empty') && "
                                                      "document.getElementById('empty').textContent")
        full = _session(tmp_path / "other")  # 24 cells counted meanwhile into the page's session
        for c in full.summary()["cells"][:5]:
            img = np.full((96, 96, 3), 200, np.uint8)
            sessions.update(img, {"frame": c["id"], "cells": [{"box": [0, 0, 96, 96], "center": [48.0, 48.0]}],
                                  "counted": [{"cell": 0, "label": c["label"], "best": c["best"], "score": c["score"],
                                               "center": [48.0, 48.0], "scores": c["scores"]}]})
        browser.evaluate("lookForNews()")
        assert "5 new cells" in browser.wait_for("document.getElementById('stale').textContent")
        browser.key("r")
        assert browser.wait_for("document.querySelectorAll('.cell').length") == 5
        assert browser.evaluate("document.getElementById('stale').textContent") == ""
    finally:
        browser.close()
        server.shutdown()
