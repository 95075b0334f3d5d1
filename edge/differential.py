"""The differential count as a laboratory reports it. Pure: numpy in, plain values out.

White cells are given as counts and percentages of the white cells counted, in
the usual clinical row order (neutrophils, lymphocytes, monocytes, eosinophils,
basophils, immature granulocytes), each with its 95 % confidence interval (Wilson
score interval: with 100 cells counted a true 5 % can read anywhere from 2 to
11 %, the uncertainty Rümke's table gives technicians). Erythroblasts are not
white cells: they are reported as NRBC per 100 white cells. Platelets are
counted on their own line. A cell whose best score is below ``min_score`` is
"uncertain": listed for review, never in the percentages. Given the analyser's
white count (10^9/L), rows also carry absolute counts, and the white count is
corrected for NRBC (WBC x 100 / (100 + NRBC)), as labs do. A counted cell may be revised (``revise``:
a tracked cell's class over all the frames it was seen; field mode revises nothing once the count is done).
"""
from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

import numpy as np

WHITE = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil", "immature_granulocyte")
NRBC = "erythroblast"
PLATELET = "platelet"
UNCERTAIN = "uncertain"
NOT_A_CELL = "not_a_cell"  # a review label: what the counter took for a cell was not one
# the white rows' titles in a report (differential text, session report, status page)
TITLES = {"neutrophil": "Neutrophils", "lymphocyte": "Lymphocytes", "monocyte": "Monocytes",
          "eosinophil": "Eosinophils", "basophil": "Basophils", "immature_granulocyte": "Immature granulocytes"}


def clinical_order(labels) -> list[str]:
    """The model's labels in the order a lab reports them: white cells, erythroblasts, platelets, others."""
    first = [c for c in (*WHITE, NRBC, PLATELET) if c in labels]
    return first + sorted(set(labels) - set(first))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % confidence interval of a proportion k / n, in percent (Wilson score interval)."""
    if n == 0:
        return 0.0, 100.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * max(centre - half, 0.0), 100 * min(centre + half, 1.0)


def percent_text(row: dict, white_total: int, dash: str = "–") -> tuple[str, str]:
    """A white-cell row's percentage and 95 % interval as a report shows them; ``dash`` for both when no white cell
    was counted (0.0 % of every class with a 0-100 interval read as a result)."""
    if not white_total:
        return dash, dash
    return f"{row['percent']:.1f}", f"{row['ci95'][0]:.0f}{dash}{row['ci95'][1]:.0f}"


class Differential:
    """A running differential count.

    Args:
        labels: the model's class names, in its score order.
        target: white cells to count (e.g. 100 or 200); ``done`` once reached. None: open-ended.
        min_score: a cell whose best score is below this is uncertain (for review).
        wbc_count: the analyser's white count, 10^9/L, for absolute counts (None: none given).
        listed: keep at most this many uncertain cells in the review list, the newest (all are counted:
            ``summary``'s ``not_listed`` says how many fell off). None: every one. A daemon's count over weeks
            listed every uncertain cell (0.5 KB each) for as long as it ran.
    """

    def __init__(self, labels: Sequence[str], target: int | None = None, min_score: float = 0.5,
                 wbc_count: float | None = None, listed: int | None = None):
        self.labels = list(labels)
        self.target = target
        self.min_score = min_score
        self.wbc_count = wbc_count
        self.listed = listed
        self.counts: dict[str, int] = {name: 0 for name in self.labels}
        self.review: list[dict[str, Any]] = []  # the uncertain cells
        self.not_listed = 0  # uncertain cells counted whose entries fell off the list (``listed``)

    def add(self, scores: np.ndarray, min_score: float | None = None, ref: Any = None, why: str | None = None) -> str:
        """Count one cell from its score vector (e.g. a track's mean); return its label or 'uncertain'.

        ``ref`` (a track id, a frame number: anything JSON-able) is kept with an uncertain
        cell so that a person can find it for review. ``why``: the cell is uncertain whatever its
        score, for this reason (kept with it in the review list).
        """
        return self._commit(*self._decide(scores, min_score, why), ref, why)

    def _commit(self, scores: np.ndarray, best: int, label: str, ref: Any, why: str | None) -> str:
        """Count one decided cell (``_decide``'s three values): its class, or an entry in the review list."""
        if label == UNCERTAIN:
            entry = {"ref": ref, "best": self.labels[best], "score": round(float(scores[best]), 4)}
            self._list(entry if why is None else {**entry, "why": why})
            return UNCERTAIN
        self.counts[label] += 1
        return label

    def label_for(self, scores: np.ndarray, min_score: float | None = None, why: str | None = None) -> str:
        """The label ``add`` would count these scores as (nothing is counted)."""
        return self._decide(scores, min_score, why)[2]

    def _decide(self, scores: np.ndarray, min_score: float | None, why: str | None) -> tuple[np.ndarray, int, str]:
        """The scores as a vector, the best class's index and the label: the best class, or uncertain below
        the threshold or when ``why`` says so. Raises ValueError for a vector of another length."""
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(self.labels):
            raise ValueError(f"{scores.shape[0]} scores for {len(self.labels)} labels")
        best = int(np.argmax(scores))
        threshold = self.min_score if min_score is None else min_score
        return scores, best, UNCERTAIN if why is not None or scores[best] < threshold else self.labels[best]

    def revise(self, was: str, scores: np.ndarray, ref: Any = None, why: str | None = None,
               min_score: float | None = None, match: dict | None = None) -> str:
        """Move one counted cell from ``was`` to what ``scores`` say now (a tracked cell's class over all its
        views); return its new label. An uncertain cell leaves the review list: the newest entry whose ``ref``
        holds every item of ``match`` (e.g. ``{"track": 7}``; None: the entry whose ref equals ``ref``). The list
        is searched from its end: the cell revised is nearly always one of the last listed (a run's list can hold
        thousands)."""
        decided = self._decide(scores, min_score, why)  # bad scores raise before anything moves
        if was == UNCERTAIN:
            def same(r) -> bool:
                if match is None:
                    return r == ref
                return isinstance(r, dict) and all(r.get(k) == v for k, v in match.items())
            k = next((i for i in range(len(self.review) - 1, -1, -1) if same(self.review[i]["ref"])), None)
            if k is not None:
                del self.review[k]
            elif self.not_listed:  # counted uncertain long ago: its entry fell off the list
                self.not_listed -= 1
            else:
                raise ValueError(f"no uncertain cell {match or ref!r} to revise")
        else:
            if self.counts.get(was, 0) <= 0:
                raise ValueError(f"no {was} counted to revise")
            self.counts[was] -= 1
        return self._commit(*decided, ref, why)

    def add_label(self, label: str) -> None:
        """Count one cell whose label was decided elsewhere (a person's correction, crop mode)."""
        if label == UNCERTAIN:
            self._list({"ref": None, "best": None, "score": None})
        else:
            self.counts[label] = self.counts.get(label, 0) + 1

    def _list(self, entry: dict) -> None:
        self.review.append(entry)
        if self.listed is not None and len(self.review) > self.listed:
            k = len(self.review) - self.listed + self.listed // 10  # a tenth more at once: not a copy per cell
            del self.review[:k]
            self.not_listed += k

    @property
    def white_total(self) -> int:
        return sum(self.counts.get(c, 0) for c in WHITE)

    @property
    def done(self) -> bool:
        return self.target is not None and self.white_total >= self.target

    def summary(self, cells: bool = True) -> dict:
        """JSON-able: white_total, rows [{class, count, percent, ci95[, absolute]}], nrbc_per_100_wbc,
        platelets, uncertain {count, cells[, not_listed]}, other (labels outside these groups), target, done.
        ``cells=False``: the uncertain cells' count only (``brief``)."""
        n = self.white_total
        rows = []
        for c in WHITE:
            if c not in self.counts:
                continue
            k = self.counts[c]
            lo, hi = wilson_interval(k, n)
            row = {"class": c, "count": k, "percent": round(100 * k / n, 1) if n else 0.0,
                   "ci95": [round(lo, 1), round(hi, 1)]}
            if self.wbc_count is not None:
                row["absolute"] = round(self._corrected_wbc() * k / n, 2) if n else 0.0  # 10^9/L
            rows.append(row)
        nrbc = self.counts.get(NRBC, 0)
        out = {
            "white_total": n,
            "rows": rows,
            "nrbc": nrbc,
            "nrbc_per_100_wbc": round(100 * nrbc / n, 1) if n else None,
            "platelets": self.counts.get(PLATELET, 0),
            "uncertain": {"count": len(self.review) + self.not_listed},
            "other": {k: v for k, v in self.counts.items() if k not in WHITE and k not in (NRBC, PLATELET)},
            "target": self.target,
            "done": self.done,
        }
        if cells:
            out["uncertain"]["cells"] = list(self.review)
            if self.not_listed:
                out["uncertain"]["not_listed"] = self.not_listed
        if self.wbc_count is not None:
            out["wbc_count"] = self.wbc_count
            out["wbc_corrected"] = round(self._corrected_wbc(), 2)
        return out

    def brief(self) -> dict:
        """``summary()`` less the review list (the uncertain cells' count only): for every frame's JSON line
        (the list is not copied)."""
        return self.summary(cells=False)

    def _corrected_wbc(self) -> float:
        """The analyser counts NRBC as white cells: WBC x 100 / (100 + NRBC per 100 WBC)."""
        n = self.white_total
        nrbc = 100 * self.counts.get(NRBC, 0) / n if n else 0.0
        return self.wbc_count * 100 / (100 + nrbc)

    def to_text(self) -> str:
        """A plain-text table in the layout of a manual differential report."""
        s = self.summary()
        n = s["white_total"]
        head = f"Differential: {n} white cells" + (f" of {s['target']}" + (" (done)" if s["done"] else "")
                                                  if s["target"] else "")
        absolute = self.wbc_count is not None
        lines = [head, f"{'Cell':<24}{'Count':>6}{'%':>7}{'95% CI':>14}" + (f"{'x10^9/L':>10}" if absolute else "")]
        if not n:  # 0.0 % of every class with a 0-100 % interval read as a result
            lines[0] += ": none counted, so no percentages"
        for r in s["rows"]:
            pct, ci = percent_text(r, n, "-")
            lines.append(f"{TITLES[r['class']]:<24}{r['count']:>6}{pct:>7}{ci:>14}"
                         + ((f"{r['absolute']:>10.2f}" if n else f"{'-':>10}") if absolute else ""))
        total = f"{100.0:.1f}" if n else "-"
        lines.append(f"{'White cells':<24}{n:>6}{total:>7}"
                     + (f"{'':>14}{s['wbc_corrected']:>10.2f}" if absolute else ""))
        nrbc = "-" if s["nrbc_per_100_wbc"] is None else f"{s['nrbc_per_100_wbc']:.1f}"
        lines.append(f"{'NRBC /100 WBC':<24}{nrbc:>6}   ({s['nrbc']} erythroblasts)")
        lines.append(f"{'Platelets (seen)':<24}{s['platelets']:>6}")
        for k, v in s["other"].items():
            lines.append(f"{k:<24}{v:>6}")
        lines.append(f"{'Uncertain (review)':<24}{s['uncertain']['count']:>6}")
        if absolute:
            lines.append(f"WBC {self.wbc_count:g} x10^9/L (analyser), {s['wbc_corrected']:.2f} corrected for NRBC")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """section,class,count,percent,ci95_low,ci95_high,absolute_1e9_per_l: one row per line of the report."""
        s = self.summary()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["section", "class", "count", "percent", "ci95_low", "ci95_high", "absolute_1e9_per_l"])
        for r in s["rows"]:  # no white cell counted: no percentages (empty cells), not 0.0 with a 0-100 interval
            w.writerow(["white", r["class"], r["count"], *((r["percent"], *r["ci95"]) if s["white_total"] else
                                                           ("", "", "")), r.get("absolute", "")])
        w.writerow(["white", "total", s["white_total"], 100.0 if s["white_total"] else "", "", "",
                    s.get("wbc_corrected", "")])
        w.writerow(["nrbc", NRBC, s["nrbc"], s["nrbc_per_100_wbc"] if s["nrbc_per_100_wbc"] is not None else "", "", "",
                    ""])
        w.writerow(["platelet", PLATELET, s["platelets"], "", "", "", ""])
        for k, v in s["other"].items():
            w.writerow(["other", k, v, "", "", "", ""])
        w.writerow(["review", UNCERTAIN, s["uncertain"]["count"], "", "", "", ""])
        return buf.getvalue()
