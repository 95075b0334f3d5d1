"""The native-resolution protocol of ``cellcompress bench``: debris at the camera's own resolution.

The crop protocol (``bench.py``) corrupts the 96 px crops of a run's test split, with sizes in
pixels of that crop. This one takes whole fields, as the camera gives them: class folders
(``FIELDS/<class>/*.jpg``), each field centred on a cell of its folder's class, as PBC's fields
are. It measures the folder's red-cell diameter with the daemon's ruler (``scopelite.edge.scale``;
red cells are 7.5 µm across), corrupts every field at its own resolution with sizes in
micrometres (``scopelite.train.native_corruptions``), and classifies it as ``celledge watch
FOLDER --mode field`` does with default options: ``classify_field`` with one ``FieldScale`` per
corrupted folder (the scale measured on the corrupted fields, smoothed over them), crops at the
model's training scale. A field is right when the detection nearest its centre has the folder's
class (no detection: wrong). So the whole daemon is under test: a stain deposit may be found as a
cell, bubbles may hide the red cells the scale comes from, and a speck is the size it is next to
the cell, whatever the magnification.
"""
from __future__ import annotations

import datetime as _dt
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from scopelite.edge import field as field_lib
from scopelite.edge import fieldset
from scopelite.edge.tta import TTAClassifier
from scopelite.edge.bundle import load_sidecar, write_bytes_atomic, write_json_atomic
from scopelite.edge.errors import UserError
from scopelite.edge.precious import foreign_files, json_with, refuse_foreign, starts_with
from scopelite.edge.scale import estimate_rbc_diameter
from scopelite.edge.sources import SourceError, list_images, read_image_rgb
from scopelite.train.native_corruptions import (CROP_COUNTERPART, NATIVE_CORRUPTIONS, SEVERITIES, corrupt_native,
                                                px_per_um)

from .bench import _heatmap, summarise, write_results

PROTOCOLS = ("crop", "native", "both")


@dataclass(frozen=True)
class Fields:
    """Whole fields, each labelled by the class of the cell at its centre."""

    images: list[np.ndarray]
    truth: list[str]
    files: list[str]  # <class>/<name>
    rbc_px: float  # the folder's red-cell diameter, px (median over its fields): one microscope, one scale
    rbc_px_iqr: tuple[float, float]
    description: str


def load_fields(folder: str | Path, labels: Sequence[str], limit: int = 0, seed: int = 0) -> Fields:
    """The fields of ``folder/<class>/``, stratified down to ``limit`` (0: all; seeded), and their scale."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--fields {folder}: not a folder (give class folders of whole fields, e.g. "
                        "../shared/data/pbc-fields)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and list_images([p]))
    unknown = [c for c in classes if c not in labels]
    if not classes or unknown:
        raise UserError(f"--fields {folder}: " + (f"class folders {', '.join(unknown)} are not among the model's "
                                                  "labels" if unknown else "holds no class folders of images")
                        + f" (expected folders named {', '.join(labels)})")
    rng = np.random.default_rng(seed)
    per = max(1, limit // len(classes)) if limit else None
    picked = []
    for c in classes:
        paths = list_images([folder / c])
        if per is not None and len(paths) > per:
            paths = [paths[i] for i in np.sort(rng.permutation(len(paths))[:per])]
        picked += [(c, p) for p in paths]
    images = []
    for _, p in picked:
        try:
            images.append(read_image_rgb(p))
        except SourceError as e:
            raise UserError(str(e)) from None
    diam = [d for d in (_rbc_px(im) for im in images) if d is not None]
    if len(diam) < max(1, len(images) // 4):
        raise UserError(f"--fields {folder}: red cells measurable in only {len(diam)} of {len(images)} fields; "
                        "the native protocol sizes debris in µm from them (7.5 µm a red cell)")
    q1, med, q3 = np.percentile(diam, [25, 50, 75])
    return Fields(images, [c for c, _ in picked], [f"{c}/{p.name}" for c, p in picked], float(med),
                  (float(q1), float(q3)), f"class folders at {folder}")


def _rbc_px(img: np.ndarray) -> float | None:
    """One field's red-cell diameter (full-frame px), searched as the daemon does (half size above 1280 px)."""
    view, factor = field_lib.shrink_for_search(img)
    d = estimate_rbc_diameter(view).diameter_px
    return None if d is None else d * factor


class _KerasClassifier:
    """A training run's model.keras behind the daemon's Classifier interface (workstation only)."""

    def __init__(self, path: Path):
        from scopelite.train.run import load_keras_bundle, predict  # noqa: PLC0415

        sc, self._model = load_keras_bundle(path)
        self._predict = predict
        self.labels, self.input_spec, self.sidecar = sc.labels, sc.input, sc

    def classify(self, crops: np.ndarray) -> np.ndarray:
        return self._predict(self._model, crops, batch_size=64)


def _classifier(path: Path):
    if load_sidecar(path).format == "keras":
        return _KerasClassifier(path)
    from scopelite.edge.classifier import make_classifier  # noqa: PLC0415

    return make_classifier(path, num_threads=2)


def classify_folder(images: Sequence[np.ndarray], clf, cfg: field_lib.FieldConfig) -> list[dict]:
    """Field mode over a folder of separate fields (``fieldset.classify_fields``: one ``FieldScale`` for all,
    smoothed as the daemon does); per field the class of the detection nearest its centre (None: nothing
    found), how many cells were found, and the red-cell diameter and crop side used."""
    return [{"label": r.label, "cells": len(r.cells), "rbc_px": r.scale["rbc_px"], "crop": r.scale["crop"]}
            for r in fieldset.classify_fields(images, clf, cfg, pick="centre")]


def bench_native(models: Sequence[str | Path], fields: str | Path | Fields, out: str | Path | None,
                 limit: int = 0, seed: int = 0, tta: Sequence[int] = (1,), log: Callable[[str], None] = print,
                 corruptions: Sequence[str] | None = None, severities: Sequence[int] = SEVERITIES,
                 corrupt: Callable[[list, str, int], list] | None = None, clean: Callable[[list], list] | None = None,
                 suite: str = "native (whole fields, sizes in µm, field mode)", stem: str = "native") -> dict:
    """Accuracy of ``models`` on whole fields, clean and under every native corruption and severity.

    Every (corruption, severity) is one folder of corrupted fields, classified by field mode with
    default options (:func:`classify_folder`); field i is corrupted with seed ``seed + i``. Writes
    ``stem``.{json,csv,md,png} into ``out`` (unless None) with the same layout as bench.json, plus what
    field mode saw (``field_mode``: share of fields with a detection, cells per field, median
    red-cell diameter and crop used) per set, for the first model.

    Another suite plugs in as ``corrupt(fields, corruption, severity) -> fields`` with its
    ``corruptions`` (and ``clean(fields) -> fields`` when its clean fields went through a step of
    their own, e.g. a resampling).
    """
    from tqdm import tqdm  # noqa: PLC0415

    paths = [Path(m) for m in models]
    labels = [load_sidecar(p).labels for p in paths]
    if any(lab != labels[0] for lab in labels):
        raise UserError("the models have different label lists; benchmark models of one task together")
    fs = fields if isinstance(fields, Fields) else load_fields(fields, labels[0], limit, seed)
    corruptions = list(corruptions or NATIVE_CORRUPTIONS)
    ppu = px_per_um(fs.rbc_px)
    short = [p.name for p in paths]
    clfs = {}
    for p in paths:
        base, clf = (p.name if short.count(p.name) == 1 else str(p)), _classifier(p)  # loaded once per model
        for t in tta:
            clfs[base if t == 1 else f"{base} tta{t}"] = clf if t == 1 else TTAClassifier(clf, t)
    names = list(clfs)
    truth = np.array(fs.truth)
    acc: dict[str, dict] = {n: {} for n in names}
    seen: dict[str, dict] = {}

    def score(key: str, images: list[np.ndarray]) -> None:
        for j, n in enumerate(names):
            rows = classify_folder(images, clfs[n], fieldset.default_config(clfs[n]))
            acc[n][key] = float(np.mean(np.array([r["label"] for r in rows], dtype=object) == truth))
            if j == 0:
                seen[key] = {"with_a_detection": round(float(np.mean([r["cells"] > 0 for r in rows])), 4),
                             "cells_per_field": round(float(np.mean([r["cells"] for r in rows])), 2),
                             "rbc_px": round(float(np.median([r["rbc_px"] for r in rows])), 1),
                             "crop": int(np.median([r["crop"] for r in rows]))}

    corrupt = corrupt or (lambda ims, c, s: [corrupt_native(im, c, s, ppu, seed + i) for i, im in enumerate(ims)])
    score("clean", clean(fs.images) if clean else fs.images)
    jobs = [(c, s) for c in corruptions for s in severities]
    for c, s in tqdm(jobs, desc=f"{stem} corruptions x severities", unit="set"):
        score(f"{c}/{s}", corrupt(fs.images, c, s))
    summary, left_out = summarise(acc, corruptions, severities)
    result = {"images": len(fs.images), "unit": "fields", "data": fs.description, "seed": seed,
              "suite": suite, "protocol": "native", "tta": list(tta),
              "corruptions": corruptions, "severities": list(severities), "reference": names[0],
              "mCE_left_out": left_out, "models": summary, "accuracy": acc,
              "scale": {"rbc_px_median": round(fs.rbc_px, 2), "rbc_px_iqr": [round(v, 2) for v in fs.rbc_px_iqr],
                        "px_per_um": round(ppu, 3), "rbc_um": 7.5},
              "field_mode": seen, "files": fs.files}
    if out is not None:
        write_results(result, out, stem, log)
    return result


def compare_protocols(crop: dict, native: dict, out: str | Path | None = None, command: str | None = None) -> dict:
    """Both protocols side by side, per model and corruption; protocols.{json,md,png} in ``out``.

    A native corruption is paired with the crop suite's corruption of the same name
    (``CROP_COUNTERPART``); one without a counterpart is shown for native only.
    """
    from scopelite.edge.sysinfo import machine  # noqa: PLC0415

    models = [m for m in native["models"] if m in crop["models"]]
    if not models:
        raise UserError("the two protocols scored no model in common")
    pairs = [(c, CROP_COUNTERPART.get(c)) for c in native["corruptions"]]
    shared = [(n, c) for n, c in pairs if c in crop["corruptions"]]
    rows = {}
    for m in models:
        cm, nm = crop["models"][m], native["models"][m]
        rows[m] = {
            "crop": {"clean": cm["clean"], "mean_corrupted_all": cm["mean_corrupted"],
                     "mean_corrupted_shared": float(np.mean([cm["per_corruption"][c] for _, c in shared])),
                     "per_corruption": {n: cm["per_corruption"][c] for n, c in shared},
                     "per_severity": {f"{n}/{s}": crop["accuracy"][m][f"{c}/{s}"] for n, c in shared
                                      for s in crop["severities"]}},
            "native": {"clean": nm["clean"], "mean_corrupted_all": nm["mean_corrupted"],
                       "mean_corrupted_shared": float(np.mean([nm["per_corruption"][n] for n, _ in shared])),
                       "per_corruption": dict(nm["per_corruption"]),
                       "per_severity": {k: v for k, v in native["accuracy"][m].items() if k != "clean"}},
        }
    result = {
        "command": command or " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "measured_on": machine(),
        "crop": {"what": f"{crop['images']} test crops ({crop['data']}), {crop['suite']} suite, sizes in px of the "
                         "crop", "images": crop["images"], "corruptions": crop["corruptions"]},
        "native": {"what": f"{native['data']}, corrupted at their own resolution with sizes in µm, classified by "
                           "field mode with default options", "fields": native["images"],
                   "corruptions": native["corruptions"], "scale": native["scale"], "field_mode": native["field_mode"]},
        "severities": native["severities"], "seed": native["seed"],
        "paired": {n: c for n, c in pairs}, "models": rows,
    }
    if out is not None:
        out = Path(out)
        write_json_atomic(out / "protocols.json", result)
        write_bytes_atomic(out / "protocols.md", _protocols_markdown(result).encode())
        heat = {f"{m} · {p}": {"per_corruption": rows[m][p]["per_corruption"]} for m in models for p in ("crop", "native")}
        _heatmap(heat, list(native["corruptions"]), out / "protocols.png")
    return result


def _machine_text(m: dict) -> str:
    return f"{m.get('arch', '?')} {m.get('cpu', '?')}, {m.get('cores', '?')} cores"


def _protocols_markdown(r: dict) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    sc = r["native"]["scale"]
    lines = [f"# Crop and native protocols side by side (seed {r['seed']})", "",
             f"Command: `{r['command']}`; {r['date']}; {_machine_text(r['measured_on'])}.", "",
             f"- crop: {r['crop']['what']}.",
             f"- native: {r['native']['what']}; red cells {sc['rbc_px_median']} px across (median; IQR "
             f"{sc['rbc_px_iqr'][0]}-{sc['rbc_px_iqr'][1]}): {sc['px_per_um']} px per µm.", "",
             "| model | protocol | clean | mean corrupted (shared) | mean corrupted (all of its suite) |",
             "|---|---|---|---|---|"]
    for m, row in r["models"].items():
        for p in ("crop", "native"):
            v = row[p]
            lines.append(f"| {m} | {p} | {pct(v['clean'])} | {pct(v['mean_corrupted_shared'])} | "
                         f"{pct(v['mean_corrupted_all'])} |")
    lines += ["", "Accuracy per corruption, mean of the severities, crop / native:", "",
              "| corruption | " + " | ".join(r["models"]) + " |", "|---|" + "---|" * len(r["models"])]
    for n, c in r["paired"].items():
        lines.append(f"| {n}{'' if c else ' (native only)'} | " + " | ".join(
            f"{pct(row['crop']['per_corruption'].get(n))} / {pct(row['native']['per_corruption'][n])}"
            for row in r["models"].values()) + " |")
    sev = r["severities"]
    lines += ["", "By severity (" + ", ".join(map(str, sev)) + "), crop / native:", "",
              "| model | corruption | " + " | ".join(f"severity {s}" for s in sev) + " |",
              "|---|---|" + "---|" * len(sev)]
    for m, row in r["models"].items():
        for n in r["paired"]:
            lines.append(f"| {m} | {n} | " + " | ".join(
                f"{pct(row['crop']['per_severity'].get(f'{n}/{s}'))} / {pct(row['native']['per_severity'][f'{n}/{s}'])}"
                for s in sev) + " |")
    fm = r["native"]["field_mode"]
    lines += ["", "What field mode saw (first model): fields with a detection, cells per field, red-cell diameter "
              "and crop side used (medians, px):", "", "| set | with a detection | cells per field | red cell | crop |",
              "|---|---|---|---|---|"]
    for k, v in fm.items():
        lines.append(f"| {k} | {100 * v['with_a_detection']:.1f} % | {v['cells_per_field']} | {v['rbc_px']} | "
                     f"{v['crop']} |")
    return "\n".join(lines) + "\n"


def output_judges(protocol: str) -> dict:
    """What ``bench_protocols`` writes for ``protocol``, each name with ``precious.foreign_files``' test of "an
    earlier bench wrote it" (plots and Markdown: by the company they keep)."""
    stems = {"crop": ["bench"], "native": ["native"], "both": ["bench", "native", "protocols"]}[protocol]
    judges = {}
    for stem in stems:
        judges[f"{stem}.json"] = json_with("crop", "native", "models") if stem == "protocols" else \
            json_with("models", "accuracy", "corruptions")
        if stem != "protocols":
            judges[f"{stem}.csv"] = starts_with(b"model,corruption,severity,accuracy")
        judges |= {f"{stem}.md": lambda p: None, f"{stem}.png": lambda p: None}
    return judges


def bench_protocols(models: Sequence[str], out: str | Path, protocol: str = "crop", fields: str | None = None,
                    limit: int = 400, seed: int = 0, data: str | None = None, tta: Sequence[int] = (1,),
                    run: str | None = None, log: Callable[[str], None] = print, command: str | None = None) -> dict:
    """``cellcompress bench``: the crop protocol (bench.json ...), the native one (native.json ...) or both
    (and protocols.json ...). ``limit`` caps the test crops and, stratified by class, the fields; ``command``:
    what protocols.json records as the command (default: this process's arguments)."""
    from .bench import bench  # noqa: PLC0415

    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol}: choose from {', '.join(PROTOCOLS)}")
    refuse_foreign(out, foreign_files(out, output_judges(protocol)), "cellcompress bench")
    if protocol != "crop" and not fields:
        raise UserError(f"--protocol {protocol} needs --fields DIR: class folders of whole fields, each centred on "
                        "a cell of its folder's class (e.g. ../shared/data/pbc-fields)")
    fs = None
    if protocol != "crop":  # bad fields fail before minutes of the crop protocol
        fs = load_fields(fields, load_sidecar(models[0]).labels, limit, seed)
    crop = bench(list(models), out, limit=limit, seed=seed, data=data, tta=tta, run=run, log=log) \
        if protocol != "native" else None
    if fs is None:
        return {"crop": crop}
    native = bench_native(models, fs, out, seed=seed, tta=tta, log=log)
    if crop is None:
        return {"native": native}
    both = compare_protocols(crop, native, out, command)
    log(f"side by side: {Path(out) / 'protocols.md'}")
    return {"crop": crop, "native": native, "protocols": both}
