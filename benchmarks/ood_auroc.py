"""How well the stain distance (edge/ood.py) tells PBC's crops from another lab's and from junk.

    python benchmarks/ood_auroc.py --data ../shared/data --out benchmarks/results/ood-auroc.json

The reference is measured on a random half of pbc96 (seed 1) and PBC is scored on 600 crops of the
other half, so no scored crop shaped the reference. DeepBioNet crops: each labelled field's largest
white-cell-sized detection, cropped at the measured scale (what field mode classifies), zero-shot.
Junk: blank frames, PBC crops blurred (sigma 6 px), a thumb over the lens (skin-coloured noise), random
pixels. An image with no red cell or nucleus to compare scores None and counts as flagged.
AUROC = P(score of the other image > score of a PBC crop), ties counted half.
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge import field as field_lib
from scopelite.edge import fieldset, ood
from scopelite.edge.sources import list_images
from scopelite.edge.sysinfo import machine
from scopelite.train.data import load_folders


def auroc(neg: list, pos: list) -> float:
    n = np.array([np.inf if v is None else v for v in neg])
    p = np.array([np.inf if v is None else v for v in pos])
    return float(np.mean(p[:, None] > n[None, :]) + 0.5 * np.mean(p[:, None] == n[None, :]))


def field_crops(folder: Path, model_rbc_px: float, size: int) -> list[np.ndarray]:
    """Each field's main white cell at the model's scale, each field's own scale (no smoothing)."""
    cfg = field_lib.FieldConfig(model_rbc_px=model_rbc_px, input_px=size)
    crops = (fieldset.main_cell_crop(img, cfg) for img in fieldset.read_fields(list_images([folder])))
    return [c for c in crops if c is not None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ood-auroc.json"))
    a = ap.parse_args()
    data = Path(a.data)
    ds = load_folders(data / "pbc96", 96)
    perm = np.random.default_rng(1).permutation(len(ds))
    ref_idx, test_idx = perm[: len(ds) // 2], perm[len(ds) // 2 :][:600]
    ref = ood.reference_from(ds.images[ref_idx])
    scores = lambda images: [ood.score(ood.stain_stats(np.ascontiguousarray(x)), ref) for x in images]  # noqa: E731
    pbc = scores(ds.images[test_idx])
    rng = np.random.default_rng(0)
    others = {
        "deepbionet_crops": field_crops(data / "other-labs" / "deepbionet" / "fields", 18.0, 96),
        "blank": [np.full((96, 96, 3), v, np.uint8) for v in rng.integers(150, 255, 50)],
        "out_of_focus": [cv2.GaussianBlur(x, (0, 0), 6) for x in ds.images[test_idx[:50]]],
        "thumb_over_lens": [np.clip(rng.normal([190, 140, 120], 15, (96, 96, 3)), 0, 255).astype(np.uint8)
                            for _ in range(50)],
        "random_pixels": [rng.integers(0, 256, (96, 96, 3)).astype(np.uint8) for _ in range(50)],
    }
    res = {}
    for name, images in others.items():
        s = scores(images)
        res[name] = {"n": len(s), "auroc_vs_pbc": round(auroc(pbc, s), 4), "unmeasurable": sum(v is None for v in s),
                     "flagged_at_threshold": round(float(np.mean([v is None or v > ref.threshold for v in s])), 4)}
    payload = {"command": "python benchmarks/ood_auroc.py --data ../shared/data", "machine": machine(),
               "date": datetime.date.today().isoformat(), "reference": ref.to_json(),
               "pbc_heldout": {"n": len(pbc), "flagged_at_threshold": round(float(np.mean(
                   [v is None or v > ref.threshold for v in pbc])), 4),
                   "median_score": float(np.median([v for v in pbc if v is not None]))},
               "note": __doc__.strip().splitlines()[2:], **res}
    Path(a.out).write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps({k: v for k, v in payload.items() if k not in ("machine", "note")}, indent=1))


if __name__ == "__main__":
    main()
