"""Probe: is another lab's field-mode error a scale error? Re-run field mode with the model's
red-cell scale multiplied by each factor and compare accuracy and confusions.

    python tools/scale_sensitivity.py 0.8 1.0 1.25      # DeepBioNet adapt part (file number even)

Recorded: benchmarks/results/deepbionet-scale-sensitivity.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

from scopelite.edge import field as field_lib
from scopelite.edge import fieldset
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.packaged import default_model
from scopelite.edge.sources import list_images

FIELDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "other-labs" / "deepbionet" / "fields"


def main() -> None:
    clf = LiteRTClassifier(default_model(), num_threads=1)
    fields = fieldset.parts_by_number(list_images([FIELDS]))[0]
    for factor in (float(x) for x in sys.argv[1:] or ["1.0"]):
        cfg = field_lib.FieldConfig(model_rbc_px=field_lib.DEFAULT_MODEL_RBC_PX * factor, input_px=96)
        s = fieldset.score_fields(clf, fields, cfg)
        print(factor, round(s.accuracy, 3), {k: round(v, 2) for k, v in s.per_class.items()},
              s.confusion.most_common(8), flush=True)


if __name__ == "__main__":
    main()
