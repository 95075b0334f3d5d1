"""The differential count: percentages of white cells, NRBC per 100 WBC, platelets apart, uncertain for review."""
import csv
import io
import json
import time

import numpy as np
import pytest

from scopelite.edge.bundle import CLASS_NAMES
from scopelite.edge.differential import WHITE, Differential, wilson_interval

N = len(CLASS_NAMES)


def sure(label, p=0.9):
    s = np.full(N, (1 - p) / (N - 1))
    s[CLASS_NAMES.index(label)] = p
    return s


def filled(target=None, wbc_count=None):
    d = Differential(CLASS_NAMES, target=target, wbc_count=wbc_count)
    for label, n in [("neutrophil", 55), ("lymphocyte", 30), ("monocyte", 8), ("eosinophil", 4), ("basophil", 1),
                     ("immature_granulocyte", 2), ("erythroblast", 3), ("platelet", 12)]:
        for _ in range(n):
            assert d.add(sure(label)) == label
    return d


def test_white_cells_in_clinical_order_nrbc_and_platelets_apart():
    s = filled().summary()
    assert [r["class"] for r in s["rows"]] == list(WHITE)
    assert s["white_total"] == 100 and [r["percent"] for r in s["rows"]] == [55.0, 30.0, 8.0, 4.0, 1.0, 2.0]
    assert s["nrbc"] == 3 and s["nrbc_per_100_wbc"] == 3.0 and s["platelets"] == 12
    assert s["rows"][3]["ci95"] == [1.6, 9.8]  # 4 of 100: Wilson interval
    json.dumps(s)


def test_uncertain_cells_are_listed_for_review_not_counted():
    d = filled()
    vague = np.full(N, 1 / N)
    assert d.add(vague, ref={"track": 7}) == "uncertain"
    assert d.add(sure("basophil", 0.45), min_score=0.5, ref=8) == "uncertain"
    s = d.summary()
    assert s["white_total"] == 100 and sum(r["percent"] for r in s["rows"]) == pytest.approx(100)
    assert s["uncertain"]["count"] == 2 and s["uncertain"]["cells"][0]["ref"] == {"track": 7}
    assert s["uncertain"]["cells"][1]["best"] == "basophil"
    assert "why" not in s["uncertain"]["cells"][0]
    # uncertain for a reason, however sure the model is
    assert d.add(sure("lymphocyte", 0.95), ref=9, why="platelet-sized") == "uncertain"
    s = d.summary()
    assert s["white_total"] == 100 and s["uncertain"]["cells"][2] == {"ref": 9, "best": "lymphocyte", "score": 0.95,
                                                                      "why": "platelet-sized"}


def test_revise_moves_a_counted_cell_and_an_uncertain_one_leaves_the_review_list():
    d = filled()
    assert d.label_for(sure("monocyte")) == "monocyte" and d.summary()["rows"][2]["count"] == 8  # counts nothing
    assert d.revise("neutrophil", sure("monocyte"), ref={"track": 1}) == "monocyte"
    s = d.summary()
    assert [r["count"] for r in s["rows"][:3]] == [54, 30, 9] and s["white_total"] == 100
    # a cell counted uncertain (matched by its track) becomes a white cell, and one becomes uncertain
    d.add(np.full(N, 1 / N), ref={"track": 5, "frame": 40})
    d.add(np.full(N, 1 / N), ref={"track": 6, "frame": 41})
    assert d.revise("uncertain", sure("basophil"), ref={"track": 6, "frame": 90}, match={"track": 6}) == "basophil"
    assert [c["ref"] for c in d.summary()["uncertain"]["cells"]] == [{"track": 5, "frame": 40}]
    assert d.revise("lymphocyte", sure("lymphocyte"), ref={"track": 2}, why="platelet-sized") == "uncertain"
    s = d.summary()
    assert s["white_total"] == 100 and s["rows"][1]["count"] == 29 and s["rows"][4]["count"] == 2
    assert s["uncertain"]["cells"][-1] == {"ref": {"track": 2}, "best": "lymphocyte", "score": 0.9,
                                           "why": "platelet-sized"}
    with pytest.raises(ValueError, match="no uncertain cell"):
        d.revise("uncertain", sure("basophil"), match={"track": 6})
    with pytest.raises(ValueError, match="no eosinophil"):
        Differential(CLASS_NAMES).revise("eosinophil", sure("basophil"))
    with pytest.raises(ValueError):  # bad scores: nothing moves
        d.revise("neutrophil", np.ones(3))
    assert d.summary()["rows"][0]["count"] == 54


def test_revising_an_uncertain_cell_takes_the_newest_entry_and_does_not_search_the_whole_list():
    d = Differential(CLASS_NAMES)
    for t in range(100_000):  # weeks of a run's uncertain cells
        d.add(np.full(N, 1 / N), ref={"track": t})
    d.add(np.full(N, 1 / N), ref={"track": 7, "frame": 2})  # a track number met again: this entry is its cell
    assert d.revise("uncertain", sure("basophil"), match={"track": 7}) == "basophil"
    cells = d.summary()["uncertain"]["cells"]
    assert len(cells) == 100_000 and cells[7]["ref"] == {"track": 7}  # the older entry stays
    assert {"track": 7, "frame": 2} not in [c["ref"] for c in cells[-3:]]
    t0 = time.perf_counter()
    for t in range(99_999, 98_999, -1):  # the cells revised are the last listed ones
        d.revise("uncertain", sure("lymphocyte"), match={"track": t})
    assert time.perf_counter() - t0 < 2.0  # searched from the start: about a minute
    rows = {r["class"]: r["count"] for r in d.summary()["rows"]}
    assert rows["lymphocyte"] == 1000 and rows["basophil"] == 1 and len(d.review) == 99_000


def test_a_runs_review_list_keeps_the_newest_entries_and_counts_every_uncertain_cell():
    """A daemon's count over weeks listed every uncertain cell (0.5 KB each) and copied the list for each frame
    that counted a cell."""
    d = Differential(CLASS_NAMES, listed=100)
    for t in range(1000):
        d.add(np.full(N, 1 / N), ref={"track": t})
    s = d.summary()
    assert s["uncertain"]["count"] == 1000 and 90 <= len(s["uncertain"]["cells"]) <= 100
    assert s["uncertain"]["cells"][-1]["ref"] == {"track": 999}
    assert s["uncertain"]["not_listed"] == 1000 - len(s["uncertain"]["cells"])
    assert d.brief()["uncertain"] == {"count": 1000}
    assert d.revise("uncertain", sure("monocyte"), match={"track": 3}) == "monocyte"  # its entry fell off
    assert d.revise("uncertain", sure("monocyte"), match={"track": 999}) == "monocyte"
    s = d.summary()
    assert s["uncertain"]["count"] == 998 and {"track": 999} not in [c["ref"] for c in s["uncertain"]["cells"]]
    assert Differential(CLASS_NAMES).summary()["uncertain"] == {"count": 0, "cells": []}  # no not_listed key
    from scopelite.edge.watch import REVIEW_LISTED, FieldCounter

    assert FieldCounter(CLASS_NAMES).differential.listed == REVIEW_LISTED >= 1000  # the run's count is bounded


def test_target_and_done():
    d = Differential(CLASS_NAMES, target=3)
    for label in ("neutrophil", "platelet", "erythroblast", "lymphocyte"):
        d.add(sure(label))
    assert not d.done and d.summary()["target"] == 3
    d.add(sure("monocyte"))
    assert d.done and d.summary()["done"] and "3 white cells of 3 (done)" in d.to_text()


def test_absolute_counts_corrected_for_nrbc():
    s = filled(wbc_count=10.3).summary()
    assert s["wbc_corrected"] == pytest.approx(10.0)  # 10.3 x 100 / 103
    assert s["rows"][0]["absolute"] == pytest.approx(5.5)  # 55 % of 10.0


def test_text_and_csv_reports():
    d = filled(target=100, wbc_count=10.3)
    text = d.to_text()
    for line in ("Neutrophils", "Immature granulocytes", "NRBC /100 WBC", "Platelets", "Uncertain (review)"):
        assert line in text
    assert text.index("Neutrophils") < text.index("Lymphocytes") < text.index("Monocytes") < text.index("Eosinophils")
    rows = list(csv.DictReader(io.StringIO(d.to_csv())))
    assert rows[0]["class"] == "neutrophil" and rows[0]["percent"] == "55.0" and rows[0]["absolute_1e9_per_l"] == "5.5"
    assert {r["section"] for r in rows} == {"white", "nrbc", "platelet", "review"}
    empty = Differential(CLASS_NAMES)
    assert empty.summary()["nrbc_per_100_wbc"] is None and "White cells" in empty.to_text()


def test_labels_outside_the_groups_and_wrong_lengths():
    d = Differential(["neutrophil", "lymphocyte", "smudge"])
    assert d.add([0.1, 0.1, 0.8]) == "smudge" and d.summary()["other"] == {"smudge": 1}
    assert [r["class"] for r in d.summary()["rows"]] == ["neutrophil", "lymphocyte"]
    with pytest.raises(ValueError, match="3 labels"):
        d.add([0.5, 0.5])


def test_wilson_interval():
    lo, hi = wilson_interval(5, 100)
    assert 2.1 < lo < 2.2 and 11.1 < hi < 11.3
    assert wilson_interval(0, 0) == (0.0, 100.0)


def test_no_edge_module_imports_another_modules_private_names():
    """A name shared across modules is public (differential.TITLES, not _TITLES): private names stay home."""
    import re
    from pathlib import Path

    import scopelite.edge

    edge = Path(scopelite.edge.__file__).parent
    names_from = re.compile(r"^from \.\w+ import (\([^)]*\)|[^\n]*)", re.M)  # a module's names, not a module
    offenders = [f"{f.name}: {names}" for f in sorted(edge.glob("*.py")) for names in names_from.findall(f.read_text())
                 if any(n.strip().startswith("_") for n in re.sub(r"#[^\n]*", "", names).strip("()").split(","))]
    assert not offenders, offenders
    from scopelite.edge.differential import TITLES
    from scopelite.edge.session_report import title

    assert all(title(k) == v for k, v in TITLES.items())


def test_a_report_of_no_white_cells_gives_no_percentages(tmp_path):
    """A run stopped before any white cell (a camera that never answered) reported "0.0 %" and "0-100" for every
    class, as a result; it says none were counted and gives no percentages."""
    from scopelite.edge.bundle import CLASS_NAMES
    from scopelite.edge.differential import Differential

    text = Differential(CLASS_NAMES, target=100, wbc_count=6.0).to_text()
    assert text.splitlines()[0] == "Differential: 0 white cells of 100: none counted, so no percentages"
    rows = [line for line in text.splitlines() if line.startswith(("Neutrophils", "Lymphocytes", "White cells"))]
    assert len(rows) == 3 and not any("0.0" in r or "0-100" in r for r in rows), rows
    one = Differential(CLASS_NAMES, target=100)
    one.add_label("neutrophil")
    assert "100.0" in one.to_text() and "none counted" not in one.to_text()
    # the CSV, the lab page and the session's printed report say it alike
    import csv
    import io

    from scopelite.edge.httpd import _differential_html
    from scopelite.edge.session import Sessions

    none = Differential(CLASS_NAMES, target=100)
    rows = [r for r in csv.reader(io.StringIO(none.to_csv())) if r[0] == "white" and r[1] == "neutrophil"]
    assert rows == [["white", "neutrophil", "0", "", "", "", ""]]
    total = [r for r in csv.reader(io.StringIO(none.to_csv())) if r[:2] == ["white", "total"]]
    assert total == [["white", "total", "0", "", "", "", ""]]  # no percentage of nothing (was 0.0)
    page = _differential_html(none.summary())
    assert "0.0" not in page and "0–100" not in page
    sessions = Sessions(tmp_path / "s", CLASS_NAMES, target=100)
    printed = sessions.report_html()
    sessions.release()
    assert "Differential" in printed and "0–100" not in printed
