"""The resolved configuration of a training run (saved beside its outputs as config.json)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from scopelite.edge.bundle import VIEWS

from .network import ARCHS

OPTIMIZERS = ("adamw", "adam", "lion")
SCHEDULES = ("cosine", "exponential")
BALANCE = ("weights", "oversample", "none")
STRATEGIES = ("none", "mirrored", "multiworker")
# tf-keras: celltrain fit on TensorFlow (what QAT needs); keras3: Keras 3 on any backend, e.g. JAX on a GPU
# machine without TensorFlow (scopelite.train.keras3), reading a pack of the train and val images
BACKENDS = ("tf-keras", "keras3")
# --preset NAME: option defaults for a job; the user's own flags (and --config) still override them.
PRESETS = {
    # Adapt the shipped model to a new lab from a few labelled cells per class. Chosen on
    # DeepBioNet's adapt part against two alternatives (docs/cross-lab.md, few-shot section):
    # no choice of epoch on a tiny validation split (the mean of the last 5); 30 epochs, not 15, by a second
    # rule on fresh draws split by cell (benchmarks/results/few-shot-recipe14-decision.json); the whole network
    # at lr 1e-4, not its top 30 % at 2e-4, by a third (few-shot-whole-network-decision.json, session 15); the weight
    # average of 3 fits of 60 epochs, not one of 30, by a fourth (few-shot-soup60-decision.json, session 19); run
    # over 8 views by default, by a fifth (few-shot-tta21b-decision.json, session 21).
    "few-shot": {"views": 8, "weights": "shipped", "head_epochs": 0, "fine_tune_fraction": 1.0, "learning_rate": 1e-4,
                 "average_last": 5, "epochs": 60, "soup": 3, "warmup_epochs": 0.0, "augment": "strong",
                 "strength": 0.5, "batch_size": 16},
}
AUGMENTS = ("none", "flips", "strong")
SOUP_SEED_STEP = 100  # --soup K: member i trains with the training seed + 100 i (one split)
# augmentation ops that --aug NAME=STRENGTH can set, in the order they are applied (scopelite.train.augment.OPS)
AUG_OPS = ("rotate", "zoom", "bgswap", "randaugment", "colour", "hue", "grey", "stain", "hed", "domain", "debris", "blur",
           "noise", "shot", "jpeg", "blots")


def check_aug(name: str, strength) -> float | None:
    """One augmentation override, checked: the strength as a float (None: use --strength).

    Raises ValueError with a message for the user: an unknown op, a strength that is
    not a number, or one outside 0..1. The CLI and the library both call this.
    """
    if name not in AUG_OPS:
        raise ValueError(f"unknown augmentation {name!r}; choose from {', '.join(AUG_OPS)}")
    if strength is None or strength == "":
        return None
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={strength!r}: the strength must be a number from 0 to 1") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={strength}: the strength must be from 0 to 1")
    return value


@dataclass(frozen=True)
class FitConfig:
    out: str
    data: str | None = None  # None: generated synthetic smears
    exclude: str | None = None  # a file of image ids to leave out (the exclusions.txt celltrain audit writes)
    arch: str = "efficientnetv2b0"
    weights: str = "none"
    image_size: int = 96
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"
    learning_rate: float = 2e-3
    schedule: str = "cosine"
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.05
    dropout: float = 0.2
    balance: str = "weights"
    augment: str = "flips"  # "none" | "flips" | "strong"
    strength: float = 0.7
    aug: dict | None = None  # per-op strengths over the policy's, e.g. {"hed": 0.5, "jpeg": 0}; None: --strength
    mixup: float = 0.0  # probability of MixUp/CutMix per batch
    progressive: bool = False  # small images + weak augmentation early, full size + strong late
    fine_tune_fraction: float = 0.3  # with pretrained weights: share of the backbone unfrozen in phase 2
    head_epochs: int = 2  # with pretrained weights: epochs of phase 1 (frozen backbone)
    patience: int = 0  # early stopping on val accuracy; 0: off (best weights are kept anyway)
    average_last: int = 0  # SWA: ship the average of the last N epochs' weights instead of the best epoch
    soup: int = 1  # fit this many times (training seeds + 100 i, one split) and ship their weights' average
    views: int = 1  # flipped/rotated views celledge averages for this model by default (its sidecar's ``views``)
    strategy: str = "none"
    worker_timeout: float = 300.0  # --strategy multiworker: seconds to wait for every worker to join
    mixed_precision: bool = False  # float16 on tf-keras (GPU only), bfloat16 on keras3
    backend: str = "tf-keras"  # see BACKENDS
    ema: float = 0.0  # keras3: momentum of an exponential moving average of the weights; 0: off
    seed: int = 0  # the train/val/test split (and training, unless train_seed is set)
    train_seed: int | None = None  # initialisation, shuffling and augmentation; None: seed
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    synthetic_per_class: int = 300

    @property
    def training_seed(self) -> int:
        """The seed of everything random in training except the split."""
        return self.seed if self.train_seed is None else self.train_seed

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "FitConfig":
        """A saved config (config.json, a sidecar's copy); ValueError saying which value is wrong (a hand-edited
        file: ``"epochs": "ten"`` was a traceback mid-way, ``"arch": "resnet"`` one after the training)."""
        problem = config_problem(d)
        if problem:
            raise ValueError(problem)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


_CHOICES = {"arch": ARCHS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "balance": BALANCE, "augment": AUGMENTS,
            "strategy": STRATEGIES, "backend": BACKENDS, "views": VIEWS}
# (lowest, highest) of the numbers; as the options of celltrain fit, but a saved seed may be what numpy takes (a
# soup member's is its --train-seed + 100 i; runs before session 30 took seeds up to 2**32 - 1)
# The one list of every numeric option's range: config_problem checks a run's saved config by it, and celltrain
# fit's flags (and so --config files) are typed from it with NEW_RUN_MAX and OPEN's upper ends (cli._ranged): two
# lists had disagreed. OPEN: the ends a value may not equal (lr 0; for a new run, ema 1 would never move the average).
RANGES = {"image_size": (16, math.inf), "epochs": (1, math.inf), "batch_size": (1, math.inf), "soup": (1, math.inf),
          "head_epochs": (0, math.inf), "patience": (0, math.inf), "average_last": (0, math.inf),
          "seed": (0, 2**32 - 1), "train_seed": (0, 2**32 - 1), "synthetic_per_class": (3, math.inf),
          "warmup_epochs": (0, math.inf), "weight_decay": (0, math.inf), "worker_timeout": (1, math.inf),
          "ema": (0, 1), "strength": (0, 1), "mixup": (0, 1), "fine_tune_fraction": (0, 1), "dropout": (0, 1),
          "val_fraction": (0, 1), "test_fraction": (0, 1), "label_smoothing": (0, 0.5),
          "learning_rate": (0, math.inf)}
OPEN = {"learning_rate": "min", "ema": "max"}
# What a new run may be given (flags, --config files) beyond RANGES: a saved config (an older run's, a keras3 run's)
# is judged by RANGES alone, so a run made before a limit came is not called damaged. batch_size: 8192 crops of 96 px
# are 0.9 GB of input alone; 10 million ran out of memory in TensorFlow (a traceback). ema 1 never moves the average.
NEW_RUN_MAX = {"batch_size": 8192}


def bounds(name: str, new_run: bool = False) -> tuple[float, float, bool, bool]:
    """Option ``name``'s (lowest, highest, lowest excluded, highest excluded), from RANGES and OPEN. ``new_run``: the
    stricter bounds of a flag or config file (NEW_RUN_MAX, OPEN's upper ends); a saved config is judged without them."""
    lo, hi = RANGES[name]
    if new_run:
        hi = min(hi, NEW_RUN_MAX.get(name, hi))
    return lo, hi, OPEN.get(name) == "min", OPEN.get(name) == "max" and new_run


def out_of_range(name: str, v, new_run: bool = False) -> str | None:
    """None when ``v`` is within option ``name``'s ``bounds`` (or it has none), else what it should be ("more than
    0")."""
    if name not in RANGES:
        return None
    lo, hi, lo_open, hi_open = bounds(name, new_run)
    if (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi):
        return None
    if hi == math.inf:
        return f"more than {lo}" if lo_open else f"{lo} or more"
    return f"from {lo} to " + (f"under {hi}" if hi_open else f"{hi}")


_SAID = {"str": "a name", "int": "a whole number", "float": "a number", "bool": "true or false", "dict": "a mapping"}
_KINDS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,)}


def config_problem(d) -> str | None:
    """What is wrong with a saved training config (a dict as ``FitConfig.to_json`` writes it), or None. Keys it
    does not know are left alone (an older or newer scopelite's); a key it knows must hold what the option takes."""
    if not isinstance(d, dict):
        return "it is not a mapping of option: value"
    for f in fields(FitConfig):
        if f.name not in d:
            continue
        v, kind = d[f.name], str(f.type).split("|")[0].strip()
        if v is None:
            if "None" in str(f.type):
                continue
            return f"{f.name} is null"
        if isinstance(v, bool) != (kind == "bool") or not isinstance(v, _KINDS[kind]) or (
                kind == "float" and (math.isnan(v) or math.isinf(v) and f.name != "worker_timeout")):
            return f"{f.name}: {v!r} is not {_SAID[kind]}"
        if f.name in _CHOICES and v not in _CHOICES[f.name]:
            return f"{f.name}: {v!r} is not one of {', '.join(map(str, _CHOICES[f.name]))}"
        should = out_of_range(f.name, v)
        if should:
            return f"{f.name}: {v!r} is not {should}"
        if f.name == "aug":
            for op, strength in v.items():
                try:
                    check_aug(op, strength)
                except ValueError as e:
                    return f"aug: {e}"
    if d.get("arch") == "efficientnetv2b0" and d.get("image_size", 32) < 32:  # Keras: 'at least 32x32', a traceback
        return f"efficientnetv2b0 cannot take {d['image_size']} px (32 or more)"
    return None
