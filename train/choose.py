"""``celltrain choose``: pick among candidate models by their VALIDATION score; test figures beside it.

Every candidate must come from one lineage (one saved split). Each is scored on the clean
validation split and on a corrupted copy of it (seed 1), and on the test split clean and
corrupted (seed 0, as ``celltrain evaluate``), plain and over TTA views. The choice is by
``val_score`` (mean of clean and corrupted val accuracy); the test figures are for the record,
never for choosing: with ~1,250 test images, choosing by test is choosing noise.

``ensembles`` also scores the mean prediction of every combination of two or more candidates
(plain views): not a shippable model, a measure of how far apart the candidates' mistakes are.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Callable

from scopelite.edge.bundle import write_json_atomic
from scopelite.edge.errors import UserError

from .corruptions import corrupted_copy
from .data import split_identity
from .metrics import summarize
from .run import heldout_data, load_keras_bundle, predict, split_file
from .runpath import model_file

SCHEMA = "scopelite.choose/1"  # its --out file: a later choose replaces only a file of this kind


def is_choice(path: Path) -> bool:
    """Whether ``path`` holds the scores of an earlier choose (of any size: --ensembles of many candidates writes
    megabytes; before session 30 without a schema), so that its --out may replace it."""
    try:
        obj = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and (obj.get("schema") == SCHEMA or {"candidates", "chosen"} <= set(obj))


SETS = ("val", "val_corrupted", "test", "test_corrupted")
CORRUPTION_SEED = {"val_corrupted": 1, "test_corrupted": 0}  # test's as celltrain evaluate's


def choose(candidates: dict[str, str], out: str | Path, tta: tuple[int, ...] = (1, 8), ensembles: bool = False,
           data: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Score ``candidates`` (name -> run folder or model.keras) and write the scores to ``out`` (JSON).

    Returns:
        ``{"candidates": {"NAME ttaT": scores}, "ensembles": {...}, "chosen": "NAME ttaT"}``.
    """
    if ensembles and (len(candidates) < 2 or 1 not in tta):
        raise UserError("--ensembles needs at least two candidates and --tta to include 1")
    paths = {name: model_file(p) for name, p in candidates.items()}
    bundles = {name: load_keras_bundle(p) for name, p in paths.items()}  # each model loaded once
    first_name, first = next(iter(paths.items()))
    sc = bundles[first_name][0]
    split_sha = None
    for name, p in paths.items():
        other = bundles[name][0]
        digest = split_identity(split_file(other, p))
        split_sha = split_sha or digest
        if tuple(other.labels) != tuple(sc.labels) or digest != split_sha:
            raise UserError(f"{name} ({p}) does not share {first_name}'s classes and saved split; candidates must "
                            "come from one lineage (runs on the same data with the same --seed)")
        if (other.input.height, other.input.width) != (sc.input.height, sc.input.width):
            raise UserError(f"{name} ({p}) takes {other.input.height}x{other.input.width} images, {first_name} "
                            f"{sc.input.height}x{sc.input.width}; candidates are scored on one set of images: "
                            "choose among runs of one --image-size (score others with celltrain evaluate)")
    ds, split = heldout_data(sc, first, data)
    sets = {}
    for s in SETS:
        part = ds.subset(split[s.split("_")[0]])
        x = corrupted_copy(part.images, CORRUPTION_SEED[s])[0] if s in CORRUPTION_SEED else part.images
        sets[s] = (x, part.labels)

    def score(probs: dict) -> dict:
        r = {}
        for s, (_, y) in sets.items():
            acc = summarize(y, probs[s], sc.labels)
            r[s] = round(100 * acc["accuracy"], 2)
            r[s + "_ci95"] = [round(100 * v, 2) for v in acc["accuracy_ci95"]]
        r["val_score"] = round((r["val"] + r["val_corrupted"]) / 2, 2)
        return r

    res, plain = {}, {}
    for name, p in paths.items():
        m = bundles[name][1]
        for t in tta:
            probs = {s: predict(m, x, batch_size=128, tta=t) for s, (x, _) in sets.items()}
            if t == 1:
                plain[name] = probs
            r = score(probs)
            res[f"{name} tta{t}"] = {"path": str(p), **r}
            log(f"{name} tta{t}: val_score {r['val_score']} (val {r['val']}, corrupted val {r['val_corrupted']}); "
                f"test {r['test']}, corrupted test {r['test_corrupted']}")
    result = {"schema": SCHEMA, "candidates": res}
    if ensembles:
        ens = {}
        for k in range(2, len(plain) + 1):
            for combo in itertools.combinations(plain, k):
                ens["+".join(combo)] = score({s: sum(plain[n][s] for n in combo) / k for s in sets})
        result["ensembles"] = ens
        top = max(ens, key=lambda k: ens[k]["val_score"])
        log(f"{len(ens)} ensembles; highest val_score: {top} ({ens[top]['val_score']})")
    result["chosen"] = max(res, key=lambda k: res[k]["val_score"])
    write_json_atomic(out, result)
    log(f"highest val_score: {result['chosen']} ({res[result['chosen']]['val_score']}) -> {out}")
    return result
