"""How much of a view the red cells cover, on real fields and on noise: where ``site.MIN_RED_COVER`` comes from.

    python tools/smear_cover.py OUT.json [--data ../shared/data]

The share is what ``site.measure_frame`` reads (the red cells the ruler rests on x their disc / the view). Real:
PBC's 160 fields (also at 0.2x, and under defocus, shot noise, Gaussian noise, a stain change and pixelation at
severity 5 on every 4th field), DeepBioNet's 361 fields and every 3rd of its 600 detection frames. Not a smear: 20
frames each of uniform random pixels (640x480 and 320x240), Gaussian noise, blurred noise and smooth blobs. Also
generated fields with 1-3x the red cells (crowded smears: few lone red cells for the ruler). Each set's median pixel
noise too: calibrate refuses frames whose cover is under 2 % AND whose noise is above 6 grey levels.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge import site as site_lib
from scopelite.edge.sources import list_images, read_image_rgb
from scopelite.edge.sysinfo import machine
from scopelite.train.corruptions import corrupt
from scopelite.train.synth import CLASS_NAMES, render_scene


def covers(frames) -> dict:
    ms = [site_lib.measure_frame(f) for f in frames]
    c = [m.red_cover for m in ms if m.red_cover is not None]
    return {"frames": len(ms), "with_a_ruler": len(c), "noise_median": round(float(np.median([m.noise for m in ms])), 1),
            **({"min": round(min(c), 5), "p5": round(float(np.percentile(c, 5)), 5),
                "median": round(float(np.median(c)), 5), "max": round(max(c), 5)} if c else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    a = ap.parse_args()
    d = Path(a.data)
    pbc = [read_image_rgb(p) for p in list_images([d / "pbc-fields"])]
    dbn = list_images([d / "other-labs" / "deepbionet" / "fields"])
    det = list_images([d / "other-labs" / "deepbionet" / "detection" / "images"])[::3]
    real = {"pbc_fields": covers(pbc),
            "pbc_fields_0.2x": covers(cv2.resize(f, None, fx=0.2, fy=0.2, interpolation=cv2.INTER_AREA)
                                      for f in pbc[::4]),
            "deepbionet_fields": covers(read_image_rgb(p) for p in dbn),
            "deepbionet_detection_every_3rd": covers(read_image_rgb(p) for p in det)}
    for c in ("defocus_blur", "shot_noise", "gaussian_noise", "stain", "pixelate"):
        real[f"pbc_fields_{c}_5"] = covers(corrupt(f, c, 5, i) for i, f in enumerate(pbc[::4]))
    crowd = np.random.default_rng(0)  # generated fields, 1x / 2x / 3x the red cells (a crowded, thick smear)
    for k in (1, 2, 3):
        real[f"generated_{k}x_red_cells"] = covers(
            render_scene(480, 640, [(CLASS_NAMES.index("neutrophil"), 320, 240)], 1.0, crowd, 250 * k)
            for _ in range(10))
    rng = np.random.default_rng(1)
    blur = lambda s: cv2.normalize(cv2.GaussianBlur(rng.normal(0, 1, (480, 640, 3)).astype(np.float32), (0, 0), s),  # noqa: E731
                                   None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    noise = {"uniform_640x480": covers(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(20)),
             "uniform_320x240": covers(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(20)),
             "gaussian_sd30": covers(np.clip(rng.normal(190, 30, (480, 640, 3)), 0, 255).astype(np.uint8)
                                     for _ in range(20)),
             "gaussian_sd60": covers(np.clip(rng.normal(160, 60, (480, 640, 3)), 0, 255).astype(np.uint8)
                                     for _ in range(20)),
             "blurred_uniform_s3": covers(cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
                                                           (0, 0), 3) for _ in range(20)),
             "blobs_s8": covers(blur(8) for _ in range(20))}
    out = {"what": "the share of the view the ruler's red cells cover (site.measure_frame's red_cover)",
           "command": f"python tools/smear_cover.py {a.out}", "machine": machine(),
           "date": datetime.date.today().isoformat(), "min_red_cover": site_lib.MIN_RED_COVER,
           "real": real, "not_a_smear": noise}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v.get("median") for k, v in {**real, **noise}.items()}))


if __name__ == "__main__":
    main()
