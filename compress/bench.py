"""Robustness benchmark: accuracy of any number of models under every corruption and severity.

Models are bundles: a Keras ``.keras`` or a ``.tflite`` (float, int8, QAT, Edge TPU) with
its sidecar. All see the same seeded corrupted images. Outputs CSV, JSON, Markdown and a
heatmap PNG; the mean corruption error (mCE) is relative to the first model.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from scopelite.edge.bundle import BundleError, load_sidecar, source_path, write_bytes_atomic, write_json_atomic
from scopelite.edge.classifier import LiteRTClassifier
from scopelite.edge.errors import UserError
from scopelite.edge.tta import average_over_views, view_names
from scopelite.train.corruptions import CORRUPTIONS, SEVERITIES, corrupt_all
from scopelite.train.data import refuse_out_in_data, split_identity
from scopelite.train.run import heldout_data, predict, split_file
from scopelite.train.runpath import model_file


def _predictor(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    sc = load_sidecar(path)
    if sc.format == "keras":
        from scopelite.train._keras import keras  # noqa: PLC0415
        from scopelite.train.model import refuse_non_finite  # noqa: PLC0415

        model = keras.models.load_model(path, compile=False)
        refuse_non_finite(model, path)  # else benched as a real model of chance accuracy
        return lambda x: predict(model, x, batch_size=128)
    clf = LiteRTClassifier(path, num_threads=2)
    return clf.classify


def _run_model_path(models: list[Path]) -> Path:
    """The Keras model of the training run the models came from (for its test split): one given, else the
    source their sidecars name (by file name and sha256), beside a model or in the folder above."""
    sidecars = [(m, load_sidecar(m)) for m in models]
    for m, sc in sidecars:
        if sc.format == "keras":
            return m
    why = "their sidecars name no source model"
    for m, sc in sidecars:
        try:
            return source_path(m, sc)
        except BundleError as e:
            why = str(e)
    raise UserError(f"cannot tell which training run these models came from: {why} (pass the run's model.keras, "
                    "with its split.json beside it)")


def _given_run(run: str | Path, labels) -> Path:
    """``--run``: a run folder or its model.keras, checked to be a Keras run of the same labels."""
    path = model_file(run)
    if not path.is_file():
        raise UserError(f"--run {run}: no model.keras there (give a training run's folder or its model.keras)")
    sc = load_sidecar(path)
    if sc.format != "keras":
        raise UserError(f"--run {run}: a {sc.format} model; give a training run's model.keras")
    if tuple(sc.labels) != tuple(labels):
        raise UserError(f"--run {run}: its labels differ from the models'; give a run of the same task")
    return path


def _split_of(model: Path, sc) -> str | None:
    """The identity of the split ``model`` was trained on (``data.split_identity``): a Keras run's own, a converted
    model's source run's (its sidecar names it); None where that run is not found (a shipped model)."""
    try:
        if sc.format != "keras":
            model = source_path(model, sc)
            sc = load_sidecar(model)
        return split_identity(split_file(sc, model))
    except (BundleError, UserError, OSError):
        return None


@dataclass(frozen=True)
class Suite:
    """A set of corruptions: names, severities and how to make the corrupted images of the test subset."""

    name: str
    corruptions: Sequence[str]
    severities: Sequence[int]
    apply: Callable[[np.ndarray, str, int], np.ndarray]


def builtin_suite(seed: int = 0) -> Suite:
    """scopelite's own 16 corruptions x 5 severities (``scopelite.train.corruptions``)."""
    return Suite("scopelite", tuple(CORRUPTIONS), SEVERITIES, lambda x, c, s: corrupt_all(x, c, s, seed))


def select_test(models: Sequence[str | Path], limit: int = 400, seed: int = 0, data: str | None = None,
                run: str | Path | None = None, out: str | Path | None = None):
    """The test split of the run the models came from, stratified down to ``limit`` images (seeded).

    ``run``: that run's ``model.keras`` (or its folder) when the models' own run is not found from
    their sidecars (a shipped model whose run is on another machine: any run of the same data and seed
    has the same split)."""
    paths = [Path(m) for m in models]
    sidecars = [load_sidecar(p) for p in paths]
    labels = [sc.labels for sc in sidecars]
    if any(lab != labels[0] for lab in labels):
        raise UserError("the models have different label lists; benchmark models of one task together")
    sizes = [(sc.input.height, sc.input.width) for sc in sidecars]
    if any(s != sizes[0] for s in sizes):
        listed = ", ".join(f"{p} {h}x{w}" for p, (h, w) in zip(paths, sizes))
        raise UserError(f"the models take different input sizes ({listed}); the crop protocol scores every model "
                        "on one set of test crops: benchmark each input size apart")
    given = run
    run = _given_run(run, labels[0]) if run is not None else _run_model_path(paths)
    run_sc = load_sidecar(run)
    if (run_sc.input.height, run_sc.input.width) != sizes[0]:
        h, w = sizes[0]
        raise UserError(f"{'--run ' + str(given) if given is not None else run} was trained on "
                        f"{run_sc.input.height}x{run_sc.input.width} px images and the models take {h}x{w}: its test "
                        f"crops are read at its size; give a run of {h}x{w} px (any run on the same data and --seed "
                        "has the same split)")
    ours = split_identity(split_file(run_sc, run))
    for p, sc in zip(paths, sidecars):  # scored on another run's test split, a model was scored on images it had
        # trained on (22 of 24; a hunt of session 37): celltrain choose refuses such a pair, bench did not
        theirs = _split_of(p, sc)
        if theirs is not None and theirs != ours:
            raise UserError(f"{p} was trained on another split than {run} (another --seed or other data): on {run}'s "
                            "test images it would be scored on images it trained on; benchmark models of one lineage "
                            "(runs on the same data with the same --seed) together")
    ds, split = heldout_data(run_sc, run, data)
    if out is not None:  # bench.png became a ninth class of the next fit
        refuse_out_in_data(out, ds.root, f"the data the run was trained on ({ds.root})", "give a folder outside it")
    test = ds.subset(split["test"])
    if limit and len(test) > limit:  # stratified subsample, seeded
        rng = np.random.default_rng(seed)
        per = max(1, limit // len(ds.class_names))
        idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(test.labels == c))[:per]
                                      for c in range(len(ds.class_names))]))
        test = test.subset(idx)
    return test, ds.description


def bench(models: list[str], out: str | Path, limit: int = 400, seed: int = 0, data: str | None = None,
          log: Callable[[str], None] = print, suite: Suite | None = None, selected=None,
          tta: Sequence[int] = (1,), run: str | Path | None = None) -> dict:
    """Evaluate ``models`` on (up to ``limit`` images of) the run's test split, clean and corrupted
    by every corruption and severity of ``suite`` (default: :func:`builtin_suite`). ``selected``:
    what :func:`select_test` returned, when the caller already holds it (no second read of the data).
    ``tta``: view counts (:mod:`scopelite.edge.tta`) each model is scored with; a model under n > 1
    views appears as ``"<name> tta<n>"``."""
    from tqdm import tqdm  # noqa: PLC0415

    suite = suite or builtin_suite(seed)
    paths = [Path(m) for m in models]
    test, description = selected or select_test(paths, limit, seed, data, run, out=out)
    if limit and len(test) > limit:  # --limit 1 scored 8 images without a word
        log(f"NOTE: --limit {limit} is fewer than the classes: one image of each is scored ({len(test)} images)")
    short = [p.name for p in paths]
    for t in tta:
        view_names(t)  # a bad count fails before any model is loaded
    preds = {}
    for p in paths:
        base, fn = (p.name if short.count(p.name) == 1 else str(p)), _predictor(p)
        for t in tta:
            preds[base if t == 1 else f"{base} tta{t}"] = (
                fn if t == 1 else (lambda x, fn=fn, t=t: average_over_views(fn, x, t)))
    names = list(preds)
    y = test.labels
    acc: dict[str, dict] = {n: {"clean": float((preds[n](test.images).argmax(1) == y).mean())} for n in names}
    jobs = [(c, s) for c in suite.corruptions for s in suite.severities]
    for c, s in tqdm(jobs, desc=f"{suite.name} corruptions x severities", unit="set"):
        x = suite.apply(test.images, c, s)
        for n in names:
            acc[n][f"{c}/{s}"] = float((preds[n](x).argmax(1) == y).mean())
    ref = names[0]
    summary, left_out = summarise(acc, suite.corruptions, suite.severities)
    result = {"images": len(test), "data": description, "seed": seed, "suite": suite.name, "tta": list(tta),
              "corruptions": list(suite.corruptions), "severities": list(suite.severities), "reference": ref,
              "mCE_left_out": left_out, "models": summary, "accuracy": acc}
    write_results(result, out, "bench", log)
    return result


def summarise(acc: dict[str, dict], corruptions: Sequence[str], severities: Sequence[int]) -> tuple[dict, list]:
    """Per model: clean, mean corrupted, accuracy per corruption (mean over severities) and mCE against
    the first model; and the corruptions mCE leaves out."""
    names = list(acc)
    ref = names[0]
    summary, left_out = {}, []
    for n in names:
        per_c = {c: float(np.mean([acc[n][f"{c}/{s}"] for s in severities])) for c in corruptions}
        mce, left_out = mean_corruption_error(acc[n], acc[ref], corruptions, severities)  # left_out depends on the reference only
        summary[n] = {"clean": acc[n]["clean"], "mean_corrupted": float(np.mean(list(per_c.values()))),
                      "per_corruption": per_c, "mCE_vs_" + ref: mce}
    return summary, left_out


def write_results(result: dict, out: str | Path, stem: str = "bench", log: Callable[[str], None] = print) -> None:
    """``stem``.{json,csv,md,png} of a bench result in ``out``, each written atomically; one line per model to ``log``."""
    out = Path(out)
    acc, ref, summary = result["accuracy"], result["reference"], result["models"]
    # the figure is written last: an earlier bench's, left when it fails, read as this one's
    (out / f"{stem}.png").unlink(missing_ok=True)
    write_json_atomic(out / f"{stem}.json", result)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "corruption", "severity", "accuracy"])
    for n in summary:
        w.writerow([n, "clean", 0, f"{acc[n]['clean']:.4f}"])
        for c in result["corruptions"]:
            for s in result["severities"]:
                w.writerow([n, c, s, f"{acc[n][f'{c}/{s}']:.4f}"])
    write_bytes_atomic(out / f"{stem}.csv", buf.getvalue().encode())
    write_bytes_atomic(out / f"{stem}.md", _markdown(result).encode())
    _heatmap(summary, list(result["corruptions"]), out / f"{stem}.png")
    for n, s in summary.items():
        log(f"{n:>32}: clean {100 * s['clean']:.2f} %  mean corrupted "
            f"{100 * s['mean_corrupted']:.2f} %  mCE {_mce_text(s['mCE_vs_' + ref])}")


def mean_corruption_error(acc: dict[str, float], ref: dict[str, float], corruptions: Sequence[str],
                          severities: Sequence[int]) -> tuple[float | None, list[str]]:
    """Mean over corruptions of (errors summed over severities) / (the reference's errors).

    A corruption the reference never gets wrong has no ratio (0/0, or x/0): it is left out of
    the mean and named in the second value. ``None`` when every corruption is left out.
    """
    ratios, left_out = [], []
    for c in corruptions:
        ref_err = sum(1 - ref[f"{c}/{s}"] for s in severities)
        if ref_err <= 1e-12:
            left_out.append(c)
            continue
        ratios.append(sum(1 - acc[f"{c}/{s}"] for s in severities) / ref_err)
    return (float(np.mean(ratios)) if ratios else None), left_out


def _mce_text(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def rank_agreement(a: dict[str, float], b: dict[str, float]) -> dict:
    """How two scorings of the same models order them: Kendall tau-b and pairwise agreement.

    A pair tied in either scoring is neither concordant nor discordant.
    """
    names = sorted(set(a) & set(b))
    if len(names) < 2:
        raise UserError("rank agreement needs at least two models scored by both")
    conc = disc = ties_a = ties_b = 0
    for i, m in enumerate(names):
        for n in names[i + 1:]:
            da, db = np.sign(a[m] - a[n]), np.sign(b[m] - b[n])
            ties_a += da == 0
            ties_b += db == 0
            if da and db:
                conc += da == db
                disc += da != db
    pairs = len(names) * (len(names) - 1) // 2
    denom = np.sqrt(float(pairs - ties_a) * float(pairs - ties_b))
    return {"models": names, "pairs": pairs, "concordant_pairs": int(conc), "discordant_pairs": int(disc),
            "kendall_tau": float((conc - disc) / denom) if denom else 0.0,
            "same_ranking": bool(disc == 0 and ties_a == ties_b == 0)}


def _markdown(r: dict) -> str:
    ref = r["reference"]
    lines = [f"# Robustness benchmark, {r['suite']} suite ({r['images']} {r.get('unit', 'test images')}, {r['data']}, "
             f"seed {r['seed']})",
             "",
             f"| model | clean | mean corrupted | mCE (vs {ref}) |", "|---|---|---|---|"]
    for n, s in r["models"].items():
        lines.append(f"| {n} | {100 * s['clean']:.2f} % | {100 * s['mean_corrupted']:.2f} % | {_mce_text(s['mCE_vs_' + ref])} |")
    if r.get("mCE_left_out"):
        lines += ["", f"mCE leaves out what {ref} never got wrong (no ratio): " + ", ".join(r["mCE_left_out"]) + "."]
    lines += ["", "| corruption (mean of 5 severities) | " + " | ".join(r["models"]) + " |",
              "|---|" + "---|" * len(r["models"])]
    for c in r["corruptions"]:
        lines.append(f"| {c} | " + " | ".join(f"{100 * s['per_corruption'][c]:.1f} %" for s in r["models"].values())
                     + " |")
    return "\n".join(lines) + "\n"


def _heatmap(summary: dict, corruptions: list[str], path: Path) -> None:
    from scopelite.train._plot import pyplot, save  # noqa: PLC0415

    plt = pyplot()

    names = list(summary)
    m = np.array([[summary[n]["per_corruption"].get(c, np.nan) for c in corruptions] for n in names]) * 100
    fig, ax = plt.subplots(figsize=(2.5 + 0.62 * len(corruptions), max(3.2, 1.2 + 0.5 * len(names))))  # room for labels
    im = ax.imshow(m, cmap="RdYlGn", vmin=max(0, np.nanmin(m) - 5), vmax=100, aspect="auto")  # NaN: not measured
    ax.set_xticks(range(len(corruptions)), corruptions, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(corruptions)):
            ax.text(j, i, "-" if np.isnan(m[i, j]) else f"{m[i, j]:.0f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="accuracy % (mean over severities)")
    fig.tight_layout()
    save(fig, path, dpi=100)
