"""Probe: does a fixed per-site colour map (in optical density) help the shipped model on another lab?

    python tools/site_colour_probe.py --data ../shared/data

Site stats (background colour, median red-cell and nucleus OD vectors) are measured on every third
DeepBioNet field whose file number is even (the adapt part, labels unused); field mode is scored on the
fields whose file number is odd (the report part). Reference stats: every fourth PBC field. Maps:
'none'; 'diag' (per-channel OD gain that takes the site's red-cell OD to PBC's); 'full' (a 3x3 OD map
taking red cell, nucleus and their cross product to PBC's). A probe, not a feature: both maps made
the shipped model worse (benchmarks/results/site-colour-probe.json), so `celledge calibrate` does not
ship a colour map.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge import fieldset
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.packaged import default_model
from scopelite.edge.sources import list_images, read_image_rgb
from scopelite.edge.stain import stain_layers
from scopelite.edge.sysinfo import machine


def stats(img):
    f = img.astype(np.float32) + 1
    sub = f.mean(2)[::2, ::2]
    bg = np.percentile(f[::2, ::2][sub > np.percentile(sub, 60)], 75, axis=0)
    od3 = np.maximum(-np.log(f / bg), 0)
    lay = stain_layers(img)
    st = lay.residual > lay.t_stained
    red = (lay.od > lay.t_cell) & ~cv2.dilate(st.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    return bg, np.median(od3[red], axis=0), (np.median(od3[st], axis=0) if st.sum() > 50 else None)


def site_stats(imgs):
    s = [stats(i) for i in imgs]
    return (np.median([x[0] for x in s], 0), np.median([x[1] for x in s], 0),
            np.median([x[2] for x in s if x[2] is not None], 0))


def make_map(site, ref, mode):
    bg_s, rbc_s, nuc_s = site
    bg_r, rbc_r, nuc_r = ref
    if mode == "none":
        return lambda img: img
    if mode == "diag":
        m = np.diag(rbc_r / np.maximum(rbc_s, 1e-3))
    else:
        a = np.stack([rbc_s, nuc_s, np.cross(rbc_s, nuc_s)], 1)
        m = np.stack([rbc_r, nuc_r, np.cross(rbc_r, nuc_r)], 1) @ np.linalg.inv(a)

    def apply(img):
        od = np.maximum(-np.log((img.astype(np.float32) + 1) / bg_s), 0)
        return np.clip(bg_r * np.exp(-(od @ m.T)) - 1, 0, 255).astype(np.uint8)

    return apply


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "site-colour-probe.json"))
    a = ap.parse_args()
    data = Path(a.data)
    clf = LiteRTClassifier(default_model(), num_threads=2)
    cfg = fieldset.default_config(clf)
    ref = site_stats([read_image_rgb(p) for p in list_images([data / "pbc-fields"])[::4]])
    files = list_images([data / "other-labs" / "deepbionet" / "fields"])
    number = lambda p: int("".join(c for c in p.stem if c.isdigit()) or 0)  # noqa: E731
    adapt = [p for p in files if number(p) % 2 == 0]
    report = [p for p in files if number(p) % 2 == 1]
    site = site_stats([read_image_rgb(p) for p in adapt[::3]])
    out = {}
    for mode in ("none", "diag", "full"):
        s = fieldset.score_fields(clf, report, cfg, transform=make_map(site, ref, mode))
        out[mode] = {"accuracy": round(s.accuracy, 4), "per_class": {k: round(v, 4) for k, v in s.per_class.items()}}
        print(mode, out[mode])
    Path(a.out).write_text(json.dumps({
        "command": "python tools/site_colour_probe.py --data ../shared/data", "machine": machine(),
        "date": datetime.date.today().isoformat(), "adapt_fields_used": len(adapt[::3]), "report_fields": len(report),
        "note": "adapted figure (unlabelled site frames); Data: Shams et al., Blood Cells Mol Dis 2024", **out},
        indent=1) + "\n")


if __name__ == "__main__":
    main()
