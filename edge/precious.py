"""Output paths that would destroy what a user keeps: a model, its sidecar, an image or video, a training run's files,
the source a run reads or another file it reads (its model, sidecar, site or config file).

A path typed for another option (``--out model.tflite`` for ``--model``, a run's ``split.json`` as ``pack``'s OUT)
replaced or appended to them with exit 0. Each command that writes one file checks its path here first.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from .bundle import SCHEMA
from .errors import UserError
from .sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES

MODEL_SUFFIXES = (".tflite", ".keras", ".h5")
RUN_FILES = ("model.keras", "model.json", "config.json", "state.json", "split.json", "history.json", "history.csv")


def not_precious(path: str | os.PathLike, option: str, what: str, ending: str | None = None, source=None,
                 reads: dict | None = None) -> None:
    """Refuse (UserError) an output file named like an image, a video or a model, one that is ``source`` or another
    file the run reads (``reads``: {what it is: its path}, e.g. the model, its sidecar, the site file), or one that is
    a model's sidecar or a training run's own file. ``what``: what the command writes there; ``ending``: the name the
    output should end in, for the message."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        raise UserError(f"{option} {path} is named like an image or a video: {what} written there would destroy "
                        f"it; give {f'a name ending in {ending}' if ending else 'another file name'}")
    for name, given in ({"the source itself": source} | {f"{k} this run reads": v for k, v in (reads or {}).items()}
                        ).items():  # what is written there would destroy it
        if given is not None and p.exists() and Path(str(given)).exists() and p.resolve() == Path(str(given)).resolve():
            raise UserError(f"{option} {path} is {name}: what it writes would destroy it; give another file")
    if suffix in MODEL_SUFFIXES:
        kind = "named like a model file"
    elif (p.parent / "state.json").is_file() and (p.parent / "cells.jsonl").is_file():
        kind = "inside a session's folder (celledge watch --sessions)"  # --out s1/reviews.jsonl: lines into its log
    elif p.is_file() and p.name in RUN_FILES and any((p.parent / f).is_file() for f in ("model.keras", "state.json")):
        kind = "a training run's own file"
    elif p.is_file() and suffix == ".json" and is_sidecar(p):
        kind = "a model's sidecar"
    else:
        return
    raise UserError(f"{option} {path} is {kind}: {what} written there would destroy it; give another file name")


def is_sidecar(path: Path) -> bool:
    """Whether ``path`` holds a model's sidecar (its schema), read without trusting it."""
    return _schema_of(path) == SCHEMA


def only_replaces(path: str | os.PathLike, option: str, what: str, own: Callable[[Path], bool]) -> None:
    """Refuse (UserError) an existing, non-empty file at ``path`` that ``own`` does not take for an earlier file of
    this kind (``has_schema``, ``choose.is_choice``, ``pack.is_pack``): ``calibrate --out conf/site.yaml`` replaced
    the daemon's YAML config, ``choose --out`` a report, ``pack OUT`` a dataset .npz."""
    p = Path(path)
    try:
        empty = not p.is_file() or p.stat().st_size == 0
    except OSError:
        return
    if not empty and not own(p):
        raise UserError(f"{option} {path} holds something else, not {what}: it would be replaced; give another file "
                        "name, or remove it first")


def foreign_files(out: str | os.PathLike, judges: dict[str, Callable[[Path], bool | None]]) -> list[str]:
    """The files in folder ``out`` named as a command names its outputs (``judges``' keys) that an earlier run of it
    did not write, and which a run into ``out`` would replace: ``judges[name](path)`` is True for "an earlier output
    of this command", False for "something else", None for "cannot tell" (a plot, a Markdown report): those go by
    the company they keep, ours when any other output there is. A user's bench.json, exclusions.txt or
    model_float16.tflite was replaced or removed, exit 0."""
    out = Path(out)
    if not out.is_dir():
        return []
    said = {n: judge(out / n) for n, judge in judges.items() if (out / n).is_file()}
    earlier = any(v for v in said.values())
    return [n for n, v in said.items() if v is False or (v is None and not earlier)]


def refuse_foreign(out: str | os.PathLike, foreign: list[str], command: str, written: str = "did not write",
                   does: str = "replace") -> None:
    """UserError naming ``foreign_files``' answer for ``--out OUT`` (nothing when it is empty): what ``command`` did
    not write there and a run would ``does``."""
    if foreign:
        raise UserError(f"--out {out} holds {', '.join(foreign[:3])} that {command} {written}, which this run would "
                        f"{does}: give another folder, or move them away")


def json_with(*keys: str) -> Callable[[Path], bool]:
    """``foreign_files``' test for a JSON object holding all of ``keys`` (read without trusting it)."""
    def judge(p: Path) -> bool:
        obj = _json_object(p, 2**26)
        return obj is not None and all(k in obj for k in keys)
    return judge


def starts_with(first: bytes) -> Callable[[Path], bool]:
    """``foreign_files``' test for a file whose content begins with ``first`` (a CSV header, a comment line)."""
    def judge(p: Path) -> bool:
        try:
            with open(p, "rb") as f:
                return f.read(len(first)) == first
        except OSError:
            return False
    return judge


def only_appends_to_lines(path: str | os.PathLike, option: str) -> None:
    """Refuse (UserError) an existing, non-empty regular file whose first line is not a JSON object: lines appended to
    a site file or a report (one indented JSON document) broke it for the command that reads it (``--site``:
    "not valid JSON"), with exit 0. Earlier JSON lines, of this command or another, are appended to."""
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size == 0:
            return
        with open(p, "rb") as f:
            first = f.readline(2**16)
    except OSError:
        return
    try:
        ok = isinstance(json.loads(first), dict)
    except ValueError:  # a document's opening "{", binary, text; or the one line there, torn (appended to)
        ok = first.startswith(b'{"')  # a JSON line, torn (and ended by a newline since): not a document's "{"
    if not ok:
        raise UserError(f"{option} {path} holds something other than JSON lines (a site file, a report, a document): "
                        "the lines appended would break it; give another file name, e.g. frames.jsonl")


def has_schema(schema: str) -> Callable[[Path], bool]:
    """``only_replaces``'s test for a JSON object whose ``schema`` is ``schema``."""
    return lambda p: _schema_of(p) == schema


def _schema_of(path: Path) -> object:
    """The ``schema`` of the JSON object in ``path`` (None if it holds none), read without trusting it."""
    obj = _json_object(path, 2**20)
    return None if obj is None else obj.get("schema")


def _json_object(path: Path, max_bytes: int) -> dict | None:
    """The JSON object in ``path``, or None: not readable, over ``max_bytes``, not JSON, not an object."""
    try:
        if path.stat().st_size > max_bytes:
            return None
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
