"""A session's report as files: cells.csv and a printable, self-contained report.html.

Pure: a session summary (``Session.summary()``) in, text out; the gallery's images come from a
``thumb(cell_id)`` callback as data: URIs, so the HTML needs nothing beside it (print it, mail it).
"""
from __future__ import annotations

import base64
import csv
import html
import io
from typing import Callable

import cv2
import numpy as np

from .differential import NOT_A_CELL, TITLES, UNCERTAIN, clinical_order, percent_text

THUMB_PX = 96
# the gallery shows each class's least sure cells, at most this many: the report of a 5,000-cell session embedded
# every thumbnail (12 MB of HTML, 3 s to build while the count waited, pages nobody prints)
GALLERY_PER_CLASS = 200
_EXTRA_TITLES = {"erythroblast": "Erythroblasts (NRBC)", "platelet": "Platelets", UNCERTAIN: "Uncertain",
                 NOT_A_CELL: "Not cells (removed by review)"}


def as_bytes(text: str) -> bytes:
    """A report's text as UTF-8; a file name that is not UTF-8 (made on another system: Python keeps its odd bytes
    as lone surrogates) is written with escapes (``\\udcff``), not a UnicodeEncodeError that stops the report."""
    return text.encode("utf-8", "backslashreplace")


def title(label: str) -> str:
    return TITLES.get(label) or _EXTRA_TITLES.get(label) or label.replace("_", " ").capitalize()


def thumbnail_uri(png: bytes, side: int = THUMB_PX) -> str | None:
    """A crop (PNG bytes) shrunk to ``side`` px as a JPEG data: URI; None if it cannot be decoded."""
    try:  # a damaged crop whose header claims 65536x65536 px: cv2.error (over OpenCV's pixel limit), not None
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    if img is None:
        return None
    img = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else None


def cells_csv(summary: dict) -> str:
    """One row per cell: id, final label, the model's label and score, reviewed, frame, positions, crop, and the
    image file the frame came from (a folder source; empty for a camera or a video)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "label", "model_label", "best", "score", "reviewed", "frame", "x", "y", "slide_x", "slide_y",
                "frames_seen", "crop", "file"])
    for c in summary["cells"]:
        x, y = c.get("center") or ("", "")
        sx, sy = c.get("slide") or ("", "")
        w.writerow([c["id"], c["final"], c["label"], c["best"], c["score"], "yes" if c["reviewed"] else "no",
                    c.get("frame", ""), x, y, sx, sy, c.get("frames", ""), c.get("crop") or "",
                    c.get("file") or ""])
    return buf.getvalue()


def _table(summary: dict) -> str:
    d = summary["differential"]
    cells = summary["cells"]
    reviewed = {}
    for c in cells:
        if c["reviewed"] is not None:
            reviewed[c["final"]] = reviewed.get(c["final"], 0) + 1
    absolute = "wbc_corrected" in d
    head = "<th>x10<sup>9</sup>/L</th>" if absolute else ""
    rows = "".join(
        f'<tr><td>{html.escape(title(r["class"]))}</td><td>{r["count"]}</td><td>{pct}</td><td>{ci}</td>'
        + (f'<td>{r["absolute"]:.2f}</td>' if absolute else "") + f'<td>{reviewed.get(r["class"], 0)}</td></tr>'
        for r in d["rows"] for pct, ci in [percent_text(r, d["white_total"])])
    pad = "<td></td>" * (2 + absolute)
    nrbc = "–" if d["nrbc_per_100_wbc"] is None else f'{d["nrbc_per_100_wbc"]:.1f}'
    n = d["white_total"]
    total = f'<td>{d["wbc_corrected"]:.2f}</td>' if absolute else ""
    others = "".join(f"<tr><td>{html.escape(title(k))}</td><td>{v}</td>{pad}<td>{reviewed.get(k, 0)}</td></tr>"
                     for k, v in d["other"].items())
    return f"""<table id="differential"><tr><th>Cell</th><th>Count</th><th>%</th><th>95 % CI</th>{head}
<th>reviewed</th></tr>{rows}
<tr class="sum"><td>White cells</td><td>{n}</td><td>{"100.0" if n else "–"}</td><td></td>{total}<td></td></tr>
<tr><td>NRBC /100 WBC</td><td>{nrbc}</td><td colspan="{2 + absolute}">({d["nrbc"]} erythroblasts)</td>
<td>{reviewed.get("erythroblast", 0)}</td></tr>
<tr><td>Platelets (seen)</td><td>{d["platelets"]}</td>{pad}<td>{reviewed.get("platelet", 0)}</td></tr>{others}
<tr><td>Uncertain (for review)</td><td>{d["uncertain"]["count"]}</td><td colspan="{2 + absolute}">not in the
percentages</td><td>{reviewed.get(UNCERTAIN, 0)}</td></tr>
<tr><td>Not cells</td><td>{summary["not_cells"]}</td><td colspan="{2 + absolute}">removed by review</td>
<td>{summary["not_cells"]}</td></tr></table>"""


def _gallery(summary: dict, thumb: Callable[[int], str | None]) -> str:
    groups: dict[str, list[dict]] = {}
    for c in summary["cells"]:
        groups.setdefault(c["final"], []).append(c)
    order = clinical_order(summary["labels"]) + [UNCERTAIN, NOT_A_CELL]
    out = []
    for label in order + sorted(set(groups) - set(order)):
        cells = sorted(groups.get(label, []), key=lambda c: c["score"])
        if not cells:
            continue
        figs = []
        for c in cells[:GALLERY_PER_CLASS]:
            uri = thumb(c["id"])
            img = f'<img src="{uri}" alt="cell {c["id"]}">' if uri else '<div class="noimg">no crop</div>'
            if c["reviewed"] is None:
                mark = '<span class="model">model</span>'
            elif c["reviewed"] == c["label"]:
                mark = '<span class="ok">✓ reviewed</span>'
            else:
                mark = f'<span class="ok">✓ reviewed</span> (model: {html.escape(title(c["label"]))})'
            # why a well-scored cell is uncertain (platelet-sized in every view): "scored below 0.5" does not say it
            why = f'<br><span class="model">{html.escape(str(c["why"]))}</span>' if c.get("why") else ""
            figs.append(f'<figure data-id="{c["id"]}">{img}<figcaption>#{c["id"]} · {c["score"]:.2f}<br>{mark}{why}'
                        "</figcaption></figure>")
        more = len(cells) - len(figs)
        rest = (f'<p class="meta">… and {more} more, the surest (every cell is on the review page and in '
                'cells.csv).</p>') if more > 0 else ""
        out.append(f'<section class="class"><h3>{html.escape(title(label))} ({len(cells)})</h3>'
                   f'<div class="gallery">{"".join(figs)}</div>{rest}</section>')
    return "".join(out) or "<p>no cells counted</p>"


def stain_tally(state: dict) -> dict | None:
    """A session's frames' stain tally (state.json ``stain``: ``frames`` with a verdict, and those ``unlike`` the
    model's training data); None when there is none, or a hand-edited one that is not two whole numbers."""
    t = state.get("stain")
    return t if isinstance(t, dict) and all(type(t.get(k)) is int for k in ("frames", "unlike")) else None


def report_html(summary: dict, thumb: Callable[[int], str | None]) -> str:
    """The printable report: who/when, the differential in clinical order, review progress, gallery per class."""
    d = summary["differential"]
    target = summary.get("target")
    state = "open (not closed yet)" if summary["state"] == "open" else f'closed: {summary.get("reason") or "stopped"}'
    count = f'{d["white_total"]} white cells' + (f" of {target}" if target else "")
    n, done = summary["cells_total"], summary["reviewed"]
    review = ("no cells counted yet" if not n else f"all {n} cells reviewed by a person" if done == n else
              f'<span class="warn">{done} of {n} cells reviewed by a person</span>; the others carry the '
              f'model\'s label (cells scored below {summary["min_score"]}, or of a kind the model cannot tell '
              'apart, such as a platelet-sized speck next to a white cell, are uncertain)')
    wbc = f' · WBC {summary["wbc_count"]:g} x10<sup>9</sup>/L (analyser)' if summary.get("wbc_count") else ""
    stain = stain_tally(summary) or {}  # none recorded (a crop-mode run, a session from before) or hand-edited
    unlike = (f'<p class="warn" id="unlike">Stained unlike the model\'s training data in {stain["unlike"]} of '
              f'{stain["frames"]} frames: the model makes more mistakes on such slides. Review the cells; calibrate '
              'this microscope (celledge calibrate) or adapt the model to this lab\'s cells (celltrain fit '
              '--preset few-shot).</p>') if stain.get("frames") and 2 * stain["unlike"] > stain["frames"] else ""
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Differential {html.escape(summary["id"])}</title>
<style>body{{font-family:sans-serif;margin:1.5em;color:#111}}h1{{font-size:1.4em}}
table{{display:block;max-width:100%;overflow-x:auto;border-collapse:collapse;margin:.5em 0}}
td{{white-space:nowrap}}td,th{{padding:2px 10px;text-align:right;border-bottom:1px solid #ddd}}
td:first-child,th:first-child{{text-align:left}}.sum td{{border-top:2px solid #555;font-weight:bold}}
.gallery{{display:flex;flex-wrap:wrap;gap:6px}}figure{{margin:0;width:{THUMB_PX + 8}px;font-size:11px;
text-align:center;break-inside:avoid}}figure img,.noimg{{width:{THUMB_PX}px;height:{THUMB_PX}px;
border:1px solid #bbb}}.ok{{color:#1a7f37}}.model{{color:#666}}.warn{{color:#b42318;font-weight:bold}}
.meta{{color:#333}}section.class{{break-inside:avoid-page}}
@media print{{body{{margin:0}}a{{color:inherit;text-decoration:none}}}}</style></head><body>
<h1>White-cell differential · session {html.escape(summary["id"])}</h1>
<p class="meta">Started {html.escape(summary.get("started_at") or "")}
{"· stopped " + html.escape(summary["stopped_at"]) if summary.get("stopped_at") else ""} · {html.escape(state)}
· {count}{wbc}</p>
<p class="meta">{review}.</p>{unlike}
{_table(summary)}
<h2>Cells by class</h2><p class="meta">Least sure first. ✓: a person confirmed or corrected the label.</p>
{_gallery(summary, thumb)}
<p class="meta">scopelite · celledge watch --sessions · each cell counted once; percentages of white cells
with 95 % Wilson intervals.</p></body></html>"""
