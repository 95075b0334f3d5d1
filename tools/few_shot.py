"""Few-shot adaptation to another lab, measured: accuracy against N labelled cells per class.

    python tools/few_shot.py --data ../shared/data --work /tmp/fewshot --n 0 5 10 25

What a lab would do, with the real commands:
1. cells of the new lab as class folders: here each DeepBioNet field of the *adapt* part gives its
   largest white-cell-sized detection, cropped by field mode at the measured scale and resized to
   the model's input (what the daemon classifies). DeepBioNet holds the same cell in several fields
   (turned, flipped, shifted: 361 fields, about 170 cells), so the parts are split by cell
   (``fieldset.duplicate_groups``; a cell's fields go to the part of its smallest file number's
   parity) and N cells per class are N different cells (``--split number``: the file-number split of
   sessions 10-13, which put copies of one cell in both parts);
2. ``celltrain fit --weights shipped --data <N per class>`` (fine-tune the shipped model);
3. ``cellcompress <run>/model.keras --int8`` (the gate as always);
4. field mode over the *report* part with the adapted int8 model: fields right, and distinct cells
   right (each cell's fields averaged, then the cells).
N = 0 is the shipped model, zero-shot. Fit keeps 10 % + 10 % of the N cells for its own
validation and test, as it always does. Wall times are for 2 CPU cores.

    python tools/few_shot.py --n 25 --image-size 128     # fine-tune at 128 px (the same area cropped)
    python tools/few_shot.py --n 25 --weights RUN.keras  # start from other weights than the shipped model's
    python tools/few_shot.py --n 25 --self-train ../shared/data/other-labs/deepbionet/detection/images
        # then one round of self-training on the lab's unlabelled frames (decision 17a)
    python tools/few_shot.py --n 25 --soup 3      # also the average of 3 fits of the same cells (decision 18a)
    python tools/few_shot.py --n 25 --fit-args "--epochs 60" --soup 3
        # --preset few-shot since session 19 (decision 19a): each row's "soup" (its own fields: one fit of 60)
    python tools/few_shot.py --n 25 --recipe preset
        # celltrain fit --preset few-shot as it is (session 22: scored over the 8 views its sidecar advises)
    python tools/few_shot.py plot OUT.png RESULTS.json [RESULTS.json ...]   # accuracy against N
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge import field as field_lib
from scopelite.edge import fieldset
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.packaged import default_model
from scopelite.edge.self_train import confident
from scopelite.edge.session_export import record_files
from scopelite.edge.sources import list_images
from scopelite.edge.tta import as_advised, views_of
from scopelite.edge.sysinfo import machine
from scopelite.train.config import SOUP_SEED_STEP

COMMON = ["--head-epochs", "0", "--warmup-epochs", "0", "--augment", "strong", "--strength", "0.5",
          "--batch-size", "16", "--quiet"]
RECIPES = {  # the candidates of docs/cross-lab.md's few-shot rules; "whole" was --preset few-shot in sessions 15-18
    "full": ["--epochs", "15", "--fine-tune-fraction", "1.0", "--lr", "1e-4"],  # session 10: best epoch by fit's own val split
    "top": ["--epochs", "30", "--fine-tune-fraction", "0.3", "--lr", "2e-4", "--average-last", "5"],  # 15 until session 14
    "whole": ["--epochs", "30", "--fine-tune-fraction", "1.0", "--lr", "1e-4", "--average-last", "5"],  # sessions 15-18
    # the preset since session 19 is "whole" with --fit-args "--epochs 60" and --soup 3 (each row's "soup")
    # celltrain fit --preset few-shot itself, as a lab runs it (its soup of 3 inside fit; its sidecar says 8 views)
    "preset": ["--preset", "few-shot"],
    "head": ["--epochs", "15", "--fine-tune-fraction", "0.0", "--lr", "1e-3", "--average-last", "5"],
}


def export_crops(crops: list[tuple[Path, np.ndarray]], out: Path) -> dict[Path, Path]:
    """The main-cell crops as PNG files under ``out/<class>/``, by field."""
    written = {}
    for p, crop in crops:
        dest = out / fieldset.truth(p) / f"{p.stem}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dest), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        written[p] = dest
    return written


def field_accuracy(model: Path, fields: list[Path], cell_of: dict[Path, int],
                   setup_of: dict[Path, int] | None = None) -> dict:
    """Field mode with default options: fields right, per class, and distinct cells right (each cell's
    share of its fields right, averaged over the cells); with ``setup_of`` (``fieldset.background_setups``)
    also per set-up, where the background cannot tell the classes it holds apart."""
    clf = as_advised(LiteRTClassifier(model, num_threads=2))  # over the views its sidecar advises, as watch runs it
    scores = fieldset.score_fields(clf, fields, fieldset.default_config(clf))
    cells = fieldset.cell_accuracy(fields, scores, cell_of)
    out = {"accuracy": round(scores.accuracy, 4), "per_class": {k: round(v, 4) for k, v in sorted(scores.per_class.items())},
           "cells": len({cell_of[p] for p in fields}), "cell_accuracy": None if cells is None else round(cells, 4),
           "views": views_of(clf)}
    if setup_of is not None:
        out["by_setup"] = by_setup(fields, scores, setup_of)
    return out


def by_setup(fields: list[Path], scores: fieldset.Scores, setup_of: dict[Path, int]) -> dict:
    """``scores`` (over ``fields``, in that order) per set-up: fields, fields right, per class."""
    hits: dict[int, dict[str, list[bool]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for p, hit in zip(fields, fieldset.field_hits(fields, scores)):
        hits[setup_of[Path(p)]][fieldset.truth(p)].append(hit)
    return {fieldset.SETUP_NAMES[g]: {"fields": sum(len(v) for v in h.values()),
                             "accuracy": round(float(np.mean([x for v in h.values() for x in v])), 4),
                             "per_class": {k: round(float(np.mean(v)), 4) for k, v in sorted(h.items())}}
            for g, h in sorted(hits.items())}


def one_field_per_cell(adapt: list[Path], cropped, cell_of: dict[Path, int]) -> dict[str, list[Path]]:
    """By class, one field of each cell of the adapt part (its first with a main-cell crop, in the order
    given): a lab labels different cells, not the same cell photographed twice."""
    cells: dict[str, list[Path]] = collections.defaultdict(list)
    seen: set[int] = set()
    for p in adapt:
        if p in cropped and cell_of[p] not in seen:
            seen.add(cell_of[p])
            cells[fieldset.truth(p)].append(p)
    return dict(cells)


def draw(cells: dict[str, list[Path]], n: int, seed: int) -> dict[str, list[Path]]:
    """``n`` cells of each class (all of a class that has fewer), in one seeded order per class, so that a
    larger ``n`` holds the cells of a smaller one."""
    rng = np.random.default_rng(seed)
    order = {cls: rng.permutation(len(ps)) for cls, ps in sorted(cells.items())}
    return {cls: [cells[cls][i] for i in order[cls][:n]] for cls in sorted(cells)}


def grey48(crop: np.ndarray) -> np.ndarray:
    """A crop as ``fieldset.copy_score`` compares it here: grey, 48 px (a quarter of the work of 96 px)."""
    return cv2.resize(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), (48, 48), interpolation=cv2.INTER_AREA).astype(np.float32)


def pool_crops(pool: Path, cfg: field_lib.FieldConfig, labelled: list[np.ndarray]
               ) -> tuple[list[tuple[str, np.ndarray]], int]:
    """Every white-cell-sized detection of the unlabelled frames under ``pool`` (each frame at its own measured
    scale: the pool may mix set-ups), as (name, crop), less the crops that copy one of the ``labelled`` crops
    (``fieldset.copy_score`` at 48 px >= ``fieldset.DUPLICATE_NCC``): no validation or report cell is seen, even
    unlabelled. Also how many were left out."""
    frames = list_images([pool]) if Path(pool).is_dir() else []
    if not frames:
        sys.exit(f"Error: --self-train {pool}: not a folder of images")
    # named by the frame's path under the pool (frames in two subfolders may share a name), then the cell
    crops = [("_".join(p.relative_to(pool).with_suffix("").parts) + f"-{i}", c)
             for p, img in zip(frames, fieldset.read_fields(frames)) for i, c in enumerate(fieldset.white_cell_crops(img, cfg))]
    ref = [grey48(c) for c in labelled]
    if not ref:
        return crops, 0
    kept = [(name, c) for name, c in crops
            if max(fieldset.copy_score(grey48(c), r) for r in ref) < fieldset.DUPLICATE_NCC]
    return kept, len(crops) - len(kept)


def run(cmd: list[str], log: Path) -> float:
    t = time.time()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"Error: {' '.join(cmd[:3])} failed (rc {r.returncode}); see {log}")
    return round(time.time() - t, 1)


def fit_and_compress(bin_dir: Path, a, data: Path, run_dir: Path, fit: list[str], row: dict) -> Path:
    """``celltrain fit`` on ``data`` then ``cellcompress --int8``, as a lab runs them; the wall times go into
    ``row``; the int8 model's path."""
    shutil.rmtree(run_dir, ignore_errors=True)
    row["fit_seconds"] = fit_once(bin_dir, a, data, run_dir, fit, a.seed)
    return compress(bin_dir, run_dir, row)


def fit_once(bin_dir: Path, a, data: Path, run_dir: Path, fit: list[str], train_seed: int) -> float:
    """``celltrain fit`` on ``data`` (fit's split from ``a.seed``, its training from ``train_seed``); its wall time."""
    return run([str(bin_dir / "celltrain"), "fit", "--weights", a.weights, "--data", str(data), "--out", str(run_dir),
                "--seed", str(a.seed), "--train-seed", str(train_seed), *fit], run_dir.with_suffix(".log"))


def compress(bin_dir: Path, run_dir: Path, row: dict) -> Path:
    row["compress_seconds"] = run([str(bin_dir / "cellcompress"), str(run_dir / "model.keras"), "--int8",
                                   "--out", str(run_dir / "int8"), "--max-drop", "100", "100"], run_dir.with_suffix(".log"))
    return run_dir / "int8" / "model.tflite"


def soup_and_compress(bin_dir: Path, a, data: Path, first: Path, fit: list[str], k: int, row: dict) -> Path:
    """``k - 1`` more fits of ``data`` beside ``first`` (training seeds ``a.seed + 100 i``, as ``celltrain fit --soup``
    gives its members; ``first`` is the one fit already made), ``celltrain average`` of the ``k`` (decision 18a),
    ``cellcompress --int8``; wall times into ``row``; the int8 model's path."""
    members = [first]
    row["fit_seconds"] = []
    for i in range(1, k):
        member = first.with_name(f"{first.name}-s{i}")
        shutil.rmtree(member, ignore_errors=True)
        row["fit_seconds"].append(fit_once(bin_dir, a, data, member, fit, a.seed + SOUP_SEED_STEP * i))
        members.append(member)
    out = first.with_name(f"{first.name}-soup")
    shutil.rmtree(out, ignore_errors=True)
    row["average_seconds"] = run([str(bin_dir / "celltrain"), "average", *map(str, members), "--out", str(out)],
                                 out.with_suffix(".log"))
    return compress(bin_dir, out, row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--work", default="/tmp/fewshot")
    ap.add_argument("--n", type=int, nargs="+", default=[0, 5, 10, 25])
    ap.add_argument("--seed", type=int, default=0, help="which cells are drawn, fit's split and its training seed")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="whole")
    ap.add_argument("--weights", default="shipped",
                    help="the model fine-tuned (celltrain fit --weights); N = 0 scores the shipped model all the same")
    ap.add_argument("--image-size", type=int, default=None,
                    help="fine-tune at this input size (cells cropped over the same area, so red cells span "
                         "proportionally more pixels); default: the shipped model's")
    ap.add_argument("--fit-args", default="",
                    help="more celltrain fit options on top of the recipe, one string (e.g. \"--epochs 30\")")
    ap.add_argument("--split", choices=["cells", "number"], default="cells",
                    help="cells: copies of one cell stay in one part (default); number: by file number alone "
                         "(sessions 10-13; leaks copies across the parts)")
    ap.add_argument("--measure-scale", action="store_true",
                    help="leave out the export record (export.json) of the cells' scale, so that celltrain fit measures "
                         "it on the crops, as before session 16 (DeepBioNet: 16.98 px on crops cut at 18.0)")
    ap.add_argument("--self-train", metavar="POOL", default=None,
                    help="after each fit, classify the white cells of the unlabelled frames under POOL with the adapted "
                         "model, add the confident ones to the labelled cells (decision 17a) and fit again; the row's "
                         "'self_train' holds the second model's figures")
    ap.add_argument("--soup", type=int, default=None, metavar="K",
                    help="also fit K - 1 more times (training seeds SEED + 100, + 200, ...), average the K fits' weights "
                         "(celltrain average) and score that model too: the row's 'soup' (decision 18a)")
    ap.add_argument("--validate", action="store_true",
                    help="measure on the adapt fields whose cell was not drawn (choosing a recipe), not the report part")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "few-shot-deepbionet.json"))
    a = ap.parse_args()
    if a.soup is not None and a.soup < 2:
        sys.exit(f"Error: --soup {a.soup}: a soup averages at least 2 fits")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    fields = list_images([Path(a.data) / "other-labs" / "deepbionet" / "fields"])
    spec = LiteRTClassifier(default_model(), num_threads=2).input_spec
    rbc = field_lib.model_rbc_px(spec)
    # which fields show one cell: compared at the shipped model's scale and size, whatever --image-size
    # (--split number: every field its own cell, the old split)
    labelled = list(fieldset.main_cell_crops(fields, field_lib.FieldConfig(model_rbc_px=rbc, input_px=spec.height)))
    groups = [[p] for p in fields] if a.split == "number" else fieldset.duplicate_groups(labelled)
    grouped = {p for g in groups for p in g}
    groups += [[p] for p in fields if p not in grouped]  # no main cell found: a cell of its own
    cell_of = {p: i for i, g in enumerate(groups) for p in g}
    adapt, report = fieldset.parts_by_number(fields, groups)
    setup_of, _ = fieldset.background_setups(fields)
    size = a.image_size or spec.height
    cfg = field_lib.FieldConfig(model_rbc_px=rbc * size / spec.height, input_px=size)
    files = export_crops(list(fieldset.main_cell_crops(adapt, cfg)), work / "crops")  # the scale smoothed as the daemon does
    cells = one_field_per_cell(adapt, files, cell_of)
    pool, left_out = pool_crops(Path(a.self_train), cfg, [c for _, c in labelled]) if a.self_train else ([], 0)
    if a.self_train and not pool:
        sys.exit(f"Error: --self-train {a.self_train}: no white cell found there that is not a copy of a labelled field")
    rows = []
    fit = (COMMON + RECIPES[a.recipe] + ([] if a.image_size is None else ["--image-size", str(size)])
           + shlex.split(a.fit_args))
    for n in a.n:
        row: dict = {"n_per_class": n}
        picked = draw(cells, n, a.seed)
        drawn = {cell_of[p] for ps in picked.values() for p in ps}
        measured = [p for p in adapt if cell_of[p] not in drawn] if a.validate else report
        if n == 0:
            model = default_model()
        else:
            data = work / f"data-{n}"
            shutil.rmtree(data, ignore_errors=True)
            for cls, ps in picked.items():
                (data / cls).mkdir(parents=True)
                for p in ps:
                    shutil.copy(files[p], data / cls / files[p].name)
            if not a.measure_scale:  # as celledge export records them: the scale the crops were cut at
                record_files(data, [{"file": f"{cls}/{files[p].name}", "label": cls, "field": p.name,
                                     "rbc_fraction": cfg.cut_scale()} for cls, ps in picked.items() for p in ps])
            row["cells"] = {cls: len(list((data / cls).iterdir())) for cls in sorted(cells)}
            model = fit_and_compress(bin_dir, a, data, work / f"run-{n}", fit, row)
            if pool:
                with_pool = work / f"data-{n}-self"
                shutil.rmtree(with_pool, ignore_errors=True)
                shutil.copytree(data, with_pool)
                clf = LiteRTClassifier(model, num_threads=2)
                chosen = confident(clf.classify(np.stack([c for _, c in pool])), list(clf.labels), sorted(picked), n)
                for cls, idx in chosen.items():
                    for i in idx:
                        cv2.imwrite(str(with_pool / cls / f"pool-{pool[i][0]}.png"), cv2.cvtColor(pool[i][1], cv2.COLOR_RGB2BGR))
                # marked pseudo always (fit trains on them, never validates on them); the scale unless --measure-scale
                record_files(with_pool, [{"file": f"{cls}/pool-{pool[i][0]}.png", "label": cls, "pseudo": True,
                                          **({} if a.measure_scale else {"rbc_fraction": cfg.cut_scale()})}
                                         for cls, idx in chosen.items() for i in idx])
                st: dict = {"pool": len(pool), "pool_left_out_as_copies": left_out,
                            "added": {cls: len(idx) for cls, idx in chosen.items()}}
                st_model = fit_and_compress(bin_dir, a, with_pool, work / f"run-{n}-self", fit, st)
                st["validation" if a.validate else "report"] = field_accuracy(st_model, measured, cell_of, setup_of)
                row["self_train"] = st
            if a.soup:
                sp: dict = {"k": a.soup}
                sp_model = soup_and_compress(bin_dir, a, data, work / f"run-{n}", fit, a.soup, sp)
                sp["validation" if a.validate else "report"] = field_accuracy(sp_model, measured, cell_of, setup_of)
                row["soup"] = sp
        row["validation" if a.validate else "report"] = field_accuracy(Path(model), measured, cell_of, setup_of)
        print(json.dumps(row), flush=True)
        rows.append(row)
    Path(a.out).write_text(json.dumps({
        "command": f"python tools/few_shot.py --data ../shared/data --seed {a.seed} --recipe {a.recipe}"
                   + (" --validate" if a.validate else "") + " --n " + " ".join(map(str, a.n))
                   + ("" if a.weights == "shipped" else f" --weights {a.weights}")
                   + ("" if a.image_size is None else f" --image-size {a.image_size}")
                   + ("" if not a.fit_args else f" --fit-args {shlex.quote(a.fit_args)}")
                   + ("" if a.split == "cells" else " --split number") + (" --measure-scale" if a.measure_scale else "")
                   + ("" if not a.self_train else f" --self-train {a.self_train}")
                   + ("" if not a.soup else f" --soup {a.soup}"),
        "seed": a.seed, "recipe": a.recipe, "measured_on": "adapt part, cells not drawn" if a.validate else "report part",
        "machine": machine(), "date": datetime.date.today().isoformat(),
        "fit_options": fit, "split": a.split,
        "training_scale": "measured by celltrain fit on the crops" if a.measure_scale else
                          "recorded with the crops (export.json: the scale field mode cut them at), as celledge export does", "adapt_fields": len(adapt), "report_fields": len(report),
        "adapt_cells": {k: len(v) for k, v in sorted(cells.items())},
        "report_cells": len({cell_of[p] for p in report}),
        "note": "DeepBioNet fields split by file number (even = adapt: labelled cells drawn from here; odd = "
                "report: field mode, default options), with split 'cells' the fields of one cell together (in the "
                "part of the cell's smallest number; fieldset.duplicate_groups); by_setup: the same per background "
                "colour (fieldset.background_setups: DeepBioNet's classes come from two set-ups, so a model can learn "
                "the background). cellcompress runs with --max-drop 100 100 because fit's own "
                "test split of a few cells is too small for the gate to mean anything; the report part is the "
                "measure. Data: Shams et al., Blood Cells Mol Dis 2024.", "rows": rows}, indent=1) + "\n")


def plot(files: list[Path], out: Path) -> None:
    """Accuracy on the report part against labelled cells per class, one line per results file (seed)."""
    from scopelite.train._plot import pyplot, save  # noqa: PLC0415

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for f in files:
        d = json.loads(Path(f).read_text())
        rows = [r for r in d["rows"] if "report" in r]
        opts = d.get("fit_options", [])
        px = opts[opts.index("--image-size") + 1] if "--image-size" in opts else "96"
        epochs = opts[len(opts) - 1 - opts[::-1].index("--epochs") + 1] if "--epochs" in opts else "?"  # the last wins
        split = d.get("split", "number")  # files before the split by cell were split by file number
        frac = opts[len(opts) - 1 - opts[::-1].index("--fine-tune-fraction") + 1] if "--fine-tune-fraction" in opts else "?"
        whole = frac == "1.0" and "--average-last" in opts  # the preset of sessions 15-18 (one fit)
        tuned = ("whole network" if whole else "whole network, best epoch" if frac == "1.0" else "head only"
                 if frac in ("0", "0.0") else f"top {float(frac):.0%}" if frac != "?" else "?")
        recorded = d.get("training_scale", "").startswith("recorded")  # since session 16: the crops' scale travels with them
        style = ("D-" if recorded else "s--" if px != "96" else "x:" if split != "cells" else "o-" if epochs == "30"
                 else "^--")
        ax.plot([r["n_per_class"] for r in rows], [100 * r["report"]["accuracy"] for r in rows], style,
                lw=3.0 if recorded else 2.0 if whole else 1.2,
                label=f"seed {d['seed']}, {tuned}, {px} px, {epochs} epochs, "
                      f"split by {'cell' if split == 'cells' else 'file number'}"
                      + (", scale recorded" if recorded else ", scale measured" if whole else ""))
    ax.axhline(95, color="grey", ls="--", lw=1, label="target after 25 cells")
    ax.set(xlabel="labelled cells per class (N)", ylabel="fields right (%)", ylim=(40, 100),
           title="Few-shot adaptation, DeepBioNet report part")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, fontsize=8)  # below: the lines stay visible
    fig.tight_layout()
    save(fig, out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["plot"]:  # python tools/few_shot.py plot OUT.png RESULTS.json ...
        plot([Path(f) for f in sys.argv[3:]], Path(sys.argv[2]))
    else:
        main()
