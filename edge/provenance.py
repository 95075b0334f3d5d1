"""Where a model came from: the typed ``provenance`` half of a bundle's sidecar.

``edge/bundle.py`` owns the sidecar and uses these types for its ``provenance`` field; the
trainer and the compressor fill them in, and every reader (cellcompress, bench, the Edge TPU
fallback) reads attributes, never dictionary keys that another package happened to write.

A sidecar travels with its model to other machines, so nothing in it may be an absolute
path of the machine that built it: files are named relative to the bundle's folder (and
identified by their sha256), and :func:`portable` turns any absolute path in free text or
free-form fields (a training config, a data description) into its last component.

Pure Python: importable on a device with no TensorFlow.
"""
from __future__ import annotations

import datetime as _dt
import ntpath
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import UserError

METHODS = ("ptq", "qat", "automatic_qat", "float16", "dynamic_range")
SOURCE_FORMATS = ("keras", "tflite")


class ProvenanceError(UserError, ValueError):
    """One field of the provenance is missing, of the wrong type, or names an absolute path."""


# --------------------------------------------------------------------------- paths

# An absolute POSIX path inside text: a "/" that starts a token, then at least one more "/".
# "n/a", "1/5", "TPU/CPU", URLs ("https://host/x") do not match (a word character, ":" or "/"
# stands before their "/").
_POSIX_IN_TEXT = re.compile(r"(?<![\w.~:/\\-])/[^\s/\"'<>|,;()]+(?:/[^\s/\"'<>|,;()]*)+")
_WINDOWS_IN_TEXT = re.compile(r"(?<![\w])[A-Za-z]:\\[^\s\"'<>|,;()]*")
_HOME_IN_TEXT = re.compile(r"(?<![\w/])~[/\\][^\s\"'<>|,;()]*")


def is_absolute(s: str) -> bool:
    """True when ``s`` is, or holds, an absolute path (POSIX, Windows or ``~/``)."""
    return (os.path.isabs(s) or ntpath.isabs(s)
            or any(p.search(s) for p in (_POSIX_IN_TEXT, _WINDOWS_IN_TEXT, _HOME_IN_TEXT)))


def _last_part(path: str) -> str:
    parts = [p for p in re.split(r"[/\\]+", path) if p and p != "~"]
    return parts[-1] if parts else "."


def portable(value: Any) -> Any:
    """``value`` with every absolute path in it (whole strings, or inside text) replaced by its last
    component: ``/work/runs/pbc/model.keras`` -> ``model.keras``; ``class folders at /data/pbc96``
    -> ``class folders at pbc96``. Dicts, lists and tuples are walked; relative paths are kept."""
    if isinstance(value, str):
        if os.path.isabs(value) or ntpath.isabs(value) or re.match(r"~[/\\]", value):
            return _last_part(value)
        for p in (_POSIX_IN_TEXT, _WINDOWS_IN_TEXT, _HOME_IN_TEXT):
            value = p.sub(lambda m: _last_part(m.group(0)), value)
        return value
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable(v) for v in value)
    return value


def absolute_paths(value: Any, where: str) -> list[str]:
    """``where.key[i]...`` of every string in ``value`` that is or holds an absolute path."""
    if isinstance(value, str):
        return [where] if is_absolute(value) else []
    if isinstance(value, dict):
        return [w for k, v in value.items() for w in absolute_paths(v, f"{where}.{k}")]
    if isinstance(value, (list, tuple)):
        return [w for i, v in enumerate(value) for w in absolute_paths(v, f"{where}[{i}]")]
    return []


def now() -> str:
    """The current UTC time as the sidecar records it."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- field readers


def _get(d: dict, key: str, typ, where: str, required: bool = True, default=None):
    """``d[key]`` checked against ``typ`` (None allowed when not ``required``)."""
    if key not in d or d[key] is None:
        if required:
            raise ProvenanceError(f"{where}: missing field {key!r}")
        return default
    v = d[key]
    if (typ is int or int in (typ if isinstance(typ, tuple) else ())) and isinstance(v, bool) or not isinstance(v, typ):
        names = "/".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
        raise ProvenanceError(f"{where}: field {key!r} must be {names}, got {v!r}")
    return v


def _obj(d: Any, where: str) -> dict:
    if not isinstance(d, dict):
        raise ProvenanceError(f"{where} must be a JSON object, got {d!r}")
    return d


def _nested(d: dict, key: str, record, where: str):
    """``d[key]`` read by ``record.from_dict`` (a nested record), or None when absent or null."""
    v = d.get(key)
    return None if v is None else record.from_dict(v, f"{where}.{key}")


def _name_or_none(d: dict, key: str, where: str) -> str | None:
    """``d[key]``: a file name (text, no directories), or None when absent or null."""
    return None if d.get(key) is None else _file_name(_get(d, key, str, where), key, where)


def _file_name(v: str, key: str, where: str) -> str:
    """A file named relative to the bundle's folder: a bare name, never a directory path."""
    if not v or "/" in v or "\\" in v or v in (".", "..") or is_absolute(v):
        raise ProvenanceError(f"{where}: {key} must be a file name beside the bundle (no folders, no absolute "
                              f"path of the machine that built it), got {v!r}")
    return v


def _sha256(v: str | None, key: str, where: str) -> str | None:
    if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
        raise ProvenanceError(f"{where}: {key} must be 64 lower-case hex digits (sha256), got {v!r}")
    return v


def _counts(v: Any, key: str, where: str) -> dict[str, int]:
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool)
                                          for k, n in v.items()):
        raise ProvenanceError(f"{where}: {key} must map names to whole numbers, got {v!r}")
    return dict(v)


def _as_dict(obj) -> dict[str, Any]:
    """A typed part as JSON: nested parts by their own to_dict, tuples as lists."""
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = v.to_dict() if hasattr(v, "to_dict") else list(v) if isinstance(v, tuple) else v
    return out


# --------------------------------------------------------------------------- the typed parts


@dataclass(frozen=True)
class FileRef:
    """A file beside the bundle, by name, and its sha256 (None: not recorded)."""

    file: str
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "FileRef":
        d = _obj(d, where)
        return cls(_file_name(_get(d, "file", str, where), "file", where),
                   _sha256(_get(d, "sha256", str, where, required=False), "sha256", where))


@dataclass(frozen=True)
class SourceModel:
    """The model this one was made from: its file name (looked for beside the bundle and in the folder
    above, never at a path of the build machine), its sha256 and its format."""

    file: str
    sha256: str
    format: str

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "SourceModel":
        d = _obj(d, where)
        fmt = _get(d, "format", str, where)
        if fmt not in SOURCE_FORMATS:
            raise ProvenanceError(f"{where}: format {fmt!r} not one of {SOURCE_FORMATS}")
        return cls(_file_name(_get(d, "file", str, where), "file", where),
                   _sha256(_get(d, "sha256", str, where), "sha256", where), fmt)


@dataclass(frozen=True)
class Machine:
    """The machine a step ran on (``scopelite.edge.sysinfo.machine()``)."""

    cpu: str
    cores: int | None = None
    arch: str | None = None
    python: str | None = None
    host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "machine") -> "Machine":
        d = _obj(d, where)
        return cls(cpu=_get(d, "cpu", str, where), cores=_get(d, "cores", int, where, required=False),
                   arch=_get(d, "arch", str, where, required=False),
                   python=_get(d, "python", str, where, required=False),
                   host=_get(d, "host", str, where, required=False))


@dataclass(frozen=True)
class TrainingData:
    """What the model was trained on, in words, and how many images per class."""

    description: str
    synthetic: bool
    counts: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "TrainingData":
        d = _obj(d, where)
        counts = d.get("counts")
        return cls(_get(d, "description", str, where), _get(d, "synthetic", bool, where),
                   None if counts is None else _counts(counts, "counts", where))


@dataclass(frozen=True)
class TrainingRun:
    """The training run that made the (float) model.

    ``config`` is the run's resolved training config (``celltrain fit``'s, with paths made
    portable); ``split`` the saved train/val/test split beside the Keras model; ``seed`` the
    split seed; ``epochs`` the epochs trained; ``extra`` what a trainer adds (replicas,
    resumption, weight averaging, which trainer).
    """

    run: str
    config: dict[str, Any]
    data: TrainingData
    split: FileRef | None = None
    seed: int | None = None
    epochs: int | None = None
    machine: Machine | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "TrainingRun":
        d = _obj(d, where)
        return cls(run=_get(d, "run", str, where), config=_get(d, "config", dict, where),
                   data=TrainingData.from_dict(_get(d, "data", dict, where), f"{where}.data"),
                   split=_nested(d, "split", FileRef, where),
                   seed=_get(d, "seed", int, where, required=False),
                   epochs=_get(d, "epochs", int, where, required=False),
                   machine=_nested(d, "machine", Machine, where),
                   extra=_get(d, "extra", dict, where, required=False, default={}))


@dataclass(frozen=True)
class Gate:
    """The accuracy gate an int8 model passed or failed (drops in accuracy points vs the float model)."""

    passed: bool
    max_drop_clean_pt: float
    max_drop_corrupted_pt: float
    drop_clean_pt: float
    drop_corrupted_pt: float
    failures: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what passed only because the test split is too small to measure it

    def to_dict(self) -> dict[str, Any]:
        return {"max_drop_clean_pt": self.max_drop_clean_pt, "max_drop_corrupted_pt": self.max_drop_corrupted_pt,
                "drop_clean_pt": self.drop_clean_pt, "drop_corrupted_pt": self.drop_corrupted_pt,
                "passed": self.passed, "failures": list(self.failures),
                **({"notes": list(self.notes)} if self.notes else {})}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Gate":
        d = _obj(d, where)
        num = (int, float)
        texts = {}
        for key in ("failures", "notes"):
            texts[key] = _get(d, key, list, where, required=False, default=[])
            if not all(isinstance(x, str) for x in texts[key]):
                raise ProvenanceError(f"{where}: {key} must be a list of texts")
        return cls(_get(d, "passed", bool, where), _get(d, "max_drop_clean_pt", num, where),
                   _get(d, "max_drop_corrupted_pt", num, where), _get(d, "drop_clean_pt", num, where),
                   _get(d, "drop_corrupted_pt", num, where), tuple(texts["failures"]), tuple(texts["notes"]))


@dataclass(frozen=True)
class Compression:
    """How a TFLite model was made from its source.

    ``variant``: the cellcompress output (int8, qat_int8, qat_calibrated_int8, float16,
    dynamic_range); ``method``: ptq (post-training quantisation), qat (asked for), automatic_qat
    (run because post-training int8 failed the gate), float16, dynamic_range;
    ``representative``: images the activation ranges were calibrated on (None: no calibration);
    ``gate``: the accuracy gate (int8 only); ``approved_from``: the variant file this approved
    copy was made from; ``edgetpu_compiler``: the compiler's parsed log (Edge TPU models).
    """

    variant: str
    method: str
    quantization: str
    config: dict[str, Any]
    representative: int | None = None
    gate: Gate | None = None
    op_counts: dict[str, int] = field(default_factory=dict)
    size_bytes: int | None = None
    machine: Machine | None = None
    approved_from: str | None = None
    edgetpu_compiler: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Compression":
        d = _obj(d, where)
        method = _get(d, "method", str, where)
        if method not in METHODS:
            raise ProvenanceError(f"{where}: method {method!r} not one of {METHODS}")
        rep = _get(d, "representative", int, where, required=False)
        if rep is not None and rep < 1:
            raise ProvenanceError(f"{where}: representative must be a positive count, got {rep}")
        return cls(variant=_get(d, "variant", str, where), method=method,
                   quantization=_get(d, "quantization", str, where), config=_get(d, "config", dict, where),
                   representative=rep,
                   gate=_nested(d, "gate", Gate, where),
                   op_counts=_counts(d.get("op_counts") or {}, "op_counts", where),
                   size_bytes=_get(d, "size_bytes", int, where, required=False),
                   machine=_nested(d, "machine", Machine, where),
                   approved_from=_name_or_none(d, "approved_from", where),
                   edgetpu_compiler=_get(d, "edgetpu_compiler", dict, where, required=False),
                   extra=_get(d, "extra", dict, where, required=False, default={}))


def method_of(variant: str, requested_qat: bool = True) -> str:
    """The compression method of a cellcompress variant."""
    if variant.startswith("qat"):
        return "qat" if requested_qat else "automatic_qat"
    return {"int8": "ptq", "float16": "float16", "dynamic_range": "dynamic_range"}.get(variant, "ptq")


@dataclass(frozen=True)
class Provenance:
    """The ``provenance`` of a sidecar.

    ``training``: the run that trained the (float) model, carried on to every model made from
    it; ``source``: the model this file was made from (None for a trained model);
    ``compression``: how (TFLite models); ``cpu_model``: for an Edge TPU model, the CPU model
    beside it (``--fallback cpu``); ``copied_from``: the file this bundle is a copy of;
    ``notes``: anything added later, in words (e.g. how a field was measured after training).
    """

    created: str | None = None
    tools: dict[str, str] = field(default_factory=dict)
    source: SourceModel | None = None
    training: TrainingRun | None = None
    compression: Compression | None = None
    cpu_model: str | None = None
    copied_from: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "provenance") -> "Provenance":
        d = _obj({} if d is None else d, where)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ProvenanceError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))}); "
                                  "free-form additions go under notes")
        tools = _get(d, "tools", dict, where, required=False, default={})
        if not all(isinstance(v, str) for v in tools.values()):
            raise ProvenanceError(f"{where}: tools must map package names to version texts")
        return cls(created=_get(d, "created", str, where, required=False), tools=dict(tools),
                   source=_nested(d, "source", SourceModel, where),
                   training=_nested(d, "training", TrainingRun, where),
                   compression=_nested(d, "compression", Compression, where),
                   cpu_model=_name_or_none(d, "cpu_model", where),
                   copied_from=_name_or_none(d, "copied_from", where),
                   notes=_get(d, "notes", dict, where, required=False, default={}))
