"""``celltrain``: make data, train and evaluate blood-cell classifiers. Thin over the library."""
from __future__ import annotations

import functools
import os
import re
import shlex
from dataclasses import fields

import click

from scopelite.edge._quiet import verbose_option
from scopelite.edge.bundle import VIEWS
from scopelite.edge.errors import (SEED, NonEmptyPath, Number, OneLineGroup, UserError, is_number_text, one_line_errors,
                                   warn)

from .config import (AUG_OPS, BACKENDS, BALANCE, OPTIMIZERS, PRESETS, SCHEDULES, STRATEGIES, FitConfig, bounds,
                     check_aug)
from .runpath import model_file

_D = FitConfig(out="")


def _ranged(name: str) -> click.ParamType:
    """The click type of fit's flag for FitConfig field ``name``: a new run's ``config.bounds`` (a saved config is
    judged by the same list, config_problem, without a new run's limits)."""
    import math

    lo, hi, lo_open, hi_open = bounds(name, new_run=True)
    top = None if hi == math.inf else hi
    kind = next(f.type for f in fields(FitConfig) if f.name == name)
    if str(kind).startswith("int"):
        return click.IntRange(min=lo, max=top)
    return Number(min=lo, max=top, min_open=lo_open, max_open=hi_open)


RUN_FREE_MB = 200  # a run folder: the model, two checkpoints, snapshots, TensorBoard logs


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                                                "show_default": True})
@verbose_option
def main() -> None:
    """Train EfficientNetV2B0 blood-cell classifiers for scopelite.

    \b
    Example:
      celltrain synth demo_data/
      celltrain fit --out runs/demo --epochs 3 --weights none
    """


def _parse_aug(ctx, param, value):
    """--aug NAME[=STRENGTH] (repeatable) -> {name: strength or None (= --strength)}; 0 switches an op off."""
    if not value:
        return None
    ops = {}
    for item in value:
        name, _, strength = str(item).partition("=")
        try:
            ops[name.strip()] = check_aug(name.strip(), strength.strip())
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return ops


def _load_config_defaults(ctx, param, value):
    """--config FILE: YAML (or JSON) keys are fit options (dashes or underscores); flags still override them."""
    if not value:
        return value
    from scopelite.edge.config import ConfigError, read_file  # celledge's reader: one way to read a settings file

    try:  # at most 1 MB; YAML (base-60 numbers off) or JSON; a mapping; a key given twice is named
        raw, _, twice = read_file(value)
    except ConfigError as e:
        raise click.BadParameter(e.lines[0].removeprefix("--config ")) from None  # click names the option
    if twice:
        raise click.BadParameter(twice[0][1])
    names = {f.name for f in fields(FitConfig)}
    # a flag's own name is a key too (lr: 3e-4 for --lr, whose option is learning_rate)
    flags = {o[2:].replace("-", "_"): p.name for p in ctx.command.params for o in getattr(p, "opts", [])
             if o.startswith("--") and p.name in names}
    named: dict[str, str] = {}
    for k in raw:  # lr: and learning-rate: (or epochs: and epochs:'s other spelling) both given: one would win silently
        key = flags.get(str(k).replace("-", "_"), str(k).replace("-", "_"))
        if key in named:
            raise click.BadParameter(f"{value}: {named[key]} and {k} are the same option; give it once")
        named[key] = str(k)
    raw = {flags.get(str(k).replace("-", "_"), str(k).replace("-", "_")): v for k, v in raw.items()}
    unknown = [k.replace("_", "-") for k in raw if k not in names]
    if unknown:
        raise click.BadParameter(f"{value}: unknown keys {unknown}; see celltrain fit --help")
    if isinstance(raw.get("aug"), dict):  # aug: {hed: 0.6, jpeg: 0} reads as --aug hed=0.6 --aug jpeg=0
        raw["aug"] = [f"{k}={v}" if v is not None else str(k) for k, v in raw["aug"].items()]
    raw = {k: v for k, v in raw.items() if v is not None}  # "key: null" (or "key:") means the default, as before
    params = {p.name: p for p in ctx.command.params}
    for k, v in raw.items():
        wrong = _yaml_type_problem(params.get(k), v)
        if wrong:
            raise click.BadParameter(f"{value}: {k.replace('_', '-')}: {v!r} is not {wrong}")
    ctx.default_map = {**(ctx.default_map or {}), **raw}
    return value


def _yaml_type_problem(param, v) -> str | None:
    """What a YAML value should be for this option, when it is not (a list for a single value, 1.5 or true for a
    whole number: click crashed on some and silently truncated others); None when it fits."""
    if param is None:
        return None
    items = (v if isinstance(v, list) else [v]) if getattr(param, "multiple", False) else [v]
    for x in items:
        if getattr(param, "is_flag", False):
            if not isinstance(x, bool):
                return "true or false"
        elif isinstance(x, (list, dict)) or x is None:
            return "a single value" + (" (or a list of them)" if getattr(param, "multiple", False) else "")
        elif isinstance(param.type, (click.Path, click.types.StringParamType)) and not isinstance(x, str):
            # data: 2024.10 is the number 2024.1 to YAML, 0755 is 493, 2024-10-01 a date (a click traceback)
            read = "true or false" if isinstance(x, bool) else "a number" if isinstance(x, (int, float)) else "a date"
            return f"a name: YAML read it as {read}; put the value in quotes"
        elif isinstance(param.type, click.types.IntParamType) and not _whole(x):
            return "a whole number"
        elif isinstance(param.type, (click.types.FloatParamType, Number)) and not _number(x):
            return "a number"
    return None


def _number(x) -> bool:
    """A YAML number, or a string click reads as one (PyYAML reads 1e-4, without a dot, as a string)."""
    if isinstance(x, bool):
        return False
    return isinstance(x, (int, float)) or is_number_text(str(x))


def _whole(x) -> bool:
    """A whole number as click reads one: 30, 30.0 or "30" (not 1.5, not true, not "1e3")."""
    if isinstance(x, str):
        try:
            int(x)
        except ValueError:
            return False
        return True
    if not _number(x):
        return False
    try:
        return float(x) == int(float(x))
    except (OverflowError, ValueError):  # inf, nan
        return False


def _preset_defaults(ctx, param, value):
    """--preset NAME: a named set of defaults (config.PRESETS); --config and flags still override it."""
    if value:
        ctx.default_map = {**PRESETS[value], **(ctx.default_map or {})}
    return value


def _naming_defaults(fn):
    """A command's errors that name options the user did not type (they came from --preset or --config) say
    so: "--average-last 5 is more than --epochs 3" read as a bug to someone who typed only --epochs 3."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            ctx = click.get_current_context()
            text = str(e)
            named = [p.opts[0] for p in ctx.command.params if p.opts and p.expose_value
                     and ctx.get_parameter_source(p.name) == click.core.ParameterSource.DEFAULT_MAP
                     and re.search(re.escape(p.opts[0]) + r"(?![\w-])", text)]
            if named and "from --preset" not in text:
                e.args = (f"{text} ({', '.join(named)}: from --preset/--config; set "
                          f"{'it' if len(named) == 1 else 'them'} on the command line to override)",)
            raise
    return wrapper


def _check_views(ctx, param, value):
    if value not in VIEWS:
        raise click.BadParameter(f"{value}: give 1, 2, 4 or 8 views", param_hint="--views")
    return value


@main.command()
@click.option("--preset", type=click.Choice(sorted(PRESETS)), callback=_preset_defaults, is_eager=True,
              expose_value=False, help="Defaults for a job. few-shot: adapt the shipped model to your lab from "
                                       "25+ labelled cells per class (--weights shipped, the whole network at lr "
                                       "1e-4, 60 epochs, mean of the last 5, the weight average of 3 such fits: "
                                       "6.5-9 min for 30-60 cells in all on 2 idle cores with the cellcompress you run after it, "
                                       "longer with more cells: each fit goes over every image); your "
                                       "flags override it (--soup 1 "
                                       "--epochs 30: one fit, a quarter of the time, about 2 points lower).")
@click.option("--config", type=NonEmptyPath(exists=True, dir_okay=False), callback=_load_config_defaults,
              is_eager=True, expose_value=False,
              help="YAML (or .json) file of defaults for these options, keyed by their names (lr: 3e-4, aug: {hue: 1.0}); flags given override it.")
@click.option("--data", default=None, type=NonEmptyPath(), help="Class-folder dataset (data/<class>/*.jpg), e.g. a lab's reviewed cells from "
              "celledge export (trained at the scale its export.json records they were cut at). Default: generated "
              "synthetic smears.")
@click.option("--exclude", default=None, type=NonEmptyPath(exists=True, dir_okay=False),
              help="File of image ids to leave out (the exclusions.txt celltrain audit writes).")
@click.option("--out", default=None, type=NonEmptyPath(file_okay=False), help="Run folder to create.")
@click.option("--resume", default=None, type=NonEmptyPath(exists=True, file_okay=False),
              help="Continue the killed or stopped run in this folder (its config is reused). A --soup run "
                   "(--preset few-shot fits 3): give the command that started it again instead.")
@click.option("--arch", type=click.Choice(["efficientnetv2b0", "tiny"]), default=_D.arch)
@click.option("--weights", default=_D.weights,
              help="imagenet | none | shipped | FILE. shipped: the int8 PBC model packaged with scopelite (fine-tune "
                   "it on your own cells); FILE: a .keras model from an earlier run, or a .tflite model of the same "
                   "--arch (int8 weights are dequantised, BatchNorm unfolded).")
@click.option("--epochs", type=_ranged("epochs"), default=_D.epochs)
@click.option("--image-size", type=_ranged("image_size"), default=_D.image_size, help="Square input size in pixels.")
@click.option("--batch-size", type=_ranged("batch_size"), default=_D.batch_size)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=_D.optimizer)
@click.option("--lr", "learning_rate", type=_ranged("learning_rate"), default=_D.learning_rate,
              help="Peak learning rate (after warm-up).")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=_D.schedule)
@click.option("--warmup-epochs", type=_ranged("warmup_epochs"), default=_D.warmup_epochs)
@click.option("--weight-decay", type=_ranged("weight_decay"), default=_D.weight_decay)
@click.option("--augment", type=click.Choice(["none", "flips", "strong"]), default=_D.augment,
              help="strong adds zoom, exposure, colour, stain, blur, noise, JPEG and dark blots "
                   "(ops zoom, colour, stain, blur, noise, jpeg, blots; change any with --aug).")
@click.option("--strength", type=_ranged("strength"), default=_D.strength, help="Strength of strong augmentation.")
@click.option("--aug", multiple=True, callback=_parse_aug, metavar="NAME[=STRENGTH]",
              help=f"Set one augmentation op's strength (repeatable; 0 switches it off, no value: --strength), "
                   f"on top of --augment: {', '.join(AUG_OPS)}. E.g. --aug hed=0.5 --aug randaugment --aug jpeg=0")
@click.option("--mixup", type=_ranged("mixup"), default=_D.mixup, help="Share of batches mixed (MixUp/CutMix).")
@click.option("--progressive/--no-progressive", default=_D.progressive,
              help="Progressive resizing: 60%->100% image size and weak->full augmentation over 3 stages.")
@click.option("--label-smoothing", type=_ranged("label_smoothing"), default=_D.label_smoothing)
@click.option("--balance", type=click.Choice(BALANCE), default=_D.balance,
              help="Class imbalance: loss weights, oversampling, or nothing.")
@click.option("--fine-tune-fraction", type=_ranged("fine_tune_fraction"), default=_D.fine_tune_fraction,
              help="With pretrained weights: share of the backbone unfrozen after the head phase.")
@click.option("--head-epochs", type=_ranged("head_epochs"), default=_D.head_epochs,
              help="With pretrained weights: epochs on a frozen backbone first.")
@click.option("--patience", type=_ranged("patience"), default=_D.patience,
              help="Stop after this many epochs without a better val accuracy (0: never); best weights are kept.")
@click.option("--average-last", type=_ranged("average_last"), default=_D.average_last,
              help="Weight averaging (SWA): ship the mean of the last N epochs' weights instead of the best "
                   "epoch's (0: off). Snapshots go to checkpoints/epoch-NNN.npz.")
@click.option("--soup", type=_ranged("soup"), default=_D.soup, metavar="K",
              help="Fit K times on one split (training seeds --train-seed or --seed, +100, +200, ...; each in "
                   "OUT/members/I) and "
                   "ship the average of their weights (celltrain average) in OUT; the same command again after a "
                   "kill keeps the fitted members. K times the time. --preset few-shot fits 3 (3 fits of 60 epochs were 2.4 "
                   "points better than one of 30 over 8 (draw, N) pairs of another lab's cells; docs/cross-lab.md).")
@click.option("--views", type=int, default=_D.views, callback=_check_views, metavar="1|2|4|8",
              help="Write into the model's sidecar that celledge watch/classify should average this many "
                   "flipped/rotated views of each cell by default (their --tta still overrides). --preset few-shot: "
                   "8 (2.6 points better on another lab's fields after 25 cells per class; docs/cross-lab.md).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=_D.strategy,
              help="tf.distribute: mirrored (all local GPUs) or multiworker (several machines: run the same "
                   "command on each, with TF_CONFIG naming the cluster and its own index; see docs/gpu-training.md).")
@click.option("--worker-timeout", type=_ranged("worker_timeout"), default=_D.worker_timeout,
              help="With --strategy multiworker: seconds to wait for every worker of TF_CONFIG to join before "
                   "giving up with an error (TensorFlow alone would wait forever).")
@click.option("--mixed-precision", is_flag=True,
              help="float16 compute where a GPU has it (bfloat16 with --backend keras3).")
@click.option("--backend", type=click.Choice(BACKENDS), default=_D.backend,
              help="keras3: the same recipe under Keras 3 on any backend (KERAS_BACKEND=jax on a GPU machine "
                   "without TensorFlow); --data is then a pack from celltrain pack, and celltrain import makes "
                   "the run folder. See docs/gpu-training.md.")
@click.option("--ema", type=_ranged("ema"), default=_D.ema,
              help="With --backend keras3: momentum of an exponential moving average of the weights (0: off).")
@click.option("--synthetic-per-class", type=_ranged("synthetic_per_class"), default=_D.synthetic_per_class,
              help="Images per class when --data is not given.")
@click.option("--seed", type=SEED, default=_D.seed,
              help="Seed of the train/val/test split (and of training unless --train-seed is given).")
@click.option("--train-seed", type=SEED, default=None,
              help="Seed of initialisation, shuffling and augmentation only. Runs that share --seed share "
                   "the split, so `celltrain average` can mix them; vary --train-seed to make them differ.")
@click.option("--quiet", is_flag=True, help="One line per epoch instead of a progress bar.")
@one_line_errors
@_naming_defaults
def fit(quiet, resume, **opts):
    """Train a model; write model.keras + model.json, config, split and curves to --out.

    \b
    A small fit on generated cells (about 4 min on 2 cores):
      celltrain fit --out runs/demo --image-size 64 --epochs 6 --weights none
    Real data, strong augmentation, progressive resizing:
      celltrain fit --data ../shared/data/pbc96 --out runs/pbc --augment strong --progressive --epochs 30
    Strong augmentation plus HED stain jitter and RandAugment, without JPEG:
      celltrain fit --data ../shared/data/pbc96 --out runs/pbc --augment strong --aug hed=0.6 --aug randaugment=0.5 --aug jpeg=0
    Adapt the shipped PBC model to your lab's own cells (class folders, 25+ per class; any 2-8 classes):
      celltrain fit --preset few-shot --data my_cells --out runs/mine
    Continue after a crash or kill:
      celltrain fit --resume runs/pbc
    On a GPU machine with Keras 3 (JAX) and no TensorFlow, from a pack (docs/gpu-training.md):
      KERAS_BACKEND=jax celltrain fit --backend keras3 --data pbc96.npz --out g1 --augment strong --mixed-precision
    """
    from pathlib import Path

    from scopelite.edge.outputs import check_writable

    from . import data as data_lib

    if resume:
        ctx = click.get_current_context()
        source = click.core.ParameterSource
        sources = {p.opts[0]: ctx.get_parameter_source(p.name) for p in ctx.command.params if p.name in opts}
        given = [o for o, s in sources.items() if s in (source.COMMANDLINE, source.ENVIRONMENT)]
        given += ["--preset/--config"] * any(s == source.DEFAULT_MAP for s in sources.values())
        cfg_file = Path(resume) / "config.json"
        if (Path(resume) / "members").is_dir():  # first: its options are given again, not left out
            raise UserError(f"{resume} is a --soup run (--preset few-shot makes one): give the celltrain fit command "
                            f"that started it again, e.g. celltrain fit --preset few-shot --data DATA --out {resume} "
                            "(it keeps the fitted members and resumes the cut one; a finished soup has nothing to "
                            "resume)")
        if given:  # they were ignored silently: a user asking for more epochs got the old count
            raise UserError(f"--resume continues {resume} with the options it was started with (its config.json), "
                            f"so {', '.join(given)} would be ignored: leave {'it' if len(given) == 1 else 'them'} "
                            "out, or start a new run without --resume")
        if not cfg_file.is_file():
            raise UserError(f"{resume} is not a run folder (no config.json)")
        try:
            cfg = FitConfig.from_json({**data_lib.read_json_file(cfg_file, "the run's options file"), "out": resume})
        except (TypeError, ValueError) as e:  # a hand-edited config.json: a traceback mid-way or after training
            raise UserError(f"the run's options {cfg_file} are damaged ({e})") from None
        if cfg.backend == "keras3":
            raise UserError(f"{resume} was trained with --backend keras3, which cannot resume; continue it with "
                            f"celltrain fit --weights {resume}/model.keras --out NEW (after celltrain import)")
    else:
        if not opts["out"]:
            raise UserError("give --out RUN_DIR for a new run (or --resume RUN_DIR to continue one)")
        if opts.get("data") and opts["data"] != data_lib.SYNTHETIC and os.path.exists(opts["data"]):
            # recorded as an absolute path: evaluate, cellcompress, choose, average and --resume run from any folder
            # (a relative one was 'not here' from another folder, or named another folder of that name there)
            opts = {**opts, "data": os.path.abspath(opts["data"])}
        cfg = FitConfig(**opts)
        data_lib.refuse_out_in_data(cfg.out, cfg.data if cfg.data != data_lib.SYNTHETIC else None, f"--data {cfg.data}",
                                    data_lib.RUN_IN_DATA)
        if cfg.arch == "efficientnetv2b0" and cfg.image_size < 32:  # Keras refuses it after the run folder is made
            raise UserError(f"--image-size {cfg.image_size}: EfficientNetV2B0 takes images of 32 px or more "
                            "(--arch tiny takes 16)")
    if cfg.soup > 1 and (cfg.backend != "tf-keras" or cfg.strategy == "multiworker"):
        given = click.get_current_context().get_parameter_source("soup")
        preset = "" if resume or given != click.core.ParameterSource.DEFAULT_MAP else " (from --preset or --config)"
        raise UserError(f"--soup {cfg.soup}{preset} needs --backend tf-keras and no --strategy multiworker: add "
                        "--soup 1, or fit the runs apart (one --seed, several --train-seed) and average them with "
                        "celltrain average")
    # before TensorFlow is imported: a bad --data or an unwritable --out fails in a second, not after minutes
    if cfg.strategy == "multiworker" and cfg.backend == "tf-keras":
        from .multiworker import from_env

        from_env()  # TF_CONFIG missing or malformed: one Error line
    check_writable(cfg.out, "--out", min_free_mb=RUN_FREE_MB * (cfg.soup + 1 if cfg.soup > 1 else 1))
    if cfg.backend == "keras3":  # Keras 3, no TensorFlow needed
        from . import keras3

        keras3.check(cfg)
        keras3.fit(cfg)
        return
    data_lib.check_source(cfg.data)
    from .fit import fit as run_fit

    try:
        if cfg.soup > 1:
            from .soup import fit_soup

            fit_soup(cfg, lambda member, again: run_fit(member, verbose=2 if quiet else 1, resume=again))
        else:
            run_fit(cfg, verbose=2 if quiet else 1, resume=bool(resume))
    except KeyboardInterrupt:  # it said "interrupted" and nothing of what to do next
        raise _Interrupted(_after_interrupt(cfg)) from None
    if cfg.strategy != "multiworker":  # each worker runs this command: the next step is said once, by the user's
        q = shlex.quote(str(cfg.out))
        # adapting the shipped model to a few cells: plain int8, as the few-shot curve was measured (docs/cross-lab.md);
        # quantisation-aware training would train again on those few cells
        qat = "" if _adapts_the_shipped_model(cfg.weights) else " --qat"
        print(f"next: cellcompress {q} --int8{qat} --out {q}/int8, then celledge watch SOURCE --model {q}/int8")


def _adapts_the_shipped_model(weights: str) -> bool:
    """``--weights shipped``, or the packaged model's path (a resumed run's config.json holds it resolved)."""
    from pathlib import Path

    from scopelite.edge.packaged import default_model

    return weights == "shipped" or Path(weights).resolve() == Path(default_model()).resolve()


class _Interrupted(UserError):
    exit_code = 130


def _after_interrupt(cfg: FitConfig) -> str:
    """What an interrupted fit leaves and how to go on from it."""
    from pathlib import Path

    out = Path(cfg.out)
    if cfg.strategy == "multiworker":  # each worker's own copy of --out: the chief's holds the checkpoint
        return f"interrupted; continue with celltrain fit --resume {out} on every worker (docs/gpu-training.md)"
    if cfg.soup > 1:
        done = sorted(p.parent.name for p in (out / "members").glob("*/model.keras"))
        kept = (f"member{'s' if len(done) > 1 else ''} {', '.join(done)} {'are' if len(done) > 1 else 'is'} fitted "
                "and kept" if done else "no member had finished")
        return f"interrupted; {kept}: give the same command again to go on (it resumes the cut member)"
    if (out / "state.json").is_file():
        return f"interrupted; continue from the last finished epoch with: celltrain fit --resume {out}"
    return ("interrupted before the first epoch finished: nothing to resume" + ("" if out.exists() else
            f" (no {out} left behind)") + "; give the same command again to start over")


@main.command()
@click.argument("data", type=NonEmptyPath(exists=True))
@click.option("--out", required=True, type=NonEmptyPath(file_okay=False), help="Folder for audit.json, flagged.png, exclusions.txt.")
@click.option("--image-size", type=click.IntRange(min=16), default=96, help="Size images are compared at.")
@click.option("--outlier-z", type=Number(min=0), default=50.0, show_default=True,
              help="Neighbour-distance z-score above which an image is an outlier.")
@click.option("--clean-copy", type=NonEmptyPath(file_okay=False), default=None,
              help="Write the class folders without the flagged images here.")
@one_line_errors
def audit(data, out, image_size, outlier_z, clean_copy):
    """Audit DATA: duplicates, label conflicts, non-cell images, class balance.

    Writes audit.json, a montage of what it flagged (flagged.png) and
    exclusions.txt, which `celltrain fit --exclude` accepts.

    \b
    Example:
      celltrain audit ../shared/data/pbc96 --out audit/
      celltrain fit --data ../shared/data/pbc96 --exclude audit/exclusions.txt --out runs/pbc
    """
    from pathlib import Path

    from scopelite.edge.outputs import check_writable, entries
    from scopelite.edge.precious import refuse_foreign

    from . import audit as audit_lib
    from . import data as data_lib

    if clean_copy and not Path(data).is_dir():  # a ValueError traceback after --out was written
        raise UserError(f"--clean-copy copies class folders; {data} is not a folder of them")
    data_lib.refuse_out_in_data(out, data, data, "flagged.png would be read as a training image next time; put the "
                                "audit elsewhere (e.g. --out audit/)")
    check_writable(out, "--out")
    # a lab's own exclusions.txt, or audit's edited by hand, was replaced with exit 0
    refuse_foreign(out, audit_lib.foreign_outputs(out), "audit", written="did not write (or edited since)")
    if clean_copy:
        check_writable(clean_copy, "--clean-copy")
        here, src = Path(clean_copy).resolve(), Path(data).resolve()
        if here == src or src in here.parents or here in src.parents:
            where = "DATA itself" if here == src else "inside DATA" if src in here.parents else "around DATA"
            raise UserError(f"--clean-copy {clean_copy} is {where}: give a folder apart from it, e.g. --clean-copy "
                            "data-clean")
        out_here = Path(out).resolve()
        if out_here == here or here in out_here.parents:  # the copy replaced audit's own report
            raise UserError(f"--clean-copy {clean_copy} holds --out {out}: give each its own folder")
        if here.is_dir() and entries(here) and not (here / audit_lib.CLEAN_MARK).exists():
            raise UserError(f"--clean-copy {clean_copy} holds files audit did not copy there: its class folders would "
                            "be mixed with them; "
                            "give a new or empty folder")
    data_lib.check_source(data)
    unreadable: list[str] = []  # listed, not the first one refused: an audit is where a user looks for them
    ds = data_lib.load(data, image_size, progress=True, unreadable=unreadable)
    res = audit_lib.audit(ds, outlier_z=outlier_z, unreadable=unreadable)
    rep = audit_lib.write_outputs(ds, res, out, source=data, clean_copy=clean_copy)
    click.echo(f"{rep['images']} images: {rep['exact_duplicates']} exact duplicates, {rep['near_duplicate_pairs']} "
               f"near-duplicate pairs, {len(rep['label_conflicts'])} label conflicts, {len(rep['outliers'])} outliers; "
               f"imbalance {rep['imbalance_ratio']}x; {rep['excluded']} ids in {os.path.join(out, 'exclusions.txt')}")
    if unreadable:
        shown = ", ".join(unreadable[:5]) + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
        fix = f"train on --clean-copy {clean_copy}, which leaves them out" if clean_copy else \
            "remove or replace them (or audit again with --clean-copy DIR for a copy without them)"
        click.echo(f"Warning: {len(unreadable)} files cannot be decoded ({shown}; all in {out}/audit.json): "
                   f"celltrain fit refuses a folder holding them; {fix}", err=True)


@main.command()
@click.argument("run", type=NonEmptyPath(exists=True))
@click.option("--data", default=None, type=NonEmptyPath(), help="Dataset path if it moved since training (same images).")
@click.option("--seed", type=SEED, default=0, help="Seed of the corrupted copy.")
@click.option("--tta", type=click.Choice(["1", "2", "4", "8"]), default="1",
              help="Score each image as the mean over this many flipped/rotated views (as celledge --tta); "
                   "writes evaluation-tta<N>.json.")
@one_line_errors
def evaluate(run, data, seed, tta):
    """Evaluate RUN (a run folder or its model.keras) on its held-out test split.

    Accuracy, macro precision/recall/F1, per-class table, calibration error and a
    confusion matrix, on the clean split and on a corrupted copy of it (one of 16
    field corruptions per image, severity 1-5). Writes evaluation.json and
    confusion.png into the run folder.

    
    Example:
      celltrain evaluate runs/pbc
    """
    from pathlib import Path

    from .evaluate import evaluate as run_eval

    path = Path(run)
    run_eval(model_file(path), data=data, seed=seed, tta=int(tta))


@main.command()
@click.argument("models", nargs=-1, required=True, type=NonEmptyPath(exists=True))
@click.option("--out", required=True, type=NonEmptyPath(file_okay=False), help="Run folder to create.")
@click.option("--data", default=None, type=NonEmptyPath(), help="Dataset path if it moved since training (same images).")
@one_line_errors
def average(models, out, data):
    """Average the weights of several runs into one model (a "model soup").

    MODELS are run folders or .keras files of one lineage: the same architecture,
    classes, input size and saved split, e.g. a run and the runs continued from it
    with --weights. The average often beats each of them on clean and corrupted
    images and costs nothing at inference. BatchNorm statistics are re-estimated
    on training images when they differ between the models. The result is a run
    folder that `celltrain evaluate` and `cellcompress` take.

    \b
    Example:
      celltrain average runs/pbc-v2 runs/pbc-v3 runs/pbc-v4 --out runs/pbc-soup
      celltrain evaluate runs/pbc-soup
    """
    from scopelite.edge.outputs import check_writable, holdings

    from .soup import soup

    held = holdings(out)
    if held:  # its model, sidecar, split and config were mixed into another run's or a user's folder
        raise UserError(f"--out {out} is not empty ({held}): give a new folder for the average")
    check_writable(out, "--out", min_free_mb=RUN_FREE_MB)  # before the models load and average (minutes), not after
    soup(models, out, data=data)  # it refuses an --out inside the runs' data (--data, or the one they recorded)


def _parse_candidates(ctx, param, value):
    """NAME=RUN or RUN (named after its folder) -> {name: path}; names must differ."""
    from pathlib import Path

    out = {}
    for item in value:
        name, sep, path = item.partition("=")
        if not sep or Path(item).exists():  # runs/lr=1e-4 is a run folder, not NAME=RUN
            p = Path(item)
            name, path = (p.name if p.is_dir() else p.parent.name) or item, item
        elif not name.strip():  # "=runs/a": the scores were filed under an empty name
            raise click.BadParameter(f"{item}: the NAME before '=' is empty; give NAME=RUN or RUN")
        if not Path(path).exists():
            raise click.BadParameter(f"{path}: no such run folder or model.keras")
        if name in out:
            raise click.BadParameter(f"two candidates are named {name!r}; name them: NAME=RUN")
        same = next((n for n, p in out.items() if _model_of(p) == _model_of(path)), None)
        if same is not None:  # scored twice under two names, without a word (their ensemble is the model itself)
            warn(f"{name} ({path}) is the same model as {same}: it is scored twice")
        out[name] = path
    return out


def _model_of(path: str):
    return model_file(path).resolve()


@main.command()
@click.argument("candidates", nargs=-1, required=True, callback=_parse_candidates, metavar="[NAME=]RUN...")
@click.option("--out", required=True, type=NonEmptyPath(dir_okay=False), help="JSON file of every score.")
@click.option("--tta", default="1,8", help="Comma-separated numbers of TTA views to score each candidate with "
                                            "(1, 2, 4 or 8).")
@click.option("--ensembles", is_flag=True, help="Also score the mean prediction of every combination of "
                                                "candidates (a diagnostic: how far apart their mistakes are).")
@click.option("--data", default=None, type=NonEmptyPath(), help="Dataset path if it moved since training (same images).")
@one_line_errors
def choose(candidates, out, tta, ensembles, data):
    """Choose among RUNs by VALIDATION score (clean + corrupted val); test beside it.

    RUNs are run folders or model.keras files of one lineage (same data, same
    --seed, so the same saved split). Each is scored on the clean val split and a
    corrupted copy of it, and on the test split clean and corrupted, over the --tta
    views. Choose by val_score: the test figures are for the record (chosen on
    ~1,250 test images, a model is chosen for its noise).

    \b
    Example:
      celltrain choose runs/pbc-v12 runs/pbc-v14 soup=runs/soup-v12v14 --tta 1 --out selection.json
    """
    from scopelite.edge.outputs import check_writable
    from scopelite.edge.precious import not_precious, only_replaces

    try:
        views = tuple(int(v) for v in tta.split(","))
    except ValueError:
        views = ()
    if not views or any(v not in (1, 2, 4, 8) for v in views):
        raise click.BadParameter(f"{tta!r}: give comma-separated view counts from 1, 2, 4, 8", param_hint="--tta")
    check_writable(out, "--out", is_dir=False, replaced=True)  # a pipe or /dev/full: said after all the scoring
    not_precious(out, "--out", "the scores (JSON)")
    from .choose import choose as run_choose
    from .choose import is_choice

    only_replaces(out, "--out", "the scores of celltrain choose", is_choice)  # a config, a report.json

    run_choose(candidates, out, views, ensembles, data, log=click.echo)


@main.command()
@click.argument("run", type=NonEmptyPath(exists=True))
@click.argument("images", nargs=-1, required=True, type=NonEmptyPath(exists=True))
@click.option("--out", default=None, type=NonEmptyPath(file_okay=False), help="Folder for the PNGs (default: RUN/explain).")
@one_line_errors
def explain(run, images, out):
    """Grad-CAM overlays: which pixels made RUN's model choose its class.

    \b
    Example:
      celltrain explain runs/pbc cell1.jpg cells/
    """
    import json
    from pathlib import Path

    from scopelite.edge.outputs import check_writable
    from scopelite.edge.sources import holds_class_folders, images_given

    from .data import refuse_out_in_data
    from .explain import explain as run_explain

    path = Path(run)
    model = model_file(path)
    out = out or model.parent / "explain"
    for given in images:  # a rerun on that folder would read last time's overlays as cells
        refuse_out_in_data(out, given, f"IMAGES folder {given}", "the overlays (PNG images) would be read as cells "
                           "next time; give a folder outside it, e.g. --out explain/")
        home = Path(given).resolve().parent  # a class folder of a dataset: an --out beside it became a class
        if Path(given).is_dir() and Path(out).resolve().parent == home and holds_class_folders(home):
            raise UserError(f"--out {out} would be a folder beside {given} in {home}, a dataset of class folders: "
                            "the overlays would be read as a class of their own next time; give a folder outside "
                            "it, e.g. --out explain/")
    check_writable(out, "--out")  # before the model loads (seconds), not after
    recs = run_explain(model, images_given(images, warn), out)
    for rec in recs:
        click.echo(json.dumps(rec))
    bad = [r for r in recs if "error" in r]
    if bad:
        raise UserError(f"{len(bad)} of {len(recs)} images could not be read ({bad[0]['error']})"
                        + ("; the others' overlays are written" if len(bad) < len(recs) else ""))


@main.command()
@click.argument("data", type=NonEmptyPath(exists=True, file_okay=False))
@click.argument("split", type=NonEmptyPath(exists=True, dir_okay=False))
@click.argument("out", type=NonEmptyPath(dir_okay=False))
@one_line_errors
def pack(data, split, out):
    """Pack a run's train and val images into OUT (.npz) for a GPU machine.

    DATA is the class-folder dataset, SPLIT a run's split.json (any celltrain run on
    DATA with the same --seed writes the same one). The image files go in unchanged;
    the test images stay here. Train on it with celltrain fit --backend keras3.

    \b
    Example:
      celltrain pack ../shared/data/pbc96 runs/pbc/split.json .gpu/pbc96.npz
    """
    import json

    from pathlib import Path

    from scopelite.edge.outputs import check_writable
    from scopelite.edge.precious import not_precious, only_replaces

    from .pack import is_pack
    from .pack import pack as run_pack

    if not out.lower().endswith(".npz"):
        raise UserError(f"OUT {out}: give a file name ending in .npz (the pack is a NumPy archive)")
    here = Path(out).resolve()
    if here == Path(split).resolve() or Path(data).resolve() in here.parents:
        raise UserError(f"OUT {out} is {'SPLIT' if here == Path(split).resolve() else 'inside DATA'}: "
                        "give another file, e.g. .gpu/pbc96.npz")
    check_writable(out, "OUT", is_dir=False)
    not_precious(out, "OUT", "the pack")
    only_replaces(out, "OUT", "a pack", is_pack)  # a dataset .npz
    click.echo(json.dumps(run_pack(data, split, out)))


SYNTH_MADE = ("crops", "fields", "manifest.json", "microscope.avi", "microscope_truth.json")  # what synth writes


def _empty_or_synthetic(out: str) -> None:
    """synth writes crops/, fields/ and a manifest saying the data is synthetic: into a folder of real data, it
    mixed its crops in and marked the whole folder synthetic. Only a new or empty folder, or one synth made."""
    import json
    from pathlib import Path

    from scopelite.edge.outputs import entries

    p = Path(out)
    if not p.is_dir() or not entries(p):
        return
    try:
        made = json.loads((p / "manifest.json").read_text()).get("synthetic") is True
    except (OSError, ValueError, AttributeError):
        made = False
    if not made:
        shown = ", ".join(sorted(x.name for x in p.iterdir())[:3])
        raise UserError(f"OUT {out} is not empty ({shown}...) and was not made by celltrain synth: its crops would be "
                        "mixed into what is there; give a new or empty folder")


@main.command(name="import")
@click.argument("weights", type=NonEmptyPath(exists=True, file_okay=False))
@click.option("--split", required=True, type=NonEmptyPath(exists=True, dir_okay=False),
              help="The split.json the pack was made from.")
@click.option("--data", required=True, type=NonEmptyPath(exists=True),
              help="The dataset the pack was made from (the test images are read here).")
@click.option("--out", required=True, type=NonEmptyPath(file_okay=False), help="Run folder to create.")
@click.option("--tag", type=click.Choice(["final", "raw"]), default="final",
              help="final: the weights at the end (the EMA weights with --ema); raw: the last epoch's, no EMA.")
@one_line_errors
def import_(weights, split, data, out, tag):
    """Make a run folder from WEIGHTS, the --out of celltrain fit --backend keras3.

    Writes model.keras + model.json, split.json and config.json: a run that celltrain
    evaluate, celltrain fit --weights, cellcompress and celledge take. Checks that the
    model gives the trainer's own validation predictions and records it in model.json.

    \b
    Example:
      celltrain import g1 --split runs/pbc/split.json --data ../shared/data/pbc96 --out runs/gpu-v1
    """
    import json

    from scopelite.edge.outputs import check_writable

    check_writable(out, "--out", min_free_mb=RUN_FREE_MB)
    from .keras3_import import import_weights

    result = import_weights(weights, split, data, out, tag)
    if "trainer_agreement" in result:
        warn(f"{result['trainer_agreement']}: whether the weights, --split and --data belong together is unknown")
    click.echo(json.dumps(result))


@main.command()
@click.argument("out", type=NonEmptyPath(file_okay=False))
@click.option("--per-class", type=click.IntRange(min=1), default=100, help="Crops per class.")
@click.option("--image-size", type=click.IntRange(min=16), default=96)
@click.option("--fields", type=click.IntRange(min=0), default=4, help="Whole 640x480 fields with known cells.")
@click.option("--video/--no-video", default=True, help="Also write microscope.avi (+ per-frame truth).")
@click.option("--seed", type=SEED, default=0)
@one_line_errors
def synth(out, per_class, image_size, fields, video, seed):
    """Generate synthetic smears: crops (OUT/crops/<class>/), fields and a microscope video.

    \b
    Example:
      celltrain synth demo_data/ --per-class 50
    """
    import shlex
    from pathlib import Path

    from scopelite.edge.outputs import check_writable, folder_in_place

    from .synth import write_dataset

    check_writable(out, "OUT")
    _empty_or_synthetic(out)
    # Ctrl-C half-way left crops without the manifest: they read as real data; run again, what it made is replaced
    with folder_in_place(out, owned=lambda e: e.name in SYNTH_MADE) as tmp:
        m = write_dataset(tmp, per_class, image_size, seed, fields, video)
    click.echo(f"wrote {sum(m['crops'].values())} crops, {m['fields']} fields"
               + (f", video of {m['video']['frames']} frames" if video else "") + f" to {out} (synthetic)")
    click.echo(f"train on the crops: celltrain fit --data {shlex.quote(str(Path(out) / 'crops'))} --out runs/synth")


if __name__ == "__main__":  # pragma: no cover
    main()
