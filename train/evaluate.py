"""Evaluate a run on its held-out test split, clean and under field corruptions."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from scopelite.edge.bundle import write_json_atomic
from scopelite.edge.tta import view_names

from .corruptions import corrupted_copy
from .metrics import summarize
from .run import heldout_data, load_keras_bundle, predict


def evaluate(model_path: str | Path, data: str | None = None, seed: int = 0,
             log: Callable[[str], None] = print, tta: int = 1) -> dict:
    """Accuracy, macro P/R/F1, per-class table, ECE, confusion matrix: clean and on a corrupted copy.

    Writes ``evaluation.json`` and ``confusion.png`` beside the model (``evaluation-tta<n>.json``
    and ``confusion-tta<n>.png`` when scored over ``tta`` > 1 flipped/rotated views).
    """
    from scopelite.edge.outputs import check_writable  # noqa: PLC0415

    view_names(tta)
    model_path = Path(model_path)
    check_writable(model_path.parent, "the run folder", min_free_mb=5)  # before the scoring (minutes), not after
    sc, model = load_keras_bundle(model_path)
    ds, split = heldout_data(sc, model_path, data)
    test = ds.subset(split["test"])
    log(f"evaluating {model_path} on {len(test)} held-out test images ({ds.description})")
    clean = summarize(test.labels, predict(model, test.images, tta=tta), sc.labels)
    corrupted_images, plan = corrupted_copy(test.images, seed)
    probs = predict(model, corrupted_images, tta=tta)
    corrupted = summarize(test.labels, probs, sc.labels)
    correct = probs.argmax(1) == test.labels
    by_kind: dict[str, list[bool]] = {}
    for ok, (name, _) in zip(correct, plan):
        by_kind.setdefault(name, []).append(bool(ok))
    corrupted["by_corruption"] = {k: round(float(np.mean(v)), 4) for k, v in sorted(by_kind.items())}
    result = {"model": str(model_path), "split": "test", "data": ds.description, "synthetic": ds.synthetic,
              "clean": clean, "corrupted": corrupted,
              "corrupted_protocol": f"one random corruption (16 kinds) at severity 1-5 per image, seed {seed}",
              "tta_views": view_names(tta)}
    suffix = f"-tta{tta}" if tta > 1 else ""
    log(f"clean: accuracy {clean['accuracy']:.4f}, macro-F1 {clean['macro_f1']:.4f}, ECE {clean['ece']:.3f} | "
        f"corrupted: accuracy {corrupted['accuracy']:.4f}, macro-F1 {corrupted['macro_f1']:.4f}")  # said first: a
    # an earlier evaluation's figure, left when this one's fails (a full disk), would read as this one's
    (model_path.parent / f"confusion{suffix}.png").unlink(missing_ok=True)
    write_json_atomic(model_path.parent / f"evaluation{suffix}.json", result)  # failed write loses no figure
    plot_confusion(np.array(clean["confusion"]), sc.labels, model_path.parent / f"confusion{suffix}.png",
                   f"clean test{f', {tta} TTA views' if tta > 1 else ''}, acc {clean['accuracy']:.3f}")
    log(f"per class, confusions, by corruption: {model_path.parent / f'evaluation{suffix}.json'}; the confusion "
        f"matrix: {model_path.parent / f'confusion{suffix}.png'}")
    return result


def plot_confusion(m: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    from scopelite.train._plot import pyplot, save  # noqa: PLC0415

    plt = pyplot()

    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    short = [x.replace("immature_granulocyte", "imm. gran.") for x in labels]
    ax.set_xticks(range(len(labels)), short, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), short)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    save(fig, path, dpi=100)
