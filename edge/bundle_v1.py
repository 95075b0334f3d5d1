"""Read sidecars of schema version 1 (scopelite before the typed provenance): upgrade to version 2.

Version 1 kept provenance as loose keys (``config``/``train_config``, ``split_file``, ``source.file``
as the build machine's absolute path, ``variant``, ``gate``, ``cpu_model``...). :func:`upgrade`
moves each into its typed place, reduces absolute paths to file names, and leaves every number
where a reader finds it (metrics, quantisation, stain reference, rbc_px, labels are not touched).

Pure Python: importable on a device with no TensorFlow.
"""
from __future__ import annotations

import copy
from pathlib import PurePath
from typing import Any

from .provenance import method_of, portable

VERSION = 1
_TRAINING_EXTRA = ("replicas", "resumed", "weight_averaging", "trained_with")
_COMPRESSION_EXTRA = ("qat_history", "qat_requested")


def _name(path: str | None) -> str | None:
    return None if path is None else PurePath(str(path).replace("\\", "/")).name


def _training(prov: dict, config: dict | None, data: dict | None, synthetic: bool, is_keras: bool) -> dict | None:
    if config is None and data is None:
        return None
    config = config or {}
    split = prov.pop("split_file", None)
    return {
        "run": _name(config.get("out")) or "",
        "config": config,
        "data": data or {"description": "", "synthetic": synthetic},
        "split": None if split is None else {"file": _name(split), "sha256": None},
        "seed": config.get("seed"),
        "epochs": config.get("epochs"),
        "machine": None,
        "extra": {k: prov.pop(k) for k in _TRAINING_EXTRA if k in prov} if is_keras else {},
    }


def _compression(prov: dict, metrics: dict) -> dict | None:
    variant = prov.pop("variant", None)
    if variant is None:
        return None
    cfg = prov.pop("compress_config", None) or {}
    extra = {k: prov.pop(k) for k in _COMPRESSION_EXTRA if k in prov}
    gate = prov.pop("gate", None)
    if gate is None and variant.endswith("int8"):
        gate = metrics.get("gate")
    return {
        "variant": variant,
        "method": method_of(variant, extra.get("qat_requested", cfg.get("qat", True))),
        "quantization": prov.pop("quantization", variant),
        "config": cfg,
        "representative": cfg.get("representative") if variant.endswith("int8") else None,
        "gate": gate,
        "op_counts": prov.pop("op_counts", {}),
        "size_bytes": prov.pop("size_bytes", None),
        "machine": metrics.get("measured_on"),
        "approved_from": _name(prov.pop("approved_from", None)),
        "edgetpu_compiler": prov.pop("edgetpu_compiler", None),
        "extra": extra,
    }


def upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """A version-1 sidecar (as read from JSON) as the version-2 JSON object that says the same."""
    d = copy.deepcopy(d)
    prov = dict(d.get("provenance") or {})
    metrics = d.get("metrics") or {}
    is_keras = d.get("format") == "keras"
    created, tools = prov.pop("created", None), prov.pop("tools", {})
    source = prov.pop("source", None)
    data = prov.pop("data", None)
    config = prov.pop("config", None) if is_keras else prov.pop("train_config", None)
    new = {
        "created": created,
        "tools": tools,
        "source": None if not source else {**source, "file": _name(source.get("file"))},
        "training": _training(prov, config, data, bool(d.get("synthetic_data", False)), is_keras),
        "compression": _compression(prov, metrics),
        "cpu_model": _name(prov.pop("cpu_model", None)),
        "copied_from": _name(prov.pop("copied_from", None)),
        "notes": {},
    }
    new["notes"] = prov  # what is left: free-form additions (how a field was measured, ...)
    d["provenance"] = new
    if isinstance(d.get("input"), dict):  # v1 graphs all normalised inside; v1 did not say so
        d["input"] = {**d["input"], "normalization": "in-graph"}
    d["schema_version"] = 2
    return portable(d)
