"""Measure the site-calibration candidates (rule: /work/notes/decision12-site.md) and record them.

    python tools/site_calibration.py --data ../shared/data

Candidates: none, scale (fixed site scale), colour (white balance to the training background), both.
Sets: DeepBioNet adapt part (file number even; chooses), report part (odd; reported), PBC fields not used to
calibrate (every 4th calibrates; guard), native debris severity 5 on all PBC fields (site calibrated on the
clean every-4th PBC fields). Writes benchmarks/results/site-calibration.json (partial results after each set).
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

from scopelite.edge import fieldset, site as site_lib
from scopelite.edge.bundle import write_json_atomic
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.ood import reference_of
from scopelite.edge.packaged import default_model
from scopelite.edge.sources import list_images, read_image_rgb
from scopelite.edge.stain import frame_background
from scopelite.edge.sysinfo import machine

CANDIDATES = {"none": None, "scale": (True, False), "colour": (False, True), "both": (True, True),
              "frame_colour": "frame"}  # the last: reported only (each frame's own background; rule addendum)
RULE = Path("/work/notes/decision12-site.md")


def variant(record: dict, flags):
    if flags is None or flags == "frame":
        return None
    rec = {**record, "scale": {**record["scale"], "use": flags[0]}, "colour": {**record["colour"], "use": flags[1]}}
    return site_lib.from_record(rec, "measured")


def scored(s: fieldset.Scores) -> dict:
    return {"right": sum(sum(v) for v in s.hits.values()), "fields": s.fields, "accuracy": round(s.accuracy, 4),
            "per_class": {k: round(v, 4) for k, v in s.per_class.items()},
            "confusion": {f"{t}->{p}": n for (t, p), n in s.confusion.most_common(10)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--sets", default="A,P,D,R")  # then --decide applies the rule
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                                          / "site-calibration.json"))
    ap.add_argument("--decide", action="store_true", help="only apply the rule to the measured --out file")
    a = ap.parse_args()
    data = Path(a.data)
    if a.decide:
        import json

        out = json.loads(Path(a.out).read_text())
        out["decision"] = decide(out["sets"])
        out["deepbionet_ruler_by_class"] = ruler_by_class(data)
        out["decision_command"] = "python tools/site_calibration.py --data ../shared/data --decide"
        out["note"] = ("'sites' are the calibration records as measured (each candidate sets scale.use / colour.use "
                       "itself). A fixed site scale cannot fit DeepBioNet: its fields are at two magnifications "
                       "(deepbionet_ruler_by_class; calibrate now reports 'magnifications').")
        write_json_atomic(a.out, out)
        print(out["decision"], out["deepbionet_ruler_by_class"])
        return
    clf = LiteRTClassifier(default_model(), num_threads=2)
    cfg = fieldset.default_config(clf)
    ref = reference_of(clf.sidecar)
    kw = dict(input_px=clf.input_spec.height, model_rbc_px=cfg.model_rbc_px, model_name=clf.path.name, reference=ref)

    pbc = list_images([data / "pbc-fields"])
    pbc_cal, pbc_rest = pbc[::4], [p for i, p in enumerate(pbc) if i % 4]
    pbc_cal_frames = [read_image_rgb(p) for p in pbc_cal]  # read once: the target background, then the site
    target = tuple(round(float(v), 1) for v in np.median([frame_background(f) for f in pbc_cal_frames], axis=0))
    adapt, report = fieldset.parts_by_number(list_images([data / "other-labs" / "deepbionet" / "fields"]))
    dbn_frames = site_lib.pick_evenly(adapt, site_lib.DEFAULT_FRAMES)
    dbn_site = site_lib.calibrate((read_image_rgb(p) for p in dbn_frames), target_background=target,
                                  source="deepbionet adapt part (even), evenly spread", **kw)
    pbc_site = site_lib.calibrate(pbc_cal_frames, target_background=target,
                                  source="pbc-fields, every 4th", **kw)
    out = {
        "what": "Site calibration candidates for `celledge calibrate` / `--site` (issue 13 item 3b). Shipped int8 "
                "model, field mode (edge/fieldset.py score_fields); DeepBioNet: pick 'largest', PBC: pick 'centre'.",
        "command": "python tools/site_calibration.py --data ../shared/data " + " ".join(sys.argv[1:]),
        "machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rule": RULE.read_text() if RULE.exists() else None,
        "data": "PBC: Acevedo et al., Data in Brief 30:105474, 2020. DeepBioNet: Shams et al., Blood Cells, "
                "Molecules and Diseases, 2024 (adapted figures: unlabelled adapt-part frames; report part odd).",
        "training_background_pbc_every_4th": list(target),
        "sites": {"deepbionet": dbn_site, "pbc": pbc_site},
        "calibration_frames": {"deepbionet": [f"{p.parent.name}/{p.name}" for p in dbn_frames],
                               "pbc": len(pbc_cal)},
        "sets": {},
    }
    sets = {
        "A": ("deepbionet_adapt", lambda s, t: fieldset.score_fields(clf, adapt, cfg, "largest", t, s), dbn_site),
        "R": ("deepbionet_report", lambda s, t: fieldset.score_fields(clf, report, cfg, "largest", t, s), dbn_site),
        "P": ("pbc_not_calibrated", lambda s, t: fieldset.score_fields(clf, pbc_rest, cfg, "centre", t, s), pbc_site),
        "D": ("pbc_debris5", lambda s, t: debris(clf, cfg, data / "pbc-fields", s, t), pbc_site),
    }
    for key in a.sets.split(","):
        name, fn, record = sets[key]
        out["sets"][name] = {}
        for cand, flags in CANDIDATES.items():
            t0 = time.time()
            frame_wb = None
            if flags == "frame":  # reported only: each frame balanced from its own background
                frame_wb = lambda img: site_lib.balance_to(img, frame_background(img), target)  # noqa: E731
            out["sets"][name][cand] = scored(fn(variant(record, flags), frame_wb))
            out["sets"][name][cand]["seconds"] = round(time.time() - t0, 1)
            print(name, cand, out["sets"][name][cand]["right"], out["sets"][name][cand]["fields"],
                  out["sets"][name][cand]["accuracy"], flush=True)
            write_json_atomic(a.out, out)


def decide(sets: dict) -> dict:
    """The rule of /work/notes/decision12-site.md applied to the measured sets (A chooses, P guards, D: rule 4)."""
    right = {k: {c: v["right"] for c, v in sets[k].items()} for k in sets}
    A, P, D = right["deepbionet_adapt"], right["pbc_not_calibrated"], right["pbc_debris5"]
    order = ["none", "scale", "colour", "both"]  # ties: fewer transforms; frame_colour is reported only
    eligible = [c for c in order if P[c] >= P["none"] - 1]
    best = max(eligible, key=lambda c: (A[c], -order.index(c)))
    winner = best if A[best] - A["none"] >= 2 else "none"
    scale_on = winner in ("scale", "both") or (
        winner == "none" and abs(A["scale"] - A["none"]) <= 1 and P["scale"] >= P["none"] - 1
        and D["scale"] - D["none"] >= 5)
    return {"eligible": eligible, "winner": winner, "shipped_defaults": {"scale": scale_on,
                                                                        "colour": winner in ("colour", "both")},
            "why": f"A (right of 181): {A}; P (of 120): {P}; D (of 160): {D}"}


def ruler_by_class(data: Path) -> dict:
    """The per-frame ruler's red-cell diameter per class folder on DeepBioNet's adapt part (why one site scale
    does not fit it)."""
    from scopelite.edge.scale import estimate_rbc_diameter

    files = fieldset.parts_by_number(list_images([data / "other-labs" / "deepbionet" / "fields"]))[0]
    by: dict[str, list[float]] = {}
    for p in files:
        d = estimate_rbc_diameter(read_image_rgb(p)).diameter_px
        if d is not None:
            by.setdefault(p.parent.name, []).append(d)
    return {k: {"fields": len(v), "p10_p50_p90_px": [round(float(x), 1) for x in np.percentile(v, [10, 50, 90])]}
            for k, v in by.items()}


def debris(clf, cfg, folder: Path, site, transform=None) -> fieldset.Scores:
    """Native debris severity 5 on every PBC field (seed 0, as tools/native_debris_diagnosis.py), pick 'centre'."""
    from scopelite.compress.native import load_fields
    from scopelite.train.native_corruptions import corrupt_native, px_per_um

    global _FS
    if _FS is None:
        fs = load_fields(folder, clf.labels, 0, 0)
        ppu = px_per_um(fs.rbc_px)
        _FS = (fs, [corrupt_native(im, "debris", 5, ppu, i) for i, im in enumerate(fs.images)])
    fs, images = _FS
    if transform is not None:
        images = [transform(im) for im in images]
    s = fieldset.Scores()
    for t, res in zip(fs.truth, fieldset.classify_fields(images, clf, cfg, "centre", site)):
        s.add(t, res.label)
    return s


_FS = None

if __name__ == "__main__":
    main()
