"""Datasets in memory: load, deduplicate, split. Pure numpy + OpenCV (no TensorFlow).

A dataset is uint8 RGB images (N, S, S, 3), int64 labels into ``class_names``
and one id per image (a relative path, or ``synthetic:i``) so a split can be
saved and re-created exactly.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scopelite.edge.bundle import CLASS_NAMES, InputSpec, is_label, write_json_atomic
from scopelite.edge.errors import UserError
from scopelite.edge.preprocess import prepare
from scopelite.edge.scale import images_rbc_px
from scopelite.edge.session_export import RECORD, recorded_pseudo, recorded_scales
from scopelite.edge.sources import IMAGE_SUFFIXES, SourceError, read_image_rgb, utf8_name

from .memory import image_array

SYNTHETIC = "synthetic"
SPLITS = ("train", "val", "test")


def input_spec(image_size: int) -> InputSpec:
    """How training images are prepared, every field spelled out: the sidecar of a model trained on
    them records this, and the device prepares its cells the same way."""
    return InputSpec(height=image_size, width=image_size, channels=3, dtype="uint8", layout="NHWC", color="RGB",
                     value_range=(0, 255), normalization="in-graph", crop="center", interpolation="area",
                     quantization=None, rbc_px=None)


@dataclass
class Dataset:
    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    class_names: tuple[str, ...]
    description: str
    synthetic: bool
    predefined_split: dict[str, np.ndarray] | None = None  # e.g. MedMNIST's own train/val/test
    root: str | None = None  # the class-folder dataset's folder (its export.json: ``training_scale``)
    sizes: np.ndarray | None = None  # class folders: each image's (height, width) as read, before resizing
    _scale: tuple | None = field(default=None, init=False, repr=False, compare=False)  # training_scale's answer, once

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> "Dataset":
        idx = np.asarray(idx, dtype=np.int64)
        return Dataset(self.images[idx], self.labels[idx], [self.ids[i] for i in idx],
                       self.class_names, self.description, self.synthetic, root=self.root)

    def counts(self) -> dict[str, int]:
        return {n: int((self.labels == i).sum()) for i, n in enumerate(self.class_names)}


MIXED_SCALES = 1.03  # recorded scales further apart than this (max / min): measure instead of one median


def training_scale(ds: Dataset) -> tuple[float | None, str]:
    """The red-cell diameter (px, in ``ds.images`` as loaded) the model is trained at, and where it
    comes from: the scale ``celledge export`` recorded for every image (``ROOT/export.json``: the
    daemon cut them at it, so field mode must crop at it again), else measured on the images
    (``scale.images_rbc_px``; None when too few red cells show). Recorded scales that differ (cells
    cut by two models) are measured instead: one median would fit neither."""
    if ds._scale is None:
        ds._scale = _training_scale(ds)
    return ds._scale


def _training_scale(ds: Dataset) -> tuple[float | None, str]:
    recorded = recorded_scales(ds.root) if ds.root and Path(ds.root).is_dir() else {}
    fractions = [recorded.get(Path(i).as_posix()) for i in ds.ids]
    known = [f for f in fractions if f is not None]
    if ds.ids and len(known) == len(fractions) and max(known) <= MIXED_SCALES * min(known):
        return round(float(np.median(known)) * ds.images.shape[1], 2), f"as {RECORD} records (the crops were cut at it)"
    note = ""
    if known and len(known) < len(fractions):
        note = f" ({RECORD} records it for {len(known)} of {len(ds)} images)"
    elif known:
        note = f" ({RECORD} records scales from {min(known):.4f} to {max(known):.4f} of a crop's side: cells cut by different models)"
    return images_rbc_px(ds.images), "measured on the images" + note


def pseudo_labelled(ds: Dataset) -> np.ndarray:
    """Indices of the images ``ROOT/export.json`` marks as guesses (``celledge export --self-train``): fit puts
    them in the training split only, so that its validation and test figures are people's labels, and the
    people-labelled cells split as they would without them."""
    if not ds.root or not Path(ds.root).is_dir():
        return np.zeros(0, np.int64)
    marked = recorded_pseudo(ds.root)
    return np.array([i for i, x in enumerate(ds.ids) if Path(x).as_posix() in marked], np.int64)


def _canonical(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _not_a_class(folders: list[str], root: Path, classes) -> str:
    """The error for class folders that are none of the fine-tuned model's classes: a near name (a plural,
    another case, an abbreviation) is suggested; a class the model has not (blasts) is to be left out."""
    import difflib  # noqa: PLC0415

    aliases = {"ig": "immature_granulocyte", "igs": "immature_granulocyte", "nrbc": "erythroblast",
               "nrbcs": "erythroblast", "plt": "platelet", "plts": "platelet", "thrombocyte": "platelet",
               "thrombocytes": "platelet", "lymph": "lymphocyte", "lymphs": "lymphocyte", "mono": "monocyte",
               "monos": "monocyte", "neut": "neutrophil", "neuts": "neutrophil", "seg": "neutrophil",
               "segs": "neutrophil", "pmn": "neutrophil", "eo": "eosinophil", "eos": "eosinophil",
               "baso": "basophil", "basos": "basophil"}
    canon = {_canonical(c): c for c in classes}
    hints = []
    for f in folders:
        c = _canonical(f)
        near = canon.get(aliases.get(c, "")) or next(iter(difflib.get_close_matches(c.rstrip("s"), list(canon), 1,
                                                                                     0.75)), None)
        hints.append(f"rename {f}/ to {canon.get(near, near)}/" if near
                     else f"move {f}/ out of {root} (the model has no such class)")
    listed = ", ".join(f"'{f}'" for f in folders)
    return (f"{listed} {'is' if len(folders) == 1 else 'are'} not one of the model's classes ({', '.join(classes)}); "
            f"fine-tuning keeps the model's {len(classes)} classes: " + "; ".join(hints))


SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "test", "testing")


def _one_level_up(root: Path, folders: list[Path], names: list[str], known: set[str]) -> None:
    """Refuse the two layouts one level above the class folders that read as a model of the wrong classes: the
    folder ``celltrain synth`` writes (OUT/crops/<class>: 'crops' and 'fields' were two classes) and a dataset split
    beforehand (train/, val/, test/, each of class folders: three classes, the test images trained on). Any other
    nesting is left alone (folders of class folders can be classes of their own, e.g. normal/ and leukemic/)."""
    if any(n in known for n in names):
        return
    sessions = [d for d in folders if (d / "state.json").is_file() and (d / "cells.jsonl").is_file()]
    if sessions:  # each session's id read as a class the model has not ("move 20261204-... out of ...")
        raise UserError(f"{root} is a folder of review sessions (celledge watch --sessions; {sessions[0].name}/ is one): "
                        f"export the cells you reviewed first, `celledge export {root} --out my_cells`, and give "
                        "--data my_cells")
    holding = {d: _class_folders_inside(d, known) for d in folders}
    holding = {d: inner for d, inner in holding.items() if len(inner) >= 2}
    crops = root / "crops"
    if crops in holding:
        raise UserError(f"{root} is the folder celltrain synth writes: its class folders are in {crops} "
                        f"({', '.join(holding[crops])}); give {crops}")
    if holding and all(n in SPLIT_NAMES for n in names):
        part = next((d for d in holding if d.name.startswith("train")), None)
        raise UserError(f"{root} holds a split made beforehand ({', '.join(d.name + '/' for d in folders)} of class "
                        "folders): celltrain makes its own train/val/test split (--seed), so give one folder of class "
                        "folders (each class's images together)" + (f", or only {part}" if part else ""))


def _class_folders_inside(d: Path, known: set[str]) -> list[str]:
    try:
        return sorted(s.name for s in d.iterdir() if s.is_dir() and _canonical(s.name) in known)
    except OSError:  # unreadable: the image listing below says so
        return []


def load_synthetic(per_class: int, image_size: int, seed: int = 0) -> Dataset:
    from .synth import make_crops  # noqa: PLC0415

    images, labels = make_crops(per_class, size=image_size, seed=seed)
    return Dataset(images, labels, [f"{SYNTHETIC}:{i}" for i in range(len(labels))], CLASS_NAMES,
                   f"synthetic smears (scopelite.train.synth, seed {seed}, {per_class} per class)", True)


def load_folders(root: str | os.PathLike, image_size: int, progress: bool = False,
                 classes: Sequence[str] | None = None, unreadable: list[str] | None = None) -> Dataset:
    """Class-folder layout ``root/<class>/<image>``; any format OpenCV reads.

    Folders named after the 8 blood-cell classes get the canonical label order, and a
    lab may have only some of them (the 4-6 classes its slides show): the model keeps
    all 8 outputs and learns from the classes present. Other names are taken in
    sorted order (a model of other classes, trained from scratch). ``classes``: those of a model being
    fine-tuned, which it keeps (in its order): every folder must be one of them (else refused, with the near
    name). ``unreadable``: a list that receives the ids of files OpenCV cannot decode, left out (an audit
    lists them all); without it the first such file is refused.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(_not_a_folder(root))
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise UserError(f"{root} has no class folders: expected {root}/<class>/<image files>")
    odd = [d for d in folders if not utf8_name(d.name)]
    if odd:  # a class name goes into the model's sidecar (JSON) and every report
        raise UserError(f"class folder {odd[0]} has a name that is not valid UTF-8 (made on another system?): "
                        "rename it to the class's name")
    odd = [d.name for d in folders if not is_label(d.name)]
    if odd:  # a model's sidecar refuses it as a label (it becomes a folder's name again: celledge export)
        raise UserError(f"class folder {odd[0]!r} has a name no model label can have ('\\', a control or "
                        "invisible character, more than 255 bytes): rename it to the class's name")
    names = [_canonical(d.name) for d in folders]
    same = next((n for n in names if names.count(n) > 1), None)
    if same is not None:  # blast/ and Blast/: one label twice, refused by the sidecar after the whole training
        both = [d.name + "/" for d, n in zip(folders, names) if n == same]
        raise UserError(f"class folders {' and '.join(both)} in {root} name one class ({same}: they differ only in "
                        "case, spaces or '-'): put their images in one folder, or rename one")
    _one_level_up(root, folders, names, {_canonical(c) for c in (classes or CLASS_NAMES)})
    if classes is not None:  # fine-tuning: the model's classes, a lab's folders some of them
        canon = {_canonical(c): c for c in classes}
        foreign = [d.name for d, n in zip(folders, names) if n not in canon]
        if foreign:
            raise UserError(_not_a_class(foreign, root, list(classes)))
        class_names, names = tuple(classes), [canon[n] for n in names]
    elif set(names) <= set(CLASS_NAMES):
        class_names = CLASS_NAMES  # missing classes: no images, the outputs stay (fine-tuning keeps them)
    else:
        class_names = tuple(names)
    files: list[tuple[Path, int]] = []
    for d, n in zip(folders, names):
        imgs = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                      and not any(part.startswith(".") for part in p.relative_to(d).parts))  # ._x.jpg: not images
        if not imgs:
            raise UserError(f"class folder {d} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += [(p, class_names.index(n)) for p in imgs]
    if len(folders) < 2:
        raise UserError(f"{root} has images of one class only ({folders[0].name}); a classifier needs at least two")
    images = image_array(len(files), image_size, f"reading {root}",
                         "give a smaller --image-size (the models here take 96 to 256)")
    it = files
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        it = tqdm(files, desc=f"reading {root.name}", unit="img", leave=False)
    read = np.ones(len(files), bool)
    sizes = np.zeros((len(files), 2), np.int64)
    for i, (p, _) in enumerate(it):
        try:  # from the file's bytes: any file name (OpenCV's own reader crashed on one that is not UTF-8)
            img, why = read_image_rgb(p), None
        except (SourceError, OSError) as e:
            img, why = None, str(e)
        if img is None:
            if unreadable is None:
                raise UserError(f"cannot use {p} ({why}): remove it or replace it with a valid image")
            unreadable.append(str(p.relative_to(root)))
            read[i] = False
            continue
        sizes[i] = img.shape[:2]
        images[i] = prepare(img, input_spec(image_size))
    if not read.all():
        files, images, sizes = [f for f, ok in zip(files, read) if ok], images[read], sizes[read]
        if not files:
            raise UserError(f"{root}: none of its {len(read)} images can be decoded")
    labels = np.array([lab for _, lab in files], np.int64)
    ids = [str(p.relative_to(root)) for p, _ in files]
    synthetic = marked_synthetic(root)
    desc = f"class folders at {root.resolve()}" + (" (synthetic: made by celltrain synth)" if synthetic else "")
    return Dataset(images, labels, ids, class_names, desc, synthetic, root=str(root), sizes=sizes)


FIELD_SIDE, FIELD_ASPECT = 480, 1.2  # a camera's frame: 640x480 and up, 4:3 or wider; crops are cut square


def _camera_frames(sizes: np.ndarray) -> np.ndarray:
    """Which (height, width) look like a camera's whole frame: 640x480 and up, 4:3 or wider."""
    long, short = sizes.max(axis=1), sizes.min(axis=1)
    return (long >= FIELD_SIDE) & (long >= FIELD_ASPECT * short)


LARGER = 2.5  # an image this many times the usual side (the median's) is not a crop cut like the others


def mixed_sizes_note(ds: Dataset) -> str | None:
    """A note when some images of a class-folder dataset are far larger than the rest, or shaped like a camera's
    frame among square crops (whole fields among single-cell crops: each is shrunk to the input and trained as one
    cell), else None. Most of them frames: ``whole_fields_note``."""
    if ds.sizes is None or not len(ds.sizes):
        return None
    side = ds.sizes.max(axis=1)
    usual = float(np.median(side))
    frames = _camera_frames(ds.sizes)
    if frames.sum() > len(ds) / 2:
        return None
    # a 640x480 field among celledge export's 256 px crops is 2.5x their side, not over it: its shape says it
    big = np.flatnonzero((side > LARGER * usual) | frames)
    if not len(big):
        return None
    h, w = ds.sizes[big[0]]
    return (f"{len(big)} of {len(ds)} images are over {LARGER:g}x the usual side ({int(usual)} px) or shaped like a "
            f"camera's frame, e.g. {ds.ids[big[0]]} ({w}x{h}): whole fields among single-cell crops? each is shrunk "
            "and trained as one cell; cut the cells out (celledge watch --mode field --sessions, then celledge "
            "export) or remove them")


def whole_fields_note(ds: Dataset) -> str | None:
    """A note when most images of a class-folder dataset look like whole camera frames, not cells cut out (a
    second-site trial trained on 640x480 fields without a word: each is shrunk to the input and trained as one
    cell, the white cell a fifth of it), else None."""
    if ds.sizes is None or not len(ds.sizes):
        return None
    frames = _camera_frames(ds.sizes)
    if frames.sum() <= len(ds) / 2:
        return None
    h, w = ds.sizes[np.flatnonzero(frames)[0]]
    return (f"{int(frames.sum())} of {len(ds)} images look like whole camera frames ({w}x{h}, not square), not cells "
            "cut out: each is shrunk to the input and trained as one cell; cut the cells out first (celledge watch "
            "FOLDER --mode field --sessions DIR, review them, then celledge export DIR --out my_cells)")


def marked_synthetic(root: str | os.PathLike) -> bool:
    """True when ``root`` (or the folder above it: ``celltrain synth OUT`` puts crops in OUT/crops)
    holds a manifest.json that says the data is synthetic."""
    root = Path(root)
    for manifest in (root / "manifest.json", root.parent / "manifest.json"):
        try:
            m = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(m, dict) and m.get("synthetic") is True:
            return True
    return False


def _resize_all(images: np.ndarray, image_size: int) -> np.ndarray:
    if images.shape[1:3] == (image_size, image_size):
        return images
    spec = input_spec(image_size)
    return np.stack([prepare(np.ascontiguousarray(img), spec) for img in images])


def _check_images(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 (N,H,W,3) or grey (N,H,W)/(N,H,W,1) -> uint8 (N,H,W,3), or one clear error."""
    if x.dtype != np.uint8:
        raise UserError(f"{where}: images must be uint8 0-255, got {x.dtype}; convert with (x * 255).astype('uint8') "
                        "if they are floats in 0-1")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise UserError(f"{where}: images must be (N, H, W, 3) RGB or (N, H, W) grey, got shape {x.shape}")
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def _check_labels(y: np.ndarray, n: int, n_classes: int, where: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{where}: labels must be integers, shape (N,) or (N, 1), got {y.dtype} {y.shape}")
    if len(y) != n:
        raise UserError(f"{where}: {n} images but {len(y)} labels; they must match one to one")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise UserError(f"{where}: labels must be 0..{n_classes - 1} ({', '.join(CLASS_NAMES)}), "
                        f"found {y.min()}..{y.max()}")
    return y.astype(np.int64)


# What a damaged .npz raises, from the zip directory down to one array's bytes.
NPZ_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError)


def open_npz(path: str | os.PathLike):
    """Open a .npz (lazily: arrays are read on access) or raise one UserError saying what it is instead."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise UserError(f"{p} not found") from None
    except OSError as e:
        raise UserError(f"cannot read {p} ({(e.strerror or str(e)).lower()})") from None
    if not head:
        raise UserError(f"{p} is empty (0 bytes): not a .npz file; was it copied completely?")
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise UserError(f"{p} is not a .npz file (a .npz is a zip archive of arrays, as numpy.savez writes); "
                        "give a .npz, or a folder of class folders")
    try:
        return np.load(p, allow_pickle=False)
    except (*NPZ_DAMAGED, ValueError) as e:
        raise UserError(f"{p} is a damaged .npz ({type(e).__name__}: {e}); it may be truncated: "
                        "copy it again") from None


def _pack_keys() -> set:
    from .pack import PACK_KEYS  # noqa: PLC0415 - pack reads its files through this module

    return PACK_KEYS


def load_npz(path: str | os.PathLike, image_size: int) -> Dataset:
    """AN2DL-style ``images``/``labels`` or MedMNIST ``{train,val,test}_{images,labels}`` (its split is kept)."""
    p = Path(path)
    z = open_npz(p)
    keys = set(z.files)
    try:
        if {"images", "labels"} <= keys:
            x = _check_images(z["images"], f"{p}['images']")
            y = _check_labels(z["labels"], len(x), len(CLASS_NAMES), f"{p}['labels']")
            ids = [f"{p.name}:{i}" for i in range(len(y))]
            predefined = None
        elif {f"{s}_{k}" for s in SPLITS for k in ("images", "labels")} <= keys:
            xs, ys, ids, predefined, start = [], [], [], {}, 0
            for s in SPLITS:
                xi = _check_images(z[f"{s}_images"], f"{p}['{s}_images']")
                ys.append(_check_labels(z[f"{s}_labels"], len(xi), len(CLASS_NAMES), f"{p}['{s}_labels']"))
                xs.append(_resize_all(xi, image_size))
                ids += [f"{s}:{i}" for i in range(len(xi))]
                predefined[s] = np.arange(start, start + len(xi))
                start += len(xi)
            x, y = np.concatenate(xs), np.concatenate(ys)
        elif keys == _pack_keys():  # the advice "or a .npz pack" was followed: a pack is for the keras3 trainer only
            raise UserError(f"{p} is a pack from celltrain pack: celltrain fit --backend keras3 trains on it (a GPU "
                            "machine without TensorFlow, docs/gpu-training.md); here, give the class folders it was "
                            "packed from")
        else:
            raise UserError(f"{p} holds {sorted(keys)}; expected 'images' + 'labels' (AN2DL) or "
                            "train/val/test _images + _labels (MedMNIST)")
    except NPZ_DAMAGED as e:
        raise UserError(f"{p} is a damaged .npz ({type(e).__name__}: {e}); it may be truncated: "
                        "copy it again") from None
    except ValueError as e:
        hint = "; object arrays are refused (allow_pickle=False)" if "pickle" in str(e) else ""
        raise UserError(f"cannot read {p}: {e}{hint}") from None
    missing = [CLASS_NAMES[c] for c in range(len(CLASS_NAMES)) if not (y == c).any()]
    if missing:
        raise UserError(f"{p} has no images of class(es) {', '.join(missing)}; every class needs images")
    return Dataset(_resize_all(x, image_size), y, ids, CLASS_NAMES, f"npz file {p.resolve()}", False, predefined)


def check_source(spec: str | None) -> None:
    """Cheap checks of ``--data`` before long work starts (no images decoded): it exists and,
    for a .npz, is a readable archive."""
    if spec in (None, "", SYNTHETIC):
        return
    if str(spec).lower().endswith(".npz"):
        open_npz(spec).close()
    elif not Path(spec).is_dir():
        raise UserError(_not_a_folder(Path(spec)))


def out_in_data(out: str | os.PathLike, data: str | os.PathLike | None) -> str | None:
    """'is' or 'is inside' when the output folder ``out`` is the class-folder dataset ``data`` or lies in it (what is
    written there would be read as classes or training images next time), else None."""
    if not data or not Path(data).is_dir():
        return None
    here, src = Path(out).resolve(), Path(data).resolve()
    return "is" if here == src else "is inside" if src in here.parents else None


RUN_IN_DATA = "the run's folders would be read as classes next time; put the run elsewhere (e.g. --out runs/NAME)"


def refuse_out_in_data(out: str | os.PathLike, data: str | os.PathLike | None, named: str, advice: str) -> None:
    """UserError "--out OUT is [inside] NAMED: ADVICE" when ``out_in_data`` says the output folder is the class-folder
    dataset ``data`` or lies in it (``named``: how the message names ``data``)."""
    where = out_in_data(out, data)
    if where:
        raise UserError(f"--out {out} {where} {named}: {advice}")


def _not_a_folder(p: Path) -> str:
    if p.exists():  # a file: it said "not found", of a file that is there
        return (f"{p} is a file, not a folder: give a folder of class folders (<class>/<images>) or a .npz of "
                "images and labels (MedMNIST's layout)")
    return f"data folder {p} not found"


def load(spec: str | None, image_size: int, synthetic_per_class: int = 300, seed: int = 0,
         progress: bool = False, classes: Sequence[str] | None = None,
         unreadable: list[str] | None = None) -> Dataset:
    """``None``/``"synthetic"``: generated data; a ``.npz`` file; or a class-folder path (``classes``: those of
    the model fine-tuned, ``unreadable``: see ``load_folders``)."""
    if spec in (None, "", SYNTHETIC):
        return load_synthetic(synthetic_per_class, image_size, seed)
    if str(spec).lower().endswith(".npz"):
        return load_npz(spec, image_size)
    return load_folders(spec, image_size, progress=progress, classes=classes, unreadable=unreadable)


def exact_duplicates(images: np.ndarray) -> np.ndarray:
    """Indices of images byte-identical to an earlier one (first copy kept)."""
    seen: dict[bytes, int] = {}
    dup = []
    for i, img in enumerate(images):
        h = hashlib.blake2b(img.tobytes(), digest_size=16).digest()
        if h in seen:
            dup.append(i)
        else:
            seen[h] = i
    return np.array(dup, np.int64)


def stratified_split(labels: np.ndarray, fractions=(0.8, 0.1, 0.1), seed: int = 0,
                     exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Seeded per-class split into train/val/test index arrays (``exclude`` left out)."""
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise UserError(f"split fractions {fractions} must be >= 0 and sum to 1")
    rng = np.random.default_rng(seed)
    keep = np.ones(len(labels), bool)
    if exclude is not None and len(exclude):
        keep[exclude] = False
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = np.flatnonzero((labels == c) & keep)
        rng.shuffle(idx)
        # at least one val and one test image per class when the class has 3 or more
        n_val = max(int(round(fractions[1] * len(idx))), int(fractions[1] > 0 and len(idx) >= 3))
        n_test = max(int(round(fractions[2] * len(idx))), int(fractions[2] > 0 and len(idx) >= 3))
        out["val"] += idx[:n_val].tolist()
        out["test"] += idx[n_val : n_val + n_test].tolist()
        out["train"] += idx[n_val + n_test :].tolist()
    return {s: np.sort(np.array(v, np.int64)) for s, v in out.items()}


def read_exclusions(path: str | os.PathLike, ds: Dataset) -> np.ndarray:
    """Indices of the image ids listed (one per line, '#' comments) in ``path``; unknown ids are an error."""
    p = Path(path)
    if p.exists() and not p.is_file():  # a pipe or a folder was "not found"
        raise UserError(f"exclusion list {p} is not a file (a folder, a pipe or a device): give the exclusions.txt "
                        "celltrain audit DATA --out DIR writes")
    if not p.is_file():
        raise UserError(f"exclusion list {p} not found (celltrain audit DATA --out DIR writes DIR/exclusions.txt)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"exclusion list {p} is not a text file of image ids (celltrain audit DATA --out DIR writes "
                        "one: exclusions.txt, not the flagged.png beside it)") from None
    pos = {id_: i for i, id_ in enumerate(ds.ids)}
    # an id as written first: a class folder named '#platelet' or ' platelet' is no comment and keeps its space
    wanted = [x if x in pos else x.strip() for x in text.splitlines()
              if x in pos or x.strip() and not x.lstrip().startswith("#")]
    unknown = [x for x in wanted if x not in pos]
    if unknown:
        raise UserError(f"{len(unknown)} ids in {p} are not in {ds.description} (first: {unknown[0]})")
    return np.array(sorted(pos[x] for x in wanted), np.int64)


def save_split(path: str | os.PathLike, ds: Dataset, split: dict[str, np.ndarray], seed: int) -> None:
    write_json_atomic(path, {"seed": seed, "class_names": list(ds.class_names), "description": ds.description,
                             **{s: [ds.ids[i] for i in split[s]] for s in SPLITS},
                             "test_colour": _mean_colours(ds, split["test"])})


def split_identity(path: str | os.PathLike) -> str:
    """What makes two runs one lineage: the same classes and the same images in each part of the split, whatever
    else their split.json holds (the test images' colours, measured at each run's image size)."""
    saved = read_json_file(path, "the saved split", lambda o: isinstance(o, dict) and all(
        isinstance(o.get(s), list) for s in SPLITS))
    key = {"class_names": saved.get("class_names"), **{s: saved[s] for s in SPLITS}}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


SAME_COLOUR_LEVELS = 8  # a test image's mean RGB moves less than this when re-encoded or resized (0-255 levels)


def _mean_colours(ds: Dataset, idx: np.ndarray) -> list[list[int]]:
    """Each image's mean R, G, B (whole levels): a fingerprint that survives a resize or a re-encode, not a swap."""
    return [[int(round(float(v))) for v in np.asarray(ds.images[i]).reshape(-1, 3).mean(0)] for i in idx]


def _other_images(saved: dict, ds: Dataset, test: np.ndarray) -> int:
    """How many test images of ``ds`` are not the images the split was saved with (their mean colour moved more than
    SAME_COLOUR_LEVELS), where the split recorded them (since session 33); 0 otherwise."""
    was = saved.get("test_colour")

    def level(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(was, list) or len(was) != len(test) or not all(
            isinstance(c, list) and len(c) == 3 and all(map(level, c)) for c in was):  # an older or edited split
        return 0
    now = np.array(_mean_colours(ds, test), np.float64).reshape(-1, 3)
    return int((np.abs(now - np.array(was, np.float64)).max(axis=1) > SAME_COLOUR_LEVELS).sum())


RUN_JSON_MAX_BYTES = 256 * 2**20  # a split.json of a million images is about 40 MB


def read_json_file(path: str | os.PathLike, what: str, ok: Callable[[Any], bool] = lambda obj: isinstance(obj, dict)):
    """A run's JSON file (``what`` names it: "the saved split"), or UserError naming it as damaged (empty, cut short
    by a kill, not JSON, or not of the shape ``ok`` accepts)."""
    p = Path(path)
    if p.exists() and not p.is_file():  # a FIFO waited for a writer, /dev/zero filled the memory
        raise UserError(f"{what} {path} is not a file")
    try:
        with open(p, "rb") as f:
            raw = f.read(RUN_JSON_MAX_BYTES + 1)
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read ({(e.strerror or str(e)).lower()})") from None
    if len(raw) > RUN_JSON_MAX_BYTES:
        raise UserError(f"{what} {path} is larger than celltrain writes ({RUN_JSON_MAX_BYTES // 2**20} MB)")
    try:
        obj = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise UserError(f"{what} {path} is damaged (not JSON: {e})") from None
    if not ok(obj):
        raise UserError(f"{what} {path} is damaged (it does not hold what celltrain writes there)")
    return obj


def load_split(path: str | os.PathLike, ds: Dataset) -> dict[str, np.ndarray]:
    """Map a saved split back onto ``ds``; refuse if images are missing."""
    saved = read_json_file(path, "the saved split", lambda o: isinstance(o, dict) and all(
        isinstance(o.get(s), list) and all(isinstance(x, str) for x in o[s]) for s in SPLITS))
    pos = {id_: i for i, id_ in enumerate(ds.ids)}
    out = {}
    for s in SPLITS:
        missing = [x for x in saved[s] if x not in pos]
        if missing:
            raise UserError(f"{len(missing)} images of the saved {s} split are not in {ds.description} "
                            f"(first: {missing[0]}); evaluate on the data the run was trained on")
        out[s] = np.array([pos[x] for x in saved[s]], np.int64)
    other = _other_images(saved, ds, out["test"])
    if other > len(out["test"]) / 2:  # another dataset whose files bear the same names (0001.png ...)
        raise UserError(f"{other} of the {len(out['test'])} test images in {ds.description} are not the images of the "
                        "saved split (their colours differ): this is another dataset with the same file names. Give "
                        "--data the images the run was trained on; to measure a model on other images, label them "
                        "in class folders and use celledge classify --json, or fine-tune on them")
    return out
