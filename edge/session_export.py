"""Cells a person reviewed, exported as the class-folder dataset ``celltrain fit --data`` reads.

OUT/<class>/<session>_<cell>.png for every reviewed cell with a class (not ``uncertain``, not
``not_a_cell``; with ``self_train``, also the unreviewed cells an adapted model is sure of, marked
``pseudo``), and OUT/export.json (which cell each file is, the model's label and the person's, and
the scale the daemon cut it at: ``rbc_fraction``, a red cell's diameter over the crop's side).
Exporting into the same folder again adds to it: file names are unique per session and cell, so
several sessions (slides) build one dataset, and exporting a session twice rewrites the same files
(a cell whose review changed since moves to its new class folder, or out).

``celltrain fit`` reads the scale back (``recorded_scales``): a model fine-tuned on exported cells
records the scale they were cut at, not one measured again on the small crops, which can read a
few per cent off on another lab's red cells (DeepBioNet: 16.98 px measured on crops cut at 18.0).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .bundle import atomic_path, is_label, write_json_atomic
from .differential import PLATELET, UNCERTAIN
from .preprocess import prepare
from .self_train import confident
from .session import NOT_A_CELL, Session, SessionError, list_sessions
from .sources import SourceError, read_image_rgb

if TYPE_CHECKING:
    from .classifier import Classifier

RECORD = "export.json"  # in the exported folder: which cell each file is, and the scale it was cut at


def session_folders(paths) -> list[Path]:
    """Each path is a session folder or a sessions folder (all the sessions in it)."""
    out = []
    for p in map(Path, paths):
        if (p / "state.json").is_file():
            out.append(p)
        else:
            damaged: list[Path] = []
            found = list_sessions(p, damaged=damaged)
            if damaged:  # their reviewed cells would be left out without a word
                damaged.sort()
                raise SessionError(f"{damaged[0]}/state.json cannot be read" + (
                    f" (and {len(damaged) - 1} more session{'s' if len(damaged) > 2 else ''} under {p})" if len(damaged) > 1 else "")
                    + ": repair it or move the folder aside, then export again", 422)
            if not found:
                raise SessionError(f"{p} is neither a session folder nor a folder of sessions (no state.json)", 404)
            out += found
    return out


def export_reviewed(paths, out: str | os.PathLike, self_train: Classifier | None = None) -> dict:
    """Copy the reviewed cells' crops of the sessions at ``paths`` into ``out/<class>/``.

    ``self_train``: the lab's adapted model (fine-tuned on its reviewed cells): the unreviewed cells it is
    sure of (``self_train.confident``) go too, under its class, marked ``"pseudo": true`` in export.json, for
    a second fit. A session exported again without it loses those copies.

    Returns:
        {"classes": {class: files}, "cells": n, "skipped": {"unreviewed": n, "uncertain or not a cell": n,
        "no crop": n (none kept), "unreadable crop": n (deleted or damaged)}, "sessions": [ids], "self_trained":
        {class: files},
        "damaged_lines": {session id: lines of its logs that could not be read}}
    """
    out = Path(out)
    entries, classes, guessed = [], {}, {}
    skipped = {"unreviewed": 0, "uncertain or not a cell": 0, "no crop": 0, "unreadable crop": 0}
    folders = list({f.resolve(): f for f in session_folders(paths)}.values())  # one folder named twice: once
    sessions = [Session.load(folder) for folder in folders]
    _refuse_a_counted_folder(sessions, out)
    record = _read_record(out)
    _check_ids(sessions, record, out)
    earlier = {(e.get("session"), e.get("cell")): e.get("file") for e in record}
    pseudo, unreadable = _pseudo_labels(sessions, self_train) if self_train is not None else ({}, set())
    skipped["unreadable crop"] = len(unreadable)
    result = {"classes": classes, "cells": 0, "skipped": skipped, "sessions": [f.name for f in folders],
              "self_trained": guessed, "damaged_lines": {s.id: s.damaged for s in sessions if s.damaged}}
    try:
        for s in sessions:
            folder = s.folder
            for c in s.cells:
                guess = pseudo.get((s.id, c["id"]))
                name = _export_name(s.id, c, guess[0] if guess else None)
                _drop_stale(out, earlier.get((s.id, c["id"])), name)
                label = c.get("reviewed")
                if label is None and guess is None:
                    skipped["unreviewed"] += (s.id, c["id"]) not in unreadable  # counted once, as unreadable
                elif label in (UNCERTAIN, NOT_A_CELL):
                    skipped["uncertain or not a cell"] += 1
                elif not is_label(label if label is not None else guess[0]):  # a hand-edited log: "../x" wrote outside
                    skipped["label not a class name"] = skipped.get("label not a class name", 0) + 1
                elif not c.get("crop"):  # none kept (counted while the sessions disk was full, never seen whole)
                    skipped["no crop"] += 1
                elif not (folder / c["crop"]).is_file() or guess is None and not _decodes(folder / c["crop"]):
                    skipped["unreadable crop"] += 1  # deleted or damaged (a guess's crop was read to guess it)
                else:
                    with atomic_path(out / name) as tmp:
                        shutil.copyfile(folder / c["crop"], tmp)
                    entry = {"file": name, "session": s.id, "session_started": s.state.get("started"),
                             "cell": c["id"], "label": label, "model_label": c["label"], "score": c["score"],
                             "rbc_fraction": c.get("rbc_fraction") or s.state.get("rbc_fraction")}
                    if label is None:  # unreviewed: the adapted model's class
                        entry.update(label=guess[0], pseudo=True, pseudo_score=round(guess[1], 4))
                        guessed[guess[0]] = guessed.get(guess[0], 0) + 1
                    else:
                        classes[label] = classes.get(label, 0) + 1
                    entries.append(entry)
    finally:  # also when stopped part way (a full disk): the record names every file written so far
        result.update(classes=dict(sorted(classes.items())), cells=len(entries) - sum(guessed.values()),
                      self_trained=dict(sorted(guessed.items())))
        if entries:
            record_files(out, entries, result)
    return result


def _refuse_a_counted_folder(sessions: list[Session], out: Path) -> None:
    """Refuse ``out`` inside a folder a session counted its cells from: the next run on that folder (the same
    session, resumed) counted the exported crops as fields (a walk-through: 31 cells became 36, without a word)."""
    target = out.resolve()
    for s in sessions:
        for given in s.counted_from():
            home = Path(given)
            if home.is_dir() and (target == home.resolve() or home.resolve() in target.parents):
                raise SessionError(f"{out} is inside {given}, which session {s.id} counted its cells from: the next "
                                   "run on that folder would count the exported crops as fields; export to a folder "
                                   "of its own, e.g. my_cells/", 409)


def _check_ids(sessions: list[Session], record: list[dict], out: Path) -> None:
    """Refuse sessions that share an id (two devices started in one second, before ids had a random suffix):
    two in this export, or one and a session exported into ``out`` before (told apart by its start time, or
    for records older than that, by what they say of its cells)."""
    started = {e.get("session"): e.get("session_started") for e in record if e.get("session_started") is not None}
    cells = {(e.get("session"), e.get("cell")): e for e in record}
    for s in sessions:
        for t in sessions:
            if t is not s and t.id == s.id:
                same = t.state.get("started") == s.state.get("started")
                raise SessionError(f"{s.folder} and {t.folder} " + (
                    f"are two copies of session {s.id}: export one of them" if same else
                    f"share the session id {s.id}; their cells would overwrite each other: export them into "
                    "separate folders"), 409)
        before = started.get(s.id)
        clash = before is not None and before != s.state.get("started")
        if before is None:  # an older record: does it describe this session's cells? (a cell the model revised
            # since has another label: only a cell missing, or another score under the same label, tells)
            clash = any(cid not in s.by_id or (e.get("model_label") == s.by_id[cid].get("label")
                                               and e.get("score") != s.by_id[cid].get("score"))
                        for (sid, cid), e in cells.items() if sid == s.id)
        if clash:
            raise SessionError(f"{s.folder} and a session exported into {out} before share the session id {s.id}; "
                               "their cells would overwrite each other: export them into separate folders", 409)


def _has_crop(folder: Path, cell: dict) -> bool:
    return bool(cell.get("crop")) and (folder / cell["crop"]).is_file()


def _decodes(path: Path) -> bool:
    """Whether a crop is an image (a damaged one must not join a training set)."""
    try:
        read_image_rgb(path)
    except (SourceError, OSError):
        return False
    return True


SELF_TRAIN_BATCH = 256  # crops classified at a time


def _pseudo_labels(sessions: list[Session], model: Classifier
                   ) -> tuple[dict[tuple[str, int], tuple[str, float]], set[tuple[str, int]]]:
    """(session, cell) -> (class, score) for the unreviewed cells ``model`` is sure of, judged among the classes
    the sessions' reviewed cells have (``self_train.confident``; n: the most reviewed cells of one class); and
    the (session, cell) keys of the crops that could not be read (left out)."""
    reviewed: dict[str, int] = {}
    for s in sessions:
        for c in s.cells:
            r = c.get("reviewed")
            if r is not None and r not in (UNCERTAIN, NOT_A_CELL) and _has_crop(s.folder, c):
                reviewed[r] = reviewed.get(r, 0) + 1
    known = [k for k in sorted(reviewed) if k in model.labels]
    if reviewed and not known:
        raise SessionError(f"--self-train: the model knows none of the reviewed classes ({', '.join(sorted(reviewed))})", 400)
    todo = [(s, c) for s in sessions for c in s.cells
            if known and c.get("reviewed") is None and _has_crop(s.folder, c) and not _not_a_white_cell(c, known)]
    kept, probs, unreadable = [], [], set()
    for i in range(0, len(todo), SELF_TRAIN_BATCH):  # a batch at a time: memory stays small
        crops = []
        for s, c in todo[i:i + SELF_TRAIN_BATCH]:
            try:
                crops.append(prepare(read_image_rgb(s.folder / c["crop"]), model.input_spec))
            except SourceError:
                unreadable.add((s.id, c["id"]))
                continue
            kept.append((s, c))
        if crops:
            probs.append(model.classify(np.stack(crops)))
    if not kept:
        return {}, unreadable
    todo, probs = kept, np.concatenate(probs)
    chosen = confident(probs, list(model.labels), known, max(reviewed[k] for k in known))
    cols = {k: list(model.labels).index(k) for k in known}
    guesses = {(todo[i][0].id, todo[i][1]["id"]): (k, float(probs[i, cols[k]])) for k, idx in chosen.items() for i in idx}
    return guesses, unreadable


def _not_a_white_cell(cell: dict, known: list[str]) -> bool:
    """A cell field mode counted as a platelet, or found platelet-sized (``watch._not_what_it_looks_like``: its crop,
    cut at a white cell's scale, is mostly the cell beside it): never a guess for the lab's classes, unless the lab
    reviewed platelets. An adapted model fitted on white cells alone names such crops confidently (a second-site
    trial: 18 platelets exported as lymphocytes)."""
    if PLATELET in known:
        return False
    return cell.get("why") == "platelet-sized" or cell.get("label") == PLATELET


def _export_name(session_id: str, cell: dict, guess: str | None = None) -> str | None:
    """Where a cell's crop goes: its reviewed class's folder, or for an unreviewed cell ``guess`` (the
    adapted model's class under ``--self-train``); None: it is not exported (unreviewed without a guess,
    reviewed as uncertain or not a cell)."""
    label = cell.get("reviewed")
    if label is None:
        label = guess
    if label is None or label in (UNCERTAIN, NOT_A_CELL):
        return None
    return f"{label}/{session_id}_{cell['id']}.png"


def _drop_stale(out: Path, before: str | None, now: str | None) -> None:
    """A cell exported before under another class (its review changed since) or no longer exportable:
    its old copy goes, so that it does not train under two labels."""
    if not isinstance(before, str) or not _inside(out, before):  # a hand-edited export.json: "../thesis.txt"
        return
    if before != now and (out / before).is_file():
        (out / before).unlink()
        try:  # a class folder left empty would stop celltrain fit ("holds no images")
            (out / before).parent.rmdir()
        except OSError:
            pass


def _inside(out: Path, rel: str) -> bool:
    """Whether ``rel`` (a file export.json names) is a file under ``out``: a class folder's file, nothing else."""
    p = Path(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and len(p.parts) == 2


def record_files(out: str | os.PathLike, entries: list[dict], summary: dict | None = None) -> None:
    """Write ``out/export.json``: ``files``, the ``entries`` (one per file: ``file`` relative to ``out``,
    optionally ``rbc_fraction``) and what an earlier export there recorded of files still present that
    this one did not write again; ``last_export``: ``summary``, what this export did."""
    out = Path(out)
    new = {e["file"] for e in entries}
    kept = [e for e in _read_record(out) if e.get("file") not in new and (out / str(e.get("file"))).is_file()]
    write_json_atomic(out / RECORD, {"last_export": summary or {}, "files": kept + list(entries)})


def written_by_export(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds celledge export's own record (not just any file named like it)."""
    try:
        record = json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "files" in record and "last_export" in record


def _read_record(folder: Path) -> list[dict]:
    try:
        files = json.loads((folder / RECORD).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return []
    # a hand-edited entry's session or cell as a list was an unhashable-type traceback: such entries are left out
    return [e for e in files if isinstance(e, dict) and isinstance(e.get("file"), str)
            and isinstance(e.get("session", ""), str) and isinstance(e.get("cell", 0), int)] \
        if isinstance(files, list) else []


def recorded_scales(folder: str | os.PathLike) -> dict[str, float]:
    """``file`` -> ``rbc_fraction`` of the files ``folder/export.json`` records a scale for (none when
    there is no readable record)."""
    out = {}
    for e in _read_record(Path(folder)):
        f, r = e.get("file"), e.get("rbc_fraction")
        if isinstance(f, str) and isinstance(r, (int, float)) and 0.0 < r < 1.0:
            out[f] = float(r)
    return out


def recorded_pseudo(folder: str | os.PathLike) -> set[str]:
    """The ``file`` names ``folder/export.json`` marks ``"pseudo"`` (``--self-train``'s guesses): celltrain fit
    trains on them but never validates or tests on them."""
    return {e["file"] for e in _read_record(Path(folder)) if e.get("pseudo") is True and isinstance(e.get("file"), str)}


def summary_line(result: dict, out) -> str:
    """One line for the terminal."""
    per = ", ".join(f"{k} {v}" for k, v in result["classes"].items()) or "none"
    skip = ", ".join(f"{v} {k}" for k, v in result["skipped"].items() if v)
    guessed = result.get("self_trained") or {}
    more = (f"; and {sum(guessed.values())} unreviewed cells the adapted model is sure of: "
            + ", ".join(f"{k} {v}" for k, v in guessed.items())) if guessed else ""
    return (f"exported {result['cells']} reviewed cells from {len(result['sessions'])} session(s) to {out}: {per}"
            + more + (f" (skipped: {skip})" if skip else ""))

