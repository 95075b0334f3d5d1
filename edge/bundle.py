"""The model bundle contract: a model file plus a JSON sidecar beside it.

Every artifact scopelite writes (``model.keras``, ``model.tflite``,
``model_edgetpu.tflite``) has a sidecar with the same stem and a ``.json``
suffix.  This module is the only place that knows the sidecar's schema; the
trainer, the compressor and the device all read and write through it, and
:func:`build_sidecar` is the only place a sidecar is made (its typed
``provenance`` is in ``provenance.py``; schema version 1 is read by ``bundle_v1.py``).
A sidecar names files relative to its bundle, never by an absolute path of the
machine that built it.

The device prepares pixels from the sidecar alone: it only crops and resizes
RGB uint8 images; any normalisation lives inside the model graph.

Pure Python + hashlib: importable on a device with no TensorFlow.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import bundle_v1
from .errors import UserError
from .outputs import fsync_dir
from .provenance import (Compression, FileRef, Gate, Machine, Provenance, ProvenanceError, SourceModel,  # noqa: F401
                         TrainingData, TrainingRun, absolute_paths, now, portable)  # the record types, re-exported

# The typed parts of ``Sidecar.provenance`` (defined in provenance.py, part of this contract).

SCHEMA = "scopelite.bundle"
_LABEL = re.compile(r"[^./\\\x00-\x1f][^/\\\x00-\x1f]{0,254}")  # a class name, a folder's name: no path in it
SCHEMA_VERSION = 2
READS = (1, 2)  # schema versions this scopelite reads (1 is upgraded on read)

CLASS_NAMES = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature_granulocyte",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)

FORMATS = ("keras", "tflite")
RUNTIMES = ("keras", "cpu", "edgetpu")
DTYPES = ("uint8", "int8", "float32")
VIEWS = (1, 2, 4, 8)  # Sidecar.views: as edge/tta.py's CHOICES
NORMALIZATIONS = ("in-graph",)  # where pixel values are scaled: inside the model graph


class BundleError(UserError, ValueError):
    """A model file or its sidecar is missing, malformed or does not match."""


@dataclass(frozen=True)
class Quantization:
    """Affine quantisation: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int


@dataclass(frozen=True)
class TensorSpec:
    dtype: str
    quantization: Quantization | None = None


@dataclass(frozen=True)
class InputSpec:
    height: int
    width: int
    channels: int = 3
    dtype: str = "uint8"
    layout: str = "NHWC"
    color: str = "RGB"
    # Raw pixel values the graph expects; normalisation is in the graph.
    value_range: tuple[int, int] = (0, 255)
    normalization: str = "in-graph"
    # How the device turns a frame into the input: crop, then resize.
    crop: str = "center"
    interpolation: str = "area"
    quantization: Quantization | None = None
    # The scale the model was trained at: a red cell's diameter in input pixels, measured on the
    # training images by the red-cell ruler (edge/scale.py). None: not measured (older bundles).
    rbc_px: float | None = None


@dataclass(frozen=True)
class Sidecar:
    """Everything a reader needs to use a model file correctly."""

    format: str
    file: str
    sha256: str
    labels: tuple[str, ...]
    input: InputSpec
    output: TensorSpec
    runtimes: tuple[str, ...]
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    synthetic_data: bool = False
    # The training images' stain (edge/ood.py StainReference.to_json()); None: not measured.
    stain_reference: dict[str, Any] | None = None
    # How many flipped/rotated views (edge/tta.py) celledge averages for this model unless --tta says otherwise:
    # 1, or what its training advised (``celltrain fit --views``; --preset few-shot: 8). Absent in older sidecars: 1.
    views: int = 1
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("schema", "schema_version")}
        d["labels"] = list(self.labels)
        d["runtimes"] = list(self.runtimes)
        d["input"]["value_range"] = list(self.input.value_range)
        d["provenance"] = self.provenance.to_dict()
        return {"schema": self.schema, "schema_version": self.schema_version, **d}

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = "sidecar") -> "Sidecar":
        return _parse(d, where)


APPROVED = "model.tflite"  # the approved int8 model: what cellcompress writes into its --out folder


def model_in(folder: str | os.PathLike) -> Path | None:
    """The approved model a folder holds: ``FOLDER/model.tflite`` (cellcompress's ``--out``) or
    ``FOLDER/int8/model.tflite`` (a training run compressed into its ``int8`` folder, as the README does); None."""
    for candidate in (Path(folder) / APPROVED, Path(folder) / "int8" / APPROVED):
        if candidate.is_file():
            return candidate
    return None


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """``run/model.tflite`` -> ``run/model.json``."""
    return Path(model_path).with_suffix(".json")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- atomic I/O


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` on success.

    The temporary name keeps the final suffix (Keras insists on ``.keras``).
    On any exception the temporary file is removed and ``final`` is untouched. Through a symlink the file it
    names is replaced (the link stays); a device, pipe or folder at ``final`` is refused (OSError), never
    renamed over.
    """
    final = Path(os.path.realpath(final))
    if final.exists() and not final.is_file():
        raise IsADirectoryError(f"{final} is not a regular file (a folder, device or pipe): not replaced")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes it 0600; artifacts are meant to be read by others
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, fsync: str = "file") -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename: a crash leaves the old file or the new one,
    never half of one, and a failed write leaves no temporary file.

    Args:
        fsync: "file" (default): the data reaches the disk before the rename, so the file is never torn;
            "full": the folder is fsync'ed after the rename too, so the new file itself survives a power
            cut; "none": neither (safe against a kill, not against a power cut).
    """
    if fsync not in ("file", "full", "none"):
        raise ValueError(f"fsync={fsync!r}: use 'file', 'full' or 'none'")
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                if fsync != "none":
                    f.flush()
                    os.fsync(f.fileno())
    except OSError as e:
        if e.filename is None:  # a full disk at write or fsync names no file: the message must
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
    if fsync == "full":
        fsync_dir(Path(path).parent)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, fsync: str = "file") -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode(), fsync=fsync)


# --------------------------------------------------------------------------- read / write


def is_label(name: str) -> bool:
    """Whether ``name`` can be a class label: a folder's name (celledge export makes one of it) on any system, no
    path in it, nothing invisible (control or format characters: a right-to-left override)."""
    import unicodedata  # noqa: PLC0415

    return (bool(_LABEL.fullmatch(name)) and bool(name.strip()) and len(name.encode("utf-8", "replace")) <= 255
            and not any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in _INVISIBLE for ch in name))


# bidirectional overrides and zero-width spaces (a name that reads otherwise than it is); the zero-width (non-)joiner
# U+200C/U+200D stay: Persian and Indic names need them
_INVISIBLE = frozenset("\u061c\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")


def build_sidecar(model_path: str | os.PathLike, *, format: str, labels, input: InputSpec,  # noqa: A002
                  output: TensorSpec, runtimes, provenance: Provenance, metrics: dict[str, Any] | None = None,
                  synthetic_data: bool = False, stain_reference: dict[str, Any] | None = None,
                  views: int = 1) -> Sidecar:
    """The sidecar of the model file at ``model_path``: the one place a sidecar is made.

    The file name and sha256 come from the file; ``provenance.created`` is now unless given.
    Absolute paths in free-form parts (configs, descriptions, metrics) are reduced to their
    last component: a sidecar travels to other machines. Every preprocessing field of
    ``input`` is written out, defaults included.

    Raises:
        BundleError: the result would not validate (one line saying which field).
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise BundleError(f"model file not found: {model_path}")
    prov = provenance if provenance.created else dataclasses.replace(provenance, created=now())
    sha = _hash_for_writer(model_path)
    sc = Sidecar(format=format, file=model_path.name, sha256=sha, labels=tuple(labels),
                 input=input, output=output, runtimes=tuple(runtimes), metrics=dict(metrics or {}),
                 provenance=prov, synthetic_data=bool(synthetic_data), stain_reference=stain_reference,
                 views=views)
    d = json.loads(json.dumps(sc.to_json()))  # as a reader will see it (JSON has lists where Python had tuples)
    d["provenance"], d["metrics"] = portable(d["provenance"]), portable(d["metrics"])
    return _parse(d, f"sidecar of {model_path.name}")  # validated once, provenance included


def same_model(a: dict, b: dict) -> bool:
    """Whether two model records ({"sha256", "source_sha256"}: ``model_record``) are one model: the same file, or
    two builds of one trained model (its CPU int8 and its Edge TPU compilation, whose files differ)."""
    if a.get("source_sha256") and b.get("source_sha256"):
        return a["source_sha256"] == b["source_sha256"]
    return a.get("sha256") == b.get("sha256")


def model_record(sc: Sidecar | None) -> dict | None:
    """What a session or a site file records of the model it was made with: its file, its sha256 and the sha256
    of the trained model it was made from (``provenance.source``), when the sidecar names one (None: no sidecar,
    a classifier without one)."""
    if sc is None:
        return None
    source = getattr(getattr(sc, "provenance", None), "source", None)
    return {"file": sc.file, "sha256": sc.sha256,
            **({"source_sha256": source.sha256} if getattr(source, "sha256", None) else {})}


def gate_failures(sc: Sidecar) -> list[str] | None:
    """Why cellcompress's gate refused this model (its accuracy drops), or None: it passed, or was never gated."""
    gate = (sc.metrics or {}).get("gate")
    if isinstance(gate, dict) and gate.get("passed") is False:
        return [str(f) for f in gate.get("failures", [])]
    return None


def describe(sc: Sidecar) -> list[str]:
    """A sidecar in a few lines for people (``celledge info``; ``--json`` prints all of it): what the model
    tells apart, what it takes, how it scored and where it came from. Metrics and provenance are read as far
    as they are there (older and hand-made sidecars have less)."""
    inp = sc.input
    scale = "red cells not measured" if inp.rbc_px is None else f"red cells {inp.rbc_px:g} px across"
    lines = [f"{sc.format} model, sha256 {sc.sha256[:12]}... (made as {sc.file})",
             f"classes ({len(sc.labels)}): {', '.join(sc.labels)}",
             f"input: {inp.width}x{inp.height} {inp.color} {inp.dtype}, {scale}",
             f"runtimes: {', '.join(sc.runtimes)}"]
    m = sc.metrics or {}

    def pct(block) -> str | None:
        acc = block.get("accuracy") if isinstance(block, dict) else None
        ok = isinstance(acc, (int, float)) and not isinstance(acc, bool) and 0 <= acc <= 1  # not "nan %", "-100 %"
        return f"{100 * acc:.2f} %" if ok else None

    if pct(m.get("clean")):
        where = f"{m.get('split', 'held-out')} split" + (f", {m['n']} images" if m.get("n") else "") + \
                (f" of {m['data']}" if m.get("data") else "")
        corrupted = f", corrupted {pct(m.get('corrupted'))}" if pct(m.get("corrupted")) else ""
        lines.append(f"accuracy: {pct(m['clean'])}{corrupted} ({where})")
    gate = m.get("gate")
    if isinstance(gate, dict) and "passed" in gate:
        lines.append("gate: " + ("passed" if gate["passed"] else "FAILED: " + "; ".join(map(str, gate.get("failures", [])))))
    if sc.views > 1:
        lines.append(f"runs over {sc.views} flipped/rotated views by default (its training advised it; "
                     f"celledge --tta 1: {sc.views}x fewer model runs)")
    if sc.synthetic_data:
        lines.append("trained on synthetic cells (a demo model: not for real slides)")
    prov = sc.provenance.to_dict()
    if prov.get("created"):
        lines.append(f"created: {prov['created']}")
    return lines


# The hash build_sidecar took of each model file, with the file's stat then; write_sidecar takes it back
# (once) instead of reading the file again when the file has not changed since.
_BUILT_HASHES: dict[str, tuple[tuple[int, ...], str]] = {}


def _stat_key(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _hash_for_writer(model_path: Path) -> str:
    key = _stat_key(model_path)
    sha = sha256_file(model_path)
    _BUILT_HASHES[str(model_path.resolve())] = (key, sha)
    return sha


def _current_hash(model_path: Path) -> str:
    """The model file's sha256: build_sidecar's, when the file is unchanged since it was built, else read."""
    key, sha = _BUILT_HASHES.pop(str(model_path.resolve()), (None, None))
    return sha if key is not None and key == _stat_key(model_path) else sha256_file(model_path)


def derive_sidecar(base: Sidecar, model_path: str | os.PathLike, *, runtimes=None,
                   provenance: Provenance | None = None, metrics: dict[str, Any] | None = None) -> Sidecar:
    """The sidecar of a model made from (or copied from) the model ``base`` describes: same labels,
    input, output, stain reference, views; the given runtimes, provenance and metrics replace ``base``'s."""
    return build_sidecar(model_path, format=base.format, labels=base.labels, input=base.input, output=base.output,
                         runtimes=base.runtimes if runtimes is None else runtimes,
                         provenance=base.provenance if provenance is None else provenance,
                         metrics=base.metrics if metrics is None else metrics,
                         synthetic_data=base.synthetic_data, stain_reference=base.stain_reference, views=base.views)


def write_sidecar(model_path: str | os.PathLike, sidecar: Sidecar) -> Path:
    """Validate ``sidecar`` against the model file and write it beside it (atomically)."""
    model_path = Path(model_path)
    if sidecar.file != model_path.name:
        raise BundleError(f"sidecar names {sidecar.file!r} but is written for {model_path.name!r}")
    if sidecar.sha256 != _current_hash(model_path):
        raise BundleError(f"sidecar hash does not match {model_path}")
    _parse(sidecar.to_json(), str(sidecar_path(model_path)))  # round-trip check, absolute paths refused
    out = sidecar_path(model_path)
    write_json_atomic(out, sidecar.to_json())
    return out


def load_sidecar(model_path: str | os.PathLike, check_hash: bool = True) -> Sidecar:
    """Read and validate the sidecar of ``model_path``.

    Raises:
        BundleError: with one line saying what is wrong and what to do.
    """
    model_path = Path(model_path)
    if model_path.is_dir():  # "model file not found: FOLDER" read as if the folder were missing (POST /model/reload)
        raise BundleError(f"{model_path} is a folder with no approved model in it ({APPROVED}, or int8/{APPROVED}): "
                          "give the .tflite file, or the folder cellcompress approved it into")
    if not model_path.is_file():
        raise BundleError(f"model file not found: {model_path}")
    if model_path.suffix.lower() == ".json":  # split.json named split.tflite, a file that is not there
        beside = [p.name for p in map(model_path.with_suffix, (".tflite", ".keras")) if p.is_file()]
        raise BundleError(f"{model_path} is a JSON file, not a model: give " + (
            f"the model beside it ({' or '.join(beside)})" if beside else "a model file (.tflite or .keras)"))
    if model_path.suffix.lower() not in (".tflite", ".keras"):
        raise BundleError(f"{model_path} is not a model file: a scopelite model is a .tflite (or .keras) file with "
                          "its .json sidecar beside it")
    sc_path = sidecar_path(model_path)
    if not sc_path.is_file():
        raise BundleError(
            f"no sidecar {sc_path.name} beside {model_path}: every scopelite model is a file plus its "
            "JSON sidecar; copy both, or re-create it with celltrain/cellcompress"
        )
    sc = read_sidecar_file(sc_path)
    # A model copied under another name with its sidecar (bloodcell_int8.* -> model.*) is the same model: the
    # hash says so. Without the hash checked, the name is all there is.
    renamed = sc.file != model_path.name
    if renamed and Path(sc.file).suffix.lower() != model_path.suffix.lower():
        raise BundleError(f"sidecar {sc_path} describes {sc.file!r}, a {Path(sc.file).suffix} file, not "
                          f"{model_path.name!r}: give the model its own extension back")
    if renamed and not check_hash:
        raise BundleError(f"sidecar {sc_path} describes {sc.file!r}, not {model_path.name!r}: rename the model "
                          f"back to {sc.file}, or its \"file\" in the sidecar to {model_path.name!r}")
    if check_hash and sc.sha256 != sha256_file(model_path):
        if renamed:
            raise BundleError(f"sidecar {sc_path} describes {sc.file!r}, and {model_path.name} is not that file (its "
                              "sha256 differs): another model, or a copy cut short or damaged; copy the model again, "
                              f"or that model's own sidecar beside it, named {sc_path.name}")
        raise BundleError(
            f"{model_path} does not match its sidecar (sha256 differs): the file was changed or "
            "replaced; re-export it, or copy the matching sidecar"
        )
    return sc


def read_sidecar_file(sc_path: str | os.PathLike) -> Sidecar:
    """Parse a sidecar file on its own (no model file checked); version 1 is upgraded on read."""
    sc_path = Path(sc_path)
    try:
        raw = json.loads(sc_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"sidecar {sc_path} is not valid JSON ({e})") from None
    return _parse(raw, str(sc_path))


def copy_bundle(src: str | os.PathLike, dest: str | os.PathLike, approved_from: str | None = None) -> Sidecar:
    """Copy a model and its sidecar under a new name (sidecar file name and hash updated, atomically).

    ``approved_from``: the compressed variant this copy approves (recorded in its compression).
    """
    sc = load_sidecar(src)
    prov = dataclasses.replace(sc.provenance, copied_from=Path(src).name)
    if approved_from is not None:
        if prov.compression is None:
            raise BundleError(f"{src} records no compression; only a compressed variant can be approved")
        prov = dataclasses.replace(prov, compression=dataclasses.replace(prov.compression,
                                                                         approved_from=approved_from))
    dest = Path(dest)
    write_bytes_atomic(dest, Path(src).read_bytes())
    new = derive_sidecar(sc, dest, provenance=prov)
    write_sidecar(dest, new)
    return new


def source_path(model_path: str | os.PathLike, sc: Sidecar | None = None) -> Path:
    """The model file ``model_path`` was made from, found by the name and sha256 its sidecar records,
    beside it or in the folder above (``run/int8/model.tflite`` -> ``run/model.keras``).

    Raises:
        BundleError: the sidecar records no source, or no file of that name and hash is there.
    """
    model_path = Path(model_path)
    sc = sc or load_sidecar(model_path)
    src = sc.provenance.source
    if src is None:
        raise BundleError(f"{model_path.name}'s sidecar records no source model")
    for folder in (model_path.parent, model_path.parent.parent):
        p = folder / src.file
        if p.is_file() and p.resolve() != model_path.resolve() and sha256_file(p) == src.sha256:
            return p
    raise BundleError(f"{model_path.name} was made from {src.file} (sha256 {src.sha256[:12]}...), which is neither "
                      f"beside it nor in the folder above; give that {src.format} model too")


# --------------------------------------------------------------------------- validation


def _req(d: dict, key: str, typ, where: str):
    if not isinstance(d, dict) or key not in d:
        raise BundleError(f"{where}: missing field {key!r}")
    v = d[key]
    if typ is int and isinstance(v, bool) or not isinstance(v, typ):
        raise BundleError(f"{where}: field {key!r} must be {getattr(typ, '__name__', typ)}, got {v!r}")
    return v


def _req_key(d: dict, key: str, where: str):
    """``d[key]``, which may be null but must be written (preprocessing is explicit, not defaulted)."""
    if key not in d:
        raise BundleError(f"{where}: missing field {key!r} (write null when it does not apply)")
    return d[key]


def _stain_reference(v: Any, where: str) -> dict | None:
    if v is None:
        return None
    from .ood import StainReference  # noqa: PLC0415 - a pure helper below this module

    try:
        ref = StainReference.from_json(v)
        if len(ref.rbc_od) != 3 or len(ref.nucleus_od) != 3 or not ref.threshold > 0:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{where}: stain_reference must hold rbc_od and nucleus_od (3 numbers each) and a "
                          "positive threshold") from None
    return ref.to_json()


def _rbc_px(v: Any, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1.0 <= v <= 10_000:
        raise BundleError(f"{where}.rbc_px: expected a red-cell diameter in input pixels (1-10000), got {v!r}")
    return float(v)


def _views(v: Any, where: str) -> int:
    if isinstance(v, bool) or v not in VIEWS:
        raise BundleError(f"{where}: views must be one of {', '.join(map(str, VIEWS))} (flipped/rotated views "
                          f"celledge averages), got {v!r}")
    return int(v)


def _quant(d: Any, where: str) -> Quantization | None:
    if d is None:
        return None
    scale = _req(d, "scale", (int, float), where)
    zp = _req(d, "zero_point", int, where)
    if not scale > 0:
        raise BundleError(f"{where}: quantization scale must be > 0, got {scale}")
    return Quantization(float(scale), int(zp))


def _parse(d: Any, where: str) -> Sidecar:
    if not isinstance(d, dict):
        raise BundleError(f"{where}: sidecar must be a JSON object")
    if d.get("schema") != SCHEMA:
        raise BundleError(f"{where}: not a scopelite sidecar (schema {d.get('schema')!r}, expected {SCHEMA!r})")
    version = _req(d, "schema_version", int, where)
    if version not in READS:
        raise BundleError(
            f"{where}: sidecar schema version {version}, this scopelite reads {', '.join(map(str, READS))}; "
            "upgrade scopelite or re-export the model"
        )
    if version == bundle_v1.VERSION:
        try:
            d = bundle_v1.upgrade(d)
        except (AttributeError, TypeError, KeyError, ValueError) as e:
            raise BundleError(f"{where}: a version-1 sidecar that cannot be read ({type(e).__name__}: {e})") from None
    bad = absolute_paths(d, "")
    if bad:
        raise BundleError(f"{where}: field {bad[0].lstrip('.')} holds an absolute path of the machine that built it; "
                          "a sidecar names files relative to its bundle (re-export the model)")
    fmt = _req(d, "format", str, where)
    if fmt not in FORMATS:
        raise BundleError(f"{where}: format {fmt!r} not one of {FORMATS}")
    labels = _req(d, "labels", list, where)
    if not labels or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
        raise BundleError(f"{where}: labels must be a non-empty list of distinct names")
    odd = [x for x in labels if not is_label(x)]
    if odd:  # each becomes a folder's name (celledge export, a report's file names): "../x" wrote outside --out
        raise BundleError(f"{where}: label {odd[0]!r} is not a plain name (no '/' or '\\', no control "
                          "characters, not starting with '.', at most 255 characters)")
    i = _req(d, "input", dict, where)
    wi = f"{where}: input"
    inp = InputSpec(
        height=_req(i, "height", int, wi),
        width=_req(i, "width", int, wi),
        channels=_req(i, "channels", int, wi),
        dtype=_req(i, "dtype", str, wi),
        layout=_req(i, "layout", str, wi),
        color=_req(i, "color", str, wi),
        value_range=tuple(_req(i, "value_range", list, wi)),
        normalization=_req(i, "normalization", str, wi),
        crop=_req(i, "crop", str, wi),
        interpolation=_req(i, "interpolation", str, wi),
        quantization=_quant(_req_key(i, "quantization", wi), wi + ".quantization"),
        rbc_px=_rbc_px(_req_key(i, "rbc_px", wi), wi),
    )
    if inp.height <= 0 or inp.width <= 0 or inp.channels != 3:
        raise BundleError(f"{wi}: expected positive height/width and 3 channels, got {inp.height}x{inp.width}x{inp.channels}")
    if inp.layout != "NHWC" or inp.color != "RGB":
        raise BundleError(f"{wi}: only NHWC RGB inputs are supported, got {inp.layout} {inp.color}")
    if inp.dtype not in DTYPES:
        raise BundleError(f"{wi}: dtype {inp.dtype!r} not one of {DTYPES}")
    if inp.crop not in ("center", "none"):
        raise BundleError(f"{wi}: crop {inp.crop!r} must be 'center' or 'none'")
    if inp.normalization not in NORMALIZATIONS:
        raise BundleError(f"{wi}: normalization {inp.normalization!r} not one of {NORMALIZATIONS} "
                          "(the device feeds raw pixels; scaling belongs inside the model graph)")
    if len(inp.value_range) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in inp.value_range):
        raise BundleError(f"{wi}: value_range must be two whole numbers, got {list(inp.value_range)}")
    o = _req(d, "output", dict, where)
    out = TensorSpec(dtype=_req(o, "dtype", str, f"{where}: output"), quantization=_quant(o.get("quantization"), f"{where}: output.quantization"))
    if out.dtype not in DTYPES:
        raise BundleError(f"{where}: output dtype {out.dtype!r} not one of {DTYPES}")
    for spec, name in ((inp, "input"), (out, "output")):
        if spec.dtype in ("uint8", "int8") and spec.quantization is None:
            raise BundleError(f"{where}: {name} is {spec.dtype} but has no quantization scale/zero_point")
    runtimes = _req(d, "runtimes", list, where)
    bad = [r for r in runtimes if r not in RUNTIMES]
    if not runtimes or bad:
        raise BundleError(f"{where}: runtimes must be a non-empty subset of {RUNTIMES}, got {runtimes}")
    metrics = d.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise BundleError(f"{where}: metrics must be a JSON object")
    try:
        provenance = Provenance.from_dict(d.get("provenance"), "provenance")
    except ProvenanceError as e:
        raise BundleError(f"{where}: {e}") from None
    return Sidecar(
        format=fmt,
        file=_req(d, "file", str, where),
        sha256=_req(d, "sha256", str, where),
        labels=tuple(labels),
        input=inp,
        output=out,
        runtimes=tuple(runtimes),
        metrics=metrics,
        provenance=provenance,
        synthetic_data=bool(d.get("synthetic_data", False)),
        stain_reference=_stain_reference(d.get("stain_reference"), where),
        views=_views(d.get("views", 1), where),
    )
