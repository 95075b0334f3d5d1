"""``celltrain import``: the weights ``celltrain fit --backend keras3`` wrote -> an ordinary run folder.

The network is rebuilt in tf-keras from ``network.py`` and the weights set by name; the
held-out metrics are measured on the run's test split (read from the data here, where it
never left), and the trainer's own validation predictions are compared with this model's:
same weights, same answers, recorded in the sidecar. The result is model.keras + model.json,
split.json and config.json, which ``celltrain evaluate``, ``cellcompress`` and ``celledge`` take.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from scopelite.edge.bundle import atomic_path, write_json_atomic, write_sidecar
from scopelite.edge.errors import UserError
from scopelite.edge.outputs import folder_in_place, holdings

from . import data as data_lib
from . import fit as fit_lib
from . import model as model_lib
from .config import FitConfig
from .keras3 import HISTORY, VAL_PROBS, load_weight_chunks
from .network import weight_name
from .run import predict

# import's check against the trainer's val answers: of those it was sure of (top-1 ahead by more than CLEAR_MARGIN),
# at most MAX_FLIPS (or one image) may differ; gx1 (H200, bf16) gave 99.8 % of all, its probabilities 0.04 apart at most
CLEAR_MARGIN = 0.2
MAX_FLIPS = 0.02
TAGS = ("final", "raw")  # final: the EMA weights when trained with --ema (else the last epoch's); raw: no EMA


def import_weights(weights: str, split_file: str, data: str, out: str, tag: str = "final") -> dict:
    """Make the run folder ``out`` from the weights folder ``weights`` (tag ``final`` or ``raw``).

    Returns:
        Val and test accuracy, test macro-F1, the agreement with the trainer, and the model's path.
    """
    src, out_p = Path(weights), Path(out)
    if (out_p / "model.keras").exists():
        raise UserError(f"{out} already holds a model; give a new --out")
    held = holdings(out_p)
    if held:  # a killed fit's folder: its config.json would be replaced beside its checkpoints
        raise UserError(f"--out {out} is not empty ({held}): give a new folder for the imported run")
    data_p = Path(data)
    data_lib.refuse_out_in_data(out, data_p, f"--data {data}", data_lib.RUN_IN_DATA)
    try:
        hist = json.loads((src / HISTORY).read_text())
        saved = hist["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{src} has no {HISTORY} from celltrain fit --backend keras3; give the folder its --out "
                        "named") from None
    try:
        trained = FitConfig.from_json(saved)
    except (ValueError, TypeError) as e:
        raise UserError(f"{src / HISTORY}: the training options it records are damaged ({e})") from None
    ws = load_weight_chunks(src, tag)
    bad = [n for n, w in ws.items() if not np.issubdtype(w.dtype, np.number) or not np.isfinite(w).all()]
    if bad:  # a run that diverged, or a damaged chunk: NaN answers and NaN in the sidecar
        raise UserError(f"{src}: {len(bad)} weights hold NaN or infinity (first: {bad[0]}); the run diverged or the "
                        "files are damaged")
    saved = data_lib.read_json_file(split_file, "a run's split.json", lambda o: isinstance(o, dict) and isinstance(
        o.get("class_names"), list) and o["class_names"] and all(isinstance(c, str) for c in o["class_names"]))
    seed = saved.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**32 - 1:
        raise UserError(f"{split_file}: seed {seed!r} is not a seed (a whole number 0..2**32-1); the file is damaged")
    n_classes = len(saved["class_names"])
    cfg = dataclasses.replace(trained, out=str(out_p.resolve()), data=str(data_p.resolve()), seed=seed,
                              train_seed=trained.training_seed)
    model = model_lib.build(cfg.arch, cfg.image_size, n_classes, weights="none", dropout=cfg.dropout)
    names = [weight_name(w) for w in model.weights]
    missing = [n for n in names if n not in ws]
    wrong = [n for n, w in zip(names, model.weights) if n in ws and tuple(ws[n].shape) != tuple(w.shape)]
    if missing or wrong or len(ws) != len(names):
        raise UserError(f"the weights do not fit {cfg.arch} with {n_classes} classes ({split_file}'s): "
                        f"{len(missing)} missing (first: {missing[:1]}), {len(wrong)} of another shape (first: "
                        f"{wrong[:1]}), {len(ws)} given for {len(names)}")
    model.set_weights([ws[n] for n in names])
    data_lib.check_source(data)
    # with the split's classes, as fit loads a fine-tuned model's data: a lab's folder may lack some; a folder of
    # another class is refused (every label would have shifted by one)
    ds = data_lib.load(data, cfg.image_size, seed=cfg.seed, progress=True, classes=saved["class_names"])
    split = data_lib.load_split(split_file, ds)
    va, te = ds.subset(split["val"]), ds.subset(split["test"])
    ours = predict(model, va.images)  # once: for the metrics and the comparison with the trainer
    metrics = {**fit_lib.heldout_metrics(model, va, te, ds.class_names, val_probs=ours),
               "train_seconds": (hist.get("result") or {}).get("train_seconds")}
    check = {}
    if tag == "final" and not (src / VAL_PROBS).is_file():  # the check --help promises was skipped without a word
        check = {"trainer_agreement": f"not checked: no {VAL_PROBS} beside the weights (copy it with them)"}
    if tag == "final" and (src / VAL_PROBS).is_file():
        try:
            theirs = np.load(src / VAL_PROBS, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise UserError(f"{src / VAL_PROBS} is damaged ({e}); copy the weights folder again") from None
        if theirs.shape != ours.shape:  # another split than the pack's: every figure would be of other images
            raise UserError(f"the trainer's val predictions ({src / VAL_PROBS}: {theirs.shape}) are not of "
                            f"{split_file}'s val split ({ours.shape}: images, classes): give --split the split.json "
                            "the pack was made from")
        check = {"val_top1_agreement_with_trainer": float((theirs.argmax(1) == ours.argmax(1)).mean()),
                 "val_max_abs_prob_diff_with_trainer": float(np.abs(theirs - ours).max())}
        top2 = np.sort(theirs, axis=1)[:, -2:] if theirs.shape[1] > 1 else np.zeros((len(theirs), 2))
        clear = top2[:, 1] - top2[:, 0] > CLEAR_MARGIN  # the trainer was sure: bf16 cannot turn that answer
        flips = int(((theirs.argmax(1) != ours.argmax(1)) & clear).sum())
        if flips > max(MAX_FLIPS * clear.sum(), 1) or not np.isfinite(ours).all():
            raise UserError(f"the imported model answers otherwise than the trainer on {flips} of the "
                            f"{int(clear.sum())} val images the trainer was sure of (top-1 ahead by more than "
                            f"{CLEAR_MARGIN}): the weights, --split or --data do not belong together")
    result = hist.get("result") or {}
    # made aside and renamed into place, as average does: Ctrl-C before the sidecar left model.keras without
    # model.json, which the same import then refused ("already holds a model")
    with folder_in_place(out_p) as work:
        shutil.copyfile(split_file, work / "split.json")
        write_json_atomic(work / "config.json", cfg.to_json())
        with atomic_path(work / fit_lib.MODEL_FILE) as tmp:
            model.save(tmp)
        write_sidecar(work / fit_lib.MODEL_FILE, fit_lib.keras_sidecar(work / fit_lib.MODEL_FILE, cfg, ds, metrics, {
            "trained_with": {"trainer": "celltrain fit --backend keras3", "weights": tag,
                             **{k: result.get(k) for k in ("backend", "keras", "epochs")}, **check}}))
    final = out_p / fit_lib.MODEL_FILE
    return {"val_accuracy": metrics["val"]["accuracy"], "test_accuracy": metrics["test"]["accuracy"],
            "test_macro_f1": metrics["test"]["macro_f1"], **check, "out": str(final)}
