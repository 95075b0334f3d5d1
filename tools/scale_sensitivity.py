"""Probe: is another lab's field-mode error a scale error? Re-run field mode with the model's
red-cell scale multiplied by each factor and compare accuracy and confusions.

    python tools/scale_sensitivity.py 0.8 1.0 1.25      # DeepBioNet adapt part (file number even)

Recorded: benchmarks/results/deepbionet-scale-sensitivity.json.
"""
from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np

from scopelite.edge import field as field_lib
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.packaged import default_model
from scopelite.edge.sources import list_images, read_image_rgb
from scopelite.edge.watch import FieldScale, classify_field

FIELDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "other-labs" / "deepbionet" / "fields"


def main() -> None:
    clf = LiteRTClassifier(default_model(), num_threads=1)
    fields = [p for p in list_images([FIELDS]) if int("".join(c for c in p.stem if c.isdigit()) or 0) % 2 == 0]
    for factor in (float(x) for x in sys.argv[1:] or ["1.0"]):
        cfg = field_lib.FieldConfig(model_rbc_px=field_lib.DEFAULT_MODEL_RBC_PX * factor, input_px=96)
        scale, hits, confusions = FieldScale(cfg), collections.defaultdict(list), collections.Counter()
        for p in fields:
            cells, _ = classify_field(read_image_rgb(p), clf, cfg, 0.0, scale=scale)
            main_cell = ([c for c in cells if c["kind"] == "white"] or cells or [None])[0]
            best = main_cell["best"] if main_cell else None
            hits[p.parent.name].append(best == p.parent.name)
            confusions[(p.parent.name, best)] += 1
        print(factor, round(float(np.mean([h for v in hits.values() for h in v])), 3),
              {k: round(float(np.mean(v)), 2) for k, v in hits.items()}, confusions.most_common(8), flush=True)


if __name__ == "__main__":
    main()
