"""``celltrain average``: a "model soup" bundle from several runs that share a split.

The runs must hold the same architecture, classes and input size, and the same saved split
(otherwise the average has seen some other run's test images and its evaluation means nothing).
The result is an ordinary run folder (model.keras + model.json, split.json, config.json), so
``celltrain evaluate`` and ``cellcompress`` take it like any other.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Callable, Sequence

from scopelite.edge.bundle import atomic_path, sha256_file, write_json_atomic, write_sidecar
from scopelite.edge.outputs import folder_in_place
from scopelite.edge.errors import UserError

from . import model as model_lib
from .average import average_into
from .config import SOUP_SEED_STEP, FitConfig
from .data import refuse_out_in_data, split_identity
from .run import heldout_data, load_keras_bundle, run_config, split_file
from .runpath import MODEL_FILE, model_file

SOUP_FILES = ("split.json", "config.json", MODEL_FILE, "model.json")  # what an average writes into its --out




PATH_FIELDS = ("data", "exclude", "weights")  # the same file typed another way (./cells, an absolute path) is no change


def _differences(had: FitConfig, want: FitConfig) -> list[str]:
    """The settings in which a member's recorded config differs from the one this command would give it."""
    a, b = had.to_json(), want.to_json()

    def same(key: str) -> bool:
        if key in PATH_FIELDS and a.get(key) and b.get(key) and Path(a[key]).exists():
            return Path(a[key]).resolve() == Path(b[key]).resolve()
        return a.get(key) == b.get(key)

    return sorted(k for k in a.keys() | b.keys() if not same(k))


def _run_name(model: Path, out: Path) -> str:
    """A member's run folder as the soup's sidecar names it: ``members/I`` inside ``out``, else its folder's name."""
    run = model.resolve().parent
    try:
        return str(run.relative_to(out.resolve()))
    except ValueError:
        return run.name


def _split_digest(f: Path) -> str:
    if not f.is_file():
        raise UserError(f"no {f.name} in {f.parent}: only models of celltrain runs can be averaged")
    return split_identity(f)


def member_configs(cfg: FitConfig) -> list[FitConfig]:
    """``celltrain fit --soup K``'s K runs: ``OUT/members/I``, one split (``seed``), training seeds ``+100 i``."""
    return [dataclasses.replace(cfg, out=str(Path(cfg.out) / "members" / str(i)), soup=1,
                                train_seed=cfg.training_seed + SOUP_SEED_STEP * i) for i in range(cfg.soup)]


def fit_soup(cfg: FitConfig, fit_one: Callable[[FitConfig, bool], object], log: Callable[[str], None] = print) -> dict:
    """``celltrain fit --soup K``: ``fit_one(member, resume)`` each member (``member_configs``), then their average
    in ``cfg.out`` (``soup``); its metrics. The same command again after a kill keeps the members already fitted
    and resumes the one that was cut short."""
    from .model import resolve_weights  # noqa: PLC0415

    out = Path(cfg.out)
    if (out / MODEL_FILE).exists() and (out / "members").is_dir():
        raise UserError(f"{out} holds a finished soup: choose another --out or delete it")
    if any((out / f).exists() for f in (MODEL_FILE, "state.json", "config.json")) and not (out / "members").is_dir():
        raise UserError(f"{out} holds another run (not a --soup one): choose another --out or delete it")
    cfg = dataclasses.replace(cfg, weights=resolve_weights(cfg.weights))  # recorded as plain fits record it
    members = member_configs(cfg)
    made = not out.exists()
    try:
        _fit_members(members, fit_one, out, log)
    except UserError:  # bad data or settings, found by the first member: leave no empty run folder behind
        if made and not any((Path(m.out) / "state.json").exists() for m in members):
            shutil.rmtree(out, ignore_errors=True)
        raise
    return soup([m.out for m in members], cfg.out, data=cfg.data, log=log, config=cfg)


def _fit_members(members: list[FitConfig], fit_one: Callable[[FitConfig, bool], object], out: Path,
                 log: Callable[[str], None]) -> None:
    """Fit each member not fitted yet (resuming one cut short); refuse a member folder fitted otherwise."""
    for i, member in enumerate(members):
        folder = Path(member.out)
        before = folder / "config.json"
        if before.exists():  # fitted, or cut short: with these settings, or it would mix members of two recipes
            try:
                had = FitConfig.from_json({**json.loads(before.read_text()), "out": member.out})
            except (ValueError, TypeError) as e:  # cut short while written, or edited by hand
                raise UserError(f"{before} is damaged ({e}): remove {folder} to fit that member again") from None
            diff = _differences(had, member)
            if diff:
                raise UserError(f"{folder} was fitted with other settings ({', '.join(diff)}) than this command's: "
                                f"give the command that started {out}, or another --out")
        if (folder / MODEL_FILE).exists():
            log(f"soup member {i + 1}/{len(members)}: {folder} already fitted")
            continue
        resume = (folder / "state.json").exists() and before.exists()
        log(f"soup member {i + 1}/{len(members)} (training seed {member.training_seed}) "
            f"{'resumed in' if resume else '->'} {folder}")
        fit_one(member, resume)


def soup(models: Sequence[str | Path], out: str | Path, data: str | None = None,
         log: Callable[[str], None] = print, config: FitConfig | None = None) -> dict:
    """Average the weights of ``models`` into a new run folder ``out``; return its metrics. ``config``: the run's
    config to record (``fit_soup``'s); by default the first model's, with ``out``."""
    from .fit import few_test_note, heldout_metrics, keras_sidecar  # noqa: PLC0415 - fit imports TensorFlow

    paths = [model_file(m) for m in models]
    if len(paths) < 2:
        raise UserError("give at least two models to average")
    seen = [p.resolve() for p in paths]
    twice = next((p for p, r in zip(paths, seen) if seen.count(r) > 1), None)
    if twice is not None:  # "averaging 2 models" of one model, exit 0: an average of itself
        raise UserError(f"{twice} is given twice: each model counts once in an average; give different runs")
    out = Path(out)
    if (out / MODEL_FILE).exists():
        raise UserError(f"{out} already holds a model; choose another --out or delete it")
    bundles = [load_keras_bundle(p, diverged="an average with it is broken too; leave it out") for p in paths]
    sc0, model = bundles[0]
    split_files = [split_file(sc, p) for p, (sc, _) in zip(paths, bundles)]
    for p, (sc, _) in zip(paths[1:], bundles[1:]):
        if tuple(sc.labels) != tuple(sc0.labels):
            raise UserError(f"{p} has classes {sc.labels}, {paths[0]} has {sc0.labels}")
        if (sc.input.height, sc.input.width) != (sc0.input.height, sc0.input.width):
            raise UserError(f"{p} takes {sc.input.height}x{sc.input.width} images, {paths[0]} "
                            f"{sc0.input.height}x{sc0.input.width}")
    if len({_split_digest(f) for f in split_files}) != 1:
        raise UserError("the runs were trained on different splits (their split.json differ): their average has "
                        "seen other runs' test images; average only runs continued from one another (--weights)")
    ds, split = heldout_data(sc0, paths[0], data)
    # its files would be read as a class (and its folder as one with no images) by the next fit
    refuse_out_in_data(out, ds.root, f"the data the runs were trained on ({ds.root})", "give a folder outside it")
    if config is not None:
        cfg = dataclasses.replace(config, out=str(out), data=data or config.data)
    else:  # the first run's config; so the sidecar's views (celledge's default --tta) are the first run's
        saved = [run_config(sc, p) for p, (sc, _) in zip(paths, bundles)]
        cfg = dataclasses.replace(FitConfig.from_json(saved[0]), out=str(out))
        views = [c.get("views", 1) for c in saved]
        if len(set(map(str, views))) > 1:
            log(f"note: the runs' sidecars ask celledge for {' / '.join(map(str, views))} views; the average's asks "
                f"for {cfg.views}, the first run's (celledge classify/watch --tta N overrides it)")
    log(f"averaging {len(paths)} models: {', '.join(str(p) for p in paths)}")
    recalibrated = average_into(model, [m.get_weights() for _, m in bundles], ds.subset(split["train"]).images,
                                cfg.batch_size)
    if recalibrated:
        log("BatchNorm statistics differed between the models: re-estimated them on training images")
    metrics = heldout_metrics(model, ds.subset(split["val"]), ds.subset(split["test"]), ds.class_names)
    extra = {"weight_averaging": {"models": [{"run": _run_name(p, out), "file": p.name, "sha256": sha256_file(p)}
                                             for p in paths],
                                  "batchnorm_recalibrated": recalibrated}}
    # all four files or none: a full disk left config.json and split.json alone, which blocked the rerun
    with folder_in_place(out, owned=lambda e: e.name in SOUP_FILES) as work:
        shutil.copyfile(split_files[0], work / "split.json")
        write_json_atomic(work / "config.json", cfg.to_json())
        with atomic_path(work / MODEL_FILE) as tmp:
            model.save(tmp)
        write_sidecar(work / MODEL_FILE, keras_sidecar(work / MODEL_FILE, cfg, ds, metrics, extra))
    final = out / MODEL_FILE
    log(f"val accuracy {metrics['val']['accuracy']:.4f}, test accuracy {metrics['test']['accuracy']:.4f} "
        f"({metrics['test']['n']} images{few_test_note(metrics['test']['n'])}) -> {final}")
    return metrics
