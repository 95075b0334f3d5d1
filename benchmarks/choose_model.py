"""Choose among candidate float models by VALIDATION accuracy; report the test split beside it.

    python benchmarks/choose_model.py NAME=RUN/model.keras [NAME=...] --out selection.json [--tta 1,8]

Every candidate must come from one lineage (one saved split). Each is scored on the clean
validation split and on a corrupted copy of it (seed 1), and on the test split clean and
corrupted (seed 0, as `celltrain evaluate`), plain and over TTA views. Choose by ``val_score``
(mean of val and val_corrupted); the test figures are for the record, not for choosing.

``--ensembles`` also scores the mean prediction of every combination of two or more candidates
(plain views): not a shippable model, a measure of how far apart the candidates' mistakes are.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+", metavar="NAME=MODEL")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--tta", default="1,8")
    ap.add_argument("--ensembles", action="store_true", help="also score every combination's mean prediction")
    args = ap.parse_args()
    cands = dict(a.split("=", 1) for a in args.candidates)
    if args.ensembles and (len(cands) < 2 or "1" not in args.tta.split(",")):
        ap.error("--ensembles needs --tta to include 1 and at least two candidates")

    from scopelite.train.corruptions import corrupted_copy
    from scopelite.train.metrics import summarize
    from scopelite.train.run import heldout_data, load_keras_bundle, predict

    first = Path(next(iter(cands.values())))
    sc, _ = load_keras_bundle(first)
    ds, split = heldout_data(sc, first, None)
    val, test = ds.subset(split["val"]), ds.subset(split["test"])
    sets = {"val": (val.images, val.labels), "val_corrupted": (corrupted_copy(val.images, 1)[0], val.labels),
            "test": (test.images, test.labels), "test_corrupted": (corrupted_copy(test.images, 0)[0], test.labels)}
    def score(probs: dict) -> dict:
        r = {}
        for s, (_, y) in sets.items():
            acc = summarize(y, probs[s], sc.labels)
            r[s] = round(100 * acc["accuracy"], 2)
            r[s + "_ci95"] = [round(100 * v, 2) for v in acc["accuracy_ci95"]]
        r["val_score"] = round((r["val"] + r["val_corrupted"]) / 2, 2)
        return r

    res, plain = {}, {}
    for name, p in cands.items():
        _, m = load_keras_bundle(Path(p))
        for t in (int(v) for v in args.tta.split(",")):
            probs = {s: predict(m, x, batch_size=128, tta=t) for s, (x, _) in sets.items()}
            if t == 1:
                plain[name] = probs
            r = score(probs)
            res[f"{name} tta{t}"] = {"path": p, **r}
            print(name, t, {k: v for k, v in r.items() if "ci" not in k}, flush=True)
    out = {"candidates": res}
    if args.ensembles:
        ens = {}
        for k in range(2, len(plain) + 1):
            for combo in itertools.combinations(plain, k):
                ens["+".join(combo)] = score({s: sum(plain[n][s] for n in combo) / k for s in sets})
        out["ensembles"] = ens
        top = max(ens, key=lambda k: ens[k]["test"])
        print(f"{len(ens)} ensembles; highest test accuracy: {top} ({ens[top]['test']} %)")
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    best = max(res, key=lambda k: res[k]["val_score"])
    print(f"highest val_score: {best} ({res[best]['val_score']})")


if __name__ == "__main__":
    main()
