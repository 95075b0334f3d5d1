"""Decision 33a's probe: what two int8 models give together, routed by the stain distance or averaged.

    python tools/stain_route_probe.py SECOND.tflite OUT.npz [--data ../shared/data] [--split RUN/split.json]
    python tools/stain_route_probe.py --summary OUT.npz            (each candidate's figures, as JSON)

For PBC's 160 fields (the centre cell), DeepBioNet's 361 labelled fields (the largest white cell; parts as
tools/cross_lab_score.py makes them) and the shipped model's PBC test split (clean and its corrupted copy, as
cellcompress makes it), saves per image: the truth, the stain distance to the shipped model's training data (a
field's frame distance, as field mode measures it; a crop's own) and both models' scores on the same crops.
The candidates are then a few lines of numpy (``--summary``), so no candidate's figure is computed before the
rule that judges it is written.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from scopelite.edge import field as field_lib
from scopelite.edge import fieldset, ood
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.packaged import default_model
from scopelite.edge.sources import list_images
from scopelite.edge.watch import FieldScale, classify_field


class _Both:
    """The shipped model as field mode sees it, also scoring every crop with a second model."""

    def __init__(self, first: LiteRTClassifier, second: LiteRTClassifier):
        self.first, self.second, self.labels, self.input_spec = first, second, first.labels, first.input_spec
        self.last_second = None

    def classify(self, crops):
        self.last_second = np.asarray(self.second.classify(crops), np.float64)
        return self.first.classify(crops)


def fields(both: _Both, paths, pick: str, ref) -> dict:
    cfg = fieldset.default_config(both)
    scaler = FieldScale(cfg)
    truth, dist, p1, p2 = [], [], [], []
    for p, img in zip(paths, fieldset.read_fields(paths)):
        cells, scale = classify_field(img, both, cfg, 0.0, scale=scaler, reference=ref)
        main = fieldset.main_cell(cells, img.shape, pick)
        truth.append(fieldset.truth(p))
        d = scale.get("stain", {}).get("distance")
        dist.append(np.nan if d is None else d)
        if main is None:
            p1.append(np.full(8, np.nan)), p2.append(np.full(8, np.nan))
        else:
            i = next(k for k, c in enumerate(cells) if c is main)
            p1.append(np.asarray(main["scores"], np.float64)), p2.append(both.last_second[i])
    return {"truth": np.array(truth), "dist": np.array(dist), "p1": np.array(p1), "p2": np.array(p2),
            "paths": np.array([str(p) for p in paths])}


def test_crops(first, second, split: Path, data: Path, ref) -> dict:
    from scopelite.train import data as data_lib
    from scopelite.train.corruptions import corrupted_copy
    ds = data_lib.load_folders(data, 96)
    test = ds.subset(data_lib.load_split(split, ds)["test"])
    corrupted, _ = corrupted_copy(test.images, 0)
    out = {"test_labels": test.labels}
    for name, imgs in (("clean", test.images), ("corrupted", corrupted)):
        out[f"test_{name}_dist"] = np.array([np.nan if (d := ood.score(ood.stain_stats(im), ref)) is None else d
                                             for im in imgs])
        out[f"test_{name}_p1"] = np.asarray(first.classify(imgs), np.float64)
        out[f"test_{name}_p2"] = np.asarray(second.classify(imgs), np.float64)
    return out


def _right(truth, p, labels):
    ok = ~np.isnan(p).any(1)
    pred = np.array([labels[i] if o else None for i, o in zip(np.nan_to_num(p).argmax(1), ok)], object)
    return pred == truth


def candidates(p1, p2, dist, threshold: float) -> dict:
    """Decision 33a's candidates: the shipped model (p1), the second (p2), A: an image stained unlike the
    training data (distance above the threshold; none measured: like) goes to the second; B: the mean of both on
    every image; C: unlike -> the mean, like -> the shipped model."""
    unlike = (np.nan_to_num(dist, nan=-1) > threshold)[:, None]
    mean = (p1 + p2) / 2
    return {"shipped": p1, "second": p2, "A_route": np.where(unlike, p2, p1), "B_mean": mean,
            "C_route_mean": np.where(unlike, mean, p1)}


def summary(path: str, threshold: float) -> dict:
    z = np.load(path)
    labels = list(z["labels"])
    res: dict = {}
    for name, p in candidates(z["pbc_p1"], z["pbc_p2"], z["pbc_dist"], threshold).items():
        res.setdefault(name, {})["pbc_fields_right_of_160"] = int(_right(z["pbc_truth"], p, labels).sum())
    adapt = z["dbn_adapt"]
    for name, p in candidates(z["dbn_p1"], z["dbn_p2"], z["dbn_dist"], threshold).items():
        r = _right(z["dbn_truth"], p, labels)
        res[name].update(dbn_adapt_right=int(r[adapt].sum()), dbn_report_right=int(r[~adapt].sum()),
                         dbn_all_right=int(r.sum()))
    truth = np.array(labels)[z["test_labels"]]
    for part in ("clean", "corrupted"):
        for name, p in candidates(z[f"test_{part}_p1"], z[f"test_{part}_p2"], z[f"test_{part}_dist"],
                                  threshold).items():
            res[name][f"pbc_test_{part}_pct"] = round(100 * float(_right(truth, p, labels).mean()), 2)
    unlike = {k: round(float((np.nan_to_num(z[k], nan=-1) > threshold).mean()), 4)
              for k in ("pbc_dist", "dbn_dist", "test_clean_dist", "test_corrupted_dist")}
    return {"parts": {"dbn_adapt": int(adapt.sum()), "dbn_report": int((~adapt).sum())},
            "unlike_fraction": unlike, "candidates": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("second", nargs="?")
    ap.add_argument("out")
    ap.add_argument("--summary", action="store_true", help="print the candidates' figures of OUT.npz")
    ap.add_argument("--threshold", type=float, default=None, help="default: the shipped sidecar's")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--split", default="/work/runs/base/split.json")
    a = ap.parse_args()
    if a.summary:
        ref = ood.reference_of(LiteRTClassifier(default_model()).sidecar)
        print(json.dumps(summary(a.out, a.threshold or ref.threshold), indent=1))
        return
    data = Path(a.data)
    first = LiteRTClassifier(default_model(), num_threads=2)
    second = LiteRTClassifier(a.second, num_threads=2)
    # the same view of a cell: crops are cut at the shipped model's scale (gx1 measured 17.98 px, shipped 18.0)
    assert first.labels == second.labels and first.input_spec.height == second.input_spec.height
    assert abs(first.input_spec.rbc_px / second.input_spec.rbc_px - 1) < 0.01
    ref = ood.reference_of(first.sidecar)
    both = _Both(first, second)
    out = {}
    pbc = fields(both, list_images([data / "pbc-fields"]), "centre", ref)
    out.update({f"pbc_{k}": v for k, v in pbc.items()})
    dbn_paths = list_images([data / "other-labs" / "deepbionet" / "fields"])
    scfg = field_lib.FieldConfig(model_rbc_px=field_lib.model_rbc_px(first.input_spec),
                                 input_px=first.input_spec.height)
    groups = fieldset.groups_from_scores(dbn_paths, fieldset.copy_scores(fieldset.main_cell_crops(dbn_paths, scfg)))
    adapt, _report = fieldset.parts_by_number(dbn_paths, groups)
    dbn = fields(both, dbn_paths, "largest", ref)
    out.update({f"dbn_{k}": v for k, v in dbn.items()})
    out["dbn_adapt"] = np.array([Path(p) in set(map(Path, adapt)) for p in dbn_paths])
    out.update(test_crops(first, second, Path(a.split), data / "pbc96", ref))
    out["labels"] = np.array(first.labels)
    np.savez(a.out, **out)
    print(json.dumps({k: list(np.shape(v)) for k, v in out.items()}))


if __name__ == "__main__":
    main()
