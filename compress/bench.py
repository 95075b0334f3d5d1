"""Robustness benchmark: accuracy of any number of models under every corruption and severity.

Models are bundles: a Keras ``.keras`` or a ``.tflite`` (float, int8, QAT, Edge TPU) with
its sidecar. All see the same seeded corrupted images. Outputs CSV, JSON, Markdown and a
heatmap PNG; the mean corruption error (mCE) is relative to the first model.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

import numpy as np

from scopelite.edge.bundle import load_sidecar, write_bytes_atomic, write_json_atomic
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.errors import UserError
from scopelite.train.corruptions import CORRUPTIONS, SEVERITIES, corrupt_all
from scopelite.train.run import heldout_data


def _predictor(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    sc = load_sidecar(path)
    if sc.format == "keras":
        from scopelite.train._keras import keras  # noqa: PLC0415

        model = keras.models.load_model(path, compile=False)
        return lambda x: model.predict(x.astype(np.float32), batch_size=128, verbose=0)
    clf = LiteRTClassifier(path, num_threads=2)
    return clf.classify


def _run_model_path(models: list[Path]) -> Path:
    """The Keras model of the training run the first model came from (for its test split)."""
    for m in models:
        sc = load_sidecar(m)
        if sc.format == "keras":
            return m
        src = (sc.provenance.get("source") or {}).get("file")
        if src and Path(src).is_file():
            return Path(src)
    raise UserError("cannot tell which training run these models came from; pass a model.keras too, or --data")


def bench(models: list[str], out: str | Path, limit: int = 400, seed: int = 0, data: str | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Evaluate ``models`` on (up to ``limit`` images of) the run's test split, clean and corrupted."""
    from tqdm import tqdm  # noqa: PLC0415

    paths = [Path(m) for m in models]
    labels = [load_sidecar(p).labels for p in paths]
    if any(lab != labels[0] for lab in labels):
        raise UserError("the models have different label lists; benchmark models of one task together")
    run = _run_model_path(paths)
    run_sc = load_sidecar(run)
    ds, split = heldout_data(run_sc, run, data)
    test = ds.subset(split["test"])
    if limit and len(test) > limit:  # stratified subsample, seeded
        rng = np.random.default_rng(seed)
        per = max(1, limit // len(ds.class_names))
        idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(test.labels == c))[:per]
                                      for c in range(len(ds.class_names))]))
        test = test.subset(idx)
    short = [p.name for p in paths]
    preds = {(p.name if short.count(p.name) == 1 else str(p)): _predictor(p) for p in paths}
    names = list(preds)
    y = test.labels
    acc: dict[str, dict] = {n: {"clean": float((preds[n](test.images).argmax(1) == y).mean())} for n in names}
    jobs = [(c, s) for c in CORRUPTIONS for s in SEVERITIES]
    for c, s in tqdm(jobs, desc="corruptions x severities", unit="set"):
        x = corrupt_all(test.images, c, s, seed)
        for n in names:
            acc[n][f"{c}/{s}"] = float((preds[n](x).argmax(1) == y).mean())
    ref = names[0]
    summary = {}
    for n in names:
        per_c = {c: float(np.mean([acc[n][f"{c}/{s}"] for s in SEVERITIES])) for c in CORRUPTIONS}
        ce = {c: (sum(1 - acc[n][f"{c}/{s}"] for s in SEVERITIES) /
                  max(sum(1 - acc[ref][f"{c}/{s}"] for s in SEVERITIES), 1e-9)) for c in CORRUPTIONS}
        summary[n] = {"clean": acc[n]["clean"], "mean_corrupted": float(np.mean(list(per_c.values()))),
                      "per_corruption": per_c, "mCE_vs_" + ref: float(np.mean(list(ce.values())))}
    result = {"images": len(test), "data": ds.description, "seed": seed, "reference": ref, "models": summary,
              "accuracy": acc}
    out = Path(out)
    write_json_atomic(out / "bench.json", result)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "corruption", "severity", "accuracy"])
    for n in names:
        w.writerow([n, "clean", 0, f"{acc[n]['clean']:.4f}"])
        for c, s in jobs:
            w.writerow([n, c, s, f"{acc[n][f'{c}/{s}']:.4f}"])
    write_bytes_atomic(out / "bench.csv", buf.getvalue().encode())
    write_bytes_atomic(out / "bench.md", _markdown(result).encode())
    _heatmap(summary, out / "bench.png")
    for n in names:
        log(f"{n:>32}: clean {100 * summary[n]['clean']:.2f} %  mean corrupted "
            f"{100 * summary[n]['mean_corrupted']:.2f} %  mCE {summary[n]['mCE_vs_' + ref]:.3f}")
    return result


def _markdown(r: dict) -> str:
    ref = r["reference"]
    lines = [f"# Robustness benchmark ({r['images']} test images, {r['data']}, seed {r['seed']})", "",
             f"| model | clean | mean corrupted | mCE (vs {ref}) |", "|---|---|---|---|"]
    for n, s in r["models"].items():
        lines.append(f"| {n} | {100 * s['clean']:.2f} % | {100 * s['mean_corrupted']:.2f} % | {s['mCE_vs_' + ref]:.3f} |")
    lines += ["", "| corruption (mean of 5 severities) | " + " | ".join(r["models"]) + " |",
              "|---|" + "---|" * len(r["models"])]
    for c in CORRUPTIONS:
        lines.append(f"| {c} | " + " | ".join(f"{100 * s['per_corruption'][c]:.1f} %" for s in r["models"].values())
                     + " |")
    return "\n".join(lines) + "\n"


def _heatmap(summary: dict, path: Path) -> None:
    from scopelite.train._plot import pyplot, save  # noqa: PLC0415

    plt = pyplot()

    names = list(summary)
    m = np.array([[summary[n]["per_corruption"][c] for c in CORRUPTIONS] for n in names]) * 100
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(CORRUPTIONS), 1.2 + 0.5 * len(names)))
    im = ax.imshow(m, cmap="RdYlGn", vmin=max(0, m.min() - 5), vmax=100, aspect="auto")
    ax.set_xticks(range(len(CORRUPTIONS)), list(CORRUPTIONS), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(CORRUPTIONS)):
            ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="accuracy % (mean over severities)")
    fig.tight_layout()
    save(fig, path, dpi=100)
